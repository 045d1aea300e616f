//! Hrana's requests, responses and errors as they travel (JSON), after libsql-server's
//! `hrana::proto`; and the error answers made from them.

use dosql_vfs::Database;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::value::{InValue, OutValue};
use crate::Response;
use crate::error::{ApiError, code_name};

// ---- errors ----

/// Hrana's `Error`: `{"message", "code"}`.
#[derive(Debug, Serialize)]
pub(super) struct ProtoError {
    message: String,
    code: String,
}

pub(super) fn proto_error(code: &str, message: impl Into<String>) -> ProtoError {
    ProtoError {
        message: message.into(),
        code: code.to_owned(),
    }
}

pub(super) fn args_error(message: String) -> ProtoError {
    proto_error("ARGS_INVALID", message)
}

/// A SQLite error as Hrana reports it: the primary result code's name (`SQLITE_CONSTRAINT`,
/// as libSQL's server does) and SQLite's message, with the storage layer's account of an I/O
/// failure appended.
pub(super) fn sql_error(err: &rusqlite::Error, db: &Database) -> ProtoError {
    use rusqlite::Error as E;
    match err {
        E::MultipleStatement => proto_error(
            "SQL_MANY_STATEMENTS",
            "the SQL text holds more than one statement (use a batch, or the sequence request)",
        ),
        E::Empty => proto_error("SQL_NO_STATEMENT", "the SQL text holds no statement"),
        E::SqliteFailure(e, _) | E::SqlInputError { error: e, .. } => {
            let api = ApiError::from_sqlite(err, db.take_last_error());
            proto_error(&code_name(e.extended_code & 0xff), api.message)
        }
        other => {
            let api = ApiError::from_sqlite(other, None);
            proto_error(&api.code, api.message)
        }
    }
}

/// An HTTP error answer: a Hrana `Error` (`message` and `code` at the top, which clients turn
/// into the error they throw), plus dosql's usual `error` object.
pub(super) fn http_error(status: u16, code: &str, message: impl Into<String>) -> Response {
    let message = message.into();
    let body = serde_json::json!({
        "message": message,
        "code": code,
        "error": {"code": code, "message": message},
    });
    Response {
        status,
        body: body.to_string().into_bytes(),
    }
}

pub(super) fn json_response(value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => Response { status: 200, body },
        Err(e) => http_error(500, "INTERNAL", format!("encoding the answer failed: {e}")),
    }
}

// ---- requests ----

#[derive(Debug, Deserialize)]
pub(super) struct PipelineReq<'a> {
    #[serde(default)]
    pub(super) baton: Option<String>,
    /// Parsed one by one, so that one bad request fails alone.
    #[serde(borrow)]
    pub(super) requests: Vec<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum StreamRequest {
    Close,
    Execute {
        stmt: Stmt,
    },
    Batch {
        batch: Batch,
    },
    Sequence {
        #[serde(default)]
        sql: Option<String>,
        #[serde(default)]
        sql_id: Option<i32>,
    },
    Describe {
        #[serde(default)]
        sql: Option<String>,
        #[serde(default)]
        sql_id: Option<i32>,
    },
    StoreSql {
        sql_id: i32,
        sql: String,
    },
    CloseSql {
        sql_id: i32,
    },
    GetAutocommit,
}

#[derive(Debug, Deserialize)]
pub(super) struct Stmt {
    #[serde(default)]
    pub(super) sql: Option<String>,
    #[serde(default)]
    pub(super) sql_id: Option<i32>,
    #[serde(default)]
    pub(super) args: Option<Vec<InValue>>,
    #[serde(default)]
    pub(super) named_args: Option<Vec<NamedArg>>,
    #[serde(default)]
    pub(super) want_rows: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub(super) struct NamedArg {
    pub(super) name: String,
    pub(super) value: InValue,
}

#[derive(Debug, Deserialize)]
pub(super) struct Batch {
    pub(super) steps: Vec<BatchStep>,
}

#[derive(Debug, Deserialize)]
pub(super) struct BatchStep {
    #[serde(default)]
    pub(super) condition: Option<BatchCond>,
    pub(super) stmt: Stmt,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum BatchCond {
    Ok { step: usize },
    Error { step: usize },
    Not { cond: Box<BatchCond> },
    And { conds: Vec<BatchCond> },
    Or { conds: Vec<BatchCond> },
    IsAutocommit,
}

// ---- responses ----

#[derive(Debug, Serialize)]
pub(super) struct PipelineResp {
    pub(super) baton: Option<String>,
    pub(super) base_url: Option<String>,
    pub(super) results: Vec<StreamResult>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum StreamResult {
    Ok { response: StreamResponse },
    Error { error: ProtoError },
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum StreamResponse {
    Close,
    Execute { result: StmtResult },
    Batch { result: BatchResult },
    Sequence,
    Describe { result: DescribeResult },
    StoreSql,
    CloseSql,
    GetAutocommit { is_autocommit: bool },
}

#[derive(Debug, Serialize)]
pub(super) struct StmtResult {
    pub(super) cols: Vec<Col>,
    pub(super) rows: Vec<Vec<OutValue>>,
    pub(super) affected_row_count: u64,
    pub(super) last_insert_rowid: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct Col {
    pub(super) name: Option<String>,
    pub(super) decltype: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct BatchResult {
    pub(super) step_results: Vec<Option<StmtResult>>,
    pub(super) step_errors: Vec<Option<ProtoError>>,
}

#[derive(Debug, Serialize)]
pub(super) struct DescribeResult {
    pub(super) params: Vec<DescribeParam>,
    pub(super) cols: Vec<DescribeCol>,
    pub(super) is_explain: bool,
    pub(super) is_readonly: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct DescribeParam {
    pub(super) name: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct DescribeCol {
    pub(super) name: String,
    pub(super) decltype: Option<String>,
}
