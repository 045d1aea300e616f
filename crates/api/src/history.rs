//! The history routes, under `/db/<name>/` (framed by the host, see [`crate::http`]):
//!
//! - `GET history?limit=N&before=T` → the commits the log keeps, newest first (at most N,
//!   default 100, at most 1000; older than txid T when given): `{"txid", "checksum",
//!   "window": {"oldest_txid", "oldest_timestamp_ms", "newest_txid"}, "history":
//!   {"enabled", "retention_ms", "max_bytes"}, "commits": [{"txid", "timestamp_ms",
//!   "page_count", "pages_written", "checksum", "note"?, "switch"?}]}`. Checksums are LTX's,
//!   16 hex digits (null while a database from before checksums has its computed).
//! - `POST restore` `{"txid": T}` or `{"timestamp_ms": ms}` (the last commit at or before it)
//!   → makes the database what it was at T as a new commit, so that restoring to the txid
//!   before it undoes it: `{"txid", "restored_from", "page_count", "checksum", "switched"}`.
//!   Open Hrana streams end (their next request: `BATON_INVALID`).
//! - `GET ltx?from=T&to=U` → commits T..=U as one LTX file (`from=1`: a snapshot at U); 413
//!   `LTX_TOO_LARGE` past `dosql_layout::ltx::MAX_LTX_BYTES` (ask for fewer commits).
//! - `POST _maintain` `{"max_calls"}` → one bounded step of background work (the Durable
//!   Object's alarm; not routed from outside): `{"more", "due_ms", "records_deleted",
//!   "pages_checksummed", "garbage_pages"}`.
//!
//! A txid or time outside the window is 400 `OUT_OF_WINDOW`, saying which window exists.

use dosql_layout::{DoStore, Kv};
use dosql_pagestore::StoreError;
use serde_json::{Value as Json, json};

use crate::ApiError;
use crate::http::{Answer, Request};

/// Storage calls one `_maintain` step makes at most, unless told.
pub const MAINTAIN_CALLS: usize = 256;

fn hex(c: u64) -> Json {
    if c == 0 {
        Json::Null
    } else {
        json!(format!("{c:016x}"))
    }
}

fn failed(e: &StoreError) -> ApiError {
    match e.kind() {
        dosql_pagestore::ErrorKind::Invalid => ApiError::bad_request(e.message()),
        _ => ApiError::new(500, "HISTORY_FAILED", e.to_string()),
    }
}

fn out_of_window<K: Kv>(store: &DoStore<K>, what: String) -> ApiError {
    let (oldest, newest) = store.window();
    ApiError::new(
        400,
        "OUT_OF_WINDOW",
        format!("{what} is outside the history window: txids {oldest} to {newest}"),
    )
}

/// Serves one history route; `None` when `req` is not one.
pub fn handle<K: Kv>(store: &mut DoStore<K>, req: &Request<'_>) -> Option<Answer> {
    let routed = match (req.path, req.method) {
        ("history", "GET" | "HEAD") => history(store, req.query),
        ("history", _) => return Some(Answer::not_allowed("history", "GET")),
        ("restore", "POST") => restore(store, req.body),
        ("restore", _) => return Some(Answer::not_allowed("restore", "POST")),
        ("ltx", "GET" | "HEAD") => ltx(store, req.query),
        ("ltx", _) => return Some(Answer::not_allowed("ltx", "GET")),
        ("_maintain", "POST") => maintain(store, req.body),
        _ => return None,
    };
    Some(routed.unwrap_or_else(|e| Answer::error(&e)))
}

/// A non-negative integer query parameter, `None` when absent.
pub(crate) fn param(query: &str, name: &str) -> Result<Option<u64>, ApiError> {
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name && !v.is_empty() {
            return v.parse::<u64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!("{name} must be a non-negative integer, not {v:?}"))
            });
        }
    }
    Ok(None)
}

