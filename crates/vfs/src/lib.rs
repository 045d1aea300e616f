//! A SQLite VFS over any [`PageStore`].
//!
//! SQLite opens a file; this VFS serves it from a store's pages through a bounded page
//! cache, buffers a transaction's writes as dirty pages, and hands them to the store as one
//! atomic [`Commit`](dosql_pagestore::Commit) (see [`engine`] for the commit protocol).
//! Journals and temp files live in memory. WAL is not supported (SQLite is built without it,
//! so `PRAGMA journal_mode=WAL` leaves the journal mode as it was).
//!
//! ```no_run
//! use dosql_pagestore::{MemStore, PageSize};
//! use dosql_vfs::{Database, VfsConfig};
//!
//! let db = Database::attach("main.db", MemStore::new(PageSize::DEFAULT), VfsConfig::default())?;
//! let conn = db.connect()?;
//! conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?;
//! assert_eq!(db.stats().commits, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! All `unsafe` code (the FFI callbacks SQLite calls) is in the private `ffi` module.

mod cache;
pub mod engine;
mod error;
mod ffi;
pub mod guard;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use dosql_pagestore::{Head, PageSize, PageStore};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

pub use error::{VfsError, VfsResult};
pub use ffi::{heap_used, set_heap_limit, sql_is_complete};

/// Initializes SQLite and runs its open path and a point read once on an in-memory database,
/// ahead of the first real open (a spare wasm instance, while idle). No randomness is drawn.
/// On failure, SQLite's result code.
pub fn prime() -> Result<(), std::ffi::c_int> {
    ffi::prime()
}
pub use guard::{Refusal, take_refusal};

/// The name the VFS is registered under with SQLite.
pub const VFS_NAME: &str = "dosql";

/// Tuning for one attached database.
#[derive(Clone, Debug)]
pub struct VfsConfig {
    /// Clean pages kept in memory. Reads of cached pages never touch the store.
    pub cache_pages: usize,
    /// On a cache miss, also fetch up to this many following pages in the same store call
    /// (useful when every store call is a round trip, as in Durable Objects).
    pub read_ahead: u32,
    /// Advertise `SQLITE_IOCAP_BATCH_ATOMIC`, so a transaction that fits in SQLite's page
    /// cache commits without writing a rollback journal at all.
    pub batch_atomic: bool,
    /// Bytes of changed pages a transaction may buffer until its commit. A write past it
    /// fails with `SQLITE_FULL` ("the transaction changes more than ..."), SQLite rolls the
    /// transaction back, and the store never sees it: a transaction cannot take more memory
    /// than its database's share.
    pub max_txn_bytes: usize,
}

impl Default for VfsConfig {
    fn default() -> VfsConfig {
        VfsConfig {
            cache_pages: 4096,
            read_ahead: 0,
            batch_atomic: true,
            max_txn_bytes: 1 << 30,
        }
    }
}

/// Counters for one attached database since it was attached (or since
/// [`Database::reset_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Page reads answered by the cache.
    pub cache_hits: u64,
    /// Page reads the cache could not answer.
    pub cache_misses: u64,
    /// Calls to the store's read methods.
    pub store_reads: u64,
    /// Pages received from the store (read-ahead included).
    pub pages_read: u64,
    /// Pages sent to the store in successful commits.
    pub pages_written: u64,
    /// Successful commits.
    pub commits: u64,
    /// Of those, commits SQLite made as batch-atomic writes (no rollback journal written).
    pub batch_commits: u64,
    /// Commits the store refused.
    pub failed_commits: u64,
    /// Transactions dropped before their commit point (rolled back after spilling pages).
    pub discarded_transactions: u64,
    /// Pages in the cache now.
    pub cached_pages: u64,
}

type Shared = Arc<Mutex<engine::DbState>>;

fn lock_state(state: &Shared) -> MutexGuard<'_, engine::DbState> {
    // The state is only changed through methods that restore its invariants before they can
    // panic, so a poisoned lock still guards consistent data.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

type Registry = HashMap<String, Shared, dosql_pagestore::FixedState>;

fn registry() -> MutexGuard<'static, Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Looks up an attached database by the file name SQLite opens.
pub(crate) fn find(name: &str) -> Option<Shared> {
    registry().get(name).cloned()
}

/// A database attached to the VFS under a name: SQLite connections opened with that file
/// name and the `dosql` VFS read and write this store. Detached when dropped (open
/// connections keep working until closed).
#[derive(Debug)]
pub struct Database {
    name: String,
    state: Shared,
}

/// Why a database could not be attached.
#[derive(Debug)]
pub enum AttachError {
    /// Another attached database has this name.
    NameInUse(String),
    /// The store could not report its state.
    Store(VfsError),
    /// SQLite refused to register the VFS.
    Register(i32),
}

