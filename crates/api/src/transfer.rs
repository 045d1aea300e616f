//! Page transfer for `dosql import` / `dosql export` / `dosql verify`: whole databases in and
//! out as pages, in requests that fit Durable Object storage's limits (at most 128 keys a
//! call) and the 1 MiB body limit. The routes, under `/db/<name>/`:
//!
//! - `GET pages?from=N&count=M[&txid=T]` → M ≤ 128 pages from N, binary: each page's stored
//!   value (raw or an LZ4 block, `dosql_pagestore::codec`) after its length (u32 LE; 0: never
//!   stored, reads as zeros). Headers `x-dosql-pages-format: 2`, `x-dosql-page-size`,
//!   `-page-count`, `-txid` and, when known, `-checksum` (LTX's, hex) describe the state the
//!   pages belong to. With `txid=T`: the pages as of txid T, rebuilt from the history when T
//!   is older than the head; 409 `TXID_CHANGED` when the history no longer keeps T (the
//!   client restarts its snapshot).
//! - `GET import` → the live generation's prefix and head, the staged import, the garbage
//!   left (a client whose commit answer was lost checks the prefix).
//! - `POST import` `{"page_size", "page_count", "force"}` → starts an import under a fresh
//!   generation (one already staged is abandoned); 409 `NOT_EMPTY` if the database has a
//!   schema and force is not set. Answers `{"import_id", "prefix", "max_chunk_pages",
//!   "max_chunk_bytes", "page_formats": [1, 2]}`.
//! - `PUT import/<id>?from=N[&format=2]` → pages N.. in order (N at most the next page
//!   expected: a resend of stored pages changes nothing): format 1, whole raw pages back to
//!   back; format 2, stored values each after its u32 LE length, page 1 raw. A value that is
//!   not a whole page of the import's size is refused. 409 `OUT_OF_ORDER` names the page
//!   expected, 409 `IMPORT_SUPERSEDED` when another import started since.
//! - `POST import/<id>/commit` `{"force"}` → switches the database to the staged pages in one
//!   write and starts deleting the old generation: `{"txid", "page_size", "page_count",
//!   "garbage_pages"}`.
//! - `DELETE import/<id>` → abandons the staged import.
//! - `POST import/gc` → deletes another bounded share of old generations' keys:
//!   `{"garbage_pages"}` still to delete (the CLI calls it until 0).

use dosql_layout::{DoStore, Generation, Kv, Staging};
use dosql_pagestore::{PageNo, PageSize, SQLITE_MAGIC, StoreError, codec};
use serde_json::{Value as Json, json};

use crate::ApiError;
pub use crate::http::{Answer, Request};

/// Largest request body the Durable Object accepts (worker/src/index.ts checks it too; a
/// test keeps the two equal).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Storage calls one request spends deleting garbage: bounded so every request stays short.
pub const GC_CALLS_PER_REQUEST: usize = 64;
/// What `GET pages` answers with; a client checks it.
pub const PAGES_FORMAT: &str = "2";
/// Pages one request reads or stages at most (one storage call's worth of keys).
pub const MAX_CHUNK_PAGES: u32 = 128;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

fn conflict(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(409, code, message)
}

/// A storage failure: nothing half-done is visible, since every change is one write plan that
/// was applied whole or not at all.
fn failed(e: &StoreError) -> ApiError {
    match e.kind() {
        dosql_pagestore::ErrorKind::Invalid => bad(e.message()),
        _ => ApiError::new(500, "TRANSFER_FAILED", e.to_string()),
    }
}

/// Handles one transfer request on `store`. `schema_objects` counts the database's schema
/// objects (0: nothing to lose), asked before an import is started or switched in without
/// `force`.
pub fn handle<K: Kv>(
    store: &mut DoStore<K>,
    req: Request<'_>,
    schema_objects: &mut dyn FnMut() -> Result<i64, ApiError>,
) -> Answer {
    match route(store, req, schema_objects) {
        Ok(a) => a,
        Err(e) => Answer::error(&e),
    }
}