fn history<K: Kv>(store: &mut DoStore<K>, query: &str) -> Result<Answer, ApiError> {
    let limit = param(query, "limit")?.unwrap_or(100).min(1000) as usize;
    let before = param(query, "before")?;
    let commits = store.history(limit, before).map_err(|e| failed(&e))?;
    let head = store.record().clone();
    let (oldest, newest) = store.window();
    let oldest_timestamp = if head.log.oldest <= head.txid {
        Some(
            store
                .history(1, Some(head.log.oldest + 1))
                .map_err(|e| failed(&e))?
                .first()
                .map_or(0, |c| c.timestamp_ms),
        )
    } else if head.timestamp_ms != 0 {
        Some(head.timestamp_ms)
    } else {
        None
    };
    let config = store.history_config();
    Ok(Answer::json(&json!({
        "txid": head.txid,
        "checksum": head.checksum.known().map_or(Json::Null, hex),
        "window": {
            "oldest_txid": oldest,
            "oldest_timestamp_ms": oldest_timestamp,
            "newest_txid": newest,
        },
        "history": {
            "enabled": config.enabled,
            "retention_ms": config.retention_ms,
            "max_bytes": config.max_bytes,
        },
        "commits": commits.iter().map(|c| {
            let mut j = json!({
                "txid": c.txid,
                "timestamp_ms": c.timestamp_ms,
                "page_count": c.page_count,
                "pages_written": c.pages_written,
                "checksum": hex(c.checksum),
            });
            if let Some(note) = &c.note {
                j["note"] = note.clone();
            }
            if c.switch {
                j["switch"] = json!(true);
            }
            j
        }).collect::<Vec<_>>(),
    })))
}

fn restore<K: Kv>(store: &mut DoStore<K>, body: &[u8]) -> Result<Answer, ApiError> {
    let b: Json = serde_json::from_slice(body).map_err(|_| {
        ApiError::bad_request("the body must be {\"txid\": T} or {\"timestamp_ms\": ms}")
    })?;
    let (txid, time) = (b.get("txid"), b.get("timestamp_ms"));
    let at = match (txid, time) {
        (Some(t), None) => t
            .as_u64()
            .ok_or_else(|| ApiError::bad_request("txid must be a non-negative integer"))?,
        (None, Some(ms)) => {
            let ms = ms
                .as_i64()
                .ok_or_else(|| ApiError::bad_request("timestamp_ms must be an integer"))?;
            store
                .txid_at_time(ms)
                .map_err(|_| out_of_window(store, format!("time {ms} ms")))?
        }
        _ => {
            return Err(ApiError::bad_request(
                "the body must be {\"txid\": T} or {\"timestamp_ms\": ms}",
            ));
        }
    };
    let (oldest, newest) = store.window();
    if at < oldest || at > newest {
        return Err(out_of_window(store, format!("txid {at}")));
    }
    let r = store.restore(at).map_err(|e| failed(&e))?;
    let checksum = store.record().checksum.known().map_or(Json::Null, hex);
    let mut a = Answer::json(&json!({
        "txid": r.txid,
        "restored_from": r.from,
        "page_count": r.page_count,
        "checksum": checksum,
        "switched": r.switched,
    }));
    a.switched = true;
    Ok(a)
}

fn ltx<K: Kv>(store: &mut DoStore<K>, query: &str) -> Result<Answer, ApiError> {
    let txid = store.record().txid;
    let to = param(query, "to")?.unwrap_or(txid);
    let from = param(query, "from")?.unwrap_or(1);
    let (oldest, newest) = store.window();
    // Past `from` = 1 (a snapshot), the records from `from` on must be kept.
    if to < oldest || to > newest || from == 0 || from > to || (from > 1 && from <= oldest) {
        return Err(ApiError::new(
            400,
            "OUT_OF_WINDOW",
            format!(
                "an LTX file of txids {from}..={to} cannot be made: the history rebuilds txids \
                 {oldest} to {newest}, and keeps the commits after {oldest} (from=1 is a snapshot)"
            ),
        ));
    }
    let (bytes, info) = store.ltx(from, to).map_err(|e| match e.kind() {
        // In the window, the one refusal left is the size.
        dosql_pagestore::ErrorKind::Invalid => ApiError::new(413, "LTX_TOO_LARGE", e.message()),
        _ => failed(&e),
    })?;
    let mut a = Answer::json(&Json::Null);
    a.body = bytes;
    a.headers = vec![
        ("content-type", "application/octet-stream".into()),
        ("x-dosql-ltx-min-txid", info.min_txid.to_string()),
        ("x-dosql-ltx-max-txid", info.max_txid.to_string()),
        ("x-dosql-page-count", info.commit.to_string()),
    ];
    Ok(a)
}

fn maintain<K: Kv>(store: &mut DoStore<K>, body: &[u8]) -> Result<Answer, ApiError> {
    let calls = serde_json::from_slice::<Json>(body)
        .ok()
        .and_then(|b| b.get("max_calls").and_then(Json::as_u64))
        .map_or(MAINTAIN_CALLS, |n| n.clamp(4, 10_000) as usize);
    let m = store.maintain(calls).map_err(|e| failed(&e))?;
    Ok(Answer::json(&json!({
        "more": m.more,
        "due_ms": m.due_ms,
        "records_deleted": m.records_deleted,
        "pages_checksummed": m.pages_checksummed,
        "garbage_pages": m.garbage_pages,
    })))
}
