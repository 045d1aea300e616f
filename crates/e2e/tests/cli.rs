//! The `dosql` CLI against workerd: import, export, verify, info and shell over HTTP, the page
//! transfer protocol under it (crates/api/src/transfer.rs in the wasm), and its atomicity when
//! killed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dosql_e2e::cli_output::{fails, ok};
use dosql_e2e::sqlite_file::{integrity, tables};
use dosql_e2e::{Server, assert_within_storage_limits, dosql_bin, testdata};
use rusqlite::Connection;
use serde_json::{Value as Json, json};

fn dosql() -> Command {
    let mut c = Command::new(dosql_bin());
    c.env_remove("DOSQL_TOKEN")
        .env_remove("DOSQL_TEST_CHUNK_DELAY_MS")
        .env("DOSQL_HISTORY", "");
    c
}

fn run(args: &[&str]) -> Output {
    dosql().args(args).output().expect("run dosql")
}

fn chinook() -> PathBuf {
    testdata().join("chinook/Chinook_Sqlite.sqlite")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The `sha256 <hex>` a command printed.
fn sha_in(text: &str) -> String {
    let at = text.find("sha256").expect("a sha256 in the output");
    text[at..]
        .split(|c: char| !c.is_ascii_alphanumeric())
        .find(|w| w.len() == 64)
        .expect("64 hex digits")
        .to_owned()
}

#[test]
fn chinook_round_trip_over_http() {
    let server = Server::start();
    let url = format!("{}/db/chinook", server.url());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export.sqlite");

    let started = Instant::now();
    let imported = ok(run(&["import", s(&chinook()), &url]));
    let import_time = started.elapsed();
    assert!(imported.contains("246 pages of 4096 bytes"), "{imported}");

    let info = ok(run(&["info", "--json", &url]));
    let info: Json = serde_json::from_str(&info).unwrap();
    assert_eq!(info["page_size"], 4096);
    assert_eq!(info["page_count"], 246);
    assert_eq!(info["size_bytes"], 246 * 4096);

    let started = Instant::now();
    let exported = ok(run(&["export", &url, s(&out)]));
    let export_time = started.elapsed();
    eprintln!("chinook over HTTP: import {import_time:?}, export {export_time:?}");
    assert_eq!(integrity(&out), "ok");
    assert_eq!(tables(&out), tables(&chinook()));
    // Page for page the original file.
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(chinook()).unwrap()
    );
    assert_eq!(sha_in(&exported), sha_in(&imported));

    let verify = ok(run(&["verify", &url]));
    assert!(verify.contains("integrity_check: ok"), "{verify}");
    assert_eq!(sha_in(&verify), sha_in(&imported));

    // SQL sees the imported database, on the same object (its wasm instance was reset).
    let db = server.db("chinook");
    // The CLI uploaded compressed page values, and they were stored as sent.
    let stored = db.send("GET", "/_storage_stats", None).unwrap().ok()["bytes_written"]
        .as_u64()
        .unwrap();
    let file = std::fs::metadata(chinook()).unwrap().len();
    assert!(
        stored * 4 < file * 3,
        "{stored} bytes stored for a {file}-byte database"
    );
    assert_eq!(db.int("SELECT count(*) FROM Track"), 3503);
    assert_eq!(
        ok(run(&[
            "shell",
            &url,
            "SELECT Name FROM Artist WHERE ArtistId = 1"
        ])),
        "AC/DC\n"
    );
    // Writes after the import land in the new generation and survive a restart.
    db.query(
        "INSERT INTO Genre(GenreId, Name) VALUES (100, 'dosql')",
        json!([]),
    )
    .ok();
    let stats = db.send("GET", "/_storage_stats", None).unwrap().ok();
    assert_within_storage_limits(&stats);
    let mut server = server;
    server.restart();
    let db = server.db("chinook");
    assert_eq!(db.int("SELECT count(*) FROM Genre WHERE GenreId = 100"), 1);
    assert_eq!(db.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);
}

