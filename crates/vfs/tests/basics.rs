//! The VFS on its own: persistence through a store, page sizes, transactions, limits.

mod common;

use dosql_pagestore::{MemStore, PageSize};
use dosql_vfs::{Database, VfsConfig};
use rusqlite::Connection;

fn count(conn: &Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn integrity(conn: &Connection) -> String {
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn data_survives_reopening_the_durable_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    {
        let db = Database::attach(
            "reopen-1",
            common::durable(&path, PageSize::DEFAULT),
            VfsConfig::default(),
        )
        .unwrap();
        let conn = db.connect().unwrap();
        conn.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<1000)
             INSERT INTO t(v) SELECT 'row ' || i FROM n;",
        )
        .unwrap();
        assert!(db.stats().commits >= 1);
    }
    let db = Database::attach(
        "reopen-2",
        common::durable(&path, PageSize::DEFAULT),
        VfsConfig::default(),
    )
    .unwrap();
    let conn = db.connect().unwrap();
    assert_eq!(count(&conn, "t"), 1000);
    assert_eq!(integrity(&conn), "ok");
}

#[test]
fn every_page_size_works_and_is_fixed() {
    for size in [512u32, 1024, 2048, 4096, 8192, 16384, 32768, 65536] {
        let name = format!("pagesize-{size}");
        let db = Database::attach(
            &name,
            MemStore::new(PageSize::new(size).unwrap()),
            VfsConfig::default(),
        )
        .unwrap();
        let conn = db.connect_trusted().unwrap();
        conn.execute_batch(
            "CREATE TABLE t(x);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<2000)
             INSERT INTO t SELECT randomblob(100) FROM n;",
        )
        .unwrap();
        let got: u32 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(got, size);
        assert_eq!(db.page_size().get(), size);
        // Changing the page size later cannot take effect (VACUUM would rewrite every page at
        // a size the store does not hold): the database must stay intact and usable.
        let other = if size == 4096 { 8192 } else { 4096 };
        conn.pragma_update(None, "page_size", other).unwrap();
        let vacuum = conn.execute_batch("VACUUM");
        assert!(
            vacuum.is_err(),
            "VACUUM to {other}-byte pages on a {size}-byte store"
        );
        drop(conn);
        let conn = db.connect().unwrap();
        let got: u32 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(got, size, "page size changed for {size}");
        assert_eq!(count(&conn, "t"), 2000);
        assert_eq!(integrity(&conn), "ok");
    }
}

#[test]
fn wal_mode_is_refused_and_the_database_stays_intact() {
    let db = Database::attach(
        "wal",
        MemStore::new(PageSize::DEFAULT),
        VfsConfig::default(),
    )
    .unwrap();
    let conn = db.connect_trusted().unwrap();
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    for setup in ["", "PRAGMA locking_mode=EXCLUSIVE;"] {
        conn.execute_batch(setup).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .unwrap();
        assert_ne!(mode.to_lowercase(), "wal");
        conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
    }
    drop(conn);
    let conn = db.connect().unwrap();
    assert_eq!(count(&conn, "t"), 3);
    assert_eq!(integrity(&conn), "ok");
}

#[test]
fn rollback_and_savepoints() {
    let db = Database::attach(
        "savepoints",
        MemStore::new(PageSize::DEFAULT),
        VfsConfig::default(),
    )
    .unwrap();
    let conn = db.connect().unwrap();
    conn.execute_batch(
        "CREATE TABLE t(x);
         INSERT INTO t VALUES (1);
         BEGIN; INSERT INTO t VALUES (2); ROLLBACK;
         SAVEPOINT a; INSERT INTO t VALUES (3);
           SAVEPOINT b; INSERT INTO t VALUES (4); ROLLBACK TO b;
         RELEASE a;",
    )
    .unwrap();
    let xs: Vec<i64> = conn
        .prepare("SELECT x FROM t ORDER BY x")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(xs, vec![1, 3]);
}

