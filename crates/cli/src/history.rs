//! `dosql history`, `dosql restore`, `dosql branch`: the history a database keeps (see
//! `dosql_layout::log`), written once for every kind of [`Database`].

use std::time::Instant;

use serde_json::{Value as Json, json};

use crate::bail;
use crate::db::{Collect, Database, Open, RestoreTo};
use crate::error::Result;
use crate::progress::Progress;
use crate::source::Source;
use crate::transfer::{ImportOptions, load_snapshot};
use crate::when;

/// `dosql history <target>`: the commits the database keeps, newest first.
pub fn history(db: &mut dyn Database, limit: usize, as_json: bool) -> Result<()> {
    db.open(Open::Existing)?;
    let h = db.history(limit, None)?;
    if as_json {
        crate::say!("{h}");
        return Ok(());
    }
    let w = &h["window"];
    let config = &h["history"];
    if config["enabled"] == json!(false) {
        crate::say!("history is off for {db}: it keeps no commits to go back to");
    }
    let since = w["oldest_timestamp_ms"]
        .as_i64()
        .map(|ms| format!(" (since {})", when::format(ms)))
        .unwrap_or_default();
    crate::say!(
        "{db}: txid {}, checksum {}; restorable txids {} to {}{since}",
        h["txid"],
        h["checksum"].as_str().unwrap_or("(being computed)"),
        w["oldest_txid"],
        w["newest_txid"],
    );
    crate::say!(
        "{:>8}  {:<24}  {:>8}  {:>8}  {:<16}  note",
        "txid",
        "time",
        "pages",
        "written",
        "checksum"
    );
    for c in h["commits"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let note = match (&c["note"], c["switch"] == json!(true)) {
            (Json::Null, false) => String::new(),
            (Json::Null, true) => "replaced".to_owned(),
            (n, _) => n.to_string(),
        };
        crate::say!(
            "{:>8}  {:<24}  {:>8}  {:>8}  {:<16}  {note}",
            c["txid"].to_string(),
            c["timestamp_ms"]
                .as_i64()
                .map(when::format)
                .unwrap_or_default(),
            c["page_count"].to_string(),
            c["pages_written"].to_string(),
            c["checksum"].as_str().unwrap_or("-"),
        );
    }
    Ok(())
}

/// `dosql restore <target> --txid T | --time WHEN`.
pub fn restore(db: &mut dyn Database, txid: Option<u64>, time: Option<&str>) -> Result<()> {
    let to = match (txid, time) {
        (Some(t), None) => RestoreTo::Txid(t),
        (None, Some(text)) => {
            let now = when::now_ms();
            let ms = when::parse(text, now)?;
            when::not_future(ms, now)?;
            RestoreTo::Time(ms)
        }
        _ => bail!("say where to restore to: --txid T or --time WHEN (not both)"),
    };
    db.open(Open::Existing)?;
    let r = db.restore(to)?;
    crate::say!(
        "restored {db} to txid {} as txid {} ({} pages, checksum {}); `dosql restore {db} --txid {}` undoes it",
        r["restored_from"],
        r["txid"],
        r["page_count"],
        r["checksum"].as_str().unwrap_or("-"),
        r["txid"].as_u64().map_or(0, |t| t.saturating_sub(1)),
    );
    Ok(())
}

/// `dosql branch <target> <new target> [--txid T]`: a new database holding `src` as of txid T
/// (now when not given), which records where it came from and keeps its own history from
/// then on.
pub fn branch(
    src: &mut dyn Database,
    dst: &mut dyn Database,
    txid: Option<u64>,
    force: bool,
    quiet: bool,
) -> Result<()> {
    if src.to_string() == dst.to_string() {
        bail!("{src}: a database cannot be branched onto itself");
    }
    let started = Instant::now();
    src.open(Open::Existing)?;
    let head = src.head()?;
    let at = txid.unwrap_or(head.txid);
    let mut progress = Progress::new(&format!("reading {src} at txid {at}"), 0, quiet);
    let mut pages = Collect(Vec::new());
    let snap = crate::transfer::snapshot(src, Some(at), None, &mut progress, &mut pages)?;
    progress.finish();
    if snap.page_count == 0 {
        bail!("{src} is empty at txid {at}: nothing to branch");
    }
    let parent = json!({ "name": src.to_string(), "txid": at });
    let mut source = Source::from_bytes(pages.0, snap.page_size)?;
    let opts = ImportOptions {
        force,
        quiet,
        check: false,
        chunk_pages: None,
    };
    let label = format!("writing {dst}");
    let done = load_snapshot(&mut source, dst, &opts, &label, Some(parent))?;
    if !quiet {
        crate::say!(
            "branched {src} at txid {at} into {dst}: {} pages of {} bytes in {:.2} s, checksum {:016x}",
            done.page_count,
            done.page_size,
            started.elapsed().as_secs_f64(),
            done.checksum
        );
    }
    Ok(())
}
