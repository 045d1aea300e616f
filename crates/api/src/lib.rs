//! dosql's JSON API over one database: what the Durable Object serves over HTTP, and what the
//! CLI uses on a local store. Bodies in, `(status, JSON body)` out; no HTTP here.
//!
//! - query: `{"sql": "...", "params": [..] | {..}}` runs every statement in `sql` in order
//!   (parameters bind to the statements that take them) and answers
//!   `{"columns", "rows", "rows_affected", "last_insert_rowid", "meta"}` for the last
//!   statement that returned columns (or the last one).
//! - batch: `[{"sql", "params"}, ...]` runs all in one transaction, all or nothing, and answers
//!   `{"results": [...], "meta"}`.
//! - stats: page size, page count, commit counter and the VFS counters.
//!
//! Values travel as described in [`value`]. [`hrana`] speaks libSQL's Hrana over HTTP to the
//! same database, for libSQL clients.

#![forbid(unsafe_code)]

pub mod error;
pub mod hrana;
pub mod value;

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;
use std::time::Instant;

use dosql_pagestore::PageStore;
use dosql_vfs::{Database, Stats, VfsConfig};
use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::{CachedStatement, Connection};
use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json, json};

pub use error::ApiError;

/// An answer: HTTP status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// 200, or the error's status.
    pub status: u16,
    /// UTF-8 JSON.
    pub body: Vec<u8>,
}

impl Response {
    fn ok(body: &Json) -> Response {
        Response {
            status: 200,
            body: body.to_string().into_bytes(),
        }
    }

    fn ok_bytes(body: Vec<u8>) -> Response {
        Response { status: 200, body }
    }

    fn error(err: &ApiError) -> Response {
        Response {
            status: err.status,
            body: err.body().to_string().into_bytes(),
        }
    }

    /// The body as JSON (for tests and the CLI).
    pub fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap_or(Json::Null)
    }
}

/// Parameters of one statement: positional or named.
#[derive(Debug)]
enum Params {
    Positional(Vec<Json>),
    Named(Map<String, Json>),
}

/// An array or an object, read directly (an untagged enum would buffer every value first).
impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Params, D::Error> {
        struct ParamsVisitor;
        impl<'de> Visitor<'de> for ParamsVisitor {
            type Value = Params;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array (positional parameters) or an object (named parameters)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Params, A::Error> {
                let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(v) = seq.next_element()? {
                    values.push(v);
                }
                Ok(Params::Positional(values))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
                let mut values = Map::new();
                while let Some((k, v)) = map.next_entry()? {
                    values.insert(k, v);
                }
                Ok(Params::Named(values))
            }
        }
        d.deserialize_any(ParamsVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Statement<'a> {
    /// Borrowed from the request body unless it holds escapes.
    #[serde(borrow)]
    sql: Cow<'a, str>,
    #[serde(default)]
    params: Option<Params>,
    /// Paging (query only): rows of each statement to skip before answering.
    #[serde(default)]
    row_offset: Option<u64>,
    /// Paging (query only): at most this many rows in the answer; fewer when the answer would
    /// pass the answer size limit. `next_offset` says where the next page starts.
    #[serde(default)]
    max_rows: Option<u64>,
    /// Paging: answer only if the database is still at this txid (409 TXID_CHANGED if not),
    /// so that the pages of one result come from one state of the database.
    #[serde(default)]
    at_txid: Option<u64>,
}

impl Statement<'_> {
    fn paged(&self) -> bool {
        self.row_offset.is_some() || self.max_rows.is_some() || self.at_txid.is_some()
    }
}

/// How many bytes of rows an answer may hold ([`Limits::max_answer_bytes`]), and how many it
/// holds so far: checked while rows are stepped, so that a huge result is refused (or cut
/// into pages) before its memory is spent.
#[derive(Debug, Clone, Copy)]
struct AnswerBudget {
    limit: usize,
    used: usize,
}

/// Where one statement's rows start and stop (paging).
#[derive(Debug, Clone, Copy, Default)]
struct RowWindow {
    offset: u64,
    max: Option<u64>,
}

