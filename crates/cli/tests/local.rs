//! The `dosql` binary against local stores (no server): every subcommand, its refusals and its
//! error messages.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dosql_e2e::cli_output::{fails, ok};
use dosql_e2e::sqlite_file::{integrity, tables};
use rusqlite::Connection;
use sha2::{Digest, Sha256};

fn dosql() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dosql"));
    // No token or history from the environment of whoever runs the tests.
    c.env_remove("DOSQL_TOKEN").env("DOSQL_HISTORY", "");
    c
}

fn run(args: &[&str]) -> Output {
    dosql().args(args).output().expect("run dosql")
}

fn run_stdin(args: &[&str], input: &str) -> Output {
    let mut child = dosql()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dosql");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn chinook() -> PathBuf {
    dosql_e2e::testdata().join("chinook/Chinook_Sqlite.sqlite")
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn chinook_round_trip_through_a_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("chinook.dosql");
    let out = dir.path().join("out.sqlite");
    let src = chinook();
    let summary = ok(run(&["import", s(&src), s(&store)]));
    assert!(summary.contains("246 pages of 4096 bytes"), "{summary}");

    let info = ok(run(&["info", s(&store)]));
    assert!(info.contains("page_size:  4096"), "{info}");
    assert!(info.contains("page_count: 246"), "{info}");
    assert!(info.contains("size:       1007616 bytes"), "{info}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(run(&["info", "--json", s(&store)]))).unwrap();
    assert_eq!(json["page_count"], 246);
    assert_eq!(json["size_bytes"], 1007616);
    assert!(json["txid"].as_u64().unwrap() >= 1);

    let verify = ok(run(&["verify", s(&store)]));
    assert!(verify.contains("integrity_check: ok"), "{verify}");
    // The checksum is the SHA-256 of the database file.
    assert!(
        verify.contains(&format!("sha256: {}", sha256(&src))),
        "{verify}"
    );

    ok(run(&["export", s(&store), s(&out)]));
    assert_eq!(integrity(&out), "ok");
    assert_eq!(tables(&out), tables(&src));
    assert_eq!(sha256(&out), sha256(&src));
    // Nothing left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn import_refuses_a_non_empty_store_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("db");
    ok(run(&[
        "shell",
        s(&store),
        "CREATE TABLE mine(x); INSERT INTO mine VALUES (42);",
    ]));
    let err = fails(run(&["import", s(&chinook()), s(&store)]));
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(ok(run(&["shell", s(&store), "SELECT x FROM mine"])), "42\n");

    ok(run(&["import", "--force", "-q", s(&chinook()), s(&store)]));
    assert_eq!(
        ok(run(&["shell", s(&store), "SELECT count(*) FROM Track"])),
        "3503\n"
    );
    let err = fails(run(&["shell", s(&store), "SELECT x FROM mine"]));
    assert!(err.contains("no such table: mine"), "{err}");
}

#[test]
fn an_empty_store_takes_an_import_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("db");
    // Created by a shell that only read: it exists, with nothing in it.
    ok(run(&["shell", s(&store), "SELECT 1"]));
    ok(run(&["import", "-q", s(&chinook()), s(&store)]));
    assert_eq!(
        ok(run(&["shell", s(&store), "SELECT count(*) FROM Artist"])),
        "275\n"
    );
}

#[test]
fn a_killed_import_leaves_the_old_store_intact() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("db");
    ok(run(&[
        "shell",
        s(&store),
        "CREATE TABLE old(x); INSERT INTO old VALUES ('kept');",
    ]));
    let before = ok(run(&["verify", s(&store)]));
    // One page per commit and a pause after each, so the import is surely mid-way when killed.
    let mut child = dosql()
        .args([
            "import",
            "--force",
            "--chunk-pages",
            "8",
            s(&chinook()),
            s(&store),
        ])
        .env("DOSQL_TEST_CHUNK_DELAY_MS", "20")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut progress = BufReader::new(child.stderr.take().unwrap());
    let started = Instant::now();
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            progress.read_line(&mut line).unwrap() > 0,
            "import ended early"
        );
        if line.contains("50%") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(ok(run(&["verify", s(&store)])), before);
    assert_eq!(
        ok(run(&["shell", s(&store), "SELECT x FROM old"])),
        "kept\n"
    );
    // The next import clears the leftovers and succeeds.
    ok(run(&["import", "--force", "-q", s(&chinook()), s(&store)]));
    assert_eq!(
        ok(run(&["shell", s(&store), "SELECT count(*) FROM Track"])),
        "3503\n"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["db"]);
}

