//! The head: a database's committed state (page size, page count, txid, which generation of
//! page keys is live) and the stored values of the pages the last commit wrote. Every commit
//! writes it, so small commits carry their pages inside it: a one-row insert changes page 1
//! (SQLite's change counter) and one leaf, and the whole commit is one record.
//!
//! # Format 5 (written by this code): one binary record, little-endian
//!
//! ```text
//! offset size field
//!  0      4   magic b"dqhd"
//!  4      2   format: 5
//!  6      2   flags: bit 0 = the checksum is complete; bit 1 = the commit log's records
//!             are rows of table `dosql_log` (SQLite-backed storage, see `wire`), set on
//!             every head such storage holds; bit 2 = the generation is a row generation
//!             (its pages are rows of table `dosql_pages` on SQLite-backed storage, see
//!             `keys` and `wire`), set exactly when it is (a reader refuses a flag it does
//!             not know)
//!  8      4   page size in bytes (a power of two, 512..=65536)
//! 12      4   page count
//! 16      8   txid: commits so far (0: never committed to)
//! 24      4   generation of the page keys: 0 `p:…`, n `g<n>:p:…` (see `keys`)
//! 28      4   checksum cursor: while the checksum is being computed (a database from before
//!             checksums), the pages below it are folded in; 0 once complete
//! 32      8   checksum: the database's LTX checksum (see `checksum`), or the partial one
//! 40      8   log oldest: the txid of the oldest record of the commit log still in the window
//!             (see `log`); txid + 1 when there is none
//! 48      8   log floor: records from it to log oldest are being deleted; ≤ log oldest
//! 56      8   log bytes: bytes of the records in the window
//! 64      8   timestamp of the last commit, ms since the Unix epoch (0: not known)
//! 72      8   lineage: names this database's line of commits; a new one when the database
//!             is replaced (an import, a restore, a branch); 0: not assigned yet
//! 80      4   n: pages carried inline
//! 84      …   n × [page number u32, value length u32, value]: each value is a page's
//!             stored value (1..=page size bytes, see `dosql_pagestore::codec`); page
//!             numbers distinct and within the page count; nothing follows the last
//! ```
//!
//! While a page is inline, its own key is not read: it may hold an older value. A later
//! commit that does not rewrite the page puts it under its key (see `plan`).
//!
//! Where it is stored:
//! - classic storage: the value of the key `meta` (an `ArrayBuffer`);
//! - SQLite-backed storage: row 0 of table [`HEAD_TABLE`] (`id INTEGER PRIMARY KEY, head TEXT,
//!   inline BLOB`): `head` = `{"format":5}`, `inline` = the record. A rowid table, because
//!   workerd keeps kv keys in a WITHOUT ROWID table where replacing `meta` read neighbouring
//!   page values from disk on every commit (bench/README.md). `meta` holds the pointer
//!   [`pointer`] (written with the first head in the table), so that releases from before the
//!   table refuse the database instead of taking it for an empty one.
//!
//! # Formats read (written by earlier releases), moved to format 5 by the next commit
//!
//! A database read from an earlier format has no checksum yet (it is computed in the
//! background: cursor 1), an empty log, timestamp 0 and lineage 0.
//!
//! - 4 (SQLite-backed): the row's `head` is JSON `{"format": 4, "page_size", "page_count",
//!   "txid", "prefix"?, "inline_nos"?, "inline_lens"?}` and `inline` the values back to back.
//! - 3 (classic): `meta` = `{format: 3, page_size, page_count, txid, prefix?, inline_nos?,
//!   inline?: [ArrayBuffer]}`.
//! - 2: `meta` = `{format: 2, …, page1?: ArrayBuffer}`: page 1 carried alone.
//! - 1: `meta` = `{format: 1, page_size, page_count, txid, prefix?}`: every page under its key.
//!
//! A record this code does not know (a newer format, a flag, a field out of range) is refused
//! with an error that says so: a database is never misread, and never read as empty.

use crate::bytes::Reader;
use dosql_pagestore::{PageNo, PageSize, StoreError};
use serde_json::{Value as Json, json};

use crate::checksum;
use crate::keys::Generation;
use crate::value::{HeadRow, StorageKind, Value, bytes_of, count_field};

