//! The bytes that cross between the wasm and its host (worker/src/kv.ts) for storage: a read
//! request, its response, and a write plan. The host only moves bytes: it reads the keys it is
//! given, issues the writes it is given and checks them against the limits the request states;
//! this module and the layout decide all of it (keys, the head table's SQL, the limits), so
//! that nothing about the layout is decided twice. All integers little-endian. Two reads of
//! SQLite-backed storage skip the request's framing (crates/wasm's imports `kv_row`, a page's
//! row by [`page_row`], and `kv_head`, whose answer is a read response as below).
//!
//! ```text
//! limits:         u16 keys per call, u16 bytes per key, u32 bytes per value (serialized
//!                 framing already subtracted)
//! read request:   limits, u32 n, then n × [u8 what, u16 length, string, …]
//!                   what 0: a key; 1: the head row, the string being the SELECT that reads it;
//!                   2: a row (SQLite-backed storage: a commit log record or a page): the
//!                      SELECT that reads it (one parameter, one column named `record`), then
//!                      u64 its id, then u16 length, the key a log record was stored under
//!                      before log rows (read when there is no row; empty for a page: none)
//! read response:  n × [u8 tag, payload]
//!                   tag 0 absent; 1 bytes: u32 length, bytes;
//!                   2 structured: u32 length, JSON (an ArrayBuffer inside as {"$bytes": base64});
//!                   3 head row: u32 text length, text, u8 has blob, [u32 length, blob]
//! write plan:     u8 flags (bit 0: a commit, i.e. it writes the head), u16 pages carried
//!                 inside the head, u16 pages moved out of it (both counters only), limits,
//!                 u32 n, then n × [u8 op, …]
//!                   op 1 put bytes: u16 key length, key, u32 length, bytes
//!                   op 2 put structured: u16 key length, key, u32 length, JSON
//!                   op 3 delete: u16 key length, key
//!                   op 4 head row: u16 length, CREATE TABLE statement, u16 length, the
//!                        statement writing the row (parameters: text, blob), u32 text length,
//!                        text, u8 has blob, [u32 length, blob]
//!                   op 5 row (a log record or a page): u16 length, CREATE TABLE statement,
//!                        u16 length, the statement writing the row (parameters: id, blob),
//!                        u64 id, u32 length, blob
//!                   op 6 row delete: u16 length, the statement (parameter: id), u64 id, u16
//!                        key length, key (deleted too: where earlier releases kept a log
//!                        record; empty for a page: none)
//! ```
//!
//! The host issues puts and deletes in calls of at most "keys per call" keys, in the order
//! given, then the rows, and refuses (writing nothing) a plan with a key or value over the
//! limits.
//!
//! On SQLite-backed storage the commit log's records and parts ([`Key::Log`],
//! [`Key::LogPart`]) are rows of the rowid table [`LOG_TABLE`], written through `storage.sql`
//! in the same synchronous stretch as the head row: a kv key goes into workerd's WITHOUT
//! ROWID table, where each commit's extra key cost W3 about 13% (bench/README.md); a row of a
//! rowid table costs nothing measurable. The head says so (`head`'s flag bit 1), so that
//! releases that read the log from kv keys refuse such a database. Records earlier releases
//! stored under their keys are read from there while no row has their id, and deleted from
//! both.
//!
//! Pages of a row generation (`keys::Generation::page_rows`) are rows of [`PAGE_TABLE`] on
//! SQLite-backed storage, for reads more than writes: a cold object's first query reads the
//! head row and a few pages, and workerd's kv table keeps a value over ~1 KB as a 489-byte
//! cell plus an overflow page (two reads from disk), where a rowid table's leaf holds a 4 KB
//! page's compressed value whole; a kv value is also a V8-serialized copy, a row's blob is
//! not. Measured: 4 cold reads of 2 KiB values from 25,000, 1.42 ms of workerd's CPU as kv
//! keys against 1.20 ms as rows (bench/README.md). The head's flag bit 2 says a generation is
//! one, so releases that read pages from kv keys refuse such a database. A generation's pages
//! are all rows or all keys, so a read has no fallback.

use crate::bytes::Reader;
use dosql_pagestore::StoreError;

