//! The HTTP API of the Durable Object on workerd: persistence, crashes, atomicity, limits,
//! bad input and concurrency. Everything that depends on the kind of Durable Object storage
//! runs on both: the SQLite-backed default (synchronous `ctx.storage.kv` reads) and classic
//! storage (reads awaited under JSPI).

use std::time::{Duration, Instant};

use dosql_e2e::{Db, Server, assert_within_storage_limits, client};
use serde_json::{Value as Json, json};

/// Runs each listed test, a `fn(start: fn() -> Server)`, once per kind of storage.
macro_rules! on_both_storages {
    ($($name:ident),* $(,)?) => {
        mod sqlite_storage {
            $( #[test] fn $name() { super::$name(|| super::Server::start_with_env(&[("DOSQL_STORAGE", "sqlite")])) } )*
        }
        mod classic_storage {
            $( #[test] fn $name() { super::$name(|| super::Server::start_with_env(&[("DOSQL_STORAGE", "classic")])) } )*
        }
    };
}

on_both_storages!(
    data_persists_across_a_restart,
    kill_9_loses_no_acknowledged_insert,
    kill_9_during_multi_put_commits_keeps_them_atomic,
    a_failing_batch_leaves_no_trace,
    a_transaction_over_128_pages_commits_atomically_within_storage_limits,
    warm_point_selects_read_nothing_from_storage,
    fifty_concurrent_clients_all_land,
    small_commits_store_compressed_pages,
    pages_leave_meta_for_their_keys_as_a_table_grows_and_shrinks,
);

fn storage_stats(db: &Db) -> Json {
    db.send("GET", "/_storage_stats", None).unwrap().ok()
}

fn data_persists_across_a_restart(start: fn() -> Server) {
    let mut server = start();
    let db = server.db("persist");
    db.query("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", json!([]))
        .ok();
    db.query("INSERT INTO t(v) VALUES (?), (?)", json!(["a", "b"]))
        .ok();
    server.restart();
    let db = server.db("persist");
    assert_eq!(
        db.rows("SELECT v FROM t ORDER BY id"),
        vec![json!(["a"]), json!(["b"])]
    );
    assert_eq!(db.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);
    // Databases are separate.
    assert_eq!(
        server
            .db("other")
            .query("SELECT * FROM t", json!([]))
            .error(400),
        "SQLITE_ERROR"
    );
}

fn small_commits_store_compressed_pages(start: fn() -> Server) {
    let mut server = start();
    let db = server.db("elided");
    db.query("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", json!([]))
        .ok();
    let before = storage_stats(&db);
    db.query("INSERT INTO t(v) VALUES (?)", json!(["one small row"]))
        .ok();
    let after = storage_stats(&db);
    let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    // Page 1 (its change counter) and the table's leaf: two nearly empty 4 KiB pages, stored
    // compressed inside the head, so the commit is one key, and its log record (the two
    // pages' old values, for the history) one more, in the same write.
    assert_eq!(delta("commits"), 1);
    assert_eq!(delta("put_keys"), 2, "{after}");
    assert_eq!(delta("meta_pages"), 2, "{after}");
    assert!(
        delta("bytes_written") < 3072,
        "{} bytes stored for two nearly empty pages, the head and the log record",
        delta("bytes_written")
    );
    server.restart();
    let db = server.db("elided");
    assert_eq!(db.rows("SELECT v FROM t"), vec![json!(["one small row"])]);
    assert_eq!(db.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);
}

fn pages_leave_meta_for_their_keys_as_a_table_grows_and_shrinks(start: fn() -> Server) {
    let mut server = start();
    let db = server.db("inline");
    db.query("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", json!([]))
        .ok();
    // One row per commit, incompressible enough that a leaf holds ~15 of them: the commits
    // fill leaf after leaf, and the filled ones leave meta for their own keys.
    for i in 0..120 {
        db.query(
            "INSERT INTO t(v) VALUES (hex(randomblob(120)) || ?)",
            json!([format!("#{i}")]),
        )
        .ok();
    }
    let stats = storage_stats(&db);
    assert!(stats["evicted_pages"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["meta_pages"].as_u64().unwrap() >= 120, "{stats}");
    assert_within_storage_limits(&stats);
    let expected = db.rows("SELECT id, v FROM t ORDER BY id");
    assert_eq!(expected.len(), 120);

    // Cold: every page comes back from meta or from its key.
    server.restart();
    let db = server.db("inline");
    assert_eq!(db.rows("SELECT id, v FROM t ORDER BY id"), expected);
    assert_eq!(db.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);

    // Shrink: pages past the new end leave meta and storage.
    db.query("DELETE FROM t WHERE id > 3", json!([])).ok();
    db.query("VACUUM", json!([])).ok();
    server.restart();
    let db = server.db("inline");
    assert_eq!(
        db.rows("SELECT id, v FROM t ORDER BY id"),
        expected[..3].to_vec()
    );
    assert_eq!(db.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);
    assert_eq!(db.int("PRAGMA page_count"), 2);
}

fn kill_9_loses_no_acknowledged_insert(start: fn() -> Server) {
    let mut server = start();
    let db = server.db("crash");
    db.query(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, pad BLOB)",
        json!([]),
    )
    .ok();
    let mut acked: i64 = 0;
    let mut seed: u64 = 0x9E37_79B9;
    for round in 0..10 {
        let db = server.db("crash");
        // Insert in a loop from another thread; kill workerd while it runs.
        let stop_after = Duration::from_millis(150 + (seed % 400));
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
            >> 1;
        let writer = std::thread::spawn(move || {
            let mut last = 0;
            let started = Instant::now();
            let mut next = acked + 1;
            while started.elapsed() < Duration::from_secs(5) {
                match db.try_query(
                    "INSERT INTO t VALUES (?, zeroblob(?))",
                    json!([next, (next % 7) * 1000]),
                ) {
                    Ok(a) if a.status == 200 => {
                        last = next;
                        next += 1;
                    }
                    _ => break, // the server is gone
                }
            }
            last
        });
        std::thread::sleep(stop_after);
        server.crash_and_restart();
        let last = writer.join().unwrap();
        assert!(last >= acked, "round {round}");
        acked = last.max(acked);
        let db = server.db("crash");
        assert_eq!(
            db.rows("PRAGMA integrity_check"),
            vec![json!(["ok"])],
            "round {round}"
        );
        let max = db.int("SELECT coalesce(max(id), 0) FROM t");
        let count = db.int("SELECT count(*) FROM t");
        assert!(
            max >= acked,
            "round {round}: acknowledged {acked}, database has up to {max}"
        );
        assert_eq!(count, max, "round {round}: gaps in the inserted ids");
        // The next writer continues after whatever landed, acknowledged or not.
        acked = max;
    }
    assert!(acked > 10, "the writer made no progress: {acked}");
}

fn a_failing_batch_leaves_no_trace(start: fn() -> Server) {
    let server = start();
    let db = server.db("batch");
    db.query("CREATE TABLE t(x UNIQUE)", json!([])).ok();
    db.query("INSERT INTO t VALUES (1)", json!([])).ok();
    let a = db.batch(json!([
        {"sql": "INSERT INTO t VALUES (2)"},
        {"sql": "CREATE TABLE u(y)"},
        {"sql": "INSERT INTO t VALUES (1)"}
    ]));
    assert_eq!(a.error(400), "SQLITE_CONSTRAINT_UNIQUE");
    assert_eq!(a.body["error"]["statement"], 2);
    assert_eq!(db.rows("SELECT x FROM t"), vec![json!([1])]);
    assert_eq!(
        db.int("SELECT count(*) FROM sqlite_schema WHERE name = 'u'"),
        0
    );
    let ok = db.batch(json!([{"sql": "INSERT INTO t VALUES (?)", "params": [5]}, {"sql": "SELECT count(*) FROM t"}])).ok();
    assert_eq!(ok["results"][1]["rows"], json!([[2]]));
}

fn a_transaction_over_128_pages_commits_atomically_within_storage_limits(start: fn() -> Server) {
    let mut server = start();
    let db = server.db("big");
    db.query("CREATE TABLE t(x BLOB)", json!([])).ok();
    // ~300 pages of 4 KiB in one transaction.
    let a = db
        .query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<300)
         INSERT INTO t SELECT zeroblob(4000) FROM n",
            json!([]),
        )
        .ok();
    assert!(a["meta"]["pages_written"].as_u64().unwrap() > 128, "{a}");
    let stats = storage_stats(&db);
    assert_within_storage_limits(&stats);
    assert!(
        stats["put_calls"].as_u64().unwrap() >= 3,
        "the commit must have been split: {stats}"
    );
    server.crash_and_restart();
    let db = server.db("big");
    assert_eq!(db.int("SELECT count(*) FROM t"), 300);
    assert_eq!(db.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);
    // Reading it all back cold goes through storage reads within the limits too.
    assert_eq!(db.int("SELECT sum(length(x)) FROM t"), 300 * 4000);
    let stats = storage_stats(&db);
    assert!(stats["get_calls"].as_u64().unwrap() > 0, "{stats}");
    assert_within_storage_limits(&stats);
}

