//! Client connections run under dosql's SQL policy (`dosql_vfs::guard`): what could corrupt
//! the database, break the VFS's assumptions or exhaust memory is refused, with a reason, and
//! the database stays as it was.

use dosql_pagestore::{MemStore, PageSize};
use dosql_vfs::{Database, VfsConfig, take_refusal};
use rusqlite::{Connection, ErrorCode};

fn db(name: &str) -> Database {
    let db =
        Database::attach(name, MemStore::new(PageSize::DEFAULT), VfsConfig::default()).unwrap();
    db.connect()
        .unwrap()
        .execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');",
        )
        .unwrap();
    db
}

fn refused(conn: &Connection, sql: &str) -> String {
    let err = conn
        .execute_batch(sql)
        .expect_err(&format!("{sql} was allowed"));
    assert_eq!(
        err.sqlite_error_code(),
        Some(ErrorCode::AuthorizationForStatementDenied),
        "{sql}: {err}"
    );
    take_refusal()
        .unwrap_or_else(|| panic!("{sql}: refused without a reason"))
        .to_string()
}

fn intact(db: &Database) {
    let conn = db.connect().unwrap();
    let v: String = conn
        .query_row("SELECT v FROM t WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, "a");
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

#[test]
fn the_schema_cannot_be_rewritten() {
    let db = db("guard-schema");
    let conn = db.connect().unwrap();
    let why = refused(
        &conn,
        "PRAGMA writable_schema=1; UPDATE sqlite_master SET sql='garbage' WHERE name='t'",
    );
    assert!(why.contains("writable_schema"), "{why}");
    // Defensive mode holds even where the pragma is not refused (dosql's own connections).
    let trusted = db.connect_trusted().unwrap();
    trusted.execute_batch("PRAGMA writable_schema=1").unwrap();
    assert!(
        trusted
            .execute_batch("UPDATE sqlite_master SET sql='garbage' WHERE name='t'")
            .is_err()
    );
    assert!(refused(&conn, "PRAGMA schema_version = 99").contains("schema_version"));
    intact(&db);
}

#[test]
fn attach_takes_only_memory_databases() {
    let db = db("guard-attach");
    let conn = db.connect().unwrap();
    let why = refused(&conn, "ATTACH 'other.db' AS o");
    assert!(why.contains("ATTACH 'other.db'"), "{why}");
    assert!(refused(&conn, "ATTACH 'file:x?mode=memory' AS o").contains("ATTACH"));
    conn.execute_batch("ATTACH ':memory:' AS m; CREATE TABLE m.x(y); DETACH m")
        .unwrap();
    intact(&db);
}

#[test]
fn journaling_locking_and_memory_pragmas_are_read_only() {
    let db = db("guard-pragmas");
    let conn = db.connect().unwrap();
    for (sql, name) in [
        ("PRAGMA journal_mode = WAL", "journal_mode"),
        ("PRAGMA journal_mode = OFF", "journal_mode"),
        ("PRAGMA locking_mode = EXCLUSIVE", "locking_mode"),
        ("PRAGMA page_size = 8192", "page_size"),
        ("PRAGMA cache_size = -1000000", "cache_size"),
        ("PRAGMA secure_delete = OFF", "secure_delete"),
        ("PRAGMA hard_heap_limit = 0", "hard_heap_limit"),
        (
            "PRAGMA temp_store_directory = '/tmp'",
            "temp_store_directory",
        ),
    ] {
        let why = refused(&conn, sql);
        assert!(why.contains(name), "{sql}: {why}");
    }
    // Reading them is fine, and so are the everyday pragmas.
    for sql in [
        "PRAGMA journal_mode",
        "PRAGMA page_size",
        "PRAGMA cache_size",
        "PRAGMA table_info(t)",
        "PRAGMA foreign_keys = ON",
        "PRAGMA user_version = 7",
        "PRAGMA integrity_check",
        "PRAGMA main.table_xinfo('t')",
    ] {
        conn.execute_batch(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let v: i64 = conn
        .query_row("SELECT * FROM pragma_table_info('t') LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(v, 0);
    intact(&db);
}

#[test]
fn limits_are_in_force_on_client_connections() {
    let db = db("guard-limits");
    let conn = db.connect().unwrap();
    for (limit, value, _) in dosql_vfs::guard::LIMITS {
        assert_eq!(conn.limit(*limit).unwrap(), *value, "{limit:?}");
    }
    for sql in ["SELECT zeroblob(500000000)", "SELECT randomblob(100000000)"] {
        let err = conn
            .query_row(sql, [], |r| r.get::<_, Vec<u8>>(0))
            .expect_err(sql);
        assert_eq!(
            err.sqlite_error_code(),
            Some(ErrorCode::TooBig),
            "{sql}: {err}"
        );
    }
    let four_mib = 4 * 1024 * 1024;
    let n: i64 = conn
        .query_row(&format!("SELECT length(zeroblob({four_mib}))"), [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n, four_mib);
    intact(&db);
}

#[test]
fn vacuum_into_a_file_is_refused() {
    let db = db("guard-vacuum-into");
    let conn = db.connect().unwrap();
    // SQLite attaches the target to write it, and the attach is what the policy refuses.
    let why = refused(&conn, "VACUUM INTO 'copy.db'");
    assert!(why.contains("'copy.db'"), "{why}");
    conn.execute_batch("VACUUM").unwrap();
    intact(&db);
}

/// A transaction that would buffer more changed pages than `max_txn_bytes` fails with
/// SQLITE_FULL and a message, whether it inserts or rewrites existing pages, with or without
/// SQLite's own cache spilling; the store never sees it, and the next transaction works.
#[test]
fn a_transaction_over_its_memory_limit_fails_whole() {
    for batch_atomic in [true, false] {
        for cache in [2000, 10] {
            let name = format!("guard-txn-{batch_atomic}-{cache}");
            let db = Database::attach(
                &name,
                MemStore::new(PageSize::DEFAULT),
                VfsConfig {
                    batch_atomic,
                    max_txn_bytes: 200 * 4096,
                    ..VfsConfig::default()
                },
            )
            .unwrap();
            let conn = db.connect_trusted().unwrap();
            conn.execute_batch(&format!(
                "PRAGMA cache_size={cache};
                 CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<150)
                 INSERT INTO t SELECT i, randomblob(3000) FROM n;
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<150)
                 INSERT INTO t SELECT 150 + i, randomblob(3000) FROM n;"
            ))
            .unwrap();
            let sum = |c: &Connection| -> (i64, String) {
                c.query_row("SELECT count(*), group_concat(hex(v)) FROM t", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap()
            };
            let before = sum(&conn);
            let head = db.head();
            for sql in [
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<600)
                 INSERT INTO t(v) SELECT randomblob(3000) FROM n",
                "UPDATE t SET v = randomblob(3000); UPDATE t SET v = randomblob(3001)",
                "BEGIN; UPDATE t SET v = randomblob(3000) WHERE id <= 150;
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<600)
                 INSERT INTO t(v) SELECT randomblob(3000) FROM n; COMMIT",
            ] {
                let err = conn.execute_batch(sql).expect_err(sql);
                assert_eq!(
                    err.sqlite_error_code(),
                    Some(ErrorCode::DiskFull),
                    "{name}: {sql}: {err}"
                );
                let why = db.take_last_error().unwrap_or_default();
                assert!(why.contains("split it"), "{name}: {why}");
                if !conn.is_autocommit() {
                    conn.execute_batch("ROLLBACK").unwrap();
                }
                assert_eq!(db.head(), head, "{name}: {sql}: the store moved");
                assert_eq!(sum(&conn), before, "{name}: {sql}");
            }
            conn.execute_batch("UPDATE t SET v = x'00' WHERE id = 1")
                .unwrap();
            let ok: String = conn
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(ok, "ok", "{name}");
            drop(conn);
            // A fresh connection (no SQLite cache) reads the store's state.
            let conn = db.connect().unwrap();
            assert_eq!(sum(&conn).0, 300, "{name}");
        }
    }
}