use crate::head::{HEAD_CREATE_SQL, HEAD_SELECT_SQL, HEAD_UPSERT_SQL};
use crate::keys::Key;
use crate::plan::WritePlan;
use crate::value::{HeadRow, Limits, StorageKind, VALUE_OVERHEAD_BYTES, Value};

/// One item of a read request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Read {
    /// A key's value.
    Key(Key),
    /// SQLite-backed storage's head row.
    HeadRow,
}

/// One item of a read response.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Answer {
    /// A key's value, or `None`.
    Value(Option<Value>),
    /// The head row, or `None`.
    HeadRow(Option<HeadRow>),
}

const TAG_ABSENT: u8 = 0;
const TAG_BYTES: u8 = 1;
const TAG_STRUCTURED: u8 = 2;
const TAG_ROW: u8 = 3;
const OP_PUT: u8 = 1;
const OP_PUT_STRUCTURED: u8 = 2;
const OP_DELETE: u8 = 3;
const OP_HEAD_ROW: u8 = 4;
const OP_ROW: u8 = 5;
const OP_ROW_DELETE: u8 = 6;

/// The commit log's table on SQLite-backed storage (see the module docs).
pub const LOG_TABLE: &str = "dosql_log";
/// Creates [`LOG_TABLE`].
pub const LOG_CREATE_SQL: &str =
    "CREATE TABLE IF NOT EXISTS dosql_log(id INTEGER PRIMARY KEY, record BLOB NOT NULL)";
/// Writes a row (parameters: id, record).
pub const LOG_UPSERT_SQL: &str = "INSERT OR REPLACE INTO dosql_log(id, record) VALUES (?, ?)";
/// Reads a row (parameter: id); the host answers no row when the table does not exist.
pub const LOG_SELECT_SQL: &str = "SELECT record FROM dosql_log WHERE id = ?";
/// Deletes a row (parameter: id).
pub const LOG_DELETE_SQL: &str = "DELETE FROM dosql_log WHERE id = ?";

/// The pages of row generations on SQLite-backed storage (see the module docs).
pub const PAGE_TABLE: &str = "dosql_pages";
/// Creates [`PAGE_TABLE`].
pub const PAGE_CREATE_SQL: &str =
    "CREATE TABLE IF NOT EXISTS dosql_pages(id INTEGER PRIMARY KEY, value BLOB NOT NULL)";
/// Writes a page's row (parameters: id, stored value).
pub const PAGE_UPSERT_SQL: &str = "INSERT OR REPLACE INTO dosql_pages(id, value) VALUES (?, ?)";
/// Reads a page's row (parameter: id) as the host reads rows: one column named `record`.
pub const PAGE_SELECT_SQL: &str = "SELECT value AS record FROM dosql_pages WHERE id = ?";
/// Deletes a page's row (parameter: id).
pub const PAGE_DELETE_SQL: &str = "DELETE FROM dosql_pages WHERE id = ?";

/// Ids a JavaScript number holds exactly (2^53 - 1): the host reads them as numbers.
const MAX_ROW_ID: u64 = (1 << 53) - 1;

/// The row id of a log key on storage of `kind`: txid × 10^6 + part (the record itself is
/// part 0; parts are at most [`crate::keys::MAX_LOG_PARTS`]), so that a record's rows sort
/// with it in commit order. `None`: not a log key, classic storage, or a txid too large for
/// an exact id (over 9 × 10^9 commits: the record stays under its key).
pub fn log_row_id(kind: StorageKind, k: &Key) -> Option<u64> {
    if kind != StorageKind::SqliteBacked {
        return None;
    }
    let (txid, part) = match *k {
        Key::Log(t) => (t, 0),
        Key::LogPart(t, p) => (t, u64::from(p)),
        _ => return None,
    };
    txid.checked_mul(1_000_000)
        .and_then(|i| i.checked_add(part))
        .filter(|&id| id <= MAX_ROW_ID)
}

/// Where a key lives when it is a row of a table of SQLite-backed storage.
struct RowHome {
    create: &'static str,
    upsert: &'static str,
    select: &'static str,
    delete: &'static str,
    id: u64,
    /// The key earlier releases kept it under, read when there is no row and deleted with
    /// it (log records); none for a page.
    fallback: Option<Key>,
}

