//! The JSON API on an in-memory store: shapes, types, errors, atomicity.

use dosql_api::{Response, Session};
use dosql_pagestore::{Fault, FaultStore, MemStore, PageSize};
use dosql_vfs::VfsConfig;
use serde_json::{Value, json};

fn session(name: &str) -> Session {
    Session::open(name, MemStore::new(PageSize::DEFAULT), VfsConfig::default()).unwrap()
}

fn q(s: &mut Session, body: Value) -> Response {
    s.query(body.to_string().as_bytes())
}

fn ok(r: Response) -> Value {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

fn err(r: Response, status: u16, code: &str) -> Value {
    let body = r.json();
    assert_eq!(
        (r.status, body["error"]["code"].as_str()),
        (status, Some(code)),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    body
}

#[test]
fn query_answers_columns_rows_and_counts() {
    let mut s = session("api-basic");
    ok(q(
        &mut s,
        json!({"sql": "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB)"}),
    ));
    let r = ok(q(
        &mut s,
        json!({"sql": "INSERT INTO t(name, score, data) VALUES (?, ?, ?), ('b', 2.0, NULL)",
                               "params": ["a", 1.5, {"base64": "AAEC"}]}),
    ));
    assert_eq!(r["rows_affected"], 2);
    assert_eq!(r["last_insert_rowid"], 2);
    assert!(r["meta"]["pages_written"].as_u64().unwrap() > 0);
    let r = ok(q(
        &mut s,
        json!({"sql": "SELECT id, name, score, data FROM t WHERE name = :n", "params": {"n": "a"}}),
    ));
    assert_eq!(r["columns"], json!(["id", "name", "score", "data"]));
    assert_eq!(r["rows"], json!([[1, "a", 1.5, {"base64": "AAEC"}]]));
    assert_eq!(r["rows_affected"], 0);
}

#[test]
fn values_keep_their_sqlite_types() {
    let mut s = session("api-types");
    let r = ok(q(
        &mut s,
        json!({"sql": "SELECT 9007199254740993, -9223372036854775808, 2.0, 1e308*10, NULL, x'ff', ?, ?",
        "params": [{"int": "9223372036854775807"}, true]}),
    ));
    assert_eq!(
        r["rows"][0],
        json!([{"int": "9007199254740993"}, {"int": "-9223372036854775808"}, 2.0, {"float": "inf"}, null, {"base64": "/w=="}, {"int": "9223372036854775807"}, 1])
    );
    let text = String::from_utf8(q(&mut s, json!({"sql": "SELECT 2.0, 3"})).body).unwrap();
    assert!(
        text.contains("[2.0,3]"),
        "reals keep their fraction: {text}"
    );
}

#[test]
fn several_statements_run_in_order() {
    let mut s = session("api-multi");
    let r = ok(q(
        &mut s,
        json!({"sql": "CREATE TABLE t(x); INSERT INTO t VALUES (1),(2); SELECT sum(x) FROM t;"}),
    ));
    assert_eq!(r["rows"], json!([[3]]));
    let r = ok(q(
        &mut s,
        json!({"sql": "CREATE TABLE u(y); INSERT INTO u VALUES (?)", "params": [7]}),
    ));
    assert_eq!(r["rows_affected"], 1);
}

#[test]
fn caller_mistakes_are_4xx_and_change_nothing() {
    let mut s = session("api-errors");
    ok(q(&mut s, json!({"sql": "CREATE TABLE t(x UNIQUE)"})));
    ok(q(&mut s, json!({"sql": "INSERT INTO t VALUES (1)"})));
    err(s.query(b"{not json"), 400, "BAD_REQUEST");
    err(s.query(br#"{"sq": "SELECT 1"}"#), 400, "BAD_REQUEST");
    err(q(&mut s, json!({"sql": "SELEC 1"})), 400, "SQLITE_ERROR");
    err(
        q(&mut s, json!({"sql": "SELECT * FROM nope"})),
        400,
        "SQLITE_ERROR",
    );
    err(
        q(&mut s, json!({"sql": "INSERT INTO t VALUES (1)"})),
        400,
        "SQLITE_CONSTRAINT_UNIQUE",
    );
    err(
        q(&mut s, json!({"sql": "INSERT INTO t VALUES (?)"})),
        400,
        "SQLITE_RANGE",
    );
    err(
        q(
            &mut s,
            json!({"sql": "INSERT INTO t VALUES (?)", "params": [1, 2]}),
        ),
        400,
        "SQLITE_RANGE",
    );
    err(
        q(&mut s, json!({"sql": "SELECT 1", "params": [1]})),
        400,
        "SQLITE_RANGE",
    );
    err(
        q(
            &mut s,
            json!({"sql": "INSERT INTO t VALUES (:a)", "params": {"b": 1}}),
        ),
        400,
        "SQLITE_RANGE",
    );
    err(
        q(
            &mut s,
            json!({"sql": "INSERT INTO t VALUES (?)", "params": [[1]]}),
        ),
        400,
        "SQLITE_MISMATCH",
    );
    err(
        q(&mut s, json!({"sql": "BEGIN; INSERT INTO t VALUES (5)"})),
        400,
        "BAD_REQUEST",
    );
    err(q(&mut s, json!({"sql": "  ;  "})), 400, "BAD_REQUEST");
    // Parameters no statement takes are refused before anything runs, also where statements
    // run outside a transaction: one after stray `;`s (the HTTP fuzzer found it committed,
    // then refused), requests that manage their transactions or hold a PRAGMA, and a
    // statement that needs an earlier one's table. Nor does a PRAGMA get compiled (SQLite
    // applies `query_only` while compiling it).
    for sql in [
        ";;;; CREATE TABLE IF NOT EXISTS u(a)",
        "; PRAGMA user_version = 7",
        "CREATE TABLE v(a); INSERT INTO v VALUES (1); PRAGMA user_version = 3",
        "BEGIN; CREATE TABLE w(a); INSERT INTO w VALUES (1); COMMIT",
        "INSERT INTO t VALUES (9); PRAGMA query_only = 1",
        "CREATE TABLE x(a); INSERT INTO x VALUES ('?')",
    ] {
        err(
            q(&mut s, json!({"sql": sql, "params": {"nested": [1]}})),
            400,
            "SQLITE_RANGE",
        );
    }
    // A mark the text cannot rule out (`$` inside a name): checked after the statements ran,
    // inside the request's transaction, which is rolled back.
    err(
        q(
            &mut s,
            json!({"sql": "CREATE TABLE y$(a); INSERT INTO t VALUES (8)", "params": [1]}),
        ),
        400,
        "SQLITE_RANGE",
    );
    let r = ok(q(
        &mut s,
        json!({"sql": "SELECT count(*) FROM sqlite_schema WHERE name IN ('u', 'v', 'w', 'x', 'y$')"}),
    ));
    assert_eq!(r["rows"], json!([[0]]), "no table was created");
    let r = ok(q(&mut s, json!({"sql": "PRAGMA user_version"})));
    assert_eq!(r["rows"], json!([[0]]), "the pragma did not run");
    ok(q(&mut s, json!({"sql": "CREATE TABLE q(a)"})));
    ok(q(&mut s, json!({"sql": "DROP TABLE q"})));
    let r = ok(q(&mut s, json!({"sql": "SELECT x FROM t"})));
    assert_eq!(
        r["rows"],
        json!([[1]]),
        "nothing changed, and the session still works"
    );
}

#[test]
fn a_batch_is_all_or_nothing() {
    let mut s = session("api-batch");
    let r = s.batch(
        json!([
            {"sql": "CREATE TABLE t(x UNIQUE)"},
            {"sql": "INSERT INTO t VALUES (?)", "params": [1]},
            {"sql": "SELECT count(*) FROM t"}
        ])
        .to_string()
        .as_bytes(),
    );
    assert_eq!(ok(r)["results"][2]["rows"], json!([[1]]));
    let r = s.batch(
        json!([
            {"sql": "INSERT INTO t VALUES (2)"},
            {"sql": "CREATE TABLE u(y)"},
            {"sql": "INSERT INTO t VALUES (1)"}
        ])
        .to_string()
        .as_bytes(),
    );
    let body = err(r, 400, "SQLITE_CONSTRAINT_UNIQUE");
    assert_eq!(body["error"]["statement"], 2);
    let r = ok(q(
        &mut s,
        json!({"sql": "SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM sqlite_schema WHERE name='u')"}),
    ));
    assert_eq!(r["rows"], json!([[1, 0]]), "the failed batch left no trace");
    err(s.batch(b"{}"), 400, "BAD_REQUEST");
}

#[test]
fn storage_failures_are_5xx_with_the_store_message_and_lose_nothing() {
    let (store, plan) = FaultStore::new(MemStore::new(PageSize::DEFAULT));
    let mut s = Session::open("api-faults", store, VfsConfig::default()).unwrap();
    ok(q(
        &mut s,
        json!({"sql": "CREATE TABLE t(x); INSERT INTO t VALUES (1)"}),
    ));
    plan.fail_all_commits(Some(Fault::Error));
    let body = err(
        q(&mut s, json!({"sql": "INSERT INTO t VALUES (2)"})),
        500,
        "SQLITE_IOERR_FSYNC",
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("injected fault"),
        "{body}"
    );
    plan.fail_all_commits(None);
    let r = ok(q(&mut s, json!({"sql": "SELECT x FROM t"})));
    assert_eq!(r["rows"], json!([[1]]));
    ok(q(&mut s, json!({"sql": "INSERT INTO t VALUES (3)"})));
}

#[test]
fn stats_report_the_store_shape() {
    let mut s = session("api-stats");
    ok(q(&mut s, json!({"sql": "CREATE TABLE t(x)"})));
    let r = ok(s.stats());
    assert_eq!(r["page_size"], 4096);
    assert_eq!(r["txid"], 1);
    assert_eq!(r["vfs"]["commits"], 1);
}

#[test]
fn a_batch_repeating_a_statement_binds_each_one_afresh() {
    let mut s = session("api-repeat");
    let body = json!([
        {"sql": "SELECT ?1 AS a, ?2 AS b", "params": [1, "x"]},
        {"sql": "SELECT ?1 AS a, ?2 AS b", "params": [2, null]},
        {"sql": "SELECT :n AS a", "params": {":n": 3}},
        {"sql": "SELECT ?1 AS a, ?2 AS b", "params": [4, "z"]},
        {"sql": "SELECT ?1 AS a, ?2 AS b", "params": [5, "w"]},
    ]);
    let answer = ok(s.batch(body.to_string().as_bytes()));
    let rows: Vec<&Value> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["rows"][0])
        .collect();
    assert_eq!(
        rows,
        [
            &json!([1, "x"]),
            &json!([2, null]),
            &json!([3]),
            &json!([4, "z"]),
            &json!([5, "w"]),
        ]
    );
    // A repeat short of parameters is refused, as a first statement would be.
    let short = json!([
        {"sql": "SELECT ?1 AS a, ?2 AS b", "params": [1, "x"]},
        {"sql": "SELECT ?1 AS a, ?2 AS b", "params": [2]},
    ]);
    let e = err(s.batch(short.to_string().as_bytes()), 400, "SQLITE_RANGE");
    assert_eq!(e["error"]["statement"], 1);
}

#[test]
fn refused_sql_is_403_naming_what_and_changes_nothing() {
    let mut s = session("api-refused");
    ok(q(
        &mut s,
        json!({"sql": "CREATE TABLE t(x); INSERT INTO t VALUES (1)"}),
    ));
    for (sql, what) in [
        (
            "PRAGMA writable_schema=1; UPDATE sqlite_master SET sql='garbage' WHERE name='t'",
            "writable_schema",
        ),
        ("ATTACH 'other.db' AS o", "ATTACH 'other.db'"),
        ("PRAGMA journal_mode = OFF", "journal_mode"),
        ("SELECT load_extension('x')", "load_extension"),
    ] {
        let body = err(q(&mut s, json!({ "sql": sql })), 403, "SQLITE_AUTH");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(what), "{sql}: {message}");
    }
    let r = ok(q(&mut s, json!({"sql": "SELECT x FROM t"})));
    assert_eq!(r["rows"], json!([[1]]));
}

#[test]
fn an_answer_over_the_limit_is_refused_while_its_rows_are_stepped() {
    let mut s = session("api-too-large");
    s.set_limits(dosql_api::Limits {
        max_answer_bytes: 10_000,
    });
    ok(q(
        &mut s,
        json!({"sql": "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
                      WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<1000)
                      INSERT INTO t SELECT i, printf('%050d', i) FROM n"}),
    ));
    err(
        q(&mut s, json!({"sql": "SELECT * FROM t"})),
        400,
        "RESULT_TOO_LARGE",
    );
    err(
        q(&mut s, json!({"sql": "SELECT zeroblob(20000)"})),
        400,
        "RESULT_TOO_LARGE",
    );
    // A batch counts every statement's rows.
    let r = s.batch(
        json!([{"sql": "SELECT * FROM t LIMIT 100"}, {"sql": "SELECT * FROM t LIMIT 100"}])
            .to_string()
            .as_bytes(),
    );
    err(r, 400, "RESULT_TOO_LARGE");
    let r = ok(q(&mut s, json!({"sql": "SELECT count(*) FROM t"})));
    assert_eq!(r["rows"], json!([[1000]]));
}

#[test]
fn pages_read_a_large_result_whole_and_in_order() {
    let mut s = session("api-pages");
    s.set_limits(dosql_api::Limits {
        max_answer_bytes: 5_000,
    });
    ok(q(
        &mut s,
        json!({"sql": "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
                      WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<1000)
                      INSERT INTO t SELECT i, printf('%050d', i) FROM n"}),
    ));
    let mut ids = Vec::new();
    let mut offset = 0u64;
    let mut txid = None;
    let mut pages = 0;
    loop {
        let mut body = json!({"sql": "SELECT id, v FROM t ORDER BY id", "row_offset": offset, "max_rows": 300});
        if let Some(t) = txid {
            body["at_txid"] = json!(t);
        }
        let r = ok(q(&mut s, body));
        txid = Some(r["txid"].as_u64().unwrap());
        pages += 1;
        let rows = r["rows"].as_array().unwrap();
        assert!(!rows.is_empty() && rows.len() <= 300);
        ids.extend(rows.iter().map(|row| row[0].as_i64().unwrap()));
        match r["next_offset"].as_u64() {
            Some(next) => offset = next,
            None => break,
        }
    }
    assert_eq!(ids, (1..=1000).collect::<Vec<_>>());
    assert!(
        pages > 1000 / 300,
        "the size limit cut pages short: {pages}"
    );
    // A write between pages is seen, and the pages refuse to mix states.
    ok(q(&mut s, json!({"sql": "INSERT INTO t(v) VALUES ('new')"})));
    let body = json!({"sql": "SELECT id FROM t", "row_offset": 10, "max_rows": 5, "at_txid": txid});
    err(q(&mut s, body), 409, "TXID_CHANGED");
    // Paging runs a query again: only read-only statements.
    let body = json!({"sql": "DELETE FROM t RETURNING id", "max_rows": 5});
    err(q(&mut s, body), 400, "BAD_REQUEST");
    let r = ok(q(&mut s, json!({"sql": "SELECT count(*) FROM t"})));
    assert_eq!(r["rows"], json!([[1001]]));
    let batch = s.batch(
        json!([{"sql": "SELECT 1", "max_rows": 1}])
            .to_string()
            .as_bytes(),
    );
    err(batch, 400, "BAD_REQUEST");
}

#[test]
fn a_rejected_request_commits_nothing() {
    let mut s = session("api-rejected");
    ok(q(&mut s, json!({"sql": "CREATE TABLE t(x UNIQUE)"})));
    let head = |s: &Session| s.database().head();
    let before = head(&s);
    // Several statements are one transaction: the first insert does not stay.
    err(
        q(
            &mut s,
            json!({"sql": "INSERT INTO t VALUES (1); INSERT INTO nope VALUES (2)"}),
        ),
        400,
        "SQLITE_ERROR",
    );
    // Parameters no statement takes are refused before anything runs.
    err(
        q(
            &mut s,
            json!({"sql": "INSERT INTO t VALUES (3)", "params": [1]}),
        ),
        400,
        "SQLITE_RANGE",
    );
    // A batch may not end its own transaction.
    for stmts in [
        json!([{"sql": "INSERT INTO t VALUES (4)"}, {"sql": "COMMIT"}, {"sql": "INSERT INTO nope VALUES (5)"}]),
        json!([{"sql": "ROLLBACK"}, {"sql": "INSERT INTO t VALUES (6)"}]),
        json!([{"sql": "INSERT INTO t VALUES (7); END"}]),
    ] {
        let body = err(s.batch(stmts.to_string().as_bytes()), 400, "BAD_REQUEST");
        assert!(body["error"]["statement"].is_number(), "{body}");
    }
    assert_eq!(head(&s), before);
    let r = ok(q(&mut s, json!({"sql": "SELECT count(*) FROM t"})));
    assert_eq!(r["rows"], json!([[0]]));
    // A savepoint inside a batch is fine.
    let r = s.batch(
        json!([{"sql": "INSERT INTO t VALUES (8)"}, {"sql": "SAVEPOINT a"}, {"sql": "INSERT INTO t VALUES (9)"}, {"sql": "ROLLBACK TO a"}])
            .to_string()
            .as_bytes(),
    );
    ok(r);
    let r = ok(q(&mut s, json!({"sql": "SELECT x FROM t"})));
    assert_eq!(r["rows"], json!([[8]]));
}
