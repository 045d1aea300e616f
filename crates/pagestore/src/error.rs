//! The one error type every store returns.

use std::fmt;

/// What went wrong, coarsely: the VFS maps each kind to one SQLite error code.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ErrorKind {
    /// The backend failed to read (I/O error, lost connection, injected fault).
    Read,
    /// The backend failed to commit; the store is unchanged.
    Commit,
    /// The stored data is not what this store wrote (bad meta record, wrong page length).
    Corrupt,
    /// The caller asked for something the contract forbids (a malformed commit); nothing
    /// was changed.
    Invalid,
}

/// An error from a [`PageStore`](crate::PageStore), with a message for humans.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StoreError {
    kind: ErrorKind,
    message: String,
}

impl StoreError {
    /// An error of `kind` described by `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> StoreError {
        StoreError {
            kind,
            message: message.into(),
        }
    }

    /// A read failure.
    pub fn read(message: impl Into<String>) -> StoreError {
        StoreError::new(ErrorKind::Read, message)
    }

    /// A commit failure.
    pub fn commit(message: impl Into<String>) -> StoreError {
        StoreError::new(ErrorKind::Commit, message)
    }

    /// Stored data that does not make sense.
    pub fn corrupt(message: impl Into<String>) -> StoreError {
        StoreError::new(ErrorKind::Corrupt, message)
    }

    /// A request the contract forbids.
    pub fn invalid(message: impl Into<String>) -> StoreError {
        StoreError::new(ErrorKind::Invalid, message)
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable description.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ErrorKind::Read => "read failed",
            ErrorKind::Commit => "commit failed",
            ErrorKind::Corrupt => "store corrupt",
            ErrorKind::Invalid => "invalid request",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for StoreError {}