fn route<K: Kv>(
    store: &mut DoStore<K>,
    req: Request<'_>,
    schema_objects: &mut dyn FnMut() -> Result<i64, ApiError>,
) -> Result<Answer, ApiError> {
    let parts: Vec<&str> = req.path.split('/').collect();
    let not_allowed = |what: &str, allow: &str| Ok(Answer::not_allowed(what, allow));
    match (parts.as_slice(), req.method) {
        (["pages"], "GET") => pages(store, req.query),
        (["pages"], _) => not_allowed("pages", "GET"),
        (["import"], "GET") => status(store),
        (["import"], "POST") => begin(store, req.body, schema_objects),
        (["import"], _) => not_allowed("import", "GET or POST"),
        (["import", "gc"], "POST") => gc(store),
        (["import", "gc"], _) => not_allowed("import/gc", "POST"),
        (["import", id], "PUT") if !id.is_empty() => chunk(store, id, req.query, req.body),
        (["import", id], "DELETE") if !id.is_empty() => abort(store, id),
        (["import", id], _) if !id.is_empty() => not_allowed("import/<id>", "PUT or DELETE"),
        (["import", id, "commit"], "POST") => commit(store, id, req.body, schema_objects),
        (["import", _, "commit"], _) => not_allowed("import/<id>/commit", "POST"),
        _ => Err(ApiError::new(
            404,
            "NOT_FOUND",
            format!("no route for {}", req.path),
        )),
    }
}

/// A non-negative integer query parameter (at most 15 digits), `fallback` when absent.
fn param(query: &str, name: &str, fallback: Option<u64>) -> Result<Option<u64>, ApiError> {
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            if v.is_empty() {
                return Ok(fallback);
            }
            if v.len() > 15 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!(
                    "{name} must be a non-negative integer, not {v:?}"
                )));
            }
            return Ok(v.parse().ok());
        }
    }
    Ok(fallback)
}

fn head_headers<K: Kv>(store: &DoStore<K>) -> Vec<(&'static str, String)> {
    let h = store.record();
    vec![
        ("x-dosql-page-size", h.page_size.get().to_string()),
        ("x-dosql-page-count", h.page_count.to_string()),
        ("x-dosql-txid", h.txid.to_string()),
    ]
}

fn pages<K: Kv>(store: &mut DoStore<K>, query: &str) -> Result<Answer, ApiError> {
    let from = param(query, "from", Some(1))?.unwrap_or(1);
    let count = param(query, "count", Some(0))?.unwrap_or(0);
    let txid = param(query, "txid", None)?;
    if from < 1 || count > u64::from(MAX_CHUNK_PAGES) {
        return Err(bad(format!(
            "pages takes from ≥ 1, count ≤ {MAX_CHUNK_PAGES} and txid as integers"
        )));
    }
    let head = store.record().clone();
    let at = txid.unwrap_or(head.txid);
    if at != head.txid && store.image_of(at).is_err() {
        let (oldest, newest) = store.window();
        let mut e = Answer::error(&conflict(
            "TXID_CHANGED",
            format!(
                "the database is at txid {newest} and its history keeps txids {oldest} to \
                 {newest}, not {at}: restart the snapshot"
            ),
        ));
        e.headers = head_headers(store);
        return Ok(e);
    }
    // The state at `at`: the current one, or rebuilt from the history.
    let (page_count, checksum) = if at == head.txid {
        (head.page_count, head.checksum.known())
    } else {
        let index = store.image_of(at).map_err(|e| failed(&e))?;
        (index.page_count, index.checksum)
    };
    let last = (from + count).saturating_sub(1).min(u64::from(page_count));
    let nos: Vec<PageNo> = (from..=last)
        .filter_map(|n| u32::try_from(n).ok().and_then(PageNo::new))
        .collect();
    let values = store.values_at(at, &nos).map_err(|e| failed(&e))?;
    let mut body = Vec::with_capacity(
        values
            .iter()
            .map(|v| 4 + v.as_ref().map_or(0, Vec::len))
            .sum(),
    );
    for v in &values {
        let v = v.as_deref().unwrap_or_default();
        body.extend_from_slice(&(v.len() as u32).to_le_bytes());
        body.extend_from_slice(v);
    }
    let mut headers = vec![
        ("x-dosql-page-size", head.page_size.get().to_string()),
        ("x-dosql-page-count", page_count.to_string()),
        ("x-dosql-txid", at.to_string()),
        ("content-type", "application/octet-stream".into()),
        ("x-dosql-pages-format", PAGES_FORMAT.into()),
    ];
    if let Some(c) = checksum {
        headers.push(("x-dosql-checksum", format!("{c:016x}")));
    }
    Ok(Answer {
        status: 200,
        headers,
        body,
        switched: false,
    })
}