fn row_of(kind: StorageKind, k: &Key) -> Option<RowHome> {
    if let Key::Page(g, no) = *k {
        if kind != StorageKind::SqliteBacked {
            return None;
        }
        return g.row_id(no).map(|id| RowHome {
            create: PAGE_CREATE_SQL,
            upsert: PAGE_UPSERT_SQL,
            select: PAGE_SELECT_SQL,
            delete: PAGE_DELETE_SQL,
            id,
            fallback: None,
        });
    }
    log_row_id(kind, k).map(|id| RowHome {
        create: LOG_CREATE_SQL,
        upsert: LOG_UPSERT_SQL,
        select: LOG_SELECT_SQL,
        delete: LOG_DELETE_SQL,
        id,
        fallback: Some(*k),
    })
}

/// A page key's row on storage of `kind`, as `(SELECT, id)`, when its generation's pages are
/// rows: the read the host answers through its one-row import (`kv_row`, crates/wasm's abi),
/// with none of a read request's framing. A page has no key to fall back to, so the host's
/// answer is the row's blob or nothing. `None`: not a page, a key generation, or classic
/// storage (a read request reads it).
pub fn page_row(kind: StorageKind, k: &Key) -> Option<(&'static str, u64)> {
    match *k {
        Key::Page(..) => row_of(kind, k).map(|row| (row.select, row.id)),
        _ => None,
    }
}

fn fallback_key(out: &mut Vec<u8>, row: &RowHome) {
    match &row.fallback {
        Some(k) => key(out, k),
        None => short(out, ""),
    }
}

/// Encodes a read request to storage of `kind`.
pub fn read_request(kind: StorageKind, items: &[Read]) -> Vec<u8> {
    // A key item is about 25 bytes, a row item (its SELECT) about 65.
    let mut out = Vec::with_capacity(12 + items.len() * 72);
    limits(&mut out, kind.limits());
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for item in items {
        match item {
            Read::Key(k) => match row_of(kind, k) {
                Some(row) => {
                    out.push(2);
                    short(&mut out, row.select);
                    out.extend_from_slice(&row.id.to_le_bytes());
                    fallback_key(&mut out, &row);
                }
                None => {
                    out.push(0);
                    key(&mut out, k);
                }
            },
            Read::HeadRow => {
                out.push(1);
                short(&mut out, HEAD_SELECT_SQL);
            }
        }
    }
    out
}

fn limits(out: &mut Vec<u8>, l: Limits) {
    // The production limits fit these widths (value.rs pins them); saturate rather than wrap.
    let narrow = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
    out.extend_from_slice(&narrow(l.max_keys_per_call).to_le_bytes());
    out.extend_from_slice(&narrow(l.max_key_bytes).to_le_bytes());
    let value = l.max_value_bytes.saturating_sub(VALUE_OVERHEAD_BYTES);
    out.extend_from_slice(&u32::try_from(value).unwrap_or(u32::MAX).to_le_bytes());
}

/// Decodes the response to a request of `n` items.
pub fn read_response(bytes: &[u8], n: usize) -> Result<Vec<Answer>, StoreError> {
    let mut r = Reader::new(
        bytes,
        0,
        "the host's answer",
        dosql_pagestore::ErrorKind::Read,
    );
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(match r.u8()? {
            TAG_ABSENT => Answer::Value(None),
            TAG_BYTES => Answer::Value(Some(Value::Bytes(r.sized()?.to_vec()))),
            TAG_STRUCTURED => {
                let json = serde_json::from_slice(r.sized()?).map_err(|e| {
                    StoreError::read(format!("a structured value from the host: {e}"))
                })?;
                Answer::Value(Some(Value::Structured(json)))
            }
            TAG_ROW => Answer::HeadRow(Some(row(&mut r)?)),
            t => return Err(StoreError::read(format!("the host answered tag {t}"))),
        });
    }
    if r.at != bytes.len() {
        return Err(StoreError::read("the host's answer is longer than asked"));
    }
    Ok(out)
}

