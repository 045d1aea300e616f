//! Local targets: a durable native store in one file, served through the same JSON API
//! (`dosql_api::Session`) the Durable Object serves, so local and remote answer alike.
//!
//! Atomicity of a load: a complete new store is built beside the old one and renamed over it;
//! the rename is the atomic switch (it also lets an import change the page size, which a store
//! cannot). An import that fails or is killed before that leaves the old store as it was. The
//! new store's history starts with the import (or the branch, whose parent it records).
//!
//! History: a local store keeps it as a Durable Object does, with the default window (see
//! `dosql_layout::HistoryConfig::DEFAULT`); each command prunes what left the window when it
//! is done.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dosql_api::Session;
use dosql_layout::{DoStore, HistoryConfig, RedbKv, StorageKind};
use dosql_pagestore::{Head, Page, PageNo, PageSize, PageStore, SQLITE_MAGIC, StoreError, codec};
use dosql_vfs::VfsConfig;
use serde_json::{Value as Json, json};

use crate::bail;
use crate::db::{Database, DbHead, Finish, Load, Open, PageSink, RestoreTo, not_empty};
use crate::error::{Context, Error, Result};
use crate::files::{show, sibling, sync_dir};
use crate::progress::Progress;

/// Bytes per local read or commit while moving a whole database: bounded memory, few fsyncs.
const LOCAL_CHUNK_BYTES: usize = 16 << 20;

// ---------------------------------------------------------------------------------------------
// the store file

/// Opens (creating it if missing, with pages of `page_size`) the store file at `path`. The one
/// place that names the type of local stores.
fn open_store(path: &Path, page_size: PageSize) -> Result<Box<dyn PageStore>, StoreError> {
    Ok(Box::new(open_layout(path, page_size)?))
}

/// The store at `path` as the Durable Object layout, history kept.
fn open_layout(path: &Path, page_size: PageSize) -> Result<DoStore<RedbKv>, StoreError> {
    // The very records a Durable Object holds (SQLite-backed storage's layout), in a file.
    let kv = RedbKv::open(path, StorageKind::SqliteBacked)?;
    Ok(DoStore::open(kv, page_size)?.with_history(HistoryConfig::DEFAULT))
}

/// The layout behind a local store (what `open_store` made).
fn layout(store: &mut Box<dyn PageStore>) -> Result<&mut DoStore<RedbKv>> {
    store
        .as_any_mut()
        .and_then(|a| a.downcast_mut::<DoStore<RedbKv>>())
        .ok_or_else(|| Error::msg("internal: a local store is not the Durable Object layout"))
}

/// A store error, said about the store.
fn store_error(path: &Path, e: &StoreError) -> Error {
    Error::msg(format!("{}: {}", show(path), e.message()))
}

/// Opens the store at `path`, which must exist.
fn open_existing(path: &Path) -> Result<Box<dyn PageStore>> {
    if !path.exists() {
        bail!(
            "{}: no such store (a local target is a dosql store file; `dosql import` or `dosql shell` creates one)",
            show(path)
        );
    }
    open(path, PageSize::DEFAULT)
}

/// Opens the store at `path`, creating an empty one (pages of `page_size`) if there is none.
fn open(path: &Path, page_size: PageSize) -> Result<Box<dyn PageStore>> {
    if path.is_dir() {
        bail!("{}: is a directory, not a store file", show(path));
    }
    refuse_sqlite_file(path)?;
    open_store(path, page_size).map_err(|e| {
        Error::msg(format!(
            "{}: cannot open as a dosql store: {}",
            show(path),
            e.message()
        ))
    })
}

/// A plain SQLite file given where a store is expected: say what to do instead of letting the
/// store say "invalid database".
fn refuse_sqlite_file(path: &Path) -> Result<()> {
    let mut head = [0u8; 16];
    let is_sqlite = std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == SQLITE_MAGIC;
    if is_sqlite {
        bail!(
            "{} is a SQLite database file, not a dosql store: load it with `dosql import {} <store>`",
            show(path),
            show(path)
        );
    }
    Ok(())
}

/// One open store, shared by the SQL session (which owns the store it is given) and the
/// direct page reads. The session runs one request at a time and leaves no transaction open
/// between them, so between requests the store holds exactly the last commit.
#[derive(Clone)]
struct Shared(Arc<Mutex<Box<dyn PageStore>>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Box<dyn PageStore>> {
        // A panic is reported as a bug and ends the command: the store is not used after it.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Shared(store)")
    }
}

