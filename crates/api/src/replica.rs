//! Read replicas: databases that follow another one (their primary) commit by commit, in other
//! Durable Objects. Routes under `/db/<name>/`, framed by the host ([`crate::http`]):
//!
//! On a primary, from clients:
//! - `POST replicas` `{"name", "location_hint"?}` → makes database `name` a read replica of
//!   this one and brings it up to date: 201 `{"name", "primary", "txid"}`. The replica must be
//!   empty (409 `NOT_EMPTY`), not another primary's replica (409 `ALREADY_REPLICA`), and have
//!   no replicas of its own; a replica cannot have replicas (409 `IS_REPLICA`).
//! - `GET replicas` → `{"primary", "txid", "replicas": [{"name", "location_hint",
//!   "added_ms", "txid", "lag_commits", "lag_ms", "last_error"}]}`, each replica asked.
//! - `DELETE replicas/<name>` → the replica becomes an ordinary database, keeping its data.
//!
//! Between databases (the Worker refuses these paths from outside):
//! - `GET _replicate?from=T` (primary) → the commits from txid T on, each as its own LTX file,
//!   or a snapshot when they are not kept (see [`Batch`]);
//! - `POST _replica` `{"primary"}` (replica) → becomes the replica, then catches up;
//!   `GET _replica` → its status; `DELETE _replica` `{"primary"}` → detaches;
//! - `POST _sync` (replica) → catches up with the primary.
//!
//! Catching up (`_sync`): the replica asks its primary for the commits after its txid and
//! applies each atomically (`DoStore::apply_ltx`: the next txid, the checksum before it equal
//! to the replica's, the checksum after it equal to the file's). A replica that is new, whose
//! next commit the primary's history no longer keeps, or whose state no longer continues the
//! primary's (another lineage, a diverged checksum) takes a snapshot instead
//! (`DoStore::reset_to_snapshot`). Every commit keeps the primary's txid and lineage, so a
//! bookmark (`<lineage>:<txid>`) names the same state on both. Nothing is held between steps.

use std::cell::{Cell, RefCell};

use dosql_layout::ltx::Ltx;
use dosql_layout::replica::{ReplicaEntry, Replication};
use dosql_layout::{DoStore, Kv};
use dosql_pagestore::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::ApiError;
use crate::history::param;
use crate::http::{Answer, Request, name_field, valid_name};

/// The other database's error, said about it.
fn relayed(to: &str, status: u16, body: &[u8]) -> ApiError {
    crate::http::relayed(to, status, body, "REPLICATION_FAILED")
}

/// Bytes of LTX files one `_replicate` answer carries at most (one file may be larger).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Round trips one `_sync` makes at most before answering (the next one goes on).
pub const MAX_SYNC_STEPS: u32 = 32;

/// Commits one `_replicate` answer carries at most: each is rebuilt from the newest state
/// back, so a long run of them would cost the primary reads quadratic in their number.
pub const MAX_BATCH_COMMITS: u64 = 16;

/// Bytes of pages a replica takes in one snapshot at most: the snapshot is held in its
/// memory whole while it is staged (the isolate's default budget is 64 MiB, shared).
pub const MAX_SNAPSHOT_BYTES: usize = 16 * 1024 * 1024;

/// The first line of a `_replicate` answer; LTX files follow it, each after its length (u32,
/// little-endian).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The primary's txid.
    pub txid: u64,
    /// Its lineage, 16 hex digits.
    pub lineage: String,
    /// When its last commit was made (Unix ms).
    pub time_ms: i64,
    /// The file is a snapshot at `txid` (the commits asked for are not kept).
    pub snapshot: bool,
}

/// What a replica knows of its primary, from its last catch-up (one database per wasm
/// instance, so per thread; not stored: a restarted replica learns it again).
#[derive(Clone, Debug, Default)]
struct Seen {
    /// The primary's txid at the last contact.
    primary_txid: u64,
    /// When the replica last held every commit the primary had (Unix ms; 0: never).
    caught_up_ms: i64,
    /// When the last catch-up ended.
    synced_ms: i64,
    /// Commits applied and snapshots taken since the instance started.
    applied: u64,
    snapshots: u64,
    /// Pushes of commits received from the primary since the instance started.
    pushes: u64,
    /// The last catch-up's failure.
    last_error: Option<String>,
}

