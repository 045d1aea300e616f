//! A database on a dosql server, over HTTP: the [`Database`] on top of the server's routes
//! ([`Client`]).
//!
//! Atomicity of a load: the server stages the imported pages under a new key prefix, and the
//! commit switches to them in one atomic write (the head and the import record, see
//! `dosql_layout::transfer`). An import that fails or is killed before that leaves the old
//! database as it was.

mod client;
mod url;

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use dosql_pagestore::PageSize;
use serde_json::{Value as Json, json};

pub use self::client::start_bookmark;
use self::client::{Client, encode_pages};
pub use self::url::DbUrl;
use crate::bail;
use crate::db::{
    Database, DbHead, Finish, Load, Open, PageSink, RestoreTo, SNAPSHOT_ATTEMPTS, chunk_delay,
    not_empty,
};
use crate::error::{Error, Result};
use crate::progress::Progress;

/// Pages per `GET /pages` (the server's most: one storage get of ≤128 keys).
const EXPORT_CHUNK_PAGES: u32 = 128;

/// A database on a dosql server.
#[derive(Debug)]
pub struct Remote {
    client: Client,
}

impl Remote {
    /// The database at `url`, sending `token` as a bearer token when given. Nothing is sent
    /// until a command asks for something.
    pub fn new(url: DbUrl, token: Option<&str>) -> Remote {
        Remote {
            client: Client::new(url, token),
        }
    }

    fn url(&self) -> &str {
        self.client.url()
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url())
    }
}

impl Database for Remote {
    fn open(&mut self, _how: Open) -> Result<()> {
        // Nothing to open: the server serves every database name (empty until written to),
        // and the first request finds out whether it can be reached.
        Ok(())
    }

    fn query(&mut self, sql: &str, params: &Json) -> Result<Json> {
        self.client.query(sql, params)
    }

    fn head(&mut self) -> Result<DbHead> {
        let s = self.client.stats().map_err(|e| e.at(self.url()))?;
        let field = |k: &str| {
            s[k].as_u64()
                .ok_or_else(|| Error::msg(format!("{}: the stats have no {k}: {s}", self.url())))
        };
        let small = |k: &str| {
            u32::try_from(field(k)?)
                .map_err(|_| Error::msg(format!("{}: bad {k} in the stats: {s}", self.url())))
        };
        Ok(DbHead {
            page_size: small("page_size")?,
            page_count: small("page_count")?,
            txid: field("txid")?,
            checksum: None,
        })
    }

    /// `GET /pages` from page 1, pinned to the txid of the first answer; `TXID_CHANGED` (409)
    /// means a commit came in between, and the read starts over.
    fn read_snapshot(
        &mut self,
        at: Option<u64>,
        chunk_pages: Option<u32>,
        progress: &mut Progress,
        sink: &mut dyn PageSink,
    ) -> Result<DbHead> {
        let chunk = chunk_pages
            .unwrap_or(EXPORT_CHUNK_PAGES)
            .clamp(1, EXPORT_CHUNK_PAGES);
        let delay = chunk_delay();
        let url = self.url();
        'attempt: for attempt in 1..=SNAPSHOT_ATTEMPTS {
            sink.restart()?;
            progress.restart();
            let mut from = 1u32;
            let mut head: Option<(u32, u32, u64)> = None;
            let mut checksum = None;
            loop {
                let answer = match self.client.pages(from, chunk, head.map(|h| h.2).or(at)) {
                    Ok(a) => a,
                    Err(e) if e.code() == Some("TXID_CHANGED") => {
                        if at.is_some() {
                            return Err(e);
                        }
                        progress.note(&format!(
                            "the database changed during the read (attempt {attempt}); starting over"
                        ));
                        continue 'attempt;
                    }
                    Err(e) => return Err(e.at(url)),
                };
                let (size, count, txid) =
                    *head.get_or_insert((answer.page_size, answer.page_count, answer.txid));
                checksum = checksum.or(answer.checksum);
                if from == 1 {
                    progress.set_total(u64::from(count));
                }
                let expected = chunk.min(count.saturating_sub(from - 1)) as usize * size as usize;
                if answer.bytes.len() != expected
                    || (answer.page_size, answer.page_count, answer.txid) != (size, count, txid)
                {
                    bail!(
                        "{url}: GET /pages from {from} answered {} bytes for head {:?}; expected {expected} for {:?}",
                        answer.bytes.len(),
                        (answer.page_size, answer.page_count, answer.txid),
                        (size, count, txid)
                    );
                }
                sink.pages(&answer.bytes)?;
                let got = (answer.bytes.len() / size.max(1) as usize) as u32;
                progress.add(u64::from(got));
                from += got;
                // Checked before "no pages": an empty database (0 pages) is read in full.
                if from > count {
                    return Ok(DbHead {
                        page_size: size,
                        page_count: count,
                        txid,
                        checksum,
                    });
                }
                if got == 0 {
                    bail!("{url}: GET /pages from {from} answered no pages of the {count}");
                }
                if let Some(d) = delay {
                    std::thread::sleep(d);
                }
            }
        }
        bail!(
            "{url}: the database changed during every one of {SNAPSHOT_ATTEMPTS} attempts to read it; try again when it is quieter"
        )
    }

    /// `POST /import` (which refuses a database with a schema without `force`), then the
    /// pages with `PUT /import/<id>`, then `POST /import/<id>/commit`.
    fn load(
        &mut self,
        page_size: PageSize,
        page_count: u32,
        force: bool,
        chunk_pages: Option<u32>,
    ) -> Result<Box<dyn Load + '_>> {
        let url = self.url();
        let begin = self
            .client
            .import_begin(page_size.get(), page_count, force)
            .map_err(|e| match e.code() {
                Some("NOT_EMPTY") => not_empty(url),
                _ => e.at(url),
            })?;
        let id = begin["import_id"]
            .as_str()
            .ok_or_else(|| Error::msg(format!("{url}: no import_id in {begin}")))?
            .to_owned();
        let prefix = begin["prefix"].as_str().unwrap_or_default().to_owned();
        let max = begin["max_chunk_pages"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n >= 1)
            .unwrap_or(1);
        // Compressed page values when the server takes them (about half the bytes to send and
        // to store); whole raw pages for a server that predates them.
        let compress = begin["page_formats"]
            .as_array()
            .is_some_and(|f| f.contains(&json!(2)));
        Ok(Box::new(RemoteLoad {
            client: &self.client,
            id,
            prefix,
            chunk: chunk_pages.unwrap_or(max).clamp(1, max),
            compress,
            page_size,
            page_count,
            force,
            committed: Json::Null,
        }))
    }

    fn history(&mut self, limit: usize, before: Option<u64>) -> Result<Json> {
        self.client
            .history(limit, before)
            .map_err(|e| e.at(self.url()))
    }

    fn restore(&mut self, to: RestoreTo) -> Result<Json> {
        let body = match to {
            RestoreTo::Txid(t) => json!({ "txid": t }),
            RestoreTo::Time(ms) => json!({ "timestamp_ms": ms }),
        };
        self.client.restore(&body).map_err(|e| e.at(self.url()))
    }

    fn ltx(&mut self, from: u64, to: u64) -> Result<Vec<u8>> {
        self.client.ltx(from, to).map_err(|e| e.at(self.url()))
    }
}

