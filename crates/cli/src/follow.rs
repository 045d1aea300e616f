//! `dosql follow <target> <file.sqlite>`: keeps a plain SQLite file in sync with a database,
//! so that the `sqlite3` shell and any SQLite library can read it while it follows.
//!
//! The file starts as an export. Then, as the database commits, the follower asks for LTX
//! files of the commits after its own txid (`GET ltx`), checks each (the file's own checksum,
//! txid continuity, the database checksum before it against the file's), and applies its
//! pages in one SQLite transaction through the `sqlite_dbpage` table: SQLite's own pager and
//! rollback journal, so a reader in another process sees the file before or after an update,
//! never a mix, and a killed follower leaves a hot journal that the next opener rolls back.
//! The checksum after the pages must be the one the LTX file states, or the transaction is
//! rolled back. When the history no longer keeps the commits after the follower's txid, or
//! the database's line of commits no longer continues from the file's (an import replaced
//! it), the follower takes a new snapshot, again as one transaction.
//!
//! SQLite's pager stamps page 1 of every transaction it commits: the change counter (bytes
//! 24-27, and its copy at 92-95) becomes the file's counter before the transaction plus one,
//! and bytes 96-99 the library's version, whatever the transaction wrote there. Readers in
//! other processes rely on that counter changing to drop their caches, so the follower lets
//! SQLite keep it, and brings it level with the database's by committing empty updates of
//! page 1 while it is behind (by at most [`MAX_COUNTER_STEPS`]). Through SQL the database's
//! counter goes up by one per commit, so the file equals the database byte for byte; after
//! a restore or an import, whose page 1 may carry a lower counter, the file's stays ahead
//! and those 12 bytes differ. Checksums of the file therefore count page 1 with those bytes
//! zeroed (its "normalized" checksum); the database's own checksum is kept beside it.
//!
//! Where the follower is, is a small JSON file beside the database (`.<name>.dosql-follow`):
//! the source, the txid and checksums it is at, and those of the update it is applying. It is
//! written before each update commits; on start the follower computes the file's checksum
//! and takes whichever of the two positions it matches, so a kill at any point resumes.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dosql_layout::checksum;
use dosql_layout::ltx::Ltx;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::bail;
use crate::db::{Database, Open, PageSink};
use crate::error::{Context as _, Error, Result};
use crate::files::{show, sibling, sync_dir};
use crate::progress::Progress;
use crate::transfer::{TempFile, snapshot};

/// Commits asked for in one LTX file at most (fewer when the file would be too big).
const MAX_RANGE: u64 = 1024;
/// Empty updates of page 1 the follower commits at most to bring the file's change counter
/// level with the database's.
const MAX_COUNTER_STEPS: u32 = 4096;
/// How long a reader may hold the file before an update waits no longer.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of `dosql follow`.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// Catch up once, then exit.
    pub once: bool,
    /// Between polls of the database.
    pub interval: Duration,
    /// No progress, no lines per update.
    pub quiet: bool,
}

/// A txid, the database's checksum there and the file's (16 hex digits each).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    txid: u64,
    /// The database's LTX checksum.
    #[serde(with = "hex64")]
    checksum: u64,
    /// The file's, with page 1 normalized (see above).
    #[serde(with = "hex64")]
    file_checksum: u64,
    /// The database's page 1's page checksum (the file's page 1 may differ).
    #[serde(with = "hex64")]
    page1: u64,
    /// The database's change counter there, which the file's is brought level with after
    /// each update; kept so that a follower killed before that resumes it. Absent in states
    /// the first release of the follower wrote (then the next update that writes page 1
    /// levels it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    counter: Option<u32>,
}

/// Page 1 with the bytes SQLite stamps at each commit zeroed.
fn normalized(page1: &[u8]) -> Vec<u8> {
    let mut p = page1.to_vec();
    if p.len() >= 100 {
        p[24..28].fill(0);
        p[92..100].fill(0);
    }
    p
}

/// The normalized page checksum of page 1.
fn page1_sum(page1: &[u8]) -> u64 {
    checksum::page(1, &normalized(page1))
}

/// Page 1's change counter.
fn counter_of(page1: &[u8]) -> u32 {
    page1
        .get(24..28)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The follower's state file.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct State {
    format: u32,
    /// The database followed, as given.
    source: String,
    /// Where the file is.
    at: Position,
    /// The update being applied: where the file is once it commits.
    next: Option<Position>,
}