impl PageStore for Shared {
    fn page_size(&self) -> PageSize {
        self.lock().page_size()
    }
    fn head(&mut self) -> Result<Head, StoreError> {
        self.lock().head()
    }
    fn read_page(&mut self, no: PageNo) -> Result<Option<Page>, StoreError> {
        self.lock().read_page(no)
    }
    fn read_pages(&mut self, nos: &[PageNo]) -> Result<Vec<Option<Page>>, StoreError> {
        self.lock().read_pages(nos)
    }
    fn commit(&mut self, commit: dosql_pagestore::Commit) -> Result<Head, StoreError> {
        self.lock().commit(commit)
    }
    fn commit_known(
        &mut self,
        commit: dosql_pagestore::Commit,
        known: &[(PageNo, Page)],
    ) -> Result<Head, StoreError> {
        self.lock().commit_known(commit, known)
    }
}

// ---------------------------------------------------------------------------------------------
// the database

/// A local store file, opened when first used.
#[derive(Debug)]
pub struct Local {
    path: PathBuf,
    store: Option<Shared>,
    /// The SQL session over `store`, once SQL was run.
    session: Option<Session>,
}

impl Local {
    /// The store at `path` (nothing is opened yet).
    pub fn new(path: PathBuf) -> Local {
        Local {
            path,
            store: None,
            session: None,
        }
    }

    fn store(&mut self) -> Result<Shared> {
        self.open(Open::Existing)?;
        Ok(self.store.clone().expect("opened above"))
    }

    fn session(&mut self) -> Result<&mut Session> {
        if self.session.is_none() {
            let store = self.store()?;
            // The VFS registers databases by name, once per process: make every name unique.
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let name = format!("dosql-cli-{}", NEXT.fetch_add(1, Ordering::Relaxed));
            let session = Session::open(&name, store, VfsConfig::default())
                .map_err(|e| Error::msg(format!("opening the database: {}", e.message)))?;
            self.session = Some(session);
        }
        Ok(self.session.as_mut().expect("opened above"))
    }

    /// Closes the session and the store (the file is free for others, or to be replaced),
    /// pruning first what left the history's window (best effort: the next command retries).
    fn close(&mut self) {
        self.session = None;
        if let Some(store) = self.store.take() {
            let mut store = store.lock();
            if let Ok(layout) = layout(&mut store) {
                for _ in 0..1000 {
                    match layout.maintain(256) {
                        Ok(m) if m.more => {}
                        _ => break,
                    }
                }
            }
        }
    }

    /// Runs `f` on the store's layout.
    fn with_layout<R>(
        &mut self,
        f: impl FnOnce(&mut DoStore<RedbKv>) -> Result<R, StoreError>,
    ) -> Result<R> {
        let store = self.store()?;
        let mut store = store.lock();
        let l = layout(&mut store)?;
        f(l).map_err(|e| store_error(&self.path, &e))
    }

    /// Number of schema objects (tables, indexes, views, triggers): 0 means nothing to lose.
    fn schema_objects(&mut self) -> Result<i64> {
        if self.head()?.page_count == 0 {
            return Ok(0);
        }
        let answer = self.query("SELECT count(*) FROM sqlite_schema", &json!([]))?;
        Ok(answer["rows"][0][0].as_i64().unwrap_or(0))
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Display for Local {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())
    }
}

impl Database for Local {
    fn open(&mut self, how: Open) -> Result<()> {
        if self.store.is_none() {
            let store = match how {
                Open::Existing => open_existing(&self.path)?,
                Open::OrCreate => open(&self.path, PageSize::DEFAULT)?,
            };
            self.store = Some(Shared(Arc::new(Mutex::new(store))));
        }
        Ok(())
    }

    /// Runs the request through the session's JSON API, as the Durable Object does.
    fn query(&mut self, sql: &str, params: &Json) -> Result<Json> {
        let body = json!({ "sql": sql, "params": params }).to_string();
        let resp = self.session()?.query(body.as_bytes());
        let answer = resp.json();
        if resp.status != 200 {
            let code = answer["error"]["code"].as_str().unwrap_or("ERROR");
            let message = answer["error"]["message"]
                .as_str()
                .unwrap_or("unknown error");
            return Err(Error::api(code, format!("{message} ({code})")));
        }
        Ok(answer)
    }

    fn head(&mut self) -> Result<DbHead> {
        let store = self.store()?;
        let mut store = store.lock();
        let head = store
            .head()
            .map_err(|e| Error::msg(format!("reading the store: {}", e.message())))?;
        let checksum = layout(&mut store)?.record().checksum.known();
        Ok(DbHead {
            page_size: store.page_size().get(),
            page_count: head.page_count,
            txid: head.txid,
            checksum,
        })
    }