thread_local! {
    static SEEN: RefCell<Seen> = RefCell::new(Seen::default());
    /// The fault hooks in force, and their random generator's state.
    static FAULTS: Cell<Option<(Faults, u64)>> = const { Cell::new(None) };
}

/// Tests only (DOSQL_TEST_REPLICATION_FAULTS): what happens to the primary's answers on their
/// way into a replica, decided by a generator seeded with `seed` so that a run can be
/// replayed: a whole answer lost (`drop`: the catch-up fails and is tried again later), one
/// of its commits delivered twice (`dup`), two of them swapped (`reorder`); each a
/// probability. (`delay_ms`, a delay before every request between the databases, is the
/// host's.)
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// The generator's seed.
    pub seed: u64,
    /// Probability that an answer is lost.
    pub drop: f64,
    /// Probability that a commit of an answer comes twice.
    pub dup: f64,
    /// Probability that two commits of an answer are swapped.
    pub reorder: f64,
}

impl Faults {
    /// Reads `seed=7,drop=0.1,dup=0.2,reorder=0.2,delay_ms=5` (every part optional;
    /// `delay_ms` is the host's and skipped here).
    pub fn parse(text: &str) -> Result<Faults, String> {
        let mut f = Faults::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or(format!("{part:?}: not key=value"))?;
            let p = || {
                v.parse::<f64>()
                    .ok()
                    .filter(|p| (0.0..=1.0).contains(p))
                    .ok_or(format!("{k}: a probability from 0 to 1, not {v:?}"))
            };
            match k {
                "seed" => {
                    f.seed = v
                        .parse()
                        .map_err(|_| format!("seed: not a number: {v:?}"))?
                }
                "drop" => f.drop = p()?,
                "dup" => f.dup = p()?,
                "reorder" => f.reorder = p()?,
                "delay_ms" => {}
                _ => {
                    return Err(format!(
                        "{k}: not a fault (seed, drop, dup, reorder, delay_ms)"
                    ));
                }
            }
        }
        Ok(f)
    }
}

/// Puts fault hooks in force on this thread (`None`: none); the same ones again keep their
/// generator where it is.
pub fn set_faults(faults: Option<Faults>) {
    FAULTS.with(|c| {
        let keep = c.get().filter(|(f, _)| Some(*f) == faults);
        c.set(keep.or(faults.map(|f| (f, f.seed | 1))));
    });
}

/// Whether a fault of probability `p` happens now.
fn roll(p: impl Fn(&Faults) -> f64) -> bool {
    FAULTS.with(|c| {
        let Some((f, mut x)) = c.get() else {
            return false;
        };
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.set(Some((f, x)));
        ((x >> 11) as f64 / (1u64 << 53) as f64) < p(&f)
    })
}

/// Forgets what this thread knew of a primary (another database opens in this instance).
pub fn forget_seen() {
    SEEN.with(|s| *s.borrow_mut() = Seen::default());
}

/// A replica's status: what `GET _replica` answers and `/stats` includes.
pub fn status<K: Kv>(store: &mut DoStore<K>, now_ms: i64) -> Result<Json, ApiError> {
    let primary = store.primary().map_err(|e| failed(&e))?;
    let head = store.record();
    let seen = SEEN.with(|s| s.borrow().clone());
    let lag_commits = seen.primary_txid.saturating_sub(head.txid);
    Ok(json!({
        "primary": primary,
        "txid": head.txid,
        "bookmark": bookmark(head.lineage, head.txid),
        "primary_txid": (seen.synced_ms > 0).then_some(seen.primary_txid),
        "lag_commits": (seen.synced_ms > 0).then_some(lag_commits),
        // Every commit the primary had made that long ago is here.
        "lag_ms": (seen.caught_up_ms > 0).then(|| now_ms.saturating_sub(seen.caught_up_ms).max(0)),
        "synced_ms": (seen.synced_ms > 0).then_some(seen.synced_ms),
        "applied": seen.applied,
        "snapshots": seen.snapshots,
        "pushes": seen.pushes,
        "last_error": seen.last_error,
    }))
}

/// `<lineage>:<txid>`, the lineage in 16 hex digits.
pub fn bookmark(lineage: u64, txid: u64) -> String {
    format!("{lineage:016x}:{txid}")
}