/// The outcome of one statement (or the last of several). Rows are written as JSON while
/// they are stepped: no value tree per cell, and no map per outcome (a 10,000-statement
/// batch made 10,000 of them, most of a fresh instance's time in malloc).
#[derive(Debug, Default)]
struct Outcome {
    /// The column names as the elements of a JSON array: `"id","v"`.
    columns: Vec<u8>,
    /// The rows as the elements of a JSON array: `[1,"a"],[2,"b"]`.
    rows: Vec<u8>,
    rows_affected: u64,
    last_insert_rowid: i64,
    /// Paging: where the next page starts, when rows remain.
    next_offset: Option<u64>,
}

impl Outcome {
    /// Writes the outcome as a JSON object with `meta` (its JSON) and, for a paged answer,
    /// `next_offset` and `txid` among its fields. Keys in sorted order, as serde_json writes
    /// a map, so answers keep one shape.
    fn write_json(&self, out: &mut Vec<u8>, meta: Option<&[u8]>, page_txid: Option<u64>) {
        out.extend_from_slice(b"{\"columns\":[");
        out.extend_from_slice(&self.columns);
        out.extend_from_slice(b"],\"last_insert_rowid\":");
        value::write_i64(out, self.last_insert_rowid);
        if let Some(json) = meta {
            out.extend_from_slice(b",\"meta\":");
            out.extend_from_slice(json);
        }
        if page_txid.is_some() {
            out.extend_from_slice(b",\"next_offset\":");
            match self.next_offset {
                Some(n) => write_u64(out, n),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(b",\"rows\":[");
        out.extend_from_slice(&self.rows);
        out.extend_from_slice(b"],\"rows_affected\":");
        value::write_i64(out, i64::try_from(self.rows_affected).unwrap_or(i64::MAX));
        if let Some(txid) = page_txid {
            out.extend_from_slice(b",\"txid\":");
            write_u64(out, txid);
        }
        out.push(b'}');
    }
}

/// Limits on what one request may make the database answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of rows one answer may carry (JSON as written). Over it, a query answers 400
    /// `RESULT_TOO_LARGE` while its rows are stepped; a paged query stops its page there.
    pub max_answer_bytes: usize,
}

impl Limits {
    /// 8 MiB: an answer is built whole in the wasm's memory and copied once more to the
    /// Worker, and a Durable Object's isolate has 128 MB for every object it hosts.
    pub const DEFAULT_MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_answer_bytes: Limits::DEFAULT_MAX_ANSWER_BYTES,
        }
    }
}

/// The error for an answer over `limit` bytes.
pub(crate) fn too_large(limit: usize, paging_hint: bool) -> ApiError {
    let hint = if paging_hint {
        "; read it in pages (\"max_rows\", \"row_offset\" and \"at_txid\"; see the README) or \
         select less"
    } else {
        "; select less, or read it in pages through /query"
    };
    ApiError::new(
        400,
        "RESULT_TOO_LARGE",
        format!("the answer would be over {limit} bytes{hint}"),
    )
}

/// What a query or a batch answers, before `meta` joins it.
enum Answer {
    /// The outcome, and the txid it was read at when the query was paged.
    Query(Outcome, Option<u64>),
    /// The outcomes as the elements of a JSON array, written as each statement finished.
    Batch(Vec<u8>),
}

/// The single statement a request ran last, prepared, and its SQL: the next statement of a
/// batch with the same text runs it again, without the statement cache's hashing and LRU
/// bookkeeping (batches repeating one statement are the common case; bench/README.md).
type Held<'s, 'c> = Option<(&'s str, CachedStatement<'c>)>;

/// Milliseconds on some clock: what `meta.duration_ms` is measured with (the difference of two
/// reads; a clock that steps back yields 0).
pub type ClockMs = fn() -> f64;

/// [`ClockMs`] from `std::time::Instant`: milliseconds since its first call.
pub fn monotonic_ms() -> f64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1000.0
}