fn staging_json(s: &Staging) -> Json {
    json!({
        "id": s.generation.0.to_string(),
        "prefix": s.generation.prefix(),
        "page_size": s.page_size,
        "page_count": s.page_count,
        "next": s.next,
    })
}

fn status<K: Kv>(store: &mut DoStore<K>) -> Result<Answer, ApiError> {
    let head = store.record().clone();
    let t = store.transfer().map_err(|e| failed(&e))?.clone();
    Ok(Answer::json(&json!({
        "prefix": head.generation.prefix(),
        "page_size": head.page_size.get(),
        "page_count": head.page_count,
        "txid": head.txid,
        "staging": t.staging.as_ref().map(staging_json),
        "garbage": t.garbage.iter().map(|g| json!({"prefix": g.generation.prefix(), "from": g.from, "to": g.to})).collect::<Vec<_>>(),
        "garbage_pages": t.garbage_pages(),
    })))
}

fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Json>, ApiError> {
    match serde_json::from_slice::<Json>(body) {
        Ok(Json::Object(m)) => Ok(m),
        _ => Err(bad("the body must be a JSON object")),
    }
}

/// 409 when the database has a schema (it would be overwritten) and `force` is not set. Asks
/// SQLite, so the answer is about the database the next query would see.
fn refuse_non_empty(
    schema_objects: &mut dyn FnMut() -> Result<i64, ApiError>,
    force: bool,
) -> Result<(), ApiError> {
    if force {
        return Ok(());
    }
    match schema_objects() {
        Ok(0) => Ok(()),
        Ok(n) => Err(conflict(
            "NOT_EMPTY",
            format!("the database is not empty ({n} schema objects); force replaces it"),
        )),
        Err(e) => Err(conflict(
            "NOT_EMPTY",
            format!(
                "cannot tell whether the database is empty ({}); force replaces it anyway",
                e.message
            ),
        )),
    }
}