#[test]
fn import_refuses_a_non_empty_database_without_force() {
    let server = Server::start();
    let db = server.db("busy");
    db.query("CREATE TABLE mine(x)", json!([])).ok();
    db.query("INSERT INTO mine VALUES (42)", json!([])).ok();
    let url = format!("{}/db/busy", server.url());
    let err = fails(run(&["import", s(&chinook()), &url]));
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(db.int("SELECT x FROM mine"), 42);
    let status = db.send("GET", "/import", None).unwrap().ok();
    assert_eq!(status["staging"], Json::Null, "{status}");

    ok(run(&["import", "--force", "-q", s(&chinook()), &url]));
    assert_eq!(db.int("SELECT count(*) FROM Album"), 347);
    assert_eq!(
        db.query("SELECT * FROM mine", json!([])).error(400),
        "SQLITE_ERROR"
    );
    // The old generation (a new database's: rows of dosql_pages) was deleted.
    let status = db.send("GET", "/import", None).unwrap().ok();
    assert_eq!(status["garbage_pages"], 0, "{status}");
    assert_eq!(status["prefix"], "g1048577:p:", "{status}");
    // An import over an imported database replaces it again, under a new generation.
    ok(run(&["import", "--force", "-q", s(&chinook()), &url]));
    let status = db.send("GET", "/import", None).unwrap().ok();
    assert_eq!(status["prefix"], "g1048578:p:", "{status}");
    assert_eq!(status["garbage_pages"], 0, "{status}");
    assert_eq!(db.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);
}

#[test]
fn a_killed_import_leaves_the_old_database_intact() {
    let mut server = Server::start();
    let db = server.db("victim");
    db.query("CREATE TABLE old(x)", json!([])).ok();
    db.query("INSERT INTO old VALUES ('kept')", json!([])).ok();
    let url = format!("{}/db/victim", server.url());
    let before = ok(run(&["verify", &url]));

    // Small chunks and a pause after each, so that it is killed for real in the middle.
    let mut child = dosql()
        .args([
            "import",
            "--force",
            "--chunk-pages",
            "8",
            s(&chinook()),
            &url,
        ])
        .env("DOSQL_TEST_CHUNK_DELAY_MS", "25")
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
            "the import ended before half-way"
        );
        if line.contains("50%") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let status = db.send("GET", "/import", None).unwrap().ok();
    assert!(
        status["staging"]["next"].as_u64().unwrap() > 100,
        "{status}"
    );
    assert_eq!(db.rows("SELECT x FROM old"), vec![json!(["kept"])]);
    assert_eq!(ok(run(&["verify", &url])), before);
    // Also across a crash of the server: the staged pages never become visible.
    server.crash_and_restart();
    let db = server.db("victim");
    assert_eq!(db.rows("SELECT x FROM old"), vec![json!(["kept"])]);
    assert_eq!(ok(run(&["verify", &url])), before);

    // The next import succeeds and clears what the killed one staged.
    ok(run(&["import", "--force", "-q", s(&chinook()), &url]));
    assert_eq!(db.int("SELECT count(*) FROM Track"), 3503);
    let status = db.send("GET", "/import", None).unwrap().ok();
    assert_eq!(status["staging"], Json::Null, "{status}");
    assert_eq!(status["garbage_pages"], 0, "{status}");
    assert_eq!(status["prefix"], "g1048578:p:", "{status}");
    let stats = db.send("GET", "/_storage_stats", None).unwrap().ok();
    assert_within_storage_limits(&stats);
}

/// Exports `moving` slowly, with one write to it once a fifth of the pages are read; the
/// export's stderr and the exported file.
fn export_while_writing(server: &Server, out: &Path) -> String {
    let url = format!("{}/db/moving", server.url());
    ok(run(&["import", "-q", s(&chinook()), &url]));
    let mut child = dosql()
        .args(["export", "--chunk-pages", "8", &url, s(out)])
        .env("DOSQL_TEST_CHUNK_DELAY_MS", "20")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // One write once the export is under way (31 requests, 20 ms apart).
    let mut progress = BufReader::new(child.stderr.take().unwrap());
    let mut stderr = String::new();
    while !stderr.contains("20%") {
        assert!(
            progress.read_line(&mut stderr).unwrap() > 0,
            "the export ended early: {stderr}"
        );
    }
    server
        .db("moving")
        .query(
            "INSERT INTO Genre(GenreId, Name) VALUES (100, 'late')",
            json!([]),
        )
        .ok();
    std::io::Read::read_to_string(&mut progress, &mut stderr).unwrap();
    assert!(child.wait().unwrap().success(), "{stderr}");
    assert_eq!(integrity(out), "ok");
    stderr
}