/// One open database and its connection.
#[derive(Debug)]
pub struct Session {
    db: Database,
    conn: Connection,
    clock: ClockMs,
    limits: Limits,
}

impl Session {
    /// Attaches `store` under `name` and opens a connection.
    pub fn open(name: &str, store: impl PageStore, config: VfsConfig) -> Result<Session, ApiError> {
        let db = Database::attach(name, store, config)
            .map_err(|e| ApiError::new(500, "SQLITE_CANTOPEN", e.to_string()))?;
        let conn = db
            .connect()
            .map_err(|e| ApiError::from_sqlite(&e, db.take_last_error()))?;
        Ok(Session {
            db,
            conn,
            clock: monotonic_ms,
            limits: Limits::default(),
        })
    }

    /// The limits requests run under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Sets the limits requests run under.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Measures `meta.duration_ms` with `clock` instead of [`monotonic_ms`]. In wasm, `Instant`
    /// is a WASI call with a 64-bit argument, which costs the host a BigInt on every read; the
    /// Durable Object hands in a cheaper clock.
    pub fn set_clock(&mut self, clock: ClockMs) {
        self.clock = clock;
    }

    /// The attached database (stats, head).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The connection, for callers that speak SQL directly (CLI, tests).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Handles a query request body.
    pub fn query(&mut self, body: &[u8]) -> Response {
        self.timed(|s| {
            let stmt: Statement<'_> = parse(body)?;
            let page_txid = if stmt.paged() {
                let txid = s.db.head().txid;
                if let Some(at) = stmt.at_txid.filter(|&at| at != txid) {
                    return Err(ApiError::new(
                        409,
                        "TXID_CHANGED",
                        format!(
                            "the database is at txid {txid}, not {at}: it changed since the \
                             first page; start again from row_offset 0"
                        ),
                    ));
                }
                Some(txid)
            } else {
                None
            };
            let mut budget = AnswerBudget {
                limit: s.limits.max_answer_bytes,
                used: 0,
            };
            // Several statements run as one transaction, all or nothing, unless they manage
            // transactions themselves or cannot run inside one (see `one_transaction`).
            let wrap = s.conn.is_autocommit() && one_transaction(&stmt.sql);
            if wrap {
                s.conn.execute_batch("BEGIN").map_err(|e| s.sql_error(&e))?;
            }
            let mut outcome = s.run(&stmt, &mut None, &mut budget);
            if wrap && !s.conn.is_autocommit() {
                let end = if outcome.is_ok() {
                    "COMMIT"
                } else {
                    "ROLLBACK"
                };
                if let Err(e) = s.conn.execute_batch(end) {
                    let _ = s.conn.execute_batch("ROLLBACK");
                    outcome = Err(s.sql_error(&e));
                }
            }
            if !s.conn.is_autocommit() {
                // Each request stands alone: a transaction it leaves open would capture the
                // next request's statements. Roll it back and say so.
                let _ = s.conn.execute_batch("ROLLBACK");
                outcome?;
                return Err(ApiError::bad_request(
                    "the statements left a transaction open; it was rolled back (use /batch, \
                     or BEGIN ... COMMIT within one request)",
                ));
            }
            Ok(Answer::Query(outcome?, page_txid))
        })
    }

