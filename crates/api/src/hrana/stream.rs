//! One Hrana stream: its own SQLite connection, the SQL texts stored on it, and the stream
//! requests it runs (`execute`, `sequence`, `describe`, `store_sql`, ...; `batch` is in
//! `super::batch`), with libSQL's `BEGIN TRANSACTION READONLY`.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use dosql_vfs::Database;
use rusqlite::Connection;
use rusqlite::fallible_iterator::FallibleIterator;

use super::proto::{
    ProtoError, Stmt, StmtResult, StreamRequest, StreamResponse, proto_error, sql_error,
};
use super::stmt::{describe, run};
use super::{MAX_STORED_SQL, Version, need_v3};
use crate::{ApiError, Limits};

/// One stream: its connection and stored SQL texts.
pub(super) struct Stream {
    pub(super) conn: Connection,
    sqls: HashMap<i32, String>,
    pub(super) last_used: Instant,
    /// Inside a `BEGIN TRANSACTION READONLY`: `query_only` is on until it ends.
    readonly_txn: bool,
    /// A `close` request ran; the connection closes after the pipeline.
    pub(super) closed: bool,
    /// Bytes of rows the answer to the current HTTP request may carry in all, and may still
    /// carry (about: each value counts what it costs as JSON; see `json_cost`).
    answer_limit: usize,
    answer_left: Cell<usize>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("autocommit", &self.conn.is_autocommit())
            .field("sqls", &self.sqls.len())
            .field("last_used", &self.last_used)
            .finish_non_exhaustive()
    }
}

impl Stream {
    pub(super) fn open(db: &Database) -> Result<Stream, ApiError> {
        let conn = db
            .connect()
            .map_err(|e| ApiError::from_sqlite(&e, db.take_last_error()))?;
        // Never wait for a lock: nothing else runs while this request does, so a lock that is
        // busy now stays busy (natively the default handler would sleep for 5 s).
        conn.busy_timeout(Duration::ZERO)
            .map_err(|e| ApiError::from_sqlite(&e, None))?;
        Ok(Stream {
            conn,
            sqls: HashMap::new(),
            last_used: Instant::now(),
            readonly_txn: false,
            closed: false,
            answer_limit: Limits::DEFAULT_MAX_ANSWER_BYTES,
            answer_left: Cell::new(Limits::DEFAULT_MAX_ANSWER_BYTES),
        })
    }

    /// Rolls back an open transaction and closes the connection.
    pub(super) fn close(self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        drop(self.conn);
    }

    pub(super) fn handle(
        &mut self,
        db: &Database,
        version: Version,
        request: StreamRequest,
    ) -> Result<StreamResponse, ProtoError> {
        match request {
            StreamRequest::Close => {
                self.closed = true;
                Ok(StreamResponse::Close)
            }
            StreamRequest::Execute { stmt } => {
                let result = self.execute(db, &stmt);
                self.settle();
                Ok(StreamResponse::Execute { result: result? })
            }
            StreamRequest::Batch { batch } => Ok(StreamResponse::Batch {
                result: self.batch(db, version, &batch)?,
            }),
            StreamRequest::Sequence { sql, sql_id } => {
                let text = self.sql_text(sql.as_deref(), sql_id)?.to_owned();
                let result = self.sequence(db, &text);
                self.settle();
                result.map(|()| StreamResponse::Sequence)
            }
            StreamRequest::Describe { sql, sql_id } => {
                let text = self.sql_text(sql.as_deref(), sql_id)?;
                Ok(StreamResponse::Describe {
                    result: describe(&self.conn, db, text)?,
                })
            }
            StreamRequest::StoreSql { sql_id, sql } => {
                if self.sqls.contains_key(&sql_id) {
                    return Err(proto_error(
                        "SQL_EXISTS",
                        format!("SQL text {sql_id} is already stored on this stream"),
                    ));
                }
                if self.sqls.len() >= MAX_STORED_SQL {
                    return Err(proto_error(
                        "SQL_STORE_FULL",
                        format!("a stream stores at most {MAX_STORED_SQL} SQL texts"),
                    ));
                }
                self.sqls.insert(sql_id, sql);
                Ok(StreamResponse::StoreSql)
            }
            StreamRequest::CloseSql { sql_id } => {
                self.sqls.remove(&sql_id);
                Ok(StreamResponse::CloseSql)
            }
            StreamRequest::GetAutocommit => {
                need_v3(version, "get_autocommit")?;
                Ok(StreamResponse::GetAutocommit {
                    is_autocommit: self.conn.is_autocommit(),
                })
            }
        }
    }

