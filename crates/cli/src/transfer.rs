//! Whole databases in and out: `import`, `export`, `verify`, `info`, for remote and local
//! targets.
//!
//! Atomicity: an import never changes what readers see until its last step, which switches to
//! the new pages in one atomic write (remote: one put of the Durable Object's `meta`, see
//! worker/src/transfer.ts; local: a complete new store file renamed over the old one). An
//! import that fails or is killed before that leaves the old database as it was.

use std::borrow::Cow;
use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dosql_pagestore::{Commit, Page, PageNo, PageStore, RedbStore};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use crate::bail;
use crate::error::{Context, Error, Result};
use crate::local;
use crate::progress::Progress;
use crate::remote::{Remote, encode_pages};
use crate::source::{Source, integrity_lines};
use crate::target::{Target, show};

/// Pages per `GET /pages` (the server's most: one storage get of ≤128 keys).
const EXPORT_CHUNK_PAGES: u32 = 128;
/// How often an export restarts because the database changed under it before giving up.
const SNAPSHOT_ATTEMPTS: u32 = 20;
/// Bytes per local commit while building a store: bounded memory, few fsyncs.
const LOCAL_CHUNK_BYTES: usize = 16 << 20;
/// Test hook, never documented to users: a pause after each uploaded chunk, so a test can kill
/// the process in the middle of a real import.
const CHUNK_DELAY_ENV: &str = "DOSQL_TEST_CHUNK_DELAY_MS";

/// Options of `dosql import`.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Replace a database that has a schema.
    pub force: bool,
    /// No progress, no summary.
    pub quiet: bool,
    /// Run `PRAGMA integrity_check` on the file first.
    pub check: bool,
    /// Pages per request (remote) or per commit (local) instead of the default.
    pub chunk_pages: Option<u32>,
}

/// What was read or written: the database's shape and the SHA-256 of its pages in order
/// (which is the SHA-256 of the database file `export` writes).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Page size.
    pub page_size: u32,
    /// Pages.
    pub page_count: u32,
    /// Commit counter of the snapshot.
    pub txid: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
}

impl Snapshot {
    fn bytes(&self) -> u64 {
        u64::from(self.page_size) * u64::from(self.page_count)
    }

