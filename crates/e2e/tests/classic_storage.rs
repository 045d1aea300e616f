//! The same HTTP API on classic (KV-backed) Durable Object storage (`DOSQL_STORAGE=classic`:
//! the DosqlDatabase class, whose wasm awaits its page reads under JSPI): persistence,
//! crashes, atomicity, limits, concurrency and the CLI's import/export. The other test files
//! run on the default, SQLite-backed storage.

/// A server whose databases live in the classic class.
fn start() -> Server {
    Server::start_with_env(&[("DOSQL_STORAGE", "classic")])
}

use std::process::Command;
use std::time::{Duration, Instant};

use dosql_e2e::cli_output::ok;
use dosql_e2e::sqlite_file::{integrity, tables};
use dosql_e2e::{Db, Server, dosql_bin, testdata};
use serde_json::{Value as Json, json};

fn storage_stats(db: &Db) -> Json {
    db.send("GET", "/_storage_stats", None).unwrap().ok()
}

fn assert_within_storage_limits(stats: &Json) {
    assert!(stats["put_keys_max"].as_u64().unwrap() <= 128, "{stats}");
    assert!(stats["get_keys_max"].as_u64().unwrap() <= 128, "{stats}");
    assert!(stats["delete_keys_max"].as_u64().unwrap() <= 128, "{stats}");
    assert!(
        stats["put_value_bytes_max"].as_u64().unwrap() <= 128 * 1024,
        "{stats}"
    );
    assert!(stats["key_bytes_max"].as_u64().unwrap() <= 2048, "{stats}");
    assert_eq!(stats["refused_calls"], 0, "{stats}");
}

#[test]
fn create_insert_select_and_persist_across_a_restart() {
    let mut server = start();
    let db = server.db("basic");
    db.query("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", json!([]))
        .ok();
    db.query("INSERT INTO t(v) VALUES (?), (?)", json!(["a", "b"]))
        .ok();
    assert_eq!(
        db.rows("SELECT v FROM t ORDER BY id"),
        vec![json!(["a"]), json!(["b"])]
    );
    server.restart();
    let db = server.db("basic");
    assert_eq!(
        db.rows("SELECT v FROM t ORDER BY id"),
        vec![json!(["a"]), json!(["b"])]
    );
    assert_eq!(db.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);
    // The pages came back through the synchronous kv reads, counted like async ones.
    let stats = storage_stats(&db);
    assert!(stats["get_calls"].as_u64().unwrap() >= 2, "{stats}");
    assert_within_storage_limits(&stats);
    // Databases are separate.
    assert_eq!(
        server
            .db("other")
            .query("SELECT * FROM t", json!([]))
            .error(400),
        "SQLITE_ERROR"
    );
}

#[test]
fn classic_and_sqlite_storage_are_separate_and_a_bad_setting_is_refused() {
    let mut server = start();
    let db = server.db("sep");
    db.query("CREATE TABLE only_in_classic(x)", json!([])).ok();
    // The same data directory served from the SQLite-backed class: another database.
    server.restart_with_env(&[("DOSQL_STORAGE", "sqlite")]);
    let db = server.db("sep");
    let a = db.query("SELECT * FROM only_in_classic", json!([]));
    assert_eq!(a.error(400), "SQLITE_ERROR");
    // And back: the classic database is still there.
    server.restart_with_env(&[("DOSQL_STORAGE", "classic")]);
    assert_eq!(
        server.db("sep").int("SELECT count(*) FROM only_in_classic"),
        0
    );
    server.restart_with_env(&[("DOSQL_STORAGE", "sqlite3")]);
    let a = server.db("x").query("SELECT 1", json!([]));
    assert_eq!(a.error(500), "BAD_CONFIG");
}

#[test]
fn warm_point_selects_read_nothing_from_storage() {
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

#[test]
fn kill_9_loses_no_acknowledged_insert() {
    let mut server = start();
    let db = server.db("crash");
    db.query(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, pad BLOB)",
        json!([]),
    )
    .ok();
    let mut acked: i64 = 0;
    let mut seed: u64 = 0x2545_F491;
    for round in 0..6 {
        let db = server.db("crash");
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
        acked = max;
    }
    assert!(acked > 10, "the writer made no progress: {acked}");
}

#[test]
fn a_transaction_over_128_pages_commits_atomically_within_storage_limits() {
    let mut server = start();
    let db = server.db("big");
    db.query("CREATE TABLE t(x BLOB)", json!([])).ok();
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
    // Reading it all back after the restart goes through storage.get, within the limits too.
    assert_eq!(db.int("SELECT sum(length(x)) FROM t"), 300 * 4000);
    let stats = storage_stats(&db);
    assert!(stats["get_calls"].as_u64().unwrap() > 128, "{stats}");
    assert_within_storage_limits(&stats);
}

#[test]
fn a_failing_batch_leaves_no_trace() {
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

#[test]
fn twenty_concurrent_clients_all_land() {
    let server = start();
    let db = server.db("concurrent");
    db.query("CREATE TABLE t(client INTEGER, n INTEGER)", json!([]))
        .ok();
    let threads: Vec<_> = (0..20)
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
    assert_eq!(db.int("SELECT count(*) FROM t"), 200);
    assert_eq!(
        db.int("SELECT count(DISTINCT client * 100 + n) FROM t"),
        200
    );
}

#[test]
fn chinook_import_export_round_trip() {
    let chinook = testdata().join("chinook/Chinook_Sqlite.sqlite");
    let mut server = start();
    let url = format!("{}/db/chinook", server.url());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export.sqlite");
    let run = |args: &[&str]| {
        Command::new(dosql_bin())
            .env_remove("DOSQL_TOKEN")
            .env_remove("DOSQL_TEST_CHUNK_DELAY_MS")
            .env("DOSQL_HISTORY", "")
            .args(args)
            .output()
            .expect("run dosql")
    };
    let imported = ok(run(&["import", chinook.to_str().unwrap(), &url]));
    assert!(imported.contains("246 pages of 4096 bytes"), "{imported}");
    ok(run(&["export", &url, out.to_str().unwrap()]));
    assert_eq!(integrity(&out), "ok");
    assert_eq!(tables(&out), tables(&chinook));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&chinook).unwrap()
    );

    let db = server.db("chinook");
    assert_eq!(db.int("SELECT count(*) FROM Track"), 3503);
    db.query(
        "INSERT INTO Genre(GenreId, Name) VALUES (100, 'dosql')",
        json!([]),
    )
    .ok();
    assert_within_storage_limits(&storage_stats(&db));
    server.restart();
    let db = server.db("chinook");
    assert_eq!(db.int("SELECT count(*) FROM Genre WHERE GenreId = 100"), 1);
    assert_eq!(db.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);
}

/// Each UPDATE rewrites ~150 pages (more than one put() of 128 keys): killed mid-stream, the
/// database must hold one whole transaction or the one before, never a mix. This is what the
/// async puts issued without an await (PageStorage.commit) must give on SQLite-backed storage.
#[test]
fn kill_9_during_multi_put_commits_keeps_them_atomic() {
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