/// Serves one replication route; `None` when `req` is not one. On a replica, the routes that
/// would change its database other than through its primary (a restore, an import) are
/// refused here too: it would no longer be its primary's copy.
pub fn handle<K: Kv>(store: &mut DoStore<K>, req: &Request<'_>, now_ms: i64) -> Option<Answer> {
    let changes = req.method != "GET"
        && req.method != "HEAD"
        && (req.path == "restore" || req.path.starts_with("import"));
    if changes {
        return match store.primary() {
            Ok(None) => None,
            Ok(Some(p)) => Some(Answer::error(&ApiError::new(
                409,
                "IS_REPLICA",
                format!(
                    "this database is a read replica of {p}: restore or import into {p} \
                     (its replicas follow), or detach this one first"
                ),
            ))),
            Err(e) => Some(Answer::error(&failed(&e))),
        };
    }
    let answer = match (req.path, req.method) {
        ("replicas", "POST") => attach(store, req, now_ms),
        ("replicas", "GET" | "HEAD") => list(store, req),
        ("replicas", _) => return Some(Answer::not_allowed("replicas", "GET or POST")),
        (p, "DELETE") if p.starts_with("replicas/") => detach(store, req),
        (p, _) if p.starts_with("replicas/") => {
            return Some(Answer::not_allowed("replicas/<name>", "DELETE"));
        }
        ("_replicate", "GET") => replicate(store, req.query),
        ("_replica", "POST") => become_replica(store, req, now_ms),
        ("_replica", "GET") => status(store, now_ms).map(|s| Answer::json(&s)),
        ("_replica", "DELETE") => leave(store, req),
        ("_sync", "POST") => sync(store, req, now_ms),
        _ => return None,
    };
    Some(answer.unwrap_or_else(|e| Answer::error(&e)))
}

fn failed(e: &StoreError) -> ApiError {
    match e.kind() {
        dosql_pagestore::ErrorKind::Invalid => {
            ApiError::new(409, "REPLICATION_REFUSED", e.message())
        }
        _ => ApiError::new(500, "REPLICATION_FAILED", e.to_string()),
    }
}

/// Where a multi-step route is (handed to the host and back).
#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "op", rename_all = "snake_case")]
enum State {
    Attach {
        name: String,
        location_hint: Option<String>,
    },
    List {
        next: usize,
        rows: Vec<Json>,
    },
    Detach {
        name: String,
    },
    /// An attach undone: this database became a replica itself meanwhile.
    Undo {
        name: String,
        primary: String,
    },
    Sync {
        steps: u32,
        applied: u64,
        snapshot: bool,
        /// The replica's txid when the commits were asked for: another catch-up that moved
        /// it meanwhile makes the answer stale.
        #[serde(default)]
        asked_at: u64,
    },
}