/// The head format this code writes.
pub const HEAD_FORMAT: u16 = 5;
/// SQLite-backed storage's table holding the head (row 0).
pub const HEAD_TABLE: &str = "dosql_head";
/// Creates [`HEAD_TABLE`] (the host runs it before the first write of the row).
pub const HEAD_CREATE_SQL: &str = "CREATE TABLE IF NOT EXISTS dosql_head(id INTEGER PRIMARY KEY, head TEXT NOT NULL, inline BLOB)";
/// Reads the head row: columns `head` and `inline` (a missing table means no row).
pub const HEAD_SELECT_SQL: &str = "SELECT head, inline FROM dosql_head WHERE id = 0";
/// Writes the head row; parameters: `head`, `inline`.
pub const HEAD_UPSERT_SQL: &str =
    "INSERT OR REPLACE INTO dosql_head(id, head, inline) VALUES (0, ?, ?)";
const MAGIC: &[u8; 4] = b"dqhd";
const FIXED: usize = 84;
const FLAG_CHECKSUM_COMPLETE: u16 = 1;
/// The commit log is in rows (see `wire`): releases that read it from kv keys must refuse.
const FLAG_LOG_ROWS: u16 = 2;
/// The generation's pages are rows (see `keys::Generation::page_rows`): releases that read
/// every page from a kv key must refuse, not read the database as zeros.
const FLAG_PAGE_ROWS: u16 = 4;
/// The largest txid the earlier formats could hold (a JavaScript number, exactly).
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// A database's committed state.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Head {
    /// Page size in bytes.
    pub page_size: PageSize,
    /// Pages in the database.
    pub page_count: u32,
    /// Commits so far.
    pub txid: u64,
    /// Which page keys are live.
    pub generation: Generation,
    /// Stored values of the pages carried inside the head, in the order written.
    pub inline: Vec<(PageNo, Vec<u8>)>,
    /// The database's checksum.
    pub checksum: DbChecksum,
    /// Which records of the commit log exist.
    pub log: LogWindow,
    /// When the last commit was made, ms since the Unix epoch (0: not known).
    pub timestamp_ms: i64,
    /// This database's line of commits (0: not assigned yet).
    pub lineage: u64,
}

/// The database's LTX checksum (see `checksum`), or how far computing it got.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DbChecksum {
    /// The XOR of every page's checksum (with bit 63 set).
    Known(u64),
    /// Being computed, for a database from before checksums: `partial` covers the pages
    /// below `cursor`; commits keep it up to date for those pages only.
    Partial {
        /// The checksum of pages `1..cursor`.
        partial: u64,
        /// The first page not folded in yet (≥ 1).
        cursor: u32,
    },
}

impl DbChecksum {
    /// The checksum when it is known.
    pub fn known(self) -> Option<u64> {
        match self {
            DbChecksum::Known(c) => Some(c),
            DbChecksum::Partial { .. } => None,
        }
    }

    /// Whether page `no`'s content is part of the value held (every page when known).
    pub fn covers(self, no: u32) -> bool {
        match self {
            DbChecksum::Known(_) => true,
            DbChecksum::Partial { cursor, .. } => no < cursor,
        }
    }

    /// The value held (known or partial).
    pub fn value(self) -> u64 {
        match self {
            DbChecksum::Known(c) | DbChecksum::Partial { partial: c, .. } => c,
        }
    }

    /// The same state holding `value`.
    pub fn with_value(self, value: u64) -> DbChecksum {
        match self {
            DbChecksum::Known(_) => DbChecksum::Known(value),
            DbChecksum::Partial { cursor, .. } => DbChecksum::Partial {
                partial: value,
                cursor,
            },
        }
    }
}

/// Which records of the commit log (see `log`) exist: those of commits `oldest..=txid` are in
/// the window (every state from `oldest - 1` to now can be rebuilt), those of `floor..oldest`
/// are left over from pruning and being deleted.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LogWindow {
    /// The oldest record in the window; the head's txid + 1 when there is none.
    pub oldest: u64,
    /// The oldest record whose keys may still exist (≤ `oldest`).
    pub floor: u64,
    /// Bytes of the records in the window.
    pub bytes: u64,
}

impl LogWindow {
    /// The window after the commit at `txid` on top of `prev` left no record: empty, starting
    /// after it; the records `prev` kept (from its floor) are left to prune.
    pub fn restarted(prev: &Head, txid: u64) -> LogWindow {
        LogWindow {
            oldest: txid + 1,
            floor: if prev.log.floor > prev.txid {
                txid + 1
            } else {
                prev.log.floor
            },
            bytes: 0,
        }
    }

    /// No records, at txid `txid`.
    pub fn empty(txid: u64) -> LogWindow {
        LogWindow {
            oldest: txid + 1,
            floor: txid + 1,
            bytes: 0,
        }
    }
}

