//! The isolate's warm-up (worker/src/warmup.ts calls it through `dosql_warm_up`). V8 compiles
//! a wasm function on its first call, so the first request of an isolate used to pay for
//! compiling SQLite's query, commit and read paths: 43-47 ms in workerd, 3-5x native on a cold
//! object's first query. Running those paths once when the isolate starts moves the cost to
//! start-up, where Cloudflare allows 400 ms of CPU.
//!
//! It runs on storage of its own, in memory (module scope has no Durable Object), through the
//! same layout code as a real database (`DoStore` over `MemKv`, SQLite-backed, with its
//! limits), and leaves nothing behind: the caller drops the instance afterwards.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use dosql_api::hrana::Hrana;
use dosql_api::http::Request;
use dosql_api::{ApiError, Response, Session};
use dosql_layout::kv::MemKv;
use dosql_layout::{DoStore, StorageKind};
use dosql_pagestore::PageSize;
use dosql_vfs::VfsConfig;
use serde_json::json;

/// Runs the read, write, batch, stats and Hrana paths once; 200 and `{"requests", "reads",
/// "writes"}` (storage calls made), or the first failure.
pub fn run() -> Response {
    match steps() {
        Ok(body) => Response {
            status: 200,
            body: body.to_string().into_bytes(),
        },
        Err(e) => Response {
            status: e.status,
            body: e.body().to_string().into_bytes(),
        },
    }
}

fn steps() -> Result<serde_json::Value, ApiError> {
    let kv = Arc::new(Mutex::new(MemKv::new(StorageKind::SqliteBacked)));
    let open = || -> Result<Session, ApiError> {
        let store = DoStore::open(kv.clone(), PageSize::DEFAULT)
            .map_err(|e| ApiError::new(500, "OPEN_FAILED", e.to_string()))?;
        Session::open("warmup", store, VfsConfig::default())
    };
    let mut requests = 0;
    let mut check = |r: Response| {
        requests += 1;
        if r.status == 200 {
            return Ok(());
        }
        let message = String::from_utf8_lossy(&r.body).into_owned();
        Err(ApiError::new(500, "WARMUP_FAILED", message))
    };
    let mut session = open()?;
    check(session.query(
        br#"{"sql": "CREATE TABLE warm(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB)"}"#,
    ))?;
    check(session.query(
        br#"{"sql": "INSERT INTO warm(name, score, data) VALUES (?, ?, ?)", "params": ["a", 1.5, {"base64": "AAEC"}]}"#,
    ))?;
    let rows: Vec<_> = (0..20)
        .map(|i| json!({"sql": "INSERT INTO warm(name, score) VALUES (?, ?)", "params": [format!("row {i} {}", "x".repeat(200)), i]}))
        .collect();
    check(session.batch(json!(rows).to_string().as_bytes()))?;
    check(session.query(
        br#"{"sql": "SELECT name, count(*), sum(score) FROM warm GROUP BY name ORDER BY 2 DESC LIMIT 3"}"#,
    ))?;
    // A fresh session over the committed pages: its cache is cold, so the point read goes
    // through the store's reads and the page decoder, as a cold object's first query does.
    drop(session);
    let mut session = open()?;
    check(
        session.query(br#"{"sql": "SELECT id, name, data FROM warm WHERE id = ?", "params": [7]}"#),
    )?;
    check(session.query(
        br#"{"sql": "UPDATE warm SET score = score + 1 WHERE id = :id", "params": {"id": 3}}"#,
    ))?;
    check(session.stats())?;
    let mut hrana = Hrana::new();
    let pipeline = br#"{"baton": null, "requests": [{"type": "execute", "stmt": {"sql": "SELECT count(*) FROM warm"}}, {"type": "close"}]}"#;
    let req = Request::new("POST", "v3/pipeline", "", pipeline);
    let a = hrana.route(session.database(), &req, Instant::now());
    check(Response {
        status: a.status,
        body: a.body,
    })?;
    hrana.clear();
    drop(session);
    let counts = kv
        .lock()
        .map_err(|_| ApiError::new(500, "INTERNAL", "poisoned"))?
        .counts();
    Ok(json!({
        "requests": requests,
        "reads": counts.get_calls + counts.head_row_reads,
        "writes": counts.put_keys + counts.head_row_writes,
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_warm_up_reads_and_writes_and_every_request_succeeds() {
        let r = super::run();
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(r.status, 200, "{body}");
        assert_eq!(body["requests"], 8);
        assert!(body["reads"].as_u64().unwrap() > 0, "{body}");
        assert!(body["writes"].as_u64().unwrap() > 0, "{body}");
    }
}