/// Encodes the response to a read request, as the host does (in the wasm, the warm-up's
/// storage in memory answers with it, so that the answer takes the decoding path of a real
/// one). A head row's absence is encoded as the host encodes it: tag 0.
pub fn response(answers: &[Answer]) -> Vec<u8> {
    let mut out = Vec::new();
    for a in answers {
        match a {
            Answer::Value(None) | Answer::HeadRow(None) => out.push(TAG_ABSENT),
            Answer::Value(Some(Value::Bytes(b))) => {
                out.push(TAG_BYTES);
                sized(&mut out, b);
            }
            Answer::Value(Some(Value::Structured(j))) => {
                out.push(TAG_STRUCTURED);
                sized(&mut out, j.to_string().as_bytes());
            }
            Answer::HeadRow(Some(r)) => {
                out.push(TAG_ROW);
                sized(&mut out, r.text.as_bytes());
                match &r.blob {
                    None => out.push(0),
                    Some(b) => {
                        out.push(1);
                        sized(&mut out, b);
                    }
                }
            }
        }
    }
    out
}

/// Encodes a write plan for storage of `kind` (with its notes, for the host's counters).
pub fn plan(kind: StorageKind, plan: &WritePlan) -> Vec<u8> {
    let notes = plan.notes;
    let n = plan.puts.len() + plan.deletes.len() + usize::from(plan.head_row.is_some());
    let mut out = Vec::with_capacity(plan_capacity(kind, plan));
    out.push(u8::from(notes.commit));
    out.extend_from_slice(&notes.inline_pages.to_le_bytes());
    out.extend_from_slice(&notes.evicted_pages.to_le_bytes());
    limits(&mut out, kind.limits());
    out.extend_from_slice(&(n as u32).to_le_bytes());
    for (k, v) in &plan.puts {
        match (v, row_of(kind, k)) {
            (Value::Bytes(b), Some(row)) => {
                out.push(OP_ROW);
                short(&mut out, row.create);
                short(&mut out, row.upsert);
                out.extend_from_slice(&row.id.to_le_bytes());
                sized(&mut out, b);
            }
            (Value::Bytes(b), None) => {
                out.push(OP_PUT);
                key(&mut out, k);
                sized(&mut out, b);
            }
            (Value::Structured(j), _) => {
                out.push(OP_PUT_STRUCTURED);
                key(&mut out, k);
                sized(&mut out, j.to_string().as_bytes());
            }
        }
    }
    for k in &plan.deletes {
        match row_of(kind, k) {
            Some(row) => {
                out.push(OP_ROW_DELETE);
                short(&mut out, row.delete);
                out.extend_from_slice(&row.id.to_le_bytes());
                fallback_key(&mut out, &row);
            }
            None => {
                out.push(OP_DELETE);
                key(&mut out, k);
            }
        }
    }
    if let Some(r) = &plan.head_row {
        out.push(OP_HEAD_ROW);
        short(&mut out, HEAD_CREATE_SQL);
        short(&mut out, HEAD_UPSERT_SQL);
        sized(&mut out, r.text.as_bytes());
        match &r.blob {
            None => out.push(0),
            Some(b) => {
                out.push(1);
                sized(&mut out, b);
            }
        }
    }
    out
}

/// At least the bytes [`plan`] encodes: a plan can be most of the memory budget, and growing
/// its buffer would double it.
fn plan_capacity(kind: StorageKind, plan: &WritePlan) -> usize {
    // Keys are at most 24 bytes ("g4294967295:p:" and 10 digits; a log part's is 29).
    const KEY: usize = 32;
    let puts: usize = plan
        .puts
        .iter()
        .map(|(k, v)| {
            v.stored_len()
                + match row_of(kind, k) {
                    Some(row) => 17 + row.create.len() + row.upsert.len(),
                    None => 7 + KEY,
                }
        })
        .sum();
    let delete = 13 + PAGE_DELETE_SQL.len().max(LOG_DELETE_SQL.len()) + KEY;
    let head = plan.head_row.as_ref().map_or(0, |r| {
        14 + HEAD_CREATE_SQL.len() + HEAD_UPSERT_SQL.len() + r.stored_len()
    });
    17 + puts + plan.deletes.len() * delete + head
}

fn key(out: &mut Vec<u8>, k: &Key) {
    short(out, &k.encode());
}