    /// The SQL text a request names: `sql` or a stored `sql_id`, exactly one.
    fn sql_text<'s>(
        &'s self,
        sql: Option<&'s str>,
        id: Option<i32>,
    ) -> Result<&'s str, ProtoError> {
        match (sql, id) {
            (Some(sql), None) => Ok(sql),
            (None, Some(id)) => self.sqls.get(&id).map(String::as_str).ok_or_else(|| {
                proto_error(
                    "SQL_NOT_FOUND",
                    format!("no SQL text {id} is stored on this stream"),
                )
            }),
            (Some(_), Some(_)) => Err(proto_error(
                "PROTOCOL_ERROR",
                "give either \"sql\" or \"sql_id\", not both",
            )),
            (None, None) => Err(proto_error("PROTOCOL_ERROR", "give \"sql\" or \"sql_id\"")),
        }
    }

    /// Ends the read-only mode of a `BEGIN TRANSACTION READONLY` once its transaction is over
    /// (committed, rolled back, or undone by an error).
    pub(super) fn settle(&mut self) {
        if self.readonly_txn && self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("PRAGMA query_only = 0");
            self.readonly_txn = false;
        }
    }

    /// Runs one statement.
    pub(super) fn execute(&mut self, db: &Database, stmt: &Stmt) -> Result<StmtResult, ProtoError> {
        let sql = self.sql_text(stmt.sql.as_deref(), stmt.sql_id)?;
        if is_begin_readonly(sql) {
            if !self.conn.is_autocommit() {
                return Err(proto_error(
                    "SQLITE_ERROR",
                    "cannot start a transaction within a transaction",
                ));
            }
            self.conn
                .execute_batch("BEGIN DEFERRED; PRAGMA query_only = 1")
                .map_err(|e| sql_error(&e, db))?;
            self.readonly_txn = true;
            return Ok(StmtResult {
                cols: Vec::new(),
                rows: Vec::new(),
                affected_row_count: 0,
                last_insert_rowid: Some(self.conn.last_insert_rowid().to_string()),
            });
        }
        run(
            &self.conn,
            db,
            sql,
            stmt,
            (self.answer_limit, &self.answer_left),
        )
    }

    /// Starts the answer to an HTTP request: its rows may take `limit` bytes.
    pub(super) fn budget(&mut self, limit: usize) {
        self.answer_limit = limit;
        self.answer_left.set(limit);
    }

    /// Runs every statement of `sql`, ignoring rows; stops at the first error.
    fn sequence(&mut self, db: &Database, sql: &str) -> Result<(), ProtoError> {
        let mut batch = rusqlite::Batch::new(&self.conn, sql);
        while let Some(mut stmt) = batch.next().map_err(|e| sql_error(&e, db))? {
            let mut rows = stmt.raw_query();
            while rows.next().map_err(|e| sql_error(&e, db))?.is_some() {}
        }
        Ok(())
    }
}

/// Whether `sql` is libSQL's `BEGIN TRANSACTION READONLY` (or `BEGIN READONLY`).
fn is_begin_readonly(sql: &str) -> bool {
    let words: Vec<String> = sql
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    matches!(
        words.as_slice(),
        ["BEGIN", "READONLY"]
            | ["BEGIN", "TRANSACTION", "READONLY"]
            | ["BEGIN", "READONLY", "TRANSACTION"]
    )
}
