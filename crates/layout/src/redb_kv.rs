//! [`RedbKv`]: the KV in a local file (redb), so that a local store holds the very records a
//! Durable Object holds, and the layout code is the same. Each plan is one redb write
//! transaction, fsynced before it returns (all or nothing across crashes).
//!
//! Tables:
//! - `kv` (text → bytes): every key; the value is a tag byte (1: bytes, 2: a structured value
//!   as its JSON) and the payload;
//! - `head_row` (u8 → bytes): row 0, SQLite-backed storage's head row: text length u32 LE, the
//!   text, a byte 1 when a blob follows (0: NULL), the blob;
//! - `dosql_store` (text → text): `kind` = `sqlite` or `classic`.
//!
//! A file from before the layout moved into Rust (`RedbStore`: tables `pages`, one raw page
//! per page number, and `meta`) is moved to these tables in one write transaction the first
//! time it is opened.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use crate::checksum;
use crate::head::{DbChecksum, Head, LogWindow, pointer};
use crate::keys::{Generation, Key};
use crate::kv::{CallCounts, Kv};
use crate::plan::WritePlan;
use crate::value::{HeadRow, StorageKind, Value};
use dosql_pagestore::{PageNo, PageSize, StoreError};

const KV: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("kv");
const HEAD_ROW: TableDefinition<'_, u8, &[u8]> = TableDefinition::new("head_row");
const STORE: TableDefinition<'_, &str, &str> = TableDefinition::new("dosql_store");
// RedbStore's tables (dosql 12121ec and earlier).
const OLD_PAGES: TableDefinition<'_, u32, &[u8]> = TableDefinition::new("pages");
const OLD_META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");

const TAG_BYTES: u8 = 1;
const TAG_STRUCTURED: u8 = 2;

/// Durable Object storage in a redb file.
pub struct RedbKv {
    db: Database,
    kind: StorageKind,
    counts: CallCounts,
}

impl std::fmt::Debug for RedbKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbKv")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

fn backend(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::read(format!("{context}: {e}"))
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::commit(e.to_string())
}

impl RedbKv {
    /// Opens the store file at `path`, creating it (storage of `kind`) if it does not exist. A
    /// file that already exists keeps the kind it was created with; a `RedbStore` file is
    /// moved to this layout first.
    pub fn open(path: impl AsRef<Path>, kind: StorageKind) -> Result<RedbKv, StoreError> {
        let path = path.as_ref();
        let db = Database::create(path)
            .map_err(|e| backend(&format!("opening {}", path.display()), e))?;
        let stored_kind = {
            let txn = db.begin_read().map_err(|e| backend("begin read", e))?;
            let kind = match txn.open_table(STORE) {
                Ok(t) => t
                    .get("kind")
                    .map_err(|e| backend("read kind", e))?
                    .map(|v| v.value().to_owned()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(backend("open dosql_store", e)),
            };
            let old = txn
                .list_tables()
                .map_err(|e| backend("list tables", e))?
                .any(|t| t.name() == OLD_META.name());
            (kind, old)
        };
        let kind = match stored_kind {
            (Some(k), _) => match k.as_str() {
                "sqlite" => StorageKind::SqliteBacked,
                "classic" => StorageKind::Classic,
                other => {
                    return Err(StoreError::corrupt(format!(
                        "{}: storage kind {other:?}, written by a newer dosql?",
                        path.display()
                    )));
                }
            },
            (None, true) => {
                migrate(&db)?;
                StorageKind::SqliteBacked
            }
            (None, false) => {
                let txn = db.begin_write().map_err(failed)?;
                {
                    let mut t = txn.open_table(STORE).map_err(failed)?;
                    let name = match kind {
                        StorageKind::SqliteBacked => "sqlite",
                        StorageKind::Classic => "classic",
                    };
                    t.insert("kind", name).map_err(failed)?;
                    txn.open_table(KV).map_err(failed)?;
                    txn.open_table(HEAD_ROW).map_err(failed)?;
                }
                txn.commit().map_err(failed)?;
                kind
            }
        };
        Ok(RedbKv {
            db,
            kind,
            counts: CallCounts::default(),
        })
    }

    /// Calls so far.
    pub fn counts(&self) -> CallCounts {
        self.counts
    }
}

fn encode_value(v: &Value) -> Vec<u8> {
    match v {
        Value::Bytes(b) => {
            let mut out = Vec::with_capacity(1 + b.len());
            out.push(TAG_BYTES);
            out.extend_from_slice(b);
            out
        }
        Value::Structured(j) => {
            let mut out = vec![TAG_STRUCTURED];
            out.extend_from_slice(j.to_string().as_bytes());
            out
        }
    }
}

fn decode_value(b: &[u8]) -> Result<Value, StoreError> {
    match b.split_first() {
        Some((&TAG_BYTES, rest)) => Ok(Value::Bytes(rest.to_vec())),
        Some((&TAG_STRUCTURED, rest)) => serde_json::from_slice(rest)
            .map(Value::Structured)
            .map_err(|e| StoreError::corrupt(format!("a structured value: {e}"))),
        _ => Err(StoreError::corrupt("a value with an unknown tag")),
    }
}

fn encode_row(row: &HeadRow) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + row.stored_len());
    out.extend_from_slice(&(row.text.len() as u32).to_le_bytes());
    out.extend_from_slice(row.text.as_bytes());
    match &row.blob {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            out.extend_from_slice(b);
        }
    }
    out
}

