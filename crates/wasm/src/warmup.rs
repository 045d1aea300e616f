//! The isolate's warm-up (worker/src/warmup.ts calls it through `dosql_warm_up`). V8 compiles
//! a wasm function on its first call, so the first request of an isolate used to pay for
//! compiling SQLite's query, commit and read paths: 43-47 ms in workerd, 3-5x native on a cold
//! object's first query. Running those paths once when the isolate starts moves the cost to
//! start-up, where Cloudflare allows 400 ms of CPU.
//!
//! The steps here are a database's requests; the ABI (`abi::warm_up`) runs them through the
//! very functions `dosql_open` and `dosql_exec` run, over the same `DoStore<HostKv>`, with
//! storage of its own in memory standing in for the host's (module scope has no Durable
//! Object). Generic code is compiled once per type it is used with: a warm-up over another
//! store type (it used to run over `DoStore<MemKv>`) leaves the real store's functions to be
//! compiled by a cold object's first query. The statements cover what a first query commonly
//! uses (point reads, the common scalar and aggregate functions, LIKE, IN, joins, ORDER BY)
//! and the write paths; each runs once, on a few rows, so that the warm-up stays short and
//! makes few functions hot enough for V8 to optimize them in the background at start-up.

use dosql_api::{ApiError, Response};
use serde_json::json;

use crate::op;

/// One step of the warm-up.
#[derive(Debug)]
pub enum Step<'a> {
    /// Open the database (again: a fresh session with a cold cache, as a cold object's).
    Open,
    /// One operation (`crate::op`) with its body.
    Exec(u32, &'a [u8]),
}

/// Statements run as single queries after the database is opened again, cold.
const READS: &[&str] = &[
    r#"{"sql": "SELECT id, name AS label, data FROM warm WHERE id = ?", "params": [7]}"#,
    r#"{"sql": "SELECT id, substr(name, 1, 16) AS head, length(name), upper(name), lower(name), hex(data), typeof(data), coalesce(data, 'none'), abs(score), round(score, 1), CAST(score AS INTEGER), trim(name), replace(name, 'x', 'y'), instr(name, 'row'), ifnull(score, 0), iif(score > 2, 'a', 'b') FROM warm WHERE id = :id", "params": {"id": 5}}"#,
    r#"{"sql": "SELECT count(*), min(score), max(score), avg(score), total(score), group_concat(id) FROM warm WHERE score BETWEEN ? AND ? AND name LIKE 'row%'", "params": [1, 10.5]}"#,
    r#"{"sql": "SELECT a.id, b.name FROM warm a JOIN warm b ON b.id = a.id + 1 WHERE a.id IN (1, 2, 3) ORDER BY a.id DESC LIMIT 2 OFFSET 0"}"#,
    r#"{"sql": "SELECT CASE WHEN score > 5 THEN 'hi' ELSE 'lo' END AS band, count(*) FROM warm WHERE id > (SELECT min(id) FROM warm) AND data IS NULL GROUP BY band HAVING count(*) > 0"}"#,
    r#"{"sql": "SELECT name FROM warm WHERE name = ? UNION ALL SELECT 'x' WHERE EXISTS (SELECT 1 FROM warm) ORDER BY 1", "params": ["a"]}"#,
    r#"{"sql": "SELECT datetime('now'), julianday('2024-01-01'), random() IS NOT NULL, printf('%d-%s', 1, 'a'), json_extract('{\"a\": [1, 2]}', '$.a[1]'), json_object('k', 1)"}"#,
];

/// Writes after the reads: each a path of its own in SQLite and in the commit.
const WRITES: &[&str] = &[
    r#"{"sql": "UPDATE warm SET score = score + 1 WHERE id = :id", "params": {"id": 3}}"#,
    r#"{"sql": "INSERT INTO warm(id, name, score) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET score = excluded.score", "params": [2, "b", 2.5]}"#,
    r#"{"sql": "INSERT OR REPLACE INTO warm(id, name) VALUES (?, ?) RETURNING id", "params": [30, "c"]}"#,
    r#"{"sql": "DELETE FROM warm WHERE id = ?", "params": [30]}"#,
    r#"{"sql": "CREATE INDEX warm_name ON warm(name)"}"#,
    r#"{"sql": "SELECT id FROM warm WHERE name = ? ORDER BY id", "params": ["a"]}"#,
];

/// The limits the warm-up and a spare's priming send with their first request, as the host
/// sends them (from the instance's share).
const LIMITS: &str = r#"{"share_bytes": 33554432, "cache_pages": null, "cache_bytes": null, "history": {"enabled": null, "retention_ms": null, "max_bytes": null}}"#;