#[test]
fn bad_requests_get_json_errors_and_change_nothing() {
    let server = Server::start();
    let db = server.db("bad");
    db.query("CREATE TABLE t(x INTEGER NOT NULL)", json!([]))
        .ok();
    db.query("INSERT INTO t VALUES (1)", json!([])).ok();
    // (what, path, body, status, code)
    type Case = (
        &'static str,
        &'static str,
        Option<Vec<u8>>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "bad SQL",
            "/query",
            Some(br#"{"sql": "SELEC 1"}"#.to_vec()),
            400,
            "SQLITE_ERROR",
        ),
        (
            "bad JSON",
            "/query",
            Some(b"{\"sql\": ".to_vec()),
            400,
            "BAD_REQUEST",
        ),
        (
            "wrong shape",
            "/query",
            Some(br#"{"statement": "SELECT 1"}"#.to_vec()),
            400,
            "BAD_REQUEST",
        ),
        (
            "too few params",
            "/query",
            Some(br#"{"sql": "INSERT INTO t VALUES (?)"}"#.to_vec()),
            400,
            "SQLITE_RANGE",
        ),
        (
            "too many params",
            "/query",
            Some(br#"{"sql": "INSERT INTO t VALUES (?)", "params": [1, 2]}"#.to_vec()),
            400,
            "SQLITE_RANGE",
        ),
        (
            "param type",
            "/query",
            Some(br#"{"sql": "INSERT INTO t VALUES (?)", "params": [[1]]}"#.to_vec()),
            400,
            "SQLITE_MISMATCH",
        ),
        (
            "constraint",
            "/query",
            Some(br#"{"sql": "INSERT INTO t VALUES (NULL)"}"#.to_vec()),
            400,
            "SQLITE_CONSTRAINT_NOTNULL",
        ),
        (
            "batch not a list",
            "/batch",
            Some(br#"{"sql": "SELECT 1"}"#.to_vec()),
            400,
            "BAD_REQUEST",
        ),
        (
            "too large",
            "/query",
            Some(format!(r#"{{"sql": "SELECT '{}'"}}"#, "x".repeat(2 << 20)).into_bytes()),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "unknown route",
            "/nope",
            Some(b"{}".to_vec()),
            404,
            "NOT_FOUND",
        ),
    ];
    for (what, path, body, status, code) in cases {
        let a = db.send("POST", path, body.as_deref()).unwrap();
        assert_eq!(a.error(status), code, "{what}");
    }
    let a = db.send("GET", "/query", None).unwrap();
    assert_eq!(a.status, 405, "GET /query: {}", a.body);
    let r = client()
        .get(&format!("{}/nowhere", server.url()))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let a = server
        .db("bad$name")
        .send("POST", "/query", Some(b"{}"))
        .unwrap();
    assert_eq!(a.status, 400, "{}", a.body);
    // Nothing changed, and the database still works.
    assert_eq!(db.rows("SELECT x FROM t"), vec![json!([1])]);
    db.query("INSERT INTO t VALUES (2)", json!([])).ok();
    assert_eq!(db.int("SELECT count(*) FROM t"), 2);
}

#[test]
fn values_keep_their_types_over_http() {
    let server = Server::start();
    let db = server.db("types");
    let r = db
        .query(
            "SELECT 9007199254740993, 1.0, 'text', x'00ff', NULL, ?",
            json!([{"base64": "AAE="}]),
        )
        .ok();
    assert_eq!(
        r["rows"],
        json!([[{"int": "9007199254740993"}, 1.0, "text", {"base64": "AP8="}, null, {"base64": "AAE="}]])
    );
    assert_eq!(r["columns"].as_array().unwrap().len(), 6);
}

fn fifty_concurrent_clients_all_land(start: fn() -> Server) {
    let server = start();
    let db = server.db("concurrent");
    db.query("CREATE TABLE t(client INTEGER, n INTEGER)", json!([]))
        .ok();
    let threads: Vec<_> = (0..50)
        .map(|c| {
            let db = db.clone();
            std::thread::spawn(move || {
                for n in 0..10 {
                    db.query("INSERT INTO t VALUES (?, ?)", json!([c, n])).ok();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(db.int("SELECT count(*) FROM t"), 500);
    assert_eq!(
        db.int("SELECT count(DISTINCT client * 100 + n) FROM t"),
        500
    );
}

#[test]
fn a_configured_token_is_required_on_every_route() {
    let server = Server::start_with_token(Some("s3cret-token"));
    let good = server.db("auth");
    good.query("CREATE TABLE t(x)", json!([])).ok();
    for token in [
        None,
        Some("wrong"),
        Some("s3cret-token-but-longer"),
        Some(""),
    ] {
        let db = server.db_with_token("auth", token);
        for (method, path) in [
            ("POST", "/query"),
            ("GET", "/stats"),
            ("POST", "/v2/pipeline"),
        ] {
            let a = db
                .send(method, path, Some(br#"{"sql": "DROP TABLE t"}"#))
                .unwrap();
            assert_eq!(
                a.error(401),
                "UNAUTHORIZED",
                "{method} {path} with {token:?}"
            );
        }
    }
    assert_eq!(
        good.int("SELECT count(*) FROM sqlite_schema WHERE name = 't'"),
        1
    );
}

fn warm_point_selects_read_nothing_from_storage(start: fn() -> Server) {
    let server = start();
    let db = server.db("warm");
    db.query("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", json!([]))
        .ok();
    db.query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<2000)
         INSERT INTO t SELECT i, printf('row %d', i) FROM n",
        json!([]),
    )
    .ok();
    // Warm the cache.
    assert_eq!(db.int("SELECT count(*) FROM t"), 2000);
    let before = storage_stats(&db);
    for id in [1, 17, 500, 1234, 1999, 2000, 3, 999] {
        let rows = db.rows(&format!("SELECT v FROM t WHERE id = {id}"));
        assert_eq!(rows, vec![json!([format!("row {id}")])]);
    }
    let after = storage_stats(&db);
    assert_eq!(
        before["get_calls"], after["get_calls"],
        "warm point selects called get(): {before} -> {after}"
    );
}

fn kill_9_during_multi_put_commits_keeps_them_atomic(start: fn() -> Server) {
    let mut server = start();
    let db = server.db("atomic");
    db.query(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER, x BLOB)",
        json!([]),
    )
    .ok();
    db.query(
        "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM k WHERE i<150)
         INSERT INTO t SELECT i, 0, randomblob(3000) FROM k",
        json!([]),
    )
    .ok();
    let mut acked: i64 = 0;
    for round in 0..5 {
        let db = server.db("atomic");
        let writer = std::thread::spawn(move || {
            let mut last = acked;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(5) {
                match db.try_query("UPDATE t SET n = n + 1, x = randomblob(3000)", json!([])) {
                    Ok(a) if a.status == 200 => last += 1,
                    _ => break,
                }
            }
            last
        });
        std::thread::sleep(Duration::from_millis(300 + 150 * round));
        server.crash_and_restart();
        let last = writer.join().unwrap();
        let db = server.db("atomic");
        assert_eq!(
            db.rows("PRAGMA integrity_check"),
            vec![json!(["ok"])],
            "round {round}"
        );
        assert_eq!(
            db.int("SELECT count(DISTINCT n) FROM t"),
            1,
            "round {round}: a torn commit"
        );
        let n = db.int("SELECT n FROM t LIMIT 1");
        assert!(
            n >= last,
            "round {round}: acknowledged {last}, database has {n}"
        );
        acked = n;
    }
    assert!(acked > 5, "the writer made no progress: {acked}");
    assert_within_storage_limits(&storage_stats(&server.db("atomic")));
}

/// Posts `body` to `path` with chunked transfer encoding (no Content-Length); the status and
/// body of the answer.
fn post_chunked(server: &Server, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = server.url().trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(64 * 1024) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    // The server may answer 413 before reading everything: a failed write is not the test.
    let _ = s.write_all(&req);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn bodies_without_a_declared_length_are_read_and_limited_too() {
    let server = Server::start();
    let (status, text) = post_chunked(
        &server,
        "/db/chunked/query",
        br#"{"sql": "SELECT 40 + 2 AS answer"}"#,
    );
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("[[42]]"), "{text}");
    let big = format!(r#"{{"sql": "SELECT '{}'"}}"#, "x".repeat(2 << 20));
    let (status, text) = post_chunked(&server, "/db/chunked/query", big.as_bytes());
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("PAYLOAD_TOO_LARGE"), "{text}");
}
