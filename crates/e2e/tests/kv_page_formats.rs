//! Databases written by release 0ef273c on SQLite-backed storage, whose pages are kv keys
//! (`p:…`, `g1:p:…`; the data directory `crates/e2e/golden/release-0ef273c-data.tar.gz`,
//! what it answered in `release-0ef273c.json`), are read by this code, which keeps the pages
//! of a new generation as rows of table `dosql_pages`: the same answers, txids, checksums and
//! history; new commits beside the old pages; a restore (a new generation: rows) to every
//! state the log rebuilds, including ones only the old kv pages hold; a restart.

use dosql_e2e::{Db, Server, repo};
use serde_json::{Value as Json, json};

/// The head's generation as its key prefix, and where its pages are: `p: keys`,
/// `g1048577:p: rows`.
fn prefix(db: &Db) -> String {
    let stats = db.send("GET", "/_storage_stats", None).unwrap().ok();
    let meta = &stats["meta"];
    match (meta["prefix"].as_str(), meta["pages"].as_str()) {
        (Some(p), Some(where_)) => format!("{p} {where_}"),
        _ => panic!("no prefix or pages in {stats}"),
    }
}

/// Every answer the golden file holds for `name`, asked again.
fn answers_as_recorded(db: &Db, name: &str, recorded: &Json) {
    for (sql, want) in recorded["answers"].as_object().unwrap() {
        let got = db.query(sql, json!([])).ok();
        assert_eq!(got["rows"], want["rows"], "{name}: {sql}");
    }
}

#[test]
fn kv_pages_of_release_0ef273c_are_read_and_new_generations_are_rows() {
    let golden: Json = serde_json::from_str(
        &std::fs::read_to_string(repo().join("crates/e2e/golden/release-0ef273c.json")).unwrap(),
    )
    .unwrap();
    let dbs = &golden["databases"];
    let dir = dosql_e2e::unpack_golden("release-0ef273c-data.tar.gz");
    let data = dir.path().join("data");
    // The history was written on 2026-12-07: keep it whatever today's date.
    let env = [
        ("DOSQL_STORAGE", "sqlite"),
        ("HISTORY_RETENTION_MS", "3153600000000"),
    ];
    let mut server = Server::start_on_with_env(&data, &env);
    for name in ["grown", "hist", "imported"] {
        let db = server.db(name);
        let recorded = &dbs[name];
        answers_as_recorded(&db, name, recorded);
        assert_eq!(
            db.history_summary(),
            recorded["history"],
            "{name}: the history"
        );
        let keys = format!("{} keys", recorded["prefix"].as_str().unwrap());
        assert_eq!(prefix(&db), keys, "{name}");
        assert_eq!(db.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);
    }

    // A commit on kv pages keeps them kv pages: a generation is all rows or all keys.
    let grown = server.db("grown");
    grown
        .query("INSERT INTO t(v) VALUES ('new')", json!([]))
        .ok();
    assert_eq!(prefix(&grown), "p: keys");
    assert_eq!(grown.int("SELECT count(*) FROM t"), 2002);
    let before_import = grown.send("GET", "/history?limit=1", None).unwrap().ok();
    // An import is a new generation: rows. Then a restore across it (a copy into another
    // row generation) reads the old kv pages through the history.
    let url = format!("{}/db/grown", server.url());
    let album = repo().join("crates/e2e/golden/album.sqlite");
    let out = dosql_e2e::dosql(&["import", "--force", "-q", album.to_str().unwrap(), &url]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(prefix(&grown), "g1048577:p: rows");
    assert_eq!(grown.int("SELECT count(*) FROM album"), 2000);
    let t = before_import["txid"].as_u64().unwrap();
    let r = grown.restore(t);
    assert_eq!(r["checksum"], before_import["checksum"]);
    // A copy: into the next row generation, from the kv pages the history keeps.
    assert_eq!(prefix(&grown), "g1048578:p: rows");
    assert_eq!(grown.int("SELECT count(*) FROM t WHERE v = 'new'"), 1);
    answers_as_recorded(
        &grown,
        "grown",
        &json!({"answers": {
        "SELECT count(*), sum(length(v)) FROM t": {"rows": [[2002, 80007]]}}}),
    );

    // Restores in place on kv pages: every state the log rebuilds, by its checksum.
    let hist = server.db("hist");
    let commits = dbs["hist"]["history"]["commits"].as_array().unwrap();
    let sum = |t: u64| {
        commits
            .iter()
            .find(|c| c["txid"] == t)
            .map(|c| c["checksum"].as_str().unwrap().to_owned())
            .unwrap()
    };
    for t in [1, 4, 8, 9] {
        let r = hist.restore(t);
        assert_eq!(
            r["checksum"].as_str(),
            Some(sum(t).as_str()),
            "hist: txid {t}"
        );
    }
    answers_as_recorded(&hist, "hist", &dbs["hist"]);
    assert_eq!(
        prefix(&hist),
        "p: keys",
        "restores in place keep the generation"
    );
    hist.query("INSERT INTO t(v) VALUES ('later')", json!([]))
        .ok();

    // The imported database (generation g1, kv): a restore to its import, then a write.
    let imported = server.db("imported");
    let first = dbs["imported"]["history"]["commits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["txid"] == 1)
        .unwrap()["checksum"]
        .clone();
    assert_eq!(imported.restore(1)["checksum"], first);
    assert_eq!(imported.int("SELECT count(*) FROM album"), 2000);
    imported
        .query(
            "INSERT INTO album(title, year) VALUES ('later', 2027)",
            json!([]),
        )
        .ok();

    // A restart keeps all of it.
    server.restart_with_env(&env);
    let grown = server.db("grown");
    assert_eq!(grown.int("SELECT count(*) FROM t WHERE v = 'new'"), 1);
    assert_eq!(prefix(&grown), "g1048578:p: rows");
    let hist = server.db("hist");
    assert_eq!(hist.int("SELECT count(*) FROM t WHERE v = 'later'"), 1);
    assert_eq!(hist.int("SELECT count(*) FROM t"), 20);
    let imported = server.db("imported");
    assert_eq!(imported.int("SELECT count(*) FROM album"), 2001);
    for db in [&grown, &hist, &imported] {
        assert_eq!(db.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);
    }
    server.stop();
}
