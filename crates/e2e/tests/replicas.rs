//! Read replicas in other Durable Objects, end to end on workerd: attach, reads served by
//! the replica, writes forwarded, bookmarks, catch-up after restore and import, lag in
//! /stats, detach, and convergence after `kill -9`.

use dosql_e2e::{Db, Server};
use serde_json::{Value as Json, json};

fn attach(primary: &Db, name: &str) -> Json {
    let body = json!({"name": name, "location_hint": "weur"}).to_string();
    let a = primary
        .send("POST", "/replicas", Some(body.as_bytes()))
        .unwrap();
    assert_eq!(a.status, 201, "{}", a.body);
    a.body
}

fn query_at(db: &Db, sql: &str, bookmark: Option<&str>) -> dosql_e2e::Answer {
    let body = json!({"sql": sql}).to_string();
    let headers: Vec<(&str, &str)> = bookmark
        .map(|b| vec![("x-dosql-bookmark", b)])
        .unwrap_or_default();
    db.send_with("POST", "/query", Some(body.as_bytes()), &headers)
        .unwrap()
}

fn bookmark(a: &dosql_e2e::Answer) -> String {
    a.header("x-dosql-bookmark")
        .unwrap_or_else(|| panic!("no bookmark: {:?}", a.headers))
}

fn txid_of(b: &str) -> u64 {
    b.split(':').nth(1).unwrap().parse().unwrap()
}

/// The database's checksum and txid (its history's newest entry).
fn position(db: &Db) -> (u64, String) {
    let h = db.send("GET", "/history?limit=1", None).unwrap().ok();
    (
        h["txid"].as_u64().unwrap(),
        h["checksum"].as_str().unwrap_or("").to_owned(),
    )
}

#[test]
fn replicas_serve_reads_forward_writes_and_honour_bookmarks() {
    let server = Server::start();
    let p = server.db("prim");
    p.query("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", json!([]))
        .ok();
    p.query("INSERT INTO t(v) VALUES ('a'), ('b')", json!([]))
        .ok();
    let r1 = server.db("rep1");
    let r2 = server.db("rep2");
    let att = attach(&p, "rep1");
    assert_eq!(att["primary"], "prim");
    attach(&p, "rep2");
    // Attached replicas hold the primary's data at once, and answer with the same bookmark.
    let read = query_at(&r1, "SELECT count(*) FROM t", None);
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body["rows"][0][0], 2);
    assert!(read.header("x-dosql-forwarded-to").is_none());
    let pb = bookmark(&query_at(&p, "SELECT 1", None));
    assert_eq!(bookmark(&read), pb);

    // A write sent to a replica is done by the primary, and says so.
    let w = query_at(&r2, "INSERT INTO t(v) VALUES ('via replica')", None);
    assert_eq!(w.status, 200, "{}", w.body);
    assert_eq!(w.header("x-dosql-forwarded-to").as_deref(), Some("prim"));
    let wb = bookmark(&w);
    assert!(txid_of(&wb) > txid_of(&pb));
    // Read-your-writes: with the write's bookmark, each replica answers with it in.
    for r in [&r1, &r2] {
        let a = query_at(r, "SELECT count(*) FROM t", Some(&wb));
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["rows"][0][0], 3, "{}", a.body);
        assert!(txid_of(&bookmark(&a)) >= txid_of(&wb));
    }
    // first-primary reads from the primary; a bad bookmark is refused.
    let fp = query_at(&r1, "SELECT count(*) FROM t", Some("first-primary"));
    assert_eq!(fp.header("x-dosql-forwarded-to").as_deref(), Some("prim"));
    assert_eq!(
        query_at(&r1, "SELECT 1", Some("nonsense")).error(400),
        "BAD_BOOKMARK"
    );
    // A batch that writes is forwarded whole.
    let b = r1
        .send_with(
            "POST",
            "/batch",
            Some(json!([{"sql": "INSERT INTO t(v) VALUES ('x')"}, {"sql": "SELECT count(*) FROM t"}]).to_string().as_bytes()),
            &[],
        )
        .unwrap();
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(b.header("x-dosql-forwarded-to").as_deref(), Some("prim"));

    // The replicas reach the primary's checksum; the list says where each is.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let want = position(&p);
    for r in [&r1, &r2] {
        while position(r) != want {
            assert!(
                std::time::Instant::now() < deadline,
                "{:?} vs {want:?}",
                position(r)
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let list = p.send("GET", "/replicas", None).unwrap().ok();
    let names: Vec<&str> = list["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rep1", "rep2"], "{list}");
    assert_eq!(list["replicas"][0]["txid"], want.0, "{list}");
    let stats = r1.send("GET", "/stats", None).unwrap().ok();
    assert_eq!(stats["replication"]["primary"], "prim", "{stats}");
    assert_eq!(stats["replication"]["lag_commits"], 0, "{stats}");

    // A restore and an import on the primary reach the replicas (a new lineage).
    let restored = p
        .send("POST", "/restore", Some(br#"{"txid": 2}"#))
        .unwrap()
        .ok();
    assert!(restored["txid"].as_u64().is_some());
    let after = bookmark(&query_at(&p, "SELECT 1", None));
    assert_ne!(
        after.split(':').next(),
        pb.split(':').next(),
        "a new lineage"
    );
    let a = query_at(&r1, "SELECT count(*) FROM t", Some(&after));
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.header("x-dosql-forwarded-to").is_none(),
        "{:?}",
        a.headers
    );
    assert_eq!(a.body["rows"][0][0], 2);

    // Bad requests: not a name, a replica of a replica, a database that is not empty.
    let bad = |db: &Db, body: Json| {
        db.send("POST", "/replicas", Some(body.to_string().as_bytes()))
            .unwrap()
    };
    assert_eq!(
        bad(&p, json!({"name": "no/pe"})).error(400),
        "BAD_DATABASE_NAME"
    );
    assert_eq!(bad(&p, json!({"name": "prim"})).error(400), "BAD_REQUEST");
    assert_eq!(bad(&r1, json!({"name": "rep9"})).error(409), "IS_REPLICA");
    let full = server.db("full");
    full.query("CREATE TABLE x(y)", json!([])).ok();
    assert_eq!(bad(&p, json!({"name": "full"})).error(409), "NOT_EMPTY");
    // Not reachable from outside.
    assert_eq!(r1.send("POST", "/_sync", None).unwrap().status, 404);

    // Detached, a replica keeps its data and takes writes of its own.
    let d = p.send("DELETE", "/replicas/rep2", None).unwrap().ok();
    assert_eq!(d["detached"], "rep2");
    let w = query_at(&r2, "INSERT INTO t(v) VALUES ('own')", None);
    assert_eq!(w.status, 200, "{}", w.body);
    assert!(w.header("x-dosql-forwarded-to").is_none());
    assert_eq!(r2.int("SELECT count(*) FROM t"), 3);
    assert_eq!(
        p.send("DELETE", "/replicas/rep2", None).unwrap().error(404),
        "NO_SUCH_REPLICA"
    );
}