    /// The tail of the one-line summary import and export print.
    fn summary(&self, started: Instant) -> String {
        format!(
            "{} pages of {} bytes ({}) in {:.2} s, txid {}, sha256 {}",
            self.page_count,
            self.page_size,
            human(self.bytes()),
            started.elapsed().as_secs_f64(),
            self.txid,
            self.sha256
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

// ---------------------------------------------------------------------------------------------
// import

/// `dosql import <file> <target>`.
pub fn import(file: &Path, target: &Target, opts: &ImportOptions) -> Result<()> {
    let started = Instant::now();
    let mut src = Source::open(file, opts.check)?;
    let label = format!("importing {}", show(file));
    let snap = match target {
        Target::Remote(r) => import_remote(&mut src, r, opts, &label)?,
        Target::Local(p) => import_local(&mut src, p, opts, &label)?,
    };
    if !opts.quiet {
        crate::say!(
            "imported {} into {target}: {}",
            show(file),
            snap.summary(started)
        );
    }
    Ok(())
}

fn chunk_delay() -> Option<Duration> {
    std::env::var(CHUNK_DELAY_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
}

/// Retries `f` on transport failures (a lost connection), which the import protocol makes
/// safe: a chunk sent twice is stored once.
fn retrying<T>(mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut wait = Duration::from_millis(250);
    for _ in 0..3 {
        match f() {
            Err(e) if e.is_transport() => {
                std::thread::sleep(wait);
                wait *= 2;
            }
            other => return other,
        }
    }
    f()
}

/// Sends the switch. If its answer is lost, the switch may have happened or not: the server's
/// state tells which (its live prefix is the import's), and only a switch that did not happen
/// is sent again.
fn commit_remote(r: &Remote, id: &str, prefix: &str, force: bool) -> Result<Json> {
    let mut wait = Duration::from_millis(250);
    let mut retries = 0;
    loop {
        match r.import_commit(id, force) {
            Err(e) if e.is_transport() && retries < 3 => {
                retries += 1;
                std::thread::sleep(wait);
                wait *= 2;
                if let Ok(status) = r.import_status()
                    && !prefix.is_empty()
                    && status["prefix"] == prefix
                {
                    return Ok(status);
                }
            }
            other => return other,
        }
    }
}

fn not_empty(target: &str) -> Error {
    Error::msg(format!(
        "{target} is not empty: refusing to overwrite it (use --force to replace it)"
    ))
}

fn import_remote(
    src: &mut Source,
    r: &Remote,
    opts: &ImportOptions,
    label: &str,
) -> Result<Snapshot> {
    let size = src.page_size.get();
    let begin = r
        .import_begin(size, src.page_count, opts.force)
        .map_err(|e| match e.code() {
            Some("NOT_EMPTY") => not_empty(r.url()),
            _ => e.at(r.url()),
        })?;
    let id = begin["import_id"]
        .as_str()
        .ok_or_else(|| Error::msg(format!("{}: no import_id in {begin}", r.url())))?
        .to_owned();
    let prefix = begin["prefix"].as_str().unwrap_or_default().to_owned();
    let max = begin["max_chunk_pages"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1);
    let chunk = opts.chunk_pages.unwrap_or(max).clamp(1, max);
    // Compressed page values when the server takes them (about half the bytes to send and to
    // store); whole raw pages for a server that predates them.
    let compress = begin["page_formats"]
        .as_array()
        .is_some_and(|f| f.contains(&json!(2)));
    let delay = chunk_delay();
    let mut progress = Progress::new(label, u64::from(src.page_count), opts.quiet);
    let mut hasher = Sha256::new();
    let upload = (|| -> Result<Json> {
        loop {
            let from = src.next_page_no();
            let pages = src.next_pages(chunk)?;
            if pages.is_empty() {
                break;
            }
            hasher.update(&pages);
            let (format, body) = if compress {
                (2, Cow::Owned(encode_pages(&pages, src.page_size, from)?))
            } else {
                (1, Cow::Borrowed(&pages[..]))
            };
            retrying(|| r.import_chunk(&id, from, format, &body)).map_err(|e| {
                e.context(format!("uploading pages from {from}"))
                    .at(r.url())
            })?;
            progress.add((pages.len() / src.page_size.bytes()) as u64);
            if let Some(d) = delay {
                std::thread::sleep(d);
            }
        }
        commit_remote(r, &id, &prefix, opts.force).map_err(|e| match e.code() {
            Some("NOT_EMPTY") => not_empty(r.url()),
            _ => e.context("switching to the imported pages").at(r.url()),
        })
    })();
    progress.finish();
    let done = match upload {
        Ok(done) => done,
        Err(e) => {
            // Best effort: the staged pages are garbage either way, and the next import
            // clears them if this does not get through.
            let _ = r.import_abort(&id);
            return Err(e);
        }
    };
    // The old generation's pages: deleted now in bounded requests (the server also clears
    // what is left on later imports).
    let mut left = done["garbage_pages"].as_u64().unwrap_or(0);
    let mut rounds = 0;
    while left > 0 && rounds < 100_000 {
        rounds += 1;
        match r.import_gc() {
            Ok(a) => left = a["garbage_pages"].as_u64().unwrap_or(0),
            Err(e) => {
                if !opts.quiet {
                    eprintln!(
                        "dosql: imported, but deleting the old pages failed ({e}); the next import retries"
                    );
                }
                break;
            }
        }
    }
    Ok(Snapshot {
        page_size: size,
        page_count: src.page_count,
        txid: done["txid"].as_u64().unwrap_or(0),
        sha256: hex(&hasher.finalize()),
    })
}

/// Builds a complete new store beside `path`, then renames it over `path`: the rename is the
/// atomic switch (it also lets an import change the page size, which a store cannot).
fn import_local(
    src: &mut Source,
    path: &Path,
    opts: &ImportOptions,
    label: &str,
) -> Result<Snapshot> {
    if path.exists() {
        // Also makes sure `path` is a dosql store that nobody has open: never clobber
        // anything else.
        let store = local::open_existing(path)?;
        if local::schema_objects(store)? > 0 && !opts.force {
            return Err(not_empty(&show(path)));
        }
    }
    let tmp = sibling(path, "dosql-import")?;
    // A fixed name: what a killed import left is removed here, by the next one.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("{}: {e}", show(&tmp)),
    }
    let size = src.page_size;
    let mut progress = Progress::new(label, u64::from(src.page_count), opts.quiet);
    let built = (|| -> Result<Snapshot> {
        let mut store = RedbStore::open(&tmp, size)
            .map_err(|e| Error::msg(format!("{}: {}", show(&tmp), e.message())))?;
        let per_commit = opts
            .chunk_pages
            .unwrap_or((LOCAL_CHUNK_BYTES / size.bytes()).max(1) as u32)
            .max(1);
        let delay = chunk_delay();
        let mut hasher = Sha256::new();
        let mut head = dosql_pagestore::Head::default();
        loop {
            let from = src.next_page_no();
            let bytes = src.next_pages(per_commit)?;
            if bytes.is_empty() {
                break;
            }
            hasher.update(&bytes);
            let pages: Vec<(PageNo, Page)> = bytes
                .chunks(size.bytes())
                .enumerate()
                .map(|(i, p)| {
                    let no = PageNo::new(from + i as u32).expect("page numbers start at 1");
                    (no, Page::copy_from(p))
                })
                .collect();
            let n = pages.len() as u64;
            head = store
                .commit(Commit {
                    page_count: src.page_count,
                    pages,
                })
                .map_err(|e| Error::msg(format!("{}: {e}", show(&tmp))))?;
            progress.add(n);
            if let Some(d) = delay {
                std::thread::sleep(d);
            }
        }
        Ok(Snapshot {
            page_size: size.get(),
            page_count: head.page_count,
            txid: head.txid,
            sha256: hex(&hasher.finalize()),
        })
    })();
    progress.finish();
    let snap = match built {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    // redb made every commit durable (fsync); the rename and its directory entry follow.
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", show(&tmp), show(path)))?;
    sync_dir(path);
    Ok(snap)
}

/// `dir/.<name>.<what>`: beside `path`, so a rename between the two is atomic.
fn sibling(path: &Path, what: &str) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::msg(format!("{}: not a file path", show(path))))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{what}"));
    Ok(path.with_file_name(tmp_name))
}

/// Makes a rename in `path`'s directory durable (best effort: not every platform can).
fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

// ---------------------------------------------------------------------------------------------
// reading a consistent snapshot

/// Reads every page of `r` at one txid, feeding them in order to `sink`; starts over (calling
/// `restart` first each time) when the database changes in between. With `pin`, only that
/// txid will do.
fn remote_snapshot(
    r: &Remote,
    pin: Option<u64>,
    chunk: u32,
    progress: &mut Progress,
    restart: &mut dyn FnMut() -> Result<()>,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<Snapshot> {
    let chunk = chunk.clamp(1, EXPORT_CHUNK_PAGES);
    let delay = chunk_delay();
    'attempt: for attempt in 1..=SNAPSHOT_ATTEMPTS {
        restart()?;
        progress.restart();
        let mut hasher = Sha256::new();
        let mut from = 1u32;
        let mut head: Option<(u32, u32, u64)> = None;
        loop {
            let answer = match r.pages(from, chunk, head.map(|h| h.2).or(pin)) {
                Ok(a) => a,
                Err(e) if e.code() == Some("TXID_CHANGED") => {
                    if pin.is_some() {
                        return Err(e);
                    }
                    progress.note(&format!(
                        "the database changed during the read (attempt {attempt}); starting over"
                    ));
                    continue 'attempt;
                }
                Err(e) => return Err(e.at(r.url())),
            };
            let (size, count, txid) =
                *head.get_or_insert((answer.page_size, answer.page_count, answer.txid));
            if from == 1 {
                progress.set_total(u64::from(count));
            }
            let expected = chunk.min(count.saturating_sub(from - 1)) as usize * size as usize;
            if answer.bytes.len() != expected
                || (answer.page_size, answer.page_count, answer.txid) != (size, count, txid)
            {
                bail!(
                    "{}: GET /pages from {from} answered {} bytes for head {:?}; expected {expected} for {:?}",
                    r.url(),
                    answer.bytes.len(),
                    (answer.page_size, answer.page_count, answer.txid),
                    (size, count, txid)
                );
            }
            hasher.update(&answer.bytes);
            sink(&answer.bytes)?;
            let got = (answer.bytes.len() / size.max(1) as usize) as u32;
            if got == 0 {
                bail!(
                    "{}: GET /pages from {from} answered no pages of the {count}",
                    r.url()
                );
            }
            progress.add(u64::from(got));
            from += got;
            if let Some(d) = delay {
                std::thread::sleep(d);
            }
            if from > count {
                return Ok(Snapshot {
                    page_size: size,
                    page_count: count,
                    txid,
                    sha256: hex(&hasher.finalize()),
                });
            }
        }
    }
    bail!(
        "{}: the database changed during every one of {SNAPSHOT_ATTEMPTS} attempts to read it; try again when it is quieter",
        r.url()
    )
}

/// Reads every page of a local store in order (the store is open exclusively: consistent).
fn local_snapshot(
    store: &mut RedbStore,
    progress: &mut Progress,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<Snapshot> {
    let (size, head) = local::head(store)?;
    progress.set_total(u64::from(head.page_count));
    let mut hasher = Sha256::new();
    let per_read = (LOCAL_CHUNK_BYTES / size.bytes()).max(1) as u32;
    let mut from = 1u32;
    let mut buf = Vec::with_capacity(per_read as usize * size.bytes());
    while from <= head.page_count {
        let to = head.page_count.min(from + per_read - 1);
        let nos: Vec<PageNo> = (from..=to)
            .map(|n| PageNo::new(n).expect("page numbers start at 1"))
            .collect();
        let pages = store
            .read_pages(&nos)
            .map_err(|e| Error::msg(format!("reading the store: {e}")))?;
        buf.clear();
        for page in pages {
            match page {
                Some(p) => buf.extend_from_slice(&p),
                None => buf.resize(buf.len() + size.bytes(), 0),
            }
        }
        hasher.update(&buf);
        sink(&buf)?;
        progress.add(u64::from(to - from + 1));
        from = to + 1;
    }
    Ok(Snapshot {
        page_size: size.get(),
        page_count: head.page_count,
        txid: head.txid,
        sha256: hex(&hasher.finalize()),
    })
}

// ---------------------------------------------------------------------------------------------
// export

/// A file written beside its destination and moved into place only when complete.
struct TempFile {
    path: PathBuf,
    file: File,
    kept: bool,
}

impl TempFile {
    fn create(dest: &Path) -> Result<TempFile> {
        let path = sibling(dest, &format!("dosql-export-{}", std::process::id()))?;
        let file = File::create(&path).with_context(|| show(&path))?;
        Ok(TempFile {
            path,
            file,
            kept: false,
        })
    }

    /// Empties the file (a restarted export).
    fn reset(&mut self) -> Result<()> {
        self.file.set_len(0).with_context(|| show(&self.path))?;
        self.file.rewind().with_context(|| show(&self.path))
    }

    /// Makes the content durable and moves it to `dest`; without `force`, never over an
    /// existing file (a hard link fails rather than replace).
    fn persist(mut self, dest: &Path, force: bool) -> Result<()> {
        self.file.sync_all().with_context(|| show(&self.path))?;
        if force {
            std::fs::rename(&self.path, dest).with_context(|| show(dest))?;
        } else {
            match std::fs::hard_link(&self.path, dest) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&self.path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    bail!(
                        "{} exists: refusing to overwrite it (use --force)",
                        show(dest)
                    )
                }
                // A file system without hard links: check, then rename.
                Err(_) => {
                    if dest.exists() {
                        bail!(
                            "{} exists: refusing to overwrite it (use --force)",
                            show(dest)
                        );
                    }
                    std::fs::rename(&self.path, dest).with_context(|| show(dest))?;
                }
            }
        }
        self.kept = true;
        sync_dir(dest);
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Options of `dosql export`.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Replace an existing file.
    pub force: bool,
    /// No progress, no summary.
    pub quiet: bool,
    /// Pages per request (remote) instead of the server's maximum.
    pub chunk_pages: Option<u32>,
}

/// `dosql export <target> <file>`.
pub fn export(target: &Target, dest: &Path, opts: &ExportOptions) -> Result<()> {
    let ExportOptions { force, quiet, .. } = *opts;
    let started = Instant::now();
    if dest.exists() && !force {
        bail!(
            "{} exists: refusing to overwrite it (use --force)",
            show(dest)
        );
    }
    if dest.is_dir() {
        bail!("{}: is a directory", show(dest));
    }
    let label = format!("exporting {target}");
    let mut progress = Progress::new(&label, 0, quiet);
    // Opened before the temp file, so a bad target leaves nothing behind.
    let mut local_store = match target {
        Target::Local(p) => Some(local::open_existing(p)?),
        Target::Remote(_) => None,
    };
    let mut tmp = TempFile::create(dest)?;
    let tmp_path = tmp.path.clone();
    let snap = {
        let file = std::cell::RefCell::new(&mut tmp);
        let mut sink = |bytes: &[u8]| -> Result<()> {
            file.borrow_mut()
                .file
                .write_all(bytes)
                .with_context(|| show(&tmp_path))
        };
        match (target, local_store.as_mut()) {
            (Target::Remote(r), _) => {
                let mut restart = || file.borrow_mut().reset();
                remote_snapshot(
                    r,
                    None,
                    opts.chunk_pages.unwrap_or(EXPORT_CHUNK_PAGES),
                    &mut progress,
                    &mut restart,
                    &mut sink,
                )?
            }
            (Target::Local(_), Some(store)) => local_snapshot(store, &mut progress, &mut sink)?,
            (Target::Local(_), None) => unreachable!("opened above"),
        }
    };
    progress.finish();
    tmp.persist(dest, force)?;
    if !quiet {
        crate::say!(
            "exported {target} to {}: {}",
            show(dest),
            snap.summary(started)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// verify, info

/// `dosql verify <target>`: prints the integrity check and the checksum; fails unless "ok".
pub fn verify(target: &Target, quiet: bool) -> Result<()> {
    let label = format!("verifying {target}");
    let mut progress = Progress::new(&label, 0, quiet);
    let (lines, snap) = match target {
        Target::Remote(r) => verify_remote(r, &mut progress)?,
        Target::Local(p) => {
            let mut store = local::open_existing(p)?;
            let snap = local_snapshot(&mut store, &mut progress, &mut |_| Ok(()))?;
            let session = local::session(store)?;
            (integrity_lines(session.connection())?, snap)
        }
    };
    progress.finish();
    let ok = lines == ["ok"];
    crate::say!(
        "integrity_check: {}",
        if ok {
            "ok".to_owned()
        } else {
            lines.join("\n  ")
        }
    );
    crate::say!(
        "sha256: {}\npages: {} x {} bytes ({} bytes), txid {}",
        snap.sha256,
        snap.page_count,
        snap.page_size,
        snap.bytes(),
        snap.txid
    );
    if !ok {
        bail!("{target}: the integrity check failed");
    }
    Ok(())
}

/// The integrity check and the page checksum at one txid: the head is read first, the check
/// runs, then the pages are read pinned to that head; a commit in between starts it all over.
fn verify_remote(r: &Remote, progress: &mut Progress) -> Result<(Vec<String>, Snapshot)> {
    for _ in 0..SNAPSHOT_ATTEMPTS {
        let stats = r.stats().map_err(|e| e.at(r.url()))?;
        let txid = stats["txid"]
            .as_u64()
            .ok_or_else(|| Error::msg(format!("{}: no txid in the stats", r.url())))?;
        let check = r
            .query("PRAGMA integrity_check", &json!([]))
            .map_err(|e| e.at(r.url()))?;
        let lines: Vec<String> = check["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|row| row[0].as_str().unwrap_or("?").to_owned())
                    .collect()
            })
            .unwrap_or_default();
        match remote_snapshot(
            r,
            Some(txid),
            EXPORT_CHUNK_PAGES,
            progress,
            &mut || Ok(()),
            &mut |_| Ok(()),
        ) {
            Ok(snap) => return Ok((lines, snap)),
            Err(e) if e.code() == Some("TXID_CHANGED") => continue,
            Err(e) => return Err(e),
        }
    }
    bail!(
        "{}: the database changed during every one of {SNAPSHOT_ATTEMPTS} attempts to verify it",
        r.url()
    )
}

/// `dosql info <target>`.
pub fn info(target: &Target, as_json: bool) -> Result<()> {
    let (page_size, page_count, txid) = match target {
        Target::Remote(r) => {
            let s = r.stats().map_err(|e| e.at(r.url()))?;
            let field = |k: &str| {
                s[k].as_u64()
                    .ok_or_else(|| Error::msg(format!("{}: the stats have no {k}: {s}", r.url())))
            };
            (field("page_size")?, field("page_count")?, field("txid")?)
        }
        Target::Local(p) => {
            let mut store = local::open_existing(p)?;
            let (size, head) = local::head(&mut store)?;
            (u64::from(size.get()), u64::from(head.page_count), head.txid)
        }
    };
    let bytes = page_size * page_count;
    if as_json {
        crate::say!(
            "{}",
            json!({
                "target": target.to_string(),
                "page_size": page_size,
                "page_count": page_count,
                "size_bytes": bytes,
                "txid": txid,
            })
        );
    } else {
        crate::say!(
            "target:     {target}\npage_size:  {page_size}\npage_count: {page_count}\nsize:       {bytes} bytes ({})\ntxid:       {txid}",
            human(bytes)
        );
    }
    Ok(())
}