fn begin<K: Kv>(
    store: &mut DoStore<K>,
    body: &[u8],
    schema_objects: &mut dyn FnMut() -> Result<i64, ApiError>,
) -> Result<Answer, ApiError> {
    let b = json_object(body)?;
    let size = b
        .get("page_size")
        .and_then(Json::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .and_then(PageSize::new)
        .ok_or_else(|| bad("page_size must be a power of two in 512..65536"))?;
    let count = b
        .get("page_count")
        .and_then(Json::as_u64)
        .filter(|&n| (1..=0xffff_fffe).contains(&n))
        .ok_or_else(|| bad("page_count must be a positive integer"))? as u32;
    refuse_non_empty(schema_objects, b.get("force") == Some(&Json::Bool(true)))?;
    let staging = store.begin_import(size, count).map_err(|e| failed(&e))?;
    // Clear what earlier imports left (an abandoned import's pages included), a share at a
    // time.
    store
        .collect_garbage(GC_CALLS_PER_REQUEST)
        .map_err(|e| failed(&e))?;
    Ok(Answer::json(&json!({
        "import_id": staging.generation.0.to_string(),
        "prefix": staging.generation.prefix(),
        // Room for format 2's length before each value, too.
        "max_chunk_pages": MAX_CHUNK_PAGES.min((MAX_BODY_BYTES / (size.bytes() + 4)) as u32),
        "max_chunk_bytes": MAX_BODY_BYTES,
        "page_formats": [1, 2],
    })))
}

/// The staged import named `id`, or 409 `IMPORT_SUPERSEDED`.
fn staged<K: Kv>(store: &mut DoStore<K>, id: &str) -> Result<Staging, ApiError> {
    let t = store.transfer().map_err(|e| failed(&e))?;
    match t.staging {
        Some(s) if s.generation.0.to_string() == id => Ok(s),
        _ => Err(conflict(
            "IMPORT_SUPERSEDED",
            format!("import {id} is not in progress (another import started, or it ended)"),
        )),
    }
}

/// The values of a chunk: format 1, whole raw pages; format 2, stored values each after its
/// u32 LE length. Each must be a whole page of `size` (raw, or an LZ4 block that decodes to
/// one); that it is the right page, the client answers for (dosql's CLI decodes each value
/// back before sending it).
fn chunk_values(body: &[u8], format: u64, size: PageSize) -> Result<Vec<Vec<u8>>, ApiError> {
    let max = MAX_CHUNK_PAGES as usize;
    let values: Vec<Vec<u8>> = match format {
        1 => {
            let k = body.len() / size.bytes();
            if !body.len().is_multiple_of(size.bytes()) || k == 0 || k > max {
                return Err(bad(format!(
                    "the body must be 1 to {max} whole pages of {size} bytes; got {} bytes",
                    body.len()
                )));
            }
            body.chunks(size.bytes()).map(<[u8]>::to_vec).collect()
        }
        2 => {
            let mut values = Vec::new();
            let mut at = 0;
            while at < body.len() {
                let i = values.len();
                if i == max {
                    return Err(bad(format!("more than {max} values in one chunk")));
                }
                let len = body
                    .get(at..at + 4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                    .ok_or_else(|| bad(format!("value {i}'s length is cut short")))?;
                at += 4;
                if len == 0 || len > size.bytes() {
                    return Err(bad(format!(
                        "value {i} is {len} bytes; a stored page value is 1..{size}"
                    )));
                }
                let v = body
                    .get(at..at + len)
                    .ok_or_else(|| bad(format!("value {i} ({len} bytes) is cut short")))?;
                if codec::decode_page(v, size).is_err() {
                    return Err(bad(format!(
                        "value {i} is not a {size}-byte page, raw or as an LZ4 block"
                    )));
                }
                values.push(v.to_vec());
                at += len;
            }
            if values.is_empty() {
                return Err(bad("the body holds no page value"));
            }
            values
        }
        _ => return Err(bad("format must be 1 (raw pages) or 2 (stored values)")),
    };
    Ok(values)
}

fn chunk<K: Kv>(
    store: &mut DoStore<K>,
    id: &str,
    query: &str,
    body: &[u8],
) -> Result<Answer, ApiError> {
    let from = param(query, "from", None)?
        .filter(|&n| n >= 1)
        .ok_or_else(|| bad("from must be a page number ≥ 1"))?;
    let format = param(query, "format", Some(1))?.unwrap_or(1);
    let s = staged(store, id)?;
    let size = PageSize::new(s.page_size)
        .ok_or_else(|| ApiError::new(500, "TRANSFER_FAILED", "staged page size"))?;
    let values = chunk_values(body, format, size)?;
    let last = from + values.len() as u64 - 1;
    if last > u64::from(s.page_count) {
        return Err(bad(format!(
            "pages {from}..{last} are beyond the import's {} pages",
            s.page_count
        )));
    }
    // In order only: `next` then proves every page below it arrived. A resend of pages already
    // stored (a lost acknowledgement) is fine; a gap is not.
    if from > u64::from(s.next) {
        return Err(conflict(
            "OUT_OF_ORDER",
            format!("expected page {} next, got pages {from}..{last}", s.next),
        ));
    }
    if from == 1 {
        let p = &values[0];
        if p.len() != size.bytes()
            || !p.starts_with(SQLITE_MAGIC)
            || PageSize::from_header(p) != Some(size)
        {
            return Err(bad(format!(
                "page 1 is not the header of a SQLite database with {size}-byte pages (raw, in either format)"
            )));
        }
    }
    let s = store
        .stage_import(s.generation, from as u32, values)
        .map_err(|e| failed(&e))?;
    Ok(Answer::json(
        &json!({"next": s.next, "page_count": s.page_count}),
    ))
}

fn commit<K: Kv>(
    store: &mut DoStore<K>,
    id: &str,
    body: &[u8],
    schema_objects: &mut dyn FnMut() -> Result<i64, ApiError>,
) -> Result<Answer, ApiError> {
    let b = json_object(body)?;
    let s = staged(store, id)?;
    if s.next != s.page_count + 1 {
        return Err(conflict(
            "INCOMPLETE",
            format!(
                "the import has {} of its {} pages",
                s.next - 1,
                s.page_count
            ),
        ));
    }
    // Checked again at the switch: someone may have written to the database since the start.
    refuse_non_empty(schema_objects, b.get("force") == Some(&Json::Bool(true)))?;
    // The importer's checksum of what it sent (LTX's, 16 hex digits), against the pages
    // as they were stored.
    if let Some(want) = b.get("checksum") {
        let want = want
            .as_str()
            .filter(|h| h.len() == 16)
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .ok_or_else(|| bad("checksum must be 16 hex digits"))?;
        if s.checksum != 0 && s.checksum != want {
            return Err(conflict(
                "CHECKSUM_MISMATCH",
                format!(
                    "the pages stored have checksum {:016x}, not the {want:016x} the importer \
                     computed: pages were lost or changed on the way; nothing was switched \
                     (start the import again)",
                    s.checksum
                ),
            ));
        }
    }
    let note = match b.get("parent") {
        Some(p) => json!({ "branch": p }),
        None => json!({ "import": { "pages": s.page_count } }),
    };
    let head = store
        .switch_import(Generation(s.generation.0), None, note)
        .map_err(|e| failed(&e))?
        .clone();
    let garbage = store
        .collect_garbage(GC_CALLS_PER_REQUEST)
        .map_err(|e| failed(&e))?;
    let mut a = Answer::json(&json!({
        "txid": head.txid,
        "page_size": head.page_size.get(),
        "page_count": head.page_count,
        "garbage_pages": garbage,
    }));
    a.switched = true;
    Ok(a)
}

fn abort<K: Kv>(store: &mut DoStore<K>, id: &str) -> Result<Answer, ApiError> {
    staged(store, id)?;
    store.abort_import().map_err(|e| failed(&e))?;
    let garbage = store
        .collect_garbage(GC_CALLS_PER_REQUEST)
        .map_err(|e| failed(&e))?;
    Ok(Answer::json(&json!({"garbage_pages": garbage})))
}

fn gc<K: Kv>(store: &mut DoStore<K>) -> Result<Answer, ApiError> {
    let garbage = store
        .collect_garbage(GC_CALLS_PER_REQUEST)
        .map_err(|e| failed(&e))?;
    Ok(Answer::json(&json!({"garbage_pages": garbage})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dosql_layout::{MemKv, StorageKind};

    fn store() -> DoStore<MemKv> {
        DoStore::open(MemKv::new(StorageKind::SqliteBacked), PageSize::DEFAULT).unwrap()
    }

    fn send(s: &mut DoStore<MemKv>, method: &str, path: &str, query: &str, body: &[u8]) -> Answer {
        handle(s, Request::new(method, path, query, body), &mut || Ok(0))
    }

    fn page1() -> Vec<u8> {
        let mut p = vec![0u8; 4096];
        p[..16].copy_from_slice(SQLITE_MAGIC);
        p[16] = 0x10;
        p
    }

    #[test]
    fn an_import_runs_through_the_routes() {
        let mut s = store();
        let a = send(
            &mut s,
            "POST",
            "import",
            "",
            br#"{"page_size": 4096, "page_count": 2}"#,
        );
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        let j: Json = serde_json::from_slice(&a.body).unwrap();
        // SQLite-backed storage: the import's generation is a row generation, above 2^20.
        assert_eq!(
            (j["import_id"].as_str(), j["max_chunk_pages"].as_u64()),
            (Some("1048577"), Some(128))
        );
        let at = "import/1048577";
        let bad_page1 = send(&mut s, "PUT", at, "from=1", &[0u8; 4096]);
        assert_eq!(bad_page1.status, 400);
        let gap = send(&mut s, "PUT", at, "from=2", &[0u8; 4096]);
        assert_eq!(gap.status, 409);
        let early = send(&mut s, "POST", &format!("{at}/commit"), "", b"{}");
        assert_eq!(early.status, 409);
        let mut body = page1();
        body.extend_from_slice(&[0u8; 4096]);
        assert_eq!(send(&mut s, "PUT", at, "from=1", &body).status, 200);
        let other = send(&mut s, "PUT", "import/9", "from=1", &body);
        assert_eq!(other.status, 409);
        let done = send(&mut s, "POST", &format!("{at}/commit"), "", b"{}");
        assert_eq!(done.status, 200);
        assert!(done.switched);
        assert_eq!(s.record().txid, 1);
        let pages = send(&mut s, "GET", "pages", "from=1&count=5&txid=1", b"");
        assert_eq!(pages.status, 200);
        assert_eq!(pages.body.len(), 2 * 4 + 4096 + 4096);
        let moved = send(&mut s, "GET", "pages", "from=1&count=5&txid=0", b"");
        assert_eq!(moved.status, 409);
        assert!(
            moved
                .headers
                .iter()
                .any(|(k, v)| *k == "x-dosql-txid" && v == "1")
        );
        assert_eq!(send(&mut s, "PATCH", "pages", "", b"").status, 405);
        assert_eq!(send(&mut s, "GET", "nope", "", b"").status, 404);
    }

    #[test]
    fn a_non_empty_database_is_refused_without_force() {
        let mut s = store();
        let a = handle(
            &mut s,
            Request::new(
                "POST",
                "import",
                "",
                br#"{"page_size": 4096, "page_count": 1}"#,
            ),
            &mut || Ok(3),
        );
        assert_eq!(a.status, 409);
        assert!(String::from_utf8_lossy(&a.body).contains("NOT_EMPTY"));
        let a = handle(
            &mut s,
            Request::new(
                "POST",
                "import",
                "",
                br#"{"page_size": 4096, "page_count": 1, "force": true}"#,
            ),
            &mut || Ok(3),
        );
        assert_eq!(a.status, 200);
    }

    #[test]
    fn stored_values_that_are_not_whole_pages_are_refused() {
        let size = PageSize::DEFAULT;
        let mut ok = Vec::new();
        codec::encode_page(&vec![0u8; 4096], &mut ok);
        let frame = |v: &[u8]| {
            let mut b = (v.len() as u32).to_le_bytes().to_vec();
            b.extend_from_slice(v);
            b
        };
        assert_eq!(chunk_values(&frame(&ok), 2, size).unwrap().len(), 1);
        let mut short = Vec::new();
        codec::encode_page(&vec![0u8; 2048], &mut short);
        for bad in [frame(&short), frame(&[0xff; 10]), vec![1, 0, 0], frame(&[])] {
            assert!(chunk_values(&bad, 2, size).is_err());
        }
        assert!(chunk_values(&[0u8; 100], 1, size).is_err());
        assert!(chunk_values(&[0u8; 4096], 3, size).is_err());
    }
}