fn decode_row(b: &[u8]) -> Result<HeadRow, StoreError> {
    let bad = || StoreError::corrupt("the stored head row is cut short");
    let n = u32::from_le_bytes(b.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
    let text = b.get(4..4 + n).ok_or_else(bad)?;
    let text = String::from_utf8(text.to_vec())
        .map_err(|_| StoreError::corrupt("the head row's text is not UTF-8"))?;
    let blob = match b.get(4 + n) {
        Some(0) => None,
        Some(1) => Some(b[5 + n..].to_vec()),
        _ => return Err(bad()),
    };
    Ok(HeadRow { text, blob })
}

/// Moves a `RedbStore` file (meta record: version u32 = 1, page size u32, page count u32,
/// txid u64, little-endian; one raw page per page number) to this layout, in one write
/// transaction: pages under their `p:` keys, the head row, the pointer.
fn migrate(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(failed)?;
    {
        let meta = txn.open_table(OLD_META).map_err(failed)?;
        let record = meta
            .get("meta")
            .map_err(failed)?
            .ok_or_else(|| StoreError::corrupt("a RedbStore file without its meta record"))?
            .value()
            .to_vec();
        let field = |at: usize, n: usize| {
            record
                .get(at..at + n)
                .ok_or_else(|| StoreError::corrupt("RedbStore meta record cut short"))
        };
        let u32_at = |at: usize| -> Result<u32, StoreError> {
            Ok(u32::from_le_bytes(
                field(at, 4)?.try_into().expect("4 bytes"),
            ))
        };
        if u32_at(0)? != 1 {
            return Err(StoreError::corrupt(format!(
                "RedbStore meta record version {}",
                u32_at(0)?
            )));
        }
        let page_size =
            PageSize::new(u32_at(4)?).ok_or_else(|| StoreError::corrupt("RedbStore page size"))?;
        let page_count = u32_at(8)?;
        let txid = u64::from_le_bytes(field(12, 8)?.try_into().expect("8 bytes"));
        let mut kv = txn.open_table(KV).map_err(failed)?;
        let pages = txn.open_table(OLD_PAGES).map_err(failed)?;
        // Every page passes through here once: its checksum is had for the asking. Pages
        // never stored read as zeros and count as such.
        let zeros = vec![0u8; page_size.bytes()];
        let mut sum = (1..=page_count).fold(checksum::EMPTY, |c, n| {
            checksum::toggle(c, checksum::page(n, &zeros))
        });
        for entry in pages.iter().map_err(failed)? {
            let (no, page) = entry.map_err(failed)?;
            let Some(no) = PageNo::new(no.value()).filter(|n| n.get() <= page_count) else {
                continue;
            };
            if page.value().len() != page_size.bytes() {
                return Err(StoreError::corrupt(format!(
                    "RedbStore page {no} is {} bytes, not {page_size}",
                    page.value().len()
                )));
            }
            sum = checksum::toggle(sum, checksum::page(no.get(), &zeros));
            sum = checksum::toggle(sum, checksum::page(no.get(), page.value()));
            let key = Key::Page(Generation(0), no).encode();
            kv.insert(
                key.as_str(),
                encode_value(&Value::Bytes(page.value().to_vec())).as_slice(),
            )
            .map_err(failed)?;
        }
        kv.insert("meta", encode_value(&pointer()).as_slice())
            .map_err(failed)?;
        let head = Head {
            page_count,
            txid,
            checksum: DbChecksum::Known(sum),
            log: LogWindow::empty(txid),
            ..Head::empty(page_size)
        };
        let mut row = txn.open_table(HEAD_ROW).map_err(failed)?;
        row.insert(0, encode_row(&head.to_head_row()).as_slice())
            .map_err(failed)?;
        let mut store = txn.open_table(STORE).map_err(failed)?;
        store.insert("kind", "sqlite").map_err(failed)?;
    }
    txn.delete_table(OLD_PAGES).map_err(failed)?;
    txn.delete_table(OLD_META).map_err(failed)?;
    txn.commit().map_err(failed)
}

impl Kv for RedbKv {
    fn kind(&self) -> StorageKind {
        self.kind
    }

    fn get(&mut self, keys: &[Key]) -> Result<Vec<Option<Value>>, StoreError> {
        self.counts.get_calls += 1;
        self.counts.get_keys += keys.len() as u64;
        let txn = self.db.begin_read().map_err(|e| backend("begin read", e))?;
        let table = txn.open_table(KV).map_err(|e| backend("open kv", e))?;
        keys.iter()
            .map(|k| {
                match table
                    .get(k.encode().as_str())
                    .map_err(|e| backend("read", e))?
                {
                    None => Ok(None),
                    Some(v) => decode_value(v.value()).map(Some),
                }
            })
            .collect()
    }

    fn head_row(&mut self) -> Result<Option<HeadRow>, StoreError> {
        self.counts.head_row_reads += 1;
        if self.kind == StorageKind::Classic {
            return Ok(None);
        }
        let txn = self.db.begin_read().map_err(|e| backend("begin read", e))?;
        let table = txn
            .open_table(HEAD_ROW)
            .map_err(|e| backend("open head_row", e))?;
        match table.get(0).map_err(|e| backend("read head row", e))? {
            None => Ok(None),
            Some(v) => decode_row(v.value()).map(Some),
        }
    }

    fn apply(&mut self, plan: &WritePlan) -> Result<(), StoreError> {
        let calls = plan
            .check(self.kind)
            .inspect_err(|_| self.counts.refused += 1)?;
        let txn = self.db.begin_write().map_err(failed)?;
        {
            let mut kv = txn.open_table(KV).map_err(failed)?;
            for (k, v) in &plan.puts {
                kv.insert(k.encode().as_str(), encode_value(v).as_slice())
                    .map_err(failed)?;
            }
            for k in &plan.deletes {
                kv.remove(k.encode().as_str()).map_err(failed)?;
            }
            if let Some(row) = &plan.head_row {
                let mut t = txn.open_table(HEAD_ROW).map_err(failed)?;
                t.insert(0, encode_row(row).as_slice()).map_err(failed)?;
            }
        }
        // Dropping an uncommitted write transaction aborts it: every early return above left
        // the file as it was.
        txn.commit().map_err(failed)?;
        let c = &mut self.counts;
        c.plans += 1;
        c.put_calls += calls.puts as u64;
        c.put_keys += plan.puts.len() as u64;
        c.delete_calls += calls.deletes as u64;
        c.delete_keys += plan.deletes.len() as u64;
        c.head_row_writes += calls.head_rows as u64;
        c.bytes_written += calls.bytes as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_values_round_trip() {
        for row in [
            HeadRow {
                text: "{}".into(),
                blob: None,
            },
            HeadRow {
                text: r#"{"format":5}"#.into(),
                blob: Some(vec![1, 2, 3]),
            },
            HeadRow {
                text: String::new(),
                blob: Some(vec![]),
            },
        ] {
            assert_eq!(decode_row(&encode_row(&row)).unwrap(), row);
        }
        for v in [Value::Bytes(vec![]), Value::Bytes(vec![9; 10]), pointer()] {
            assert_eq!(decode_value(&encode_value(&v)).unwrap(), v);
        }
        assert!(decode_value(&[7]).is_err());
        assert!(decode_row(&[1, 0]).is_err());
    }
}