/// `target` as a step that must answer 200 (else the failure, named `code`), counting them.
fn checked<'t>(
    target: &'t mut dyn FnMut(Step<'_>) -> Response,
    code: &'static str,
    requests: &'t mut u32,
) -> impl FnMut(Step<'_>) -> Result<(), ApiError> + 't {
    move |s| {
        *requests += 1;
        let r = target(s);
        if r.status == 200 {
            return Ok(());
        }
        let message = String::from_utf8_lossy(&r.body).into_owned();
        Err(ApiError::new(500, code, message))
    }
}

/// A spare instance's priming (`dosql_prime`), after SQLite's own: a database's open, its
/// limits and a first query, a point read with a parameter as a first query commonly is, on
/// an empty database. V8 allocates a wasm function's feedback per instance on its first call,
/// and a new instance's first database used to pay for those of everything outside SQLite's
/// own open path: the store's open, the connection, the JSON API's parsing, binding and answer
/// (perf of bench W4: ~110 µs per first query under perf). Nothing here commits: a commit
/// draws a new lineage's randomness, which module scope, where spares are made, may not.
pub fn prime(target: &mut dyn FnMut(Step<'_>) -> Response) -> Result<u32, ApiError> {
    let mut requests = 0;
    let mut step = checked(target, "PRIME_FAILED", &mut requests);
    step(Step::Open)?;
    step(Step::Exec(op::LIMITS, LIMITS.as_bytes()))?;
    step(Step::Exec(
        op::QUERY,
        br#"{"sql": "SELECT name, sql FROM sqlite_master WHERE type = ? AND name = ?", "params": ["table", "t"]}"#,
    ))?;
    drop(step);
    Ok(requests)
}

/// Runs the warm-up's requests through `target`; the number of requests, or the first
/// failure (every request must answer 200).
pub fn run(target: &mut dyn FnMut(Step<'_>) -> Response) -> Result<u32, ApiError> {
    let mut requests = 0;
    let mut step = checked(target, "WARMUP_FAILED", &mut requests);
    let limits = LIMITS;
    step(Step::Open)?;
    step(Step::Exec(op::LIMITS, limits.as_bytes()))?;
    step(Step::Exec(
        op::QUERY,
        br#"{"sql": "CREATE TABLE warm(id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '', score REAL CHECK (score >= 0), data BLOB, UNIQUE (name, id))"}"#,
    ))?;
    step(Step::Exec(
        op::QUERY,
        br#"{"sql": "INSERT INTO warm(name, score, data) VALUES (?, ?, ?)", "params": ["a", 1.5, {"base64": "AAEC"}]}"#,
    ))?;
    let rows: Vec<_> = (0..20)
        .map(|i| json!({"sql": "INSERT INTO warm(name, score) VALUES (?, ?)", "params": [format!("row {i} {}", "x".repeat(200)), i]}))
        .collect();
    step(Step::Exec(op::BATCH, json!(rows).to_string().as_bytes()))?;
    step(Step::Exec(
        op::QUERY,
        br#"{"sql": "SELECT name, count(*), sum(score) FROM warm GROUP BY name ORDER BY 2 DESC LIMIT 3"}"#,
    ))?;
    // A commit that rewrites none of the table's pages: they leave the head for rows (keys,
    // in an earlier release's database) of their own, as most pages of a real database are.
    step(Step::Exec(
        op::QUERY,
        br#"{"sql": "CREATE TABLE other(x INTEGER NOT NULL)"}"#,
    ))?;
    // Opened again: the session's cache is cold, so its reads go through the store's reads of
    // pages, the wire's decoding and the page decoder, as a cold object's first query does.
    step(Step::Open)?;
    step(Step::Exec(op::LIMITS, limits.as_bytes()))?;
    for sql in READS.iter().chain(WRITES) {
        step(Step::Exec(op::QUERY, sql.as_bytes()))?;
    }
    step(Step::Exec(op::STATS, b""))?;
    step(Step::Exec(op::HEAD, b""))?;
    let pipeline = br#"{"baton": null, "requests": [{"type": "execute", "stmt": {"sql": "SELECT count(*) FROM warm"}}, {"type": "close"}]}"#;
    let mut hrana = Vec::from(&br#"{"method": "POST", "path": "v3/pipeline", "query": ""}"#[..]);
    hrana.push(b'\n');
    hrana.extend_from_slice(pipeline);
    step(Step::Exec(op::HRANA, &hrana))?;
    drop(step);
    Ok(requests)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_warm_up_reads_and_writes_and_every_request_succeeds() {
        use std::sync::atomic::Ordering;
        let calls = crate::abi::no_host::STORAGE_CALLS.load(Ordering::SeqCst);
        let r = crate::abi::warm_up();
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(r.status, 200, "{body}");
        assert!(body["requests"].as_u64().unwrap() > 20, "{body}");
        assert!(body["reads"].as_u64().unwrap() > 0, "{body}");
        // Pages read by key, not only from inside the head: the path of a real database's.
        assert!(body["key_reads"].as_u64().unwrap() > 0, "{body}");
        assert!(body["writes"].as_u64().unwrap() > 0, "{body}");
        // It leaves no database open, and runs again.
        assert_eq!(crate::abi::warm_up().status, 200);
        // A spare's priming (one test: the VFS's registry of open databases is the process's,
        // and the tests' threads would share it) opens and queries in memory too, and leaves
        // nothing open either.
        assert_eq!(crate::abi::dosql_prime(), 200);
        assert_eq!(crate::abi::dosql_prime(), 200);
        assert_eq!(crate::abi::warm_up().status, 200);
        // Every read and write went to its storage in memory: none to the host's (which,
        // natively, fails every call and counts it; nothing else here calls it).
        assert_eq!(
            crate::abi::no_host::STORAGE_CALLS.load(Ordering::SeqCst),
            calls
        );
    }
}
