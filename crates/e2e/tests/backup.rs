//! `dosql backup` and `dosql restore-backup` end to end on workerd: a backup killed with
//! SIGKILL and restarted while the database takes commits, then restores at many txids, each
//! byte for byte the `dosql export` of that txid (SHA-256); after compaction, the ends of
//! level 1 files still restore exactly and a txid inside one is refused with the nearest
//! points; a restore by time; a restore into another database.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dosql_e2e::cli_output::{fails, ok};
use dosql_e2e::{Db, Server, dosql, dosql_bin};
use serde_json::json;

fn spawn_backup(url: &str, dir: &Path) -> Child {
    Command::new(dosql_bin())
        .args(["backup", "-q", "--interval-ms", "20", url])
        .arg(dir)
        .env_remove("DOSQL_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn txid(db: &Db) -> u64 {
    db.send("GET", "/history?limit=0", None).unwrap().ok()["txid"]
        .as_u64()
        .unwrap()
}

/// The newest txid the backup's files reach.
fn backed_up(dir: &Path) -> u64 {
    let mut newest = 0;
    for level in ["0", "1", "9"] {
        if let Ok(rd) = std::fs::read_dir(dir.join("ltx").join(level)) {
            for f in rd.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if let Some(max) = name
                    .strip_suffix(".ltx")
                    .and_then(|s| s.split_once('-'))
                    .and_then(|(_, b)| u64::from_str_radix(b, 16).ok())
                {
                    newest = newest.max(max);
                }
            }
        }
    }
    newest
}

#[test]
fn a_backup_killed_under_load_restores_every_txid_it_saw() {
    let server = Server::start();
    let db = server.db("backed");
    let url = format!("{}/db/backed", server.url());
    db.query(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v BLOB)",
        json!([]),
    )
    .ok();
    let dir = tempfile::tempdir().unwrap();
    let bdir = dir.path().join("backup");
    let mut backup = spawn_backup(&url, &bdir);
    let start = Instant::now();
    while backed_up(&bdir) == 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "no snapshot");
        std::thread::sleep(Duration::from_millis(10));
    }
    let first = backed_up(&bdir);
    let mut times = Vec::new();
    for step in 0..90u64 {
        match step % 6 {
            0..=2 => db.query(
                "INSERT INTO t(k, v) SELECT ?1, randomblob(200 + ?1 % 700) FROM (SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3)",
                json!([step]),
            ),
            3 => db.query("UPDATE t SET v = randomblob(50) WHERE k % 4 = ?1 % 4", json!([step])),
            4 => db.query("DELETE FROM t WHERE k % 3 = ?1 % 3", json!([step])),
            _ => db.query("VACUUM", json!([])),
        }
        .ok();
        times.push((txid(&db), dosql_cli::when::now_ms()));
        if step == 45 {
            backup.kill().unwrap();
            backup.wait().unwrap();
            backup = spawn_backup(&url, &bdir);
        }
    }
    let last = txid(&db);
    let deadline = Instant::now() + Duration::from_secs(60);
    while backed_up(&bdir) < last {
        assert!(
            Instant::now() < deadline,
            "the backup did not reach txid {last}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    backup.kill().unwrap();
    backup.wait().unwrap();

    let b = bdir.to_str().unwrap();
    let restore_equals_export = |t: u64| {
        let r = dir.path().join(format!("r{t}.sqlite"));
        let e = dir.path().join(format!("e{t}.sqlite"));
        ok(dosql(&[
            "restore-backup",
            "-q",
            "--force",
            b,
            r.to_str().unwrap(),
            "--txid",
            &t.to_string(),
        ]));
        ok(dosql(&[
            "export",
            "-q",
            "--force",
            "--txid",
            &t.to_string(),
            &url,
            e.to_str().unwrap(),
        ]));
        assert_eq!(
            dosql_e2e::sha256_hex(&r),
            dosql_e2e::sha256_hex(&e),
            "txid {t}"
        );
    };
    for t in (first..=last).step_by(7).chain([last]) {
        restore_equals_export(t);
    }
    // By time: the last commit at or before a moment in the middle.
    let (mid_txid, mid_ms) = times[times.len() / 2];
    let r = dir.path().join("by-time.sqlite");
    ok(dosql(&[
        "restore-backup",
        "-q",
        b,
        r.to_str().unwrap(),
        "--time",
        &dosql_cli::when::format(mid_ms),
    ]));
    let e = dir.path().join("mid.sqlite");
    ok(dosql(&[
        "export",
        "-q",
        "--txid",
        &mid_txid.to_string(),
        &url,
        e.to_str().unwrap(),
    ]));
    assert_eq!(dosql_e2e::sha256_hex(&r), dosql_e2e::sha256_hex(&e));
    // Before the first snapshot: refused, naming the oldest point.
    if first > 1 {
        let err = fails(dosql(&[
            "restore-backup",
            b,
            "/nonexistent/x.sqlite",
            "--txid",
            "1",
        ]));
        assert!(err.contains(&format!("txid {first} after it")), "{err}");
    }
    // Into another database.
    let copy = format!("{}/db/restored", server.url());
    ok(dosql(&[
        "restore-backup",
        "-q",
        b,
        &copy,
        "--txid",
        &last.to_string(),
    ]));
    let v = ok(dosql(&["verify", &copy]));
    let e = dir.path().join(format!("e{last}.sqlite"));
    assert!(v.contains(&dosql_e2e::sha256_hex(&e)), "{v}");

    // Compaction: level 0 merged into level 1; the ends of level 1 files restore exactly,
    // a txid inside one is refused with the nearest points.
    std::thread::sleep(Duration::from_millis(50));
    ok(dosql(&[
        "backup",
        "-q",
        "--once",
        "--compact-after",
        "0",
        "--l1-window-ms",
        "200",
        &url,
        b,
    ]));
    let level1: Vec<(u64, u64)> = std::fs::read_dir(bdir.join("ltx/1"))
        .unwrap()
        .flatten()
        .filter_map(|f| {
            let n = f.file_name().to_string_lossy().into_owned();
            let (a, b) = n.strip_suffix(".ltx")?.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect();
    assert!(!level1.is_empty(), "nothing compacted");
    assert!(
        std::fs::read_dir(bdir.join("ltx/0"))
            .unwrap()
            .next()
            .is_none()
    );
    restore_equals_export(last);
    if let Some(&(min, max)) = level1.iter().find(|(a, b)| b > a) {
        restore_equals_export(max);
        let err = fails(dosql(&[
            "restore-backup",
            b,
            "/nonexistent/x.sqlite",
            "--txid",
            &min.to_string(),
        ]));
        assert!(
            err.contains("cannot be rebuilt") && err.contains("nearest"),
            "{err}"
        );
    }
}