impl Head {
    /// The head of a database never committed to.
    pub fn empty(page_size: PageSize) -> Head {
        Head {
            page_size,
            page_count: 0,
            txid: 0,
            generation: Generation(0),
            inline: Vec::new(),
            checksum: DbChecksum::Known(checksum::EMPTY),
            log: LogWindow::empty(0),
            timestamp_ms: 0,
            lineage: 0,
        }
    }

    /// The oldest txid whose state can be rebuilt from the log (the head's txid when the log
    /// is empty).
    pub fn oldest_restorable(&self) -> u64 {
        self.log.oldest - 1
    }

    /// The stored value of page `no` when it is carried inline.
    pub fn inline_value(&self, no: PageNo) -> Option<&[u8]> {
        self.inline
            .iter()
            .find(|(n, _)| *n == no)
            .map(|(_, v)| v.as_slice())
    }

    /// The format 5 record (as classic storage holds it).
    pub fn encode(&self) -> Vec<u8> {
        self.encode_with(0)
    }

    /// The format 5 record with `extra` flags.
    fn encode_with(&self, extra: u16) -> Vec<u8> {
        let n: usize = self.inline.iter().map(|(_, v)| 8 + v.len()).sum();
        let mut out = Vec::with_capacity(FIXED + n);
        let extra = if self.generation.page_rows() {
            extra | FLAG_PAGE_ROWS
        } else {
            extra
        };
        let (flags, cursor) = match self.checksum {
            DbChecksum::Known(_) => (FLAG_CHECKSUM_COMPLETE | extra, 0),
            DbChecksum::Partial { cursor, .. } => (extra, cursor),
        };
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&HEAD_FORMAT.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&self.page_size.get().to_le_bytes());
        out.extend_from_slice(&self.page_count.to_le_bytes());
        out.extend_from_slice(&self.txid.to_le_bytes());
        out.extend_from_slice(&self.generation.0.to_le_bytes());
        out.extend_from_slice(&cursor.to_le_bytes());
        out.extend_from_slice(&self.checksum.value().to_le_bytes());
        out.extend_from_slice(&self.log.oldest.to_le_bytes());
        out.extend_from_slice(&self.log.floor.to_le_bytes());
        out.extend_from_slice(&self.log.bytes.to_le_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_le_bytes());
        out.extend_from_slice(&self.lineage.to_le_bytes());
        out.extend_from_slice(&(self.inline.len() as u32).to_le_bytes());
        for (no, v) in &self.inline {
            out.extend_from_slice(&no.get().to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
        out
    }

    /// Reads a format 5 record.
    pub fn decode(bytes: &[u8]) -> Result<Head, StoreError> {
        let corrupt = |why: String| StoreError::corrupt(format!("head record: {why}"));
        if bytes.len() < 6 || &bytes[..4] != MAGIC {
            return Err(corrupt("not a dosql head record (no magic)".into()));
        }
        let mut r = Reader::new(bytes, 4, "head record", dosql_pagestore::ErrorKind::Corrupt);
        let format = r.u16()?;
        if format != HEAD_FORMAT {
            return Err(newer(format));
        }
        let flags = r.u16()?;
        if flags & !(FLAG_CHECKSUM_COMPLETE | FLAG_LOG_ROWS | FLAG_PAGE_ROWS) != 0 {
            return Err(corrupt(format!(
                "flags {flags:#x}: written by a newer dosql; this release knows bits 0 to 2 only"
            )));
        }
        let size = r.u32()?;
        let page_size = PageSize::new(size).ok_or_else(|| corrupt(format!("page size {size}")))?;
        let page_count = r.u32()?;
        let txid = r.u64()?;
        let generation = Generation(r.u32()?);
        if generation.page_rows() != (flags & FLAG_PAGE_ROWS != 0) {
            return Err(corrupt(format!(
                "generation {} with flags {flags:#x}: the page rows flag says otherwise",
                generation.0
            )));
        }
        let cursor = r.u32()?;
        let value = r.u64()?;
        let checksum = match (flags & FLAG_CHECKSUM_COMPLETE != 0, cursor) {
            (true, 0) if value & checksum::FLAG != 0 => DbChecksum::Known(value),
            (false, c) if c >= 1 && value & checksum::FLAG != 0 => DbChecksum::Partial {
                partial: value,
                cursor: c,
            },
            _ => {
                return Err(corrupt(format!(
                    "checksum {value:#x} with cursor {cursor} and flags {flags:#x}"
                )));
            }
        };
        let log = LogWindow {
            oldest: r.u64()?,
            floor: r.u64()?,
            bytes: r.u64()?,
        };
        if log.floor > log.oldest || log.oldest > txid.saturating_add(1) || log.oldest == 0 {
            return Err(corrupt(format!(
                "log window {}..={txid} with floor {}",
                log.oldest, log.floor
            )));
        }
        let timestamp_ms = r.u64()? as i64;
        let lineage = r.u64()?;
        let n = r.u32()?;
        let mut inline: Vec<(PageNo, Vec<u8>)> = Vec::new();
        for _ in 0..n {
            let raw = r.u32()?;
            let no = PageNo::new(raw)
                .filter(|no| no.get() <= page_count)
                .ok_or_else(|| corrupt(format!("inline page {raw} of {page_count}")))?;
            let len = r.u32()? as usize;
            if len == 0 || len > page_size.bytes() {
                return Err(corrupt(format!("inline page {raw} is {len} bytes")));
            }
            if inline.iter().any(|(m, _)| *m == no) {
                return Err(corrupt(format!("inline page {raw} twice")));
            }
            inline.push((no, r.take(len)?.to_vec()));
        }
        if r.at != bytes.len() {
            return Err(corrupt(format!(
                "{} bytes after the last inline page",
                bytes.len() - r.at
            )));
        }
        Ok(Head {
            page_size,
            page_count,
            txid,
            generation,
            inline,
            checksum,
            log,
            timestamp_ms,
            lineage,
        })
    }

    /// A head as a structured `meta` of formats 1 to 3 holds it.
    pub fn from_meta(meta: &Json) -> Result<(Head, u16), StoreError> {
        let bad = |why: &str| {
            StoreError::corrupt(format!("unsupported meta record ({why}): {}", shown(meta)))
        };
        let format = count_field(meta, "format", u64::MAX)?.ok_or_else(|| bad("no format"))?;
        match format {
            1..=3 => {}
            4 if meta.get("head").is_some() => {
                return Err(StoreError::corrupt(format!(
                    "\"meta\" says the head is in table {HEAD_TABLE}, which holds no head (or \
                     this storage has no table)"
                )));
            }
            4 => return Err(bad("format 4 lives in table dosql_head")),
            f => return Err(newer(u16::try_from(f).unwrap_or(u16::MAX))),
        }
        let format = format as u16;
        let mut head = old_fields(meta, format).map_err(|e| bad(e.message()))?;
        if let Some(page1) = meta.get("page1") {
            let value = bytes_of(page1).ok_or_else(|| bad("page1 is not bytes"))?;
            if format != 2 || head.page_count < 1 {
                return Err(bad("page1 outside format 2"));
            }
            head.inline.push((
                PageNo::FIRST,
                checked_value(value, head.page_size).map_err(|e| bad(e.message()))?,
            ));
        }
        if meta.get("inline").is_some() || meta.get("inline_nos").is_some() {
            if format != 3 {
                return Err(bad("inline pages before format 3"));
            }
            let values: Vec<Vec<u8>> = meta
                .get("inline")
                .and_then(Json::as_array)
                .ok_or_else(|| bad("inline is not a list"))?
                .iter()
                .map(|v| bytes_of(v).ok_or_else(|| bad("an inline value is not bytes")))
                .collect::<Result<_, _>>()?;
            attach_inline(&mut head, meta.get("inline_nos"), values)
                .map_err(|e| bad(e.message()))?;
        }
        Ok((head, format))
    }

    /// A head as SQLite-backed storage's row holds it: format 5 (the record in `inline`), or
    /// format 4 (JSON in `head`, values in `inline`).
    pub fn from_head_row(row: &HeadRow) -> Result<(Head, u16), StoreError> {
        let bad = |why: &str| {
            StoreError::corrupt(format!(
                "unsupported head row in {HEAD_TABLE} ({why}): {}",
                row.text.chars().take(200).collect::<String>()
            ))
        };
        let fields: Json = serde_json::from_str(&row.text).map_err(|_| bad("not JSON"))?;
        let format = count_field(&fields, "format", u64::MAX)
            .map_err(|e| bad(e.message()))?
            .ok_or_else(|| bad("no format"))?;
        match format {
            5 => {
                let record = row.blob.as_deref().ok_or_else(|| bad("no record"))?;
                Ok((Head::decode(record)?, 5))
            }
            4 => {
                let mut head = old_fields(&fields, 4).map_err(|e| bad(e.message()))?;
                match (fields.get("inline_lens"), &row.blob) {
                    (None, None) => {}
                    (Some(lens), Some(blob)) => {
                        let lens: Vec<usize> = lens
                            .as_array()
                            .ok_or_else(|| bad("inline_lens is not a list"))?
                            .iter()
                            .map(|n| {
                                n.as_u64()
                                    .map(|n| n as usize)
                                    .ok_or_else(|| bad("a length"))
                            })
                            .collect::<Result<_, _>>()?;
                        if lens.iter().sum::<usize>() != blob.len() {
                            return Err(bad("the inline lengths do not add up"));
                        }
                        let mut at = 0;
                        let values = lens
                            .iter()
                            .map(|&n| {
                                at += n;
                                blob[at - n..at].to_vec()
                            })
                            .collect();
                        attach_inline(&mut head, fields.get("inline_nos"), values)
                            .map_err(|e| bad(e.message()))?;
                    }
                    _ => {
                        return Err(bad(
                            "inline values without lengths, or lengths without values",
                        ));
                    }
                }
                Ok((head, 4))
            }
            1..=3 => Err(bad("a row holds format 4 or later")),
            f => Err(newer(u16::try_from(f).unwrap_or(u16::MAX))),
        }
    }

    /// The row that holds this head on SQLite-backed storage (format 5).
    pub fn to_head_row(&self) -> HeadRow {
        HeadRow {
            text: format!("{{\"format\":{HEAD_FORMAT}}}"),
            blob: Some(self.encode_with(FLAG_LOG_ROWS)),
        }
    }
}

/// What `meta` holds on SQLite-backed storage once the head is in [`HEAD_TABLE`]: releases
/// that predate the table refuse it (its format is one they do not know), and format 4
/// releases follow it to the table, whose format 5 row they refuse in turn.
pub fn pointer() -> Value {
    Value::Structured(json!({"format": 4, "head": HEAD_TABLE}))
}

/// Whether `meta` is the pointer to the head table.
pub fn is_pointer(meta: &Value) -> bool {
    matches!(meta, Value::Structured(j) if j.get("head").is_some() && j.get("format") == Some(&json!(4)))
}

/// What storage held as the head when it was read.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Loaded {
    /// The head (an empty one for a database never committed to).
    pub head: Head,
    /// The format it was stored in (0: nothing was stored).
    pub format: u16,
    /// SQLite-backed storage: whether `meta` already holds the pointer to the head table.
    pub pointer_stored: bool,
}

