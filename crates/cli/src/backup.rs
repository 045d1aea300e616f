//! `dosql backup <target> <dir>` and `dosql restore-backup <dir> <file or target>`: continuous
//! backups as LTX files in Litestream's directory layout (v0.5):
//!
//! ```text
//! <dir>/ltx/0/<min txid>-<max txid>.ltx   one file per commit, as the database made it
//! <dir>/ltx/1/<min txid>-<max txid>.ltx   level 0 compacted: one file per window of time
//! <dir>/ltx/9/<min txid>-<max txid>.ltx   snapshots (min txid 1): every page at max txid
//! ```
//!
//! Txids are 16 lowercase hex digits. Every file is checked when read (`Ltx::decode`: its
//! own checksum), and a chain of files must continue checksum to checksum. Files are written
//! beside their place and renamed into it, so a killed backup leaves whole files only and
//! resumes after the newest one. Level 0 keeps every txid the backup saw restorable exactly
//! until compaction merges its files into level 1, whose files can be restored to their last
//! txid only.
//!
//! A restore takes the newest snapshot at or before the txid asked for, then the chain of
//! files that reaches it; a txid no chain reaches is refused with the nearest txids that can
//! be restored.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use std::io::{Read as _, Seek as _, SeekFrom};

use dosql_layout::ltx::{FLAG_NO_CHECKSUM, Ltx, LtxHeader, LtxWriter};

use crate::bail;
use crate::db::{Collect, Database, Open, PageSink};
use crate::error::{Context as _, Error, Result};
use crate::files::{show, sync_dir};
use crate::progress::Progress;
use crate::transfer::{ImportOptions, TempFile, import, snapshot};

/// The snapshot level (Litestream's).
pub const SNAPSHOT_LEVEL: u32 = 9;

/// Options of `dosql backup`.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Catch up once (and compact), then exit.
    pub once: bool,
    /// Between polls of the database.
    pub interval: Duration,
    /// A new snapshot after this long.
    pub snapshot_interval: Duration,
    /// Level 0 files older than this are compacted into level 1.
    pub compact_after: Duration,
    /// The window of time one level 1 file covers.
    pub l1_window: Duration,
    /// No line per file.
    pub quiet: bool,
}

/// One file of a backup, as its name says.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    level: u32,
    min: u64,
    max: u64,
    path: PathBuf,
}

fn file_name(min: u64, max: u64) -> String {
    format!("{min:016x}-{max:016x}.ltx")
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".ltx")?;
    let (a, b) = stem.split_once('-')?;
    if a.len() != 16 || b.len() != 16 {
        return None;
    }
    let (min, max) = (
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    );
    (min >= 1 && min <= max).then_some((min, max))
}

/// The files of a backup directory.
fn list(dir: &Path) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let ltx = dir.join("ltx");
    if !ltx.exists() {
        return Ok(out);
    }
    for level in std::fs::read_dir(&ltx).with_context(|| show(&ltx))? {
        let level = level.with_context(|| show(&ltx))?;
        let Some(n) = level
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        for f in std::fs::read_dir(level.path()).with_context(|| show(&level.path()))? {
            let f = f.with_context(|| show(&level.path()))?;
            if let Some((min, max)) = f.file_name().to_str().and_then(parse_name) {
                out.push(Entry {
                    level: n,
                    min,
                    max,
                    path: f.path(),
                });
            }
        }
    }
    out.sort();
    Ok(out)
}

fn read(e: &Entry) -> Result<Ltx> {
    let bytes = std::fs::read(&e.path).with_context(|| show(&e.path))?;
    let ltx = Ltx::decode(&bytes).map_err(|err| Error::msg(format!("{}: {err}", show(&e.path))))?;
    if (ltx.header.min_txid, ltx.header.max_txid) != (e.min, e.max) {
        bail!(
            "{}: holds txids {}..={}, not what its name says",
            show(&e.path),
            ltx.header.min_txid,
            ltx.header.max_txid
        );
    }
    Ok(ltx)
}

