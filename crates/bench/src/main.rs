//! The native floor of `make bench` (scripts/bench.sh): the benchmark's own request bodies
//! (written by bench/run.mjs into a directory) run in-process, with no wasm and no HTTP, on
//!
//! - `rusqlite`: plain rusqlite on an in-memory database, statements through
//!   `prepare_cached`, rows turned into JSON (the engine floor);
//! - `dosql-vfs-<page size>`: the same code on a connection through dosql's VFS over the
//!   in-memory `MemStore` (adds the VFS and its page cache);
//! - `dosql-vfs-4k-uncached`: the same with every statement prepared anew, as `dosql-api`
//!   does today (the cost of having no statement cache);
//! - `dosql-api-<page size>`: `dosql_api::Session::query`/`batch` over the `MemStore`, the
//!   exact code the wasm module runs for a request (adds dosql's JSON API).
//!
//! ```text
//! cargo run --release -p dosql-bench -- --bodies bench/dist/bodies [--reps 5] [--json]
//! ```
//!
//! Workloads (files in the bodies directory): W1 `w1.json` (a batch: CREATE TABLE + 10,000
//! inserts, on a fresh database), W2 `w2.json` (a batch of 1,000 point selects on W1's table),
//! W3 `w3-setup.json` + `w3.json` (1,000 single-insert requests, each its own transaction),
//! W5 `w5-setup.json` (100,000 rows) + `w5.json` (GROUP BY). Times are milliseconds per
//! repetition, after one warm-up repetition.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use dosql_api::Session;
use dosql_pagestore::{MemStore, PageSize};
use dosql_vfs::{Database, VfsConfig};
use rusqlite::Connection;
use rusqlite::types::{Value as SqlValue, ValueRef};
use serde_json::{Value as Json, json};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The request bodies of every workload.
#[derive(Debug)]
struct Bodies {
    w1: Vec<u8>,
    w2: Vec<u8>,
    w3_setup: Vec<Vec<u8>>,
    w3: Vec<Vec<u8>>,
    w5_setup: Vec<Vec<u8>>,
    w5: Vec<u8>,
}

impl Bodies {
    fn load(dir: &Path) -> Result<Bodies> {
        let read = |name: &str| -> Result<Vec<u8>> {
            std::fs::read(dir.join(name))
                .map_err(|e| format!("{}: {e}", dir.join(name).display()).into())
        };
        // A list of request bodies: a JSON array whose items are each one body.
        let list = |name: &str| -> Result<Vec<Vec<u8>>> {
            let v: Vec<Json> = serde_json::from_slice(&read(name)?)?;
            Ok(v.iter().map(|b| b.to_string().into_bytes()).collect())
        };
        Ok(Bodies {
            w1: read("w1.json")?,
            w2: read("w2.json")?,
            w3_setup: list("w3-setup.json")?,
            w3: list("w3.json")?,
            w5_setup: list("w5-setup.json")?,
            w5: read("w5.json")?,
        })
    }
}

/// Something that answers request bodies: `query` takes one statement, `batch` a list.
trait Engine {
    fn query(&mut self, body: &[u8]) -> Result<Vec<u8>>;
    fn batch(&mut self, body: &[u8]) -> Result<Vec<u8>>;
}

/// dosql's JSON API over a MemStore: what the wasm module runs, natively.
#[derive(Debug)]
struct ApiEngine(Session);

impl Engine for ApiEngine {
    fn query(&mut self, body: &[u8]) -> Result<Vec<u8>> {
        check(self.0.query(body))
    }
    fn batch(&mut self, body: &[u8]) -> Result<Vec<u8>> {
        check(self.0.batch(body))
    }
}

fn check(r: dosql_api::Response) -> Result<Vec<u8>> {
    if r.status == 200 {
        Ok(r.body)
    } else {
        Err(String::from_utf8_lossy(&r.body).into_owned().into())
    }
}

/// A rusqlite connection with the smallest JSON shim: cached statements, rows as JSON.
#[derive(Debug)]
struct RawEngine {
    conn: Connection,
    /// Whether statements come from rusqlite's statement cache (else each is prepared anew,
    /// as dosql-api does today).
    cached: bool,
    /// Keeps a VFS-backed database attached while the connection lives.
    _db: Option<Database>,
}