#[test]
fn bad_files_are_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("db");
    let bytes = std::fs::read(chinook()).unwrap();
    let write = |name: &str, data: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    let text = write("notes.txt", b"hello, not a database\n");
    let empty = write("empty.sqlite", b"");
    let torn = write("torn.sqlite", &bytes[..500_000]);
    let half = write("half.sqlite", &bytes[..123 * 4096]);
    let mut bad_size = bytes.clone();
    bad_size[16] = 0x03; // 0x0300 = 768: not a power of two
    let bad_size = write("size.sqlite", &bad_size);
    let mut garbled = bytes.clone();
    for b in &mut garbled[4096 * 3..4096 * 40] {
        *b = 0x5a;
    }
    let garbled = write("garbled.sqlite", &garbled);
    let hot = write("hot.sqlite", &bytes);
    write("hot.sqlite-journal", b"journal bytes");
    let wal = write("wal.sqlite", &bytes);
    write("wal.sqlite-wal", b"wal bytes");
    let cases: [(&Path, &str); 9] = [
        (&text, "not a SQLite database file"),
        (&empty, "not a SQLite database file"),
        (&torn, "not a whole number of 4096-byte pages"),
        (&half, "the header says 246 pages, the file holds 123"),
        (&bad_size, "no valid page size"),
        (&garbled, "malformed"),
        (&hot, "hot journal"),
        (&wal, "checkpoint"),
        (&dir.path().join("missing.sqlite"), "No such file"),
    ];
    for (file, want) in cases {
        let err = fails(run(&["import", s(file), s(&store)]));
        assert!(err.contains(want), "{}: {err}", file.display());
        assert!(!store.exists(), "{}: the store was created", file.display());
    }
    let err = fails(run(&["import", s(dir.path()), s(&store)]));
    assert!(err.contains("directory"), "{err}");
}

#[test]
fn a_wal_mode_file_is_imported_in_rollback_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(chinook()).unwrap();
    bytes[18] = 2;
    bytes[19] = 2;
    let file = dir.path().join("wal.sqlite");
    std::fs::write(&file, &bytes).unwrap();
    let store = dir.path().join("db");
    ok(run(&["import", "-q", s(&file), s(&store)]));
    let out = dir.path().join("out.sqlite");
    ok(run(&["export", "-q", s(&store), s(&out)]));
    let exported = std::fs::read(&out).unwrap();
    assert_eq!(&exported[18..20], &[1, 1]);
    assert_eq!(integrity(&out), "ok");
    assert_eq!(tables(&out), tables(&chinook()));
}

#[test]
fn bad_targets_get_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let out = dir.path().join("out.sqlite");
    let src = chinook();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["info", s(&missing)], "no such store"),
        (vec!["verify", s(&missing)], "no such store"),
        (vec!["export", s(&missing), s(&out)], "no such store"),
        (
            vec!["info", s(&src)],
            "is a SQLite database file, not a dosql store",
        ),
        (
            vec!["shell", s(&src), "SELECT 1"],
            "is a SQLite database file",
        ),
        (vec!["info", s(dir.path())], "is a directory"),
        (vec!["info", "http://"], "bad target URL"),
        (
            vec!["info", "http://localhost:8787/nodb"],
            "must end in /db/<name>",
        ),
        (
            vec!["info", "http://localhost:8787/db/bad%20name"],
            "bad database name",
        ),
        (vec!["info", "http://localhost:99999/db/x"], "bad port"),
        (vec!["info", "ftp://localhost/db/x"], "http or https"),
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        (
            vec!["info", "http://127.0.0.1:1/db/x"],
            "cannot reach http://127.0.0.1:1/db/x",
        ),
        (
            vec!["import", s(&src), "http://127.0.0.1:1/db/x"],
            "cannot reach",
        ),
    ];
    for (args, want) in cases {
        let err = fails(run(&args));
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(!missing.exists());
    assert!(!out.exists());
}

#[test]
fn export_never_overwrites_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("db");
    ok(run(&[
        "shell",
        s(&store),
        "CREATE TABLE t(x); INSERT INTO t VALUES (1);",
    ]));
    let out = dir.path().join("out.sqlite");
    std::fs::write(&out, b"precious").unwrap();
    let err = fails(run(&["export", s(&store), s(&out)]));
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    ok(run(&["export", "--force", "-q", s(&store), s(&out)]));
    assert_eq!(integrity(&out), "ok");
    let conn = Connection::open(&out).unwrap();
    let x: i64 = conn.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(x, 1);
}