/// Reads the head from what storage holds: `row` (SQLite-backed storage's head row, if any)
/// and `meta` (the key's value, if any). A database never committed to gets an empty head of
/// `new_page_size`.
pub fn load(
    kind: StorageKind,
    row: Option<&HeadRow>,
    meta: Option<&Value>,
    new_page_size: PageSize,
) -> Result<Loaded, StoreError> {
    if kind == StorageKind::SqliteBacked
        && let Some(row) = row
    {
        let (head, format) = Head::from_head_row(row)?;
        // The first row was written together with the pointer.
        return Ok(Loaded {
            head,
            format,
            pointer_stored: true,
        });
    }
    let (head, format) = match meta {
        // Nothing stored yet: on SQLite-backed storage the first commit's pages are rows.
        None if kind == StorageKind::SqliteBacked => (
            Head {
                generation: Generation::FIRST_ROWS,
                ..Head::empty(new_page_size)
            },
            0,
        ),
        None => (Head::empty(new_page_size), 0),
        Some(Value::Structured(m)) => Head::from_meta(m)?,
        Some(Value::Bytes(b)) if kind == StorageKind::Classic => (Head::decode(b)?, HEAD_FORMAT),
        Some(Value::Bytes(_)) => {
            return Err(StoreError::corrupt(
                "\"meta\" holds a head record, which SQLite-backed storage keeps in its table: \
                 written by classic storage?",
            ));
        }
    };
    Ok(Loaded {
        head,
        format,
        pointer_stored: false,
    })
}

