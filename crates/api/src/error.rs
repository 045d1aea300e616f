//! API errors: a code, a message, and the HTTP status they travel with.

use rusqlite::ffi;
use serde_json::json;

/// An error answer: `{"error": {"code": ..., "message": ...}}` with an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status: 4xx for the caller's mistakes, 5xx for storage and internal failures.
    pub status: u16,
    /// `SQLITE_*` (extended where SQLite gives one) or an API code such as `BAD_REQUEST`.
    pub code: String,
    /// What went wrong, for humans.
    pub message: String,
    /// For batches: the index of the statement that failed.
    pub statement: Option<usize>,
}

impl ApiError {
    /// A caller's mistake outside SQL (bad JSON, wrong shape).
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BAD_REQUEST", message)
    }

    /// An error with the given parts.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_owned(),
            message: message.into(),
            statement: None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(i) = self.statement {
            error["statement"] = json!(i);
        }
        json!({ "error": error })
    }

    /// From a rusqlite error; `store_message` is the VFS's account of a storage failure.
    pub fn from_sqlite(err: &rusqlite::Error, store_message: Option<String>) -> ApiError {
        use rusqlite::Error as E;
        // The SQL policy (dosql_vfs::guard) refused part of the statement while it was
        // prepared: SQLite says SQLITE_AUTH "not authorized" (or, for a function, a plain
        // error); say what was refused and why instead.
        if matches!(err, E::SqliteFailure(..) | E::SqlInputError { .. })
            && let Some(refusal) = dosql_vfs::take_refusal()
        {
            // A write on a read replica: 421, which the host answers by sending the request
            // to the primary.
            if refusal.why == dosql_vfs::guard::REPLICA_WHY {
                return ApiError::new(421, "READ_REPLICA", refusal.to_string());
            }
            return ApiError::new(403, "SQLITE_AUTH", refusal.to_string());
        }
        match err {
            E::SqliteFailure(e, msg) => {
                let code = code_name(e.extended_code);
                let mut message = msg.clone().unwrap_or_else(|| e.to_string());
                let status = status_of(e.extended_code);
                match e.extended_code & 0xff {
                    ffi::SQLITE_NOMEM => {
                        message = format!(
                            "{message}: the statement needs more memory than this database may \
                             use (its share of the isolate's memory budget; see the README's \
                             limits)"
                        );
                    }
                    ffi::SQLITE_TOOBIG => {
                        message = format!(
                            "{message}: a string, blob or row is at most {} bytes (see the \
                             README's limits)",
                            dosql_vfs::guard::max_length()
                        );
                    }
                    _ => {}
                }
                // A storage failure, or the VFS's account of a transaction over its size.
                if (status >= 500 || e.extended_code & 0xff == ffi::SQLITE_FULL)
                    && let Some(store) = store_message
                {
                    message = format!("{message}: {store}");
                }
                ApiError::new(status, &code, message)
            }
            E::SqlInputError {
                error, msg, offset, ..
            } => ApiError::new(
                400,
                &code_name(error.extended_code),
                format!("{msg} (at offset {offset})"),
            ),
            E::InvalidParameterCount(given, wanted) => ApiError::new(
                400,
                "SQLITE_RANGE",
                format!("{given} parameters given; the statement takes {wanted}"),
            ),
            E::InvalidParameterName(name) => ApiError::new(
                400,
                "SQLITE_RANGE",
                format!("the statement has no parameter named {name:?}"),
            ),
            E::ToSqlConversionFailure(e) => ApiError::new(400, "SQLITE_MISMATCH", e.to_string()),
            E::Utf8Error(..) | E::NulError(_) => ApiError::bad_request(err.to_string()),
            other => ApiError::new(500, "INTERNAL", other.to_string()),
        }
    }
}

/// HTTP status for a SQLite (extended) result code: 5xx for what the server failed at, 4xx
/// for what the request asked that cannot be done.
fn status_of(code: i32) -> u16 {
    match code & 0xff {
        ffi::SQLITE_IOERR
        | ffi::SQLITE_CORRUPT
        | ffi::SQLITE_NOTADB
        | ffi::SQLITE_CANTOPEN
        | ffi::SQLITE_INTERNAL
        | ffi::SQLITE_PROTOCOL => 500,
        // Another connection of the same database (a Hrana stream's open transaction) holds
        // the lock: a conflict with what a client did, to retry once it ended.
        ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED => 409,
        // The SQL policy refused part of the statement (dosql_vfs::guard).
        ffi::SQLITE_AUTH => 403,
        // A transaction over its size (the VFS refuses to buffer more changed pages than its
        // share of memory) or over `max_page_count`.
        ffi::SQLITE_FULL => 413,
        // The statement needs more memory than the database's share (SQLite's heap limit).
        _ => 400,
    }
}