/// An import staged on the server.
#[derive(Debug)]
struct RemoteLoad<'a> {
    client: &'a Client,
    /// The import's id, from `POST /import`.
    id: String,
    /// The key prefix of the staged pages: the live one once the commit went through.
    prefix: String,
    chunk: u32,
    compress: bool,
    page_size: PageSize,
    page_count: u32,
    force: bool,
    /// The commit's answer.
    committed: Json,
}

impl Load for RemoteLoad<'_> {
    fn chunk_pages(&self) -> u32 {
        self.chunk
    }

    fn write(&mut self, from: u32, pages: &[u8]) -> Result<()> {
        let (format, body) = if self.compress {
            (2, Cow::Owned(encode_pages(pages, self.page_size, from)?))
        } else {
            (1, Cow::Borrowed(pages))
        };
        retrying(|| self.client.import_chunk(&self.id, from, format, &body)).map_err(|e| {
            e.context(format!("uploading pages from {from}"))
                .at(self.client.url())
        })?;
        Ok(())
    }

    fn commit(&mut self, finish: &Finish) -> Result<DbHead> {
        let url = self.client.url();
        self.committed = commit_retrying(self.client, &self.id, &self.prefix, self.force, finish)
            .map_err(|e| match e.code() {
            Some("NOT_EMPTY") => not_empty(url),
            _ => e.context("switching to the imported pages").at(url),
        })?;
        Ok(DbHead {
            page_size: self.page_size.get(),
            page_count: self.page_count,
            txid: self.committed["txid"].as_u64().unwrap_or(0),
            checksum: finish.checksum,
        })
    }

    fn abort(self: Box<Self>) {
        // Best effort: the staged pages are garbage either way, and the next import clears
        // them if this does not get through.
        let _ = self.client.import_abort(&self.id);
    }

    fn tidy(self: Box<Self>) -> Result<()> {
        // The old generation's pages: deleted now in bounded requests (the server also clears
        // what is left on later imports).
        let mut left = self.committed["garbage_pages"].as_u64().unwrap_or(0);
        let mut rounds = 0;
        while left > 0 && rounds < 100_000 {
            rounds += 1;
            left = self.client.import_gc()?["garbage_pages"]
                .as_u64()
                .unwrap_or(0);
        }
        Ok(())
    }
}

/// Retries `f` on transport failures (a lost connection), which the import protocol makes
/// safe: a chunk sent twice is stored once.
fn retrying<T>(mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut wait = Duration::from_millis(250);
    for _ in 0..3 {
        match f() {
            Err(e) if e.is_transport() => {
                std::thread::sleep(wait);
                wait *= 2;
            }
            other => return other,
        }
    }
    f()
}

/// Sends the switch. If its answer is lost, the switch may have happened or not: the server's
/// state tells which (its live prefix is the import's), and only a switch that did not happen
/// is sent again.
fn commit_retrying(
    client: &Client,
    id: &str,
    prefix: &str,
    force: bool,
    finish: &Finish,
) -> Result<Json> {
    let mut wait = Duration::from_millis(250);
    let mut retries = 0;
    loop {
        match client.import_commit(id, force, finish) {
            Err(e) if e.is_transport() && retries < 3 => {
                retries += 1;
                std::thread::sleep(wait);
                wait *= 2;
                if let Ok(status) = client.import_status()
                    && !prefix.is_empty()
                    && status["prefix"] == prefix
                {
                    return Ok(status);
                }
            }
            other => return other,
        }
    }
}