fn newer(format: u16) -> StoreError {
    StoreError::corrupt(format!(
        "head format {format}: written by a newer dosql (this release reads formats 1 to \
         {HEAD_FORMAT}); deploy that release again, nothing was changed"
    ))
}

/// The fields every earlier format has.
fn old_fields(m: &Json, format: u16) -> Result<Head, StoreError> {
    let size = count_field(m, "page_size", u32::MAX as u64)?
        .ok_or_else(|| StoreError::corrupt("no page_size"))?;
    let page_size = PageSize::new(size as u32)
        .ok_or_else(|| StoreError::corrupt(format!("page size {size}")))?;
    let page_count = count_field(m, "page_count", u32::MAX as u64)?
        .ok_or_else(|| StoreError::corrupt("no page_count"))? as u32;
    let txid =
        count_field(m, "txid", MAX_SAFE_INTEGER)?.ok_or_else(|| StoreError::corrupt("no txid"))?;
    let generation = match m.get("prefix") {
        None => Generation(0),
        Some(p) => Generation::from_prefix(
            p.as_str()
                .ok_or_else(|| StoreError::corrupt("prefix is not text"))?,
        )?,
    };
    let _ = format;
    Ok(Head {
        page_size,
        page_count,
        txid,
        generation,
        inline: Vec::new(),
        // No checksum yet: it is computed in the background, from page 1.
        checksum: DbChecksum::Partial {
            partial: checksum::EMPTY,
            cursor: 1,
        },
        log: LogWindow::empty(txid),
        timestamp_ms: 0,
        lineage: 0,
    })
}

