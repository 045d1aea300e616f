//! Databases written by the last release before the layout moved into Rust (commit 12121ec:
//! meta format 3 on classic storage, head format 4 on SQLite-backed storage; one of each kind
//! loaded by `dosql import` under generation `g1:p:`) are served by this code as they were:
//! their answers, their next commit (which writes format 5), a restart and a `kill -9`.
//! The data directory is `crates/e2e/golden/release-12121ec-data.tar.gz`.

use dosql_e2e::{Db, Server};
use serde_json::json;

fn unpack() -> tempfile::TempDir {
    dosql_e2e::unpack_golden("release-12121ec-data.tar.gz")
}

fn check(db_of: &dyn Fn(&str) -> Db, extra: i64) {
    let inline = db_of("inline");
    assert_eq!(
        inline.rows("SELECT id, v FROM t ORDER BY id")[..2],
        [json!([1, "one"]), json!([2, "two"])]
    );
    let grown = db_of("grown");
    assert_eq!(
        grown.rows("SELECT count(*), min(id), sum(id % 3 = 0) FROM t"),
        vec![json!([2001 + extra, 1, 1])]
    );
    // The last row took max(id) + 1 = 3000 (3000 itself was deleted).
    assert_eq!(
        grown.rows("SELECT v FROM t WHERE id = 3000"),
        vec![json!(["last"])]
    );
    let imported = db_of("imported");
    assert_eq!(
        imported.rows("SELECT count(*), max(year) FROM album"),
        vec![json!([2001 + extra, 2026])]
    );
    assert_eq!(
        imported.rows("SELECT title FROM album WHERE id = 2001"),
        vec![json!(["after import"])]
    );
    for db in [inline, grown, imported] {
        assert_eq!(db.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);
    }
}

fn format(db: &Db) -> u64 {
    db.send("GET", "/_storage_stats", None).unwrap().ok()["meta"]["format"]
        .as_u64()
        .unwrap()
}

#[test]
fn databases_of_the_last_release_are_served_and_move_to_format_5() {
    let dir = unpack();
    let data = dir.path().join("data");
    for storage in ["sqlite", "classic"] {
        let mut server = Server::start_on_with_env(&data, &[("DOSQL_STORAGE", storage)]);
        let old = if storage == "sqlite" { 4 } else { 3 };
        assert_eq!(
            format(&server.db("grown")),
            old,
            "{storage}: read as it was"
        );
        check(&|n| server.db(n), 0);
        // Their next commit writes format 5.
        for name in ["inline", "grown", "imported"] {
            let db = server.db(name);
            let sql = if name == "imported" {
                "INSERT INTO album(title, year) VALUES ('new', 2000)"
            } else {
                "INSERT INTO t(v) VALUES ('new')"
            };
            db.query(sql, json!([])).ok();
            assert_eq!(format(&db), 5, "{storage} {name}");
        }
        check(&|n| server.db(n), 1);
        server.restart_with_env(&[("DOSQL_STORAGE", storage)]);
        check(&|n| server.db(n), 1);
        server.crash_and_restart();
        check(&|n| server.db(n), 1);
        // And they keep working.
        server
            .db("grown")
            .query("DELETE FROM t WHERE v = 'new'", json!([]))
            .ok();
        assert_eq!(server.db("grown").int("SELECT count(*) FROM t"), 2001);
    }
}