/// A transaction larger than SQLite's page cache spills pages to the database file before
/// the commit; the VFS must keep them out of the store until the commit, and a ROLLBACK must
/// leave the store as it was.
#[test]
fn spilled_transactions_commit_and_roll_back_whole() {
    for batch_atomic in [true, false] {
        let name = format!("spill-{batch_atomic}");
        let db = Database::attach(
            &name,
            MemStore::new(PageSize::MIN),
            VfsConfig {
                batch_atomic,
                ..VfsConfig::default()
            },
        )
        .unwrap();
        let conn = db.connect_trusted().unwrap();
        conn.execute_batch("PRAGMA cache_size=10; CREATE TABLE t(x);")
            .unwrap();
        let commits = db.stats().commits;
        conn.execute_batch(
            "BEGIN;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<5000)
             INSERT INTO t SELECT randomblob(200) FROM n;
             ROLLBACK;",
        )
        .unwrap();
        assert_eq!(
            db.stats().commits,
            commits,
            "a rolled-back spill reached the store"
        );
        assert_eq!(count(&conn, "t"), 0);
        conn.execute_batch(
            "BEGIN;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<5000)
             INSERT INTO t SELECT randomblob(200) FROM n;
             COMMIT;",
        )
        .unwrap();
        assert_eq!(
            db.stats().commits,
            commits + 1,
            "one transaction, one commit"
        );
        assert_eq!(count(&conn, "t"), 5000);
        assert_eq!(integrity(&conn), "ok");
    }
}

#[test]
fn warm_reads_never_touch_the_store() {
    let db = Database::attach(
        "warm",
        MemStore::new(PageSize::DEFAULT),
        VfsConfig::default(),
    )
    .unwrap();
    let conn = db.connect().unwrap();
    conn.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<3000)
         INSERT INTO t SELECT i, randomblob(300) FROM n;",
    )
    .unwrap();
    db.reset_stats();
    for i in 1..=3000 {
        let _: Vec<u8> = conn
            .query_row("SELECT v FROM t WHERE id=?", [i], |r| r.get(0))
            .unwrap();
    }
    let stats = db.stats();
    assert_eq!(stats.store_reads, 0, "{stats:?}");
    assert_eq!(stats.commits, 0);
}

#[test]
fn a_bounded_cache_reads_through_to_the_store() {
    let db = Database::attach(
        "bounded",
        MemStore::new(PageSize::MIN),
        VfsConfig {
            cache_pages: 16,
            read_ahead: 3,
            ..VfsConfig::default()
        },
    )
    .unwrap();
    let conn = db.connect_trusted().unwrap();
    conn.execute_batch(
        "PRAGMA cache_size=5;
         CREATE TABLE t(id INTEGER PRIMARY KEY, v);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<2000)
         INSERT INTO t SELECT i, randomblob(100) FROM n;",
    )
    .unwrap();
    db.reset_stats();
    assert_eq!(count(&conn, "t"), 2000);
    let stats = db.stats();
    assert!(stats.cached_pages <= 16, "{stats:?}");
    assert!(
        stats.store_reads > 0 && stats.pages_read > stats.store_reads,
        "read-ahead: {stats:?}"
    );
}

#[test]
fn unknown_names_do_not_open() {
    let err = Connection::open_with_flags_and_vfs(
        "never-attached",
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_CREATE,
        dosql_vfs::VFS_NAME,
    )
    .map(|c| c.execute_batch("CREATE TABLE t(x)"));
    assert!(matches!(err, Err(_) | Ok(Err(_))), "{err:?}");
}

#[test]
fn attaching_a_name_twice_is_refused() {
    let _a = Database::attach(
        "twice",
        MemStore::new(PageSize::DEFAULT),
        VfsConfig::default(),
    )
    .unwrap();
    let b = Database::attach(
        "twice",
        MemStore::new(PageSize::DEFAULT),
        VfsConfig::default(),
    );
    assert!(b.is_err());
}

#[test]
fn vacuum_shrinks_the_store() {
    for batch_atomic in [true, false] {
        let db = Database::attach(
            &format!("vacuum-{batch_atomic}"),
            MemStore::new(PageSize::DEFAULT),
            VfsConfig {
                batch_atomic,
                ..VfsConfig::default()
            },
        )
        .unwrap();
        let conn = db.connect().unwrap();
        conn.execute_batch(
            "CREATE TABLE t(x);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<300)
             INSERT INTO t SELECT zeroblob(3000) FROM n;",
        )
        .unwrap();
        let big = db.head().page_count;
        conn.execute_batch("DELETE FROM t WHERE rowid > 10; VACUUM;")
            .unwrap();
        let pages: u32 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        assert!(pages < big / 10, "{pages} of {big}");
        assert_eq!(
            db.head().page_count,
            pages,
            "the store keeps the vacuumed size"
        );
        assert_eq!(db.stats().discarded_transactions, 0);
        drop(conn);
        let conn = db.connect().unwrap();
        assert_eq!(count(&conn, "t"), 10);
        assert_eq!(integrity(&conn), "ok");
    }
}