fn attach<K: Kv>(
    store: &mut DoStore<K>,
    req: &Request<'_>,
    now_ms: i64,
) -> Result<Answer, ApiError> {
    let me = req.db.unwrap_or("");
    if let Some(step) = req.step
        && let State::Undo { name, primary } = step.state()?
    {
        return Err(ApiError::new(
            409,
            "IS_REPLICA",
            format!(
                "this database became a read replica of {primary} meanwhile; {name} was let go \
                 again ({}): attach replicas to {primary}",
                if step.status == 200 {
                    "detached"
                } else {
                    "detaching it failed: detach it by hand"
                }
            ),
        ));
    }
    if let Some(step) = req.step {
        let State::Attach {
            name,
            location_hint,
        } = step.state()?
        else {
            return Err(ApiError::bad_request("not an attach step"));
        };
        if step.status != 200 {
            return Err(relayed(&name, step.status, req.body));
        }
        // This database became a replica while the request travelled (two databases
        // attaching each other at once): the other one is let go again, so that no two
        // databases follow each other.
        if let Some(p) = store.primary().map_err(|e| failed(&e))? {
            let state = State::Undo {
                name: name.clone(),
                primary: p,
            };
            return Ok(Answer::send(
                &name,
                location_hint.as_deref(),
                "DELETE",
                "_replica".into(),
                json!({"primary": me}).to_string().into_bytes(),
                &state,
            ));
        }
        let mut r = store.replication().map_err(|e| failed(&e))?.clone();
        r.replicas.retain(|e| e.name != name);
        r.replicas.push(ReplicaEntry {
            name: name.clone(),
            location_hint,
            added_ms: now_ms,
        });
        store.set_replication(r).map_err(|e| failed(&e))?;
        let answer: Json = serde_json::from_slice(req.body).unwrap_or(Json::Null);
        let mut a = Answer::json(&json!({
            "name": name,
            "primary": me,
            "txid": answer["txid"],
            // Its first catch-up failed (it catches up at its next push or alarm): why.
            "error": answer.get("error"),
        }));
        a.status = 201;
        return Ok(a);
    }
    let body: Json = serde_json::from_slice(req.body).map_err(|_| {
        ApiError::bad_request("the body must be {\"name\": \"<replica>\", \"location_hint\"?}")
    })?;
    let name = name_field(&body, "name")?;
    let location_hint = match &body["location_hint"] {
        Json::Null => None,
        Json::String(h) if valid_name(h) => Some(h.clone()),
        _ => {
            return Err(ApiError::bad_request(
                "location_hint must be a location name such as \"weur\"",
            ));
        }
    };
    if me.is_empty() || me == name {
        return Err(ApiError::bad_request(format!(
            "{name}: a database cannot be its own replica"
        )));
    }
    if let Some(p) = store.primary().map_err(|e| failed(&e))? {
        return Err(ApiError::new(
            409,
            "IS_REPLICA",
            format!("this database is a read replica of {p}: attach replicas to {p}"),
        ));
    }
    let state = State::Attach {
        name: name.to_owned(),
        location_hint: location_hint.clone(),
    };
    Ok(Answer::send(
        name,
        location_hint.as_deref(),
        "POST",
        "_replica".into(),
        json!({"primary": me}).to_string().into_bytes(),
        &state,
    ))
}

fn list<K: Kv>(store: &mut DoStore<K>, req: &Request<'_>) -> Result<Answer, ApiError> {
    let r = store.replication().map_err(|e| failed(&e))?.clone();
    if let Some(p) = &r.primary {
        return Err(ApiError::new(
            409,
            "IS_REPLICA",
            format!("this database is a read replica of {p}: its primary lists the replicas"),
        ));
    }
    let (next, mut rows) = match req.step {
        None => (0, Vec::new()),
        Some(step) => {
            let State::List { next, mut rows } = step.state()? else {
                return Err(ApiError::bad_request("not a list step"));
            };
            let e = r.replicas.get(next);
            let mut row = json!({
                "name": e.map(|e| e.name.clone()),
                "location_hint": e.and_then(|e| e.location_hint.clone()),
                "added_ms": e.map(|e| e.added_ms),
            });
            let answer: Json = serde_json::from_slice(req.body).unwrap_or(Json::Null);
            if step.status == 200 {
                for k in ["txid", "lag_commits", "lag_ms", "last_error", "primary"] {
                    row[k] = answer[k].clone();
                }
            } else {
                row["error"] = relayed(e.map_or("", |e| e.name.as_str()), step.status, req.body)
                    .body()["error"]
                    .clone();
            }
            rows.push(row);
            (next + 1, rows)
        }
    };
    if let Some(e) = r.replicas.get(next) {
        let state = State::List { next, rows };
        return Ok(Answer::send(
            &e.name,
            e.location_hint.as_deref(),
            "GET",
            "_replica".into(),
            Vec::new(),
            &state,
        ));
    }
    rows.truncate(r.replicas.len());
    Ok(Answer::json(&json!({
        "primary": req.db,
        "txid": store.record().txid,
        "replicas": rows,
    })))
}