/// A file's header alone (polling reads no more than that).
fn header(e: &Entry) -> Result<LtxHeader> {
    let mut b = [0u8; 100];
    File::open(&e.path)
        .and_then(|mut f| f.read_exact(&mut b))
        .with_context(|| show(&e.path))?;
    LtxHeader::read(&b).map_err(|err| Error::msg(format!("{}: {err}", show(&e.path))))
}

/// A file's post-apply checksum, from its trailer alone (the whole file is checked when a
/// restore reads it).
fn post_apply(e: &Entry) -> Result<u64> {
    let mut b = [0u8; 8];
    File::open(&e.path)
        .and_then(|mut f| {
            f.seek(SeekFrom::End(-16))?;
            f.read_exact(&mut b)
        })
        .with_context(|| show(&e.path))?;
    Ok(u64::from_be_bytes(b))
}

/// Writes `bytes` as the file of `level` for `min..=max`, whole or not at all.
fn write(dir: &Path, level: u32, min: u64, max: u64, bytes: &[u8]) -> Result<PathBuf> {
    let d = dir.join("ltx").join(level.to_string());
    std::fs::create_dir_all(&d).with_context(|| show(&d))?;
    let path = d.join(file_name(min, max));
    let tmp = d.join(format!(".{}.tmp", file_name(min, max)));
    let mut f = File::create(&tmp).with_context(|| show(&tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| show(&tmp))?;
    std::fs::rename(&tmp, &path).with_context(|| show(&path))?;
    sync_dir(&path);
    Ok(path)
}

/// Where a backup is: the newest txid its files reach and the checksum there.
fn position(entries: &[Entry]) -> Result<Option<(u64, u64)>> {
    match entries
        .iter()
        .max_by_key(|e| (e.max, e.level == SNAPSHOT_LEVEL))
    {
        None => Ok(None),
        Some(e) => Ok(Some((e.max, post_apply(e)?))),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `dosql backup <target> <dir>`.
pub fn backup(db: &mut dyn Database, dir: &Path, opts: &BackupOptions) -> Result<()> {
    db.open(Open::Existing)?;
    std::fs::create_dir_all(dir).with_context(|| show(dir))?;
    let mut failures = 0u32;
    loop {
        match step(db, dir, opts) {
            Ok(()) => failures = 0,
            Err(e) if e.is_transport() && !opts.once => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    eprintln!("dosql: {e}; retrying");
                }
            }
            Err(e) => return Err(e),
        }
        if opts.once {
            if !opts.quiet {
                let at = position(&list(dir)?)?.map_or(0, |p| p.0);
                crate::say!("{} backs up {db} to txid {at}", show(dir));
            }
            return Ok(());
        }
        std::thread::sleep(opts.interval);
    }
}

/// One round: a snapshot when due, the commits since the newest file, compaction.
fn step(db: &mut dyn Database, dir: &Path, opts: &BackupOptions) -> Result<()> {
    let entries = list(dir)?;
    let newest_snapshot = entries
        .iter()
        .filter(|e| e.level == SNAPSHOT_LEVEL)
        .map(|e| e.max)
        .max();
    let h = db.history(1, None)?;
    let newest = h["txid"].as_u64().unwrap_or(0);
    let oldest = h["window"]["oldest_txid"].as_u64().unwrap_or(newest);
    let mut at = position(&entries)?;
    if let Some((t, _)) = at
        && t > newest
    {
        bail!(
            "{db} is at txid {newest}, behind this backup's {t}: it is not the database backed up here \
             (or it was replaced); back it up into a new directory"
        );
    }
    let snapshot_due = match newest_snapshot {
        None => true,
        Some(s) => {
            let e = entries
                .iter()
                .find(|e| e.level == SNAPSHOT_LEVEL && e.max == s)
                .map(header)
                .transpose()?;
            let age = now_ms() - e.map_or(0, |h| h.timestamp_ms);
            age >= opts.snapshot_interval.as_millis() as i64
        }
    };
    if newest == 0 {
        return Ok(());
    }
    // Commits the history no longer keeps: the chain breaks, a snapshot starts a new one.
    let broken = at.is_some_and(|(t, _)| t < oldest);
    let mut snapshot_due = snapshot_due;
    if at.is_none() || broken || (snapshot_due && at.is_some_and(|(t, _)| t == newest)) {
        let (txid, sum) = take_snapshot(db, dir, opts.quiet)?;
        at = Some((txid, sum));
        snapshot_due = false;
    }
    let (mut t, mut sum) = at.unwrap_or((0, 0));
    while t < newest {
        match db.ltx(t + 1, t + 1) {
            Ok(bytes) => {
                let ltx = Ltx::decode(&bytes).map_err(|e| Error::msg(format!("{db}: {e}")))?;
                if ltx.header.has_checksums() && sum != 0 && ltx.header.pre_apply != sum {
                    bail!(
                        "{db}: txid {} starts from checksum {:016x}, not the {sum:016x} this backup ends with: \
                         the database is not the one backed up here (or it was replaced); back it up into a new directory",
                        t + 1,
                        ltx.header.pre_apply
                    );
                }
                let path = write(dir, 0, t + 1, t + 1, &bytes)?;
                if !opts.quiet {
                    crate::say!("{}", show(&path));
                }
                t += 1;
                sum = ltx.post_apply;
            }
            Err(e) if matches!(e.code(), Some("LTX_TOO_LARGE" | "OUT_OF_WINDOW")) => {
                // One commit too big for one answer (an import), or pruned meanwhile.
                let (txid, s) = take_snapshot(db, dir, opts.quiet)?;
                t = txid;
                sum = s;
            }
            Err(e) => return Err(e),
        }
    }
    if snapshot_due && newest_snapshot.is_some_and(|s| s < t) {
        take_snapshot(db, dir, opts.quiet)?;
    }
    compact(dir, opts)
}

/// Writes a snapshot of the database as it is now: its txid and checksum.
fn take_snapshot(db: &mut dyn Database, dir: &Path, quiet: bool) -> Result<(u64, u64)> {
    let label = format!("snapshot of {db}");
    let mut progress = Progress::new(&label, 0, quiet);
    let mut pages = Collect(Vec::new());
    let snap = snapshot(db, None, None, &mut progress, &mut pages)?;
    progress.finish();
    if snap.txid == 0 {
        return Ok((0, 0));
    }
    if let Some(stated) = snap.stated
        && stated != snap.checksum
    {
        bail!(
            "{db}: the pages read have checksum {:016x}, the database says {stated:016x}",
            snap.checksum
        );
    }
    let timestamp = db.history(1, Some(snap.txid + 1))?["commits"][0]["timestamp_ms"]
        .as_i64()
        .unwrap_or_else(now_ms);
    let mut w = LtxWriter::new(&LtxHeader {
        flags: 0,
        page_size: snap.page_size,
        commit: snap.page_count,
        min_txid: 1,
        max_txid: snap.txid,
        timestamp_ms: timestamp,
        pre_apply: 0,
    });
    let lock = dosql_layout::checksum::lock_page(snap.page_size);
    for (i, page) in pages.0.chunks(snap.page_size as usize).enumerate() {
        let no = i as u32 + 1;
        if no != lock {
            w.page(no, page, None)
                .map_err(|e| Error::msg(e.to_string()))?;
        }
    }
    let path = write(dir, SNAPSHOT_LEVEL, 1, snap.txid, &w.finish(snap.checksum))?;
    if !quiet {
        crate::say!("{}", show(&path));
    }
    Ok((snap.txid, snap.checksum))
}

/// Merges level 0 files older than `compact_after` into level 1 files, one per window of
/// `l1_window` (by commit time), each once its window closed; the level 0 files go after.
fn compact(dir: &Path, opts: &BackupOptions) -> Result<()> {
    let entries = list(dir)?;
    let cutoff = now_ms() - opts.compact_after.as_millis() as i64;
    let window = opts.l1_window.as_millis().max(1) as i64;
    let mut groups: BTreeMap<i64, Vec<(Entry, Ltx)>> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.level == 0) {
        let ts = header(e)?.timestamp_ms;
        if ts < cutoff && (ts / window + 1) * window <= now_ms() {
            groups
                .entry(ts / window)
                .or_default()
                .push((e.clone(), read(e)?));
        }
    }
    for (_, mut files) in groups {
        files.sort_by_key(|(e, _)| e.min);
        // Contiguous runs only: a gap (commits never seen) ends a file.
        let mut run: Vec<(Entry, Ltx)> = Vec::new();
        let mut runs = Vec::new();
        for f in files {
            if run.last().is_some_and(|(e, _)| e.max + 1 != f.0.min) {
                runs.push(std::mem::take(&mut run));
            }
            run.push(f);
        }
        runs.push(run);
        for run in runs.into_iter().filter(|r| !r.is_empty()) {
            let ltxs: Vec<Ltx> = run.iter().map(|(_, l)| l.clone()).collect();
            let merged = Ltx::compact(&ltxs).map_err(|e| Error::msg(e.to_string()))?;
            let (min, max) = (merged.header.min_txid, merged.header.max_txid);
            let bytes = merged.encode().map_err(|e| Error::msg(e.to_string()))?;
            let path = write(dir, 1, min, max, &bytes)?;
            for (e, _) in &run {
                std::fs::remove_file(&e.path).with_context(|| show(&e.path))?;
            }
            if !opts.quiet {
                crate::say!("{} (level 0 {min}..={max} compacted)", show(&path));
            }
        }
    }
    Ok(())
}