    /// Handles a batch request body: every statement in one transaction.
    pub fn batch(&mut self, body: &[u8]) -> Response {
        self.timed(|s| {
            let stmts: Vec<Statement<'_>> = parse(body)?;
            if !s.conn.is_autocommit() {
                return Err(ApiError::new(
                    500,
                    "INTERNAL",
                    "a transaction is already open",
                ));
            }
            if let Some(i) = stmts.iter().position(Statement::paged) {
                let mut e = ApiError::bad_request(
                    "paging (\"max_rows\", \"row_offset\", \"at_txid\") is for /query, not \
                     /batch",
                );
                e.statement = Some(i);
                return Err(e);
            }
            // A statement that ended the batch's transaction would commit (or drop) what ran
            // before it, and the rest would run outside it: all or nothing would not hold.
            for (i, stmt) in stmts.iter().enumerate() {
                if statement_heads(&stmt.sql)
                    .iter()
                    .any(|h| ends_transaction(h))
                {
                    let mut e = ApiError::bad_request(
                        "a batch is one transaction: its statements may not end it (COMMIT, \
                         END, ROLLBACK; ROLLBACK TO a savepoint is fine)",
                    );
                    e.statement = Some(i);
                    return Err(e);
                }
            }
            s.conn.execute_batch("BEGIN").map_err(|e| s.sql_error(&e))?;
            let mut results = Vec::with_capacity(stmts.len() * 80);
            let mut held = None;
            let mut budget = AnswerBudget {
                limit: s.limits.max_answer_bytes,
                used: 0,
            };
            for (i, stmt) in stmts.iter().enumerate() {
                let outcome = s.run(stmt, &mut held, &mut budget).and_then(|o| {
                    if s.conn.is_autocommit() {
                        // Ended in a way the check above does not know (SQLite rolls a
                        // transaction back by itself after some errors): nothing after it
                        // may run outside the transaction.
                        return Err(ApiError::bad_request(
                            "the batch's transaction ended at this statement; the statements \
                             after it did not run",
                        ));
                    }
                    Ok(o)
                });
                match outcome {
                    Ok(outcome) => {
                        if i > 0 {
                            results.push(b',');
                        }
                        outcome.write_json(&mut results, None, None);
                    }
                    Err(mut e) => {
                        drop(held);
                        if !s.conn.is_autocommit() {
                            let _ = s.conn.execute_batch("ROLLBACK");
                        }
                        e.statement = Some(i);
                        return Err(e);
                    }
                }
            }
            drop(held);
            if let Err(e) = s.conn.execute_batch("COMMIT") {
                let err = s.sql_error(&e);
                if !s.conn.is_autocommit() {
                    let _ = s.conn.execute_batch("ROLLBACK");
                }
                return Err(err);
            }
            Ok(Answer::Batch(results))
        })
    }

    /// The database's shape and counters.
    pub fn stats(&self) -> Response {
        let head = self.db.head();
        let s = self.db.stats();
        Response::ok(&json!({
            "page_size": self.db.page_size().get(),
            "page_count": head.page_count,
            "txid": head.txid,
            "vfs": stats_json(&s),
            "sqlite_heap_bytes": dosql_vfs::heap_used(),
        }))
    }

    /// Runs `f`, adding `meta` (duration and page traffic) to a successful answer.
    fn timed(&mut self, f: impl FnOnce(&mut Session) -> Result<Answer, ApiError>) -> Response {
        let started = (self.clock)();
        let before = self.db.stats();
        let answer = match f(self) {
            Ok(answer) => answer,
            Err(e) => return Response::error(&e),
        };
        let after = self.db.stats();
        let duration_ms = ((self.clock)() - started).max(0.0);
        let mut meta = Vec::with_capacity(128);
        write_meta(&mut meta, duration_ms, &before, &after);
        let mut out = Vec::new();
        match answer {
            Answer::Query(outcome, page_txid) => {
                out.reserve(outcome.rows.len() + 256);
                outcome.write_json(&mut out, Some(&meta), page_txid);
            }
            Answer::Batch(results) => {
                out.reserve(results.len() + 256);
                out.extend_from_slice(b"{\"meta\":");
                out.extend_from_slice(&meta);
                out.extend_from_slice(b",\"results\":[");
                out.extend_from_slice(&results);
                out.extend_from_slice(b"]}");
            }
        }
        Response::ok_bytes(out)
    }

    fn sql_error(&self, err: &rusqlite::Error) -> ApiError {
        ApiError::from_sqlite(err, self.db.take_last_error())
    }

