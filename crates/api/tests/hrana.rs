//! Hrana over HTTP on an in-memory store: value encoding, batons, batch conditions,
//! isolation between streams, expiry.

use std::time::{Duration, Instant};

use dosql_api::hrana::{Hrana, MAX_STREAMS, Version};
use dosql_api::http::Request;
use dosql_pagestore::{MemStore, PageSize};
use dosql_vfs::{Database, VfsConfig};
use serde_json::{Value, json};

fn database(name: &str) -> Database {
    Database::attach(name, MemStore::new(PageSize::DEFAULT), VfsConfig::default()).unwrap()
}

/// One pipeline request: (HTTP status, body as JSON).
fn pipe(
    h: &mut Hrana,
    db: &Database,
    version: Version,
    baton: Option<&str>,
    requests: Value,
    now: Instant,
) -> (u16, Value) {
    let body = json!({"baton": baton, "requests": requests}).to_string();
    let r = h.pipeline(db, version, body.as_bytes(), now);
    let json = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&r.body)));
    (r.status, json)
}

/// A client-side stream: keeps the baton between requests, like the JS client.
struct Client {
    baton: Option<String>,
    version: Version,
}

impl Client {
    fn new() -> Client {
        Client {
            baton: None,
            version: Version::V2,
        }
    }

    fn v3() -> Client {
        Client {
            baton: None,
            version: Version::V3,
        }
    }

    /// Sends requests; asserts HTTP 200 and returns the results.
    fn send(&mut self, h: &mut Hrana, db: &Database, requests: Value) -> Vec<Value> {
        self.send_at(h, db, requests, Instant::now())
    }

    fn send_at(
        &mut self,
        h: &mut Hrana,
        db: &Database,
        requests: Value,
        now: Instant,
    ) -> Vec<Value> {
        let n = requests.as_array().unwrap().len();
        let (status, body) = pipe(h, db, self.version, self.baton.as_deref(), requests, now);
        assert_eq!(status, 200, "{body}");
        assert!(body["base_url"].is_null());
        let baton = body["baton"].as_str().map(str::to_owned);
        if let (Some(old), Some(new)) = (&self.baton, &baton) {
            assert_ne!(old, new, "a baton is good for one request");
        }
        self.baton = baton;
        let results = body["results"].as_array().unwrap().clone();
        assert_eq!(results.len(), n);
        results
    }

    /// Executes one statement; the StmtResult, or panics with the error.
    fn execute(&mut self, h: &mut Hrana, db: &Database, stmt: Value) -> Value {
        let r = self
            .send(h, db, json!([{"type": "execute", "stmt": stmt}]))
            .remove(0);
        assert_eq!(r["type"], "ok", "{r}");
        assert_eq!(r["response"]["type"], "execute");
        r["response"]["result"].clone()
    }

    /// Executes one statement that must fail; its Error.
    fn fail(&mut self, h: &mut Hrana, db: &Database, stmt: Value) -> Value {
        let r = self
            .send(h, db, json!([{"type": "execute", "stmt": stmt}]))
            .remove(0);
        assert_eq!(r["type"], "error", "{r}");
        let e = r["error"].clone();
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        e
    }
}

fn sql(s: &str) -> Value {
    json!({"sql": s})
}

fn int(i: i64) -> Value {
    json!({"type": "integer", "value": i.to_string()})
}

fn float(f: f64) -> Value {
    json!({"type": "float", "value": f})
}

fn text(s: &str) -> Value {
    json!({"type": "text", "value": s})
}

/// One execute that opens and closes its stream in one request, as `client.execute` does.
fn once(h: &mut Hrana, db: &Database, stmt: Value) -> Value {
    let mut c = Client::new();
    let r = c.send(
        h,
        db,
        json!([{"type": "execute", "stmt": stmt}, {"type": "close"}]),
    );
    assert_eq!(c.baton, None, "closed streams answer a null baton");
    assert_eq!(r[1], json!({"type": "ok", "response": {"type": "close"}}));
    assert_eq!(r[0]["type"], "ok", "{}", r[0]);
    r[0]["response"]["result"].clone()
}

fn rows(result: &Value) -> Value {
    result["rows"].clone()
}

