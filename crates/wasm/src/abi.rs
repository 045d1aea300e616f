//! The wasm ABI: host imports, the host-backed KV, and the exported functions. The only
//! `unsafe` of this crate; each block says why it holds.
//!
//! It compiles natively too, with a host that has no storage (every storage call fails), so
//! that the warm-up ([`warm_up`]), which never calls the host's storage, is tested natively
//! through the very code the wasm runs.

use std::cell::RefCell;
use std::time::Instant;

use dosql_api::hrana::Hrana;
use dosql_api::{ApiError, Response, Session, branch, history, http, replica, transfer};
use dosql_layout::head::HEAD_SELECT_SQL;
use dosql_layout::kv::MemKv;
use dosql_layout::wire::{self, Answer, Read};
use dosql_layout::{DoStore, HeadRow, Key, Kv, StorageKind, Value, WritePlan};
use dosql_pagestore::{PageSize, PageStore, StoreError};
use dosql_vfs::VfsConfig;
use serde_json::json;

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "dosql")]
unsafe extern "C" {
    /// Reads what the request (`dosql_layout::wire`'s read request, `len` bytes at `req`)
    /// asks for from Durable Object storage and keeps the answer; returns its length in
    /// bytes, or -1 (the reason: `error_message`). May suspend (JSPI, classic storage).
    fn kv_get(req: *const u8, len: u32) -> i32;
    /// Copies the answer `kv_get`, `kv_head` or `kv_row` kept to `out` (as many bytes as it
    /// said).
    fn kv_take(out: *mut u8);
    /// SQLite-backed storage only, never suspends: reads the head row with the SELECT
    /// (`select_len` bytes at `select`) and the value of the key (`key_len` bytes at `key`),
    /// and keeps the answer a read request of those two items gets; returns its length, or
    /// -1 (`error_message`).
    fn kv_head(select: *const u8, select_len: u32, key: *const u8, key_len: u32) -> i32;
    /// SQLite-backed storage only, never suspends: reads the row `id` with the SELECT
    /// (`select_len` bytes at `select`, static: the host may keep its text by address) and
    /// returns its blob's length, the blob written to `out` when it fits in `cap` bytes and
    /// else kept for `kv_take`; -2: no row (or no table); -1: failed (`error_message`).
    fn kv_row(select: *const u8, select_len: u32, id: f64, out: *mut u8, cap: u32) -> i32;
    /// Applies a write plan (`wire::plan`, `len` bytes at `plan`) in one synchronous
    /// stretch, which Durable Object storage applies atomically; 0, or -1 when refused
    /// before anything was written.
    fn kv_apply(plan: *const u8, len: u32) -> i32;
    fn error_message(buf: *mut u8, cap: u32) -> u32;
    /// The host's clock in milliseconds (only differences are used).
    fn now_ms() -> f64;
}

/// Natively (tests) there is no host: every storage call fails (and is counted), the clock
/// stands still.
#[cfg(not(target_arch = "wasm32"))]
#[allow(
    clippy::missing_safety_doc,
    reason = "the host imports' stand-ins touch nothing"
)]
pub(crate) mod no_host {
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Storage calls made to the host (kv_get, kv_head, kv_row, kv_apply), by any thread.
    pub static STORAGE_CALLS: AtomicUsize = AtomicUsize::new(0);

    pub unsafe fn kv_get(_req: *const u8, _len: u32) -> i32 {
        STORAGE_CALLS.fetch_add(1, Ordering::SeqCst);
        -1
    }
    pub unsafe fn kv_take(_out: *mut u8) {}
    pub unsafe fn kv_head(_s: *const u8, _n: u32, _k: *const u8, _kn: u32) -> i32 {
        STORAGE_CALLS.fetch_add(1, Ordering::SeqCst);
        -1
    }
    pub unsafe fn kv_row(_s: *const u8, _n: u32, _id: f64, _out: *mut u8, _cap: u32) -> i32 {
        STORAGE_CALLS.fetch_add(1, Ordering::SeqCst);
        -1
    }
    pub unsafe fn kv_apply(_plan: *const u8, _len: u32) -> i32 {
        STORAGE_CALLS.fetch_add(1, Ordering::SeqCst);
        -1
    }
    pub unsafe fn error_message(_buf: *mut u8, _cap: u32) -> u32 {
        0
    }
    pub unsafe fn now_ms() -> f64 {
        0.0
    }
}
#[cfg(not(target_arch = "wasm32"))]
use no_host::{error_message, kv_apply, kv_get, kv_head, kv_row, kv_take, now_ms};