    /// Runs every statement of `stmt.sql`, binding parameters to those that take them.
    fn run<'s, 'c>(
        &'c self,
        stmt: &'s Statement<'_>,
        held: &mut Held<'s, 'c>,
        budget: &mut AnswerBudget,
    ) -> Result<Outcome, ApiError> {
        let window = stmt.paged().then(|| RowWindow {
            offset: stmt.row_offset.unwrap_or(0),
            max: stmt.max_rows,
        });
        let mut last = Outcome::default();
        let mut bound = false;
        let mut any = false;
        // Most requests hold one statement: prepare it through the connection's statement
        // cache, so a batch repeating one statement, or a client repeating a query, parses it
        // once. Several statements go through SQLite's statement-by-statement parse instead.
        // (A `;` before the end may separate statements or sit in a literal: either way the
        // general path is right, and rusqlite's own check would compile the rest too early.)
        let body = stmt
            .sql
            .trim_end_matches(|c: char| c == ';' || c.is_whitespace());
        if !body.contains(';') {
            match held {
                Some((sql, prepared)) if *sql == body => prepared.clear_bindings(),
                _ => {
                    // The statement held before goes back to the cache.
                    *held = None;
                    match self.conn.prepare_cached(body) {
                        Ok(prepared) => *held = Some((body, prepared)),
                        Err(rusqlite::Error::Empty) => {}
                        Err(e) => return Err(self.sql_error(&e)),
                    }
                }
            }
            if let Some((_, prepared)) = held {
                any = true;
                let params = stmt.params.as_ref();
                // Refused before it runs: a rejected request changes nothing. (Several
                // statements are checked after they ran, inside the request's transaction.)
                if prepared.parameter_count() == 0 && params.is_some_and(|p| !p.is_empty()) {
                    return Err(no_parameters());
                }
                self.step(prepared, params, &mut bound, &mut last, budget, window)?;
            }
        } else {
            let mut batch = rusqlite::Batch::new(&self.conn, &stmt.sql);
            while let Some(mut prepared) = batch.next().map_err(|e| self.sql_error(&e))? {
                any = true;
                let params = stmt.params.as_ref();
                self.step(&mut prepared, params, &mut bound, &mut last, budget, window)?;
            }
        }
        if !any {
            return Err(ApiError::bad_request("no SQL statement in \"sql\""));
        }
        if !bound && stmt.params.as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(no_parameters());
        }
        Ok(last)
    }

    /// Binds (if the statement takes parameters), runs one statement to completion (or, when
    /// paged, to the end of its page) and folds its outcome into `last`. Its rows count
    /// against `budget` as they are written.
    fn step(
        &self,
        prepared: &mut rusqlite::Statement<'_>,
        params: Option<&Params>,
        bound: &mut bool,
        last: &mut Outcome,
        budget: &mut AnswerBudget,
        window: Option<RowWindow>,
    ) -> Result<(), ApiError> {
        if window.is_some() && !prepared.readonly() {
            return Err(ApiError::bad_request(
                "paging (\"max_rows\", \"row_offset\", \"at_txid\") needs read-only \
                 statements: each page runs the query again",
            ));
        }
        if prepared.parameter_count() > 0 {
            if *bound {
                return Err(ApiError::bad_request(
                    "parameters can be given to only one statement of a request",
                ));
            }
            bind(prepared, params)?;
            *bound = true;
        }
        let changes_before = self.conn.total_changes();
        let n = prepared.column_count();
        let mut columns = Vec::new();
        for i in 0..n {
            if i > 0 {
                columns.push(b',');
            }
            value::write_str(
                &mut columns,
                prepared.column_name(i).map_err(|e| self.sql_error(&e))?,
            );
        }
        let mut rows = Vec::new();
        let mut next_offset = None;
        {
            let mut cursor = prepared.raw_query();
            let mut seen = 0u64;
            let mut taken = 0u64;
            while let Some(row) = cursor.next().map_err(|e| self.sql_error(&e))? {
                seen += 1;
                let Some(w) = window else {
                    self.write_row(&mut rows, row, n, budget)?;
                    continue;
                };
                if seen <= w.offset {
                    continue;
                }
                if w.max.is_some_and(|max| taken >= max) {
                    next_offset = Some(seen - 1);
                    break;
                }
                match self.write_row(&mut rows, row, n, budget) {
                    Ok(()) => taken += 1,
                    // The page is full: it ends before this row (write_row left the rows as
                    // they were), unless this row alone is too large for any page.
                    Err(e) if e.code == "RESULT_TOO_LARGE" && taken > 0 => {
                        next_offset = Some(seen - 1);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let changed = self.conn.total_changes() > changes_before;
        let outcome = Outcome {
            columns,
            rows,
            rows_affected: if changed { self.conn.changes() } else { 0 },
            last_insert_rowid: self.conn.last_insert_rowid(),
            next_offset,
        };
        // A statement without result columns does not replace a previous result set.
        if n > 0 || last.columns.is_empty() {
            *last = outcome;
        } else {
            last.rows_affected = outcome.rows_affected;
            last.last_insert_rowid = outcome.last_insert_rowid;
        }
        Ok(())
    }
}

impl Session {
    /// Writes one row (after a comma unless it is the first) as a JSON array, counting its
    /// bytes against `budget` value by value, so that no answer grows past the limit.
    fn write_row(
        &self,
        rows: &mut Vec<u8>,
        row: &rusqlite::Row<'_>,
        n: usize,
        budget: &mut AnswerBudget,
    ) -> Result<(), ApiError> {
        let start = rows.len();
        if start > 0 {
            rows.push(b',');
        }
        rows.push(b'[');
        for i in 0..n {
            if i > 0 {
                rows.push(b',');
            }
            value::write_json(rows, row.get_ref(i).map_err(|e| self.sql_error(&e))?);
            if budget.used + (rows.len() - start) > budget.limit {
                rows.truncate(start);
                return Err(too_large(budget.limit, true));
            }
        }
        rows.push(b']');
        budget.used += rows.len() - start;
        Ok(())
    }
}

impl Params {
    fn is_empty(&self) -> bool {
        match self {
            Params::Positional(v) => v.is_empty(),
            Params::Named(m) => m.is_empty(),
        }
    }
}

/// The first words (up to four, upper-cased) of each statement of `sql`: `sql` split at the
/// semicolons outside string literals, quoted names and comments. (A trigger's body splits
/// too: its inner statements show as statements, and its `END` makes the callers say no,
/// which is the safe answer.)
fn statement_heads(sql: &str) -> Vec<Vec<String>> {
    const WORDS: usize = 4;
    let b = sql.as_bytes();
    let mut heads = Vec::new();
    let mut words: Vec<String> = Vec::new();
    // Something that is not a word (a literal, an operator) was seen in this statement: the
    // words after it are not at its head.
    let mut past_head = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' | b'"' | b'`' | b'[' => {
                let close = if c == b'[' { b']' } else { c };
                i += 1;
                while i < b.len() && b[i] != close {
                    i += 1;
                }
                past_head = true;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 1;
            }
            b';' => {
                if !words.is_empty() || past_head {
                    heads.push(std::mem::take(&mut words));
                }
                past_head = false;
            }
            c if c.is_ascii_whitespace() => {}
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                if !past_head && words.len() < WORDS {
                    words.push(sql[start..i].to_ascii_uppercase());
                }
                continue;
            }
            _ => past_head = true,
        }
        i += 1;
    }
    if !words.is_empty() || past_head {
        heads.push(words);
    }
    heads
}

