//! Atomicity under store failures, checked against a reference: plain in-memory SQLite
//! that receives only the transactions the VFS acknowledged. Every test runs over the plain
//! memory store and over the Durable Object layout (classic and SQLite-backed storage in
//! memory, and in a redb file), with faults injected into the store's storage calls.

mod common;

use common::{Rng, integrity, rows};
use dosql_layout::{DoStore, FaultKv, KvFaults, MemKv, RedbKv, StorageKind};
use dosql_pagestore::{Fault, FaultPlan, FaultStore, MemStore, PageSize, PageStore};
use dosql_vfs::{Database, VfsConfig};
use rusqlite::Connection;

/// Arms faults in a store: the memory store's [`FaultPlan`], or the layout's [`KvFaults`]
/// (where a commit is one storage write, a read one storage read).
trait Arm {
    fn fail_all_commits(&self, fault: Option<Fault>);
    fn fail_commit_at(&self, n: u64, fault: Fault);
    fn commits(&self) -> u64;
    fn fail_all_reads(&self, on: bool);
}

impl Arm for FaultPlan {
    fn fail_all_commits(&self, fault: Option<Fault>) {
        FaultPlan::fail_all_commits(self, fault);
    }
    fn fail_commit_at(&self, n: u64, fault: Fault) {
        FaultPlan::fail_commit_at(self, n, fault);
    }
    fn commits(&self) -> u64 {
        FaultPlan::commits(self)
    }
    fn fail_all_reads(&self, on: bool) {
        FaultPlan::fail_all_reads(self, on);
    }
}

impl Arm for KvFaults {
    fn fail_all_commits(&self, fault: Option<Fault>) {
        self.fail_all_applies(fault);
    }
    fn fail_commit_at(&self, n: u64, fault: Fault) {
        self.fail_apply_at(n, fault);
    }
    fn commits(&self) -> u64 {
        self.applies()
    }
    fn fail_all_reads(&self, on: bool) {
        self.fail_all_gets(on);
    }
}

type Faulty = (Box<dyn PageStore>, Box<dyn Arm>);

/// Every store the tests run over, with pages of `size`: (name, store, its fault panel).
fn stores(size: PageSize, dir: &std::path::Path) -> Vec<(&'static str, Faulty)> {
    let layout = |kv: FaultKv<MemKv>, faults: KvFaults| -> Faulty {
        (Box::new(DoStore::open(kv, size).unwrap()), Box::new(faults))
    };
    let (mem, plan) = FaultStore::new(MemStore::new(size));
    let (classic, classic_faults) = FaultKv::new(MemKv::new(StorageKind::Classic));
    let (sqlite, sqlite_faults) = FaultKv::new(MemKv::new(StorageKind::SqliteBacked));
    let path = dir.join(format!("faults-{}.redb", size.get()));
    let _ = std::fs::remove_file(&path);
    let (redb, redb_faults) = FaultKv::new(RedbKv::open(path, StorageKind::SqliteBacked).unwrap());
    vec![
        ("memory store", (Box::new(mem), Box::new(plan))),
        ("layout, classic", layout(classic, classic_faults)),
        ("layout, SQLite-backed", layout(sqlite, sqlite_faults)),
        (
            "layout, redb",
            (
                Box::new(DoStore::open(redb, size).unwrap()),
                Box::new(redb_faults),
            ),
        ),
    ]
}

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

fn run(batch_atomic: bool, seed: u64, store_name: &str, (store, plan): Faulty) {
    let name = format!("faults-{batch_atomic}-{seed}-{store_name}");
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
    let dir = tempfile::tempdir().unwrap();
    for seed in 1..=6 {
        for batch_atomic in [true, false] {
            for (name, store) in stores(PageSize::new(1024).unwrap(), dir.path()) {
                run(batch_atomic, seed, name, store);
            }
        }
    }
}

#[test]
fn a_single_failed_batch_commit_is_retried_through_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    for (name, (store, plan)) in stores(PageSize::DEFAULT, dir.path()) {
        let db = Database::attach(&format!("retry-{name}"), store, VfsConfig::default()).unwrap();
        let conn = db.connect().unwrap();
        conn.execute_batch("CREATE TABLE t(x)").unwrap();
        plan.fail_commit_at(plan.commits() + 1, Fault::Error);
        conn.execute_batch("INSERT INTO t VALUES (1)").unwrap();
        assert_eq!(db.stats().failed_commits, 1, "{name}");
        assert_eq!(rows(&conn, "SELECT x FROM t").len(), 1, "{name}");
    }
}

#[test]
fn failed_reads_surface_as_errors_and_the_next_query_works() {
    let dir = tempfile::tempdir().unwrap();
    for (name, (store, plan)) in stores(PageSize::MIN, dir.path()) {
        read_faults(name, store, &*plan);
    }
}

fn read_faults(name: &str, store: Box<dyn PageStore>, plan: &dyn Arm) {
    let db = Database::attach(
        &format!("read-faults-{name}"),
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
