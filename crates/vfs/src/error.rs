//! Every VFS failure, and the one place that maps it to a SQLite result code.

use std::fmt;

use dosql_pagestore::{ErrorKind, StoreError};
use rusqlite::ffi;

/// Why a VFS call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VfsError {
    /// A read past the end of the file: SQLite expects the missing bytes zero-filled and
    /// this code, e.g. when it reads the header of a new, empty database.
    ShortRead,
    /// The store could not read a page.
    Read(StoreError),
    /// The store refused or lost a commit; the database is as before the transaction.
    Commit(StoreError),
    /// A commit attempted inside SQLite's batch-atomic write failed; SQLite then retries the
    /// transaction through its rollback journal.
    AtomicCommit(StoreError),
    /// SQLite wrote something that is not a whole, aligned page of the store's size.
    BadWrite(String),
    /// SQLite tried to truncate to a size that is not a whole number of pages.
    BadTruncate(String),
    /// No database is attached under the name SQLite asked to open.
    UnknownDatabase(String),
    /// The file kind is not supported (a WAL file).
    Unsupported(String),
    /// The transaction changes more pages than the database may hold in memory until its
    /// commit ([`crate::VfsConfig::max_txn_bytes`]); SQLite rolls it back.
    TooLarge(String),
    /// Another connection holds a conflicting lock.
    Busy,
    /// A Rust panic was caught at the FFI boundary: a bug in dosql.
    Internal(String),
}

impl VfsError {
    /// The SQLite result code SQLite receives for this error.
    pub fn sqlite_code(&self) -> i32 {
        match self {
            VfsError::ShortRead => ffi::SQLITE_IOERR_SHORT_READ,
            VfsError::Read(e) if e.kind() == ErrorKind::Corrupt => ffi::SQLITE_IOERR_CORRUPTFS,
            VfsError::Read(_) => ffi::SQLITE_IOERR_READ,
            VfsError::Commit(_) => ffi::SQLITE_IOERR_FSYNC,
            VfsError::AtomicCommit(_) => ffi::SQLITE_IOERR_COMMIT_ATOMIC,
            VfsError::BadWrite(_) => ffi::SQLITE_IOERR_WRITE,
            VfsError::BadTruncate(_) => ffi::SQLITE_IOERR_TRUNCATE,
            VfsError::UnknownDatabase(_) | VfsError::Unsupported(_) => ffi::SQLITE_CANTOPEN,
            // "Database or disk is full": SQLite rolls the statement (and, outside an explicit
            // transaction, the transaction) back, and the API answers 413 with this message.
            VfsError::TooLarge(_) => ffi::SQLITE_FULL,
            VfsError::Busy => ffi::SQLITE_BUSY,
            VfsError::Internal(_) => ffi::SQLITE_IOERR,
        }
    }

    /// Whether this error is worth remembering as the database's last error: short reads
    /// and lock conflicts are routine, not failures.
    pub(crate) fn is_failure(&self) -> bool {
        !matches!(self, VfsError::ShortRead | VfsError::Busy)
    }
}

impl fmt::Display for VfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VfsError::ShortRead => write!(f, "short read"),
            VfsError::Read(e) | VfsError::Commit(e) | VfsError::AtomicCommit(e) => write!(f, "{e}"),
            VfsError::BadWrite(m)
            | VfsError::BadTruncate(m)
            | VfsError::Unsupported(m)
            | VfsError::TooLarge(m) => {
                write!(f, "{m}")
            }
            VfsError::UnknownDatabase(name) => {
                write!(f, "no database is attached under the name {name:?}")
            }
            VfsError::Busy => write!(f, "database is locked"),
            VfsError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for VfsError {}

/// The result of a VFS operation.
pub type VfsResult<T> = Result<T, VfsError>;

/// Maps a result to the code SQLite expects from a VFS method.
pub(crate) fn to_code(result: VfsResult<()>) -> i32 {
    match result {
        Ok(()) => ffi::SQLITE_OK,
        Err(e) => e.sqlite_code(),
    }
}
