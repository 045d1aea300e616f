//! `dosql follow` end to end on workerd: a plain SQLite file kept in sync with a database
//! under a mixed load (inserts, updates, deletes, a VACUUM that shrinks the file), read by
//! another connection in a loop the whole time (`PRAGMA integrity_check` and a count, every
//! answer whole), the follower killed with SIGKILL and restarted on the way; at the end the
//! file equals `dosql export` at the same txid byte for byte (SHA-256). A restore on the
//! database reaches the file too (equal but for SQLite's change counter, see
//! `crates/cli/src/follow.rs`). Bad starts are refused with one line.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dosql_e2e::cli_output::{fails, ok};
use dosql_e2e::{Db, Server, dosql, dosql_bin};
use serde_json::json;

fn spawn_follower(url: &str, file: &Path) -> Child {
    Command::new(dosql_bin())
        .args(["follow", "-q", "--interval-ms", "20", url])
        .arg(file)
        .env_remove("DOSQL_TOKEN")
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(file.with_extension("follower.log"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .spawn()
        .unwrap()
}

fn txid(db: &Db) -> u64 {
    db.send("GET", "/history?limit=0", None).unwrap().ok()["txid"]
        .as_u64()
        .unwrap()
}

/// The file with page 1's change counter bytes (24-27, 92-99) zeroed.
fn normalized(path: &Path) -> Vec<u8> {
    let mut b = std::fs::read(path).unwrap();
    if b.len() >= 100 {
        b[24..28].fill(0);
        b[92..100].fill(0);
    }
    b
}

/// The txid the follower's state says the file is at or is moving to (it records the update
/// it applies before committing it).
fn followed_txid(file: &Path) -> u64 {
    let state = file.with_file_name(format!(
        ".{}.dosql-follow",
        file.file_name().unwrap().to_string_lossy()
    ));
    std::fs::read_to_string(state)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map(|j| {
            j["at"]["txid"]
                .as_u64()
                .unwrap_or(0)
                .max(j["next"]["txid"].as_u64().unwrap_or(0))
        })
        .unwrap_or(0)
}

#[test]
fn a_followed_file_stays_whole_for_its_readers_and_ends_equal_to_the_export() {
    let server = Server::start();
    let db = server.db("followed");
    let url = format!("{}/db/followed", server.url());
    db.query(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT)",
        json!([]),
    )
    .ok();
    db.query("CREATE INDEX t_k ON t(k)", json!([])).ok();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("copy.sqlite");
    ok(dosql(&[
        "follow",
        "--once",
        "-q",
        &url,
        file.to_str().unwrap(),
    ]));

    // A reader in this process (the follower is another one) for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, reads, file) = (stop.clone(), reads.clone(), file.clone());
        std::thread::spawn(move || {
            // Read-write (it only reads), as the sqlite3 shell opens a file: a reader that
            // finds the hot journal a killed follower left rolls it back (a read-only one
            // would get SQLITE_READONLY_ROLLBACK until the follower starts again).
            let c = rusqlite::Connection::open(&file).unwrap();
            c.busy_timeout(Duration::from_secs(30)).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let check: String = c
                    .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                    .unwrap();
                assert_eq!(check, "ok", "a reader saw a broken file");
                // Every row the follower applied is whole: k and v agree.
                let bad: i64 = c
                    .query_row(
                        "SELECT count(*) FROM t WHERE v <> printf('%d-%s', k, hex(zeroblob(k % 50)))",
                        [],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert_eq!(bad, 0);
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let mut follower = spawn_follower(&url, &file);
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for step in 0..120u64 {
        let k = next() % 1000;
        match next() % 10 {
            0..=4 => db.query(
                "WITH RECURSIVE s(n) AS (SELECT ?1 UNION ALL SELECT n + 1 FROM s WHERE n < ?1 + 40) \
                 INSERT INTO t(k, v) SELECT n, printf('%d-%s', n, hex(zeroblob(n % 50))) FROM s",
                json!([k]),
            ),
            5..=6 => db.query(
                "UPDATE t SET k = k + 1, v = printf('%d-%s', k + 1, hex(zeroblob((k + 1) % 50))) WHERE k % 7 = ?1 % 7",
                json!([k]),
            ),
            7..=8 => db.query("DELETE FROM t WHERE k % 5 = ?1 % 5", json!([k])),
            _ => db.query("VACUUM", json!([])),
        }
        .ok();
        if step == 60 {
            // Killed mid-stream, then started again: it resumes where the file is.
            follower.kill().unwrap();
            follower.wait().unwrap();
            follower = spawn_follower(&url, &file);
        }
    }
    let last = txid(&db);
    let deadline = Instant::now() + Duration::from_secs(60);
    while followed_txid(&file) < last {
        assert!(
            Instant::now() < deadline,
            "the follower did not reach txid {last}: {}",
            std::fs::read_to_string(file.with_extension("follower.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Killed once more (maybe mid-update: the state names an update before it commits),
    // then caught up once: it resumes where the file is.
    follower.kill().unwrap();
    follower.wait().unwrap();
    ok(dosql(&[
        "follow",
        "--once",
        "-q",
        &url,
        file.to_str().unwrap(),
    ]));
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert!(reads.load(Ordering::Relaxed) > 0, "the reader never read");

    let export = dir.path().join("export.sqlite");
    ok(dosql(&[
        "export",
        "-q",
        "--txid",
        &last.to_string(),
        &url,
        export.to_str().unwrap(),
    ]));
    dosql_e2e::assert_same_file(
        &file,
        &export,
        &format!("the followed file is the export at txid {last}"),
    );

    // A restore (a commit whose page 1 carries an older change counter) reaches the file.
    let restored = ok(dosql(&["restore", &url, "--txid", "5"]));
    assert!(restored.contains("restored"), "{restored}");
    ok(dosql(&[
        "follow",
        "--once",
        "-q",
        &url,
        file.to_str().unwrap(),
    ]));
    let export2 = dir.path().join("export2.sqlite");
    ok(dosql(&["export", "-q", &url, export2.to_str().unwrap()]));
    assert_eq!(normalized(&file), normalized(&export2));
    let c = rusqlite::Connection::open(&file).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn a_follower_refuses_what_is_not_its_own() {
    let server = Server::start();
    let db = server.db("f2");
    let url = format!("{}/db/f2", server.url());
    db.query("CREATE TABLE t(x)", json!([])).ok();
    let dir = tempfile::tempdir().unwrap();
    // A file that exists and is not a follower's.
    let other = dir.path().join("other.sqlite");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE x(y)")
        .unwrap();
    let err = fails(dosql(&["follow", "--once", &url, other.to_str().unwrap()]));
    assert!(err.contains("not a follower's file"), "{err}");
    // A followed file that something else wrote to.
    let file = dir.path().join("f.sqlite");
    ok(dosql(&[
        "follow",
        "--once",
        "-q",
        &url,
        file.to_str().unwrap(),
    ]));
    rusqlite::Connection::open(&file)
        .unwrap()
        .execute_batch("INSERT INTO t VALUES (1)")
        .unwrap();
    let err = fails(dosql(&["follow", "--once", &url, file.to_str().unwrap()]));
    assert!(err.contains("something else wrote to it"), "{err}");
    // Another database into the same file.
    let err = fails(dosql(&[
        "follow",
        "--once",
        &format!("{}/db/f3", server.url()),
        file.to_str().unwrap(),
    ]));
    assert!(err.contains("follows"), "{err}");
}

/// Without history the database keeps no commits to send: the follower takes a new snapshot
/// each time, in one transaction, shrinking the file when the database shrank.
#[test]
fn a_follower_of_a_database_without_history_takes_snapshots() {
    let server = Server::start_with_env(&[("HISTORY", "off")]);
    let db = server.db("nohist");
    let url = format!("{}/db/nohist", server.url());
    db.query("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)", json!([]))
        .ok();
    db.query(
        "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 400) \
         INSERT INTO t(v) SELECT randomblob(600) FROM s",
        json!([]),
    )
    .ok();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("n.sqlite");
    let f = file.to_str().unwrap();
    ok(dosql(&["follow", "--once", "-q", &url, f]));
    let big = std::fs::metadata(&file).unwrap().len();
    db.query("DELETE FROM t WHERE id > 20", json!([])).ok();
    db.query("VACUUM", json!([])).ok();
    let out = ok(dosql(&["follow", "--once", &url, f]));
    assert!(out.contains("a new snapshot"), "{out}");
    assert!(std::fs::metadata(&file).unwrap().len() < big / 4);
    let export = dir.path().join("e.sqlite");
    ok(dosql(&["export", "-q", &url, export.to_str().unwrap()]));
    assert_eq!(normalized(&file), normalized(&export));
    let c = rusqlite::Connection::open(&file).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 20);
}

/// A follower killed after recording an update and before SQLite committed it (the journal
/// hot, the state naming the update): the next start rolls the journal back, finds the file
/// at the txid before, and applies the update again. Killed just after the commit, before
/// the file's change counter was brought level: the next start finds the update applied and
/// levels the counter. Both kinds of update: an LTX file, and a new snapshot (a database
/// without history keeps no commits to send).
#[test]
fn a_follower_killed_around_its_commit_resumes_from_the_file() {
    for env in [&[][..], &[("HISTORY", "off")][..]] {
        let server = Server::start_with_env(env);
        let db = server.db("crashy");
        let url = format!("{}/db/crashy", server.url());
        db.query("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)", json!([]))
            .ok();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.sqlite");
        let f = file.to_str().unwrap();
        ok(dosql(&["follow", "--once", "-q", &url, f]));
        for round in 0..4 {
            let point = ["before-commit", "after-commit"][round % 2];
            // Two commits: one update of the file, which SQLite stamps with its counter plus
            // one, so the counter is left behind the database's by one.
            for _ in 0..2 {
                db.query(
                    "INSERT INTO t(v) SELECT randomblob(3000) FROM t UNION ALL SELECT randomblob(3000)",
                    json!([]),
                )
                .ok();
            }
            let crashed = Command::new(dosql_bin())
                .args(["follow", "--once", &url, f])
                .env("DOSQL_TEST_FOLLOW_CRASH", point)
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&crashed.stdout).into_owned();
            assert!(
                !crashed.status.success(),
                "{env:?} round {round}: no crash point: {said}"
            );
            assert_eq!(
                dir.path().join("c.sqlite-journal").exists(),
                point == "before-commit",
                "{env:?} round {round} {point}: a hot journal left only before the commit"
            );
            let resumed = ok(dosql(&["follow", "--once", &url, f]));
            if point == "after-commit" {
                assert!(resumed.contains("at txid"), "{resumed}");
                assert!(!resumed.contains("applied"), "{resumed}");
            } else if env.is_empty() {
                assert!(!resumed.contains("snapshot"), "{resumed}");
            } else {
                assert!(resumed.contains("a new snapshot"), "{resumed}");
            }
            let export = dir.path().join("e.sqlite");
            ok(dosql(&[
                "export",
                "-q",
                "--force",
                &url,
                export.to_str().unwrap(),
            ]));
            dosql_e2e::assert_same_file(&file, &export, &format!("{env:?} round {round}"));
        }
    }
}
