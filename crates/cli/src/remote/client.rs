//! The HTTP client of a database on a dosql server: the JSON API (`/query`, `/stats`) and the
//! page transfer routes (`/pages`, `/import...`, see worker/src/transfer.ts), one method a
//! route.

use std::time::Duration;

use dosql_pagestore::{PageSize, codec};
use serde_json::{Value as Json, json};

use super::url::DbUrl;
use crate::bail;
use crate::error::{Error, Result};

/// Most bytes of one answer the client reads (a query result is not paged).
const MAX_ANSWER_BYTES: u64 = 1 << 30;

/// The routes of one remote database.
#[derive(Debug)]
pub struct Client {
    url: DbUrl,
    auth: Option<String>,
    agent: ureq::Agent,
    /// The newest bookmark an answer gave (or `--bookmark`), sent with every request.
    bookmark: std::cell::RefCell<Option<String>>,
}

/// `--bookmark`: the bookmark every client starts from.
static START_BOOKMARK: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Makes every client start from bookmark `b` (`<lineage>:<txid>` or `first-primary`).
pub fn start_bookmark(b: &str) -> Result<()> {
    let valid = b == "first-primary"
        || b.split_once(':').is_some_and(|(l, t)| {
            l.len() == 16
                && l.bytes().all(|c| c.is_ascii_hexdigit())
                && !t.is_empty()
                && t.bytes().all(|c| c.is_ascii_digit())
        });
    if !valid {
        return Err(Error::msg(format!(
            "--bookmark {b:?}: give <lineage>:<txid> as an answer's x-dosql-bookmark has it, or first-primary"
        )));
    }
    let _ = START_BOOKMARK.set(b.to_owned());
    Ok(())
}

/// Whether bookmark `new` should replace `old`: another lineage, or a later txid.
fn newer(old: &str, new: &str) -> bool {
    match (old.split_once(':'), new.split_once(':')) {
        (Some((ol, ot)), Some((nl, nt))) if ol == nl => {
            nt.parse::<u64>().unwrap_or(0) > ot.parse::<u64>().unwrap_or(0)
        }
        _ => true,
    }
}

/// Pages read from the server, with the head they belong to.
#[derive(Debug)]
pub struct PagesAnswer {
    /// Page size in bytes.
    pub page_size: u32,
    /// Pages in the database at `txid`.
    pub page_count: u32,
    /// The commit the pages belong to.
    pub txid: u64,
    /// The database's checksum at `txid`, when the server knows it.
    pub checksum: Option<u64>,
    /// The pages, concatenated.
    pub bytes: Vec<u8>,
}

/// The `GET /pages` body format this client reads (worker/src/transfer.ts).
const PAGES_FORMAT: u64 = 2;

/// `pages` (whole pages of `size`, the first being page `first`) as a format 2 import body:
/// each page's stored value (compressed where that is smaller) after its length (u32 LE).
/// Page 1 goes raw: the server checks its header. The server stores values as sent, without
/// decoding them, so each one is decoded here and compared with its page before it goes.
pub fn encode_pages(pages: &[u8], size: PageSize, first: u32) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(pages.len() / 2);
    for (i, page) in pages.chunks(size.bytes()).enumerate() {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        if first as usize + i == 1 {
            out.extend_from_slice(page);
        } else {
            codec::encode_page(page, &mut out);
        }
        let value = &out[at + 4..];
        if !codec::decode_page(value, size).is_ok_and(|p| p.as_bytes() == page) {
            bail!(
                "page {} does not decode back to itself after compression (a bug in dosql's codec)",
                first as usize + i
            );
        }
        // A value is at most a page (64 KiB), so its length fits.
        let len = value.len() as u32;
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    Ok(out)
}

/// The pages a `GET /pages` body holds (each stored value after its u32 LE length; length 0
/// for a page never stored), decoded and concatenated.
fn decode_pages(mut body: &[u8], size: PageSize) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let (len, rest) = body
            .split_first_chunk::<4>()
            .ok_or("a page value's length is cut short")?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(format!("a page value of {len} bytes is cut short"));
        }
        let (value, rest) = rest.split_at(len);
        if len == 0 {
            out.resize(out.len() + size.bytes(), 0);
        } else {
            let page = codec::decode_page(value, size).map_err(|e| e.to_string())?;
            out.extend_from_slice(page.as_bytes());
        }
        body = rest;
    }
    Ok(out)
}

