//! The SQLite file an import reads: validated before anything is sent (header, page size, whole
//! pages, no hot journal or WAL beside it, `PRAGMA integrity_check`), then read page by page,
//! never whole into memory.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use dosql_pagestore::{MemStore, PageSize, PageStore, SQLITE_MAGIC, commit_from_image};
use dosql_vfs::{Database, VfsConfig};
use rusqlite::{Connection, OpenFlags};

use crate::bail;
use crate::error::{Context, Error, Result};
use crate::files::show;

/// A validated SQLite database file, open for reading its pages in order (or a snapshot of a
/// database held in memory, for a branch).
pub struct Source {
    path: PathBuf,
    reader: Box<dyn Read>,
    /// The file's page size.
    pub page_size: PageSize,
    /// Pages to import.
    pub page_count: u32,
    read: u32,
    /// A read transaction on the file, held while its pages are read: SQLite's SHARED lock
    /// keeps other processes from committing to it meanwhile (rollback-journal mode).
    _lock: Option<Connection>,
}

impl Source {
    /// Validates `path` and opens it. `check` runs `PRAGMA integrity_check` first.
    pub fn open(path: &Path, check: bool) -> Result<Source> {
        let meta = std::fs::metadata(path).with_context(|| show(path))?;
        if meta.is_dir() {
            bail!("{}: is a directory, not a SQLite database file", show(path));
        }
        let len = meta.len();
        let mut file = File::open(path).with_context(|| show(path))?;
        let mut header = [0u8; 100];
        if len < 100 || file.read_exact(&mut header).is_err() || &header[..16] != SQLITE_MAGIC {
            bail!(
                "{}: not a SQLite database file (no SQLite header)",
                show(path)
            );
        }
        let page_size = PageSize::from_header(&header).ok_or_else(|| {
            Error::msg(format!(
                "{}: the SQLite header holds no valid page size",
                show(path)
            ))
        })?;
        if !len.is_multiple_of(u64::from(page_size.get())) {
            bail!(
                "{}: {len} bytes is not a whole number of {page_size}-byte pages (truncated?)",
                show(path)
            );
        }
        let file_pages = u32::try_from(len / u64::from(page_size.get()))
            .map_err(|_| Error::msg(format!("{}: too many pages", show(path))))?;
        // The header's own page count is valid when the "version valid for" field matches the
        // change counter (SQLite's rule); a count above the file's size means pages are missing.
        let header_pages = u32::from_be_bytes([header[28], header[29], header[30], header[31]]);
        let header_valid = header_pages != 0 && header[24..28] == header[92..96];
        let page_count = if header_valid {
            if header_pages > file_pages {
                bail!(
                    "{}: the header says {header_pages} pages, the file holds {file_pages} (truncated?)",
                    show(path)
                );
            }
            // Pages past the header's count are not part of the database (SQLite ignores them).
            header_pages
        } else {
            file_pages
        };
        refuse_side_files(path)?;
        file.seek(SeekFrom::Start(0)).with_context(|| show(path))?;
        let wal_header = header[18] == 2 || header[19] == 2;
        let lock = if wal_header {
            // This SQLite is built without WAL and refuses a WAL-mode header: check the pages
            // through the dosql VFS instead, as they will be imported (WAL switched off).
            if check {
                check_through_vfs(path)?;
            }
            None
        } else {
            Some(lock_and_check(path, check)?)
        };
        Ok(Source {
            path: path.to_owned(),
            reader: Box::new(BufReader::with_capacity(1 << 20, file)),
            page_size,
            page_count,
            read: 0,
            _lock: lock,
        })
    }

    /// The next `max` pages (fewer at the end, none when done), page 1 with WAL mode switched
    /// off as `commit_from_image` does: dosql stores pages, not a WAL.
    pub fn next_pages(&mut self, max: u32) -> Result<Vec<u8>> {
        let n = max.min(self.page_count - self.read);
        let mut buf = vec![0u8; n as usize * self.page_size.bytes()];
        self.reader
            .read_exact(&mut buf)
            .with_context(|| format!("reading {}", show(&self.path)))?;
        if self.read == 0 && n > 0 && (buf[18] == 2 || buf[19] == 2) {
            buf[18] = 1;
            buf[19] = 1;
        }
        self.read += n;
        Ok(buf)
    }