impl RawEngine {
    fn run(&self, stmt: &Json) -> Result<Json> {
        let sql = stmt["sql"].as_str().ok_or("statement without sql")?;
        if self.cached {
            let mut st = self.conn.prepare_cached(sql)?;
            self.exec(&mut st, stmt)
        } else {
            let mut st = self.conn.prepare(sql)?;
            self.exec(&mut st, stmt)
        }
    }

    fn exec(&self, st: &mut rusqlite::Statement<'_>, stmt: &Json) -> Result<Json> {
        if let Some(params) = stmt.get("params").and_then(Json::as_array) {
            for (i, p) in params.iter().enumerate() {
                st.raw_bind_parameter(i + 1, to_sql(p))?;
            }
        }
        let n = st.column_count();
        let columns: Vec<String> = st.column_names().map(str::to_owned).collect();
        let mut out = Vec::new();
        let mut rows = st.raw_query();
        while let Some(row) = rows.next()? {
            let mut r = Vec::with_capacity(n);
            for i in 0..n {
                r.push(to_json(row.get_ref(i)?));
            }
            out.push(Json::Array(r));
        }
        Ok(json!({ "columns": columns, "rows": out, "rows_affected": self.conn.changes() }))
    }
}

impl Engine for RawEngine {
    fn query(&mut self, body: &[u8]) -> Result<Vec<u8>> {
        let stmt: Json = serde_json::from_slice(body)?;
        Ok(self.run(&stmt)?.to_string().into_bytes())
    }
    fn batch(&mut self, body: &[u8]) -> Result<Vec<u8>> {
        let stmts: Vec<Json> = serde_json::from_slice(body)?;
        self.conn.execute_batch("BEGIN")?;
        let mut results = Vec::with_capacity(stmts.len());
        for s in &stmts {
            match self.run(s) {
                Ok(r) => results.push(r),
                Err(e) => {
                    self.conn.execute_batch("ROLLBACK")?;
                    return Err(e);
                }
            }
        }
        self.conn.execute_batch("COMMIT")?;
        Ok(json!({ "results": results }).to_string().into_bytes())
    }
}

fn to_sql(v: &Json) -> SqlValue {
    match v {
        Json::Null => SqlValue::Null,
        Json::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Json::Number(n) => n.as_i64().map_or_else(
            || SqlValue::Real(n.as_f64().unwrap_or(0.0)),
            SqlValue::Integer,
        ),
        Json::String(s) => SqlValue::Text(s.clone()),
        other => SqlValue::Text(other.to_string()),
    }
}

fn to_json(v: ValueRef<'_>) -> Json {
    match v {
        ValueRef::Null => Json::Null,
        ValueRef::Integer(i) => json!(i),
        ValueRef::Real(f) => json!(f),
        ValueRef::Text(t) => Json::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => json!({ "blob_bytes": b.len() }),
    }
}

/// Which engine to build, fresh, for one database.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Rusqlite,
    Vfs(PageSize),
    /// As `Vfs`, every statement prepared anew (no statement cache), like dosql-api today.
    VfsUncached(PageSize),
    Api(PageSize),
}

impl Kind {
    fn label(self) -> String {
        match self {
            Kind::Rusqlite => "rusqlite".to_owned(),
            Kind::Vfs(ps) => format!("dosql-vfs-{}k", ps.get() / 1024),
            Kind::VfsUncached(ps) => format!("dosql-vfs-{}k-uncached", ps.get() / 1024),
            Kind::Api(ps) => format!("dosql-api-{}k", ps.get() / 1024),
        }
    }

