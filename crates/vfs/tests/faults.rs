//! Atomicity under store failures, checked against a reference: plain in-memory SQLite
//! that receives only the transactions the VFS acknowledged.

mod common;

use common::{Rng, integrity, rows};
use dosql_pagestore::{Fault, FaultStore, MemStore, PageSize};
use dosql_vfs::{Database, VfsConfig};
use rusqlite::Connection;

const SCHEMA: &str = "CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v BLOB);
                      CREATE INDEX t_k ON t(k);";
const DUMP: &str = "SELECT id, k, length(v), hex(substr(v, 1, 8)) FROM t ORDER BY id";

/// A transaction touching many pages: inserts, updates and deletes.
fn transaction(rng: &mut Rng, n: u64) -> String {
    let mut sql = String::from("BEGIN;");
    for _ in 0..rng.below(n) + 1 {
        match rng.below(4) {
            0 | 1 => {
                sql += &format!(
                    "INSERT INTO t(k, v) VALUES ({}, zeroblob({}));",
                    rng.below(1000),
                    rng.below(3000)
                )
            }
            2 => sql += &format!("UPDATE t SET k = k + 1 WHERE k % 7 = {};", rng.below(7)),
            _ => sql += &format!("DELETE FROM t WHERE k = {};", rng.below(1000)),
        }
    }
    sql + "COMMIT;"
}

fn run(batch_atomic: bool, seed: u64) {
    let name = format!("faults-{batch_atomic}-{seed}");
    let (store, plan) = FaultStore::new(MemStore::new(PageSize::new(1024).unwrap()));
    let db = Database::attach(
        &name,
        store,
        VfsConfig {
            batch_atomic,
            ..VfsConfig::default()
        },
    )
    .unwrap();
    let conn = db.connect().unwrap();
    let reference = Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    reference.execute_batch(SCHEMA).unwrap();
    let mut rng = Rng::new(seed);
    let mut failed = 0;
    for i in 0..60 {
        let sql = transaction(&mut rng, 40);
        let fault = match rng.below(4) {
            0 => Some(Fault::Error),
            1 => Some(Fault::LostAck),
            _ => None,
        };
        // Every commit attempt fails while armed, so SQLite's fallback from a failed
        // batch-atomic write to its rollback journal fails too.
        plan.fail_all_commits(fault);
        let attempts = plan.commits();
        let result = conn.execute_batch(&sql);
        let attempted = plan.commits() > attempts;
        plan.fail_all_commits(None);
        match (fault, &result) {
            // A transaction that changed nothing never reaches the store, faults or not.
            (None, Ok(())) | (Some(_), Ok(())) if fault.is_none() || !attempted => {
                reference.execute_batch(&sql).unwrap()
            }
            (Some(fault), Err(e)) => {
                failed += 1;
                let msg = db.take_last_error().unwrap_or_default();
                assert!(
                    msg.contains("injected fault"),
                    "seed {seed} txn {i}: {e} / {msg}"
                );
                // A failed COMMIT can leave SQLite's transaction open; end it as an
                // application would.
                let _ = conn.execute_batch("ROLLBACK");
                let before = rows(&reference, DUMP);
                let now = rows(&conn, DUMP);
                if fault == Fault::LostAck && now != before {
                    // The store may have kept the transaction whose acknowledgement was lost:
                    // then all of it must be there, never a part.
                    reference.execute_batch(&sql).unwrap();
                } else {
                    assert!(
                        now == before,
                        "seed {seed} txn {i}: a failed commit changed the database"
                    );
                }
            }
            _ => panic!("seed {seed} txn {i}: fault {fault:?} gave {result:?}"),
        }
        assert!(
            rows(&conn, DUMP) == rows(&reference, DUMP),
            "seed {seed} txn {i}: database differs from the reference after fault {fault:?}"
        );
    }
    assert!(failed > 0, "seed {seed}: no fault was exercised");
    assert_eq!(integrity(&conn), "ok");
    // The same state seen by a fresh connection (nothing left only in SQLite's page cache).
    drop(conn);
    assert!(
        rows(&db.connect().unwrap(), DUMP) == rows(&reference, DUMP),
        "seed {seed}: reconnect"
    );
}

#[test]
fn failed_commits_leave_the_database_as_before() {
    for seed in 1..=6 {
        run(true, seed);
        run(false, seed);
    }
}

#[test]
fn a_single_failed_batch_commit_is_retried_through_the_journal() {
    let (store, plan) = FaultStore::new(MemStore::new(PageSize::DEFAULT));
    let db = Database::attach("retry", store, VfsConfig::default()).unwrap();
    let conn = db.connect().unwrap();
    conn.execute_batch("CREATE TABLE t(x)").unwrap();
    plan.fail_commit_at(plan.commits() + 1, Fault::Error);
    conn.execute_batch("INSERT INTO t VALUES (1)").unwrap();
    assert_eq!(db.stats().failed_commits, 1);
    assert_eq!(rows(&conn, "SELECT x FROM t").len(), 1);
}

#[test]
fn failed_reads_surface_as_errors_and_the_next_query_works() {
    let (store, plan) = FaultStore::new(MemStore::new(PageSize::MIN));
    let db = Database::attach(
        "read-faults",
        store,
        VfsConfig {
            cache_pages: 4,
            ..VfsConfig::default()
        },
    )
    .unwrap();
    let conn = db.connect_trusted().unwrap();
    conn.execute_batch(
        "PRAGMA cache_size=2; CREATE TABLE t(x);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<500)
         INSERT INTO t SELECT randomblob(100) FROM n;",
    )
    .unwrap();
    plan.fail_all_reads(true);
    let err = conn
        .query_row("SELECT count(*), sum(length(x)) FROM t", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap_err();
    assert!(err.to_string().contains("I/O"), "{err}");
    assert!(db.last_error().unwrap().contains("injected fault reading"));
    plan.fail_all_reads(false);
    let n: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 500);
    assert_eq!(integrity(&conn), "ok");
}
