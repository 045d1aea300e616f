//! libSQL's Hrana over HTTP, so that libSQL clients (`@libsql/client` and the other SDKs) talk
//! to a dosql database unchanged: protocol versions 2 and 3, JSON encoding, the `pipeline`
//! endpoint (both versions) and the `cursor` endpoint (version 3). Protobuf is not spoken.
//!
//! # Streams, batons, timeouts
//!
//! A Hrana stream is a SQLite connection of its own (`Database::connect`), so SQLite's locks
//! isolate streams from each other exactly as they isolate processes sharing a file: a stream
//! inside a write transaction makes other writers fail with `SQLITE_BUSY` (at once: stream
//! connections never wait for a lock, a Durable Object cannot block), and readers keep reading
//! the committed state. The database runs in rollback-journal mode (no WAL), so a stream that
//! holds a read lock inside an open transaction also makes other streams' commits fail with
//! `SQLITE_BUSY` until it ends. dosql's own `query` and `batch` requests ([`crate::Session`])
//! meet the same locks: they answer 409 `SQLITE_BUSY` instead of writing under a stream's
//! open write transaction.
//!
//! Streams are named by batons: 192 random bits (the operating system's, WASI `random_get` in
//! the wasm), base64url. Every answer carries a fresh baton and retires the one it was asked
//! with, so a baton is good for exactly one request; `null` means the stream is closed.
//!
//! HTTP has no connection whose end would tell that a client went away, so a stream left
//! without a request for the stream timeout (10 s unless configured) is expired: its
//! transaction is rolled back, its connection closed, its locks released. [`Hrana::expire`]
//! runs at the start of every request to the database (the wasm calls it before every
//! operation, Hrana or not), which is the only moment when an abandoned lock could be in
//! anyone's way. Asking with an expired baton answers `STREAM_EXPIRED`; an unknown baton
//! (never issued, already used, or issued before the Durable Object restarted and forgot its
//! streams) answers `BATON_INVALID`; both are HTTP 400 with a Hrana `Error` body.
//!
//! # libSQL extensions
//!
//! `@libsql/client` starts read transactions with `BEGIN TRANSACTION READONLY`, which is
//! libSQL syntax; here it runs as `BEGIN DEFERRED` with `PRAGMA query_only` on until the
//! transaction ends, so writes inside it fail with `SQLITE_READONLY` as on libSQL.
//!
//! # The wasm operation
//!
//! [`Hrana::handle`] takes one line of JSON, `{"version": 2|3, "endpoint": "pipeline"|"cursor",
//! "stream_timeout_ms": N}`, a newline, then the HTTP request body unchanged. The Durable
//! Object writes the line: the endpoint and the configured timeout travel with every call,
//! because the wasm instance can be re-created at any time.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, general_purpose::STANDARD};
use dosql_vfs::Database;
use rusqlite::Connection;
use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::types::{Value as SqlValue, ValueRef};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::error::{ApiError, code_name};
use crate::{Limits, Response};

/// How long a stream may go without a request before it is expired.
pub const DEFAULT_STREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// Streams open at once. Each holds a SQLite connection with its own page cache (up to 2 MiB,
/// SQLite's default; a Durable Object has 128 MiB). Clients that use a stream per request
/// close it in the same request, so only interactive transactions keep one open.
pub const MAX_STREAMS: usize = 64;

/// SQL texts one stream may store with `store_sql` (the JS client keeps at most 30).
pub const MAX_STORED_SQL: usize = 1000;

/// How long, and how many, expired batons are remembered to answer `STREAM_EXPIRED` rather
/// than `BATON_INVALID`.
const EXPIRED_MEMORY: Duration = Duration::from_secs(300);
const EXPIRED_MEMORY_LEN: usize = 1024;

/// Blobs arrive in standard base64, with or without padding.
const BASE64_IN: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Hrana protocol version, from the endpoint's path (`/v2/...`, `/v3/...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// Hrana 2 (`v2/pipeline`).
    V2,
    /// Hrana 3 (`v3/pipeline`, `v3/cursor`): adds `get_autocommit`, the `is_autocommit`
    /// condition and cursors.
    V3,
}