    /// A fresh, empty database; `name` must be unique among those alive.
    fn open(self, name: &str) -> Result<Box<dyn Engine>> {
        Ok(match self {
            Kind::Rusqlite => {
                let conn = Connection::open_in_memory()?;
                conn.pragma_update(None, "page_size", 4096)?;
                Box::new(RawEngine {
                    conn,
                    cached: true,
                    _db: None,
                })
            }
            Kind::Vfs(ps) | Kind::VfsUncached(ps) => {
                let db = Database::attach(name, MemStore::new(ps), VfsConfig::default())?;
                let conn = db.connect()?;
                Box::new(RawEngine {
                    conn,
                    cached: matches!(self, Kind::Vfs(_)),
                    _db: Some(db),
                })
            }
            Kind::Api(ps) => Box::new(ApiEngine(
                Session::open(name, MemStore::new(ps), VfsConfig::default())
                    .map_err(|e| e.body().to_string())?,
            )),
        })
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// One repetition of every workload on `kind`; milliseconds per workload.
fn rep(kind: Kind, bodies: &Bodies, n: usize) -> Result<BTreeMap<&'static str, f64>> {
    let mut out = BTreeMap::new();
    let label = kind.label();

    let mut e = kind.open(&format!("{label}-w1-{n}"))?;
    let t = Instant::now();
    e.batch(&bodies.w1)?;
    out.insert("W1", ms(t));
    let t = Instant::now();
    e.batch(&bodies.w2)?;
    out.insert("W2", ms(t));
    drop(e);

    let mut e = kind.open(&format!("{label}-w3-{n}"))?;
    for b in &bodies.w3_setup {
        e.query(b)?;
    }
    let t = Instant::now();
    for b in &bodies.w3 {
        e.query(b)?;
    }
    out.insert("W3", ms(t));
    drop(e);
    Ok(out)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> Result<()> {
    let mut bodies_dir: Option<PathBuf> = None;
    let mut reps = 5usize;
    let mut as_json = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bodies" => bodies_dir = args.next().map(PathBuf::from),
            "--reps" => reps = args.next().ok_or("--reps needs a number")?.parse()?,
            "--json" => as_json = true,
            _ => {
                return Err(format!(
                    "unknown argument {a}; usage: dosql-bench --bodies DIR [--reps N] [--json]"
                )
                .into());
            }
        }
    }
    let bodies =
        Bodies::load(&bodies_dir.ok_or("--bodies DIR is required (bench/run.mjs writes it)")?)?;

    let sizes = [4096u32, 16384, 65536].map(|s| PageSize::new(s).expect("a valid page size"));
    let mut kinds = vec![Kind::Rusqlite];
    kinds.extend(sizes.iter().map(|&ps| Kind::Vfs(ps)));
    kinds.push(Kind::VfsUncached(PageSize::DEFAULT));
    kinds.extend(sizes.iter().map(|&ps| Kind::Api(ps)));

    // W5's database is built once per engine; the GROUP BY runs once per repetition.
    let mut w5: Vec<Box<dyn Engine>> = Vec::new();
    for &k in &kinds {
        let mut e = k.open(&format!("{}-w5", k.label()))?;
        for b in &bodies.w5_setup {
            e.query(b)?;
        }
        e.query(&bodies.w5)?; // warm-up
        w5.push(e);
    }

    let mut times: BTreeMap<String, BTreeMap<&'static str, Vec<f64>>> = BTreeMap::new();
    // Repetition 0 is the warm-up; engines interleave within each repetition.
    for n in 0..=reps {
        for (i, &k) in kinds.iter().enumerate() {
            let mut r = rep(k, &bodies, n)?;
            let t = Instant::now();
            w5[i].query(&bodies.w5)?;
            r.insert("W5", ms(t));
            if n > 0 {
                let entry = times.entry(k.label()).or_default();
                for (w, v) in r {
                    entry.entry(w).or_default().push(v);
                }
            }
        }
    }

    if as_json {
        println!("{}", json!({ "reps": reps, "times_ms": times }));
    } else {
        println!(
            "{:<24} {:>10} {:>10} {:>10} {:>10}",
            "engine", "W1 ms", "W2 ms", "W3 ms", "W5 ms"
        );
        for (label, w) in &mut times {
            let mut m = |k: &str| w.get_mut(k).map_or(f64::NAN, |v| median(v));
            println!(
                "{label:<24} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
                m("W1"),
                m("W2"),
                m("W3"),
                m("W5")
            );
        }
    }
    Ok(())
}