fn checked_value(value: Vec<u8>, size: PageSize) -> Result<Vec<u8>, StoreError> {
    if value.is_empty() || value.len() > size.bytes() {
        return Err(StoreError::corrupt(format!(
            "an inline value is {} bytes, page size {size}",
            value.len()
        )));
    }
    Ok(value)
}

fn attach_inline(
    head: &mut Head,
    nos: Option<&Json>,
    values: Vec<Vec<u8>>,
) -> Result<(), StoreError> {
    let nos = nos
        .and_then(Json::as_array)
        .ok_or_else(|| StoreError::corrupt("inline_nos is not a list"))?;
    if nos.len() != values.len() {
        return Err(StoreError::corrupt(
            "inline_nos and the values differ in number",
        ));
    }
    for (n, value) in nos.iter().zip(values) {
        let no = n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .and_then(PageNo::new)
            .filter(|no| no.get() <= head.page_count)
            .ok_or_else(|| StoreError::corrupt(format!("inline page number {n}")))?;
        if head.inline.iter().any(|(m, _)| *m == no) {
            return Err(StoreError::corrupt(format!("inline page {no} twice")));
        }
        head.inline
            .push((no, checked_value(value, head.page_size)?));
    }
    Ok(())
}

/// A record shown in an error: binary parts as their lengths, at most 300 characters.
fn shown(v: &Json) -> String {
    fn lens(v: &Json) -> Json {
        if let Some(b) = bytes_of(v) {
            return json!(format!("<{} bytes>", b.len()));
        }
        match v {
            Json::Array(a) => Json::Array(a.iter().map(lens).collect()),
            Json::Object(o) => Json::Object(o.iter().map(|(k, x)| (k.clone(), lens(x))).collect()),
            x => x.clone(),
        }
    }
    lens(v).to_string().chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no(n: u32) -> PageNo {
        PageNo::new(n).unwrap()
    }

    fn sample() -> Head {
        Head {
            page_size: PageSize::new(4096).unwrap(),
            page_count: 9,
            txid: 1 << 40,
            generation: Generation(3),
            inline: vec![(no(7), vec![1, 2, 3]), (no(1), vec![9; 4096])],
            checksum: DbChecksum::Partial {
                partial: checksum::FLAG | 77,
                cursor: 5,
            },
            log: LogWindow {
                oldest: (1 << 40) - 9,
                floor: (1 << 40) - 20,
                bytes: 12_345,
            },
            timestamp_ms: 1_765_000_000_000,
            lineage: 0xfeed,
        }
    }

    #[test]
    fn the_head_statements_name_the_head_table() {
        for sql in [HEAD_CREATE_SQL, HEAD_SELECT_SQL, HEAD_UPSERT_SQL] {
            assert!(sql.contains(&format!(" {HEAD_TABLE}")), "{sql}");
        }
        assert_eq!(HEAD_UPSERT_SQL.matches('?').count(), 2);
    }

    #[test]
    fn format_5_round_trips_and_its_bytes_are_pinned() {
        let h = sample();
        assert_eq!(Head::decode(&h.encode()).unwrap(), h);
        let empty = Head::empty(PageSize::new(512).unwrap()).encode();
        let mut want = vec![b'd', b'q', b'h', b'd', 5, 0, 1, 0, 0, 2, 0, 0];
        want.extend_from_slice(&[0; 4 + 8 + 4 + 4]); // count, txid, generation, cursor
        want.extend_from_slice(&checksum::EMPTY.to_le_bytes());
        want.extend_from_slice(&1u64.to_le_bytes()); // log oldest: txid + 1
        want.extend_from_slice(&1u64.to_le_bytes()); // log floor
        want.extend_from_slice(&[0; 8 + 8 + 8 + 4]); // bytes, timestamp, lineage, n
        assert_eq!(empty, want);
        let known = Head {
            checksum: DbChecksum::Known(checksum::FLAG | 5),
            ..sample()
        };
        assert_eq!(Head::decode(&known.encode()).unwrap(), known);
        let row = h.to_head_row();
        assert_eq!(row.text, r#"{"format":5}"#);
        // On SQLite-backed storage the record says the log is in rows (flag bit 1), so that
        // releases reading it from kv keys refuse the database; classic's does not.
        let blob = row.blob.clone().unwrap();
        assert_eq!(blob[6] & 2, 2);
        assert_eq!(h.encode()[6] & 2, 0);
        assert_eq!(Head::from_head_row(&row).unwrap(), (h, 5));
    }

    #[test]
    fn a_row_generation_sets_the_page_rows_flag_on_both_kinds() {
        let h = Head {
            generation: Generation::FIRST_ROWS,
            ..sample()
        };
        let record = h.encode();
        assert_eq!(record[6] & 4, 4);
        assert_eq!(Head::decode(&record).unwrap(), h);
        let row = h.to_head_row();
        assert_eq!(row.blob.as_ref().unwrap()[6] & 6, 6);
        assert_eq!(Head::from_head_row(&row).unwrap(), (h, 5));
        assert_eq!(sample().encode()[6] & 4, 0);
    }

    #[test]
    fn records_this_code_does_not_know_are_refused() {
        let good = sample().encode();
        let mut newer_format = good.clone();
        newer_format[4] = 6;
        let mut flagged = good.clone();
        flagged[6] = 8; // bit 3: unknown
        let mut rows_flag = good.clone();
        rows_flag[6] |= 4; // page rows, on generation 3
        let mut rows_unflagged = Head {
            generation: Generation::FIRST_ROWS,
            ..sample()
        }
        .encode();
        rows_unflagged[6] &= !4;
        let mut cut = good.clone();
        cut.pop();
        let mut long = good.clone();
        long.push(0);
        let mut bad_page = good.clone();
        bad_page[84] = 10; // inline page 10 of 9
        let mut no_flag = good.clone();
        no_flag[39] = 0; // a checksum without bit 63
        let mut window = good.clone();
        window[48..56].copy_from_slice(&u64::MAX.to_le_bytes()); // floor above oldest
        let mut zero_len = Head {
            inline: vec![(no(1), vec![])],
            ..sample()
        }
        .encode();
        zero_len[0] = b'd';
        for (bad, what) in [
            (newer_format, "newer"),
            (flagged, "flags"),
            (rows_flag, "page rows flag"),
            (rows_unflagged, "page rows flag"),
            (cut, "cut short"),
            (long, "after the last"),
            (bad_page, "inline page 10"),
            (no_flag, "checksum"),
            (window, "log window"),
            (zero_len, "0 bytes"),
            (b"dqhd\x05\x00".to_vec(), "cut short"),
            (vec![], "magic"),
        ] {
            let e = Head::decode(&bad).unwrap_err();
            assert!(e.message().contains(what), "{what}: {e}");
        }
        let e = Head::from_head_row(&HeadRow {
            text: r#"{"format":6}"#.into(),
            blob: None,
        })
        .unwrap_err();
        assert!(e.message().contains("newer dosql"), "{e}");
        let e = Head::from_meta(&json!({"format": 7, "page_size": 4096})).unwrap_err();
        assert!(e.message().contains("newer dosql"), "{e}");
    }

    #[test]
    fn formats_1_to_4_read() {
        let b = |bytes: &[u8]| json!({"$bytes": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)});
        let (h, f) =
            Head::from_meta(&json!({"format": 1, "page_size": 1024, "page_count": 3, "txid": 5}))
                .unwrap();
        assert_eq!(
            (f, h.page_count, h.txid, h.generation, h.inline.len()),
            (1, 3, 5, Generation(0), 0)
        );
        let (h, f) = Head::from_meta(&json!({"format": 2, "page_size": 1024, "page_count": 3, "txid": 5, "prefix": "g2:p:", "page1": b(&[7; 100])})).unwrap();
        assert_eq!(
            (f, h.generation, h.inline.clone()),
            (2, Generation(2), vec![(no(1), vec![7; 100])])
        );
        let (h, f) = Head::from_meta(&json!({"format": 3, "page_size": 4096, "page_count": 3, "txid": 5, "inline_nos": [3, 1], "inline": [b(&[3]), b(&[1, 1])]})).unwrap();
        assert_eq!(
            (f, h.inline.clone()),
            (3, vec![(no(3), vec![3]), (no(1), vec![1, 1])])
        );
        let row = HeadRow { text: r#"{"format":4,"page_size":4096,"page_count":2,"txid":3,"inline_nos":[1,2],"inline_lens":[2,1]}"#.into(), blob: Some(vec![1, 1, 2]) };
        let (h, f) = Head::from_head_row(&row).unwrap();
        assert_eq!(
            (f, h.txid, h.inline.clone()),
            (4, 3, vec![(no(1), vec![1, 1]), (no(2), vec![2])])
        );
    }

    #[test]
    fn earlier_records_that_do_not_add_up_are_refused() {
        let b = |n: usize| json!({"$bytes": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, vec![1u8; n])});
        for bad in [
            json!({"page_size": 4096, "page_count": 1, "txid": 1}),
            json!({"format": 3, "page_size": 4000, "page_count": 1, "txid": 1}),
            json!({"format": 3, "page_size": 4096, "page_count": -1, "txid": 1}),
            json!({"format": 3, "page_size": 4096, "page_count": 1, "txid": 9007199254740992u64}),
            json!({"format": 3, "page_size": 4096, "page_count": 1, "txid": 1, "prefix": "x:"}),
            json!({"format": 3, "page_size": 4096, "page_count": 1, "txid": 1, "page1": b(10)}),
            json!({"format": 2, "page_size": 4096, "page_count": 0, "txid": 1, "page1": b(10)}),
            json!({"format": 2, "page_size": 4096, "page_count": 1, "txid": 1, "inline_nos": [1], "inline": [b(1)]}),
            json!({"format": 3, "page_size": 4096, "page_count": 1, "txid": 1, "inline_nos": [2], "inline": [b(1)]}),
            json!({"format": 3, "page_size": 4096, "page_count": 2, "txid": 1, "inline_nos": [1, 1], "inline": [b(1), b(1)]}),
            json!({"format": 3, "page_size": 4096, "page_count": 2, "txid": 1, "inline_nos": [1], "inline": [b(4097)]}),
            json!({"format": 3, "page_size": 4096, "page_count": 2, "txid": 1, "inline_nos": [1, 2], "inline": [b(1)]}),
            json!({"format": 4, "head": "dosql_head"}),
        ] {
            assert!(Head::from_meta(&bad).is_err(), "{bad}");
        }
        for (text, blob) in [
            (
                r#"{"format":4,"page_size":4096,"page_count":2,"txid":3,"inline_nos":[1],"inline_lens":[5]}"#,
                Some(vec![1u8; 4]),
            ),
            (
                r#"{"format":4,"page_size":4096,"page_count":2,"txid":3}"#,
                Some(vec![1u8]),
            ),
            (
                r#"{"format":3,"page_size":4096,"page_count":2,"txid":3}"#,
                None,
            ),
            (r#"{"format":5}"#, None),
            ("not json", None),
        ] {
            let row = HeadRow {
                text: text.into(),
                blob,
            };
            assert!(Head::from_head_row(&row).is_err(), "{text}");
        }
    }

    #[test]
    fn load_follows_the_storage_kind() {
        let size = PageSize::DEFAULT;
        let fresh = load(StorageKind::SqliteBacked, None, None, size).unwrap();
        assert_eq!(
            (fresh.format, fresh.head.txid, fresh.pointer_stored),
            (0, 0, false)
        );
        // A new database's pages are rows on SQLite-backed storage, keys on classic.
        assert_eq!(fresh.head.generation, Generation::FIRST_ROWS);
        let classic = load(StorageKind::Classic, None, None, size).unwrap();
        assert_eq!(classic.head.generation, Generation(0));
        let row = sample().to_head_row();
        let l = load(
            StorageKind::SqliteBacked,
            Some(&row),
            Some(&pointer()),
            size,
        )
        .unwrap();
        assert_eq!((l.format, l.pointer_stored), (5, true));
        // The pointer without its row, and a classic record on SQLite-backed storage.
        assert!(load(StorageKind::SqliteBacked, None, Some(&pointer()), size).is_err());
        let bytes = Value::Bytes(sample().encode());
        assert!(load(StorageKind::SqliteBacked, None, Some(&bytes), size).is_err());
        let l = load(StorageKind::Classic, None, Some(&bytes), size).unwrap();
        assert_eq!(l.head, sample());
        assert!(load(StorageKind::Classic, None, Some(&pointer()), size).is_err());
        assert!(is_pointer(&pointer()));
    }
}
