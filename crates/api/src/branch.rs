//! `POST /db/<name>/branch` `{"to": "<other name>", "txid"?: T, "force"?: bool}`: creates the
//! database `<other name>` holding this one as of txid T (now when not given). The other
//! database is another Durable Object, so its pages travel in requests of its page-import
//! routes ([`crate::transfer`]), within the storage limits, and it checks their checksum at
//! the switch and records its parent (`{"name", "txid"}`) in its history.
//!
//! The host carries the requests ([`crate::http`]): each step of this route answers either
//! the final answer or a request to send to the target, and the host calls the route again
//! with the target's answer. Nothing is held between steps (the
//! state at T is rebuilt from the history each time), so the source database serves other
//! requests meanwhile, and two branches in opposite directions cannot wait on each other.
//! A target that is not empty is refused (409 `NOT_EMPTY`) unless `force`; a branch onto
//! itself or to a bad name is 400.

use dosql_layout::{DoStore, Kv};
use dosql_pagestore::{PageNo, PageSize, codec};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::ApiError;
use crate::http::{Answer, Request, name_field, relayed};

/// Pages per request to the target (what one import request takes, at most).
const CHUNK_PAGES: u32 = 128;

/// Where a branch is (handed to the host and back).
#[derive(Serialize, Deserialize, Debug, Clone)]
struct State {
    to: String,
    txid: u64,
    force: bool,
    page_size: u32,
    page_count: u32,
    /// Hex: the state travels through JavaScript, whose numbers hold 53 bits.
    checksum: Option<String>,
    /// The target's import, once begun.
    import: Option<String>,
    /// Pages it takes per request.
    chunk: u32,
    /// The next page to send (page_count + 1: the commit was sent).
    next: u32,
}

fn send(state: &State, method: &str, path: String, body: Vec<u8>) -> Answer {
    Answer::send(&state.to, None, method, path, body, state)
}

/// One step of the branch route (see the module docs).
pub fn handle<K: Kv>(store: &mut DoStore<K>, req: &Request<'_>) -> Answer {
    step(store, req).unwrap_or_else(|e| Answer::error(&e))
}

fn step<K: Kv>(store: &mut DoStore<K>, req: &Request<'_>) -> Result<Answer, ApiError> {
    if req.method != "POST" {
        return Ok(Answer::not_allowed("branch", "POST"));
    }
    let Some(step) = req.step else {
        let body: Json = serde_json::from_slice(req.body).map_err(|_| {
            ApiError::bad_request("the body must be {\"to\": \"<name>\", \"txid\"?, \"force\"?}")
        })?;
        return start(store, req, &body);
    };
    let mut state: State = step.state()?;
    let text = String::from_utf8_lossy(req.body);
    let answer: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
    if step.status != 200 {
        // The target's own error, said about the target.
        let what = format!("branch into {}", state.to);
        return Err(relayed(&what, step.status, req.body, "BRANCH_FAILED"));
    }
    if state.import.is_none() {
        let id = answer["import_id"].as_str().ok_or_else(|| {
            ApiError::new(502, "BRANCH_FAILED", format!("{}: no import id", state.to))
        })?;
        state.import = Some(id.to_owned());
        state.chunk = answer["max_chunk_pages"]
            .as_u64()
            .map_or(1, |n| n.clamp(1, u64::from(CHUNK_PAGES)) as u32);
        return pages(store, state);
    }
    if state.next <= state.page_count {
        state.next = state.next.saturating_add(state.chunk);
        if state.next <= state.page_count {
            return pages(store, state);
        }
        let id = state.import.clone().unwrap_or_default();
        let mut commit = json!({
            "force": state.force,
            "parent": {"name": req.db.unwrap_or(""), "txid": state.txid},
        });
        if let Some(c) = &state.checksum {
            commit["checksum"] = json!(c);
        }
        state.next = state.page_count + 1;
        return Ok(send(
            &state,
            "POST",
            format!("import/{id}/commit"),
            commit.to_string().into_bytes(),
        ));
    }
    // The commit went through: the target is the branch.
    Ok(Answer::json(&json!({
        "to": state.to,
        "branched_from": state.txid,
        "page_count": state.page_count,
        "page_size": state.page_size,
        "txid": answer["txid"],
        "checksum": state.checksum,
    })))
}

fn start<K: Kv>(
    store: &mut DoStore<K>,
    req: &Request<'_>,
    body: &Json,
) -> Result<Answer, ApiError> {
    let to = name_field(body, "to")?;
    if req.db == Some(to) {
        return Err(ApiError::bad_request(format!(
            "{to}: a database cannot be branched onto itself"
        )));
    }
    let (oldest, newest) = store.window();
    let txid = match body.get("txid") {
        None | Some(Json::Null) => newest,
        Some(t) => t
            .as_u64()
            .ok_or_else(|| ApiError::bad_request("txid must be a non-negative integer"))?,
    };
    if txid < oldest || txid > newest {
        return Err(ApiError::new(
            400,
            "OUT_OF_WINDOW",
            format!("txid {txid} is outside the history window: txids {oldest} to {newest}"),
        ));
    }
    let index = store
        .image_of(txid)
        .map_err(|e| ApiError::new(500, "HISTORY_FAILED", e.to_string()))?;
    let (page_count, checksum) = (index.page_count, index.checksum);
    if page_count == 0 {
        return Err(ApiError::bad_request(format!(
            "the database is empty at txid {txid}: nothing to branch"
        )));
    }
    let state = State {
        to: to.to_owned(),
        txid,
        force: body["force"] == json!(true),
        page_size: store.record().page_size.get(),
        page_count,
        checksum: checksum.map(|c| format!("{c:016x}")),
        import: None,
        chunk: 1,
        next: 1,
    };
    let begin =
        json!({"page_size": state.page_size, "page_count": page_count, "force": state.force});
    Ok(send(
        &state,
        "POST",
        "import".into(),
        begin.to_string().into_bytes(),
    ))
}

/// The next chunk of pages as a format 2 import body (page 1 raw: the target checks it).
fn pages<K: Kv>(store: &mut DoStore<K>, state: State) -> Result<Answer, ApiError> {
    let size = PageSize::new(state.page_size)
        .ok_or_else(|| ApiError::new(500, "INTERNAL", "page size"))?;
    let last = state.page_count.min(state.next + state.chunk - 1);
    let nos: Vec<PageNo> = (state.next..=last).filter_map(PageNo::new).collect();
    let values = store
        .values_at(state.txid, &nos)
        .map_err(|e| ApiError::new(500, "HISTORY_FAILED", e.to_string()))?;
    let mut body = Vec::new();
    for (no, v) in nos.iter().zip(values) {
        let value = match v {
            Some(v) if no.get() == 1 && v.len() != size.bytes() => codec::decode_page(&v, size)
                .map_err(|e| ApiError::new(500, "HISTORY_FAILED", e.to_string()))?
                .to_vec(),
            Some(v) => v,
            None => codec::encoded(&vec![0u8; size.bytes()]),
        };
        body.extend_from_slice(&(value.len() as u32).to_le_bytes());
        body.extend_from_slice(&value);
    }
    let id = state.import.clone().unwrap_or_default();
    let from = state.next;
    Ok(send(
        &state,
        "PUT",
        format!("import/{id}?from={from}&format=2"),
        body,
    ))
}
