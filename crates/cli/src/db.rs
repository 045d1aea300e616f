//! What every command works on: a dosql [`Database`], on a dosql server (`remote`, over HTTP)
//! or in a local store file (`local`, through the same JSON API in-process). Commands are
//! written once against the trait; how each kind of database does a thing lives in its
//! implementation.

use std::fmt;
use std::time::Duration;

use dosql_pagestore::PageSize;
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::progress::Progress;

/// How often a read of a snapshot starts over because the database changed under it before
/// giving up.
pub const SNAPSHOT_ATTEMPTS: u32 = 20;

/// Test hook, never documented to users: a pause after each chunk of pages moved, so a test
/// can kill the process (or change the database) in the middle of a real transfer.
const CHUNK_DELAY_ENV: &str = "DOSQL_TEST_CHUNK_DELAY_MS";

/// A dosql database a command works on. `Display` shows the target as the user gave it (the
/// database URL, or the store path), for messages.
pub trait Database: fmt::Display {
    /// Opens the database before the command does anything else, so that a bad target fails
    /// first. Other methods open it too (as [`Open::Existing`]) when the command did not.
    fn open(&mut self, how: Open) -> Result<()>;

    /// Runs `sql` with `params` (JSON, as the API takes them; `null` for none) as one request
    /// of the JSON API: the answer's JSON, or the API's error with its code. Errors do not name
    /// the target (the shell shows them as they are).
    fn query(&mut self, sql: &str, params: &Json) -> Result<Json>;

    /// Page size, page count and commit counter (txid) of the last commit.
    fn head(&mut self) -> Result<DbHead>;

    /// Reads every page of one consistent snapshot, in order, into `sink`, in chunks of at
    /// most `chunk_pages` (`None`: as many as the database gives at once), reporting pages to
    /// `progress`. With `at`, only that txid will do (an error with code `TXID_CHANGED`
    /// otherwise); without, the read starts over when the database changes under it. The
    /// snapshot's head.
    fn read_snapshot(
        &mut self,
        at: Option<u64>,
        chunk_pages: Option<u32>,
        progress: &mut Progress,
        sink: &mut dyn PageSink,
    ) -> Result<DbHead>;

    /// Starts replacing the whole database with an image of `page_count` pages of
    /// `page_size`, written through the [`Load`] in chunks of at most `chunk_pages` (`None`:
    /// the most the database takes). Refuses a database that is not empty unless `force`.
    /// Readers see the old database until [`Load::commit`] switches to the new one at once.
    fn load(
        &mut self,
        page_size: PageSize,
        page_count: u32,
        force: bool,
        chunk_pages: Option<u32>,
    ) -> Result<Box<dyn Load + '_>>;

    /// The commits the history keeps, newest first (at most `limit`, older than `before`):
    /// the JSON of `GET history` (see `dosql_api::history`).
    fn history(&mut self, limit: usize, before: Option<u64>) -> Result<Json>;

    /// Makes the database what it was at `to`, as a new commit: the JSON of `POST restore`.
    fn restore(&mut self, to: RestoreTo) -> Result<Json>;

    /// Commits `from..=to` as one LTX file (`from` = 1: a snapshot at `to`): the bytes of
    /// `GET ltx`. Refused (`OUT_OF_WINDOW`, or a message saying the range is too big) when
    /// the history no longer keeps `from` or the file would pass its size limit.
    fn ltx(&mut self, from: u64, to: u64) -> Result<Vec<u8>>;
}

/// Where a restore goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreTo {
    /// That txid.
    Txid(u64),
    /// The last commit at or before that time (ms since the Unix epoch).
    Time(i64),
}

/// How a load ends (see [`Load::commit`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Finish {
    /// LTX's checksum of the pages written (see `dosql_layout::checksum`): the database
    /// refuses to switch to pages that do not have it.
    pub checksum: Option<u64>,
    /// The database the pages came from, `{"name", "txid"}`, for a branch: recorded in the
    /// new database's history.
    pub parent: Option<Json>,
}

/// A database image being loaded (see [`Database::load`]): written in order, then committed
/// or aborted. One neither committed nor aborted (a killed process) changes nothing that
/// readers see, and the next load clears what it left.
pub trait Load {
    /// Pages per [`write`](Load::write).
    fn chunk_pages(&self) -> u32;

    /// Writes the next pages, whole and in order, the first being page `from`.
    fn write(&mut self, from: u32, pages: &[u8]) -> Result<()>;

    /// Switches the database to the written pages, atomically, after checking them as
    /// `finish` says: the new head.
    fn commit(&mut self, finish: &Finish) -> Result<DbHead>;

    /// Gives up before or after a failed commit, best effort: the old database stays.
    fn abort(self: Box<Self>);

    /// After the commit, removes what the old database left (remote: the old generation's
    /// pages). A failure is no failure of the load (the next load tidies again): the caller
    /// only reports it.
    fn tidy(self: Box<Self>) -> Result<()>;
}

/// How [`Database::open`] opens a database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    /// It must exist (a local store file; a remote database always does, empty at first).
    Existing,
    /// An empty one is created if there is none.
    OrCreate,
}

/// The head of a database: the shape and counter of its last commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbHead {
    /// Page size in bytes.
    pub page_size: u32,
    /// Pages in the database.
    pub page_count: u32,
    /// The commit counter.
    pub txid: u64,
    /// LTX's checksum of the database (see `dosql_layout::checksum`), when the database
    /// knows it.
    pub checksum: Option<u64>,
}

/// Receives the pages of a snapshot (see [`Database::read_snapshot`]).
pub trait PageSink {
    /// The read starts, or starts over because the database changed under it: forget every
    /// page received so far.
    fn restart(&mut self) -> Result<()>;

    /// The next pages, whole, in order.
    fn pages(&mut self, bytes: &[u8]) -> Result<()>;
}

/// Keeps a snapshot's pages in memory (a branch between any two databases, an LTX snapshot).
pub struct Collect(pub Vec<u8>);

impl PageSink for Collect {
    fn restart(&mut self) -> Result<()> {
        self.0.clear();
        Ok(())
    }

    fn pages(&mut self, bytes: &[u8]) -> Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// The refusal to replace a database that holds something, without `--force`.
pub fn not_empty(target: impl fmt::Display) -> Error {
    Error::msg(format!(
        "{target} is not empty: refusing to overwrite it (use --force to replace it)"
    ))
}

/// The pause the test hook asks for after each chunk, if any.
pub fn chunk_delay() -> Option<Duration> {
    std::env::var(CHUNK_DELAY_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
}
