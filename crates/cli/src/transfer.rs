//! Whole databases in and out: `import`, `export`, `verify`, `info`, written once for every
//! kind of [`Database`].
//!
//! Atomicity: an import never changes what readers see until its last step, which switches to
//! the new pages in one atomic write (how, each database says: see `remote` and `local`). An
//! import that fails or is killed before that leaves the old database as it was.

use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use sha2::{Digest, Sha256};

use dosql_layout::checksum;

use crate::bail;
use crate::db::{Database, DbHead, Finish, Open, PageSink, SNAPSHOT_ATTEMPTS, chunk_delay};
use crate::error::{Context, Result};
use crate::files::{show, sibling, sync_dir};
use crate::progress::Progress;
use crate::source::Source;

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
    /// LTX's checksum of the pages (see `dosql_layout::checksum`).
    pub checksum: u64,
    /// The checksum the database says it has, when it knows.
    pub stated: Option<u64>,
}

/// SHA-256 and LTX's checksum of pages fed in order.
#[derive(Clone)]
pub struct PageHashes {
    sha: Sha256,
    ltx: u64,
    page_size: usize,
    next: u32,
    partial: Vec<u8>,
}

impl PageHashes {
    /// Nothing fed yet, for pages of `page_size` bytes.
    pub fn new(page_size: usize) -> PageHashes {
        PageHashes {
            sha: Sha256::new(),
            ltx: checksum::EMPTY,
            page_size: page_size.max(1),
            next: 1,
            partial: Vec::new(),
        }
    }

    /// Feeds bytes (whole pages, or pieces of them).
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.partial.extend_from_slice(bytes);
        let whole = self.partial.len() / self.page_size * self.page_size;
        for page in self.partial[..whole].chunks(self.page_size) {
            self.ltx = checksum::toggle(self.ltx, checksum::page(self.next, page));
            self.next += 1;
        }
        self.partial.drain(..whole);
    }

    /// The LTX checksum so far.
    pub fn checksum(&self) -> u64 {
        self.ltx
    }
}

impl Snapshot {
    fn new(head: DbHead, hashes: PageHashes) -> Snapshot {
        Snapshot {
            page_size: head.page_size,
            page_count: head.page_count,
            txid: head.txid,
            sha256: hex(&hashes.sha.finalize()),
            checksum: hashes.ltx,
            stated: head.checksum,
        }
    }

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
pub fn import(file: &Path, db: &mut dyn Database, opts: &ImportOptions) -> Result<()> {
    let started = Instant::now();
    let mut src = Source::open(file, opts.check)?;
    let label = format!("importing {}", show(file));
    let snap = load_snapshot(&mut src, db, opts, &label, None)?;
    if !opts.quiet {
        crate::say!(
            "imported {} into {db}: {}",
            show(file),
            snap.summary(started)
        );
    }
    Ok(())
}

/// Streams `src` into `db` in chunks and switches to it, the database checking the pages
/// against their checksum; on failure, the old database stays. `parent`: for a branch.
pub(crate) fn load_snapshot(
    src: &mut Source,
    db: &mut dyn Database,
    opts: &ImportOptions,
    label: &str,
    parent: Option<serde_json::Value>,
) -> Result<Snapshot> {
    let mut load = db.load(src.page_size, src.page_count, opts.force, opts.chunk_pages)?;
    let chunk = load.chunk_pages();
    let delay = chunk_delay();
    let mut progress = Progress::new(label, u64::from(src.page_count), opts.quiet);
    let mut hasher = PageHashes::new(src.page_size.bytes());
    let written = (|| -> Result<DbHead> {
        loop {
            let from = src.next_page_no();
            let pages = src.next_pages(chunk)?;
            if pages.is_empty() {
                break;
            }
            hasher.update(&pages);
            load.write(from, &pages)?;
            progress.add((pages.len() / src.page_size.bytes()) as u64);
            if let Some(d) = delay {
                std::thread::sleep(d);
            }
        }
        load.commit(&Finish {
            checksum: Some(hasher.checksum()),
            parent,
        })
    })();
    progress.finish();
    let head = match written {
        Ok(head) => head,
        Err(e) => {
            load.abort();
            return Err(e);
        }
    };
    if let Err(e) = load.tidy()
        && !opts.quiet
    {
        eprintln!(
            "dosql: imported, but deleting the old pages failed ({e}); the next import retries"
        );
    }
    Ok(Snapshot::new(head, hasher))
}

// ---------------------------------------------------------------------------------------------
// reading a consistent snapshot

/// Passes pages on to the sink it wraps, computing their SHA-256 and LTX checksum (from
/// scratch when the read starts over). The page size is learnt from the first head read
/// (`Database::head`), given to `new`.
struct Hashing<'a> {
    hasher: PageHashes,
    sink: &'a mut dyn PageSink,
}

impl PageSink for Hashing<'_> {
    fn restart(&mut self) -> Result<()> {
        self.hasher = PageHashes::new(self.hasher.page_size);
        self.sink.restart()
    }

    fn pages(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.sink.pages(bytes)
    }
}

/// Drops the pages (only their checksum is wanted).
struct Discard;

impl PageSink for Discard {
    fn restart(&mut self) -> Result<()> {
        Ok(())
    }