const STATE_FORMAT: u32 = 1;

mod hex64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        u64::from_str_radix(&s, 16).map_err(serde::de::Error::custom)
    }
}

/// The follower of one database into one file.
struct Follower<'a> {
    db: &'a mut dyn Database,
    path: PathBuf,
    state_path: PathBuf,
    conn: Connection,
    at: Position,
    page_size: u32,
    page_count: u32,
    quiet: bool,
}

/// `dosql follow <target> <file>`.
pub fn follow(db: &mut dyn Database, file: &Path, opts: &FollowOptions) -> Result<()> {
    db.open(Open::Existing)?;
    let state_path = sibling(file, "dosql-follow")?;
    if !file.exists() {
        bootstrap(db, file, &state_path, opts.quiet)?;
    } else if !state_path.exists() {
        bail!(
            "{} exists and is not a follower's file (no {}): choose a new file, or remove it to start over",
            show(file),
            show(&state_path)
        );
    }
    let mut f = Follower::open(db, file, state_path, opts.quiet)?;
    let mut failures = 0u32;
    loop {
        match f.catch_up() {
            Ok(applied) => {
                failures = 0;
                if opts.once {
                    if !opts.quiet {
                        crate::say!(
                            "{} follows {} at txid {} (checksum {:016x}){}",
                            show(file),
                            f.db,
                            f.at.txid,
                            f.at.checksum,
                            if applied == 0 {
                                String::new()
                            } else {
                                format!(", {applied} updates applied")
                            }
                        );
                    }
                    return Ok(());
                }
            }
            // A server that cannot be reached (a restart, a network blip), or a reader holding
            // the file longer than the busy timeout, is waited for.
            Err(e)
                if (e.is_transport() || e.to_string().contains("database is locked"))
                    && !opts.once =>
            {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    eprintln!("dosql: {e}; retrying");
                }
            }
            Err(e) => return Err(e),
        }
        std::thread::sleep(opts.interval);
    }
}

/// A new follower file: an export, written beside and moved into place, and its state.
fn bootstrap(db: &mut dyn Database, file: &Path, state_path: &Path, quiet: bool) -> Result<()> {
    let label = format!("copying {db}");
    let mut progress = Progress::new(&label, 0, quiet);
    let mut tmp = TempFile::create(file)?;
    let snap = snapshot(db, None, None, &mut progress, &mut tmp)?;
    progress.finish();
    if let Some(stated) = snap.stated
        && stated != snap.checksum
    {
        bail!(
            "{db}: the pages read have checksum {:016x}, the database says {stated:016x}: nothing written",
            snap.checksum
        );
    }
    let page1 = {
        use std::io::Read as _;
        let mut p = vec![0u8; snap.page_size as usize];
        if snap.page_count > 0 {
            File::open(tmp.path())
                .and_then(|mut f| f.read_exact(&mut p))
                .with_context(|| show(tmp.path()))?;
        }
        p
    };
    let at = if snap.page_count > 0 {
        let db1 = checksum::page(1, &page1);
        Position {
            txid: snap.txid,
            checksum: snap.checksum,
            file_checksum: checksum::toggle(
                checksum::toggle(snap.checksum, db1),
                page1_sum(&page1),
            ),
            page1: db1,
            counter: Some(counter_of(&page1)),
        }
    } else {
        Position {
            txid: snap.txid,
            checksum: snap.checksum,
            file_checksum: snap.checksum,
            page1: 0,
            counter: None,
        }
    };
    // The state first: a file without its state would be refused at the next start.
    write_state(state_path, &db.to_string(), at, None)?;
    tmp.persist(file, false)?;
    Ok(())
}

/// Tests only: `DOSQL_TEST_FOLLOW_CRASH=<point>` kills the process where a crash is worst:
/// `before-commit`, after the state names the update and before SQLite commits it (the
/// journal left hot); `after-commit`, once it committed and before the file's change counter
/// is level with the database's.
fn crash_point(point: &str) {
    if std::env::var("DOSQL_TEST_FOLLOW_CRASH").is_ok_and(|p| p == point) {
        std::process::abort();
    }
}

fn write_state(path: &Path, source: &str, at: Position, next: Option<Position>) -> Result<()> {
    let state = State {
        format: STATE_FORMAT,
        source: source.to_owned(),
        at,
        next,
    };
    let tmp = sibling(path, "tmp")?;
    let mut f = File::create(&tmp).with_context(|| show(&tmp))?;
    let text = serde_json::to_string_pretty(&state).map_err(Error::msg)?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| show(&tmp))?;
    std::fs::rename(&tmp, path).with_context(|| show(path))?;
    sync_dir(path);
    Ok(())
}