/// The Hrana streams of one database.
#[derive(Debug)]
pub struct Hrana {
    streams: HashMap<String, Stream>,
    /// Batons of expired streams, oldest first, with when they expired.
    expired: VecDeque<(String, Instant)>,
    timeout: Duration,
    limits: Limits,
}

impl Default for Hrana {
    fn default() -> Hrana {
        Hrana::new()
    }
}

/// The first line of [`Hrana::handle`]'s input.
#[derive(Debug, Deserialize)]
struct Header {
    version: u8,
    endpoint: Endpoint,
    #[serde(default)]
    stream_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Endpoint {
    Pipeline,
    Cursor,
}

impl Hrana {
    /// No streams, the default timeout.
    pub fn new() -> Hrana {
        Hrana {
            streams: HashMap::new(),
            expired: VecDeque::new(),
            timeout: DEFAULT_STREAM_TIMEOUT,
            limits: Limits::default(),
        }
    }

    /// Sets the limits requests run under (the answer size: rows past it fail the statement
    /// with `RESULT_TOO_LARGE`).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// How long a stream may go without a request.
    pub fn stream_timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets how long a stream may go without a request (at least 1 ms).
    pub fn set_stream_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout.max(Duration::from_millis(1));
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Closes every stream (rolling back their transactions): the database is going away.
    pub fn clear(&mut self) {
        for (_, stream) in self.streams.drain() {
            stream.close();
        }
        self.expired.clear();
    }

    /// Whether any stream is open (only then can one need expiring).
    pub fn has_streams(&self) -> bool {
        !self.streams.is_empty()
    }

