//! A workerd process serving dosql for tests, and an HTTP client for its API.
//!
//! The server is started exactly as a user starts it, through `scripts/run.sh` with `PORT` and
//! `DATA_DIR`, from the worker that `make` built (worker/dist). Tests that need it fail with a
//! clear message when it has not been built: run them through `make test`.

#![forbid(unsafe_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value as Json, json};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The team's shared test data (../shared/testdata beside the checkout), or `DOSQL_SHARED`.
pub fn testdata() -> PathBuf {
    match std::env::var_os("DOSQL_SHARED") {
        Some(dir) => PathBuf::from(dir).join("testdata"),
        None => repo().join("../shared/testdata"),
    }
}

/// A free loopback port (bound, then released for a server to take).
pub fn free_port() -> u16 {
    // Bind port 0 to let the OS pick, then release it for workerd.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A running workerd serving dosql on a loopback port, with its data in a directory that
/// outlives restarts of the process.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    port: u16,
    data: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    log: PathBuf,
    token: Option<String>,
    /// Extra environment for scripts/run.sh (and so for workerd's `fromEnvironment` settings).
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts a server on a fresh data directory.
    pub fn start() -> Server {
        Server::start_with_token(None)
    }

    /// Starts a server that requires `Authorization: Bearer <token>` (the DOSQL_TOKEN secret).
    pub fn start_with_token(token: Option<&str>) -> Server {
        Server::start_with(token, &[])
    }

    /// Starts a server with extra environment, e.g. `[("DOSQL_STORAGE", "sqlite")]`.
    pub fn start_with_env(env: &[(&str, &str)]) -> Server {
        Server::start_with(None, env)
    }

    /// Starts a server on an existing data directory (the caller keeps it), e.g. one that
    /// another workerd configuration wrote.
    pub fn start_on(data: &Path) -> Server {
        Server::start_on_with_env(data, &[])
    }

    /// Starts a server on an existing data directory with extra environment.
    pub fn start_on_with_env(data: &Path, env: &[(&str, &str)]) -> Server {
        let mut s = Server {
            child: None,
            port: free_port(),
            data: data.to_owned(),
            _tmp: None,
            log: PathBuf::new(),
            token: None,
            env: env
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
        s.spawn();
        s
    }

    fn start_with(token: Option<&str>, env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data = tmp.path().join("data");
        let mut s = Server {
            child: None,
            port: free_port(),
            data,
            _tmp: Some(tmp),
            log: PathBuf::new(),
            token: token.map(str::to_owned),
            env: env
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
        s.spawn();
        s
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Base URL, e.g. `http://127.0.0.1:12345`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let dist = repo().join("worker/dist/worker.js");
        assert!(
            dist.exists(),
            "{} is missing: build the worker first (`make test` does)",
            dist.display()
        );
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        self.log = self
            .data
            .with_extension(format!("log.{}", RUNS.fetch_add(1, Ordering::Relaxed)));
        let log = std::fs::File::create(&self.log).expect("log file");
        let child = Command::new("bash")
            .arg(repo().join("scripts/run.sh"))
            .env("PORT", self.port.to_string())
            .env("DATA_DIR", &self.data)
            .env("DOSQL_TOKEN", self.token.as_deref().unwrap_or(""))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start scripts/run.sh");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Ok(r) = client().get(&format!("{}/", self.url())).call()
                && r.status().as_u16() < 500
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "workerd exited with {status} during start-up:\n{}",
                    self.log_text()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "workerd did not answer within 60 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// workerd's resident memory in bytes (VmRSS), while it runs (Linux).
    pub fn rss_bytes(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    }

    /// What the server printed.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the server with SIGKILL (run.sh execs workerd, so this is workerd itself).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server gracefully (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same data directory and port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts the server again on the same data directory and port with other extra
    /// environment.
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        self.stop();
        self.env = env
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        self.spawn();
    }

    /// Kills with SIGKILL and starts again on the same data.
    pub fn crash_and_restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// A client for database `name` that sends `token` instead of the server's.
    pub fn db_with_token(&self, name: &str, token: Option<&str>) -> Db {
        Db {
            base: format!("{}/db/{name}", self.url()),
            token: token.map(str::to_owned),
        }
    }

    /// A client for database `name`.
    pub fn db(&self, name: &str) -> Db {
        Db {
            base: format!("{}/db/{name}", self.url()),
            token: self.token.clone(),
        }
    }

    /// Database `name` of the server at `url` (no token), for threads that outlive a borrow.
    pub fn db_at(url: &str, name: &str) -> Db {
        Db {
            base: format!("{url}/db/{name}"),
            token: None,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An HTTP agent that returns 4xx/5xx answers instead of failing on them.
pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// A status, the headers, and the body parsed as JSON and as it came.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body, parsed (Null if it was not JSON).
    pub body: Json,
    /// The body's bytes.
    pub bytes: Vec<u8>,
    /// The headers, names lower-case.
    pub headers: Vec<(String, String)>,
}

impl Answer {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    /// The body, asserting a 200.
    pub fn ok(self) -> Json {
        assert_eq!(self.status, 200, "{}", self.body);
        self.body
    }

    /// The error code, asserting the status.
    pub fn error(&self, status: u16) -> &str {
        assert_eq!(self.status, status, "{}", self.body);
        let code = self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code: {}", self.body));
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            self.body
        );
        code
    }
}

/// One database over HTTP.
#[derive(Debug, Clone)]
pub struct Db {
    base: String,
    token: Option<String>,
}

impl Db {
    /// Sends a request; transport failures are errors, HTTP statuses are answers.
    pub fn send(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Answer, String> {
        self.send_with(method, path, body, &[])
    }

    /// [`Db::send`] with more headers.
    pub fn send_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, String> {
        let url = format!("{}{path}", self.base);
        let agent = client();
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Bearer {t}"))
            .unwrap_or_default();
        fn with<B>(
            mut r: ureq::RequestBuilder<B>,
            headers: &[(&str, &str)],
            auth: &str,
        ) -> ureq::RequestBuilder<B> {
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.header("authorization", auth)
        }
        let result = match (method, body) {
            ("GET", _) => with(agent.get(&url), headers, &auth).call(),
            ("POST", Some(b)) => with(agent.post(&url), headers, &auth)
                .header("content-type", "application/json")
                .send(b),
            ("POST", None) => with(agent.post(&url), headers, &auth).send_empty(),
            ("PUT", Some(b)) => with(agent.put(&url), headers, &auth).send(b),
            ("DELETE", _) => with(agent.delete(&url), headers, &auth).call(),
            (m, _) => return Err(format!("method {m} not supported by the test client")),
        };
        let mut resp = result.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        // Bytes, not text: some answers are binary (GET /pages).
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        Ok(Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Json::Null),
            bytes,
            headers,
        })
    }

    /// POST /query.
    pub fn query(&self, sql: &str, params: Json) -> Answer {
        self.try_query(sql, params)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// POST /query, reporting transport failures.
    pub fn try_query(&self, sql: &str, params: Json) -> Result<Answer, String> {
        let body = json!({"sql": sql, "params": params}).to_string();
        self.send("POST", "/query", Some(body.as_bytes()))
    }

    /// POST /batch.
    pub fn batch(&self, statements: Json) -> Answer {
        self.send("POST", "/batch", Some(statements.to_string().as_bytes()))
            .expect("batch")
    }

    /// The rows of a query that must succeed.
    pub fn rows(&self, sql: &str) -> Vec<Json> {
        self.query(sql, json!([])).ok()["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// One integer from a query that must succeed.
    pub fn int(&self, sql: &str) -> i64 {
        self.rows(sql)[0][0]
            .as_i64()
            .unwrap_or_else(|| panic!("{sql}: not an integer"))
    }

    /// `GET /history?limit=1000` as golden files keep it: the txid, the checksum, and each
    /// commit's txid, checksum, page count and pages written.
    pub fn history_summary(&self) -> Json {
        let h = self.send("GET", "/history?limit=1000", None).unwrap().ok();
        let list: Vec<Json> = h["commits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                json!({"txid": c["txid"], "checksum": c["checksum"],
                       "page_count": c["page_count"], "pages_written": c["pages_written"]})
            })
            .collect();
        json!({"txid": h["txid"], "checksum": h["checksum"], "commits": list})
    }

    /// `POST /restore` to `txid`; its answer (panics on an error).
    pub fn restore(&self, txid: u64) -> Json {
        let body = json!({ "txid": txid }).to_string();
        self.send("POST", "/restore", Some(body.as_bytes()))
            .unwrap()
            .ok()
    }
}

/// Asserts that no Durable Object storage call counted in `/_storage_stats` went past the
/// production limits (128 keys per call, 128 KiB values, 2 KiB keys) and none was refused.
pub fn assert_within_storage_limits(stats: &Json) {
    let at_most = |field: &str, limit: u64| {
        let got = stats[field]
            .as_u64()
            .unwrap_or_else(|| panic!("no {field}: {stats}"));
        assert!(got <= limit, "{field} = {got} > {limit}: {stats}");
    };
    at_most("put_keys_max", 128);
    at_most("get_keys_max", 128);
    at_most("delete_keys_max", 128);
    at_most("put_value_bytes_max", 128 * 1024);
    at_most("key_bytes_max", 2048);
    assert_eq!(stats["refused_calls"], 0, "{stats}");
}

/// A sqllogictest engine that runs SQL through the HTTP API.
#[derive(Debug)]
pub struct HttpEngine(pub Db);

/// An API value back to a SQLite value.
pub fn to_slt(v: &Json) -> Result<dosql_slt::Value, String> {
    use dosql_slt::Value;
    Ok(match v {
        Json::Null => Value::Null,
        Json::Number(n) if n.is_i64() => Value::Integer(n.as_i64().unwrap_or_default()),
        Json::Number(n) => Value::Real(n.as_f64().ok_or("bad number")?),
        Json::String(s) => Value::Text(s.clone()),
        Json::Object(o) if o.contains_key("int") => Value::Integer(
            o["int"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or("bad int")?,
        ),
        Json::Object(o) if o.contains_key("float") => match o["float"].as_str() {
            Some("inf") => Value::Real(f64::INFINITY),
            Some("-inf") => Value::Real(f64::NEG_INFINITY),
            _ => return Err("bad float".into()),
        },
        Json::Object(o) if o.contains_key("base64") => Value::Blob(
            base64::engine::general_purpose::STANDARD
                .decode(o["base64"].as_str().ok_or("bad blob")?)
                .map_err(|e| e.to_string())?,
        ),
        other => return Err(format!("unexpected value {other}")),
    })
}

impl dosql_slt::Engine for HttpEngine {
    fn statement(&mut self, sql: &str) -> Result<(), String> {
        let a = self.0.try_query(sql, Json::Null)?;
        match a.status {
            200 => Ok(()),
            s if s < 500 => Err(a.body["error"]["message"]
                .as_str()
                .unwrap_or("error")
                .to_owned()),
            s => panic!("server error {s} for {sql}: {}", a.body),
        }
    }

    fn query(&mut self, sql: &str) -> Result<Vec<Vec<dosql_slt::Value>>, String> {
        let a = self.0.try_query(sql, Json::Null)?;
        match a.status {
            200 => a.body["rows"]
                .as_array()
                .ok_or("no rows")?
                .iter()
                .map(|row| {
                    row.as_array()
                        .ok_or("row is not an array")?
                        .iter()
                        .map(to_slt)
                        .collect()
                })
                .collect(),
            s if s < 500 => Err(a.body["error"]["message"]
                .as_str()
                .unwrap_or("error")
                .to_owned()),
            s => panic!("server error {s} for {sql}: {}", a.body),
        }
    }
}

/// The `dosql` CLI (crates/cli), built for the tests that run it.
///
/// `CARGO_BIN_EXE_<name>` exists only for the binaries of the test's own package, and Cargo
/// has no stable way to depend on another package's binary. So this asks Cargo itself, once per
/// test process: `cargo build -p dosql-cli --bin dosql` (the same cargo, the same target
/// directory; a no-op when the binary is fresh), reading the executable's path from Cargo's
/// JSON messages rather than guessing target/<profile>/. Cargo does not hold its build lock
/// while tests run, so the nested build does not wait on the outer one.
pub fn dosql_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(repo())
            .args([
                "build",
                // The outer cargo already resolved the workspace: never rewrite Cargo.lock here.
                "--locked",
                "-p",
                "dosql-cli",
                "--bin",
                "dosql",
                "--message-format=json-render-diagnostics",
            ])
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build -p dosql-cli");
        assert!(out.status.success(), "cargo build -p dosql-cli failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Json>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "dosql")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no dosql executable")
    })
    .clone()
}

