//! The SQLite VFS and I/O method tables: every `unsafe` block of dosql's SQLite FFI.
//!
//! Each callback converts SQLite's raw arguments into safe values, runs the safe core
//! (`engine`) inside `guard` so that no panic unwinds into C, and maps the outcome to a
//! result code through `VfsError::sqlite_code`, the one place where that mapping lives.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::Mutex;

use rusqlite::ffi;

use crate::engine::{CommitPoint, Lock, MemFile};
use crate::error::{VfsError, to_code};
use crate::guard::{self, Action};
use crate::{Shared, find, lock_state};

/// What SQLite's `sqlite3_file` points at: SQLite allocates `szOsFile` bytes and we keep the
/// Rust state behind one pointer so the layout SQLite sees stays `repr(C)`.
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    open: *mut OpenFile,
}

enum OpenFile {
    /// The main database file of an attached store.
    Db { state: Shared, lock: Lock },
    /// A journal or temp file.
    Mem(MemFile),
}

/// Runs `f`, turning a panic into an error code instead of unwinding into SQLite (undefined
/// behaviour). Builds with `panic = "abort"` (wasm) cannot catch: the code avoids panics.
fn guard(on_panic: c_int, f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(on_panic)
}

/// # Safety
/// `file` must be a file SQLite opened through [`x_open`] that has not been closed.
unsafe fn open_file<'a>(file: *mut ffi::sqlite3_file) -> Option<&'a mut OpenFile> {
    // SAFETY: per the contract, `file` points at a `File` whose `open` field is either null or
    // the live `Box<OpenFile>` x_open stored; SQLite never uses one file from two threads.
    unsafe { (*file.cast::<File>()).open.as_mut() }
}

/// Runs `f` on the open file behind `file`, as a VFS method returning a result code.
///
/// # Safety
/// As for [`open_file`].
unsafe fn with_file(file: *mut ffi::sqlite3_file, f: impl FnOnce(&mut OpenFile) -> c_int) -> c_int {
    // SAFETY: forwarded contract.
    match unsafe { open_file(file) } {
        Some(open) => guard(ffi::SQLITE_IOERR, || f(open)),
        None => ffi::SQLITE_IOERR,
    }
}