#[test]
fn values_travel_with_their_types() {
    let db = database("hrana-values");
    let mut h = Hrana::new();
    once(
        &mut h,
        &db,
        sql("CREATE TABLE t(i INTEGER, r REAL, s TEXT, b BLOB, n)"),
    );
    let args = json!([
        int(i64::MAX),
        float(2.0),
        text("héllo \"quoted\" \u{1F600}"),
        {"type": "blob", "base64": "AAEC/w=="},
        {"type": "null"},
    ]);
    let r = once(
        &mut h,
        &db,
        json!({"sql": "INSERT INTO t VALUES (?, ?, ?, ?, ?)", "args": args}),
    );
    assert_eq!(r["affected_row_count"], 1);
    assert_eq!(r["last_insert_rowid"], "1");
    // Integers as JSON numbers and unpadded base64 are accepted too.
    once(
        &mut h,
        &db,
        json!({"sql": "INSERT INTO t VALUES (?, ?, ?, ?, ?)", "args": [
            {"type": "integer", "value": i64::MIN}, float(-0.5), text(""),
            {"type": "blob", "base64": "AAEC/w"}, {"type": "null"}]}),
    );
    let r = once(
        &mut h,
        &db,
        sql("SELECT i, r, s, b, n FROM t ORDER BY rowid"),
    );
    assert_eq!(
        r["cols"],
        json!([
            {"name": "i", "decltype": "INTEGER"},
            {"name": "r", "decltype": "REAL"},
            {"name": "s", "decltype": "TEXT"},
            {"name": "b", "decltype": "BLOB"},
            {"name": "n", "decltype": null},
        ])
    );
    let blob = json!({"type": "blob", "base64": "AAEC/w=="});
    assert_eq!(
        rows(&r),
        json!([
            [int(i64::MAX), float(2.0), text("héllo \"quoted\" \u{1F600}"), blob, {"type": "null"}],
            [int(i64::MIN), float(-0.5), text(""), blob, {"type": "null"}],
        ])
    );
    assert_eq!(r["affected_row_count"], 0);

    // Floats keep their fraction on the wire; infinities are 1e999 (JSON.parse → Infinity).
    let body = json!({"baton": null, "requests": [
        {"type": "execute", "stmt": sql("SELECT 3.0, 1e999, -1e999, 9007199254740993")}]});
    let resp = h.pipeline(
        &db,
        Version::V2,
        body.to_string().as_bytes(),
        Instant::now(),
    );
    let raw = String::from_utf8(resp.body).unwrap();
    assert!(raw.contains(r#"{"type":"float","value":3.0}"#), "{raw}");
    assert!(raw.contains(r#"{"type":"float","value":1e999}"#), "{raw}");
    assert!(raw.contains(r#"{"type":"float","value":-1e999}"#), "{raw}");
    assert!(
        raw.contains(r#"{"type":"integer","value":"9007199254740993"}"#),
        "{raw}"
    );

    // Bad values are the statement's error, not the request's.
    let mut c = Client::new();
    for bad in [
        json!({"type": "integer", "value": "12x"}),
        json!({"type": "integer", "value": "9223372036854775808"}),
        json!({"type": "blob", "base64": "!!"}),
    ] {
        let e = c.fail(&mut h, &db, json!({"sql": "SELECT ?", "args": [bad]}));
        assert_eq!(e["code"], "ARGS_INVALID", "{e}");
    }
    let r = c.send(
        &mut h,
        &db,
        json!([{"type": "execute", "stmt": {"sql": "SELECT ?", "args": [{"type": "date"}]}}]),
    );
    assert_eq!(r[0]["error"]["code"], "PROTOCOL_ERROR", "{}", r[0]);
}

#[test]
fn positional_and_named_arguments() {
    let db = database("hrana-args");
    let mut h = Hrana::new();
    let mut c = Client::new();
    c.execute(&mut h, &db, sql("CREATE TABLE t(a, b, c)"));
    c.execute(
        &mut h,
        &db,
        json!({"sql": "INSERT INTO t VALUES (?, ?3, ?2)", "args": [int(1), int(3), int(2)]}),
    );
    // Names with or without their prefix; named arguments win over positional ones.
    c.execute(
        &mut h,
        &db,
        json!({"sql": "INSERT INTO t VALUES (:a, @b, $c)", "named_args": [
            {"name": "a", "value": int(10)},
            {"name": "@b", "value": int(20)},
            {"name": "c", "value": int(30)},
        ]}),
    );
    c.execute(
        &mut h,
        &db,
        json!({"sql": "INSERT INTO t VALUES (:a, :b, :c)",
               "args": [int(7), int(8), int(9)],
               "named_args": [{"name": ":c", "value": int(300)}]}),
    );
    let r = c.execute(&mut h, &db, sql("SELECT a, b, c FROM t ORDER BY a"));
    assert_eq!(
        rows(&r),
        json!([
            [int(1), int(2), int(3)],
            [int(7), int(8), int(300)],
            [int(10), int(20), int(30)]
        ])
    );

    for stmt in [
        json!({"sql": "SELECT ?, ?", "args": [int(1)]}),
        json!({"sql": "SELECT ?", "args": [int(1), int(2)]}),
        json!({"sql": "SELECT 1", "args": [int(1)]}),
        json!({"sql": "SELECT :x", "named_args": [{"name": "y", "value": int(1)}]}),
        json!({"sql": "SELECT :x"}),
    ] {
        let e = c.fail(&mut h, &db, stmt.clone());
        assert_eq!(e["code"], "ARGS_INVALID", "{stmt}: {e}");
    }
}

#[test]
fn counts_rowids_and_sql_errors() {
    let db = database("hrana-counts");
    let mut h = Hrana::new();
    let mut c = Client::new();
    c.execute(
        &mut h,
        &db,
        sql("CREATE TABLE t(id INTEGER PRIMARY KEY, x UNIQUE)"),
    );
    let r = c.execute(&mut h, &db, sql("INSERT INTO t(x) VALUES (1), (2), (3)"));
    assert_eq!(
        (
            r["affected_row_count"].clone(),
            r["last_insert_rowid"].clone()
        ),
        (json!(3), json!("3"))
    );
    let r = c.execute(&mut h, &db, sql("UPDATE t SET x = x + 10 WHERE id >= 2"));
    assert_eq!(r["affected_row_count"], 2);
    let r = c.execute(&mut h, &db, sql("SELECT count(*) AS n FROM t"));
    assert_eq!(r["affected_row_count"], 0, "a SELECT affects no rows");
    assert_eq!(r["cols"], json!([{"name": "n", "decltype": null}]));
    let r = c.execute(
        &mut h,
        &db,
        json!({"sql": "INSERT INTO t(x) VALUES (99)", "want_rows": false}),
    );
    assert_eq!(r["last_insert_rowid"], "4");
    let r = c.execute(
        &mut h,
        &db,
        json!({"sql": "SELECT * FROM t", "want_rows": false}),
    );
    assert_eq!(
        (rows(&r), r["cols"].as_array().unwrap().len()),
        (json!([]), 2)
    );

    let e = c.fail(&mut h, &db, sql("INSERT INTO t(x) VALUES (1)"));
    assert_eq!(e["code"], "SQLITE_CONSTRAINT", "{e}");
    assert!(e["message"].as_str().unwrap().contains("UNIQUE"), "{e}");
    let e = c.fail(&mut h, &db, sql("SELEC 1"));
    assert_eq!(e["code"], "SQLITE_ERROR", "{e}");
    let e = c.fail(&mut h, &db, sql("SELECT * FROM nope"));
    assert!(
        e["message"].as_str().unwrap().contains("no such table"),
        "{e}"
    );
    let e = c.fail(&mut h, &db, sql("SELECT 1; SELECT 2"));
    assert_eq!(e["code"], "SQL_MANY_STATEMENTS", "{e}");
    let e = c.fail(&mut h, &db, sql("  -- nothing"));
    assert_eq!(e["code"], "SQL_NO_STATEMENT", "{e}");
    let e = c.fail(&mut h, &db, json!({}));
    assert_eq!(e["code"], "PROTOCOL_ERROR", "{e}");
    // A failed request leaves the stream usable, and every request of a pipeline runs.
    let r = c.send(
        &mut h,
        &db,
        json!([
            {"type": "execute", "stmt": sql("SELECT nope")},
            {"type": "execute", "stmt": sql("SELECT 1")},
            {"type": "teleport"},
            {"type": "execute", "stmt": sql("SELECT 2")},
        ]),
    );
    let types: Vec<&str> = r.iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["error", "ok", "error", "ok"]);
    assert_eq!(r[2]["error"]["code"], "PROTOCOL_ERROR");
    assert!(c.baton.is_some());
}

#[test]
fn batons_are_single_use_and_closing_ends_the_stream() {
    let db = database("hrana-batons");
    let mut h = Hrana::new();
    let now = Instant::now();
    let (s, first) = pipe(&mut h, &db, Version::V2, None, json!([]), now);
    assert_eq!(s, 200);
    let b1 = first["baton"].as_str().unwrap().to_owned();
    assert!(b1.len() >= 32, "192 random bits: {b1}");
    let (_, second) = pipe(&mut h, &db, Version::V2, Some(&b1), json!([]), now);
    let b2 = second["baton"].as_str().unwrap().to_owned();
    assert_ne!(b1, b2);
    // The used baton is gone; so is any baton never issued.
    for stale in [b1.as_str(), "not-a-baton"] {
        let (s, e) = pipe(&mut h, &db, Version::V2, Some(stale), json!([]), now);
        assert_eq!((s, e["code"].as_str()), (400, Some("BATON_INVALID")), "{e}");
        assert!(e["message"].as_str().unwrap().contains("baton"));
    }
    assert_eq!(h.open_streams(), 1);
    // Requests after a close in the same pipeline fail; the answer's baton is null.
    let (s, r) = pipe(
        &mut h,
        &db,
        Version::V2,
        Some(&b2),
        json!([{"type": "close"}, {"type": "execute", "stmt": sql("SELECT 1")}]),
        now,
    );
    assert_eq!(s, 200);
    assert_eq!(r["baton"], Value::Null);
    assert_eq!(r["results"][1]["error"]["code"], "STREAM_CLOSED");
    assert_eq!(h.open_streams(), 0);
    let (s, e) = pipe(&mut h, &db, Version::V2, Some(&b2), json!([]), now);
    assert_eq!((s, e["code"].as_str()), (400, Some("BATON_INVALID")));

    // A body that is not a pipeline request is an HTTP error with a Hrana Error body.
    for body in [&b"{"[..], b"[]", br#"{"requests": 5}"#] {
        let r = h.pipeline(&db, Version::V2, body, now);
        let e: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (r.status, e["code"].as_str()),
            (400, Some("PROTOCOL_ERROR")),
            "{e}"
        );
    }
}

/// The batch @libsql/client sends for `client.batch(stmts, mode)`: BEGIN, each statement on
/// the previous one's success, COMMIT on the last one's, ROLLBACK unless the COMMIT worked.
fn client_batch(begin: &str, stmts: &[Value], v3: bool) -> Value {
    let mut steps = vec![json!({"stmt": sql(begin)})];
    for (i, s) in stmts.iter().enumerate() {
        let mut cond = json!({"type": "ok", "step": i});
        if v3 {
            cond = json!({"type": "and", "conds": [cond, {"type": "not", "cond": {"type": "is_autocommit"}}]});
        }
        steps.push(json!({"condition": cond, "stmt": s}));
    }
    let n = stmts.len();
    steps.push(json!({"condition": {"type": "ok", "step": n}, "stmt": sql("COMMIT")}));
    steps.push(json!({"condition": {"type": "not", "cond": {"type": "ok", "step": n + 1}}, "stmt": sql("ROLLBACK")}));
    json!({"steps": steps})
}

fn count(h: &mut Hrana, db: &Database, table: &str) -> i64 {
    let r = once(h, db, sql(&format!("SELECT count(*) FROM {table}")));
    r["rows"][0][0]["value"].as_str().unwrap().parse().unwrap()
}

#[test]
fn batches_follow_their_conditions() {
    let db = database("hrana-batch");
    let mut h = Hrana::new();
    once(&mut h, &db, sql("CREATE TABLE t(x UNIQUE)"));
    for (begin, v3) in [
        ("BEGIN IMMEDIATE", false),
        ("BEGIN DEFERRED", false),
        ("BEGIN IMMEDIATE", true),
    ] {
        let mut c = if v3 { Client::v3() } else { Client::new() };
        let before = count(&mut h, &db, "t");
        let good = [
            json!({"sql": "INSERT INTO t VALUES (?)", "args": [int(before + 1)]}),
            json!({"sql": "INSERT INTO t VALUES (?)", "args": [int(before + 2)]}),
            sql("SELECT count(*) FROM t"),
        ];
        let r = c.send(
            &mut h,
            &db,
            json!([{"type": "batch", "batch": client_batch(begin, &good, v3)}]),
        );
        let result = &r[0]["response"]["result"];
        assert_eq!(r[0]["response"]["type"], "batch", "{}", r[0]);
        let errors = result["step_errors"].as_array().unwrap();
        assert!(errors.iter().all(Value::is_null), "{result}");
        let results = result["step_results"].as_array().unwrap();
        assert_eq!(results.len(), 6);
        assert_eq!(results[3]["rows"][0][0], int(before + 2));
        assert!(results[5].is_null(), "ROLLBACK skipped after a good COMMIT");
        assert_eq!(count(&mut h, &db, "t"), before + 2);

        // The second statement fails: later steps and COMMIT are skipped, ROLLBACK runs, and
        // the first statement's row is gone.
        let bad = [
            json!({"sql": "INSERT INTO t VALUES (?)", "args": [int(before + 3)]}),
            json!({"sql": "INSERT INTO t VALUES (?)", "args": [int(before + 1)]}),
            sql("SELECT 1"),
        ];
        let r = c.send(
            &mut h,
            &db,
            json!([{"type": "batch", "batch": client_batch(begin, &bad, v3)}]),
        );
        let result = &r[0]["response"]["result"];
        let (results, errors) = (
            result["step_results"].as_array().unwrap(),
            result["step_errors"].as_array().unwrap(),
        );
        assert!(results[1].is_object() && errors[1].is_null());
        assert_eq!(errors[2]["code"], "SQLITE_CONSTRAINT", "{result}");
        for skipped in [3, 4] {
            assert!(
                results[skipped].is_null() && errors[skipped].is_null(),
                "{result}"
            );
        }
        assert!(results[5].is_object(), "ROLLBACK ran: {result}");
        assert_eq!(count(&mut h, &db, "t"), before + 2);
        let r = c.send(&mut h, &db, json!([{"type": "close"}]));
        assert_eq!(r[0]["type"], "ok");
    }

    // error / or conditions, and conditions that look ahead.
    let mut c = Client::new();
    let r = c.send(
        &mut h,
        &db,
        json!([{"type": "batch", "batch": {"steps": [
            {"stmt": sql("SELECT nope")},
            {"condition": {"type": "error", "step": 0}, "stmt": sql("SELECT 'handled'")},
            {"condition": {"type": "or", "conds": [{"type": "ok", "step": 0}, {"type": "ok", "step": 1}]}, "stmt": sql("SELECT 'or'")},
            {"condition": {"type": "and", "conds": []}, "stmt": sql("SELECT 'and'")},
            {"condition": {"type": "or", "conds": []}, "stmt": sql("SELECT 'never'")},
        ]}},
        {"type": "batch", "batch": {"steps": [{"condition": {"type": "ok", "step": 0}, "stmt": sql("SELECT 1")}]}},
        {"type": "batch", "batch": {"steps": [{"condition": {"type": "is_autocommit"}, "stmt": sql("SELECT 1")}]}},
        ]),
    );
    let result = &r[0]["response"]["result"];
    assert_eq!(result["step_errors"][0]["code"], "SQLITE_ERROR");
    assert_eq!(result["step_results"][1]["rows"][0][0], text("handled"));
    assert_eq!(result["step_results"][2]["rows"][0][0], text("or"));
    assert_eq!(result["step_results"][3]["rows"][0][0], text("and"));
    assert!(result["step_results"][4].is_null() && result["step_errors"][4].is_null());
    assert_eq!(r[1]["error"]["code"], "PROTOCOL_ERROR", "{}", r[1]);
    assert_eq!(
        r[2]["error"]["code"], "NOT_SUPPORTED",
        "v2 has no is_autocommit: {}",
        r[2]
    );
}

#[test]
fn streams_are_isolated_by_sqlite_locks() {
    let db = database("hrana-isolation");
    let mut h = Hrana::new();
    once(&mut h, &db, sql("CREATE TABLE t(x)"));
    let (mut a, mut b) = (Client::new(), Client::new());
    a.execute(&mut h, &db, sql("BEGIN IMMEDIATE"));
    a.execute(&mut h, &db, sql("INSERT INTO t VALUES ('a')"));
    // B reads the committed state; its writes wait for nobody: SQLITE_BUSY at once.
    assert_eq!(
        rows(&b.execute(&mut h, &db, sql("SELECT count(*) FROM t"))),
        json!([[int(0)]])
    );
    let e = b.fail(&mut h, &db, sql("INSERT INTO t VALUES ('b')"));
    assert_eq!(e["code"], "SQLITE_BUSY", "{e}");
    let e = b.fail(&mut h, &db, sql("BEGIN IMMEDIATE"));
    assert_eq!(e["code"], "SQLITE_BUSY", "{e}");
    assert_eq!(
        rows(&a.execute(&mut h, &db, sql("SELECT count(*) FROM t"))),
        json!([[int(1)]])
    );
    a.execute(&mut h, &db, sql("COMMIT"));
    b.execute(&mut h, &db, sql("INSERT INTO t VALUES ('b')"));
    assert_eq!(count(&mut h, &db, "t"), 2);

    // A read transaction holds its snapshot's lock: another stream's commit waits for it.
    a.execute(&mut h, &db, sql("BEGIN"));
    a.execute(&mut h, &db, sql("SELECT count(*) FROM t"));
    b.execute(&mut h, &db, sql("BEGIN"));
    b.execute(&mut h, &db, sql("INSERT INTO t VALUES ('c')"));
    let e = b.fail(&mut h, &db, sql("COMMIT"));
    assert_eq!(e["code"], "SQLITE_BUSY", "{e}");
    a.execute(&mut h, &db, sql("ROLLBACK"));
    b.execute(&mut h, &db, sql("COMMIT"));
    assert_eq!(count(&mut h, &db, "t"), 3);
}

#[test]
fn idle_streams_expire_and_release_their_locks() {
    let db = database("hrana-expiry");
    let mut h = Hrana::new();
    h.set_stream_timeout(Duration::from_secs(10));
    let t0 = Instant::now();
    once(&mut h, &db, sql("CREATE TABLE t(x)"));
    let mut a = Client::new();
    a.send_at(
        &mut h,
        &db,
        json!([{"type": "execute", "stmt": sql("BEGIN IMMEDIATE")},
        {"type": "execute", "stmt": sql("INSERT INTO t VALUES (1)")}]),
        t0,
    );
    let mut b = Client::new();
    let r = b.send_at(
        &mut h,
        &db,
        json!([{"type": "execute", "stmt": sql("INSERT INTO t VALUES (2)")}]),
        t0 + Duration::from_secs(9),
    );
    assert_eq!(r[0]["error"]["code"], "SQLITE_BUSY");
    // A request keeps its stream alive: A at 9 s is good until 19 s.
    a.send_at(&mut h, &db, json!([]), t0 + Duration::from_secs(9));
    assert_eq!(h.expire(t0 + Duration::from_secs(18)), 0);
    // B's stream (last used at 9 s) and A's both expire by 20 s; A's insert is rolled back.
    assert_eq!(h.expire(t0 + Duration::from_secs(20)), 2);
    assert_eq!(h.open_streams(), 0);
    let mut b = Client::new();
    let r = b.send_at(
        &mut h,
        &db,
        json!([{"type": "execute", "stmt": sql("INSERT INTO t VALUES (2)")},
        {"type": "execute", "stmt": sql("SELECT x FROM t")}]),
        t0 + Duration::from_secs(20),
    );
    assert_eq!(
        r[1]["response"]["result"]["rows"],
        json!([[int(2)]]),
        "{}",
        r[1]
    );
    let (s, e) = pipe(
        &mut h,
        &db,
        Version::V2,
        a.baton.as_deref(),
        json!([]),
        t0 + Duration::from_secs(21),
    );
    assert_eq!(
        (s, e["code"].as_str()),
        (400, Some("STREAM_EXPIRED")),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("10000 ms"), "{e}");

    // Expiry also happens at the start of a pipeline request.
    let mut c = Client::new();
    c.send_at(
        &mut h,
        &db,
        json!([{"type": "execute", "stmt": sql("BEGIN IMMEDIATE")}]),
        t0 + Duration::from_secs(30),
    );
    let r = Client::new().send_at(
        &mut h,
        &db,
        json!([{"type": "execute", "stmt": sql("INSERT INTO t VALUES (3)")}]),
        t0 + Duration::from_secs(41),
    );
    assert_eq!(r[0]["type"], "ok", "{}", r[0]);

    // Closing every stream (the database goes away) rolls back too.
    let mut d = Client::new();
    d.send(
        &mut h,
        &db,
        json!([{"type": "execute", "stmt": sql("BEGIN IMMEDIATE")},
        {"type": "execute", "stmt": sql("INSERT INTO t VALUES (4)")}]),
    );
    h.clear();
    assert_eq!(h.open_streams(), 0);
    assert_eq!(count(&mut h, &db, "t"), 2);
}

#[test]
fn stored_sql_sequence_describe_and_autocommit() {
    let db = database("hrana-misc");
    let mut h = Hrana::new();
    let mut c = Client::v3();
    let r = c.send(
        &mut h,
        &db,
        json!([
            {"type": "sequence", "sql": "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO t(name) VALUES ('a'); SELECT 1;"},
            {"type": "store_sql", "sql_id": 1, "sql": "INSERT INTO t(name) VALUES (?)"},
            {"type": "execute", "stmt": {"sql_id": 1, "args": [text("b")]}},
            {"type": "batch", "batch": {"steps": [{"stmt": {"sql_id": 1, "args": [text("c")]}}]}},
            {"type": "store_sql", "sql_id": 1, "sql": "SELECT 1"},
            {"type": "close_sql", "sql_id": 1},
            {"type": "close_sql", "sql_id": 1},
            {"type": "execute", "stmt": {"sql_id": 1}},
            {"type": "execute", "stmt": {"sql": "SELECT 1", "sql_id": 1}},
            {"type": "describe", "sql": "SELECT id, name AS n, ?1 + :x FROM t"},
            {"type": "get_autocommit"},
            {"type": "sequence", "sql": "BEGIN; INSERT INTO t(name) VALUES ('d'); SELECT nope; INSERT INTO t(name) VALUES ('e')"},
            {"type": "get_autocommit"},
            {"type": "execute", "stmt": sql("ROLLBACK")},
            {"type": "execute", "stmt": sql("SELECT group_concat(name) FROM t")},
        ]),
    );
    let kinds: Vec<String> = r
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["type"].as_str().unwrap(),
                r["response"]["type"]
                    .as_str()
                    .or(r["error"]["code"].as_str())
                    .unwrap()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "ok:sequence",
            "ok:store_sql",
            "ok:execute",
            "ok:batch",
            "error:SQL_EXISTS",
            "ok:close_sql",
            "ok:close_sql",
            "error:SQL_NOT_FOUND",
            "error:PROTOCOL_ERROR",
            "ok:describe",
            "ok:get_autocommit",
            "error:SQLITE_ERROR",
            "ok:get_autocommit",
            "ok:execute",
            "ok:execute",
        ]
    );
    assert_eq!(
        r[9]["response"]["result"],
        json!({
            "params": [{"name": "?1"}, {"name": ":x"}],
            "cols": [{"name": "id", "decltype": "INTEGER"}, {"name": "n", "decltype": "TEXT"}, {"name": "?1 + :x", "decltype": null}],
            "is_explain": false,
            "is_readonly": true,
        })
    );
    assert_eq!(r[10]["response"]["is_autocommit"], true);
    assert_eq!(
        r[12]["response"]["is_autocommit"], false,
        "the sequence stopped inside its BEGIN"
    );
    assert_eq!(
        r[14]["response"]["result"]["rows"],
        json!([[text("a,b,c")]])
    );

    // v2 has no get_autocommit.
    let mut c = Client::new();
    let r = c.send(&mut h, &db, json!([{"type": "get_autocommit"}]));
    assert_eq!(r[0]["error"]["code"], "NOT_SUPPORTED");
}

#[test]
fn libsql_readonly_transactions_refuse_writes() {
    let db = database("hrana-readonly");
    let mut h = Hrana::new();
    once(&mut h, &db, sql("CREATE TABLE t(x)"));
    let mut c = Client::new();
    c.execute(&mut h, &db, sql("BEGIN TRANSACTION READONLY"));
    c.execute(&mut h, &db, sql("SELECT count(*) FROM t"));
    let e = c.fail(&mut h, &db, sql("INSERT INTO t VALUES (1)"));
    assert_eq!(e["code"], "SQLITE_READONLY", "{e}");
    let e = c.fail(&mut h, &db, sql("begin readonly;"));
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("within a transaction"),
        "{e}"
    );
    c.execute(&mut h, &db, sql("COMMIT"));
    // Over: the stream writes again.
    c.execute(&mut h, &db, sql("INSERT INTO t VALUES (1)"));
    // A read batch (as client.batch(stmts, "read") sends it) with a write in it rolls back.
    let r = c.send(
        &mut h,
        &db,
        json!([{"type": "batch", "batch": client_batch(
            "BEGIN TRANSACTION READONLY",
            &[sql("SELECT count(*) FROM t"), sql("DELETE FROM t")],
            false,
        )}]),
    );
    let result = &r[0]["response"]["result"];
    assert_eq!(
        result["step_errors"][2]["code"], "SQLITE_READONLY",
        "{result}"
    );
    assert!(
        result["step_results"][4].is_object(),
        "ROLLBACK ran: {result}"
    );
    c.execute(&mut h, &db, sql("INSERT INTO t VALUES (2)"));
    assert_eq!(count(&mut h, &db, "t"), 2);
}

#[test]
fn cursors_answer_lines_of_entries() {
    let db = database("hrana-cursor");
    let mut h = Hrana::new();
    once(&mut h, &db, sql("CREATE TABLE t(x INTEGER)"));
    let body = json!({"baton": null, "batch": {"steps": [
        {"stmt": sql("INSERT INTO t VALUES (1), (2)")},
        {"stmt": sql("SELECT x FROM t ORDER BY x")},
        {"stmt": sql("SELECT nope")},
        {"condition": {"type": "ok", "step": 2}, "stmt": sql("SELECT 1")},
    ]}});
    let body_text = body.to_string();
    let mut req = Request::new("POST", "v3/cursor", "", body_text.as_bytes());
    req.hrana_stream_timeout_ms = Some("5000");
    let r = h.route(&db, &req, Instant::now());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.headers, [("content-type", "text/plain".to_owned())]);
    assert_eq!(h.stream_timeout(), Duration::from_secs(5));
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines[0]["baton"].is_string() && lines[0]["base_url"].is_null());
    let x = json!({"name": "x", "decltype": "INTEGER"});
    assert_eq!(
        lines[1..],
        [
            json!({"type": "step_begin", "step": 0, "cols": []}),
            json!({"type": "step_end", "affected_row_count": 2, "last_insert_rowid": "2"}),
            json!({"type": "step_begin", "step": 1, "cols": [x]}),
            json!({"type": "row", "row": [int(1)]}),
            json!({"type": "row", "row": [int(2)]}),
            json!({"type": "step_end", "affected_row_count": 0, "last_insert_rowid": "2"}),
            json!({"type": "step_error", "step": 2, "error": {"code": "SQLITE_ERROR", "message": "no such column: nope (at offset 7)"}}),
        ]
    );
    // The stream goes on with the cursor's baton, on the pipeline endpoint too.
    let mut c = Client::v3();
    c.baton = lines[0]["baton"].as_str().map(str::to_owned);
    let r = c.execute(&mut h, &db, sql("SELECT count(*) FROM t"));
    assert_eq!(rows(&r), json!([[int(2)]]));

    // Cursors are Hrana 3; the routes answer methods and unknown endpoints as HTTP does.
    let route = |h: &mut Hrana, method, path, body: &[u8]| {
        h.route(&db, &Request::new(method, path, "", body), Instant::now())
    };
    assert_eq!(
        route(&mut h, "POST", "v2/cursor", body_text.as_bytes()).status,
        404
    );
    assert_eq!(route(&mut h, "POST", "v3-protobuf", b"").status, 404);
    let wrong = route(&mut h, "GET", "v3/pipeline", b"");
    assert_eq!((wrong.status, wrong.headers[0].1.as_str()), (405, "POST"));
    assert_eq!(route(&mut h, "HEAD", "v2", b"").status, 200);
    assert_eq!(route(&mut h, "POST", "v2", b"").status, 405);
    assert_eq!(
        route(&mut h, "POST", "v2/pipeline", br#"{"requests": []}"#).status,
        200
    );
    assert_eq!(route(&mut h, "POST", "v2/pipeline", b"nope").status, 400);
    let mut bad = Request::new("POST", "v2/pipeline", "", br#"{"requests": []}"#);
    bad.hrana_stream_timeout_ms = Some("0");
    assert_eq!(h.route(&db, &bad, Instant::now()).status, 500);
    assert_eq!(
        h.stream_timeout(),
        Duration::from_secs(5),
        "a bad setting changes nothing"
    );
}

#[test]
fn streams_are_limited() {
    let db = database("hrana-limit");
    let mut h = Hrana::new();
    let now = Instant::now();
    for _ in 0..MAX_STREAMS {
        let (s, _) = pipe(&mut h, &db, Version::V2, None, json!([]), now);
        assert_eq!(s, 200);
    }
    let (s, e) = pipe(&mut h, &db, Version::V2, None, json!([]), now);
    assert_eq!((s, e["code"].as_str()), (429, Some("TOO_MANY_STREAMS")));
    // Idle streams expire and make room.
    let later = now + h.stream_timeout();
    let (s, _) = pipe(&mut h, &db, Version::V2, None, json!([]), later);
    assert_eq!(s, 200);
    assert_eq!(h.open_streams(), 1);
}

#[test]
fn refusals_and_oversized_answers_are_statement_errors() {
    let db = database("hrana-guard");
    let mut h = Hrana::new();
    h.set_limits(dosql_api::Limits {
        max_answer_bytes: 20_000,
    });
    let mut c = Client::new();
    let results = c.send(
        &mut h,
        &db,
        json!([
            {"type": "execute", "stmt": {"sql": "PRAGMA writable_schema = 1"}},
            {"type": "execute", "stmt": {"sql": "SELECT zeroblob(30000)"}},
            {"type": "execute", "stmt": {"sql": "SELECT zeroblob(3000)"}},
            {"type": "close"},
        ]),
    );
    assert_eq!(results[0]["error"]["code"], "SQLITE_AUTH", "{}", results[0]);
    assert!(
        results[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("writable_schema")
    );
    assert_eq!(
        results[1]["error"]["code"], "RESULT_TOO_LARGE",
        "{}",
        results[1]
    );
    assert_eq!(results[2]["type"], "ok", "{}", results[2]);
}