/// A string of at most 64 KiB (keys are at most 2 KiB; the statements are constants).
fn short(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn sized(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn row(r: &mut Reader<'_>) -> Result<HeadRow, StoreError> {
    let text = String::from_utf8(r.sized()?.to_vec())
        .map_err(|_| StoreError::read("the head row's text is not UTF-8"))?;
    let blob = match r.u8()? {
        0 => None,
        _ => Some(r.sized()?.to_vec()),
    };
    Ok(HeadRow { text, blob })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Generation;
    use crate::plan::PlanNotes;
    use dosql_pagestore::PageNo;
    use serde_json::json;

    #[test]
    fn requests_and_plans_have_pinned_bytes() {
        let req = read_request(
            StorageKind::SqliteBacked,
            &[Read::Key(Key::Meta), Read::HeadRow],
        );
        // 128 keys per call, 2048 bytes per key, 2,000,000 - 64 bytes per value.
        let mut want = vec![128, 0, 0, 8, 0x40, 0x84, 0x1e, 0];
        want.extend_from_slice(&[2, 0, 0, 0, 0, 4, 0, b'm', b'e', b't', b'a', 1]);
        want.extend_from_slice(&(HEAD_SELECT_SQL.len() as u16).to_le_bytes());
        want.extend_from_slice(HEAD_SELECT_SQL.as_bytes());
        assert_eq!(req, want);
        let p = WritePlan {
            puts: vec![(
                Key::Page(Generation(0), PageNo::new(2).unwrap()),
                Value::Bytes(vec![7, 8]),
            )],
            deletes: vec![Key::Transfer],
            head_row: Some(HeadRow {
                text: "{}".into(),
                blob: None,
            }),
            notes: PlanNotes {
                commit: true,
                inline_pages: 3,
                evicted_pages: 0,
            },
        };
        // Flags, 3 pages inline, none evicted, classic's limits (131072 - 64 bytes per value).
        let mut want = vec![1, 3, 0, 0, 0, 128, 0, 0, 8, 0xc0, 0xff, 1, 0, 3, 0, 0, 0];
        want.extend_from_slice(&[1, 12, 0]);
        want.extend_from_slice(b"p:0000000002");
        want.extend_from_slice(&[2, 0, 0, 0, 7, 8]);
        want.extend_from_slice(&[3, 8, 0]);
        want.extend_from_slice(b"transfer");
        want.push(4);
        for sql in [HEAD_CREATE_SQL, HEAD_UPSERT_SQL] {
            want.extend_from_slice(&(sql.len() as u16).to_le_bytes());
            want.extend_from_slice(sql.as_bytes());
        }
        want.extend_from_slice(&[2, 0, 0, 0, b'{', b'}', 0]);
        assert_eq!(plan(StorageKind::Classic, &p), want);
    }

    #[test]
    fn log_records_are_rows_on_sqlite_backed_storage_only() {
        let rec = Key::Log(42);
        let part = Key::LogPart(42, 3);
        let sqlite = StorageKind::SqliteBacked;
        assert_eq!(log_row_id(sqlite, &rec), Some(42_000_000));
        assert_eq!(log_row_id(sqlite, &part), Some(42_000_003));
        assert_eq!(log_row_id(StorageKind::Classic, &rec), None);
        assert_eq!(log_row_id(sqlite, &Key::Meta), None);
        // Ids stay exact in a JavaScript number; past that, the record keeps its key.
        assert_eq!(log_row_id(sqlite, &Key::Log(9_007_199_255)), None);
        assert_eq!(
            log_row_id(sqlite, &Key::LogPart(9_007_199_254, 999_999)),
            None
        );
        assert_eq!(
            log_row_id(sqlite, &Key::LogPart(9_007_199_254, 740_991)),
            Some((1 << 53) - 1)
        );
        // Row ids sort as the keys do: a record, its parts, the next record.
        let ids: Vec<u64> = [
            Key::Log(7),
            Key::LogPart(7, 1),
            Key::LogPart(7, 999_999),
            Key::Log(8),
        ]
        .iter()
        .map(|k| log_row_id(sqlite, k).unwrap())
        .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

        let req = read_request(sqlite, &[Read::Key(rec)]);
        let mut want = vec![128, 0, 0, 8, 0x40, 0x84, 0x1e, 0, 1, 0, 0, 0, 2];
        want.extend_from_slice(&(LOG_SELECT_SQL.len() as u16).to_le_bytes());
        want.extend_from_slice(LOG_SELECT_SQL.as_bytes());
        want.extend_from_slice(&42_000_000u64.to_le_bytes());
        want.extend_from_slice(&[22, 0]);
        want.extend_from_slice(b"l:00000000000000000042");
        assert_eq!(req, want);
        let p = WritePlan {
            puts: vec![(part, Value::Bytes(vec![9]))],
            deletes: vec![rec],
            head_row: None,
            notes: PlanNotes::default(),
        };
        let mut want = vec![
            0, 0, 0, 0, 0, 128, 0, 0, 8, 0x40, 0x84, 0x1e, 0, 2, 0, 0, 0, 5,
        ];
        for sql in [LOG_CREATE_SQL, LOG_UPSERT_SQL] {
            want.extend_from_slice(&(sql.len() as u16).to_le_bytes());
            want.extend_from_slice(sql.as_bytes());
        }
        want.extend_from_slice(&42_000_003u64.to_le_bytes());
        want.extend_from_slice(&[1, 0, 0, 0, 9, 6]);
        want.extend_from_slice(&(LOG_DELETE_SQL.len() as u16).to_le_bytes());
        want.extend_from_slice(LOG_DELETE_SQL.as_bytes());
        want.extend_from_slice(&42_000_000u64.to_le_bytes());
        want.extend_from_slice(&[22, 0]);
        want.extend_from_slice(b"l:00000000000000000042");
        assert_eq!(plan(sqlite, &p), want);
        // Classic storage: keys as before.
        assert_eq!(read_request(StorageKind::Classic, &[Read::Key(rec)])[12], 0);
    }

    #[test]
    fn pages_of_row_generations_are_rows_on_sqlite_backed_storage_only() {
        let sqlite = StorageKind::SqliteBacked;
        let no = PageNo::new(3).unwrap();
        let rows = Key::Page(Generation::FIRST_ROWS, no);
        let keys = Key::Page(Generation(0), no);
        for sql in [
            PAGE_CREATE_SQL,
            PAGE_UPSERT_SQL,
            PAGE_SELECT_SQL,
            PAGE_DELETE_SQL,
        ] {
            assert!(sql.contains(&format!(" {PAGE_TABLE}")), "{sql}");
        }
        // The host reads a row's column `record`.
        assert!(PAGE_SELECT_SQL.starts_with("SELECT value AS record "));
        let req = read_request(sqlite, &[Read::Key(rows)]);
        let mut want = vec![128, 0, 0, 8, 0x40, 0x84, 0x1e, 0, 1, 0, 0, 0, 2];
        want.extend_from_slice(&(PAGE_SELECT_SQL.len() as u16).to_le_bytes());
        want.extend_from_slice(PAGE_SELECT_SQL.as_bytes());
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(&[0, 0]); // no key to fall back to
        assert_eq!(req, want);
        let p = WritePlan {
            puts: vec![(rows, Value::Bytes(vec![9]))],
            deletes: vec![Key::Page(Generation(Generation::FIRST_ROWS.0 + 1), no)],
            head_row: None,
            notes: PlanNotes::default(),
        };
        let mut want = vec![
            0, 0, 0, 0, 0, 128, 0, 0, 8, 0x40, 0x84, 0x1e, 0, 2, 0, 0, 0, 5,
        ];
        for sql in [PAGE_CREATE_SQL, PAGE_UPSERT_SQL] {
            want.extend_from_slice(&(sql.len() as u16).to_le_bytes());
            want.extend_from_slice(sql.as_bytes());
        }
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(&[1, 0, 0, 0, 9, 6]);
        want.extend_from_slice(&(PAGE_DELETE_SQL.len() as u16).to_le_bytes());
        want.extend_from_slice(PAGE_DELETE_SQL.as_bytes());
        want.extend_from_slice(&((1u64 << 32) + 3).to_le_bytes());
        want.extend_from_slice(&[0, 0]);
        assert_eq!(plan(sqlite, &p), want);
        // Generations of kv keys, and classic storage: keys as before.
        assert_eq!(read_request(sqlite, &[Read::Key(keys)])[12], 0);
        assert_eq!(
            read_request(StorageKind::Classic, &[Read::Key(rows)])[12],
            0
        );
        let classic = plan(
            StorageKind::Classic,
            &WritePlan {
                puts: vec![(rows, Value::Bytes(vec![9]))],
                ..WritePlan::default()
            },
        );
        assert_eq!(classic[17], OP_PUT);
    }

    #[test]
    fn a_page_row_is_the_read_requests_row_without_its_framing() {
        let sqlite = StorageKind::SqliteBacked;
        let no = PageNo::new(3).unwrap();
        let next = Generation(Generation::FIRST_ROWS.0 + 1);
        assert_eq!(
            page_row(sqlite, &Key::Page(next, no)),
            Some((PAGE_SELECT_SQL, (1 << 32) + 3))
        );
        // The same SELECT and id a read request names.
        let req = read_request(sqlite, &[Read::Key(Key::Page(next, no))]);
        let at = 15 + PAGE_SELECT_SQL.len();
        assert_eq!(&req[15..at], PAGE_SELECT_SQL.as_bytes());
        assert_eq!(req[at..at + 8], ((1u64 << 32) + 3).to_le_bytes());
        // Generations of kv keys, classic storage, log records (they fall back to a key) and
        // other keys: a read request.
        assert_eq!(page_row(sqlite, &Key::Page(Generation(0), no)), None);
        let rows = Key::Page(Generation::FIRST_ROWS, no);
        assert_eq!(page_row(StorageKind::Classic, &rows), None);
        assert_eq!(page_row(sqlite, &Key::Log(42)), None);
        assert_eq!(page_row(sqlite, &Key::Meta), None);
    }

    #[test]
    fn a_plan_fits_the_buffer_sized_for_it() {
        let no = |n| PageNo::new(n).unwrap();
        let big = Generation(u32::MAX);
        let p = WritePlan {
            puts: vec![
                (
                    Key::Page(Generation::FIRST_ROWS, no(1)),
                    Value::Bytes(vec![1; 100]),
                ),
                (Key::Page(big, no(u32::MAX)), Value::Bytes(vec![2; 3])),
                (Key::LogPart(u64::MAX, 999_999), Value::Bytes(vec![3])),
                (Key::Log(7), Value::Bytes(vec![])),
                (Key::Transfer, Value::Structured(json!({"format": 1}))),
            ],
            deletes: vec![
                Key::Page(Generation::FIRST_ROWS, no(2)),
                Key::Page(big, no(u32::MAX)),
                Key::LogPart(u64::MAX, 999_999),
                Key::Log(8),
            ],
            head_row: Some(HeadRow {
                text: "{}".into(),
                blob: Some(vec![0; 50]),
            }),
            notes: PlanNotes::default(),
        };
        // Many small values: the per-op framing dominates.
        let mut many = p.clone();
        for n in 1..=200 {
            many.puts.push((
                Key::Page(Generation::FIRST_ROWS, no(n)),
                Value::Bytes(vec![4]),
            ));
            many.deletes.push(Key::Page(Generation(3), no(n)));
        }
        for (kind, p) in [StorageKind::Classic, StorageKind::SqliteBacked]
            .into_iter()
            .flat_map(|k| [(k, &p), (k, &many)])
        {
            let bytes = plan(kind, p);
            assert!(bytes.len() <= plan_capacity(kind, p), "{kind:?}");
        }
    }

    #[test]
    fn responses_decode_and_bad_ones_are_refused() {
        let mut b = vec![TAG_ABSENT, TAG_BYTES, 2, 0, 0, 0, 5, 6];
        let j = br#"{"format":1}"#;
        b.push(TAG_STRUCTURED);
        b.extend_from_slice(&(j.len() as u32).to_le_bytes());
        b.extend_from_slice(j);
        b.extend_from_slice(&[TAG_ROW, 1, 0, 0, 0, b'x', 1, 1, 0, 0, 0, 9]);
        let got = read_response(&b, 4).unwrap();
        assert_eq!(got[0], Answer::Value(None));
        assert_eq!(got[1], Answer::Value(Some(Value::Bytes(vec![5, 6]))));
        assert_eq!(
            got[2],
            Answer::Value(Some(Value::Structured(json!({"format": 1}))))
        );
        assert_eq!(
            got[3],
            Answer::HeadRow(Some(HeadRow {
                text: "x".into(),
                blob: Some(vec![9])
            }))
        );
        assert!(read_response(&b, 5).is_err());
        assert!(read_response(&b[..b.len() - 1], 4).is_err());
        assert!(read_response(&[9], 1).is_err());
        assert!(read_response(&[0, 0], 1).is_err());
        // What `response` encodes decodes to the same answers (an absent head row as tag 0).
        assert_eq!(response(&got), b);
        assert_eq!(response(&[Answer::HeadRow(None)]), [TAG_ABSENT]);
    }
}