    fn pages(&mut self, _: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// [`Database::read_snapshot`], with the SHA-256 of the pages.
pub(crate) fn snapshot(
    db: &mut dyn Database,
    at: Option<u64>,
    chunk_pages: Option<u32>,
    progress: &mut Progress,
    sink: &mut dyn PageSink,
) -> Result<Snapshot> {
    let page_size = db.head()?.page_size as usize;
    let mut hashing = Hashing {
        hasher: PageHashes::new(page_size),
        sink,
    };
    let head = db.read_snapshot(at, chunk_pages, progress, &mut hashing)?;
    Ok(Snapshot::new(head, hashing.hasher))
}

// ---------------------------------------------------------------------------------------------
// export

/// A file written beside its destination and moved into place only when complete.
pub(crate) struct TempFile {
    path: PathBuf,
    file: File,
    kept: bool,
}

impl TempFile {
    pub(crate) fn create(dest: &Path) -> Result<TempFile> {
        let path = sibling(dest, &format!("dosql-export-{}", std::process::id()))?;
        let file = File::create(&path).with_context(|| show(&path))?;
        Ok(TempFile {
            path,
            file,
            kept: false,
        })
    }

    /// Where it is being written.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Empties the file (a restarted export).
    fn reset(&mut self) -> Result<()> {
        self.file.set_len(0).with_context(|| show(&self.path))?;
        self.file.rewind().with_context(|| show(&self.path))
    }

    /// Makes the content durable and moves it to `dest`; without `force`, never over an
    /// existing file (a hard link fails rather than replace).
    pub(crate) fn persist(mut self, dest: &Path, force: bool) -> Result<()> {
        self.file.sync_all().with_context(|| show(&self.path))?;
        if force {
            // A journal the replaced file left would be played back onto the new one by the
            // next SQLite that opens it.
            for suffix in ["-journal", "-wal", "-shm"] {
                let mut j = dest.as_os_str().to_owned();
                j.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(j));
            }
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

impl PageSink for TempFile {
    fn restart(&mut self) -> Result<()> {
        self.reset()
    }

    fn pages(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_all(bytes).with_context(|| show(&self.path))
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
    /// The txid to export (the history keeps it): the head when not given.
    pub txid: Option<u64>,
}

/// `dosql export <target> <file>`.
pub fn export(db: &mut dyn Database, dest: &Path, opts: &ExportOptions) -> Result<()> {
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
    let label = format!("exporting {db}");
    let mut progress = Progress::new(&label, 0, quiet);
    // Opened before the temp file, so a bad target leaves nothing behind.
    db.open(Open::Existing)?;
    let mut tmp = TempFile::create(dest)?;
    let snap = snapshot(db, opts.txid, opts.chunk_pages, &mut progress, &mut tmp)?;
    progress.finish();
    tmp.persist(dest, force)?;
    if !quiet {
        crate::say!("exported {db} to {}: {}", show(dest), snap.summary(started));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// verify, info

/// `dosql verify <target>`: prints the integrity check and the checksum; fails unless "ok".
pub fn verify(db: &mut dyn Database, quiet: bool) -> Result<()> {
    let label = format!("verifying {db}");
    let mut progress = Progress::new(&label, 0, quiet);
    let (lines, snap) = checked_snapshot(db, &mut progress)?;
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
    // LTX's checksum of the pages read, against the one the database keeps up to date.
    let matches = match snap.stated {
        Some(c) if c == snap.checksum => {
            crate::say!(
                "checksum: {:016x} (the database's own: it matches)",
                snap.checksum
            );
            true
        }
        Some(c) => {
            crate::say!(
                "checksum: {:016x} read, but the database says {c:016x}: MISMATCH",
                snap.checksum
            );
            false
        }
        None => {
            crate::say!(
                "checksum: {:016x} (the database's own is still being computed)",
                snap.checksum
            );
            true
        }
    };
    if !ok {
        bail!("{db}: the integrity check failed");
    }
    if !matches {
        bail!("{db}: the pages do not have the checksum the database keeps for them");
    }
    Ok(())
}

/// The integrity check and the page checksum at one txid: the head is read first, the check
/// runs, then the pages are read pinned to that head; a commit in between starts it all over.
fn checked_snapshot(
    db: &mut dyn Database,
    progress: &mut Progress,
) -> Result<(Vec<String>, Snapshot)> {
    for _ in 0..SNAPSHOT_ATTEMPTS {
        let txid = db.head()?.txid;
        let check = db
            .query("PRAGMA integrity_check", &json!([]))
            .map_err(|e| e.at(&*db))?;
        let lines: Vec<String> = check["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|row| row[0].as_str().unwrap_or("?").to_owned())
                    .collect()
            })
            .unwrap_or_default();
        match snapshot(db, Some(txid), None, progress, &mut Discard) {
            Ok(snap) => return Ok((lines, snap)),
            Err(e) if e.code() == Some("TXID_CHANGED") => continue,
            Err(e) => return Err(e),
        }
    }
    bail!(
        "{db}: the database changed during every one of {SNAPSHOT_ATTEMPTS} attempts to verify it"
    )
}

/// `dosql info <target>`.
pub fn info(db: &mut dyn Database, as_json: bool) -> Result<()> {
    let head = db.head()?;
    let (page_size, page_count, txid) = (
        u64::from(head.page_size),
        u64::from(head.page_count),
        head.txid,
    );
    let bytes = page_size * page_count;
    if as_json {
        crate::say!(
            "{}",
            json!({
                "target": db.to_string(),
                "page_size": page_size,
                "page_count": page_count,
                "size_bytes": bytes,
                "txid": txid,
                "checksum": head.checksum.map(|c| format!("{c:016x}")),
            })
        );
    } else {
        crate::say!(
            "target:     {db}\npage_size:  {page_size}\npage_count: {page_count}\nsize:       {bytes} bytes ({})\ntxid:       {txid}",
            human(bytes)
        );
    }
    Ok(())
}
