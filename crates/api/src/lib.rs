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

use std::time::Instant;

use dosql_pagestore::PageStore;
use dosql_vfs::{Database, Stats, VfsConfig};
use rusqlite::Connection;
use rusqlite::fallible_iterator::FallibleIterator;
use serde::Deserialize;
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
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Params {
    Positional(Vec<Json>),
    Named(Map<String, Json>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Statement {
    sql: String,
    #[serde(default)]
    params: Option<Params>,
}

/// The outcome of one statement (or the last of several).
#[derive(Debug, Default)]
struct Outcome {
    columns: Vec<String>,
    rows: Vec<Vec<Json>>,
    rows_affected: u64,
    last_insert_rowid: i64,
}

impl Outcome {
    fn to_json(&self) -> Json {
        json!({
            "columns": self.columns,
            "rows": self.rows,
            "rows_affected": self.rows_affected,
            "last_insert_rowid": self.last_insert_rowid,
        })
    }
}

/// One open database and its connection.
#[derive(Debug)]
pub struct Session {
    db: Database,
    conn: Connection,
}

impl Session {
    /// Attaches `store` under `name` and opens a connection.
    pub fn open(name: &str, store: impl PageStore, config: VfsConfig) -> Result<Session, ApiError> {
        let db = Database::attach(name, store, config)
            .map_err(|e| ApiError::new(500, "SQLITE_CANTOPEN", e.to_string()))?;
        let conn = db
            .connect()
            .map_err(|e| ApiError::from_sqlite(&e, db.take_last_error()))?;
        Ok(Session { db, conn })
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
            let stmt: Statement = parse(body)?;
            let outcome = s.run(&stmt);
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
            Ok(outcome?.to_json())
        })
    }

    /// Handles a batch request body: every statement in one transaction.
    pub fn batch(&mut self, body: &[u8]) -> Response {
        self.timed(|s| {
            let stmts: Vec<Statement> = parse(body)?;
            if !s.conn.is_autocommit() {
                return Err(ApiError::new(
                    500,
                    "INTERNAL",
                    "a transaction is already open",
                ));
            }
            s.conn.execute_batch("BEGIN").map_err(|e| s.sql_error(&e))?;
            let mut results = Vec::with_capacity(stmts.len());
            for (i, stmt) in stmts.iter().enumerate() {
                match s.run(stmt) {
                    Ok(outcome) => results.push(outcome.to_json()),
                    Err(mut e) => {
                        if !s.conn.is_autocommit() {
                            let _ = s.conn.execute_batch("ROLLBACK");
                        }
                        e.statement = Some(i);
                        return Err(e);
                    }
                }
            }
            if let Err(e) = s.conn.execute_batch("COMMIT") {
                let err = s.sql_error(&e);
                if !s.conn.is_autocommit() {
                    let _ = s.conn.execute_batch("ROLLBACK");
                }
                return Err(err);
            }
            Ok(json!({ "results": results }))
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
        }))
    }

    /// Runs `f`, adding `meta` (duration and page traffic) to a successful answer.
    fn timed(&mut self, f: impl FnOnce(&mut Session) -> Result<Json, ApiError>) -> Response {
        let started = Instant::now();
        let before = self.db.stats();
        match f(self) {
            Ok(mut body) => {
                let after = self.db.stats();
                body["meta"] = json!({
                    "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
                    "pages_read": after.pages_read.saturating_sub(before.pages_read),
                    "pages_written": after.pages_written.saturating_sub(before.pages_written),
                    "cache_hits": after.cache_hits.saturating_sub(before.cache_hits),
                    "cache_misses": after.cache_misses.saturating_sub(before.cache_misses),
                });
                Response::ok(&body)
            }
            Err(e) => Response::error(&e),
        }
    }

    fn sql_error(&self, err: &rusqlite::Error) -> ApiError {
        ApiError::from_sqlite(err, self.db.take_last_error())
    }

    /// Runs every statement of `stmt.sql`, binding parameters to those that take them.
    fn run(&self, stmt: &Statement) -> Result<Outcome, ApiError> {
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
            match self.conn.prepare_cached(body) {
                Ok(mut prepared) => {
                    any = true;
                    self.step(&mut prepared, stmt.params.as_ref(), &mut bound, &mut last)?;
                }
                Err(rusqlite::Error::Empty) => {}
                Err(e) => return Err(self.sql_error(&e)),
            }
        } else {
            let mut batch = rusqlite::Batch::new(&self.conn, &stmt.sql);
            while let Some(mut prepared) = batch.next().map_err(|e| self.sql_error(&e))? {
                any = true;
                self.step(&mut prepared, stmt.params.as_ref(), &mut bound, &mut last)?;
            }
        }
        if !any {
            return Err(ApiError::bad_request("no SQL statement in \"sql\""));
        }
        if !bound && stmt.params.as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(ApiError::new(
                400,
                "SQLITE_RANGE",
                "parameters given, but no statement takes any",
            ));
        }
        Ok(last)
    }

    /// Binds (if the statement takes parameters), runs one statement to completion and folds
    /// its outcome into `last`.
    fn step(
        &self,
        prepared: &mut rusqlite::Statement<'_>,
        params: Option<&Params>,
        bound: &mut bool,
        last: &mut Outcome,
    ) -> Result<(), ApiError> {
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
        let columns: Vec<String> = prepared.column_names().map(str::to_owned).collect();
        let n = columns.len();
        let mut rows = Vec::new();
        {
            let mut cursor = prepared.raw_query();
            while let Some(row) = cursor.next().map_err(|e| self.sql_error(&e))? {
                let mut out = Vec::with_capacity(n);
                for i in 0..n {
                    out.push(value::to_json(
                        row.get_ref(i).map_err(|e| self.sql_error(&e))?,
                    ));
                }
                rows.push(out);
            }
        }
        let changed = self.conn.total_changes() > changes_before;
        let outcome = Outcome {
            columns,
            rows,
            rows_affected: if changed { self.conn.changes() } else { 0 },
            last_insert_rowid: self.conn.last_insert_rowid(),
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

impl Params {
    fn is_empty(&self) -> bool {
        match self {
            Params::Positional(v) => v.is_empty(),
            Params::Named(m) => m.is_empty(),
        }
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
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
