//! Seeded random workloads of inserts, updates, deletes, transactions and savepoints, run
//! through the VFS and through plain in-memory SQLite: both must answer every statement the
//! same way and end with the same content. Replay one run with DOSQL_SEED=<seed>.

mod common;

use common::{Rng, integrity, rows};
use dosql_pagestore::{MemStore, PageSize};
use dosql_vfs::{Database, VfsConfig};
use rusqlite::Connection;

const DUMP: &str = "SELECT id, a, b, length(c), head FROM (SELECT *, hex(substr(c, 1, 4)) AS head FROM t) ORDER BY id";

fn statement(rng: &mut Rng, depth: &mut Vec<&'static str>, in_txn: &mut bool) -> String {
    match rng.below(20) {
        0..=6 => format!(
            "INSERT INTO t(a, b, c) VALUES ({}, 'v{}', CAST('c{}' AS BLOB) || zeroblob({}))",
            rng.below(500),
            rng.below(1000),
            rng.below(100_000),
            rng.below(2000)
        ),
        7..=8 => format!(
            "INSERT OR REPLACE INTO t(id, a, b) VALUES ({}, {}, 'r')",
            rng.below(300) + 1,
            rng.below(500)
        ),
        9..=10 => format!(
            "UPDATE t SET b = b || 'x', a = a + 1 WHERE a % 13 = {}",
            rng.below(13)
        ),
        11 => format!(
            "DELETE FROM t WHERE a BETWEEN {} AND {}",
            rng.below(500),
            rng.below(500)
        ),
        12 if !*in_txn => {
            *in_txn = true;
            "BEGIN".into()
        }
        13 if *in_txn && depth.is_empty() => {
            *in_txn = false;
            if rng.chance(30) {
                "ROLLBACK".into()
            } else {
                "COMMIT".into()
            }
        }
        14 => {
            let name = ["s1", "s2", "s3"][depth.len() % 3];
            depth.push(name);
            format!("SAVEPOINT {name}")
        }
        15 if !depth.is_empty() => {
            let name = depth.last().copied().unwrap_or("s1");
            format!("ROLLBACK TO {name}")
        }
        16 if !depth.is_empty() => {
            let name = depth.pop().unwrap_or("s1");
            format!("RELEASE {name}")
        }
        17 => "INSERT INTO t(id, a) VALUES (1, 0)".into(), // fails once row 1 exists
        18 if rng.chance(20) && !*in_txn && depth.is_empty() => "VACUUM".into(),
        18 => format!("CREATE TABLE IF NOT EXISTS u{} (x)", rng.below(3)),
        _ => format!(
            "UPDATE t SET c = zeroblob({}) WHERE id % 5 = {}",
            rng.below(4000),
            rng.below(5)
        ),
    }
}

fn run(seed: u64) {
    let mut rng = Rng::new(seed);
    let size = [512, 1024, 4096, 65536][rng.below(4) as usize];
    let config = VfsConfig {
        cache_pages: [4, 64, 4096][rng.below(3) as usize],
        read_ahead: rng.below(4) as u32,
        batch_atomic: rng.chance(50),
        ..VfsConfig::default()
    };
    let name = format!("random-{seed}");
    let db = Database::attach(
        &name,
        MemStore::new(PageSize::new(size).unwrap()),
        config.clone(),
    )
    .unwrap();
    let conn = db.connect_trusted().unwrap();
    let reference = Connection::open_in_memory().unwrap();
    let setup = format!(
        "PRAGMA cache_size={}; CREATE TABLE t(id INTEGER PRIMARY KEY, a INTEGER, b TEXT, c BLOB);
         CREATE INDEX t_a ON t(a);",
        [5, 50, 2000][rng.below(3) as usize]
    );
    conn.execute_batch(&setup).unwrap();
    reference.execute_batch(&setup).unwrap();
    let context =
        format!("seed {seed} (page size {size}, {config:?}); replay with DOSQL_SEED={seed}");
    let (mut depth, mut in_txn) = (Vec::new(), false);
    for step in 0..400 {
        let sql = statement(&mut rng, &mut depth, &mut in_txn);
        let got = conn.execute_batch(&sql).map_err(|e| e.to_string());
        let want = reference.execute_batch(&sql).map_err(|e| e.to_string());
        assert_eq!(got, want, "{context}: step {step}: {sql}");
        if step % 50 == 0 {
            assert_eq!(
                rows(&conn, DUMP),
                rows(&reference, DUMP),
                "{context}: step {step}"
            );
        }
    }
    assert_eq!(conn.is_autocommit(), reference.is_autocommit(), "{context}");
    if !conn.is_autocommit() {
        conn.execute_batch("COMMIT").unwrap();
        reference.execute_batch("COMMIT").unwrap();
    }
    assert_eq!(
        rows(&conn, DUMP),
        rows(&reference, DUMP),
        "{context}: final content"
    );
    assert_eq!(integrity(&conn), "ok", "{context}");
    // What the store holds, seen by a new connection, is the same.
    drop(conn);
    let fresh = db.connect().unwrap();
    assert_eq!(
        rows(&fresh, DUMP),
        rows(&reference, DUMP),
        "{context}: after reconnect"
    );
}

#[test]
fn random_workloads_match_plain_sqlite() {
    if let Some(seed) = std::env::var("DOSQL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return run(seed);
    }
    let base: u64 = std::env::var("DOSQL_SEED_BASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED);
    for i in 0..24 {
        run(base + i);
    }
}
