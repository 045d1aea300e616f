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
    try_query_at(db, sql, bookmark).unwrap()
}

/// A query with a bookmark; a transport failure (a server being killed) is an `Err`.
fn try_query_at(db: &Db, sql: &str, bookmark: Option<&str>) -> Result<dosql_e2e::Answer, String> {
    let body = json!({"sql": sql}).to_string();
    let headers: Vec<(&str, &str)> = bookmark
        .map(|b| vec![("x-dosql-bookmark", b)])
        .unwrap_or_default();
    db.send_with("POST", "/query", Some(body.as_bytes()), &headers)
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
    // A body without the field says so, not that a name is malformed.
    let a = bad(&p, json!({"nam": "rep9"}));
    assert_eq!(a.error(400), "BAD_REQUEST");
    assert!(a.body.to_string().contains("missing"), "{}", a.body);
    assert_eq!(bad(&r1, json!({"name": "rep9"})).error(409), "IS_REPLICA");
    let full = server.db("full");
    full.query("CREATE TABLE x(y)", json!([])).ok();
    assert_eq!(bad(&p, json!({"name": "full"})).error(409), "NOT_EMPTY");
    // Not reachable from outside.
    assert_eq!(r1.send("POST", "/_sync", None).unwrap().status, 404);
    // What would change a replica other than through its primary is refused, and it stays
    // its primary's copy.
    let v = query_at(&r1, "VACUUM", None);
    assert!(v.status >= 400, "{}", v.body);
    assert!(v.body.to_string().contains("read replica"), "{}", v.body);
    let rs = r1
        .send("POST", "/restore", Some(br#"{"txid": 1}"#))
        .unwrap();
    assert_eq!(rs.error(409), "IS_REPLICA");
    converge(&p, &r1, "after refusals");

    // The CLI carries bookmarks: a write through a replica and the read after it, in one
    // shell run, see each other; --bookmark starts from one.
    let r1_url = format!("{}/db/rep1", server.url());
    let out = dosql_e2e::cli_output::ok(dosql_e2e::dosql(&[
        "shell",
        &r1_url,
        "INSERT INTO t(v) VALUES ('cli'); SELECT count(*) FROM t WHERE v = 'cli';",
    ]));
    assert!(out.trim_end().ends_with('1'), "{out}");
    let last = bookmark(&query_at(&p, "INSERT INTO t(v) VALUES ('cli2')", None));
    let out = dosql_e2e::cli_output::ok(dosql_e2e::dosql(&[
        "shell",
        "--bookmark",
        &last,
        &r1_url,
        "SELECT count(*) FROM t WHERE v = 'cli2';",
    ]));
    assert!(out.trim_end().ends_with('1'), "{out}");
    let bad = dosql_e2e::cli_output::fails(dosql_e2e::dosql(&[
        "shell",
        "--bookmark",
        "yesterday",
        &r1_url,
        "SELECT 1",
    ]));
    assert!(bad.contains("--bookmark"), "{bad}");

    // Detached, a replica keeps its data and takes writes of its own.
    converge(&p, &r2, "before the detach");
    let d = p.send("DELETE", "/replicas/rep2", None).unwrap().ok();
    assert_eq!(d["detached"], "rep2");
    let w = query_at(&r2, "INSERT INTO t(v) VALUES ('own')", None);
    assert_eq!(w.status, 200, "{}", w.body);
    assert!(w.header("x-dosql-forwarded-to").is_none());
    assert_eq!(
        r2.int("SELECT count(*) FROM t"),
        p.int("SELECT count(*) FROM t") + 1
    );
    assert_eq!(
        p.send("DELETE", "/replicas/rep2", None).unwrap().error(404),
        "NO_SUCH_REPLICA"
    );
}

/// Waits until `r` has the primary's txid and checksum; never ahead of it meanwhile.
fn converge(p: &Db, r: &Db, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let want = position(p);
    loop {
        let got = position(r);
        assert!(
            got.0 <= want.0,
            "{what}: the replica is ahead: {got:?} vs {want:?}"
        );
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {got:?} never reached {want:?}: {}",
            r.send("GET", "/stats", None).unwrap().body["replication"]
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Commits made within DOSQL_REPLICA_PUSH_MS of a push reach a replica together, in the next
/// push: a burst of writes costs the replica a few pushes (each one request and one storage
/// transaction), not one per commit, and the replica still reaches the primary's checksum.
#[test]
fn a_burst_of_commits_reaches_a_replica_in_a_few_pushes() {
    // Polls a day apart: the pushes alone carry the commits.
    let env = [
        ("DOSQL_REPLICA_PUSH_MS", "400"),
        ("DOSQL_REPLICA_POLL_MS", "86400000"),
    ];
    let mut server = Server::start_with_env(&env);
    let p = server.db("burst");
    p.query(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER)",
        json!([]),
    )
    .ok();
    attach(&p, "burst-r");
    let r = server.db("burst-r");
    converge(&p, &r, "after attaching");
    let pushes = |r: &Db| {
        let s = r.send("GET", "/stats", None).unwrap().ok();
        s["replication"]["pushes"].as_u64().unwrap()
    };
    // The attach's own push (the state the replica's snapshot already holds) arrives; then
    // the interval passes, so that the burst's first commit goes at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while pushes(&r) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the attach pushed nothing"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let before = pushes(&r);
    // That push was a duplicate, not an error (it used to say REPLICA_AHEAD, "the primary
    // lost commits").
    let status = r.send("GET", "/stats", None).unwrap().ok()["replication"].clone();
    assert_eq!(status["last_error"], Json::Null, "{status}");
    let started = std::time::Instant::now();
    for n in 0..20 {
        p.query("INSERT INTO t(n) VALUES (?)", json!([n])).ok();
    }
    let took = started.elapsed();
    converge(&p, &r, "after the burst");
    assert_eq!(r.int("SELECT count(*) FROM t"), 20);
    // The counter is the replica instance's: a new instance (a trap, an eviction) restarts it.
    let after = pushes(&r);
    assert!(after >= before, "the replica's instance restarted mid-test");
    let got = after - before;
    // One push per commit before DOSQL_REPLICA_PUSH_MS; now the first commit's, then one per
    // 400 ms the burst lasted.
    let most = 2 + took.as_millis() as u64 / 400;
    assert!(
        (1..=most).contains(&got),
        "20 commits in {took:?} took {got} pushes (at most {most})"
    );
    // A bad value is refused before any request runs (it used to throw after a commit, on a
    // primary with replicas: a committed write answered 500 as if it had failed).
    server.restart_with_env(&[("DOSQL_REPLICA_PUSH_MS", "soon")]);
    let a = server
        .db("burst")
        .query("INSERT INTO t(n) VALUES (99)", json!([]));
    assert_eq!(a.error(500), "BAD_CONFIG");
    assert!(
        a.body.to_string().contains("DOSQL_REPLICA_PUSH_MS"),
        "{}",
        a.body
    );
    server.restart_with_env(&env);
    assert_eq!(server.db("burst").int("SELECT count(*) FROM t"), 20);
}

/// A primary and two replicas under a mixed load, with seeded faults between them (answers
/// lost, commits duplicated and swapped, every message delayed): every read with a bookmark
/// sees at least that state (here: the reader's own last write); workerd killed with
/// SIGKILL mid-stream and restarted; at the end the replicas have the primary's checksum and
/// every acknowledged write, and none was ever ahead. Then an import on the primary reaches
/// them too.
#[test]
fn replicas_converge_under_faults_and_a_kill_and_never_serve_older_than_a_bookmark() {
    let env = [
        (
            "DOSQL_TEST_REPLICATION_FAULTS",
            "seed=1234,drop=0.2,dup=0.3,reorder=0.3,delay_ms=3",
        ),
        ("DOSQL_REPLICA_POLL_MS", "300"),
        ("DOSQL_MAINTAIN_DELAY_MS", "200"),
    ];
    let mut server = Server::start_with_env(&env);
    let p = server.db("load");
    p.query(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, who INTEGER, n INTEGER, pad BLOB)",
        json!([]),
    )
    .ok();
    attach(&p, "load-r1");
    attach(&p, "load-r2");
    let mut acked: Vec<(i64, i64)> = Vec::new();
    // Writes answered so far: the kill comes once the load is well under way.
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut failed_during_kill = 0u64;
    for round in 0..2 {
        let worker = |who: i64| {
            let server_url = server.url();
            let answered = answered.clone();
            std::thread::spawn(move || {
                let mut lost = 0u64;
                let base = |n: &str| dosql_e2e::Server::db_at(&server_url, n);
                let (p, rs) = (base("load"), [base("load-r1"), base("load-r2")]);
                let mut mine = Vec::new();
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (who as u64) << 7;
                let mut next = || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                for n in 0..25i64 {
                    // Writes to the primary, or to a replica (forwarded), with blobs now and
                    // then, and deletes of someone's old rows.
                    let target = if next() % 3 == 0 {
                        &rs[(next() % 2) as usize]
                    } else {
                        &p
                    };
                    let sql = match next() % 6 {
                        0 => "DELETE FROM t WHERE id IN (SELECT id FROM t WHERE who < 0 LIMIT 2)"
                            .to_owned(),
                        1 => format!(
                            "INSERT INTO t(who, n, pad) VALUES ({}, {n}, randomblob(3000))",
                            -1 - who
                        ),
                        _ => format!("INSERT INTO t(who, n) VALUES ({who}, {n})"),
                    };
                    // Not acknowledged while the server is being killed (it may have
                    // committed or not: such a row is not counted either way).
                    let Ok(w) = try_query_at(target, &sql, None) else {
                        lost += 1;
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        continue;
                    };
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if w.status != 200 {
                        continue;
                    }
                    if sql.contains(&format!("VALUES ({who}, {n})")) {
                        mine.push((who, n));
                    }
                    let bm = bookmark(&w);
                    // Read-your-writes on a replica: with the write's bookmark, the row is there.
                    let r = &rs[(next() % 2) as usize];
                    let Ok(a) = try_query_at(
                        r,
                        &format!("SELECT count(*) FROM t WHERE who = {who} AND n <= {n}"),
                        Some(&bm),
                    ) else {
                        continue;
                    };
                    if a.status != 200 {
                        continue;
                    }
                    // At least every acknowledged write of this worker (one whose answer was
                    // lost may be there too).
                    let seen = a.body["rows"][0][0].as_i64().unwrap();
                    assert!(
                        seen >= mine.len() as i64,
                        "who {who} n {n} at {bm}: {}",
                        a.body
                    );
                    let got = bookmark(&a);
                    if got.split(':').next() == bm.split(':').next() {
                        assert!(txid_of(&got) >= txid_of(&bm), "{got} older than {bm}");
                    }
                }
                (mine, lost)
            })
        };
        let workers: Vec<_> = (0..3).map(|w| worker(round * 10 + w)).collect();
        if round == 0 {
            // Mid-stream: once a third of the writes were answered, workerd is killed and
            // started again; the workers carry on.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while answered.load(std::sync::atomic::Ordering::Relaxed) < 25
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            server.crash_and_restart();
        }
        for w in workers {
            match w.join() {
                Ok((mine, lost)) => {
                    acked.extend(mine);
                    failed_during_kill += lost;
                }
                Err(e) => std::panic::resume_unwind(e),
            }
        }
    }
    assert!(
        failed_during_kill > 0,
        "the kill came after the load: no request failed"
    );
    let (r1, r2) = (server.db("load-r1"), server.db("load-r2"));
    for r in [&r1, &r2] {
        converge(&p, r, "after the load");
        for &(who, n) in &acked {
            assert_eq!(
                r.int(&format!(
                    "SELECT count(*) FROM t WHERE who = {who} AND n = {n}"
                )),
                1,
                "acknowledged write {who}/{n} lost"
            );
        }
    }
    // An import replaces the primary's database: the replicas follow (a snapshot or the
    // switch's commit), to the same checksum.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new.sqlite");
    {
        let c = rusqlite::Connection::open(&file).unwrap();
        c.execute_batch("CREATE TABLE fresh(x); INSERT INTO fresh VALUES (42);")
            .unwrap();
    }
    let url = format!("{}/db/load", server.url());
    dosql_e2e::cli_output::ok(dosql_e2e::dosql(&[
        "import",
        "-q",
        "--force",
        file.to_str().unwrap(),
        &url,
    ]));
    for r in [&r1, &r2] {
        converge(&p, r, "after an import");
        assert_eq!(r.int("SELECT x FROM fresh"), 42);
    }
}