fn sql_error(path: &Path, e: &rusqlite::Error) -> Error {
    Error::msg(format!("{}: {e}", show(path)))
}

/// A write transaction on the file, its lock taken at once (readers may still read).
fn immediate<'c>(conn: &'c mut Connection, path: &Path) -> Result<rusqlite::Transaction<'c>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sql_error(path, &e))
}

impl<'a> Follower<'a> {
    fn open(
        db: &'a mut dyn Database,
        path: &Path,
        state_path: PathBuf,
        quiet: bool,
    ) -> Result<Follower<'a>> {
        let text = std::fs::read_to_string(&state_path).with_context(|| show(&state_path))?;
        let state: State = serde_json::from_str(&text).map_err(|e| {
            Error::msg(format!(
                "{}: not a follower's state this dosql reads ({e}); remove the file and its state to start over",
                show(&state_path)
            ))
        })?;
        if state.format != STATE_FORMAT {
            bail!(
                "{}: state format {} is not the {STATE_FORMAT} this dosql reads",
                show(&state_path),
                state.format
            );
        }
        let source = db.to_string();
        if state.source != source {
            bail!(
                "{} follows {}, not {source}: choose another file",
                show(path),
                state.source
            );
        }
        let conn = Connection::open(path).map_err(|e| sql_error(path, &e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sql_error(path, &e))?;
        let mut f = Follower {
            db,
            path: path.to_owned(),
            state_path,
            conn,
            at: state.at,
            page_size: 0,
            page_count: 0,
            quiet,
        };
        // Opening rolls back what a killed follower left (a hot journal); then the file's
        // checksum says which position it is at.
        let (size, count, sum) = f.scan()?;
        f.page_size = size;
        f.page_count = count;
        f.at = match state.next {
            _ if sum == state.at.file_checksum => state.at,
            Some(next) if sum == next.file_checksum => next,
            _ => bail!(
                "{}: its pages have checksum {sum:016x}, not the {:016x} of txid {} that dosql follow left: \
                 something else wrote to it; remove it and its state ({}) to start over",
                show(path),
                state.at.file_checksum,
                state.at.txid,
                show(&f.state_path)
            ),
        };
        // A follower killed after an update committed, before its change counter was level,
        // levels it now: otherwise the file would differ from the database in those bytes
        // until an update wrote page 1 again.
        f.level_counter()?;
        Ok(f)
    }