/// Where `restore-backup` goes.
pub enum RestoreTarget<'a> {
    /// A plain SQLite file.
    File(&'a Path),
    /// A dosql database (its current content replaced, as an import).
    Database(&'a mut dyn Database),
}

/// `dosql restore-backup <dir> <file or target> [--txid T | --time ...]`.
pub fn restore_backup(
    dir: &Path,
    to: RestoreTarget<'_>,
    txid: Option<u64>,
    time_ms: Option<i64>,
    force: bool,
    quiet: bool,
) -> Result<()> {
    let started = Instant::now();
    let entries = list(dir)?;
    if entries.is_empty() {
        bail!(
            "{}: no LTX files (not a dosql or Litestream backup directory)",
            show(dir)
        );
    }
    // Reachable txids: each snapshot's, then each file continuing a reachable one.
    let mut reach: BTreeMap<u64, Vec<&Entry>> = BTreeMap::new();
    let mut snapshots: Vec<&Entry> = entries.iter().filter(|e| e.min == 1).collect();
    snapshots.sort_by_key(|e| (e.max, std::cmp::Reverse(e.level)));
    for s in &snapshots {
        reach.entry(s.max).or_insert_with(|| vec![*s]);
    }
    let mut frontier: BTreeSet<u64> = reach.keys().copied().collect();
    while let Some(t) = frontier.pop_first() {
        let path = reach[&t].clone();
        for e in entries.iter().filter(|e| e.min == t + 1) {
            if let std::collections::btree_map::Entry::Vacant(slot) = reach.entry(e.max) {
                let mut p = path.clone();
                p.push(e);
                slot.insert(p);
                frontier.insert(e.max);
            }
        }
    }
    let want = match (txid, time_ms) {
        (Some(t), _) => t,
        (None, None) => *reach.keys().next_back().unwrap_or(&0),
        (None, Some(ms)) => {
            // The last reachable txid committed at or before `ms`: each path's last file's
            // timestamp is its max txid's.
            let mut best = None;
            for (t, path) in &reach {
                let last = path.last().map(|e| header(e)).transpose()?;
                if last.is_some_and(|h| h.timestamp_ms <= ms) {
                    best = Some(*t);
                }
            }
            best.ok_or_else(|| {
                Error::msg(format!(
                    "{}: nothing in the backup was committed at or before {ms} ms; its points start at txid {}",
                    show(dir),
                    reach.keys().next().copied().unwrap_or(0)
                ))
            })?
        }
    };
    let Some(path) = reach.get(&want) else {
        let below = reach.range(..want).next_back().map(|(t, _)| *t);
        let above = reach.range(want..).next().map(|(t, _)| *t);
        bail!(
            "{}: txid {want} cannot be rebuilt from this backup (no chain of files ends there); nearest: {}",
            show(dir),
            match (below, above) {
                (Some(b), Some(a)) => format!("txid {b} before it, txid {a} after it"),
                (Some(b), None) => format!("txid {b} before it (the newest)"),
                (None, Some(a)) => format!("txid {a} after it (the oldest)"),
                (None, None) => "none".into(),
            }
        );
    };
    // Apply the chain to an image in memory, checking checksums link.
    let mut image: Vec<u8> = Vec::new();
    let mut page_size = 0usize;
    let mut sum = 0u64;
    for (i, e) in path.iter().enumerate() {
        let ltx = read(e)?;
        let h = ltx.header;
        if i == 0 {
            page_size = h.page_size as usize;
        } else {
            if h.page_size as usize != page_size {
                bail!(
                    "{}: another page size than the files before it",
                    show(&e.path)
                );
            }
            if h.flags & FLAG_NO_CHECKSUM == 0 && sum != 0 && h.pre_apply != sum {
                bail!(
                    "{}: starts from checksum {:016x}, the files before it end with {sum:016x}",
                    show(&e.path),
                    h.pre_apply
                );
            }
        }
        let commit = h.commit as usize * page_size;
        image.resize(commit.max(image.len()), 0);
        for (no, page) in &ltx.pages {
            let at = (*no as usize - 1) * page_size;
            image[at..at + page_size].copy_from_slice(page);
        }
        image.truncate(commit);
        sum = ltx.post_apply;
    }
    let got = {
        let mut s = dosql_layout::checksum::EMPTY;
        for (i, p) in image.chunks(page_size.max(1)).enumerate() {
            s = dosql_layout::checksum::toggle(s, dosql_layout::checksum::page(i as u32 + 1, p));
        }
        s
    };
    if sum != 0 && got != sum {
        bail!(
            "{}: the image rebuilt for txid {want} has checksum {got:016x}, its last file says {sum:016x}",
            show(dir)
        );
    }
    match to {
        RestoreTarget::File(file) => {
            if file.exists() && !force {
                bail!(
                    "{} exists: refusing to overwrite it (use --force)",
                    show(file)
                );
            }
            // --force replaces a SQLite file, never something else (a local dosql store:
            // restore into a file, then `dosql import` it).
            if file.is_file() {
                let mut magic = [0u8; 16];
                let is_sqlite = File::open(file)
                    .and_then(|mut f| f.read_exact(&mut magic))
                    .is_ok_and(|()| &magic == b"SQLite format 3\0");
                let empty = std::fs::metadata(file).is_ok_and(|m| m.len() == 0);
                if !is_sqlite && !empty {
                    bail!(
                        "{} is not a SQLite file: refusing to replace it (to restore into a local dosql store, \
                         restore into a .sqlite file and `dosql import` it)",
                        show(file)
                    );
                }
            }
            let mut tmp = TempFile::create(file)?;
            tmp.pages(&image)?;
            tmp.persist(file, force)?;
            if !quiet {
                crate::say!(
                    "restored {} at txid {want} into {}: {} pages of {page_size} bytes from {} files in {:.2} s, checksum {got:016x}",
                    show(dir),
                    show(file),
                    image.len() / page_size.max(1),
                    path.len(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        RestoreTarget::Database(db) => {
            let tmpdir = std::env::temp_dir().join(format!("dosql-restore-{}", std::process::id()));
            std::fs::create_dir_all(&tmpdir).with_context(|| show(&tmpdir))?;
            let file = tmpdir.join("restored.sqlite");
            std::fs::write(&file, &image).with_context(|| show(&file))?;
            let r = import(
                &file,
                db,
                &ImportOptions {
                    force,
                    quiet: true,
                    check: true,
                    chunk_pages: None,
                },
            );
            let _ = std::fs::remove_dir_all(&tmpdir);
            r?;
            if !quiet {
                crate::say!(
                    "restored {} at txid {want} into {db}: {} pages of {page_size} bytes from {} files in {:.2} s, checksum {got:016x}",
                    show(dir),
                    image.len() / page_size.max(1),
                    path.len(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    Ok(())
}