    /// The page number the next read starts at.
    pub fn next_page_no(&self) -> u32 {
        self.read + 1
    }

    /// A database image read from another database (whole pages of `page_size` bytes).
    pub fn from_bytes(bytes: Vec<u8>, page_size: u32) -> Result<Source> {
        let size =
            PageSize::new(page_size).ok_or_else(|| Error::msg(format!("page size {page_size}")))?;
        if !bytes.len().is_multiple_of(size.bytes()) {
            bail!(
                "a snapshot of {} bytes is not whole pages of {size}",
                bytes.len()
            );
        }
        let page_count =
            u32::try_from(bytes.len() / size.bytes()).map_err(|_| Error::msg("too many pages"))?;
        Ok(Source {
            path: PathBuf::from("<snapshot>"),
            reader: Box::new(std::io::Cursor::new(bytes)),
            page_size: size,
            page_count,
            read: 0,
            _lock: None,
        })
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("path", &self.path)
            .field("page_size", &self.page_size)
            .field("page_count", &self.page_count)
            .finish_non_exhaustive()
    }
}

/// A hot journal or a WAL file beside the database means its file alone is not the database.
fn refuse_side_files(path: &Path) -> Result<()> {
    let side = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    let journal = side("-journal");
    if std::fs::metadata(&journal).is_ok_and(|m| m.len() > 0) {
        bail!(
            "{} exists: the database has a hot journal (an interrupted or running write); open it once with sqlite3 to roll it back, then import",
            show(&journal)
        );
    }
    let wal = side("-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        bail!(
            "{} exists: the database has changes in its WAL; checkpoint them first: sqlite3 {} 'PRAGMA wal_checkpoint(TRUNCATE)'",
            show(&wal),
            show(path)
        );
    }
    Ok(())
}

/// Opens the file read-only, runs the integrity check if asked, and keeps a read transaction
/// open (the returned connection) so the file cannot change while it is read.
fn lock_and_check(path: &Path, check: bool) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("{}: cannot open with SQLite", show(path)))?;
    conn.execute_batch("BEGIN").with_context(|| show(path))?;
    // The first read takes the SHARED lock, held until the transaction ends.
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
        .with_context(|| format!("{}: not a readable SQLite database", show(path)))?;
    if check {
        integrity(&conn).with_context(|| show(path))?;
    }
    Ok(conn)
}

fn check_through_vfs(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| show(path))?;
    let (size, commit) = commit_from_image(&bytes)
        .map_err(|e| Error::msg(format!("{}: {}", show(path), e.message())))?;
    let mut store = MemStore::new(size);
    store
        .commit(commit)
        .map_err(|e| Error::msg(format!("{}: {}", show(path), e.message())))?;
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!(
        "dosql-cli-check-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let db = Database::attach(&name, store, VfsConfig::default()).with_context(|| show(path))?;
    let conn = db.connect().with_context(|| show(path))?;
    integrity(&conn).with_context(|| show(path))
}

/// `PRAGMA integrity_check`: Ok for "ok", else the first problems it lists.
pub fn integrity(conn: &Connection) -> Result<()> {
    let lines = integrity_lines(conn)?;
    if lines == ["ok"] {
        return Ok(());
    }
    let shown: Vec<&str> = lines.iter().take(3).map(String::as_str).collect();
    bail!(
        "fails PRAGMA integrity_check: {}{}",
        shown.join("; "),
        if lines.len() > 3 { "; ..." } else { "" }
    )
}

/// The lines `PRAGMA integrity_check` returns.
pub fn integrity_lines(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare("PRAGMA integrity_check")
        .context("PRAGMA integrity_check")?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .context("PRAGMA integrity_check")?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .context("PRAGMA integrity_check")
}