    /// Page size, page count and LTX checksum of the file, read in one transaction.
    fn scan(&mut self) -> Result<(u32, u32, u64)> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| sql_error(&path, &e);
        let tx = self.conn.transaction().map_err(err)?;
        let size: u32 = tx
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(err)?;
        let mut sum = checksum::EMPTY;
        let mut count = 0u32;
        {
            let mut stmt = tx
                .prepare("SELECT pgno, data FROM sqlite_dbpage ORDER BY pgno")
                .map_err(err)?;
            let mut rows = stmt.query([]).map_err(err)?;
            while let Some(row) = rows.next().map_err(err)? {
                let no: u32 = row.get(0).map_err(err)?;
                let data: Vec<u8> = row.get(1).map_err(err)?;
                let c = if no == 1 {
                    page1_sum(&data)
                } else {
                    checksum::page(no, &data)
                };
                sum = checksum::toggle(sum, c);
                count = no;
            }
        }
        tx.commit().map_err(err)?;
        Ok((size, count, sum))
    }

    /// Applies every commit the database has after the file's txid: the updates applied.
    fn catch_up(&mut self) -> Result<u64> {
        let mut applied = 0u64;
        loop {
            let h = self.db.history(1, None)?;
            let newest = h["txid"].as_u64().unwrap_or(0);
            let oldest = h["window"]["oldest_txid"].as_u64().unwrap_or(newest);
            let stated = h["checksum"]
                .as_str()
                .and_then(|c| u64::from_str_radix(c, 16).ok());
            if newest == self.at.txid {
                if stated.is_some_and(|c| c != self.at.checksum) {
                    self.note("the database's commits no longer continue the file's; taking a new snapshot");
                    self.resnapshot()?;
                    applied += 1;
                }
                return Ok(applied);
            }
            if newest < self.at.txid || self.at.txid < oldest {
                let why = if newest < self.at.txid {
                    format!(
                        "the database is at txid {newest}, behind the file's {}",
                        self.at.txid
                    )
                } else {
                    format!(
                        "the history no longer keeps txid {} (it starts at {oldest})",
                        self.at.txid
                    )
                };
                self.note(&format!("{why}; taking a new snapshot"));
                self.resnapshot()?;
                applied += 1;
                continue;
            }
            let mut to = newest.min(self.at.txid + MAX_RANGE);
            let bytes = loop {
                match self.db.ltx(self.at.txid + 1, to) {
                    Ok(b) => break Some(b),
                    Err(e) if e.code() == Some("LTX_TOO_LARGE") && to > self.at.txid + 1 => {
                        to = self.at.txid + (to - self.at.txid) / 2;
                    }
                    Err(e) if matches!(e.code(), Some("LTX_TOO_LARGE" | "OUT_OF_WINDOW")) => {
                        break None;
                    }
                    Err(e) => return Err(e),
                }
            };
            let Some(bytes) = bytes else {
                self.note("the next commit cannot be sent as one LTX file; taking a new snapshot");
                self.resnapshot()?;
                applied += 1;
                continue;
            };
            let ltx = Ltx::decode(&bytes).map_err(|e| Error::msg(format!("{}: {e}", self.db)))?;
            match self.apply(&ltx)? {
                true => applied += 1,
                false => {
                    self.note("the database's commits no longer continue the file's; taking a new snapshot");
                    self.resnapshot()?;
                    applied += 1;
                }
            }
        }
    }

    fn note(&self, text: &str) {
        if !self.quiet {
            eprintln!("dosql: {}: {text}", show(&self.path));
        }
    }

    /// Applies one LTX file in one transaction; `false` when it does not continue the file
    /// (another txid, page size or checksum before it), changing nothing.
    fn apply(&mut self, ltx: &Ltx) -> Result<bool> {
        let h = ltx.header;
        if h.min_txid != self.at.txid + 1
            || h.page_size != self.page_size
            || (h.has_checksums() && h.pre_apply != self.at.checksum)
            || h.is_snapshot()
        {
            return Ok(false);
        }
        let path = self.path.clone();
        let err = |e: rusqlite::Error| sql_error(&path, &e);
        let tx = immediate(&mut self.conn, &path)?;
        let mut w = PageWriter::new(&tx, &path, self.page_size, self.page_count, self.at)?;
        for (no, page) in &ltx.pages {
            w.put(*no, page)?;
        }
        let (count, next) = w.finish(h.commit, h.max_txid)?;
        if h.has_checksums() && next.checksum != ltx.post_apply {
            // Rolled back (dropped); the caller takes a new snapshot instead.
            drop(tx);
            self.note(&format!(
                "after txids {}..={} the pages have checksum {:016x}, the LTX file says {:016x}",
                h.min_txid, h.max_txid, next.checksum, ltx.post_apply
            ));
            return Ok(false);
        }
        write_state(&self.state_path, &self.db.to_string(), self.at, Some(next))?;
        crash_point("before-commit");
        tx.commit().map_err(err)?;
        crash_point("after-commit");
        self.settle(next, count)?;
        if !self.quiet {
            crate::say!(
                "{}: txid {} ({} pages written, {} pages)",
                show(&self.path),
                next.txid,
                ltx.pages.len(),
                count
            );
        }
        Ok(true)
    }

    /// After an update committed: where the file is; then its change counter levelled.
    fn settle(&mut self, next: Position, count: u32) -> Result<()> {
        self.at = next;
        self.page_count = count;
        self.level_counter()
    }

    /// Brings the file's change counter level with the database's at the file's position,
    /// when it is behind.
    fn level_counter(&mut self) -> Result<()> {
        let Some(want) = self.at.counter.filter(|_| self.page_count > 0) else {
            return Ok(());
        };
        let path = self.path.clone();
        let err = |e: rusqlite::Error| sql_error(&path, &e);
        for _ in 0..MAX_COUNTER_STEPS {
            let tx = immediate(&mut self.conn, &path)?;
            let page1: Vec<u8> = tx
                .query_row("SELECT data FROM sqlite_dbpage WHERE pgno = 1", [], |r| {
                    r.get(0)
                })
                .map_err(err)?;
            // Wrapping: a counter "behind" by more than half the range is ahead.
            let behind = want.wrapping_sub(counter_of(&page1));
            if behind == 0 || behind > u32::MAX / 2 {
                return Ok(());
            }
            tx.execute(
                "INSERT INTO sqlite_dbpage(pgno, data) VALUES (1, ?1)",
                params![page1],
            )
            .map_err(err)?;
            tx.commit().map_err(err)?;
        }
        Ok(())
    }

    /// Rewrites the file as the database is now, in one transaction.
    fn resnapshot(&mut self) -> Result<()> {
        let started = Instant::now();
        let head = self.db.head()?;
        if head.page_size != self.page_size && self.page_count == 0 {
            // An empty file takes any page size.
            self.conn
                .execute_batch(&format!("PRAGMA page_size = {}", head.page_size))
                .map_err(|e| sql_error(&self.path, &e))?;
            self.page_size = head.page_size;
        }
        if head.page_size != self.page_size {
            bail!(
                "{}: the database's pages are now of {} bytes, the file's of {}: a follower cannot change \
                 its page size under its readers; remove the file and its state to start over",
                show(&self.path),
                head.page_size,
                self.page_size
            );
        }
        let path = self.path.clone();
        let err = |e: rusqlite::Error| sql_error(&path, &e);
        let tx = immediate(&mut self.conn, &path)?;
        let old_count = self.page_count;
        let (snap, next) = {
            let mut sink = DbPageSink {
                w: PageWriter::new(&tx, &path, self.page_size, old_count, self.at)?,
                size: self.page_size as usize,
                next: 1,
                page1: None,
            };
            let label = format!("copying {}", self.db);
            let mut progress = Progress::new(&label, 0, self.quiet);
            let snap = snapshot(self.db, None, None, &mut progress, &mut sink)?;
            progress.finish();
            // Pages past the end an attempt that started over wrote go too.
            if snap.page_count < old_count.max(sink.w.highest) {
                sink.w
                    .write
                    .execute(params![snap.page_count + 1, rusqlite::types::Null])
                    .map_err(err)?;
            }
            let next = match &sink.page1 {
                Some(p1) => {
                    let db1 = checksum::page(1, p1);
                    Position {
                        txid: snap.txid,
                        checksum: snap.checksum,
                        file_checksum: checksum::toggle(
                            checksum::toggle(snap.checksum, db1),
                            page1_sum(p1),
                        ),
                        page1: db1,
                        counter: Some(counter_of(p1)),
                    }
                }
                None => Position {
                    txid: snap.txid,
                    checksum: snap.checksum,
                    file_checksum: snap.checksum,
                    page1: 0,
                    counter: None,
                },
            };
            (snap, next)
        };
        if let Some(stated) = snap.stated
            && stated != snap.checksum
        {
            bail!(
                "{}: the pages read have checksum {:016x}, the database says {stated:016x}: nothing applied",
                self.db,
                snap.checksum
            );
        }
        write_state(&self.state_path, &self.db.to_string(), self.at, Some(next))?;
        crash_point("before-commit");
        tx.commit().map_err(err)?;
        crash_point("after-commit");
        self.settle(next, snap.page_count)?;
        if !self.quiet {
            crate::say!(
                "{}: txid {} (a new snapshot: {} pages in {:.2} s)",
                show(&self.path),
                next.txid,
                snap.page_count,
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }
}

/// Writes pages into the follower's open transaction through `sqlite_dbpage`, keeping both
/// checksums (the database's and the file's normalized one) up to date.
struct PageWriter<'t> {
    read: rusqlite::Statement<'t>,
    write: rusqlite::Statement<'t>,
    path: &'t Path,
    zeros: Vec<u8>,
    /// Pages in the file now.
    count: u32,
    /// The database's checksum, the file's, and the database's page-1 checksum.
    sum: u64,
    file_sum: u64,
    page1: u64,
    /// The database's change counter.
    counter: Option<u32>,
    /// The lock page (see `checksum::lock_page`).
    lock: u32,
    /// The highest page written.
    highest: u32,
}