fn detach<K: Kv>(store: &mut DoStore<K>, req: &Request<'_>) -> Result<Answer, ApiError> {
    let me = req.db.unwrap_or("");
    if let Some(step) = req.step {
        let State::Detach { name } = step.state()? else {
            return Err(ApiError::bad_request("not a detach step"));
        };
        // A replica that says it follows another primary (or none) is not this one's any
        // more either way: it leaves the list. Any other refusal (a transaction open there)
        // leaves it attached.
        let said: Json = serde_json::from_slice(req.body).unwrap_or(Json::Null);
        if step.status != 200 && !(step.status == 409 && said["error"]["code"] == "NOT_A_REPLICA") {
            return Err(relayed(&name, step.status, req.body));
        }
        let mut r = store.replication().map_err(|e| failed(&e))?.clone();
        r.replicas.retain(|e| e.name != name);
        store.set_replication(r).map_err(|e| failed(&e))?;
        let answer: Json = serde_json::from_slice(req.body).unwrap_or(Json::Null);
        return Ok(Answer::json(
            &json!({"detached": name, "txid": answer["txid"]}),
        ));
    }
    let name = req.path.trim_start_matches("replicas/");
    let r = store.replication().map_err(|e| failed(&e))?;
    let Some(e) = r.replicas.iter().find(|e| e.name == name) else {
        return Err(ApiError::new(
            404,
            "NO_SUCH_REPLICA",
            format!("{name} is not a replica of this database"),
        ));
    };
    let hint = e.location_hint.clone();
    Ok(Answer::send(
        name,
        hint.as_deref(),
        "DELETE",
        "_replica".into(),
        json!({"primary": me}).to_string().into_bytes(),
        &State::Detach {
            name: name.to_owned(),
        },
    ))
}

/// `POST _replica` on the database to become a replica: checks, records its primary, then
/// catches up (the primary's attach waits for it).
fn become_replica<K: Kv>(
    store: &mut DoStore<K>,
    req: &Request<'_>,
    now_ms: i64,
) -> Result<Answer, ApiError> {
    if req.step.is_some() {
        // Attached either way: a catch-up that failed is tried again (pushes, the alarm).
        return Ok(sync(store, req, now_ms).unwrap_or_else(|e| {
            Answer::json(&json!({"txid": store.record().txid, "error": e.body()["error"]}))
        }));
    }
    let body: Json = serde_json::from_slice(req.body).unwrap_or(Json::Null);
    let primary = body["primary"]
        .as_str()
        .filter(|n| valid_name(n))
        .ok_or_else(|| ApiError::bad_request("the body must be {\"primary\": \"<name>\"}"))?;
    let r: Replication = store.replication().map_err(|e| failed(&e))?.clone();
    match &r.primary {
        Some(p) if p == primary => return sync(store, req, now_ms),
        Some(p) => {
            return Err(ApiError::new(
                409,
                "ALREADY_REPLICA",
                format!("it is a read replica of {p}: detach it there first"),
            ));
        }
        None => {}
    }
    if !r.replicas.is_empty() {
        return Err(ApiError::new(
            409,
            "HAS_REPLICAS",
            "it has read replicas of its own: detach them first",
        ));
    }
    if store.record().page_count > 0 {
        return Err(ApiError::new(
            409,
            "NOT_EMPTY",
            "it holds a database: a replica starts empty (delete its data, or choose another name)",
        ));
    }
    store
        .set_replication(Replication {
            primary: Some(primary.to_owned()),
            ..r
        })
        .map_err(|e| failed(&e))?;
    SEEN.with(|s| *s.borrow_mut() = Seen::default());
    sync(store, req, now_ms)
}

/// `DELETE _replica`: the replica of `primary` becomes an ordinary database.
fn leave<K: Kv>(store: &mut DoStore<K>, req: &Request<'_>) -> Result<Answer, ApiError> {
    let body: Json = serde_json::from_slice(req.body).unwrap_or(Json::Null);
    let r = store.replication().map_err(|e| failed(&e))?.clone();
    if r.primary.is_none() || r.primary.as_deref() != body["primary"].as_str() {
        return Err(ApiError::new(
            409,
            "NOT_A_REPLICA",
            format!("it is not a read replica of {}", body["primary"]),
        ));
    }
    store
        .set_replication(Replication { primary: None, ..r })
        .map_err(|e| failed(&e))?;
    Ok(Answer::json(
        &json!({"detached": true, "txid": store.record().txid}),
    ))
}

