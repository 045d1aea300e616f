//! Measures the two commit paths of the VFS on the in-memory store, natively:
//! batch-atomic writes (no rollback journal) against journal + commit at xSync.
//!
//!     cargo run --release -p dosql-vfs --example commit_modes
//!
//! Prints medians of 7 runs per workload and the ratio journal / batch-atomic.

use std::time::Instant;

use dosql_pagestore::{MemStore, PageSize};
use dosql_vfs::{Database, VfsConfig};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run(
    name: &str,
    batch_atomic: bool,
    workload: &dyn Fn(&rusqlite::Connection),
) -> (f64, u64, u64) {
    let mut times = Vec::new();
    let mut last = (0, 0);
    for i in 0..7 {
        let db = Database::attach(
            &format!("{name}-{batch_atomic}-{i}"),
            MemStore::new(PageSize::DEFAULT),
            VfsConfig {
                batch_atomic,
                ..VfsConfig::default()
            },
        )
        .expect("attach");
        let conn = db.connect_trusted().expect("connect");
        conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, n INTEGER)")
            .expect("schema");
        let started = Instant::now();
        let before = db.stats();
        workload(&conn);
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        let after = db.stats();
        last = (
            after.commits - before.commits,
            after.batch_commits - before.batch_commits,
        );
    }
    (median(times), last.0, last.1)
}

fn main() {
    type Workload = (&'static str, Box<dyn Fn(&rusqlite::Connection)>);
    let workloads: [Workload; 3] = [
        (
            "10k inserts, one transaction",
            Box::new(|c| {
                c.execute_batch("BEGIN").unwrap();
                let mut s = c.prepare("INSERT INTO t(v, n) VALUES (?, ?)").unwrap();
                for i in 0..10_000 {
                    s.execute(rusqlite::params![format!("row {i}"), i]).unwrap();
                }
                c.execute_batch("COMMIT").unwrap();
            }),
        ),
        (
            "1k single-row transactions",
            Box::new(|c| {
                let mut s = c.prepare("INSERT INTO t(v, n) VALUES (?, ?)").unwrap();
                for i in 0..1_000 {
                    s.execute(rusqlite::params![format!("row {i}"), i]).unwrap();
                }
            }),
        ),
        (
            "100k rows, spilling a 100-page cache",
            Box::new(|c| {
                c.execute_batch(
                    "PRAGMA cache_size=100; BEGIN;
                     WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM k WHERE i<100000)
                     INSERT INTO t(v, n) SELECT 'row ' || i, i FROM k; COMMIT;",
                )
                .unwrap();
            }),
        ),
    ];
    println!(
        "| workload | batch-atomic (ms) | of its commits, batch-atomic | journal + xSync (ms) | journal / batch |"
    );
    println!("|---|---|---|---|---|");
    for (name, w) in &workloads {
        let (batch, commits, atomic) = run(name, true, w.as_ref());
        let (journal, _, _) = run(name, false, w.as_ref());
        println!(
            "| {name} | {batch:.1} | {atomic} of {commits} | {journal:.1} | {:.2} |",
            journal / batch
        );
    }
}