#[test]
fn shell_modes_and_dot_commands() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("db");
    let db = s(&store);
    ok(run(&[
        "shell",
        db,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB);
         INSERT INTO t VALUES (1, 'ann', 2.0, x'00ff'), (2, 'b,\"c\"', NULL, NULL);
         CREATE VIEW v AS SELECT name FROM t;",
    ]));
    let q = "SELECT id, name, score, data FROM t ORDER BY id";
    // Not a terminal: list mode, as sqlite3 prints it.
    assert_eq!(
        ok(run(&["shell", db, q])),
        "1|ann|2.0|X'00ff'\n2|b,\"c\"||\n"
    );
    assert_eq!(
        ok(run(&["shell", "-m", "csv", "--header", db, q])),
        "id,name,score,data\n1,ann,2.0,X'00ff'\n2,\"b,\"\"c\"\"\",,\n"
    );
    assert_eq!(
        ok(run(&["shell", "--mode", "json", db, q])),
        "[{\"id\":1,\"name\":\"ann\",\"score\":2.0,\"data\":{\"base64\":\"AP8=\"}},\n{\"id\":2,\"name\":\"b,\\\"c\\\"\",\"score\":null,\"data\":null}]\n"
    );
    assert_eq!(
        ok(run(&[
            "shell",
            "-m",
            "line",
            db,
            "SELECT id, name FROM t WHERE id = 1"
        ])),
        "  id = 1\nname = ann\n"
    );
    assert_eq!(
        ok(run(&["shell", "-m", "table", db, "SELECT id, name FROM t"])),
        "+----+-------+\n| id | name  |\n+----+-------+\n|  1 | ann   |\n|  2 | b,\"c\" |\n+----+-------+\n"
    );
    assert_eq!(ok(run(&["shell", db, ".tables"])), "t  v\n");
    let schema = ok(run(&["shell", db, ".schema t"]));
    assert!(
        schema.starts_with("CREATE TABLE t(id INTEGER PRIMARY KEY"),
        "{schema}"
    );
    assert!(!schema.contains("VIEW"), "{schema}");

    // A script on stdin: dot-commands, several statements on a line and across lines, a
    // transaction sent whole, .read of another file.
    let extra = dir.path().join("extra.sql");
    std::fs::write(
        &extra,
        "INSERT INTO t(id, name) VALUES (10, 'from .read');\n",
    )
    .unwrap();
    let script = format!(
        ".mode csv\n.headers on\nSELECT 1 AS a; SELECT 2 AS b;\nSELECT\n  'multi;line'\n  AS c;\n\
         BEGIN;\nINSERT INTO t(id, name) VALUES (3, 'tx');\nINSERT INTO t(id, name) VALUES (4, 'tx');\nCOMMIT;\n\
         .read '{}'\n.mode list\n.headers off\nSELECT count(*) FROM t\n",
        extra.display()
    );
    assert_eq!(
        ok(run_stdin(&["shell", db], &script)),
        "a\n1\nb\n2\nc\nmulti;line\n5\n"
    );
    // .timer prints a line per statement.
    let timed = ok(run_stdin(&["shell", db], ".timer on\nSELECT 1;\n"));
    assert!(timed.starts_with("1\nRun Time: real "), "{timed}");
    let help = ok(run(&["shell", db, ".help"]));
    assert!(help.contains(".schema") && help.contains(".mode"), "{help}");
}

#[test]
fn shell_errors_stop_a_script_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("db");
    let db = s(&store);
    let out = run_stdin(
        &["shell", db],
        "CREATE TABLE t(x);\nSELEC 1;\nINSERT INTO t VALUES (1);\n",
    );
    let err = fails(out);
    assert!(err.contains("syntax error"), "{err}");
    // The script stopped at the error: the INSERT did not run.
    assert_eq!(ok(run(&["shell", db, "SELECT count(*) FROM t"])), "0\n");
    let err = fails(run(&["shell", db, ".nope"]));
    assert!(err.contains("unknown command .nope"), "{err}");
    let err = fails(run(&["shell", db, ".mode fancy"]));
    assert!(err.contains("unknown mode"), "{err}");
    // ROLLBACK drops a held transaction: nothing of it reaches the database.
    ok(run_stdin(
        &["shell", db],
        "BEGIN;\nINSERT INTO t VALUES (1);\nROLLBACK;\n",
    ));
    let err = fails(run_stdin(
        &["shell", db],
        "BEGIN;\nINSERT INTO t VALUES (1);\n",
    ));
    assert!(err.contains("BEGIN without COMMIT"), "{err}");
    assert_eq!(ok(run(&["shell", db, "SELECT count(*) FROM t"])), "0\n");
    let err = fails(run(&[
        "shell",
        db,
        "INSERT INTO t VALUES (1), (2); SELECT * FROM nope",
    ]));
    assert!(err.contains("no such table: nope (SQLITE_ERROR)"), "{err}");
}