fn late_genres(out: &Path) -> i64 {
    Connection::open(out)
        .unwrap()
        .query_row("SELECT count(*) FROM Genre WHERE GenreId = 100", [], |r| {
            r.get(0)
        })
        .unwrap()
}

#[test]
fn an_export_is_the_snapshot_it_started_from_while_the_database_changes() {
    // With history (the default), the pages of the txid the export started at are served
    // from the log after a write: the export goes on, and is that state.
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("moving.sqlite");
    let stderr = export_while_writing(&server, &out);
    assert!(!stderr.contains("changed during the read"), "{stderr}");
    assert_eq!(late_genres(&out), 0, "the state the export started from");
}

#[test]
fn without_history_an_export_restarts_when_the_database_changes() {
    let server = Server::start_with_env(&[("HISTORY", "off")]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("moving.sqlite");
    let stderr = export_while_writing(&server, &out);
    assert!(stderr.contains("changed during the read"), "{stderr}");
    assert_eq!(late_genres(&out), 1, "the state after the write");
}

#[test]
fn bad_targets_files_and_tokens_get_one_clear_line() {
    let server = Server::start_with_token(Some("s3cret"));
    let url = format!("{}/db/guarded", server.url());
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(chinook()).unwrap();
    let text = dir.path().join("notes.sqlite");
    std::fs::write(&text, b"not a database at all").unwrap();
    let torn = dir.path().join("torn.sqlite");
    std::fs::write(&torn, &bytes[..300_000]).unwrap();
    let half = dir.path().join("half.sqlite");
    std::fs::write(&half, &bytes[..100 * 4096]).unwrap();
    let out = dir.path().join("out.sqlite");
    let tok = ["--token", "s3cret"];

    for args in [
        vec!["info", url.as_str()],
        vec!["shell", url.as_str(), "SELECT 1"],
        vec!["import", s(&chinook()), url.as_str()],
        vec!["export", url.as_str(), s(&out)],
        vec!["verify", url.as_str()],
    ] {
        let err = fails(run(&args));
        assert!(
            err.contains("unauthorized") && err.contains("requires a token"),
            "{args:?}: {err}"
        );
        let mut wrong = args.clone();
        wrong.extend(["--token", "wrong"]);
        let err = fails(run(&wrong));
        assert!(
            err.contains("unauthorized") && err.contains("token was refused"),
            "{args:?}: {err}"
        );
    }
    assert!(!out.exists());

    for (file, want) in [
        (&text, "not a SQLite database file"),
        (&torn, "not a whole number of 4096-byte pages"),
        (&half, "the header says 246 pages, the file holds 100"),
    ] {
        let mut args = vec!["import", s(file), url.as_str()];
        args.extend(tok);
        let err = fails(run(&args));
        assert!(err.contains(want), "{}: {err}", file.display());
    }
    // Nothing reached the database.
    let info = ok(dosql()
        .args(["info", "--json", &url])
        .env("DOSQL_TOKEN", "s3cret")
        .output()
        .unwrap());
    let info: Json = serde_json::from_str(&info).unwrap();
    assert_eq!(info["page_count"], 0);

    let port = server.url().rsplit(':').next().unwrap().to_owned();
    for (target, want) in [
        (
            format!("http://127.0.0.1:{port}/nodb"),
            "must end in /db/<name>",
        ),
        (
            format!("http://127.0.0.1:{port}/db/no%20way"),
            "bad database name",
        ),
        (
            format!("http://127.0.0.1:{port}/elsewhere/db/x"),
            "NOT_FOUND",
        ),
        ("http://127.0.0.1:1/db/x".to_owned(), "cannot reach"),
        ("http:/127.0.0.1/db/x".to_owned(), "no such store"),
    ] {
        let mut args = vec!["info", target.as_str()];
        args.extend(tok);
        let err = fails(run(&args));
        assert!(err.contains(want), "{target}: {err}");
    }

    // The right token, from the environment or the flag, works everywhere.
    let env_ok = dosql()
        .args(["import", "-q", s(&chinook()), &url])
        .env("DOSQL_TOKEN", "s3cret")
        .output()
        .unwrap();
    ok(env_ok);
    let mut args = vec!["export", "-q", url.as_str(), s(&out)];
    args.extend(tok);
    ok(run(&args));
    assert_eq!(integrity(&out), "ok");
}

#[test]
fn an_empty_database_exports_verifies_and_reports_its_info() {
    let server = Server::start();
    let url = format!("{}/db/never-written", server.url());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("empty.sqlite");
    ok(run(&["export", &url, s(&out)]));
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        0,
        "an empty database is an empty file"
    );
    assert_eq!(integrity(&out), "ok");
    let verified = ok(run(&["verify", &url]));
    // SHA-256 of nothing.
    assert!(
        verified.contains("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        "{verified}"
    );
    let info: Json = serde_json::from_str(&ok(run(&["info", "--json", &url]))).unwrap();
    assert_eq!(info["page_count"], 0);
}

#[test]
fn the_shell_speaks_the_json_api() {
    let server = Server::start();
    let url = format!("{}/db/sh", server.url());
    ok(run(&[
        "shell",
        &url,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v);
         INSERT INTO t VALUES (1, 'a'), (2, 9007199254740993), (3, x'0102'), (4, 1.5);",
    ]));
    assert_eq!(
        ok(run(&["shell", &url, "SELECT v FROM t ORDER BY id"])),
        "a\n9007199254740993\nX'0102'\n1.5\n"
    );
    assert_eq!(
        ok(run(&[
            "shell",
            "-m",
            "json",
            &url,
            "SELECT v FROM t WHERE id IN (2, 3) ORDER BY id"
        ])),
        "[{\"v\":{\"int\":\"9007199254740993\"}},\n{\"v\":{\"base64\":\"AQI=\"}}]\n"
    );
    // A transaction typed statement by statement goes out as one request at COMMIT.
    let mut child = dosql()
        .args(["shell", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b".tables\nBEGIN;\nINSERT INTO t VALUES (5, 'x');\nUPDATE t SET v = 'y' WHERE id = 5;\nCOMMIT;\nSELECT v FROM t WHERE id = 5;\n",
        )
        .unwrap();
    assert_eq!(ok(child.wait_with_output().unwrap()), "t\ny\n");
    let err = fails(run(&["shell", &url, "SELECT * FROM nope"]));
    assert_eq!(err, "dosql: no such table: nope (SQLITE_ERROR)");
}

#[test]
fn the_transfer_protocol_refuses_what_would_break_it() {
    let server = Server::start();
    let db = server.db("proto");
    let page = std::fs::read(chinook()).unwrap()[..4096].to_vec();
    let begin = |force: bool| {
        db.send(
            "POST",
            "/import",
            Some(
                json!({"page_size": 4096, "page_count": 3, "force": force})
                    .to_string()
                    .as_bytes(),
            ),
        )
        .unwrap()
    };
    let id = begin(false).ok()["import_id"].as_str().unwrap().to_owned();
    let put = |id: &str, from: u32, body: &[u8]| {
        db.send("PUT", &format!("/import/{id}?from={from}"), Some(body))
            .unwrap()
    };
    // A gap, a partial page, too many pages, a bad header.
    assert_eq!(put(&id, 2, &page).error(409), "OUT_OF_ORDER");
    assert_eq!(put(&id, 1, &page[..100]).error(400), "BAD_REQUEST");
    assert_eq!(put(&id, 1, &page.repeat(129)).error(400), "BAD_REQUEST");
    assert_eq!(put(&id, 1, &[0u8; 4096]).error(400), "BAD_REQUEST");
    // Format 2 (stored values after their lengths): page 1 must be raw, values 1..page_size
    // bytes, whole; an unknown format is refused.
    let framed = |values: &[&[u8]]| {
        let mut body = Vec::new();
        for v in values {
            body.extend_from_slice(&(v.len() as u32).to_le_bytes());
            body.extend_from_slice(v);
        }
        body
    };
    let put2 = |from: u32, body: &[u8]| {
        db.send(
            "PUT",
            &format!("/import/{id}?from={from}&format=2"),
            Some(body),
        )
        .unwrap()
    };
    // A compressed page (one LZ4 block: a literal, a 4090-byte match, five literals) and
    // noise of the same shape, which does not decode to a page.
    let mut small = vec![0x1Fu8, 13, 1, 0];
    small.extend_from_slice(&[255; 15]);
    small.extend_from_slice(&[246, 0x50, 0, 0, 0, 0, 0]);
    let noise = vec![0x1Fu8; small.len()];
    assert_eq!(put2(1, &framed(&[&page, &noise])).error(400), "BAD_REQUEST");
    assert_eq!(put2(1, &framed(&[&small])).error(400), "BAD_REQUEST");
    assert_eq!(put2(1, &framed(&[&page, &[]])).error(400), "BAD_REQUEST");
    assert_eq!(
        put2(1, &framed(&[&page, &[0u8; 4097]])).error(400),
        "BAD_REQUEST"
    );
    let whole = framed(&[&page, &small]);
    assert_eq!(put2(1, &whole[..whole.len() - 1]).error(400), "BAD_REQUEST");
    assert_eq!(
        db.send("PUT", &format!("/import/{id}?from=1&format=3"), Some(&page))
            .unwrap()
            .error(400),
        "BAD_REQUEST"
    );
    assert_eq!(put2(1, &whole).status, 200);
    // A resend of what was stored is fine.
    assert_eq!(put(&id, 1, &page).status, 200);
    let commit = |id: &str| {
        db.send("POST", &format!("/import/{id}/commit"), Some(b"{}"))
            .unwrap()
    };
    assert_eq!(commit(&id).error(409), "INCOMPLETE");
    // A second import supersedes the first.
    let id2 = begin(false).ok()["import_id"].as_str().unwrap().to_owned();
    assert_ne!(id, id2);
    assert_eq!(put(&id, 2, &page).error(409), "IMPORT_SUPERSEDED");
    assert_eq!(commit(&id).error(409), "IMPORT_SUPERSEDED");
    let status = db.send("GET", "/import", None).unwrap().ok();
    assert_eq!(status["staging"]["id"], id2.as_str(), "{status}");
    assert_eq!(
        status["garbage_pages"], 0,
        "the first import's page was deleted: {status}"
    );
    assert_eq!(
        db.send("DELETE", &format!("/import/{id2}"), None)
            .unwrap()
            .status,
        200
    );
    // Reads: bounds and the txid pin.
    assert_eq!(
        db.send("GET", "/pages?count=129", None).unwrap().error(400),
        "BAD_REQUEST"
    );
    assert_eq!(
        db.send("GET", "/pages?from=0", None).unwrap().error(400),
        "BAD_REQUEST"
    );
    db.query("CREATE TABLE t(x)", json!([])).ok();
    // An earlier txid the history keeps is served (txid 0: the empty database); one the
    // database never reached is not.
    let then = db
        .send("GET", "/pages?from=1&count=1&txid=0", None)
        .unwrap();
    assert_eq!(then.status, 200);
    assert_eq!(then.header("x-dosql-txid").as_deref(), Some("0"));
    assert_eq!(then.header("x-dosql-page-count").as_deref(), Some("0"));
    assert_eq!(
        db.send("GET", "/pages?from=1&count=1&txid=999", None)
            .unwrap()
            .error(409),
        "TXID_CHANGED"
    );
    assert_eq!(
        db.send("PUT", "/pages", Some(b"x")).unwrap().error(405),
        "METHOD_NOT_ALLOWED"
    );
}
