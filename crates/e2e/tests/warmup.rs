//! The warm-up of the wasm when the isolate starts (worker/src/warmup.ts) never reads from or
//! writes to Durable Object storage: it runs on an in-memory store of its own. Nor does a
//! read: a database never written gets no alarm (worker/src/index.ts: scheduleUpkeep).

use std::path::Path;

use dosql_e2e::Server;
use serde_json::{Value as Json, json};

/// Every file under `dir`, with its size (what Durable Object storage wrote).
fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((
                path.display().to_string(),
                e.metadata().map_or(0, |m| m.len()),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn the_warm_up_never_touches_durable_object_storage() {
    // A fresh process evaluates the Worker's module scope, and so runs the warm-up, before
    // any request: with no request to any object, storage holds nothing (workerd keeps a
    // metadata database per namespace from its start, warm-up or not).
    let mut server = Server::start();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = files(server.data_dir());
    assert!(
        before.iter().all(|(f, _)| f.contains("/metadata.sqlite")),
        "storage after the warm-up alone: {before:?}"
    );
    assert!(
        !server.log_text().contains("warm-up failed"),
        "{}",
        server.log_text()
    );

    // A read writes nothing either: no alarm for background work on a database never written
    // (before, the first query set one, and its answer waited for that write).
    let db = server.db("r");
    assert_eq!(db.rows("SELECT 1"), vec![json!([1])]);
    assert_eq!(db.rows("SELECT 2"), vec![json!([2])]);
    // workerd opens the object's SQLite file (empty, 4096 bytes), and nothing goes in it.
    let after = files(server.data_dir());
    let written: Vec<_> = after
        .iter()
        .filter(|(f, n)| {
            !f.contains("/metadata.sqlite")
                && !f.ends_with("-shm")
                && (f.ends_with("-wal") && *n > 0 || *n > 4096)
        })
        .collect();
    assert!(
        written.is_empty(),
        "reads of a new database wrote {written:?} (all: {after:?})"
    );

    // A database's first requests cost the same storage calls with the warm-up as without.
    let db = server.db("w");
    db.query(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'one')",
        json!([]),
    )
    .ok();
    let mut calls = Vec::new();
    for warm in ["off", "on", "off"] {
        server.restart_with_env(&[("DOSQL_WARMUP", warm)]);
        let db = server.db("w");
        assert_eq!(
            db.rows("SELECT v FROM t WHERE id = 1"),
            vec![json!(["one"])]
        );
        let stats = db.send("GET", "/stats", None).unwrap().ok();
        assert_eq!(stats["warmup"]["ran"], json!(warm == "on"), "{stats}");
        if warm == "on" {
            // The host's side ran too, on MemoryStorage (worker/src/memory-storage.ts).
            assert!(
                stats["warmup"]["host"]["reads"].as_u64() > Some(0),
                "{stats}"
            );
        }
        let storage = db.send("GET", "/_storage_stats", None).unwrap().ok();
        let pick = |k: &str| storage[k].clone();
        calls.push(json!({
            "get_calls": pick("get_calls"), "get_keys": pick("get_keys"), "bytes_read": pick("bytes_read"),
            "put_calls": pick("put_calls"), "delete_calls": pick("delete_calls"),
        }));
    }
    assert_eq!(
        calls[0], calls[1],
        "storage calls without and with the warm-up"
    );
    assert_eq!(calls[1], calls[2]);
    assert_eq!(calls[1]["put_calls"], Json::from(0));
}