impl<'t> PageWriter<'t> {
    fn new(
        tx: &'t rusqlite::Transaction<'t>,
        path: &'t Path,
        page_size: u32,
        count: u32,
        at: Position,
    ) -> Result<PageWriter<'t>> {
        let err = |e: rusqlite::Error| sql_error(path, &e);
        Ok(PageWriter {
            read: tx
                .prepare("SELECT data FROM sqlite_dbpage WHERE pgno = ?1")
                .map_err(err)?,
            write: tx
                .prepare("INSERT INTO sqlite_dbpage(pgno, data) VALUES (?1, ?2)")
                .map_err(err)?,
            path,
            zeros: vec![0u8; page_size as usize],
            count,
            sum: at.checksum,
            file_sum: at.file_checksum,
            page1: at.page1,
            counter: at.counter,
            lock: checksum::lock_page(page_size),
            highest: 0,
        })
    }

    fn old(&mut self, no: u32) -> Result<Vec<u8>> {
        let old: Option<Vec<u8>> = self
            .read
            .query_row(params![no], |r| r.get(0))
            .optional()
            .map_err(|e| sql_error(self.path, &e))?;
        Ok(old.unwrap_or_else(|| self.zeros.clone()))
    }

    fn raw(&mut self, no: u32, page: &[u8]) -> Result<()> {
        self.highest = self.highest.max(no);
        self.write
            .execute(params![no, page])
            .map_err(|e| sql_error(self.path, &e))?;
        Ok(())
    }

    /// Takes page `no` out of both checksums (it is dropped or rewritten).
    fn drop_old(&mut self, no: u32) -> Result<()> {
        let old = self.old(no)?;
        if no == 1 {
            self.sum = checksum::toggle(self.sum, self.page1);
            self.file_sum = checksum::toggle(self.file_sum, page1_sum(&old));
        } else {
            let c = checksum::page(no, &old);
            self.sum = checksum::toggle(self.sum, c);
            self.file_sum = checksum::toggle(self.file_sum, c);
        }
        Ok(())
    }

    /// Page `no` becomes the database's `page`.
    fn put(&mut self, no: u32, page: &[u8]) -> Result<()> {
        // Pages are appended in order: a page past the end follows zeros (never the lock
        // page, which SQLite does not write and LTX leaves out; it reads as zeros).
        while self.count + 1 < no {
            let n = self.count + 1;
            if n == self.lock {
                self.count = n;
                continue;
            }
            let zeros = self.zeros.clone();
            self.put(n, &zeros)?;
        }
        if no <= self.count {
            self.drop_old(no)?;
        }
        self.raw(no, page)?;
        let new = checksum::page(no, page);
        self.sum = checksum::toggle(self.sum, new);
        if no == 1 {
            self.file_sum = checksum::toggle(self.file_sum, page1_sum(page));
            self.page1 = new;
            self.counter = Some(counter_of(page));
        } else {
            self.file_sum = checksum::toggle(self.file_sum, new);
        }
        self.count = self.count.max(no);
        Ok(())
    }

    /// Sets the page count to `commit` (pages above it dropped last, as `sqlite_dbpage`
    /// wants): the page count and the position after the transaction.
    fn finish(mut self, commit: u32, txid: u64) -> Result<(u32, Position)> {
        if commit > self.count {
            let zeros = self.zeros.clone();
            self.put(commit, &zeros)?;
        }
        if commit == 0 && self.count > 0 {
            bail!(
                "{}: the database has no pages any more, and SQLite cannot empty a file through \
                 sqlite_dbpage; remove the file and its state to start over",
                show(self.path)
            );
        }
        if commit < self.count {
            let lock = self.lock;
            for no in (commit + 1..=self.count).filter(|&n| n != lock) {
                self.drop_old(no)?;
            }
            self.write
                .execute(params![commit + 1, rusqlite::types::Null])
                .map_err(|e| sql_error(self.path, &e))?;
            self.count = commit;
        }
        Ok((
            self.count,
            Position {
                txid,
                checksum: self.sum,
                file_checksum: self.file_sum,
                page1: self.page1,
                counter: self.counter,
            },
        ))
    }
}

/// Writes a snapshot's pages into the follower's open transaction, as they come; the
/// checksums are the snapshot's.
struct DbPageSink<'t> {
    w: PageWriter<'t>,
    size: usize,
    next: u32,
    /// The database's page 1.
    page1: Option<Vec<u8>>,
}

impl PageSink for DbPageSink<'_> {
    fn restart(&mut self) -> Result<()> {
        // The pages are written again from page 1, over the ones written so far.
        self.next = 1;
        self.page1 = None;
        Ok(())
    }

    fn pages(&mut self, bytes: &[u8]) -> Result<()> {
        for page in bytes.chunks(self.size) {
            if self.next == 1 {
                self.page1 = Some(page.to_vec());
            }
            if self.next != self.w.lock {
                self.w.raw(self.next, page)?;
            }
            self.next += 1;
        }
        Ok(())
    }
}
