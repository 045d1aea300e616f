//! A client cannot brick a database or exhaust the isolate (issue: defensive SQL, memory
//! budgets, size limits), end to end on workerd. Each case is refused with a 4xx, and the
//! database still answers correctly afterwards.

use dosql_e2e::{Db, Server};
use serde_json::{Value as Json, json};

fn seeded(server: &Server, name: &str) -> Db {
    let db = server.db(name);
    db.query(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'one'), (2, 'two')",
        json!([]),
    )
    .ok();
    db
}

fn still_answers(db: &Db) {
    assert_eq!(
        db.rows("SELECT id, v FROM t ORDER BY id"),
        vec![json!([1, "one"]), json!([2, "two"])]
    );
    assert_eq!(db.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);
}

fn refused(db: &Db, sql: &str, status: u16, code: &str) -> String {
    let answer = db.query(sql, json!([]));
    assert_eq!(answer.error(status), code, "{sql}");
    answer.body["error"]["message"].as_str().unwrap().to_owned()
}

#[test]
fn the_schema_cannot_be_rewritten_nor_files_attached_nor_huge_values_made() {
    let server = Server::start();
    let db = seeded(&server, "f");
    // 1. writable_schema: once bricked every later request with "malformed database schema".
    let why = refused(
        &db,
        "PRAGMA writable_schema=1; UPDATE sqlite_master SET sql='garbage' WHERE name='t'",
        403,
        "SQLITE_AUTH",
    );
    assert!(why.contains("writable_schema"), "{why}");
    still_answers(&db);
    // 2. ATTACH of a file: was a 500 SQLITE_CANTOPEN, a server failure for a caller's mistake.
    let why = refused(&db, "ATTACH 'other.db' AS o", 403, "SQLITE_AUTH");
    assert!(why.contains("ATTACH 'other.db'"), "{why}");
    assert!(
        db.query("ATTACH ':memory:' AS m; DETACH m", json!([]))
            .status
            == 200
    );
    // Journaling and locking modes the VFS does not support.
    for sql in [
        "PRAGMA journal_mode = OFF",
        "PRAGMA locking_mode = EXCLUSIVE",
    ] {
        refused(&db, sql, 403, "SQLITE_AUTH");
    }
    // 3. Huge values: a ~667 MB answer after 16 s, and 100 MB, both refused at once.
    for sql in ["SELECT zeroblob(500000000)", "SELECT randomblob(100000000)"] {
        let started = std::time::Instant::now();
        let why = refused(&db, sql, 400, "SQLITE_TOOBIG");
        assert!(why.contains("at most"), "{why}");
        assert!(
            started.elapsed().as_secs() < 5,
            "{sql} took {:?}",
            started.elapsed()
        );
    }
    // An answer over the size limit is refused while its rows are stepped...
    let big = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<40) \
               SELECT i, randomblob(1000000) FROM n";
    refused(&db, big, 400, "RESULT_TOO_LARGE");
    // ...and can be read in pages instead.
    let mut offset = 0;
    let mut got = 0;
    loop {
        let body = json!({"sql": big.replace("randomblob(1000000)", "zeroblob(1000000)"), "row_offset": offset, "max_rows": 100}).to_string();
        let page = db
            .send("POST", "/query", Some(body.as_bytes()))
            .unwrap()
            .ok();
        got += page["rows"].as_array().unwrap().len();
        match page["next_offset"].as_u64() {
            Some(n) => offset = n,
            None => break,
        }
    }
    assert_eq!(got, 40);
    still_answers(&db);
}

