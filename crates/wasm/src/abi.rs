//! The wasm ABI: host imports, the host-backed page store, and the exported functions. The
//! only `unsafe` of this crate; each block says why it holds.

use std::cell::RefCell;
use std::time::Instant;

use dosql_api::hrana::Hrana;
use dosql_api::{ApiError, Response, Session};
use dosql_pagestore::{Commit, Head, Page, PageNo, PageSize, PageStore, StoreError, codec};
use dosql_vfs::VfsConfig;

#[link(wasm_import_module = "dosql")]
unsafe extern "C" {
    /// Writes the stored value of page `nos[i]` (at most a page, see `dosql_pagestore::codec`)
    /// at `out + i * page_size` and its length at `lens[i]`: 0 for a page never stored.
    fn read_pages(nos: *const u32, n: u32, out: *mut u8, lens: *mut u32) -> i32;
    /// Stores the values `data` holds back to back (value i is `lens[i]` bytes) as pages
    /// `nos`, and the new page count, as one atomic write.
    fn commit(page_count: u32, nos: *const u32, n: u32, data: *const u8, lens: *const u32) -> i32;
    fn error_message(buf: *mut u8, cap: u32) -> u32;
    /// The host's clock in milliseconds (only differences are used).
    fn now_ms() -> f64;
}

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

/// Pages in Durable Object storage, through the host imports.
#[derive(Debug)]
struct HostStore {
    size: PageSize,
    head: Head,
}

impl PageStore for HostStore {
    fn page_size(&self) -> PageSize {
        self.size
    }

    fn head(&mut self) -> Result<Head, StoreError> {
        Ok(self.head)
    }

    fn read_page(&mut self, no: PageNo) -> Result<Option<Page>, StoreError> {
        Ok(self.read_pages(&[no])?.pop().flatten())
    }

    fn read_pages(&mut self, nos: &[PageNo]) -> Result<Vec<Option<Page>>, StoreError> {
        let ps = self.size.bytes();
        let raw: Vec<u32> = nos.iter().map(|n| n.get()).collect();
        let mut out = vec![0u8; ps * nos.len()];
        let mut lens = vec![0u32; nos.len()];
        // SAFETY: `raw` holds n page numbers, `out` n pages and `lens` n lengths, all owned
        // here and alive across the call (which may suspend the instance, never free them).
        let rc = unsafe {
            read_pages(
                raw.as_ptr(),
                raw.len() as u32,
                out.as_mut_ptr(),
                lens.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(StoreError::read(host_error()));
        }
        out.chunks(ps)
            .zip(lens)
            .map(|(slot, len)| match len as usize {
                0 => Ok(None),
                len if len <= ps => codec::decode_page(&slot[..len], self.size).map(Some),
                len => Err(StoreError::read(format!(
                    "the host returned a {len}-byte value for a {ps}-byte page"
                ))),
            })
            .collect()
    }

    fn commit(&mut self, c: Commit) -> Result<Head, StoreError> {
        c.validate(self.size)?;
        let nos: Vec<u32> = c.pages.iter().map(|(n, _)| n.get()).collect();
        let mut data = Vec::with_capacity(nos.len() * self.size.bytes());
        let mut lens = Vec::with_capacity(nos.len());
        for (_, page) in &c.pages {
            let before = data.len();
            codec::encode_page(page, &mut data);
            lens.push((data.len() - before) as u32);
        }
        // SAFETY: `nos` holds n page numbers, `lens` n lengths and `data` the n values they
        // measure, all owned here for the call.
        let rc = unsafe {
            commit(
                c.page_count,
                nos.as_ptr(),
                nos.len() as u32,
                data.as_ptr(),
                lens.as_ptr(),
            )
        };
        if rc != 0 {
            // The host checks every limit before it issues any write, so a refused commit
            // wrote nothing.
            return Err(StoreError::commit(host_error()));
        }
        self.head = Head {
            page_count: c.page_count,
            txid: self.head.txid + 1,
        };
        Ok(self.head)
    }
}

thread_local! {
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
    /// The Hrana streams: connections of their own to the session's database.
    static HRANA: RefCell<Option<Hrana>> = const { RefCell::new(None) };
    static RESULT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn set_result(r: Response) -> u32 {
    RESULT.with(|b| *b.borrow_mut() = r.body);
    u32::from(r.status)
}

fn set_error(e: &ApiError) -> u32 {
    RESULT.with(|b| *b.borrow_mut() = e.body().to_string().into_bytes());
    u32::from(e.status)
}

/// Opens the database whose `meta` the host read (page_count 0 and txid 0 for a new one).
/// Returns 200, or an error status with the answer in the result buffer.
#[unsafe(no_mangle)]
pub extern "C" fn dosql_open(
    page_size: u32,
    page_count: u32,
    txid: f64,
    cache_pages: u32,
    read_ahead: u32,
) -> u32 {
    let Some(size) = PageSize::new(page_size) else {
        return set_error(&ApiError::bad_request(format!(
            "invalid page size {page_size}"
        )));
    };
    let store = HostStore {
        size,
        head: Head {
            page_count,
            txid: txid as u64,
        },
    };
    let config = VfsConfig {
        cache_pages: cache_pages as usize,
        read_ahead,
        ..VfsConfig::default()
    };
    // Close the Hrana streams of a previous session (rolling back their transactions), then
    // drop the session so its name is free again.
    if let Some(mut hrana) = HRANA.with(|h| h.borrow_mut().take()) {
        hrana.clear();
    }
    SESSION.with(|s| s.borrow_mut().take());
    match Session::open("main", store, config) {
        Ok(mut session) => {
            session.set_clock(host_now_ms);
            SESSION.with(|s| *s.borrow_mut() = Some(session));
            set_result(Response {
                status: 200,
                body: b"{}".to_vec(),
            })
        }
        Err(e) => set_error(&e),
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
    let response = SESSION.with(|s| {
        let mut s = s.borrow_mut();
        let Some(session) = s.as_mut() else {
            return Response {
                status: 500,
                body: ApiError::new(500, "INTERNAL", "database not open")
                    .body()
                    .to_string()
                    .into_bytes(),
            };
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
                crate::op::STATS => session.stats(),
                crate::op::HRANA => hrana.handle(session.database(), body, Instant::now()),
                crate::op::LIMITS => set_limits(session, hrana, body),
                _ => Response {
                    status: 404,
                    body: ApiError::new(404, "NOT_FOUND", format!("unknown operation {op}"))
                        .body()
                        .to_string()
                        .into_bytes(),
                },
            }
        })
    });
    set_result(response)
}

/// Applies [`crate::MemoryLimits`] to the open database, its SQLite and its Hrana streams.
fn set_limits(session: &mut Session, hrana: &mut Hrana, body: &[u8]) -> Response {
    let limits: crate::MemoryLimits = match serde_json::from_slice(body) {
        Ok(l) => l,
        Err(e) => {
            return Response {
                status: 400,
                body: ApiError::bad_request(format!("invalid limits: {e}"))
                    .body()
                    .to_string()
                    .into_bytes(),
            };
        }
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
    Response {
        status: 200,
        body: b"{}".to_vec(),
    }
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