    /// Reads the pages in order: the store is open exclusively, so nothing commits in between.
    /// (`chunk_pages` is for the network; the store is read in chunks of a fixed size.)
    fn read_snapshot(
        &mut self,
        at: Option<u64>,
        _chunk_pages: Option<u32>,
        progress: &mut Progress,
        sink: &mut dyn PageSink,
    ) -> Result<DbHead> {
        let now = self.head()?;
        let at = at.unwrap_or(now.txid);
        // The state at `at`: the current one, or rebuilt from the history.
        let head = if at == now.txid {
            now
        } else {
            let (count, checksum) = self
                .with_layout(|l| l.image_of(at).map(|i| (i.page_count, i.checksum)))
                .map_err(|e| Error::api("TXID_CHANGED", format!("{e} (TXID_CHANGED)")))?;
            DbHead {
                page_count: count,
                txid: at,
                checksum,
                ..now
            }
        };
        let store = self.store()?;
        sink.restart()?;
        progress.set_total(u64::from(head.page_count));
        let size = head.page_size as usize;
        let per_read = (LOCAL_CHUNK_BYTES / size).max(1) as u32;
        let mut from = 1u32;
        let mut buf = Vec::with_capacity(per_read as usize * size);
        while from <= head.page_count {
            let to = head.page_count.min(from + per_read - 1);
            let nos: Vec<PageNo> = (from..=to)
                .map(|n| PageNo::new(n).expect("page numbers start at 1"))
                .collect();
            let values = {
                let mut store = store.lock();
                layout(&mut store)?
                    .values_at(at, &nos)
                    .map_err(|e| Error::msg(format!("reading the store: {e}")))?
            };
            buf.clear();
            for v in values {
                match v {
                    Some(v) => buf.extend_from_slice(
                        &codec::decode_page(
                            &v,
                            PageSize::new(head.page_size).expect("a page size"),
                        )
                        .map_err(|e| Error::msg(format!("reading the store: {e}")))?,
                    ),
                    None => buf.resize(buf.len() + size, 0),
                }
            }
            sink.pages(&buf)?;
            progress.add(u64::from(to - from + 1));
            from = to + 1;
        }
        Ok(head)
    }

    /// Builds a complete new store beside the old one; the commit renames it over the old.
    fn load(
        &mut self,
        page_size: PageSize,
        page_count: u32,
        force: bool,
        chunk_pages: Option<u32>,
    ) -> Result<Box<dyn Load + '_>> {
        if self.path.exists() {
            // Also makes sure the path is a dosql store that nobody has open: never clobber
            // anything else.
            self.open(Open::Existing)?;
            let objects = self.schema_objects();
            // The file is replaced: nothing of it stays open.
            self.close();
            if objects? > 0 && !force {
                return Err(not_empty(&*self));
            }
        }
        let tmp = sibling(&self.path, "dosql-import")?;
        // A fixed name: what a killed import left is removed here, by the next one.
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("{}: {e}", show(&tmp)),
        }
        let mut store = match open_layout(&tmp, page_size) {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                bail!("{}: {}", show(&tmp), e.message());
            }
        };
        let staging = store
            .begin_import(page_size, page_count)
            .map_err(|e| store_error(&tmp, &e))?;
        Ok(Box::new(LocalLoad {
            dest: self.path.clone(),
            tmp,
            store: Some(store),
            generation: staging.generation,
            page_size,
            per_commit: chunk_pages
                .unwrap_or((LOCAL_CHUNK_BYTES / page_size.bytes()).max(1) as u32)
                .max(1),
        }))
    }

    fn history(&mut self, limit: usize, before: Option<u64>) -> Result<Json> {
        let commits = self.with_layout(|l| l.history(limit, before))?;
        let (head, window, config, oldest_ts) = self.with_layout(|l| {
            let h = l.record().clone();
            let oldest_ts = if h.log.oldest <= h.txid {
                l.history(1, Some(h.log.oldest + 1))?
                    .first()
                    .map(|c| c.timestamp_ms)
            } else {
                (h.timestamp_ms != 0).then_some(h.timestamp_ms)
            };
            Ok((h, l.window(), l.history_config(), oldest_ts))
        })?;
        let hex = |c: u64| (c != 0).then(|| format!("{c:016x}"));
        Ok(json!({
            "txid": head.txid,
            "checksum": head.checksum.known().and_then(hex),
            "window": {"oldest_txid": window.0, "oldest_timestamp_ms": oldest_ts, "newest_txid": window.1},
            "history": {"enabled": config.enabled, "retention_ms": config.retention_ms, "max_bytes": config.max_bytes},
            "commits": commits.iter().map(|c| {
                let mut j = json!({
                    "txid": c.txid, "timestamp_ms": c.timestamp_ms, "page_count": c.page_count,
                    "pages_written": c.pages_written, "checksum": hex(c.checksum),
                });
                if let Some(n) = &c.note { j["note"] = n.clone(); }
                if c.switch { j["switch"] = json!(true); }
                j
            }).collect::<Vec<_>>(),
        }))
    }

    fn restore(&mut self, to: RestoreTo) -> Result<Json> {
        // SQLite's caches of the session would not see the pages change under them.
        self.session = None;
        let r = self.with_layout(|l| {
            let at = match to {
                RestoreTo::Txid(t) => t,
                RestoreTo::Time(ms) => l.txid_at_time(ms)?,
            };
            let (oldest, newest) = l.window();
            if at < oldest || at > newest {
                return Err(StoreError::invalid(format!(
                    "txid {at} is outside the history window: txids {oldest} to {newest}"
                )));
            }
            let r = l.restore(at)?;
            Ok((r, l.record().checksum.known()))
        });
        let (r, checksum) = r.map_err(|e| Error::api("OUT_OF_WINDOW", e.to_string()))?;
        Ok(json!({
            "txid": r.txid,
            "restored_from": r.from,
            "page_count": r.page_count,
            "checksum": checksum.map(|c| format!("{c:016x}")),
            "switched": r.switched,
        }))
    }

    fn ltx(&mut self, from: u64, to: u64) -> Result<Vec<u8>> {
        let (oldest, newest) = self.with_layout(|l| Ok(l.window()))?;
        if to < oldest || to > newest || from == 0 || from > to || (from > 1 && from <= oldest) {
            return Err(Error::api(
                "OUT_OF_WINDOW",
                format!(
                    "{}: an LTX file of txids {from}..={to} cannot be made: the history rebuilds txids \
                     {oldest} to {newest}, and keeps the commits after {oldest}",
                    self
                ),
            ));
        }
        let store = self.store()?;
        let mut store = store.lock();
        let l = layout(&mut store)?;
        l.ltx(from, to)
            .map(|(bytes, _)| bytes)
            .map_err(|e| match e.kind() {
                // In the window, the one refusal left is the size.
                dosql_pagestore::ErrorKind::Invalid => Error::api("LTX_TOO_LARGE", e.message()),
                _ => store_error(&self.path, &e),
            })
    }
}