/// `GET _replicate?from=T[&snapshot=1]` on the primary (see [`Batch`]).
fn replicate<K: Kv>(store: &mut DoStore<K>, query: &str) -> Result<Answer, ApiError> {
    let from = param(query, "from")?.unwrap_or(1).max(1);
    let head = store.record().clone();
    let (oldest, newest) = store.window();
    let mut files: Vec<Vec<u8>> = Vec::new();
    // A new replica (from 1) takes a snapshot rather than every commit since the first.
    let mut snapshot = param(query, "snapshot")? == Some(1) || from == 1 || from - 1 < oldest;
    let too_large = || {
        let bytes = u64::from(head.page_count) * u64::from(head.page_size.get());
        (bytes > MAX_SNAPSHOT_BYTES as u64).then(|| {
            ApiError::new(
                413,
                "SNAPSHOT_TOO_LARGE",
                format!(
                    "a replica needs a snapshot, and this database's {bytes} bytes of pages are \
                     over the {} MiB a replica takes at once: keep history on (HISTORY) so that \
                     replicas follow it commit by commit",
                    MAX_SNAPSHOT_BYTES >> 20
                ),
            )
        })
    };
    if snapshot && let Some(e) = too_large() {
        return Err(e);
    }
    if !snapshot && from <= newest {
        let mut bytes = 0usize;
        for t in from..=newest.min(from + MAX_BATCH_COMMITS - 1) {
            match store.ltx(t, t) {
                Ok((b, _)) => {
                    bytes += b.len();
                    files.push(b);
                    if bytes >= MAX_BATCH_BYTES {
                        break;
                    }
                }
                // A commit whose record keeps no pre-images (history off, or too big) cannot
                // be sent alone: a snapshot then.
                Err(_) if t == from => {
                    snapshot = true;
                    break;
                }
                Err(_) => break,
            }
        }
    }
    if snapshot && newest > 0 {
        if let Some(e) = too_large() {
            return Err(e);
        }
        let (b, _) = store.ltx(1, newest).map_err(|e| match e.kind() {
            dosql_pagestore::ErrorKind::Invalid => ApiError::new(413, "LTX_TOO_LARGE", e.message()),
            _ => failed(&e),
        })?;
        files = vec![b];
    }
    let batch = Batch {
        txid: newest,
        lineage: format!("{:016x}", head.lineage),
        time_ms: head.timestamp_ms,
        snapshot: snapshot && newest > 0,
    };
    let mut body = serde_json::to_vec(&batch).unwrap_or_default();
    body.push(b'\n');
    for f in files {
        body.extend_from_slice(&(f.len() as u32).to_le_bytes());
        body.extend_from_slice(&f);
    }
    let mut a = Answer::json(&Json::Null);
    a.body = body;
    a.headers = vec![("content-type", "application/octet-stream".into())];
    Ok(a)
}

/// Reads a `_replicate` answer.
pub fn read_batch(body: &[u8]) -> Result<(Batch, Vec<&[u8]>), String> {
    let split = body
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no batch line")?;
    let batch: Batch = serde_json::from_slice(&body[..split]).map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    let mut rest = &body[split + 1..];
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or("a cut length")?;
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err("a cut LTX file".into());
        }
        files.push(&tail[..len]);
        rest = &tail[len..];
    }
    Ok((batch, files))
}