/// `meta.duration_ms`'s clock: one host call returning a double, where `Instant::now` goes
/// through WASI's `clock_time_get` and its 64-bit argument (a BigInt per call on the host).
fn host_now_ms() -> f64 {
    // SAFETY: the import takes nothing and returns a double; it touches no wasm memory.
    unsafe { now_ms() }
}

/// The host's last error message.
fn host_error() -> String {
    let mut buf = vec![0u8; 1024];
    // SAFETY: the host writes at most `cap` bytes into the buffer we own for this call.
    let len = unsafe { error_message(buf.as_mut_ptr(), buf.len() as u32) } as usize;
    if len > buf.len() {
        buf = vec![0u8; len];
        // SAFETY: as above, with a buffer of the full length.
        unsafe { error_message(buf.as_mut_ptr(), buf.len() as u32) };
    }
    buf.truncate(len);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Durable Object storage through the host imports: the host moves the bytes, the layout
/// (`dosql_layout`) decides them. While the warm-up runs ([`WARM_KV`]), storage in memory
/// answers instead of the host, through the same encoding and decoding.
/// Not `Clone`: a copy's stash would outlive a write made through the other.
#[derive(Debug)]
struct HostKv {
    kind: StorageKind,
    /// The replication record, read in the same host call as the head row (SQLite-backed
    /// storage): opening a database reads both, and each host call is a crossing into JS
    /// and the bridge's parsing, part of a cold object's first query (perf, bench W4). Taken
    /// by the next `get` of that key alone; forgotten by any write, so never older than
    /// storage.
    replication: Option<Option<Value>>,
    /// The buffer a page row's read starts with: the largest blob read so far (a stored page
    /// is at most a page), so that a read after the first takes one host call.
    row_cap: usize,
}

impl HostKv {
    fn new(kind: StorageKind) -> HostKv {
        HostKv {
            kind,
            replication: None,
            row_cap: 4096,
        }
    }

    /// A page row's blob (`wire::page_row`), through the host's one-row import: a cold
    /// object's query reads a few pages, each alone, and a read request's framing (its
    /// encoding here, its parsing and the answer's building in the host's JavaScript, which
    /// a cold object runs in V8's interpreter) cost about as much as the row's read itself
    /// (perf, bench W4).
    fn page_row(
        &mut self,
        select: &'static str,
        id: u64,
        key: Key,
    ) -> Result<Option<Value>, StoreError> {
        if let Some(v) = WARM_KV.with(|w| w.borrow_mut().as_mut().map(|kv| kv.get(&[key]))) {
            return Ok(v?.pop().flatten());
        }
        let mut out: Vec<u8> = Vec::with_capacity(self.row_cap);
        // SAFETY: `select` is a static string; `out` is a buffer we own with `capacity`
        // bytes, which the host writes only when the blob fits (it says how long it is).
        let n = unsafe {
            kv_row(
                select.as_ptr(),
                select.len() as u32,
                id as f64,
                out.as_mut_ptr(),
                out.capacity() as u32,
            )
        };
        let n = match n {
            -2 => return Ok(None),
            n if n < 0 => return Err(StoreError::read(host_error())),
            n => n as usize,
        };
        if n <= out.capacity() {
            // SAFETY: the host wrote the blob's `n` bytes at the start of `out`, within its
            // capacity.
            unsafe { out.set_len(n) };
        } else {
            out = vec![0u8; n];
            // SAFETY: `out` has exactly the length the host announced for the blob it kept.
            unsafe { kv_take(out.as_mut_ptr()) };
            // At most a page (a longer value is corrupt, and refused by its decoding): no
            // later read starts with a buffer sized by a bad one.
            self.row_cap = n.min(PageSize::MAX.bytes());
        }
        Ok(Some(Value::Bytes(out)))
    }

    fn read(&self, items: &[Read]) -> Result<Vec<Answer>, StoreError> {
        let req = wire::read_request(self.kind, items);
        let warm = WARM_KV.with(|w| w.borrow_mut().as_mut().map(|kv| warm_read(kv, items)));
        let out = match warm {
            Some(out) => out?,
            None => Self::host_read(&req)?,
        };
        wire::read_response(&out, items.len())
    }

    /// The host's answer to a read request.
    fn host_read(req: &[u8]) -> Result<Vec<u8>, StoreError> {
        // SAFETY: `req` is a buffer we own, alive across the call (which may suspend the
        // instance, never free it).
        let len = unsafe { kv_get(req.as_ptr(), req.len() as u32) };
        Self::take(len)
    }

    /// The answer the host kept, `len` bytes long (negative: the host failed).
    fn take(len: i32) -> Result<Vec<u8>, StoreError> {
        if len < 0 {
            return Err(StoreError::read(host_error()));
        }
        let mut out = vec![0u8; len as usize];
        // SAFETY: `out` has exactly the length the host announced for the answer it kept.
        unsafe { kv_take(out.as_mut_ptr()) };
        Ok(out)
    }

    /// The head row and the replication record (SQLite-backed storage), as a read request of
    /// the two is answered, through the host's import for them (`kv_head`): read once per
    /// open, where a read request's parsing in the host's JavaScript (run in V8's interpreter
    /// by a cold object) cost a third of the read (perf, bench W4).
    fn read_head(&self) -> Result<Vec<Answer>, StoreError> {
        let items = [Read::HeadRow, Read::Key(Key::Replication)];
        let warm = WARM_KV.with(|w| w.borrow_mut().as_mut().map(|kv| warm_read(kv, &items)));
        let out = match warm {
            Some(out) => out?,
            None => {
                let key = Key::Replication.encode();
                // SAFETY: the statement is static and `key` a string we own for the call,
                // which never suspends.
                let len = unsafe {
                    kv_head(
                        HEAD_SELECT_SQL.as_ptr(),
                        HEAD_SELECT_SQL.len() as u32,
                        key.as_ptr(),
                        key.len() as u32,
                    )
                };
                Self::take(len)?
            }
        };
        wire::read_response(&out, items.len())
    }
}

/// The warm-up's storage's answer to a read, encoded as the host encodes one.
fn warm_read(kv: &mut MemKv, items: &[Read]) -> Result<Vec<u8>, StoreError> {
    let answers = items
        .iter()
        .map(|item| match item {
            Read::Key(k) => Ok(Answer::Value(kv.get(&[*k])?.pop().flatten())),
            Read::HeadRow => Ok(Answer::HeadRow(kv.head_row()?)),
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(wire::response(&answers))
}

impl Kv for HostKv {
    fn kind(&self) -> StorageKind {
        self.kind
    }

    fn get(&mut self, keys: &[Key]) -> Result<Vec<Option<Value>>, StoreError> {
        if keys == [Key::Replication]
            && let Some(v) = self.replication.take()
        {
            return Ok(vec![v]);
        }
        if let [k] = keys
            && let Some((select, id)) = wire::page_row(self.kind, k)
        {
            return Ok(vec![self.page_row(select, id, *k)?]);
        }
        let items: Vec<Read> = keys.iter().map(|&k| Read::Key(k)).collect();
        self.read(&items)?
            .into_iter()
            .map(|a| match a {
                Answer::Value(v) => Ok(v),
                Answer::HeadRow(_) => {
                    Err(StoreError::read("the host answered a head row for a key"))
                }
            })
            .collect()
    }

    fn head_row(&mut self) -> Result<Option<HeadRow>, StoreError> {
        if self.kind == StorageKind::Classic {
            return Ok(None);
        }
        let mut answers = self.read_head()?.into_iter();
        let (head, replication) = (answers.next(), answers.next());
        self.replication = match replication {
            Some(Answer::Value(v)) => Some(v),
            _ => None,
        };
        match head {
            Some(Answer::HeadRow(row)) => Ok(row),
            Some(Answer::Value(None)) => Ok(None),
            _ => Err(StoreError::read(
                "the host answered a value for the head row",
            )),
        }
    }

    fn apply(&mut self, plan: &WritePlan) -> Result<(), StoreError> {
        self.replication = None;
        plan.check(self.kind)?;
        let bytes = wire::plan(self.kind, plan);
        if let Some(r) = WARM_KV.with(|w| w.borrow_mut().as_mut().map(|kv| kv.apply(plan))) {
            return r;
        }
        // SAFETY: `bytes` is a buffer we own for the call.
        let rc = unsafe { kv_apply(bytes.as_ptr(), bytes.len() as u32) };
        if rc != 0 {
            // The host checks every limit before it issues any write, so a refused plan
            // wrote nothing.
            return Err(StoreError::commit(host_error()));
        }
        Ok(())
    }
}

/// How the open database was opened, to open it again (after an import switched it).
#[derive(Debug, Clone, Copy)]
struct Opened {
    kind: StorageKind,
    new_page_size: PageSize,
    config: (usize, u32),
    limits: Option<crate::MemoryLimits>,
    history: dosql_layout::HistoryConfig,
}

thread_local! {
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
    /// The Hrana streams: connections of their own to the session's database.
    static HRANA: RefCell<Option<Hrana>> = const { RefCell::new(None) };
    static OPENED: RefCell<Option<Opened>> = const { RefCell::new(None) };
    static RESULT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The warm-up's storage, in memory: while it is set, [`HostKv`] reads and writes it and
    /// never calls the host's storage.
    static WARM_KV: RefCell<Option<MemKv>> = const { RefCell::new(None) };
    /// The open database's position ([`dosql_position`]), as of the last request.
    static POSITION: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Reads the open database's position into [`POSITION`]: `<bookmark>\n<primary>\n<replica
/// names, comma-separated>` (empty lines: not a replica, no replicas), and puts SQL on this
/// thread in read-only mode when it is a replica. Kept as it was while a transaction writes
/// (the store is busy then; nothing it says can change under a transaction).
fn refresh_position() {
    let now = SESSION.with(|s| {
        let s = s.borrow();
        let session = s.as_ref()?;
        session.database().with_store(false, |store| {
            let store = session_store(store).ok()?;
            let (lineage, txid) = (store.record().lineage, store.record().txid);
            let r = store.replication().ok()?;
            let names: Vec<&str> = r.replicas.iter().map(|e| e.name.as_str()).collect();
            Some(format!(
                "{}\n{}\n{}",
                replica::bookmark(lineage, txid),
                r.primary.as_deref().unwrap_or(""),
                names.join(",")
            ))
        })?
    });
    if let Some(p) = now {
        let replica = p.split('\n').nth(1).is_some_and(|l| !l.is_empty());
        dosql_vfs::guard::set_read_only(replica);
        POSITION.with(|x| *x.borrow_mut() = p);
    }
}

/// Puts the open database's position in the result buffer: `<lineage>:<txid>` (its
/// bookmark), its primary and its replicas, one per line (see [`refresh_position`]); the host
/// reads it after each request, for the answer's `x-dosql-bookmark` and for replication.
#[unsafe(no_mangle)]
pub extern "C" fn dosql_position() -> u32 {
    let p = POSITION.with(|x| x.borrow().clone());
    set_result(Response {
        status: 200,
        body: p.into_bytes(),
    })
}

fn set_result(r: Response) -> u32 {
    RESULT.with(|b| *b.borrow_mut() = r.body);
    u32::from(r.status)
}

fn error_response(e: &ApiError) -> Response {
    Response {
        status: e.status,
        body: e.body().to_string().into_bytes(),
    }
}

/// Opens the database (storage of `kind`: 1 classic, 2 SQLite-backed) from what storage
/// holds; a database never committed to gets pages of `new_page_size`. Returns 200 and
/// `{"page_size", "page_count", "txid", "format"}`, or an error status and answer.
#[unsafe(no_mangle)]
pub extern "C" fn dosql_open(
    kind: u32,
    new_page_size: u32,
    cache_pages: u32,
    read_ahead: u32,
) -> u32 {
    let kind = match kind {
        1 => StorageKind::Classic,
        2 => StorageKind::SqliteBacked,
        k => {
            return set_result(error_response(&ApiError::bad_request(format!(
                "storage kind {k}"
            ))));
        }
    };
    // 0: the default.
    let size = if new_page_size == 0 {
        Some(PageSize::DEFAULT)
    } else {
        PageSize::new(new_page_size)
    };
    let Some(size) = size else {
        return set_result(error_response(&ApiError::bad_request(format!(
            "invalid page size {new_page_size}"
        ))));
    };
    let opened = Opened {
        kind,
        new_page_size: size,
        config: (cache_pages as usize, read_ahead),
        limits: None,
        // Until the host's settings arrive with the first limits (before any request).
        history: dosql_layout::HistoryConfig::DEFAULT,
    };
    // Another database (or this one anew): nothing known of a primary yet.
    replica::forget_seen();
    set_result(open(opened))
}

/// Closes any open session (rolling back its Hrana streams' transactions) and opens `o`.
/// Never inlined: the warm-up calls it too, and must run the same wasm function that
/// `dosql_open` runs (V8 compiles each on its first call).
#[inline(never)]
fn open(o: Opened) -> Response {
    if let Some(mut hrana) = HRANA.with(|h| h.borrow_mut().take()) {
        hrana.clear();
    }
    // Dropped before the next is attached, so that its name is free again.
    SESSION.with(|s| s.borrow_mut().take());
    OPENED.with(|x| *x.borrow_mut() = None);
    let store = match DoStore::open(HostKv::new(o.kind), o.new_page_size) {
        Ok(s) => s.with_history(o.history),
        Err(e) => return error_response(&ApiError::new(500, "OPEN_FAILED", e.to_string())),
    };
    let head = store.record().clone();
    let format = store.stored_format();
    let (cache_pages, read_ahead) = o.config;
    let config = VfsConfig {
        cache_pages,
        read_ahead,
        ..VfsConfig::default()
    };
    match Session::open("main", store, config) {
        Ok(mut session) => {
            session.set_clock(host_now_ms);
            SESSION.with(|s| *s.borrow_mut() = Some(session));
            OPENED.with(|x| *x.borrow_mut() = Some(o));
            if let Some(limits) = o.limits {
                apply_limits(limits);
            }
            refresh_position();
            Response {
                status: 200,
                body: json!({
                    "page_size": head.page_size.get(),
                    "page_count": head.page_count,
                    "txid": head.txid,
                    "format": format,
                })
                .to_string()
                .into_bytes(),
            }
        }
        Err(e) => error_response(&e),
    }
}

/// Readies a spare instance for its first database: SQLite's setup and open path on an
/// in-memory database (`dosql_vfs::prime`), then a database's open and first query through
/// the functions a real one runs ([`crate::warmup::prime`]), on storage of its own in memory
/// ([`in_memory`]). No randomness (module scope may run it: Workers forbid random values
/// there), no storage. Refused while a database is open. Returns an HTTP status (500: what
/// failed, in the result buffer).
#[unsafe(no_mangle)]
pub extern "C" fn dosql_prime() -> u32 {
    set_result(match dosql_vfs::prime() {
        Ok(()) => match in_memory(crate::warmup::prime) {
            Ok((Ok(_), _)) => Response {
                status: 200,
                body: b"{}".to_vec(),
            },
            Ok((Err(e), _)) | Err(e) => error_response(&e),
        },
        Err(rc) => error_response(&ApiError::new(
            500,
            "PRIME_FAILED",
            format!("SQLite answered {rc} opening an in-memory database"),
        )),
    })
}

/// How the warm-up and the priming open their databases: as the host opens a SQLite-backed
/// one (worker/src/index.ts).
const IN_MEMORY_OPEN: Opened = Opened {
    kind: StorageKind::SqliteBacked,
    new_page_size: PageSize::DEFAULT,
    config: (16, 0),
    limits: None,
    history: dosql_layout::HistoryConfig::DEFAULT,
};

/// Runs `steps` (the warm-up's or the priming's, [`crate::warmup`]) through the functions
/// `dosql_open` and `dosql_exec` run, on storage of its own in memory ([`WARM_KV`]): no host
/// call reads or writes storage. Refused while a database is open (it would close it). Leaves
/// no database open, and the heap without a limit, as before a database's first limits
/// arrive. What `steps` answered, and the storage calls they made, in memory.
fn in_memory<T>(
    steps: impl FnOnce(&mut dyn FnMut(crate::warmup::Step<'_>) -> Response) -> T,
) -> Result<(T, dosql_layout::CallCounts), ApiError> {
    if OPENED.with(|o| o.borrow().is_some()) {
        return Err(ApiError::new(409, "BUSY", "a database is open"));
    }
    WARM_KV.with(|w| *w.borrow_mut() = Some(MemKv::new(StorageKind::SqliteBacked)));
    let out = steps(&mut |step| match step {
        crate::warmup::Step::Open => open(IN_MEMORY_OPEN),
        crate::warmup::Step::Exec(op, body) => exec(op, body),
    });
    if let Some(mut hrana) = HRANA.with(|h| h.borrow_mut().take()) {
        hrana.clear();
    }
    SESSION.with(|s| s.borrow_mut().take());
    OPENED.with(|x| *x.borrow_mut() = None);
    // Nothing of the in-memory database's position reaches a real one's answers.
    POSITION.with(|x| x.borrow_mut().clear());
    dosql_vfs::guard::set_read_only(false);
    dosql_vfs::set_heap_limit(0);
    let counts = WARM_KV.with(|w| w.borrow_mut().take().map(|kv| kv.counts()));
    Ok((out, counts.unwrap_or_default()))
}

/// Runs the isolate's warm-up ([`warm_up`]). Returns an HTTP status; the answer is in the
/// result buffer.
#[unsafe(no_mangle)]
pub extern "C" fn dosql_warm_up() -> u32 {
    set_result(warm_up())
}

/// The isolate's warm-up ([`crate::warmup`]): a database's requests through the functions
/// `dosql_open` and `dosql_exec` run (the same `DoStore<HostKv>`, wire encoding and
/// dispatch), on storage of its own in memory ([`in_memory`]): no host call reads or writes
/// storage; refused while a database is open; leaves none open. 200 and
/// `{"requests", "reads", "key_reads", "writes"}` (the storage calls made in memory, and the
/// keys read), or the first failure.
pub fn warm_up() -> Response {
    let (done, counts) = match in_memory(crate::warmup::run) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    match done {
        Ok(requests) => Response {
            status: 200,
            body: json!({
                "requests": requests,
                "reads": counts.get_calls + counts.head_row_reads,
                "key_reads": counts.get_keys,
                "writes": counts.put_keys + counts.head_row_writes,
            })
            .to_string()
            .into_bytes(),
        },
        Err(e) => error_response(&e),
    }
}

/// Runs one request (see [`crate::op`]) on `len` bytes at `body`.
///
/// # Safety
/// `body` must point at `len` readable bytes (allocated with `dosql_alloc`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dosql_exec(op: u32, body: *const u8, len: usize) -> u32 {
    let body = if len == 0 {
        &[][..]
    } else {
        // SAFETY: per the function's contract.
        unsafe { std::slice::from_raw_parts(body, len) }
    };
    let r = exec(op, body);
    refresh_position();
    set_result(r)
}

/// Runs one request on the open database. Never inlined: the warm-up calls it too, and must
/// run the same wasm function that `dosql_exec` runs.
#[inline(never)]
fn exec(op: u32, body: &[u8]) -> Response {
    if op == crate::op::ROUTE {
        return route_op(body);
    }
    SESSION.with(|s| {
        let mut s = s.borrow_mut();
        let Some(session) = s.as_mut() else {
            return error_response(&ApiError::new(500, "INTERNAL", "database not open"));
        };
        HRANA.with(|h| {
            let mut h = h.borrow_mut();
            let hrana = h.get_or_insert_with(Hrana::new);
            // Before any request, Hrana or not: an abandoned stream's transaction must not
            // hold locks against it once the stream timeout has passed. (Reading the clock is
            // a host call: skipped when there is no stream.)
            if hrana.has_streams() {
                hrana.expire(Instant::now());
            }
            match op {
                crate::op::QUERY => session.query(body),
                crate::op::BATCH => session.batch(body),
                crate::op::STATS => with_replication(session.stats(), session),
                crate::op::HRANA => framed(
                    http::Request::parse(body)
                        .map(|req| hrana.route(session.database(), &req, Instant::now())),
                ),
                crate::op::LIMITS => set_limits(session, hrana, body),
                crate::op::HEAD => head_op(),
                _ => error_response(&ApiError::new(
                    404,
                    "NOT_FOUND",
                    format!("unknown operation {op}"),
                )),
            }
        })
    })
}

/// Applies [`crate::MemoryLimits`] to the open database, its SQLite and its Hrana streams.
fn set_limits(session: &mut Session, hrana: &mut Hrana, body: &[u8]) -> Response {
    let limits = match serde_json::from_slice(body) {
        Ok(crate::LimitsRequest::Limits(l)) => l,
        Ok(crate::LimitsRequest::Share(share)) => {
            if let Some(h) = &share.history {
                let config = match h.config() {
                    Ok(c) => c,
                    Err(why) => return error_response(&ApiError::new(500, "BAD_CONFIG", why)),
                };
                set_history(session, config);
            }
            let faults = match share.replication_faults.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(text) => match replica::Faults::parse(text) {
                    Ok(f) => Some(f),
                    Err(why) => {
                        let why = format!("DOSQL_TEST_REPLICATION_FAULTS: {why}");
                        return error_response(&ApiError::new(500, "BAD_CONFIG", why));
                    }
                },
            };
            replica::set_faults(faults);
            crate::MemoryLimits::for_share(&share, session.database().page_size().bytes())
        }
        Err(e) => return error_response(&ApiError::bad_request(format!("invalid limits: {e}"))),
    };
    session
        .database()
        .set_memory_limits(limits.cache_pages, limits.max_txn_bytes);
    dosql_vfs::set_heap_limit(limits.heap_bytes);
    let api = dosql_api::Limits {
        max_answer_bytes: limits.max_answer_bytes,
    };
    session.set_limits(api);
    hrana.set_limits(api);
    OPENED.with(|o| {
        if let Some(o) = o.borrow_mut().as_mut() {
            o.limits = Some(limits);
        }
    });
    Response {
        status: 200,
        body: serde_json::to_vec(&limits).unwrap_or_default(),
    }
}

/// Keeps history as `config` says, from now on and after the session is reopened.
fn set_history(session: &Session, config: dosql_layout::HistoryConfig) {
    OPENED.with(|o| {
        if let Some(o) = o.borrow_mut().as_mut() {
            o.history = config;
        }
    });
    // While a transaction writes, the store is busy: the setting applies from the next
    // open (a request never sets it in the middle of a transaction in practice).
    let _ = session.database().with_store(false, |store| {
        if let Ok(s) = session_store(store) {
            s.set_history(config);
        }
    });
}

/// Re-applies limits after the session was reopened (the Hrana table is new then).
fn apply_limits(limits: crate::MemoryLimits) {
    SESSION.with(|s| {
        if let Some(session) = s.borrow_mut().as_mut() {
            session
                .database()
                .set_memory_limits(limits.cache_pages, limits.max_txn_bytes);
            let api = dosql_api::Limits {
                max_answer_bytes: limits.max_answer_bytes,
            };
            session.set_limits(api);
            HRANA.with(|h| {
                h.borrow_mut()
                    .get_or_insert_with(Hrana::new)
                    .set_limits(api)
            });
        }
    });
    dosql_vfs::set_heap_limit(limits.heap_bytes);
}

/// The committed head as storage holds it, for `/_storage_stats`.
fn head_op() -> Response {
    let Some(o) = OPENED.with(|x| *x.borrow()) else {
        return error_response(&ApiError::new(500, "INTERNAL", "database not open"));
    };
    match DoStore::open(HostKv::new(o.kind), o.new_page_size) {
        Ok(store) => {
            let h = store.record();
            Response {
                status: 200,
                body: json!({
                    "format": store.stored_format(),
                    "page_size": h.page_size.get(),
                    "page_count": h.page_count,
                    "txid": h.txid,
                    "prefix": h.generation.prefix(),
                    // Where the pages are: rows of `dosql_pages` (a row generation on
                    // SQLite-backed storage; its prefix names no keys then) or kv keys.
                    "pages": if o.kind == StorageKind::SqliteBacked && h.generation.page_rows() {
                        "rows"
                    } else {
                        "keys"
                    },
                    "inline_nos": h.inline.iter().map(|(n, _)| n.get()).collect::<Vec<_>>(),
                    "inline_bytes": h.inline.iter().map(|(_, v)| v.len()).sum::<usize>(),
                    "checksum": h.checksum.known().map(|c| format!("{c:016x}")),
                    "log_oldest": h.log.oldest,
                    "log_floor": h.log.floor,
                    "log_bytes": h.log.bytes,
                })
                .to_string()
                .into_bytes(),
            }
        }
        Err(e) => error_response(&ApiError::new(500, "OPEN_FAILED", e.to_string())),
    }
}

/// `/stats` with the database's replication: a replica's status (`dosql_api::replica::
/// status`), or a primary's replicas.
fn with_replication(stats: Response, session: &Session) -> Response {
    if stats.status != 200 {
        return stats;
    }
    let replication = session.database().with_store(false, |store| {
        let store = session_store(store).ok()?;
        if store.primary().ok()?.is_some() {
            return replica::status(store, host_now_ms() as i64).ok();
        }
        let names: Vec<String> = store
            .replication()
            .ok()?
            .replicas
            .iter()
            .map(|e| e.name.clone())
            .collect();
        (!names.is_empty()).then(|| json!({ "replicas": names }))
    });
    let mut j: serde_json::Value = serde_json::from_slice(&stats.body).unwrap_or_default();
    j["replication"] = replication.flatten().unwrap_or(serde_json::Value::Null);
    Response {
        status: 200,
        body: j.to_string().into_bytes(),
    }
}

/// A framed route's answer ([`dosql_api::http`]), errors framed too.
fn framed(answer: Result<http::Answer, ApiError>) -> Response {
    let a = answer.unwrap_or_else(|e| http::Answer::error(&e));
    Response {
        status: a.status,
        body: a.framed(),
    }
}

/// The routes the wasm serves whole (`dosql_api::transfer`, `dosql_api::history`), framed
/// ([`dosql_api::http`]), on the session's own store. After an import or a restore the
/// database is opened again: its pages changed under SQLite's caches, and its Hrana streams
/// end.
fn route_op(input: &[u8]) -> Response {
    let req = match http::Request::parse(input) {
        Ok(r) => r,
        Err(e) => return framed(Err(e)),
    };
    let Some(o) = OPENED.with(|x| *x.borrow()) else {
        return framed(Err(ApiError::new(500, "INTERNAL", "database not open")));
    };
    // The import routes ask whether the database is empty, which is SQL: asked before the
    // store is taken (SQLite reaches the store through the VFS).
    let asks_schema = req.method == "POST" && req.path.starts_with("import");
    let schema_objects = if asks_schema {
        Some(schema_objects())
    } else {
        None
    };
    let replaces = req.method == "POST"
        && (req.path == "restore"
            || req.path.ends_with("/commit")
            || req.path == "_sync"
            || req.path == "_replica");
    let answer = SESSION.with(|s| {
        let s = s.borrow();
        let Some(session) = s.as_ref() else {
            return Err(ApiError::new(500, "INTERNAL", "database not open"));
        };
        session
            .database()
            .with_store(replaces, |store| {
                let store = session_store(store)?;
                if let Some(a) = replica::handle(store, &req, host_now_ms() as i64) {
                    return Ok(a);
                }
                if let Some(a) = history::handle(store, &req) {
                    return Ok(a);
                }
                if req.path == "branch" {
                    return Ok(branch::handle(store, &req));
                }
                let mut asked = || schema_objects.clone().unwrap_or(Ok(0));
                Ok(transfer::handle(store, req, &mut asked))
            })
            .unwrap_or_else(|| Err(busy()))
    });
    let answer = match answer {
        Ok(a) => a,
        Err(e) => return framed(Err(e)),
    };
    // A replica's catch-up that changed pages while Hrana streams are open: their read
    // transactions must not see pages change under them (see dosql_api::replica).
    let pages_changed = answer
        .headers
        .iter()
        .any(|(k, _)| *k == "x-dosql-pages-changed");
    let streams = HRANA.with(|h| h.borrow().as_ref().is_some_and(Hrana::has_streams));
    if answer.switched || (pages_changed && streams) {
        let reopened = open(o);
        if reopened.status != 200 {
            return framed(Ok(reopened.into()));
        }
    }
    framed(Ok(answer))
}

/// The session's store as the Durable Object layout over the host.
fn session_store(store: &mut dyn PageStore) -> Result<&mut DoStore<HostKv>, ApiError> {
    store
        .as_any_mut()
        .and_then(|a| a.downcast_mut::<DoStore<HostKv>>())
        .ok_or_else(|| ApiError::new(500, "INTERNAL", "the session's store is not the host's"))
}

/// A transaction is writing (a Hrana stream's): the store cannot be worked on now.
fn busy() -> ApiError {
    ApiError::new(
        409,
        "SQLITE_BUSY",
        "a transaction is open (a Hrana stream holds the database): retry once it ends",
    )
}

/// How many schema objects the database has (0: empty), by SQL.
fn schema_objects() -> Result<i64, ApiError> {
    SESSION.with(|s| {
        let mut s = s.borrow_mut();
        let session = s
            .as_mut()
            .ok_or_else(|| ApiError::new(500, "INTERNAL", "database not open"))?;
        let r = session.query(br#"{"sql": "SELECT count(*) FROM sqlite_schema"}"#);
        let answer = r.json();
        if r.status != 200 {
            return Err(ApiError::new(
                r.status,
                "SQLITE_ERROR",
                answer["error"]["message"].as_str().unwrap_or("").to_owned(),
            ));
        }
        Ok(answer["rows"][0][0].as_i64().unwrap_or(0))
    })
}

/// Where the last answer is.
#[unsafe(no_mangle)]
pub extern "C" fn dosql_result_ptr() -> *const u8 {
    RESULT.with(|b| b.borrow().as_ptr())
}

/// How long the last answer is.
#[unsafe(no_mangle)]
pub extern "C" fn dosql_result_len() -> usize {
    RESULT.with(|b| b.borrow().len())
}

/// Allocates `len` bytes for the host to fill (a request body).
#[unsafe(no_mangle)]
pub extern "C" fn dosql_alloc(len: usize) -> *mut u8 {
    let mut buf = Vec::<u8>::with_capacity(len.max(1));
    let ptr = buf.as_mut_ptr();
    std::mem::forget(buf);
    ptr
}

/// Frees what `dosql_alloc(len)` returned.
///
/// # Safety
/// `ptr` must come from `dosql_alloc(len)` with the same `len`, and not be freed twice.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dosql_free(ptr: *mut u8, len: usize) {
    // SAFETY: per the contract, this rebuilds the Vec that dosql_alloc leaked.
    drop(unsafe { Vec::from_raw_parts(ptr, 0, len.max(1)) });
}
