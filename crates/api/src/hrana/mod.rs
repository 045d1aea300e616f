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
//! # The routes
//!
//! [`Hrana::route`] serves the HTTP routes under `/db/<name>/` (`v2`, `v3`, `v2/pipeline`,
//! `v3/pipeline`, `v3/cursor`), methods, errors and headers included; the Durable Object only
//! frames the request ([`crate::http`]).
//!
//! # Modules
//!
//! As libsql-server splits its Hrana: this module holds the [`Hrana`] streams table (batons,
//! expiry) and the `pipeline` endpoint; `stream` one stream and its requests, `stmt` running
//! and describing one statement, `batch` batches and their conditions, `cursor` the cursor
//! endpoint and its line encoding, `proto` the requests, responses and errors as they travel,
//! `value` Hrana's typed values both ways. Arguments bind through `crate::bind`, as the JSON
//! API's parameters do.

mod batch;
mod cursor;
mod proto;
mod stmt;
mod stream;
mod value;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dosql_vfs::Database;

use crate::http::{Answer, Request};
use crate::{Limits, Response};
use proto::{
    PipelineReq, PipelineResp, ProtoError, StreamRequest, StreamResult, http_error, json_response,
    proto_error,
};
use stream::Stream;

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
    /// By baton. Fixed hashing (`FixedState`): every open database has a `Hrana`, made with
    /// it before any randomness may be drawn (a spare's priming), and its keys are batons
    /// this code draws at random, which clients only look up.
    streams: HashMap<String, Stream, dosql_pagestore::FixedState>,
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

impl Hrana {
    /// No streams, the default timeout.
    pub fn new() -> Hrana {
        Hrana {
            streams: HashMap::default(),
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

    /// Serves one request under `/db/<name>/` (the host's framing: [`crate::http`]):
    ///
    /// - `GET v2`, `GET v3` → 200, the versions served (clients probe them);
    /// - `POST v2/pipeline`, `POST v3/pipeline` → [`Hrana::pipeline`];
    /// - `POST v3/cursor` → [`Hrana::cursor`], lines of JSON (`text/plain`);
    /// - anything else (Protobuf's `v3-protobuf` among them) → 404, so clients fall back to
    ///   JSON.
    ///
    /// `HRANA_STREAM_TIMEOUT_MS`, when the host has it, sets the stream timeout first: the
    /// instance can be re-created at any time, so every request carries it.
    pub fn route(&mut self, db: &Database, req: &Request<'_>, now: Instant) -> Answer {
        if let Some(raw) = req.hrana_stream_timeout_ms {
            match raw.parse::<u64>() {
                Ok(ms) if ms > 0 => self.set_stream_timeout(Duration::from_millis(ms)),
                _ => {
                    let why = format!("HRANA_STREAM_TIMEOUT_MS is not a positive integer: {raw}");
                    return http_error(500, "BAD_CONFIG", why).into();
                }
            }
        }
        let (method, version) = match req.path {
            "v2" | "v3" => ("GET", None),
            "v2/pipeline" => ("POST", Some(Version::V2)),
            "v3/pipeline" | "v3/cursor" => ("POST", Some(Version::V3)),
            p => {
                let why = format!(
                    "no Hrana endpoint {p} (served: v2/pipeline, v3/pipeline, v3/cursor; JSON only)"
                );
                return http_error(404, "NOT_FOUND", why).into();
            }
        };
        if !req.is(method) {
            let why = format!("{} takes {method}", req.path);
            return Answer::from(http_error(405, "METHOD_NOT_ALLOWED", why)).with("allow", method);
        }
        let Some(version) = version else {
            let banner = format!("dosql: Hrana over HTTP {} (JSON)\n", req.path);
            return Answer::from(Response {
                status: 200,
                body: banner.into_bytes(),
            })
            .with("content-type", "text/plain");
        };
        if req.path == "v3/cursor" {
            let r = self.cursor(db, req.body, now);
            // Lines of JSON, not one JSON document.
            let text = r.status == 200;
            let a = Answer::from(r);
            return if text {
                a.with("content-type", "text/plain")
            } else {
                a
            };
        }
        self.pipeline(db, version, req.body, now).into()
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

fn need_v3(version: Version, what: &str) -> Result<(), ProtoError> {
    if version < Version::V3 {
        return Err(proto_error(
            "NOT_SUPPORTED",
            format!("{what} needs Hrana 3 (the v3 endpoints); this is v2"),
        ));
    }
    Ok(())
}