    /// Expires the streams idle for the timeout or longer at `now`: rolls back their
    /// transactions and closes their connections, releasing their locks. Returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let timeout = self.timeout;
        let stale: Vec<String> = self
            .streams
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.last_used) >= timeout)
            .map(|(b, _)| b.clone())
            .collect();
        for baton in &stale {
            if let Some(stream) = self.streams.remove(baton) {
                stream.close();
            }
            self.expired.push_back((baton.clone(), now));
        }
        while self.expired.len() > EXPIRED_MEMORY_LEN
            || self
                .expired
                .front()
                .is_some_and(|(_, at)| now.saturating_duration_since(*at) > EXPIRED_MEMORY)
        {
            self.expired.pop_front();
        }
        stale.len()
    }

    /// The wasm operation: a header line, `\n`, then the request body (see the module docs).
    pub fn handle(&mut self, db: &Database, input: &[u8], now: Instant) -> Response {
        let Some(split) = input.iter().position(|&b| b == b'\n') else {
            return http_error(400, "PROTOCOL_ERROR", "missing the Hrana header line");
        };
        let header: Header = match serde_json::from_slice(&input[..split]) {
            Ok(h) => h,
            Err(e) => {
                return http_error(400, "PROTOCOL_ERROR", format!("bad Hrana header: {e}"));
            }
        };
        if let Some(ms) = header.stream_timeout_ms {
            self.set_stream_timeout(Duration::from_millis(ms));
        }
        let body = &input[split + 1..];
        let version = match header.version {
            2 => Version::V2,
            3 => Version::V3,
            v => {
                return http_error(404, "NOT_FOUND", format!("Hrana version {v} is not served"));
            }
        };
        match header.endpoint {
            Endpoint::Pipeline => self.pipeline(db, version, body, now),
            Endpoint::Cursor if version >= Version::V3 => self.cursor(db, body, now),
            Endpoint::Cursor => http_error(404, "NOT_FOUND", "cursors need Hrana 3 (v3/cursor)"),
        }
    }

    /// `POST v2/pipeline`, `POST v3/pipeline`: runs the requests on the stream the baton names
    /// (a new one for no baton) and answers `{"baton", "base_url", "results"}`.
    pub fn pipeline(
        &mut self,
        db: &Database,
        version: Version,
        body: &[u8],
        now: Instant,
    ) -> Response {
        self.expire(now);
        let req: PipelineReq<'_> = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return http_error(
                    400,
                    "PROTOCOL_ERROR",
                    format!("invalid pipeline request body: {e}"),
                );
            }
        };
        let mut stream = match self.take(db, req.baton.as_deref()) {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        stream.budget(self.limits.max_answer_bytes);
        let mut results = Vec::with_capacity(req.requests.len());
        for raw in req.requests {
            let result = if stream.closed {
                Err(proto_error(
                    "STREAM_CLOSED",
                    "the stream was closed by an earlier request of this pipeline",
                ))
            } else {
                match serde_json::from_str::<StreamRequest>(raw.get()) {
                    Ok(request) => stream.handle(db, version, request),
                    Err(e) => Err(proto_error(
                        "PROTOCOL_ERROR",
                        format!("invalid stream request: {e}"),
                    )),
                }
            };
            results.push(match result {
                Ok(response) => StreamResult::Ok { response },
                Err(error) => StreamResult::Error { error },
            });
        }
        let baton = match self.put_back(stream, now) {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        json_response(&PipelineResp {
            baton,
            base_url: None,
            results,
        })
    }

    /// `POST v3/cursor`: runs a batch on the stream and answers newline-separated JSON: the
    /// `{"baton", "base_url"}` line, then the batch's cursor entries. The whole result is
    /// built before the answer (nothing is streamed), like every other answer here.
    pub fn cursor(&mut self, db: &Database, body: &[u8], now: Instant) -> Response {
        self.expire(now);
        let req: CursorReq = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return http_error(
                    400,
                    "PROTOCOL_ERROR",
                    format!("invalid cursor request body: {e}"),
                );
            }
        };
        let mut stream = match self.take(db, req.baton.as_deref()) {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        stream.budget(self.limits.max_answer_bytes);
        let outcome = stream.batch(db, Version::V3, &req.batch);
        let baton = match self.put_back(stream, now) {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        let mut out = Vec::new();
        let mut line = |value: &dyn erased::Line| {
            value.write(&mut out);
            out.push(b'\n');
        };
        line(&CursorResp {
            baton,
            base_url: None,
        });
        match outcome {
            Ok(result) => {
                let steps = result.step_results.iter().zip(&result.step_errors);
                for (step, (ok, err)) in steps.enumerate() {
                    if let Some(r) = ok {
                        line(&CursorEntry::StepBegin {
                            step,
                            cols: &r.cols,
                        });
                        for row in &r.rows {
                            line(&CursorEntry::Row { row });
                        }
                        line(&CursorEntry::StepEnd {
                            affected_row_count: r.affected_row_count,
                            last_insert_rowid: &r.last_insert_rowid,
                        });
                    } else if let Some(error) = err {
                        line(&CursorEntry::StepError { step, error });
                    }
                }
            }
            Err(error) => line(&CursorEntry::Error { error: &error }),
        }
        Response {
            status: 200,
            body: out,
        }
    }

    /// The stream `baton` names (removed from the table while in use), or a new one.
    fn take(&mut self, db: &Database, baton: Option<&str>) -> Result<Stream, Response> {
        let Some(baton) = baton else {
            if self.streams.len() >= MAX_STREAMS {
                return Err(http_error(
                    429,
                    "TOO_MANY_STREAMS",
                    format!(
                        "{MAX_STREAMS} Hrana streams are open; close some (or let them expire) \
                         and retry"
                    ),
                ));
            }
            return Stream::open(db).map_err(|e| http_error(e.status, &e.code, e.message));
        };
        if let Some(stream) = self.streams.remove(baton) {
            return Ok(stream);
        }
        if self.expired.iter().any(|(b, _)| b == baton) {
            return Err(http_error(
                400,
                "STREAM_EXPIRED",
                format!(
                    "the stream expired after {} ms without a request; its transaction was \
                     rolled back",
                    self.timeout.as_millis()
                ),
            ));
        }
        Err(http_error(
            400,
            "BATON_INVALID",
            "unknown baton: the stream does not exist (it was closed, its baton was already \
             used, or the database restarted); any transaction it had was rolled back",
        ))
    }

    /// Files `stream` under a fresh baton, or closes it; the baton for the answer.
    fn put_back(&mut self, stream: Stream, now: Instant) -> Result<Option<String>, Response> {
        if stream.closed {
            stream.close();
            return Ok(None);
        }
        let mut bytes = [0u8; 24];
        if let Err(e) = getrandom::fill(&mut bytes) {
            stream.close();
            return Err(http_error(
                500,
                "INTERNAL",
                format!("no randomness for a baton ({e}); the stream was closed"),
            ));
        }
        let baton = URL_SAFE_NO_PAD.encode(bytes);
        let mut stream = stream;
        stream.last_used = now;
        self.streams.insert(baton.clone(), stream);
        Ok(Some(baton))
    }
}