/// Runs a database-file operation, recording failures as the database's last error.
fn on_db(
    state: &Shared,
    op: impl FnOnce(&mut crate::engine::DbState) -> Result<(), VfsError>,
) -> c_int {
    let mut s = lock_state(state);
    let result = op(&mut s);
    to_code(s.note(result))
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls xClose once on a file x_open set up; after it, the file is gone.
    let f = unsafe { &mut *file.cast::<File>() };
    let open = std::mem::replace(&mut f.open, ptr::null_mut());
    if open.is_null() {
        return ffi::SQLITE_OK;
    }
    // SAFETY: `open` came from Box::into_raw in x_open and is released exactly once here.
    let mut open = unsafe { Box::from_raw(open) };
    guard(ffi::SQLITE_IOERR, move || {
        if let OpenFile::Db { state, lock } = open.as_mut() {
            lock_state(state).unlock(lock, Lock::None);
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    ofst: i64,
) -> c_int {
    let (Ok(len), Ok(offset)) = (usize::try_from(amt), u64::try_from(ofst)) else {
        return ffi::SQLITE_IOERR_READ;
    };
    // SAFETY: SQLite passes a buffer of `amt` writable bytes that it owns for this call.
    let buf = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    // SAFETY: `file` is an open file (SQLite's xRead contract).
    unsafe {
        with_file(file, |open| match open {
            OpenFile::Db { state, .. } => on_db(state, |s| s.read(offset, buf)),
            OpenFile::Mem(m) => to_code(m.read(offset, buf)),
        })
    }
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    ofst: i64,
) -> c_int {
    let (Ok(len), Ok(offset)) = (usize::try_from(amt), u64::try_from(ofst)) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    // SAFETY: SQLite passes `amt` readable bytes that stay valid for this call.
    let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
    // SAFETY: `file` is an open file (SQLite's xWrite contract).
    unsafe {
        with_file(file, |open| match open {
            OpenFile::Db { state, .. } => on_db(state, |s| s.write(offset, data)),
            OpenFile::Mem(m) => to_code(m.write(offset, data)),
        })
    }
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    let Ok(size) = u64::try_from(size) else {
        return ffi::SQLITE_IOERR_TRUNCATE;
    };
    // SAFETY: `file` is an open file (SQLite's xTruncate contract).
    unsafe {
        with_file(file, |open| match open {
            OpenFile::Db { state, .. } => on_db(state, |s| s.truncate(size)),
            OpenFile::Mem(m) => {
                m.truncate(size);
                ffi::SQLITE_OK
            }
        })
    }
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    // SAFETY: `file` is an open file (SQLite's xSync contract).
    unsafe {
        with_file(file, |open| match open {
            OpenFile::Db { state, .. } => on_db(state, |s| s.commit(CommitPoint::Sync)),
            OpenFile::Mem(_) => ffi::SQLITE_OK,
        })
    }
}

unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, out: *mut i64) -> c_int {
    // SAFETY: `file` is an open file (SQLite's xFileSize contract).
    let size = unsafe {
        match open_file(file) {
            Some(OpenFile::Db { state, .. }) => lock_state(state).file_size(),
            Some(OpenFile::Mem(m)) => m.size(),
            None => return ffi::SQLITE_IOERR_FSTAT,
        }
    };
    // SAFETY: SQLite passes a valid pointer for the result.
    unsafe { *out = i64::try_from(size).unwrap_or(i64::MAX) };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: `file` is an open file (SQLite's xLock contract).
    unsafe {
        with_file(file, |open| match open {
            OpenFile::Db { state, lock } => {
                to_code(lock_state(state).lock(lock, Lock::from_sqlite(level)))
            }
            OpenFile::Mem(_) => ffi::SQLITE_OK,
        })
    }
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: `file` is an open file (SQLite's xUnlock contract).
    unsafe {
        with_file(file, |open| {
            if let OpenFile::Db { state, lock } = open {
                lock_state(state).unlock(lock, Lock::from_sqlite(level));
            }
            ffi::SQLITE_OK
        })
    }
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: `file` is an open file (SQLite's xCheckReservedLock contract).
    let reserved = match unsafe { open_file(file) } {
        Some(OpenFile::Db { state, .. }) => lock_state(state).reserved(),
        _ => false,
    };
    // SAFETY: SQLite passes a valid pointer for the result.
    unsafe { *out = c_int::from(reserved) };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    _arg: *mut c_void,
) -> c_int {
    // SAFETY: `file` is an open file (SQLite's xFileControl contract).
    unsafe {
        with_file(file, |open| {
            let OpenFile::Db { state, .. } = open else {
                return ffi::SQLITE_NOTFOUND;
            };
            match op {
                // The commit point of a rollback-journal transaction: sent right before xSync,
                // and also when synchronous=OFF skips xSync.
                ffi::SQLITE_FCNTL_SYNC => on_db(state, |s| s.commit(CommitPoint::Sync)),
                // In rollback-journal mode SQLite shrinks the file only after the commit
                // (the header already holds the new size); store that truncation now.
                ffi::SQLITE_FCNTL_COMMIT_PHASETWO => {
                    on_db(state, |s| s.commit(CommitPoint::PhaseTwo))
                }
                ffi::SQLITE_FCNTL_BEGIN_ATOMIC_WRITE => ffi::SQLITE_OK,
                ffi::SQLITE_FCNTL_COMMIT_ATOMIC_WRITE => {
                    on_db(state, |s| s.commit(CommitPoint::AtomicWrite))
                }
                ffi::SQLITE_FCNTL_ROLLBACK_ATOMIC_WRITE => {
                    lock_state(state).discard();
                    ffi::SQLITE_OK
                }
                _ => ffi::SQLITE_NOTFOUND,
            }
        })
    }
}

unsafe extern "C" fn x_sector_size(_file: *mut ffi::sqlite3_file) -> c_int {
    512
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // Writes are buffered in memory, so they are power-safe, ordered and appends are safe.
    let base = ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE
        | ffi::SQLITE_IOCAP_SAFE_APPEND
        | ffi::SQLITE_IOCAP_SEQUENTIAL
        | ffi::SQLITE_IOCAP_UNDELETABLE_WHEN_OPEN;
    // SAFETY: `file` is an open file (SQLite's xDeviceCharacteristics contract).
    match unsafe { open_file(file) } {
        Some(OpenFile::Db { state, .. }) if lock_state(state).batch_atomic => {
            base | ffi::SQLITE_IOCAP_BATCH_ATOMIC
        }
        _ => base,
    }
}

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

/// # Safety
/// `name` is null or a NUL-terminated string valid for the call.
unsafe fn name_of<'a>(name: *const c_char) -> Option<&'a str> {
    if name.is_null() {
        return None;
    }
    // SAFETY: per the contract.
    unsafe { CStr::from_ptr(name) }.to_str().ok()
}

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite passes a NUL-terminated name or null (temp files).
    let name = unsafe { name_of(name) };
    let open = if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
        match name.and_then(find) {
            Some(state) => Ok(OpenFile::Db {
                state,
                lock: Lock::None,
            }),
            None => Err(VfsError::UnknownDatabase(name.unwrap_or("").to_owned())),
        }
    } else if flags & ffi::SQLITE_OPEN_WAL != 0 {
        Err(VfsError::Unsupported("WAL files are not supported".into()))
    } else {
        Ok(OpenFile::Mem(MemFile::default()))
    };
    let open = match open {
        Ok(open) => open,
        Err(e) => {
            // SAFETY: `file` points at the `szOsFile` bytes SQLite allocated. xOpen's contract:
            // on failure pMethods is NULL, or SQLite would call xClose on a file never opened.
            unsafe { ptr::addr_of_mut!((*file).pMethods).write(ptr::null()) };
            return e.sqlite_code();
        }
    };
    // SAFETY: SQLite allocated `szOsFile` = size_of::<File>() bytes at `file` for us to fill;
    // pMethods is set last, only on success, as the VFS contract requires.
    unsafe {
        let f = file.cast::<File>();
        ptr::addr_of_mut!((*f).open).write(Box::into_raw(Box::new(open)));
        ptr::addr_of_mut!((*f).base.pMethods).write(&IO_METHODS);
        if !out_flags.is_null() {
            *out_flags = flags;
        }
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_delete(
    _vfs: *mut ffi::sqlite3_vfs,
    _name: *const c_char,
    _sync_dir: c_int,
) -> c_int {
    // Journals and temp files vanish when closed; databases are dropped through their store.
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_access(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    _flags: c_int,
    out: *mut c_int,
) -> c_int {
    // SAFETY: SQLite passes a NUL-terminated name.
    let exists = unsafe { name_of(name) }.and_then(find).is_some();
    // SAFETY: SQLite passes a valid pointer for the result.
    unsafe { *out = c_int::from(exists) };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_full_pathname(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n_out: c_int,
    out: *mut c_char,
) -> c_int {
    // Names are keys in the registry, not paths: use them as they are.
    // SAFETY: SQLite passes a NUL-terminated name.
    let bytes = unsafe { CStr::from_ptr(name) }.to_bytes_with_nul();
    if bytes.len() > usize::try_from(n_out).unwrap_or(0) {
        return ffi::SQLITE_CANTOPEN;
    }
    // SAFETY: `out` has room for `n_out` bytes, checked above to hold the name and its NUL.
    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), out, bytes.len()) };
    ffi::SQLITE_OK
}

/// The VFS SQLite had before ours, for the clock and randomness; null under SQLITE_OS_OTHER.
///
/// # Safety
/// `vfs` is the VFS registered by [`new_vfs`].
unsafe fn fallback(vfs: *mut ffi::sqlite3_vfs) -> Option<&'static ffi::sqlite3_vfs> {
    // SAFETY: pAppData holds null or a VFS registered with SQLite, which lives forever.
    unsafe { (*vfs).pAppData.cast::<ffi::sqlite3_vfs>().as_ref() }
}

unsafe extern "C" fn x_randomness(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    // SAFETY: `vfs` is ours.
    if let Some(f) = unsafe { fallback(vfs) }
        && let Some(x) = f.xRandomness
    {
        // SAFETY: delegating the same call to the VFS it was meant for.
        return unsafe { x(ptr::from_ref(f).cast_mut(), n, out) };
    }
    let len = usize::try_from(n).unwrap_or(0);
    // SAFETY: SQLite passes `n` writable bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(out.cast::<u8>(), len) };
    // No OS entropy here (SQLITE_OS_OTHER): SQLite only uses this to seed its PRNG for
    // temp names and random(), where unpredictability is not a security property.
    let mut x = now_ms().unsigned_abs() | 1;
    for b in buf.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    n
}

unsafe extern "C" fn x_sleep(vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    // SAFETY: `vfs` is ours.
    if let Some(f) = unsafe { fallback(vfs) }
        && let Some(x) = f.xSleep
    {
        // SAFETY: delegating the same call to the VFS it was meant for.
        return unsafe { x(ptr::from_ref(f).cast_mut(), micros) };
    }
    // A Durable Object cannot block; lock waits never happen with one connection.
    micros
}

/// Milliseconds since the Unix epoch (the WASI clock in wasm).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The Unix epoch as a Julian day number, in milliseconds.
const UNIX_EPOCH_JULIAN_MS: i64 = 210_866_760_000_000;

unsafe extern "C" fn x_current_time_int64(vfs: *mut ffi::sqlite3_vfs, out: *mut i64) -> c_int {
    // SAFETY: `vfs` is ours.
    if let Some(f) = unsafe { fallback(vfs) }
        && let Some(x) = f.xCurrentTimeInt64
    {
        // SAFETY: delegating the same call to the VFS it was meant for.
        return unsafe { x(ptr::from_ref(f).cast_mut(), out) };
    }
    // SAFETY: SQLite passes a valid pointer for the result.
    unsafe { *out = UNIX_EPOCH_JULIAN_MS + now_ms() };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    let mut ms = 0i64;
    // SAFETY: forwarding to our own xCurrentTimeInt64 with a valid pointer.
    let rc = unsafe { x_current_time_int64(vfs, &mut ms) };
    // SAFETY: SQLite passes a valid pointer for the result.
    unsafe { *out = ms as f64 / 86_400_000.0 };
    rc
}

unsafe extern "C" fn x_get_last_error(
    _vfs: *mut ffi::sqlite3_vfs,
    _n: c_int,
    _buf: *mut c_char,
) -> c_int {
    0
}

unsafe extern "C" fn x_dl_open(_vfs: *mut ffi::sqlite3_vfs, _name: *const c_char) -> *mut c_void {
    ptr::null_mut()
}

unsafe extern "C" fn x_dl_error(_vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) {
    let msg = b"loadable extensions are not supported by the dosql VFS\0";
    let len = msg.len().min(usize::try_from(n).unwrap_or(0));
    if len == 0 {
        return;
    }
    // SAFETY: SQLite passes `n` writable bytes; we write at most that, NUL-terminated.
    unsafe {
        ptr::copy_nonoverlapping(msg.as_ptr().cast::<c_char>(), out, len);
        *out.add(len - 1) = 0;
    }
}

unsafe extern "C" fn x_dl_close(_vfs: *mut ffi::sqlite3_vfs, _handle: *mut c_void) {}

fn new_vfs(fallback: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    let vfs = ffi::sqlite3_vfs {
        iVersion: 2,
        szOsFile: std::mem::size_of::<File>() as c_int,
        mxPathname: 512,
        pNext: ptr::null_mut(),
        zName: c"dosql".as_ptr(),
        pAppData: fallback.cast(),
        xOpen: Some(x_open),
        xDelete: Some(x_delete),
        xAccess: Some(x_access),
        xFullPathname: Some(x_full_pathname),
        xDlOpen: Some(x_dl_open),
        xDlError: Some(x_dl_error),
        xDlSym: None,
        xDlClose: Some(x_dl_close),
        xRandomness: Some(x_randomness),
        xSleep: Some(x_sleep),
        xCurrentTime: Some(x_current_time),
        xGetLastError: Some(x_get_last_error),
        xCurrentTimeInt64: Some(x_current_time_int64),
        xSetSystemCall: None,
        xGetSystemCall: None,
        xNextSystemCall: None,
    };
    // Registered VFSes must live as long as the process: leak it.
    Box::into_raw(Box::new(vfs))
}

/// Whether `sql` ends with a complete SQL statement, by SQLite's own rules (string literals,
/// comments, trigger bodies with inner `;`). Text with a NUL byte counts as complete: SQLite
/// will then report the statement itself.
pub fn sql_is_complete(sql: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(sql) else {
        return true;
    };
    // SAFETY: `c` is a NUL-terminated string alive across the call; sqlite3_complete only
    // reads it (and initializes SQLite if needed, which is safe to call at any time).
    unsafe { ffi::sqlite3_complete(c.as_ptr()) != 0 }
}

/// SQLite's authorizer callback: asks [`guard::decide`] about pragmas, `ATTACH` and function
/// calls while a statement is prepared. A refusal is noted for [`guard::take_refusal`] and
/// fails the prepare with `SQLITE_AUTH`.
unsafe extern "C" fn x_authorize(
    _data: *mut c_void,
    action: c_int,
    arg1: *const c_char,
    arg2: *const c_char,
    db: *const c_char,
    _trigger: *const c_char,
) -> c_int {
    // SAFETY: SQLite passes NUL-terminated strings or null, valid for the call.
    let (arg1, arg2, db) = unsafe { (name_of(arg1), name_of(arg2), name_of(db)) };
    guard(ffi::SQLITE_DENY, || {
        // Statements that write `arg1` (a table or index) in database `db`, by their verb.
        let verb = match action {
            ffi::SQLITE_INSERT => Some("INSERT INTO"),
            ffi::SQLITE_UPDATE => Some("UPDATE"),
            ffi::SQLITE_DELETE => Some("DELETE FROM"),
            ffi::SQLITE_CREATE_TABLE
            | ffi::SQLITE_CREATE_INDEX
            | ffi::SQLITE_CREATE_TRIGGER
            | ffi::SQLITE_CREATE_VIEW
            | ffi::SQLITE_CREATE_VTABLE => Some("CREATE"),
            ffi::SQLITE_DROP_TABLE
            | ffi::SQLITE_DROP_INDEX
            | ffi::SQLITE_DROP_TRIGGER
            | ffi::SQLITE_DROP_VIEW
            | ffi::SQLITE_DROP_VTABLE => Some("DROP"),
            ffi::SQLITE_REINDEX => Some("REINDEX"),
            ffi::SQLITE_ANALYZE => Some("ANALYZE"),
            _ => None,
        };
        let what;
        let action = match (verb, action) {
            (Some(verb), _) => {
                what = format!("{verb} {}", arg1.unwrap_or(""));
                Action::Write { what: &what, db }
            }
            // ALTER TABLE names the database first, the table second.
            (None, ffi::SQLITE_ALTER_TABLE) => {
                what = format!("ALTER TABLE {}", arg2.unwrap_or(""));
                Action::Write {
                    what: &what,
                    db: arg1,
                }
            }
            (None, ffi::SQLITE_PRAGMA) => Action::Pragma {
                name: arg1.unwrap_or(""),
                arg: arg2,
            },
            (None, ffi::SQLITE_ATTACH) => Action::Attach { file: arg1 },
            (None, ffi::SQLITE_FUNCTION) => Action::Function {
                name: arg2.unwrap_or(""),
            },
            _ => Action::Other,
        };
        match guard::decide(action) {
            Ok(()) => ffi::SQLITE_OK,
            Err(refusal) => {
                guard::note_refusal(refusal);
                ffi::SQLITE_DENY
            }
        }
    })
}

/// Puts `conn` under the policy of [`guard`]: every statement it prepares is checked.
pub(crate) fn install_authorizer(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    // SAFETY: `handle` is the live connection `conn` owns; the callback is a plain function
    // with no user data, so it stays valid for as long as the connection lives.
    let rc =
        unsafe { ffi::sqlite3_set_authorizer(conn.handle(), Some(x_authorize), ptr::null_mut()) };
    match rc {
        ffi::SQLITE_OK => Ok(()),
        rc => Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None)),
    }
}

/// Caps the memory SQLite may allocate (in this process: one wasm instance is one database),
/// in bytes; 0 removes the cap. Past the soft limit SQLite frees cache pages before it asks
/// for more; past the hard limit an allocation fails with `SQLITE_NOMEM`, so a statement that
/// needs more memory than the database's share fails cleanly instead of growing the isolate.
/// Returns the previous hard limit.
pub fn set_heap_limit(bytes: i64) -> i64 {
    // SAFETY: both calls only store a number in SQLite's memory accounting; they are safe to
    // make at any time, from the one thread that uses SQLite in a wasm instance.
    unsafe {
        ffi::sqlite3_soft_heap_limit64(bytes / 4 * 3);
        ffi::sqlite3_hard_heap_limit64(bytes.max(0))
    }
}

/// Bytes SQLite has allocated now (0 unless memory statistics are on, as they are in wasm).
pub fn heap_used() -> i64 {
    // SAFETY: reads SQLite's memory counter; safe at any time.
    unsafe { ffi::sqlite3_memory_used() }
}

static REGISTER: Mutex<()> = Mutex::new(());

/// Registers the `dosql` VFS with SQLite (not as the default), once.
pub(crate) fn register() -> Result<(), c_int> {
    let _once = REGISTER.lock().unwrap_or_else(|p| p.into_inner());
    // The wasm build compiles SQLite with SQLITE_DEFAULT_MEMSTATUS=0 (fewer instructions per
    // malloc), but heap limits (set_heap_limit) need the counters: turn them on before SQLite
    // initializes. Afterwards the call fails harmlessly (SQLITE_MISUSE) and changes nothing.
    #[cfg(feature = "os-other")]
    // SAFETY: SQLITE_CONFIG_MEMSTATUS takes one int; allowed before sqlite3_initialize.
    unsafe {
        ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 1 as c_int);
    }
    // SAFETY: sqlite3_initialize is safe to call any number of times; under SQLITE_OS_OTHER it
    // runs our sqlite3_os_init, which registers the VFS itself.
    let rc = unsafe { ffi::sqlite3_initialize() };
    if rc != ffi::SQLITE_OK {
        return Err(rc);
    }
    // SAFETY: looking up VFSes by a NUL-terminated name (or null for the default) is always safe.
    unsafe {
        if !ffi::sqlite3_vfs_find(c"dosql".as_ptr()).is_null() {
            return Ok(());
        }
        let default = ffi::sqlite3_vfs_find(ptr::null());
        match ffi::sqlite3_vfs_register(new_vfs(default), 0) {
            ffi::SQLITE_OK => Ok(()),
            rc => Err(rc),
        }
    }
}