/// Whether a statement with these first words ends the transaction it runs in: `COMMIT`,
/// `END`, and `ROLLBACK` without `TO` (which only rolls back to a savepoint).
fn ends_transaction(head: &[String]) -> bool {
    match head.first().map(String::as_str) {
        Some("COMMIT" | "END") => true,
        Some("ROLLBACK") => !head.iter().any(|w| w == "TO"),
        _ => false,
    }
}

/// Whether the statements of a /query with several of them run as one transaction: yes,
/// unless one of them manages transactions itself (`BEGIN`, `COMMIT`, `END`, `ROLLBACK`,
/// `SAVEPOINT`, `RELEASE`) or does not work inside one (`VACUUM`, `ATTACH`, `DETACH`, and
/// `PRAGMA`, some of which are silently ignored inside a transaction). Those requests run
/// statement by statement, as SQLite runs them.
fn one_transaction(sql: &str) -> bool {
    const OWN: &[&str] = &[
        "BEGIN",
        "COMMIT",
        "END",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
        "VACUUM",
        "ATTACH",
        "DETACH",
        "PRAGMA",
    ];
    let heads = statement_heads(sql);
    heads.len() > 1
        && !heads
            .iter()
            .any(|h| h.first().is_some_and(|w| OWN.contains(&w.as_str())))
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

fn no_parameters() -> ApiError {
    ApiError::new(
        400,
        "SQLITE_RANGE",
        "parameters given, but no statement takes any",
    )
}

fn param_error(msg: String) -> ApiError {
    ApiError::new(400, "SQLITE_MISMATCH", msg)
}

/// Binds positional or named parameters; counts and names must match the statement's.
fn bind(stmt: &mut rusqlite::Statement<'_>, params: Option<&Params>) -> Result<(), ApiError> {
    let wanted = stmt.parameter_count();
    let sql_err = |e: rusqlite::Error| ApiError::from_sqlite(&e, None);
    match params {
        None if wanted > 0 => Err(ApiError::new(
            400,
            "SQLITE_RANGE",
            format!("the statement takes {wanted} parameters; none given"),
        )),
        None => Ok(()),
        Some(Params::Positional(values)) => {
            if values.len() != wanted {
                return Err(ApiError::new(
                    400,
                    "SQLITE_RANGE",
                    format!(
                        "{} parameters given; the statement takes {wanted}",
                        values.len()
                    ),
                ));
            }
            for (i, v) in values.iter().enumerate() {
                let v = value::from_json(v)
                    .map_err(|m| param_error(format!("parameter {}: {m}", i + 1)))?;
                stmt.raw_bind_parameter(i + 1, v).map_err(sql_err)?;
            }
            Ok(())
        }
        Some(Params::Named(map)) => {
            if map.len() != wanted {
                return Err(ApiError::new(
                    400,
                    "SQLITE_RANGE",
                    format!(
                        "{} named parameters given; the statement takes {wanted}",
                        map.len()
                    ),
                ));
            }
            for (name, v) in map {
                // Accept names with or without their prefix (:name, @name, $name).
                let index = if name.starts_with([':', '@', '$']) {
                    stmt.parameter_index(name).map_err(sql_err)?
                } else {
                    [":", "@", "$"]
                        .iter()
                        .find_map(|p| stmt.parameter_index(&format!("{p}{name}")).ok().flatten())
                };
                let index = index.ok_or_else(|| {
                    ApiError::new(
                        400,
                        "SQLITE_RANGE",
                        format!("the statement has no parameter named {name:?}"),
                    )
                })?;
                let v = value::from_json(v)
                    .map_err(|m| param_error(format!("parameter {name}: {m}")))?;
                stmt.raw_bind_parameter(index, v).map_err(sql_err)?;
            }
            Ok(())
        }
    }
}

fn stats_json(s: &Stats) -> Json {
    json!({
        "cache_hits": s.cache_hits,
        "cache_misses": s.cache_misses,
        "store_reads": s.store_reads,
        "pages_read": s.pages_read,
        "pages_written": s.pages_written,
        "commits": s.commits,
        "failed_commits": s.failed_commits,
        "discarded_transactions": s.discarded_transactions,
        "cached_pages": s.cached_pages,
    })
}

/// Appends an answer's `meta` object: the keys in sorted order, as serde_json writes a map.
fn write_meta(out: &mut Vec<u8>, duration_ms: f64, before: &Stats, after: &Stats) {
    let counters = [
        (
            "cache_hits",
            after.cache_hits.saturating_sub(before.cache_hits),
        ),
        (
            "cache_misses",
            after.cache_misses.saturating_sub(before.cache_misses),
        ),
    ];
    let pages = [
        (
            "pages_read",
            after.pages_read.saturating_sub(before.pages_read),
        ),
        (
            "pages_written",
            after.pages_written.saturating_sub(before.pages_written),
        ),
    ];
    out.push(b'{');
    for (key, n) in counters {
        write_key(out, key);
        write_u64(out, n);
        out.push(b',');
    }
    write_key(out, "duration_ms");
    // A finite, non-negative f64, written as serde_json writes it (14.0, 0.25, ...).
    let _ = serde_json::to_writer(&mut *out, &duration_ms);
    for (key, n) in pages {
        out.push(b',');
        write_key(out, key);
        write_u64(out, n);
    }
    out.push(b'}');
}

fn write_key(out: &mut Vec<u8>, key: &str) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

fn write_u64(out: &mut Vec<u8>, n: u64) {
    let _ = serde_json::to_writer(&mut *out, &n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_is_written_as_serde_json_writes_the_same_map() {
        let before = Stats {
            cache_hits: 3,
            pages_read: 1,
            ..Stats::default()
        };
        let after = Stats {
            cache_hits: 10,
            cache_misses: 2,
            pages_read: 5,
            pages_written: u64::MAX,
            ..Stats::default()
        };
        for duration_ms in [0.0, 14.0, 0.125, 1e-7, 123_456.789] {
            let mut out = Vec::new();
            write_meta(&mut out, duration_ms, &before, &after);
            let expected = json!({
                "duration_ms": duration_ms,
                "pages_read": 4,
                "pages_written": u64::MAX,
                "cache_hits": 7,
                "cache_misses": 2,
            })
            .to_string();
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    #[test]
    fn statements_split_outside_literals_and_comments() {
        assert_eq!(
            statement_heads("insert into t values ('a;b'); -- x;\n select \"c;\" /* ; */ ;; "),
            vec![vec!["INSERT", "INTO", "T", "VALUES"], vec!["SELECT"]]
        );
        assert_eq!(statement_heads("  ;  "), Vec::<Vec<String>>::new());
        let ends = |sql: &str| statement_heads(sql).iter().any(|h| ends_transaction(h));
        assert!(ends("insert into t values (1); commit"));
        assert!(ends("rollback transaction"));
        assert!(!ends("rollback transaction to savepoint s"));
        assert!(!ends("ROLLBACK TO s; RELEASE s"));
        assert!(!ends("select 'commit'"));
        assert!(one_transaction(
            "CREATE TABLE t(x); INSERT INTO t VALUES (1)"
        ));
        assert!(!one_transaction("INSERT INTO t VALUES (1)"));
        assert!(!one_transaction("BEGIN; INSERT INTO t VALUES (1); COMMIT"));
        assert!(!one_transaction(
            "INSERT INTO t VALUES (1); pragma foreign_keys = 1"
        ));
        assert!(!one_transaction(
            "CREATE TRIGGER r AFTER INSERT ON t BEGIN SELECT 1; END; INSERT INTO t VALUES (1)"
        ));
    }

    #[test]
    fn duration_comes_from_the_session_clock() {
        use std::sync::atomic::{AtomicU32, Ordering};
        static TICKS: AtomicU32 = AtomicU32::new(0);
        // Each read advances 2.5 ms, so a request (two reads) takes exactly 2.5 ms.
        fn ticking() -> f64 {
            f64::from(TICKS.fetch_add(1, Ordering::Relaxed)) * 2.5
        }
        let mut s = Session::open(
            "clock-test",
            dosql_pagestore::MemStore::new(dosql_pagestore::PageSize::new(4096).unwrap()),
            VfsConfig::default(),
        )
        .unwrap();
        s.set_clock(ticking);
        let r = s.query(br#"{"sql":"SELECT 1"}"#);
        let body = String::from_utf8(r.body).unwrap();
        assert!(body.contains("\"duration_ms\":2.5,"), "{body}");
    }
}