/// One stream: its connection and stored SQL texts.
struct Stream {
    conn: Connection,
    sqls: HashMap<i32, String>,
    last_used: Instant,
    /// Inside a `BEGIN TRANSACTION READONLY`: `query_only` is on until it ends.
    readonly_txn: bool,
    /// A `close` request ran; the connection closes after the pipeline.
    closed: bool,
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
    fn open(db: &Database) -> Result<Stream, ApiError> {
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
    fn close(self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        drop(self.conn);
    }

    fn handle(
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
    fn settle(&mut self) {
        if self.readonly_txn && self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("PRAGMA query_only = 0");
            self.readonly_txn = false;
        }
    }

    /// Runs one statement.
    fn execute(&mut self, db: &Database, stmt: &Stmt) -> Result<StmtResult, ProtoError> {
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
    fn budget(&mut self, limit: usize) {
        self.answer_limit = limit;
        self.answer_left.set(limit);
    }

    /// Runs a batch: each step whose condition holds, in order.
    fn batch(
        &mut self,
        db: &Database,
        version: Version,
        batch: &Batch,
    ) -> Result<BatchResult, ProtoError> {
        for (i, step) in batch.steps.iter().enumerate() {
            if let Some(cond) = &step.condition {
                cond.check(i, version)?;
            }
        }
        let n = batch.steps.len();
        let mut result = BatchResult {
            step_results: Vec::with_capacity(n),
            step_errors: Vec::with_capacity(n),
        };
        for step in &batch.steps {
            let go = step
                .condition
                .as_ref()
                .is_none_or(|c| c.eval(&result, &self.conn));
            let (ok, err) = if go {
                let outcome = self.execute(db, &step.stmt);
                self.settle();
                match outcome {
                    Ok(r) => (Some(r), None),
                    Err(e) => (None, Some(e)),
                }
            } else {
                (None, None)
            };
            result.step_results.push(ok);
            result.step_errors.push(err);
        }
        Ok(result)
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

fn need_v3(version: Version, what: &str) -> Result<(), ProtoError> {
    if version < Version::V3 {
        return Err(proto_error(
            "NOT_SUPPORTED",
            format!("{what} needs Hrana 3 (the v3 endpoints); this is v2"),
        ));
    }
    Ok(())
}

/// Prepares, binds and runs one statement. Its rows count against `answer_left`.
fn run(
    conn: &Connection,
    db: &Database,
    sql: &str,
    stmt: &Stmt,
    (answer_limit, answer_left): (usize, &Cell<usize>),
) -> Result<StmtResult, ProtoError> {
    let mut prepared = conn.prepare(sql).map_err(|e| sql_error(&e, db))?;
    bind(&mut prepared, stmt)?;
    let cols: Vec<Col> = prepared
        .columns()
        .map(|c| Col {
            name: Some(c.name().to_owned()),
            decltype: c.decl_type().map(str::to_owned),
        })
        .collect();
    let want_rows = stmt.want_rows.unwrap_or(true);
    let changes_before = conn.total_changes();
    let mut rows = Vec::new();
    {
        let mut cursor = prepared.raw_query();
        while let Some(row) = cursor.next().map_err(|e| sql_error(&e, db))? {
            if want_rows {
                let mut values = Vec::with_capacity(cols.len());
                for i in 0..cols.len() {
                    let value = row.get_ref(i).map_err(|e| sql_error(&e, db))?;
                    let cost = json_cost(value);
                    let Some(left) = answer_left.get().checked_sub(cost) else {
                        let e = crate::too_large(answer_limit, false);
                        return Err(proto_error(&e.code, e.message));
                    };
                    answer_left.set(left);
                    values.push(OutValue::from(value));
                }
                rows.push(values);
            }
        }
    }
    // changes() keeps the count of the last INSERT/UPDATE/DELETE; report it only when this
    // statement changed something (a SELECT or DDL affects no rows).
    let changed = conn.total_changes() != changes_before;
    Ok(StmtResult {
        cols,
        rows,
        affected_row_count: if changed { conn.changes() } else { 0 },
        last_insert_rowid: Some(conn.last_insert_rowid().to_string()),
    })
}

/// Binds positional arguments to parameters 1.., then named ones (which win); every parameter
/// must get a value, and every argument must have a parameter.
fn bind(prepared: &mut rusqlite::Statement<'_>, stmt: &Stmt) -> Result<(), ProtoError> {
    let count = prepared.parameter_count();
    let args = stmt.args.as_deref().unwrap_or_default();
    let named = stmt.named_args.as_deref().unwrap_or_default();
    if args.len() > count {
        return Err(args_error(format!(
            "{} positional arguments given; the statement takes {count} parameters",
            args.len()
        )));
    }
    let mut bound = vec![false; count];
    for (i, v) in args.iter().enumerate() {
        let value = v
            .to_sql()
            .map_err(|m| args_error(format!("argument {}: {m}", i + 1)))?;
        prepared
            .raw_bind_parameter(i + 1, value)
            .map_err(|e| args_error(e.to_string()))?;
        bound[i] = true;
    }
    for arg in named {
        let index = if arg.name.starts_with([':', '@', '$', '?']) {
            prepared.parameter_index(&arg.name).ok().flatten()
        } else {
            // SQLite names include their prefix; clients may leave it out.
            [":", "@", "$"].iter().find_map(|p| {
                prepared
                    .parameter_index(&format!("{p}{}", arg.name))
                    .ok()
                    .flatten()
            })
        };
        let index = index.ok_or_else(|| {
            args_error(format!(
                "the statement has no parameter named {:?}",
                arg.name
            ))
        })?;
        let value = arg
            .value
            .to_sql()
            .map_err(|m| args_error(format!("argument {:?}: {m}", arg.name)))?;
        prepared
            .raw_bind_parameter(index, value)
            .map_err(|e| args_error(e.to_string()))?;
        bound[index - 1] = true;
    }
    if let Some(i) = bound.iter().position(|b| !b) {
        let name = prepared
            .parameter_name(i + 1)
            .map_or_else(|| format!("?{}", i + 1), str::to_owned);
        return Err(args_error(format!(
            "parameter {name} has no argument ({} positional and {} named given, the \
             statement takes {count})",
            args.len(),
            named.len()
        )));
    }
    Ok(())
}

fn describe(conn: &Connection, db: &Database, sql: &str) -> Result<DescribeResult, ProtoError> {
    let prepared = conn.prepare(sql).map_err(|e| sql_error(&e, db))?;
    Ok(DescribeResult {
        params: (1..=prepared.parameter_count())
            .map(|i| DescribeParam {
                name: prepared.parameter_name(i).map(str::to_owned),
            })
            .collect(),
        cols: prepared
            .columns()
            .map(|c| DescribeCol {
                name: c.name().to_owned(),
                decltype: c.decl_type().map(str::to_owned),
            })
            .collect(),
        is_explain: prepared.is_explain() > 0,
        is_readonly: prepared.readonly(),
    })
}

// ---- errors ----

/// Hrana's `Error`: `{"message", "code"}`.
#[derive(Debug, Serialize)]
struct ProtoError {
    message: String,
    code: String,
}

fn proto_error(code: &str, message: impl Into<String>) -> ProtoError {
    ProtoError {
        message: message.into(),
        code: code.to_owned(),
    }
}

fn args_error(message: String) -> ProtoError {
    proto_error("ARGS_INVALID", message)
}

/// A SQLite error as Hrana reports it: the primary result code's name (`SQLITE_CONSTRAINT`,
/// as libSQL's server does) and SQLite's message, with the storage layer's account of an I/O
/// failure appended.
fn sql_error(err: &rusqlite::Error, db: &Database) -> ProtoError {
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
fn http_error(status: u16, code: &str, message: impl Into<String>) -> Response {
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

fn json_response(value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => Response { status: 200, body },
        Err(e) => http_error(500, "INTERNAL", format!("encoding the answer failed: {e}")),
    }
}

// ---- requests ----

#[derive(Debug, Deserialize)]
struct PipelineReq<'a> {
    #[serde(default)]
    baton: Option<String>,
    /// Parsed one by one, so that one bad request fails alone.
    #[serde(borrow)]
    requests: Vec<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
struct CursorReq {
    #[serde(default)]
    baton: Option<String>,
    batch: Batch,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamRequest {
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
struct Stmt {
    #[serde(default)]
    sql: Option<String>,
    #[serde(default)]
    sql_id: Option<i32>,
    #[serde(default)]
    args: Option<Vec<InValue>>,
    #[serde(default)]
    named_args: Option<Vec<NamedArg>>,
    #[serde(default)]
    want_rows: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct NamedArg {
    name: String,
    value: InValue,
}

#[derive(Debug, Deserialize)]
struct Batch {
    steps: Vec<BatchStep>,
}

#[derive(Debug, Deserialize)]
struct BatchStep {
    #[serde(default)]
    condition: Option<BatchCond>,
    stmt: Stmt,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BatchCond {
    Ok { step: usize },
    Error { step: usize },
    Not { cond: Box<BatchCond> },
    And { conds: Vec<BatchCond> },
    Or { conds: Vec<BatchCond> },
    IsAutocommit,
}

impl BatchCond {
    /// A condition of step `at` may only look at steps before it.
    fn check(&self, at: usize, version: Version) -> Result<(), ProtoError> {
        match self {
            BatchCond::Ok { step } | BatchCond::Error { step } if *step >= at => Err(proto_error(
                "PROTOCOL_ERROR",
                format!(
                    "the condition of batch step {at} refers to step {step}, which does \
                         not run before it"
                ),
            )),
            BatchCond::Ok { .. } | BatchCond::Error { .. } => Ok(()),
            BatchCond::Not { cond } => cond.check(at, version),
            BatchCond::And { conds } | BatchCond::Or { conds } => {
                conds.iter().try_for_each(|c| c.check(at, version))
            }
            BatchCond::IsAutocommit => need_v3(version, "the is_autocommit condition"),
        }
    }

    fn eval(&self, done: &BatchResult, conn: &Connection) -> bool {
        match self {
            BatchCond::Ok { step } => done.step_results.get(*step).is_some_and(Option::is_some),
            BatchCond::Error { step } => done.step_errors.get(*step).is_some_and(Option::is_some),
            BatchCond::Not { cond } => !cond.eval(done, conn),
            BatchCond::And { conds } => conds.iter().all(|c| c.eval(done, conn)),
            BatchCond::Or { conds } => conds.iter().any(|c| c.eval(done, conn)),
            BatchCond::IsAutocommit => conn.is_autocommit(),
        }
    }
}

/// A value in a request: `{"type": "null" | "integer" | "float" | "text" | "blob", ...}`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum InValue {
    Null,
    Integer { value: IntegerText },
    Float { value: f64 },
    Text { value: String },
    Blob { base64: String },
}

/// An integer's `value`: a decimal string, as the protocol says; a JSON number is accepted too.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum IntegerText {
    Text(String),
    Number(i64),
}

impl InValue {
    fn to_sql(&self) -> Result<SqlValue, String> {
        Ok(match self {
            InValue::Null => SqlValue::Null,
            InValue::Integer {
                value: IntegerText::Number(i),
            } => SqlValue::Integer(*i),
            InValue::Integer {
                value: IntegerText::Text(s),
            } => SqlValue::Integer(
                s.parse::<i64>()
                    .map_err(|_| format!("{s:?} is not a 64-bit integer"))?,
            ),
            InValue::Float { value } => SqlValue::Real(*value),
            InValue::Text { value } => SqlValue::Text(value.clone()),
            InValue::Blob { base64 } => SqlValue::Blob(
                BASE64_IN
                    .decode(base64)
                    .map_err(|e| format!("bad base64 in blob: {e}"))?,
            ),
        })
    }
}

// ---- responses ----

#[derive(Debug, Serialize)]
struct PipelineResp {
    baton: Option<String>,
    base_url: Option<String>,
    results: Vec<StreamResult>,
}

#[derive(Debug, Serialize)]
struct CursorResp {
    baton: Option<String>,
    base_url: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamResult {
    Ok { response: StreamResponse },
    Error { error: ProtoError },
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamResponse {
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
struct StmtResult {
    cols: Vec<Col>,
    rows: Vec<Vec<OutValue>>,
    affected_row_count: u64,
    last_insert_rowid: Option<String>,
}

#[derive(Debug, Serialize)]
struct Col {
    name: Option<String>,
    decltype: Option<String>,
}

#[derive(Debug, Serialize)]
struct BatchResult {
    step_results: Vec<Option<StmtResult>>,
    step_errors: Vec<Option<ProtoError>>,
}

#[derive(Debug, Serialize)]
struct DescribeResult {
    params: Vec<DescribeParam>,
    cols: Vec<DescribeCol>,
    is_explain: bool,
    is_readonly: bool,
}

#[derive(Debug, Serialize)]
struct DescribeParam {
    name: Option<String>,
}

#[derive(Debug, Serialize)]
struct DescribeCol {
    name: String,
    decltype: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum CursorEntry<'a> {
    StepBegin {
        step: usize,
        cols: &'a [Col],
    },
    StepEnd {
        affected_row_count: u64,
        last_insert_rowid: &'a Option<String>,
    },
    StepError {
        step: usize,
        error: &'a ProtoError,
    },
    Row {
        row: &'a [OutValue],
    },
    Error {
        error: &'a ProtoError,
    },
}

/// Writing the lines of a cursor answer without naming each type.
mod erased {
    pub(super) trait Line {
        fn write(&self, out: &mut Vec<u8>);
    }

    impl<T: serde::Serialize> Line for T {
        fn write(&self, out: &mut Vec<u8>) {
            // Serializing these types cannot fail: no maps with non-string keys, no I/O.
            let _ = serde_json::to_writer(out, self);
        }
    }
}

/// About how many bytes `v` takes in an answer (`{"type":"text","value":"..."}`): what the
/// answer size limit counts.
fn json_cost(v: ValueRef<'_>) -> usize {
    const FRAME: usize = 32;
    FRAME
        + match v {
            ValueRef::Null | ValueRef::Integer(_) | ValueRef::Real(_) => 24,
            // Characters JSON escapes take up to six bytes.
            ValueRef::Text(t) => {
                t.len()
                    + 5 * t
                        .iter()
                        .filter(|&&b| b < 0x20 || b == b'"' || b == b'\\')
                        .count()
            }
            ValueRef::Blob(b) => b.len().div_ceil(3) * 4,
        }
}

/// A value in an answer.
#[derive(Debug)]
enum OutValue {
    Null,
    Integer(i64),
    Float(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<ValueRef<'_>> for OutValue {
    fn from(v: ValueRef<'_>) -> OutValue {
        match v {
            ValueRef::Null => OutValue::Null,
            ValueRef::Integer(i) => OutValue::Integer(i),
            ValueRef::Real(f) => OutValue::Float(f),
            ValueRef::Text(t) => OutValue::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => OutValue::Blob(b.to_vec()),
        }
    }
}

impl Serialize for OutValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        match self {
            OutValue::Null => m.serialize_entry("type", "null")?,
            OutValue::Integer(i) => {
                // A string: JSON readers that hold numbers as doubles would round 64-bit ints.
                m.serialize_entry("type", "integer")?;
                m.serialize_entry("value", &i.to_string())?;
            }
            OutValue::Float(f) if f.is_finite() => {
                m.serialize_entry("type", "float")?;
                m.serialize_entry("value", f)?;
            }
            OutValue::Float(f) => {
                // JSON has no infinity, but 1e999 is a valid JSON number that overflows to
                // ±Infinity in JavaScript's JSON.parse (serde_json would write null).
                m.serialize_entry("type", "float")?;
                let text = if *f > 0.0 { "1e999" } else { "-1e999" };
                let raw =
                    RawValue::from_string(text.to_owned()).map_err(serde::ser::Error::custom)?;
                m.serialize_entry("value", &raw)?;
            }
            OutValue::Text(t) => {
                m.serialize_entry("type", "text")?;
                m.serialize_entry("value", t)?;
            }
            OutValue::Blob(b) => {
                m.serialize_entry("type", "blob")?;
                m.serialize_entry("base64", &STANDARD.encode(b))?;
            }
        }
        m.end()
    }
}