/// What a request carries.
enum Body<'a> {
    None,
    Json(&'a Json),
    Bytes(&'a [u8]),
}

impl Client {
    /// A client for `url`, sending `token` as a bearer token when given.
    pub fn new(url: DbUrl, token: Option<&str>) -> Client {
        let agent = ureq::Agent::config_builder()
            // Error answers are JSON bodies worth reading, not transport failures.
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(300)))
            .user_agent(concat!("dosql/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Client {
            url,
            auth: token
                .filter(|t| !t.is_empty())
                .map(|t| format!("Bearer {t}")),
            agent,
            bookmark: std::cell::RefCell::new(START_BOOKMARK.get().cloned()),
        }
    }

    /// The newest bookmark an answer gave.
    pub fn bookmark(&self) -> Option<String> {
        self.bookmark.borrow().clone()
    }

    /// The database URL.
    pub fn url(&self) -> &str {
        &self.url.base
    }

    /// `POST /query` with `{"sql", "params"}`; the answer's JSON.
    pub fn query(&self, sql: &str, params: &Json) -> Result<Json> {
        let body = json!({ "sql": sql, "params": params });
        self.json("POST", "/query", Body::Json(&body))
    }

    /// `GET /stats`.
    pub fn stats(&self) -> Result<Json> {
        self.json("GET", "/stats", Body::None)
    }

    /// `GET /pages`: `count` pages from `from`, pinned to `txid` when given.
    pub fn pages(&self, from: u32, count: u32, txid: Option<u64>) -> Result<PagesAnswer> {
        let mut path = format!("/pages?from={from}&count={count}");
        if let Some(t) = txid {
            path.push_str(&format!("&txid={t}"));
        }
        let (status, headers, bytes) = self.send("GET", &path, Body::None)?;
        if status != 200 {
            return Err(self.refusal("GET", &path, status, &bytes));
        }
        let header = |name: &str| -> Result<u64> {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| {
                    Error::msg(format!(
                        "{}: the answer to GET /pages has no {name} header (not a dosql server, or an older one?)",
                        self.url()
                    ))
                    .located()
                })
        };
        if header("x-dosql-pages-format")? != PAGES_FORMAT {
            bail!(
                "{}: GET /pages answered pages format {}, this dosql reads {PAGES_FORMAT} (update one of the two)",
                self.url(),
                header("x-dosql-pages-format")?
            );
        }
        let page_size = u32::try_from(header("x-dosql-page-size")?)
            .map_err(|_| Error::msg("bad page size header"))?;
        let page_count = u32::try_from(header("x-dosql-page-count")?)
            .map_err(|_| Error::msg("bad page count header"))?;
        let size = PageSize::new(page_size)
            .ok_or_else(|| Error::msg(format!("bad page size {page_size}")))?;
        let bytes = decode_pages(&bytes, size)
            .map_err(|e| Error::msg(format!("{}: GET /pages: {e}", self.url())).located())?;
        let checksum = headers
            .get("x-dosql-checksum")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| u64::from_str_radix(v, 16).ok());
        Ok(PagesAnswer {
            page_size,
            page_count,
            txid: header("x-dosql-txid")?,
            checksum,
            bytes,
        })
    }

    /// `GET /history`.
    pub fn history(&self, limit: usize, before: Option<u64>) -> Result<Json> {
        let mut path = format!("/history?limit={limit}");
        if let Some(b) = before {
            path.push_str(&format!("&before={b}"));
        }
        self.json("GET", &path, Body::None)
    }

    /// `GET /ltx?from&to`: the file's bytes.
    pub fn ltx(&self, from: u64, to: u64) -> Result<Vec<u8>> {
        let path = format!("/ltx?from={from}&to={to}");
        let (status, _, bytes) = self.send("GET", &path, Body::None)?;
        if status != 200 {
            return Err(self.refusal("GET", &path, status, &bytes));
        }
        Ok(bytes)
    }

    /// `POST /restore`.
    pub fn restore(&self, body: &Json) -> Result<Json> {
        self.json("POST", "/restore", Body::Json(body))
    }

    /// `POST /import`: starts an import; the answer names it.
    pub fn import_begin(&self, page_size: u32, page_count: u32, force: bool) -> Result<Json> {
        let body = json!({ "page_size": page_size, "page_count": page_count, "force": force });
        self.json("POST", "/import", Body::Json(&body))
    }

    /// `PUT /import/<id>?from=N&format=F`: pages from `from`, whole (format 1) or as
    /// [`encode_pages`] frames them (format 2).
    pub fn import_chunk(&self, id: &str, from: u32, format: u32, body: &[u8]) -> Result<Json> {
        self.json(
            "PUT",
            &format!("/import/{id}?from={from}&format={format}"),
            Body::Bytes(body),
        )
    }

    /// `POST /import/<id>/commit`: switches the database to the imported pages.
    pub fn import_commit(&self, id: &str, force: bool, finish: &crate::db::Finish) -> Result<Json> {
        let mut body = json!({ "force": force });
        if let Some(c) = finish.checksum {
            body["checksum"] = json!(format!("{c:016x}"));
        }
        if let Some(p) = &finish.parent {
            body["parent"] = p.clone();
        }
        self.json("POST", &format!("/import/{id}/commit"), Body::Json(&body))
    }

    /// `DELETE /import/<id>`: abandons the import.
    pub fn import_abort(&self, id: &str) -> Result<Json> {
        self.json("DELETE", &format!("/import/{id}"), Body::None)
    }

    /// `GET /import`: the live prefix and head, the staged import, the garbage left.
    pub fn import_status(&self) -> Result<Json> {
        self.json("GET", "/import", Body::None)
    }

    /// `POST /import/gc`: deletes a share of dead pages; the answer says how many are left.
    pub fn import_gc(&self) -> Result<Json> {
        self.json("POST", "/import/gc", Body::Json(&json!({})))
    }

    /// A request whose answer is JSON; an error answer becomes an [`Error`] with its code.
    fn json(&self, method: &str, path: &str, body: Body<'_>) -> Result<Json> {
        let (status, _, bytes) = self.send(method, path, body)?;
        if status != 200 {
            return Err(self.refusal(method, path, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::msg(format!(
                "{}: the answer to {method} {path} is not JSON ({e}): not a dosql server?",
                self.url()
            ))
            .located()
        })
    }

    /// Sends one request; transport failures are errors, every HTTP status an answer.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Body<'_>,
    ) -> Result<(u16, ureq::http::HeaderMap, Vec<u8>)> {
        let url = format!("{}{path}", self.url.base);
        let auth = self.auth.as_deref();
        let bookmark = self.bookmark();
        let result = match method {
            "GET" | "DELETE" => {
                let mut req = if method == "GET" {
                    self.agent.get(&url)
                } else {
                    self.agent.delete(&url)
                };
                if let Some(a) = auth {
                    req = req.header("authorization", a);
                }
                if let Some(b) = &bookmark {
                    req = req.header("x-dosql-bookmark", b);
                }
                req.call()
            }
            _ => {
                let mut req = if method == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.post(&url)
                };
                if let Some(a) = auth {
                    req = req.header("authorization", a);
                }
                if let Some(b) = &bookmark {
                    req = req.header("x-dosql-bookmark", b);
                }
                match body {
                    Body::Json(j) => req
                        .header("content-type", "application/json")
                        .send(j.to_string().as_bytes()),
                    Body::Bytes(b) => req
                        .header("content-type", "application/octet-stream")
                        .send(b),
                    Body::None => req.send_empty(),
                }
            }
        };
        let mut resp = result.map_err(|e| self.unreachable(&e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        // From the answers a replica gives only at least as new as the bookmark sent (or
        // the primary gives): other routes answer from where the replica is.
        let gated = path == "/query" || path == "/batch";
        if let Some(b) = gated
            .then(|| headers.get("x-dosql-bookmark"))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .filter(|b| !b.is_empty())
        {
            let mut mine = self.bookmark.borrow_mut();
            // first-primary stays: every read of this run goes to the primary.
            if mine
                .as_deref()
                .is_none_or(|old| old != "first-primary" && newer(old, b))
            {
                *mine = Some(b.to_owned());
            }
        }
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(|e| self.unreachable(&e))?;
        Ok((status, headers, bytes))
    }

    fn unreachable(&self, err: &ureq::Error) -> Error {
        let why = match err {
            ureq::Error::Io(e) => e.to_string(),
            other => other.to_string(),
        };
        Error::transport(format!("cannot reach {}: {why}", self.url()))
    }

    /// An error answer as one line, keeping the server's code.
    fn refusal(&self, method: &str, path: &str, status: u16, body: &[u8]) -> Error {
        let parsed: Option<Json> = serde_json::from_slice(body).ok();
        let err = parsed.as_ref().map(|j| &j["error"]);
        let code = err.and_then(|e| e["code"].as_str());
        let message = err.and_then(|e| e["message"].as_str());
        match (status, code, message) {
            (401, ..) => Error::located(Error::api(
                "UNAUTHORIZED",
                format!(
                    "{}: unauthorized (HTTP 401): {} (give the server's token with --token or DOSQL_TOKEN)",
                    self.url(),
                    if self.auth.is_some() {
                        "the token was refused"
                    } else {
                        "the server requires a token"
                    }
                ),
            )),
            (_, Some(code), Some(message)) => Error::api(code, format!("{message} ({code})")),
            _ => {
                let route = path.split('?').next().unwrap_or(path);
                Error::msg(format!(
                    "{}: {method} {route} answered HTTP {status} without a dosql error (not a dosql server, or one without this route?)",
                    self.url()
                ))
                .located()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(values: &[&[u8]]) -> Vec<u8> {
        let mut body = Vec::new();
        for v in values {
            body.extend_from_slice(&(v.len() as u32).to_le_bytes());
            body.extend_from_slice(v);
        }
        body
    }

    #[test]
    fn pages_bodies_decode_raw_compressed_and_absent_pages() {
        let size = PageSize::new(512).unwrap();
        let raw = vec![7u8; 512];
        let mut sparse = vec![0u8; 512];
        sparse[..4].copy_from_slice(b"page");
        let mut compressed = Vec::new();
        codec::encode_page(&sparse, &mut compressed);
        assert!(compressed.len() < 512);
        let body = frame(&[&raw, &[], &compressed]);
        let pages = decode_pages(&body, size).unwrap();
        assert_eq!(pages.len(), 3 * 512);
        assert_eq!(&pages[..512], &raw[..]);
        assert!(pages[512..1024].iter().all(|&b| b == 0));
        assert_eq!(&pages[1024..], &sparse[..]);
    }

    #[test]
    fn import_bodies_frame_stored_values_with_page_1_raw() {
        let size = PageSize::new(512).unwrap();
        let mut pages = vec![0u8; 3 * 512];
        pages[..16].copy_from_slice(b"SQLite format 3\0");
        pages[512] = 9;
        pages[1024..].fill(0xA5);
        let body = encode_pages(&pages, size, 1).unwrap();
        assert!(body.len() < pages.len(), "{} bytes", body.len());
        // Page 1 raw, after its length.
        assert_eq!(&body[..4], &512u32.to_le_bytes());
        assert_eq!(&body[4..516], &pages[..512]);
        // The framing is the one GET /pages answers with: it decodes back.
        assert_eq!(decode_pages(&body, size).unwrap(), pages);
        // Not from page 1: every page may be compressed.
        let later = encode_pages(&pages, size, 2).unwrap();
        assert!(u32::from_le_bytes(later[..4].try_into().unwrap()) < 512);
        assert_eq!(decode_pages(&later, size).unwrap(), pages);
    }

    #[test]
    fn cut_or_corrupt_pages_bodies_are_refused() {
        let size = PageSize::new(512).unwrap();
        let whole = frame(&[&[1u8; 512]]);
        for bad in [&whole[..2], &whole[..100], &frame(&[&[0xFFu8; 20]])[..]] {
            assert!(
                decode_pages(bad, size).is_err(),
                "{} bytes accepted",
                bad.len()
            );
        }
    }
}