#[test]
fn deleted_rows_leave_no_bytes_in_the_stored_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let open = |name: &str| {
        Database::attach(
            name,
            common::durable(&path, PageSize::DEFAULT),
            VfsConfig::default(),
        )
        .unwrap()
    };
    let marker = b"do-not-keep-me";
    let stored = |path: &std::path::Path| {
        let mut store = common::durable(path, PageSize::DEFAULT);
        let image = dosql_pagestore::image_of(&mut store).unwrap();
        image.windows(marker.len()).any(|w| w == marker)
    };
    {
        let db = open("secure-delete-1");
        db.connect()
            .unwrap()
            .execute_batch(
                "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<200)
                 INSERT INTO t(v) SELECT 'kept ' || i FROM n;
                 UPDATE t SET v = 'do-not-keep-me ' || id WHERE id % 10 = 0;",
            )
            .unwrap();
    }
    assert!(stored(&path));
    {
        let db = open("secure-delete-2");
        let conn = db.connect().unwrap();
        // Shrinking rows in place and deleting others both free cell space.
        conn.execute_batch(
            "UPDATE t SET v = 'x' WHERE id % 20 = 0; DELETE FROM t WHERE id % 10 = 0;",
        )
        .unwrap();
        assert_eq!(count(&conn, "t"), 180);
    }
    assert!(
        !stored(&path),
        "a deleted row's text is still in a stored page"
    );
}

/// A rollback of a transaction that spilled pages into the file plays the journal back and
/// syncs the file like a commit; it must not reach the store, even for pages the cache no
/// longer holds (it would be a commit that changes nothing but the commit counter). A savepoint
/// rolled back inside a transaction that then commits must still commit everything else.
#[test]
fn rolled_back_spills_commit_nothing() {
    let db = Database::attach(
        "rollback-spill",
        MemStore::new(PageSize::new(1024).unwrap()),
        VfsConfig {
            cache_pages: 8,
            batch_atomic: false,
            ..VfsConfig::default()
        },
    )
    .unwrap();
    let conn = db.connect_trusted().unwrap();
    conn.execute_batch(
        "PRAGMA cache_size=10; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<400)
         INSERT INTO t SELECT i, randomblob(600) FROM n;",
    )
    .unwrap();
    let head = db.head();
    let commits = db.stats().commits;
    let sum = |c: &Connection| -> String {
        c.query_row("SELECT group_concat(hex(v)) FROM t", [], |r| r.get(0))
            .unwrap()
    };
    let before = sum(&conn);
    conn.execute_batch("BEGIN; UPDATE t SET v = randomblob(600); ROLLBACK;")
        .unwrap();
    conn.execute_batch("BEGIN; UPDATE t SET v = randomblob(600);")
        .unwrap();
    assert!(
        conn.execute_batch("UPDATE t SET id = 1 WHERE id = 2")
            .is_err()
    );
    conn.execute_batch("ROLLBACK").unwrap();
    assert_eq!(db.head(), head, "a rollback reached the store");
    assert_eq!(db.stats().commits, commits);
    assert_eq!(sum(&conn), before);
    // A savepoint rolled back inside a transaction that commits.
    conn.execute_batch(
        "BEGIN; UPDATE t SET v = x'01' WHERE id <= 100;
         SAVEPOINT s; UPDATE t SET v = randomblob(600); ROLLBACK TO s; RELEASE s;
         UPDATE t SET v = x'02' WHERE id > 390; COMMIT;",
    )
    .unwrap();
    assert_eq!(db.head().txid, head.txid + 1);
    drop(conn);
    let conn = db.connect_trusted().unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM t WHERE v = x'01'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 100);
    let n: i64 = conn
        .query_row("SELECT count(*) FROM t WHERE v = x'02'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 10);
    assert_eq!(integrity(&conn), "ok");
}