/// Runs SQLite's one-time setup ([`register`]), opens an in-memory database, runs a point
/// read on a table there ([`PRIME_SQL`]) and closes it, so that a database's first open and
/// query in this process (a wasm instance) find SQLite's initialization done and its open,
/// parse, code generation, VDBE and B-tree paths run once: a fresh wasm instance otherwise
/// runs them for the first time, V8 allocating each function's feedback, inside its first
/// query. Draws no randomness (nothing here asks SQLite's PRNG), so a spare instance may run
/// it at module scope.
pub(crate) fn prime() -> Result<(), c_int> {
    register()?;
    let mut db: *mut ffi::sqlite3 = ptr::null_mut();
    // SAFETY: a NUL-terminated name and flags, and an out-pointer to a handle; the handle is
    // closed below whatever the open returned (sqlite3_open_v2 sets it even on failure).
    let rc = unsafe {
        ffi::sqlite3_open_v2(
            c":memory:".as_ptr(),
            &mut db,
            ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE | ffi::SQLITE_OPEN_NOMUTEX,
            ptr::null(),
        )
    };
    // A point read of a table on it: SQLite's parser, code generator, VDBE and B-tree run
    // once in this instance too (a given rowid: no random one).
    let rc = match rc {
        // SAFETY: the handle is open; a NUL-terminated script, no callback, no error message
        // asked for.
        ffi::SQLITE_OK => unsafe {
            ffi::sqlite3_exec(
                db,
                PRIME_SQL.as_ptr(),
                None,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        },
        rc => rc,
    };
    // SAFETY: db is null or the handle just opened; sqlite3_exec finalized its statements.
    unsafe {
        ffi::sqlite3_close(db);
    }
    match rc {
        ffi::SQLITE_OK => Ok(()),
        rc => Err(rc),
    }
}

/// [`prime`]'s statements: what a cold object's first point query runs in SQLite. (Making
/// the last statement load the schema again, as a real database's first does, measured no
/// better.)
const PRIME_SQL: &CStr = c"CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB); \
    INSERT INTO t VALUES (1, 'one', x'00'), (2, 'two', NULL); \
    SELECT id, v, length(b) FROM t WHERE id = 2; SELECT count(*) FROM t WHERE v LIKE 't%';";

/// SQLite built with SQLITE_OS_OTHER has no VFS of its own and calls this during
/// `sqlite3_initialize`: make dosql's VFS the default.
#[cfg(feature = "os-other")]
#[unsafe(no_mangle)]
pub extern "C" fn sqlite3_os_init() -> c_int {
    // SAFETY: called by sqlite3_initialize, where registering a VFS is allowed.
    unsafe { ffi::sqlite3_vfs_register(new_vfs(ptr::null_mut()), 1) }
}

/// Counterpart of [`sqlite3_os_init`]; the VFS is leaked on purpose, nothing to free.
#[cfg(feature = "os-other")]
#[unsafe(no_mangle)]
pub extern "C" fn sqlite3_os_end() -> c_int {
    ffi::SQLITE_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_open_leaves_no_methods_for_sqlite_to_close() {
        for (name, flags) in [
            (c"no-such-database", ffi::SQLITE_OPEN_MAIN_DB),
            (c"x-wal", ffi::SQLITE_OPEN_WAL),
        ] {
            // A file whose pMethods holds garbage, as SQLite's allocation may.
            let mut file = File {
                base: ffi::sqlite3_file {
                    pMethods: &IO_METHODS,
                },
                open: ptr::null_mut(),
            };
            let mut out = 0;
            // SAFETY: `file` is a File-sized buffer we own, `name` a NUL-terminated string;
            // x_open does not use its vfs argument.
            let rc = unsafe {
                x_open(
                    ptr::null_mut(),
                    name.as_ptr(),
                    (&raw mut file).cast(),
                    flags,
                    &mut out,
                )
            };
            assert_ne!(rc, ffi::SQLITE_OK);
            assert!(file.base.pMethods.is_null(), "{name:?}");
        }
    }
}