/// `SQLITE_*` name of a result code, extended where known.
pub fn code_name(code: i32) -> String {
    let extended = match code {
        ffi::SQLITE_CONSTRAINT_CHECK => Some("SQLITE_CONSTRAINT_CHECK"),
        ffi::SQLITE_CONSTRAINT_FOREIGNKEY => Some("SQLITE_CONSTRAINT_FOREIGNKEY"),
        ffi::SQLITE_CONSTRAINT_NOTNULL => Some("SQLITE_CONSTRAINT_NOTNULL"),
        ffi::SQLITE_CONSTRAINT_PRIMARYKEY => Some("SQLITE_CONSTRAINT_PRIMARYKEY"),
        ffi::SQLITE_CONSTRAINT_UNIQUE => Some("SQLITE_CONSTRAINT_UNIQUE"),
        ffi::SQLITE_CONSTRAINT_TRIGGER => Some("SQLITE_CONSTRAINT_TRIGGER"),
        ffi::SQLITE_CONSTRAINT_DATATYPE => Some("SQLITE_CONSTRAINT_DATATYPE"),
        ffi::SQLITE_IOERR_READ => Some("SQLITE_IOERR_READ"),
        ffi::SQLITE_IOERR_SHORT_READ => Some("SQLITE_IOERR_SHORT_READ"),
        ffi::SQLITE_IOERR_WRITE => Some("SQLITE_IOERR_WRITE"),
        ffi::SQLITE_IOERR_FSYNC => Some("SQLITE_IOERR_FSYNC"),
        ffi::SQLITE_IOERR_TRUNCATE => Some("SQLITE_IOERR_TRUNCATE"),
        ffi::SQLITE_IOERR_COMMIT_ATOMIC => Some("SQLITE_IOERR_COMMIT_ATOMIC"),
        ffi::SQLITE_IOERR_CORRUPTFS => Some("SQLITE_IOERR_CORRUPTFS"),
        _ => None,
    };
    if let Some(name) = extended {
        return name.to_owned();
    }
    let primary = match code & 0xff {
        ffi::SQLITE_ERROR => "SQLITE_ERROR",
        ffi::SQLITE_INTERNAL => "SQLITE_INTERNAL",
        ffi::SQLITE_PERM => "SQLITE_PERM",
        ffi::SQLITE_ABORT => "SQLITE_ABORT",
        ffi::SQLITE_BUSY => "SQLITE_BUSY",
        ffi::SQLITE_LOCKED => "SQLITE_LOCKED",
        ffi::SQLITE_NOMEM => "SQLITE_NOMEM",
        ffi::SQLITE_READONLY => "SQLITE_READONLY",
        ffi::SQLITE_INTERRUPT => "SQLITE_INTERRUPT",
        ffi::SQLITE_IOERR => "SQLITE_IOERR",
        ffi::SQLITE_CORRUPT => "SQLITE_CORRUPT",
        ffi::SQLITE_FULL => "SQLITE_FULL",
        ffi::SQLITE_CANTOPEN => "SQLITE_CANTOPEN",
        ffi::SQLITE_PROTOCOL => "SQLITE_PROTOCOL",
        ffi::SQLITE_SCHEMA => "SQLITE_SCHEMA",
        ffi::SQLITE_TOOBIG => "SQLITE_TOOBIG",
        ffi::SQLITE_CONSTRAINT => "SQLITE_CONSTRAINT",
        ffi::SQLITE_MISMATCH => "SQLITE_MISMATCH",
        ffi::SQLITE_MISUSE => "SQLITE_MISUSE",
        ffi::SQLITE_AUTH => "SQLITE_AUTH",
        ffi::SQLITE_RANGE => "SQLITE_RANGE",
        ffi::SQLITE_NOTADB => "SQLITE_NOTADB",
        _ => "SQLITE_ERROR",
    };
    primary.to_owned()
}
