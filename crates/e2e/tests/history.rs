//! History end to end on workerd, on both kinds of storage: restore after a bad UPDATE, undo
//! it, branch, export an earlier txid, verify checksums, LTX files, bad input (4xx, nothing
//! changed); `kill -9` during a restore by copy, a branch and pruning leaves the old database
//! or the new one, intact, with its history.

use std::time::{Duration, Instant};

use dosql_e2e::cli_output::{fails, ok};
use dosql_e2e::sqlite_file::integrity;
use dosql_e2e::{Db, Server, dosql_bin};
use serde_json::{Value as Json, json};

macro_rules! on_both_storages {
    ($($name:ident),* $(,)?) => {
        mod sqlite_storage {
            $( #[test] fn $name() { super::$name(&[("DOSQL_STORAGE", "sqlite")]) } )*
        }
        mod classic_storage {
            $( #[test] fn $name() { super::$name(&[("DOSQL_STORAGE", "classic")]) } )*
        }
    };
}

on_both_storages!(
    a_bad_update_is_restored_undone_branched_and_exported,
    kill_9_during_a_restore_by_copy_leaves_one_whole_database,
    kill_9_during_a_branch_leaves_the_source_whole_and_the_target_old_or_new,
    old_history_is_pruned_in_the_background_and_kill_9_there_loses_nothing,
);

fn dosql(args: &[&str]) -> std::process::Output {
    std::process::Command::new(dosql_bin())
        .args(args)
        .env_remove("DOSQL_TOKEN")
        .env("DOSQL_HISTORY", "")
        .output()
        .unwrap()
}

fn post(db: &Db, path: &str, body: Json) -> dosql_e2e::Answer {
    db.send("POST", path, Some(body.to_string().as_bytes()))
        .unwrap()
}

fn txid(db: &Db) -> u64 {
    db.send("GET", "/history?limit=0", None).unwrap().ok()["txid"]
        .as_u64()
        .unwrap()
}

fn a_bad_update_is_restored_undone_branched_and_exported(env: &[(&str, &str)]) {
    let server = Server::start_with_env(env);
    let db = server.db("accounts");
    db.query(
        "CREATE TABLE acct(id INTEGER PRIMARY KEY, owner TEXT, balance INTEGER)",
        json!([]),
    )
    .ok();
    db.query(
        "INSERT INTO acct(owner, balance) VALUES ('ann', 100), ('bob', 50), ('cy', 75)",
        json!([]),
    )
    .ok();
    let good = txid(&db);
    // The bad UPDATE: a WHERE clause forgotten.
    db.query("UPDATE acct SET balance = 0", json!([])).ok();
    let bad = txid(&db);
    assert_eq!(db.int("SELECT sum(balance) FROM acct"), 0);

    let h = db.send("GET", "/history", None).unwrap().ok();
    assert_eq!(h["txid"], json!(bad));
    assert_eq!(h["window"]["oldest_txid"], json!(0));
    assert_eq!(h["commits"][0]["txid"], json!(bad), "{h}");
    assert!(h["checksum"].as_str().is_some_and(|c| c.len() == 16), "{h}");

    // A Hrana stream open across the restore: it ends, and says so.
    let open = |baton: Json| {
        let body =
            json!({"baton": baton, "requests": [{"type": "execute", "stmt": {"sql": "SELECT 1"}}]});
        db.send("POST", "/v2/pipeline", Some(body.to_string().as_bytes()))
            .unwrap()
    };
    let stream = open(Json::Null).ok();
    let baton = stream["baton"].clone();
    assert!(baton.is_string(), "{stream}");

    // Restore, then undo the restore, then redo it.
    let r = post(&db, "/restore", json!({"txid": good})).ok();
    assert_eq!(r["restored_from"], json!(good));
    assert_eq!(r["txid"], json!(bad + 1));
    assert_eq!(db.int("SELECT sum(balance) FROM acct"), 225);
    let ended = open(baton);
    assert_eq!(ended.status, 400, "{}", ended.body);
    assert_eq!(ended.body["code"], json!("BATON_INVALID"), "{}", ended.body);
    post(&db, "/restore", json!({"txid": bad})).ok();
    assert_eq!(db.int("SELECT sum(balance) FROM acct"), 0);
    post(&db, "/restore", json!({"txid": good})).ok();
    assert_eq!(db.int("SELECT sum(balance) FROM acct"), 225);
    assert_eq!(db.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);

    // By time: the last commit at or before a moment before the bad update.
    let history = db.send("GET", "/history", None).unwrap().ok();
    let at_good = history["commits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["txid"] == json!(good))
        .unwrap()["timestamp_ms"]
        .as_i64()
        .unwrap();
    post(&db, "/restore", json!({"timestamp_ms": at_good})).ok();
    assert_eq!(db.int("SELECT sum(balance) FROM acct"), 225);

    // Bad input: 4xx, the database unchanged.
    let now = txid(&db);
    assert_eq!(
        post(&db, "/restore", json!({"txid": 10_000})).error(400),
        "OUT_OF_WINDOW"
    );
    assert_eq!(
        post(&db, "/restore", json!({"timestamp_ms": 5})).error(400),
        "OUT_OF_WINDOW"
    );
    assert_eq!(
        post(&db, "/restore", json!({"txid": "x"})).error(400),
        "BAD_REQUEST"
    );
    assert_eq!(post(&db, "/restore", json!({})).error(400), "BAD_REQUEST");
    assert_eq!(
        db.send("GET", "/restore", None).unwrap().error(405),
        "METHOD_NOT_ALLOWED"
    );
    assert_eq!(txid(&db), now, "nothing committed by bad requests");

    // The CLI: history, verify (checksum), export of an earlier txid, branch, restore.
    let url = format!("{}/db/accounts", server.url());
    let listed = ok(dosql(&["history", &url]));
    assert!(listed.contains("restorable txids 0 to"), "{listed}");
    let verified = ok(dosql(&["verify", &url]));
    assert!(verified.contains("it matches"), "{verified}");
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("bad.sqlite");
    ok(dosql(&[
        "export",
        "-q",
        "--txid",
        &bad.to_string(),
        &url,
        old.to_str().unwrap(),
    ]));
    assert_eq!(integrity(&old), "ok");
    let conn = rusqlite::Connection::open(&old).unwrap();
    let sum: i64 = conn
        .query_row("SELECT sum(balance) FROM acct", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sum, 0, "the export is the state at that txid");
    let branch_url = format!("{}/db/accounts-then", server.url());
    ok(dosql(&[
        "branch",
        "-q",
        "--txid",
        &bad.to_string(),
        &url,
        &branch_url,
    ]));
    let branch = server.db("accounts-then");
    assert_eq!(branch.int("SELECT sum(balance) FROM acct"), 0);
    let bh = branch.send("GET", "/history", None).unwrap().ok();
    assert_eq!(
        bh["commits"][0]["note"]["branch"],
        json!({"name": url, "txid": bad}),
        "{bh}"
    );
    // A branch onto a database that holds something is refused without --force.
    let refused = fails(dosql(&["branch", &url, &branch_url]));
    assert!(refused.contains("not empty"), "{refused}");
    let onto_itself = fails(dosql(&["branch", &url, &url]));
    assert!(onto_itself.contains("onto itself"), "{onto_itself}");
    let restored = ok(dosql(&["restore", &url, "--txid", &bad.to_string()]));
    assert!(restored.contains("undoes it"), "{restored}");
    assert_eq!(db.int("SELECT sum(balance) FROM acct"), 0);
    let far = fails(dosql(&["restore", &url, "--txid", "99999"]));
    assert!(far.contains("outside the history window"), "{far}");

    // Branch on the server: the pages travel from one Durable Object to the other.
    let b = post(
        &db,
        "/branch",
        json!({"to": "accounts-server", "txid": bad}),
    )
    .ok();
    assert_eq!(b["branched_from"], json!(bad), "{b}");
    let copy = server.db("accounts-server");
    assert_eq!(copy.int("SELECT sum(balance) FROM acct"), 0);
    assert_eq!(copy.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);
    let ch = copy.send("GET", "/history", None).unwrap().ok();
    assert_eq!(
        ch["commits"][0]["note"]["branch"],
        json!({"name": "accounts", "txid": bad}),
        "{ch}"
    );
    assert_eq!(
        ch["checksum"],
        json!(b["checksum"]),
        "the target checked the pages' checksum"
    );
    assert_eq!(
        post(&db, "/branch", json!({"to": "accounts-server"})).error(409),
        "NOT_EMPTY"
    );
    post(
        &db,
        "/branch",
        json!({"to": "accounts-server", "force": true}),
    )
    .ok();
    assert_eq!(copy.int("SELECT sum(balance) FROM acct"), 0);
    assert_eq!(
        post(&db, "/branch", json!({"to": "accounts"})).error(400),
        "BAD_REQUEST"
    );
    assert_eq!(
        post(&db, "/branch", json!({"to": "no/slash"})).error(400),
        "BAD_DATABASE_NAME"
    );
    assert_eq!(
        post(&db, "/branch", json!({"to": "x", "txid": 99999})).error(400),
        "OUT_OF_WINDOW"
    );

    // LTX: a snapshot of the current state, and the last commit alone.
    let ltx = db.send("GET", "/ltx?from=1", None).unwrap();
    assert_eq!(ltx.status, 200);
    assert_eq!(&ltx.bytes[..4], b"LTX1");
    let last = txid(&db);
    let one = db
        .send("GET", &format!("/ltx?from={last}&to={last}"), None)
        .unwrap();
    assert_eq!(one.status, 200);
    assert_eq!(one.header("x-dosql-ltx-min-txid"), Some(last.to_string()));
    assert_eq!(
        db.send("GET", "/ltx?from=5&to=2", None).unwrap().error(400),
        "OUT_OF_WINDOW"
    );
}

fn kill_9_during_a_branch_leaves_the_source_whole_and_the_target_old_or_new(env: &[(&str, &str)]) {
    let mut env = env.to_vec();
    env.push(("DOSQL_MEMORY_BUDGET", "268435456"));
    let mut server = Server::start_with_env(&env);
    let db = server.db("src");
    fill(&db, 6000);
    let source_sum = db.int("SELECT sum(length(v)) FROM big");
    let target = server.db("dst");
    target.query("CREATE TABLE old(x)", json!([])).ok();
    target.query("INSERT INTO old VALUES (42)", json!([])).ok();
    for delay_ms in [10, 40, 150] {
        let url = format!("{}/db/src/branch", server.url());
        let req = std::thread::spawn(move || {
            dosql_e2e::client()
                .post(&url)
                .header("content-type", "application/json")
                .send(json!({"to": "dst", "force": true}).to_string().as_bytes())
                .map(|r| r.status().as_u16())
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        server.kill9();
        let _ = req.join();
        server.restart();
        let (db, target) = (server.db("src"), server.db("dst"));
        // The source: untouched.
        assert_eq!(db.int("SELECT sum(length(v)) FROM big"), source_sum);
        assert_eq!(db.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);
        // The target: its old database or the whole branch, never a mix.
        assert_eq!(target.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);
        let tables =
            target.rows("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name");
        if tables == vec![json!(["big"])] {
            assert_eq!(target.int("SELECT sum(length(v)) FROM big"), source_sum);
        } else {
            assert_eq!(
                tables,
                vec![json!(["old"])],
                "after kill -9 at {delay_ms} ms"
            );
            assert_eq!(target.int("SELECT x FROM old"), 42);
        }
        // Its history intact either way.
        let url = format!("{}/db/dst", server.url());
        let verified = ok(dosql(&["verify", "-q", &url]));
        assert!(verified.contains("it matches"), "{verified}");
    }
    // A branch after all that completes.
    post(
        &server.db("src"),
        "/branch",
        json!({"to": "dst", "force": true}),
    )
    .ok();
    assert_eq!(
        server.db("dst").int("SELECT sum(length(v)) FROM big"),
        source_sum
    );
}

/// A table of `rows` rows of 1 KB (about `rows` / 4 pages of 4 KiB).
fn fill(db: &Db, rows: u32) {
    db.query(
        "CREATE TABLE IF NOT EXISTS big(id INTEGER PRIMARY KEY, v BLOB)",
        json!([]),
    )
    .ok();
    db.query(
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<{rows}) \
             INSERT INTO big(v) SELECT randomblob(1000) FROM n"
        ),
        json!([]),
    )
    .ok();
}

fn kill_9_during_a_restore_by_copy_leaves_one_whole_database(env: &[(&str, &str)]) {
    let mut env = env.to_vec();
    env.push(("DOSQL_MEMORY_BUDGET", "268435456"));
    let mut server = Server::start_with_env(&env);
    let db = server.db("copy");
    fill(&db, 5000);
    let before = txid(&db);
    // Change more than a restore rewrites in one commit: the restore copies the whole state.
    db.query("UPDATE big SET v = randomblob(900)", json!([]))
        .ok();
    let after = txid(&db);
    let sum_before = {
        post(&db, "/restore", json!({"txid": before})).ok();
        let s = db.int("SELECT sum(length(v)) FROM big");
        post(&db, "/restore", json!({"txid": after})).ok();
        s
    };
    assert_eq!(sum_before, 5_000_000);
    assert_eq!(db.int("SELECT sum(length(v)) FROM big"), 4_500_000);
    for delay_ms in [5, 30, 120] {
        let url = format!("{}/db/copy/restore", server.url());
        let body = json!({"txid": before}).to_string();
        let req = std::thread::spawn(move || {
            dosql_e2e::client()
                .post(&url)
                .header("content-type", "application/json")
                .send(body.as_bytes())
                .map(|r| r.status().as_u16())
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        server.kill9();
        let _ = req.join();
        server.restart();
        let db = server.db("copy");
        assert_eq!(db.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);
        let sum = db.int("SELECT sum(length(v)) FROM big");
        assert!(
            sum == 5_000_000 || sum == 4_500_000,
            "after kill -9 at {delay_ms} ms: {sum}"
        );
        // History intact: both states still restorable, the checksum verified.
        let h = db.send("GET", "/history?limit=1000", None).unwrap().ok();
        assert_eq!(h["window"]["oldest_txid"], json!(0), "{h}");
        let url = format!("{}/db/copy", server.url());
        let verified = ok(dosql(&["verify", "-q", &url]));
        assert!(verified.contains("it matches"), "{verified}");
        post(&db, "/restore", json!({"txid": after})).ok();
        assert_eq!(db.int("SELECT sum(length(v)) FROM big"), 4_500_000);
    }
}

fn old_history_is_pruned_in_the_background_and_kill_9_there_loses_nothing(env: &[(&str, &str)]) {
    let mut env = env.to_vec();
    env.extend([
        ("HISTORY_RETENTION_MS", "1500"),
        ("DOSQL_MAINTAIN_DELAY_MS", "200"),
    ]);
    let mut server = Server::start_with_env(&env);
    let db = server.db("prune");
    db.query("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", json!([]))
        .ok();
    for i in 0..40 {
        db.query("INSERT INTO t(v) VALUES (?)", json!([format!("row {i}")]))
            .ok();
    }
    let last = txid(&db);
    // The alarm prunes what is older than 1.5 s; kill -9 once while it may be at it.
    std::thread::sleep(Duration::from_millis(1700));
    server.kill9();
    server.restart();
    let db = server.db("prune");
    assert_eq!(
        db.int("SELECT count(*) FROM t"),
        40,
        "nothing acknowledged lost"
    );
    // After the restart the alarm runs again: the window moves up to the last commit.
    let started = Instant::now();
    loop {
        let h = db.send("GET", "/history", None).unwrap().ok();
        if h["window"]["oldest_txid"].as_u64().unwrap() >= last {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the history was not pruned: {h}\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let stats = db.send("GET", "/_storage_stats", None).unwrap().ok();
    assert_eq!(stats["meta"]["log_bytes"], json!(0), "{stats}");
    assert_eq!(db.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);
    // A restore to a pruned txid is refused, naming the window.
    assert_eq!(
        post(&db, "/restore", json!({"txid": 1})).error(400),
        "OUT_OF_WINDOW"
    );
}