/// A new store being built beside the one it replaces: the pages staged as an import of the
/// new store, then switched to (checked against the importer's checksum) and renamed over the
/// old one.
struct LocalLoad {
    dest: PathBuf,
    tmp: PathBuf,
    /// The new store, until the commit closes it.
    store: Option<DoStore<RedbKv>>,
    generation: dosql_layout::Generation,
    page_size: PageSize,
    per_commit: u32,
}

impl fmt::Debug for LocalLoad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalLoad")
            .field("tmp", &self.tmp)
            .finish_non_exhaustive()
    }
}

impl Load for LocalLoad {
    fn chunk_pages(&self) -> u32 {
        self.per_commit
    }

    fn write(&mut self, from: u32, bytes: &[u8]) -> Result<()> {
        let store = self
            .store
            .as_mut()
            .ok_or_else(|| Error::msg("the load is committed"))?;
        let values: Vec<Vec<u8>> = bytes
            .chunks(self.page_size.bytes())
            .map(codec::encoded)
            .collect();
        store
            .stage_import(self.generation, from, values)
            .map_err(|e| store_error(&self.tmp, &e))?;
        Ok(())
    }

    fn commit(&mut self, finish: &Finish) -> Result<DbHead> {
        let mut store = self
            .store
            .take()
            .ok_or_else(|| Error::msg("the load is committed"))?;
        let note = match &finish.parent {
            Some(p) => json!({ "branch": p }),
            None => json!({ "import": { "pages": store.staging().map_or(0, |s| s.page_count) } }),
        };
        let head = store
            .switch_import(self.generation, finish.checksum, note)
            .map_err(|e| store_error(&self.tmp, &e))?
            .clone();
        // Every write was durable (fsync); closed, then the rename and its directory entry.
        drop(store);
        std::fs::rename(&self.tmp, &self.dest)
            .with_context(|| format!("renaming {} to {}", show(&self.tmp), show(&self.dest)))?;
        sync_dir(&self.dest);
        Ok(DbHead {
            page_size: self.page_size.get(),
            page_count: head.page_count,
            txid: head.txid,
            checksum: head.checksum.known(),
        })
    }

    fn abort(mut self: Box<Self>) {
        self.store = None;
        let _ = std::fs::remove_file(&self.tmp);
    }

    fn tidy(self: Box<Self>) -> Result<()> {
        // The old store went with the rename.
        Ok(())
    }
}
