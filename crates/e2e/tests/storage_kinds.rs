//! The two kinds of Durable Object storage side by side: one data directory served by either
//! class holds two separate sets of databases, and a bad DOSQL_STORAGE setting is refused.
//! (tests/http.rs runs the storage-dependent tests on both kinds.)

use dosql_e2e::Server;
use serde_json::json;

#[test]
fn classic_and_sqlite_storage_are_separate_and_a_bad_setting_is_refused() {
    let mut server = Server::start_with_env(&[("DOSQL_STORAGE", "classic")]);
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