/// `POST _sync` (and the catch-up after `POST _replica`): one step at a time, see the module
/// docs.
fn sync<K: Kv>(store: &mut DoStore<K>, req: &Request<'_>, now_ms: i64) -> Result<Answer, ApiError> {
    let Some(primary) = store.primary().map_err(|e| failed(&e))? else {
        return Err(ApiError::new(
            409,
            "NOT_A_REPLICA",
            "this database is not a read replica",
        ));
    };
    let ask = |state: &mut State, snapshot: bool, txid: u64| {
        if let State::Sync { asked_at, .. } = state {
            *asked_at = txid;
        }
        let query = if snapshot {
            "snapshot=1".to_owned()
        } else {
            format!("from={}", txid + 1)
        };
        Answer::send(
            &primary,
            None,
            "GET",
            format!("_replicate?{query}"),
            Vec::new(),
            &*state,
        )
    };
    let mut fresh = State::Sync {
        steps: 0,
        applied: 0,
        snapshot: false,
        asked_at: 0,
    };
    // A primary's push carries its newest commits as a `_replicate` answer: applied as if
    // they had been asked for (a gap or a stale one is asked for again).
    let pushed = req.step.is_none() && req.path == "_sync" && !req.body.is_empty();
    if pushed {
        SEEN.with(|s| s.borrow_mut().pushes += 1);
    }
    let (status, state) = match req.step {
        Some(s) if matches!(s.state()?, State::Sync { .. }) => (s.status, s.state()?),
        _ if pushed => (
            200,
            State::Sync {
                steps: 0,
                applied: 0,
                snapshot: false,
                asked_at: store.record().txid,
            },
        ),
        // The first step (also after `POST _replica`'s checks).
        _ => return Ok(ask(&mut fresh, false, store.record().txid)),
    };
    let State::Sync {
        mut steps,
        mut applied,
        mut snapshot,
        asked_at,
    } = state
    else {
        return Err(ApiError::bad_request("not a sync step"));
    };
    let lineage_before = store.record().lineage;
    steps += 1;
    // Another catch-up moved this replica while the answer travelled: it answers a question
    // no longer asked (judging it could call a healthy replica ahead); ask again.
    if store.record().txid != asked_at && steps < MAX_SYNC_STEPS {
        let mut state = State::Sync {
            steps,
            applied,
            snapshot,
            asked_at,
        };
        return Ok(ask(&mut state, false, store.record().txid));
    }
    let fail = |e: ApiError| {
        SEEN.with(|s| s.borrow_mut().last_error = Some(e.message.clone()));
        e
    };
    if status != 200 {
        return Err(fail(relayed(&primary, status, req.body)));
    }
    let (batch, mut files) = read_batch(req.body).map_err(|e| {
        fail(ApiError::new(
            502,
            "REPLICATION_FAILED",
            format!("{primary}: {e}"),
        ))
    })?;
    if roll(|f| f.drop) {
        return Err(fail(ApiError::new(
            502,
            "REPLICATION_FAILED",
            format!("{primary}: the answer was lost (an injected fault)"),
        )));
    }
    if files.len() > 1 && roll(|f| f.reorder) {
        let i = files.len() / 2;
        files.swap(i - 1, i);
    }
    if !files.is_empty() && roll(|f| f.dup) {
        let i = files.len() / 2;
        files.insert(i, files[i]);
    }
    let lineage = u64::from_str_radix(&batch.lineage, 16).unwrap_or(0);
    let mut need_snapshot = false;
    let before = applied;
    // A failure after some commits of this step were applied still reopens the session
    // (pages changed under SQLite).
    let partial = |e: ApiError, applied: u64| {
        let mut a = Answer::error(&e);
        if applied > before {
            a.switched = true;
        }
        Ok(a)
    };
    for f in files {
        // A snapshot is decoded whole: bounded, so that it fits the instance's memory.
        let header = match dosql_layout::ltx::LtxHeader::read(f) {
            Ok(h) => h,
            Err(e) => {
                let e = ApiError::new(502, "REPLICATION_FAILED", format!("{primary}: {e}"));
                return partial(fail(e), applied);
            }
        };
        if header.is_snapshot()
            && u64::from(header.commit) * u64::from(header.page_size) > MAX_SNAPSHOT_BYTES as u64
        {
            let e = ApiError::new(
                413,
                "SNAPSHOT_TOO_LARGE",
                format!(
                    "{primary}: a snapshot of {} pages of {} bytes is over the {} MiB a replica \
                     takes at once; attach replicas while the database is small and keep its \
                     history on, so that they follow it commit by commit",
                    header.commit,
                    header.page_size,
                    MAX_SNAPSHOT_BYTES >> 20
                ),
            );
            return partial(fail(e), applied);
        }
        let ltx = match Ltx::decode(f) {
            Ok(l) => l,
            Err(e) => {
                let e = ApiError::new(502, "REPLICATION_FAILED", format!("{primary}: {e}"));
                return partial(fail(e), applied);
            }
        };
        if batch.snapshot {
            // The very state this replica holds (a push of the commit whose snapshot it took
            // when attached): a duplicate, not a primary that lost commits.
            let here = store.record();
            if ltx.header.max_txid == here.txid
                && here.lineage == lineage
                && ltx.header.has_checksums()
                && here.checksum.known() == Some(ltx.post_apply)
            {
                continue;
            }
            if ltx.header.max_txid <= store.record().txid {
                return Err(fail(ApiError::new(
                    409,
                    "REPLICA_AHEAD",
                    format!(
                        "this replica is at txid {}, its primary {primary} at {}: the primary \
                         lost commits it had acknowledged; detach this replica to keep them",
                        store.record().txid,
                        ltx.header.max_txid
                    ),
                )));
            }
            if let Err(e) = store.reset_to_snapshot(&ltx, lineage) {
                return partial(fail(failed(&e)), applied);
            }
            applied += 1;
            snapshot = true;
            SEEN.with(|s| s.borrow_mut().snapshots += 1);
            continue;
        }
        let result = match store.apply_ltx(&ltx, lineage) {
            Ok(r) => r,
            Err(e) => return partial(fail(failed(&e)), applied),
        };
        match result {
            Ok(_) => {
                applied += 1;
                SEEN.with(|s| s.borrow_mut().applied += 1);
            }
            // A commit already applied (a duplicate): skipped.
            Err(dosql_layout::replica::Refusal::NotNext { at }) if ltx.header.max_txid <= at => {}
            // A gap: asked again from where the replica is.
            Err(dosql_layout::replica::Refusal::NotNext { .. }) => break,
            Err(dosql_layout::replica::Refusal::Diverged(_)) => {
                need_snapshot = true;
                break;
            }
        }
    }
    let txid = store.record().txid;
    let mut state = State::Sync {
        steps,
        applied,
        snapshot,
        asked_at,
    };
    if txid > batch.txid && !need_snapshot {
        return Err(fail(ApiError::new(
            409,
            "REPLICA_AHEAD",
            format!(
                "this replica is at txid {txid}, its primary {primary} at {}: the primary lost \
                 commits it had acknowledged; detach this replica to keep them",
                batch.txid
            ),
        )));
    }
    // Pages changed under SQLite. Commits of SQL change page 1's change counter, by which
    // SQLite drops its cache at the next read as it does for another process's writes (the
    // VFS's cache is dropped with the store's work); a snapshot or another lineage (a restore,
    // an import) may not, and the session opens the database again. The host opens it again
    // too while Hrana streams are open, whose read transactions must not see pages change.
    let changed = applied > before;
    let reopen = changed && (snapshot || store.record().lineage != lineage_before);
    let mark = |mut a: Answer| {
        a.switched = reopen;
        if changed {
            a.headers.push(("x-dosql-pages-changed", "1".into()));
        }
        a
    };
    if (need_snapshot || txid < batch.txid) && steps < MAX_SYNC_STEPS {
        return Ok(mark(ask(&mut state, need_snapshot, txid)));
    }
    SEEN.with(|s| {
        let mut s = s.borrow_mut();
        s.primary_txid = batch.txid;
        s.synced_ms = now_ms;
        if txid >= batch.txid {
            s.caught_up_ms = now_ms;
        }
        s.last_error = None;
    });
    let a = Answer::json(&json!({
        "txid": txid,
        "primary_txid": batch.txid,
        "applied": applied,
        "snapshot": snapshot,
        "bookmark": bookmark(store.record().lineage, txid),
    }));
    Ok(mark(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_strictly_and_replay_from_their_seed() {
        let f = Faults::parse("seed=7, drop=0.5,dup=1,reorder=0,delay_ms=9").unwrap();
        assert_eq!((f.seed, f.drop, f.dup, f.reorder), (7, 0.5, 1.0, 0.0));
        for bad in ["drop=2", "dup=x", "seed=-1", "nope=1", "drop"] {
            assert!(Faults::parse(bad).is_err(), "{bad}");
        }
        let run = || {
            set_faults(None);
            set_faults(Some(f));
            (0..64).map(|_| roll(|f| f.drop)).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run(), "the same seed, the same faults");
        assert!(a.iter().any(|&x| x) && a.iter().any(|&x| !x));
        set_faults(None);
        assert!(!roll(|f| f.dup));
    }

    #[test]
    fn batches_read_back_and_cut_ones_are_refused() {
        let batch = Batch {
            txid: 9,
            lineage: "00000000000000ab".into(),
            time_ms: 5,
            snapshot: false,
        };
        let mut body = serde_json::to_vec(&batch).unwrap();
        body.push(b'\n');
        for f in [&b"one"[..], b"three"] {
            body.extend_from_slice(&(f.len() as u32).to_le_bytes());
            body.extend_from_slice(f);
        }
        let (b, files) = read_batch(&body).unwrap();
        assert_eq!(b, batch);
        assert_eq!(files, [&b"one"[..], b"three"]);
        assert!(read_batch(&body[..body.len() - 1]).is_err());
        assert!(read_batch(b"{}").is_err());
    }
}
