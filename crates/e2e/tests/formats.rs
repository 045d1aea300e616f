//! Storage formats on a real workerd: a SQLite-backed database that an earlier dosql wrote in
//! format 3 (the head under the kv key "meta", pages carried inside it) is read by this
//! version, and its next commit moves the head into the table `dosql_head` (format 4) with
//! the page puts. worker/test/storage.test.mjs pins the layout over an in-memory storage; this
//! checks what only workerd can: that the SQL API reads and writes the head in the same
//! object as the kv API, across restarts.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dosql_e2e::{Server, client, free_port, repo};
use serde_json::json;

/// The uniqueKey of the SQLite-backed class in worker/config.capnp: the directory its objects'
/// files live in, and the key their ids derive from.
fn sqlite_class_key() -> String {
    let config = std::fs::read_to_string(repo().join("worker/config.capnp")).unwrap();
    let line = config
        .lines()
        .find(|l| l.contains("className = \"DosqlSqlDatabase\""))
        .expect("DosqlSqlDatabase in worker/config.capnp");
    let start = line.find("uniqueKey = \"").unwrap() + "uniqueKey = \"".len();
    line[start..start + line[start..].find('"').unwrap()].to_owned()
}

/// Writes database `name` into `data` as dosql's format 3 stored it on SQLite-backed storage:
/// every page but page 1 raw under its key, page 1 inside "meta", and an OLDER page 1 (zeros)
/// under its key, which must never be read while meta carries page 1. A small workerd config
/// with a class of the same uniqueKey does the writing, so that the values are serialized as
/// workerd serializes them.
fn seed_format3(data: &Path, name: &str, image: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("seed.js"),
        r#"
export default {
  async fetch(request, env) {
    const name = new URL(request.url).pathname.slice(1);
    return env.NS.get(env.NS.idFromName(name)).fetch(request);
  },
};
export class Seed {
  constructor(ctx) { this.ctx = ctx; }
  async fetch(request) {
    const image = new Uint8Array(await request.arrayBuffer());
    const size = 4096;
    const n = image.byteLength / size;
    const page = (no) => image.slice((no - 1) * size, no * size).buffer;
    const key = (no) => `p:${String(no).padStart(10, "0")}`;
    const kv = this.ctx.storage.kv;
    kv.put(key(1), new Uint8Array(size).buffer);
    for (let no = 2; no <= n; no++) kv.put(key(no), page(no));
    kv.put("meta", { format: 3, page_size: size, page_count: n, txid: 7, inline_nos: [1], inline: [page(1)] });
    return new Response(String(n));
  }
}
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("seed.capnp"),
        format!(
            r#"using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "seed", worker = .seedWorker),
    (name = "seed-data", disk = (path = "data", writable = true)),
  ],
  sockets = [(name = "http", address = "127.0.0.1:0", http = (), service = "seed")],
);
const seedWorker :Workerd.Worker = (
  modules = [(name = "seed.js", esModule = embed "seed.js")],
  compatibilityDate = "2026-11-01",
  bindings = [(name = "NS", durableObjectNamespace = "Seed")],
  durableObjectNamespaces = [(className = "Seed", uniqueKey = "{}", enableSql = true)],
  durableObjectStorage = (localDisk = "seed-data"),
);
"#,
            sqlite_class_key()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(data).unwrap();
    let port = free_port();
    let mut child = Command::new(repo().join("worker/node_modules/.bin/workerd"))
        .arg("serve")
        .arg(dir.path().join("seed.capnp"))
        .arg("--socket-addr")
        .arg(format!("http=127.0.0.1:{port}"))
        .arg("--directory-path")
        .arg(format!("seed-data={}", data.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start workerd");
    let started = Instant::now();
    let answer = loop {
        match client()
            .post(&format!("http://127.0.0.1:{port}/{name}"))
            .send(image)
        {
            Ok(mut r) => break (r.status().as_u16(), r.body_mut().read_to_string().unwrap()),
            Err(_) if started.elapsed() < Duration::from_secs(60) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => {
                let _ = child.kill();
                let mut err = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("the seed workerd did not answer: {e}\n{err}");
            }
        }
    };
    // Graceful: the writes above were acknowledged, so they are on disk.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    assert_eq!(answer, (200, (image.len() / 4096).to_string()));
}

/// A SQLite database file of 4 KiB pages: `rows` rows of table t.
fn image(rows: i64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.sqlite");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "PRAGMA page_size = 4096; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);",
    )
    .unwrap();
    for i in 1..=rows {
        conn.execute(
            "INSERT INTO t(id, v) VALUES (?1, ?2)",
            (i, format!("row {i} {}", "x".repeat(80))),
        )
        .unwrap();
    }
    drop(conn);
    std::fs::read(&path).unwrap()
}

#[test]
fn a_format_3_database_reads_and_moves_its_head_into_the_table() {
    let data = tempfile::tempdir().unwrap();
    let bytes = image(400);
    assert!(bytes.len() / 4096 > 8, "{} pages", bytes.len() / 4096);
    seed_format3(data.path(), "old", &bytes);

    let mut server = Server::start_on(data.path());
    let db = server.db("old");
    let head =
        |db: &dosql_e2e::Db| db.send("GET", "/_storage_stats", None).unwrap().ok()["meta"].clone();
    assert_eq!(head(&db)["format"], 3, "read as written");
    assert_eq!(
        db.int("SELECT count(*) FROM t"),
        400,
        "page 1 came from meta, not its stale key"
    );
    assert_eq!(db.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);

    db.query("INSERT INTO t(id, v) VALUES (401, 'new')", json!([]))
        .ok();
    let after = head(&db);
    assert_eq!(after["format"], 4);
    assert_eq!(after["txid"], 8);

    // Across a restart, and a crash: the head comes from the table, the pages from their keys.
    server.restart();
    let db = server.db("old");
    assert_eq!(head(&db)["format"], 4);
    assert_eq!(db.int("SELECT count(*) FROM t"), 401);
    db.query("INSERT INTO t(id, v) VALUES (402, 'newer')", json!([]))
        .ok();
    server.crash_and_restart();
    let db = server.db("old");
    assert_eq!(db.int("SELECT max(id) FROM t"), 402);
    assert_eq!(db.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);
}
