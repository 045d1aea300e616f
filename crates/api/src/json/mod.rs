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
//! Values travel as described in [`crate::value`]. Here: [`Session`] and its requests; the
//! request types in `request`, which statements run as one transaction in `transaction`,
//! running statements and binding their parameters in `run`, and writing answers (rows,
//! paging, `meta`) in `outcome`.

mod outcome;
mod request;
mod run;
mod transaction;

use std::sync::OnceLock;
use std::time::Instant;

use dosql_pagestore::PageStore;
use dosql_vfs::{Database, Stats, VfsConfig};
use rusqlite::Connection;
use serde_json::{Value as Json, json};

use crate::{ApiError, Limits, Response};
use outcome::{Answer, AnswerBudget, write_meta};
use request::{Statement, parse};
use transaction::{ends_transaction, one_transaction, statement_heads};

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

#[cfg(test)]
mod tests {
    use super::*;

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
