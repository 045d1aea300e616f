//! Crash safety on the durable store: a child process commits transactions in a loop and
//! reports each acknowledged one; the parent kills it with SIGKILL at random moments, then
//! reopens the store: integrity must be `ok` and every acknowledged transaction present,
//! whole. Replay with DOSQL_SEED=<seed>.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Rng, integrity};
use dosql_pagestore::PageSize;
use dosql_vfs::{Database, VfsConfig};

const CHILD_ENV: &str = "DOSQL_CRASH_CHILD_STORE";

/// The child: runs only when the parent starts this test binary with `CHILD_ENV` set.
#[test]
#[ignore = "run by crash_loses_no_acknowledged_commit as its child process"]
fn crash_child_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let seed: u64 = std::env::var("DOSQL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let store = common::durable(&path, PageSize::DEFAULT);
    let db = Database::attach("crash-child", store, VfsConfig::default()).expect("attach");
    let conn = db.connect().expect("connect");
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS txn(id INTEGER PRIMARY KEY, rows INTEGER);
         CREATE TABLE IF NOT EXISTS item(txn INTEGER, n INTEGER, pad BLOB);
         CREATE INDEX IF NOT EXISTS item_txn ON item(txn);",
    )
    .expect("schema");
    let mut next: i64 = conn
        .query_row("SELECT coalesce(max(id), 0) + 1 FROM txn", [], |r| r.get(0))
        .expect("next id");
    let mut rng = Rng::new(seed);
    loop {
        // Transactions of 1 to 60 rows with up to 4 KiB each: from one page to many.
        let rows = rng.below(60) + 1;
        let pad = rng.below(4096);
        let sql = format!(
            "BEGIN;
             INSERT INTO txn VALUES ({next}, {rows});
             WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM k WHERE i<{rows})
             INSERT INTO item SELECT {next}, i, zeroblob({pad}) FROM k;
             DELETE FROM item WHERE txn = {next} - 40;
             UPDATE txn SET rows = 0 WHERE id = {next} - 40;
             COMMIT;"
        );
        conn.execute_batch(&sql).expect("commit");
        println!("ack {next}");
        next += 1;
    }
}

#[test]
fn crash_loses_no_acknowledged_commit() {
    let seed: u64 = std::env::var("DOSQL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xC2A5);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let exe = std::env::current_exe().unwrap();
    let mut last_ack = 0i64;
    let rounds = 24;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "crash_child_writer",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .env("DOSQL_SEED", (seed + round).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // Kill after a random number of acknowledgements (0 means: during start-up or the
        // first commit) and a random extra delay, so kills land at every stage of a commit.
        let acks_wanted = rng.below(40);
        let started = Instant::now();
        let mut acks = 0;
        while acks < acks_wanted && started.elapsed() < Duration::from_secs(20) {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(n) = line.strip_prefix("ack ") {
                        last_ack = last_ack.max(n.trim().parse().unwrap());
                        acks += 1;
                    }
                }
                _ => break,
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(20_000)));
        child.kill().unwrap(); // SIGKILL on Unix
        // Acks already written to the pipe before the kill count too.
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("ack ") {
                last_ack = last_ack.max(n.trim().parse().unwrap());
            }
        }
        child.wait().unwrap();

        let store = common::durable(&path, PageSize::DEFAULT);
        let db =
            Database::attach(&format!("crash-check-{round}"), store, VfsConfig::default()).unwrap();
        let conn = db.connect().unwrap();
        let context = format!("seed {seed} round {round}");
        assert_eq!(integrity(&conn), "ok", "{context}");
        let has_schema: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name='txn'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if has_schema == 0 {
            assert_eq!(
                last_ack, 0,
                "{context}: acknowledged commits lost with the schema"
            );
            continue;
        }
        let max: i64 = conn
            .query_row("SELECT coalesce(max(id), 0) FROM txn", [], |r| r.get(0))
            .unwrap();
        assert!(
            max >= last_ack,
            "{context}: acknowledged {last_ack}, store has up to {max}"
        );
        // Every transaction present is whole: its row count matches its items.
        let torn: i64 = conn
            .query_row(
                "SELECT count(*) FROM txn WHERE rows <> (SELECT count(*) FROM item WHERE item.txn = txn.id)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(torn, 0, "{context}: partially applied transactions");
        let ids: i64 = conn
            .query_row("SELECT count(*) FROM txn", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ids, max, "{context}: a gap in the committed transactions");
    }
    assert!(last_ack > 0, "no commit was ever acknowledged");
}