/// Runs the dosql CLI with `args` (no token from the environment) and waits for it.
pub fn dosql(args: &[&str]) -> std::process::Output {
    Command::new(dosql_bin())
        .args(args)
        .env_remove("DOSQL_TOKEN")
        .output()
        .expect("run dosql")
}

/// The SHA-256 of a file, lowercase hex (what `sha256sum` and `dosql verify` print).
pub fn sha256_hex(path: &Path) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(std::fs::read(path).expect("read the file"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A temporary directory holding `crates/e2e/golden/<tarball>` unpacked under `data/`: a
/// workerd data directory an earlier release wrote.
pub fn unpack_golden(tarball: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let status = Command::new("tar")
        .arg("xzf")
        .arg(repo().join("crates/e2e/golden").join(tarball))
        .arg("-C")
        .arg(&data)
        .status()
        .unwrap();
    assert!(status.success(), "tar xzf {tarball}");
    dir
}

/// Asserts two files are equal byte for byte; when they are not, the message names the
/// sizes and the first differing byte ranges by page, so a failure explains itself.
pub fn assert_same_file(a: &Path, b: &Path, what: &str) {
    let (x, y) = (
        std::fs::read(a).expect("read a"),
        std::fs::read(b).expect("read b"),
    );
    if x == y {
        return;
    }
    let page = if x.len() >= 18 {
        match u16::from_be_bytes([x[16], x[17]]) {
            1 => 65536,
            n => usize::from(n).max(512),
        }
    } else {
        4096
    };
    let mut ranges: Vec<String> = Vec::new();
    let mut i = 0;
    let n = x.len().min(y.len());
    while i < n && ranges.len() < 12 {
        if x[i] != y[i] {
            let start = i;
            while i < n && x[i] != y[i] {
                i += 1;
            }
            ranges.push(format!(
                "page {} bytes {}..{}",
                start / page + 1,
                start % page,
                (i - 1) % page + 1
            ));
        }
        i += 1;
    }
    panic!(
        "{what}: {} ({} bytes) differs from {} ({} bytes): {}",
        a.display(),
        x.len(),
        b.display(),
        y.len(),
        ranges.join(", ")
    );
}

/// Reading plain SQLite files in tests, with rusqlite and nothing of dosql.
pub mod sqlite_file {
    use std::path::Path;

    use rusqlite::types::Value;
    use rusqlite::{Connection, OpenFlags};

    fn open(path: &Path) -> Connection {
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every table's rows by table name, in rowid order.
    pub fn tables(path: &Path) -> Vec<(String, Vec<Vec<Value>>)> {
        let conn = open(path);
        let names: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        names
            .into_iter()
            .map(|t| {
                let mut stmt = conn
                    .prepare(&format!("SELECT * FROM \"{t}\" ORDER BY rowid"))
                    .unwrap();
                let n = stmt.column_count();
                let rows = stmt
                    .query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
                    .and_then(|rows| rows.collect::<Result<Vec<Vec<Value>>, _>>())
                    .unwrap();
                (t, rows)
            })
            .collect()
    }

    /// `PRAGMA integrity_check` of the file.
    pub fn integrity(path: &Path) -> String {
        open(path)
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap()
    }
}

/// Checking what a run of the `dosql` command printed.
pub mod cli_output {
    use std::process::Output;

    /// Stdout of a run that must succeed.
    pub fn ok(out: Output) -> String {
        assert!(
            out.status.success(),
            "exit {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("stdout is UTF-8")
    }

    /// The one error line of a run that must fail: exit code 1, no panic, one `dosql: ...`
    /// line (progress lines such as "...: 50% (123/246 pages)" may precede it).
    pub fn fails(out: Output) -> String {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
        assert!(!stderr.contains("panicked"), "stderr: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.ends_with(" pages)")).collect();
        assert_eq!(lines.len(), 1, "not one error line: {stderr}");
        assert!(lines[0].starts_with("dosql: "), "stderr: {stderr}");
        lines[0].to_owned()
    }
}