impl std::fmt::Display for AttachError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttachError::NameInUse(n) => write!(f, "a database named {n:?} is already attached"),
            AttachError::Store(e) => write!(f, "{e}"),
            AttachError::Register(rc) => write!(f, "registering the VFS failed: SQLite error {rc}"),
        }
    }
}

impl std::error::Error for AttachError {}

impl Database {
    /// Attaches `store` under `name`, registering the VFS with SQLite on first use.
    pub fn attach(
        name: &str,
        store: impl PageStore,
        config: VfsConfig,
    ) -> Result<Database, AttachError> {
        ffi::register().map_err(AttachError::Register)?;
        let state = engine::DbState::new(Box::new(store), &config).map_err(AttachError::Store)?;
        let state = Arc::new(Mutex::new(state));
        let mut reg = registry();
        if reg.contains_key(name) {
            return Err(AttachError::NameInUse(name.to_owned()));
        }
        reg.insert(name.to_owned(), state.clone());
        Ok(Database {
            name: name.to_owned(),
            state,
        })
    }

    /// The name SQLite opens this database by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Opens a SQLite connection to this database for client SQL: [`connect_trusted`]'s
    /// connection under the policy of [`guard`] (SQLite's limits set to [`guard::LIMITS`],
    /// and an authorizer that refuses what could corrupt the database or break the VFS's
    /// assumptions; [`take_refusal`] says why a statement was refused).
    ///
    /// [`connect_trusted`]: Database::connect_trusted
    pub fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = self.connect_trusted()?;
        for &(limit, value, _) in guard::LIMITS {
            conn.set_limit(limit, value)?;
        }
        ffi::install_authorizer(&conn)?;
        Ok(conn)
    }

    /// Opens a SQLite connection to this database with SQLite's defensive mode on but no
    /// authorizer or limits: for dosql's own statements, and for tests of how the VFS meets
    /// SQLite's journaling and locking modes. Never hand it client SQL. On an empty store it
    /// first sets SQLite's page size to the store's, since SQLite fixes it when it writes
    /// page 1.
    pub fn connect_trusted(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_EXRESCODE;
        let conn = Connection::open_with_flags_and_vfs(&self.name, flags, VFS_NAME)?;
        // No writable_schema edits of sqlite_schema, no journal_mode=OFF, no writes to
        // shadow tables: SQL cannot corrupt the database file through SQLite itself.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
        // Deleted cells are zeroed inside their B-tree page (at no extra I/O, unlike "ON"):
        // deleted rows do not linger in stored pages, and zeros compress to nearly nothing
        // in the Durable Object's stored values (dosql_pagestore::codec).
        conn.execute_batch("PRAGMA secure_delete = FAST")?;
        let (head, size) = {
            let s = lock_state(&self.state);
            (s.head(), s.page_size())
        };
        if head.page_count == 0 {
            conn.pragma_update(None, "page_size", size.get())?;
        }
        Ok(conn)
    }

    /// The store's page size.
    pub fn page_size(&self) -> PageSize {
        lock_state(&self.state).page_size()
    }

    /// The last committed state.
    pub fn head(&self) -> Head {
        lock_state(&self.state).head()
    }

    /// Changes the page cache's size (dropping pages not recently used when it shrinks) and
    /// the transaction limit ([`VfsConfig::max_txn_bytes`]), for the next transaction on.
    pub fn set_memory_limits(&self, cache_pages: usize, max_txn_bytes: usize) {
        lock_state(&self.state).set_memory_limits(cache_pages, max_txn_bytes);
    }

    /// Runs `f` on the store itself, for work beside SQLite's (history, imports, background
    /// upkeep); `None`, running nothing, while a transaction is writing. With
    /// `pages_changed`, the page cache is dropped afterwards; SQLite's own caches are not, so
    /// whoever changes pages this way closes its connections too.
    pub fn with_store<R>(
        &self,
        pages_changed: bool,
        f: impl FnOnce(&mut dyn PageStore) -> R,
    ) -> Option<R> {
        lock_state(&self.state).with_store(pages_changed, f)
    }

    /// Counters since attach or the last reset.
    pub fn stats(&self) -> Stats {
        lock_state(&self.state).stats()
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        lock_state(&self.state).reset_stats();
    }

    /// The message of the last store or VFS failure (SQLite itself only reports "disk I/O
    /// error"), if any.
    pub fn last_error(&self) -> Option<String> {
        lock_state(&self.state).last_error().map(str::to_owned)
    }

    /// Like [`last_error`](Database::last_error), and clears it.
    pub fn take_last_error(&self) -> Option<String> {
        lock_state(&self.state).take_last_error()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let mut reg = registry();
        if reg
            .get(&self.name)
            .is_some_and(|s| Arc::ptr_eq(s, &self.state))
        {
            reg.remove(&self.name);
        }
    }
}