#[test]
fn a_200_mb_transaction_fails_clearly_and_commits_nothing() {
    let server = Server::start();
    let db = seeded(&server, "big");
    let txid = db.send("GET", "/stats", None).unwrap().ok()["txid"].clone();
    let answer = db.query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<200000) \
         INSERT INTO t(v) SELECT hex(randomblob(500)) FROM n",
        json!([]),
    );
    assert_eq!(answer.error(413), "SQLITE_FULL");
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("split it into smaller transactions"),
        "{message}"
    );
    // The same as a batch, and as a memory-hungry sort: refused, nothing committed.
    let batch = db.batch(json!([
        {"sql": "INSERT INTO t(v) VALUES ('kept?')"},
        {"sql": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<200000) INSERT INTO t(v) SELECT hex(randomblob(500)) FROM n"},
    ]));
    assert_eq!(batch.error(413), "SQLITE_FULL");
    let sort = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<200000) \
                SELECT count(*), max(b) FROM (SELECT x, randomblob(1000) AS b FROM c ORDER BY b LIMIT 199999)";
    let why = refused(&db, sort, 400, "SQLITE_NOMEM");
    assert!(why.contains("share"), "{why}");
    let stats = db.send("GET", "/stats", None).unwrap().ok();
    assert_eq!(stats["txid"], txid, "nothing was committed: {stats}");
    still_answers(&db);
    db.query("INSERT INTO t VALUES (3, 'three')", json!([]))
        .ok();
    assert_eq!(db.int("SELECT count(*) FROM t"), 3);
}

/// 100 databases of about 8 MB, each written and then read in turn in one workerd: the
/// instances' wasm memory stays within the isolate's budget, workerd's resident memory under
/// 352 MB, and every database answers correctly afterwards.
#[test]
fn a_hundred_databases_of_8_mb_stay_within_the_memory_budget() {
    const N: usize = 100;
    // Its peak is 290-310 MB, and reached 320 once in a full `make test` (V8 collects
    // dropped instances when it likes, later on a loaded machine); without the budget it grew
    // ~20 MB with each database (668 MB after 30), which this still catches long before 100.
    const RSS_LIMIT: u64 = 352 << 20;
    let server = Server::start();
    let fill = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<10000) \
                INSERT INTO t(k, v) SELECT ?1 * 100000 + i, printf('%.200c', 97 + i % 26) || hex(randomblob(10)) FROM n";
    let mut peak_rss = 0;
    let mut check = |server: &Server, db: &Db, phase: &str| {
        let stats = db.send("GET", "/stats", None).unwrap().ok();
        let m = &stats["memory"];
        let (total, budget) = (
            m["isolate_bytes"].as_u64().unwrap(),
            m["budget_bytes"].as_u64().unwrap(),
        );
        assert!(
            total <= budget,
            "{phase}: instances hold {total} bytes, budget {budget}: {stats}"
        );
        assert!(m["instance_bytes"].as_u64().unwrap() > 0, "{stats}");
        let rss = server.rss_bytes().expect("workerd's VmRSS");
        peak_rss = peak_rss.max(rss);
        assert!(rss < RSS_LIMIT, "{phase}: workerd holds {} MB", rss >> 20);
        stats
    };
    for i in 0..N {
        let db = server.db(&format!("tenant-{i}"));
        db.query("CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)", json!([]))
            .ok();
        for part in 0..4 {
            db.query(fill, json!([part])).ok();
        }
        let stats = check(&server, &db, &format!("writing {i}"));
        assert!(
            stats["page_count"].as_u64().unwrap() * 4096 > 7 << 20,
            "{stats}"
        );
    }
    let mut last = Json::Null;
    for i in 0..N {
        let db = server.db(&format!("tenant-{i}"));
        let rows = db.rows("SELECT count(*), sum(length(v)), min(k), max(k) FROM t");
        assert_eq!(
            rows[0],
            json!([40000, 40000 * 220, 1, 300000 + 10000]),
            "tenant-{i}"
        );
        assert_eq!(
            db.rows("PRAGMA quick_check"),
            vec![json!(["ok"])],
            "tenant-{i}"
        );
        last = check(&server, &db, &format!("reading {i}"));
    }
    let m = &last["memory"];
    assert!(
        m["dropped_instances"].as_u64().unwrap() + m["reused_instances"].as_u64().unwrap() >= 90,
        "idle instances were given up: {last}"
    );
    eprintln!("peak workerd RSS {} MB; {}", peak_rss >> 20, last["memory"]);
}
