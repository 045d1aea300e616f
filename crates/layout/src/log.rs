//! The commit log: one record per commit, written in the same atomic write as the commit, that
//! holds what the commit replaced. With the records of commits `T+1..=H`, the database as of
//! any `T` in the window is rebuilt from the current one: a page's content at `T` is the
//! pre-image kept by the first commit after `T` that touched it, else its current content.
//!
//! Why pre-images (an undo log) rather than post-images (a redo log, as LTX files and
//! Litestream keep): the current pages are the database itself, so a redo log would store
//! every page twice and need a base snapshot to apply it to, which a database from before
//! the log does not have. Pre-images cost what the commit overwrote (a one-row insert: its
//! two pages' old values, about 1.5 KiB), history starts the moment the code is deployed,
//! and pruning is deleting records, never folding them into a snapshot. Post-images, which
//! LTX files and replicas need, are the next record's pre-images or the current pages.
//!
//! # Record format 1, little-endian
//!
//! ```text
//! offset size field
//!  0      4   magic b"dqlg"
//!  4      2   format: 1
//!  6      2   flags: bit 0 = a switch (the commit replaced the database: an import, a
//!             restore or a branch); its pre-images are all the pages of generation `old
//!             generation` (kept until the record leaves the log), none are listed
//!  8      8   txid of the commit
//! 16      8   timestamp, ms since the Unix epoch
//! 24      4   page count before
//! 28      4   page count after
//! 32      8   checksum before (0: not known)
//! 40      8   checksum after (0: not known)
//! 48      4   old generation (switches; else the generation the commit wrote)
//! 52      4   pages written by the commit
//! 56      4   parts: how many keys after this one hold the pre-images (0: they follow here)
//! 60      4   n: pages whose pre-images are kept (ascending)
//! 64      2   note length, then the note: UTF-8 JSON saying where a switch came from
//!             (`{"import": …}`, `{"restore": T}`, `{"branch": …}`), or nothing
//!  …          n × [page number u32, pre-image length u32]; length 0: the page did not exist
//!             (or read as zeros) before the commit
//!  …          the pre-images (stored values, see `dosql_pagestore::codec`) back to back: here
//!             when parts is 0, else split in order over parts 1..=parts (`l:<txid>:<part>`)
//! ```
//!
//! Every page the commit wrote and every page a truncation dropped is listed (a dropped page's
//! pre-image is what the truncation removed; a page above the count before has length 0), so
//! that the record also says which pages the commit changed. A switch lists only the pages
//! the old head carried inline (their keys may be older than they were).

use crate::bytes::Reader;
use dosql_pagestore::{PageNo, StoreError};
use serde_json::Value as Json;

use crate::keys::{Generation, Key, MAX_LOG_PARTS};

/// The log record format this code writes.
pub const LOG_FORMAT: u16 = 1;
const MAGIC: &[u8; 4] = b"dqlg";
const FIXED: usize = 66;
const FLAG_SWITCH: u16 = 1;

/// One commit's record.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Record {
    /// The commit's txid.
    pub txid: u64,
    /// When it was made, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Pages before and after.
    pub page_count_before: u32,
    /// Pages after.
    pub page_count_after: u32,
    /// The database's checksum before (0: not known).
    pub checksum_before: u64,
    /// And after (0: not known).
    pub checksum_after: u64,
    /// `Some(g)`: the commit replaced the database, whose pages were generation `g`.
    pub switched_from: Option<Generation>,
    /// Pages the commit wrote.
    pub pages_written: u32,
    /// Where a switch came from (JSON), if said.
    pub note: Option<Json>,
    /// The pages whose pre-images are kept, ascending, each with its pre-image (`None`: the
    /// page did not exist or read as zeros).
    pub pre_images: Vec<(PageNo, Option<Vec<u8>>)>,
}

/// A record as stored: its keys and values, and the bytes they take.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Encoded {
    /// `l:<txid>` and its parts, with their values.
    pub keys: Vec<(Key, Vec<u8>)>,
    /// Bytes of all of them.
    pub bytes: u64,
}

/// A record's header as read from its first key: everything but the pre-images' bytes, and
/// where they are.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Header {
    /// The record, its pre-images not read yet (`Some(empty)` for each kept one).
    pub record: Record,
    /// Each kept page's pre-image: offset in the pre-image stream and length (0: absent).
    pub locations: Vec<(PageNo, u64, u32)>,
    /// Keys after the first holding the stream (0: it is in the first key, from `inline_at`).
    pub parts: u32,
    /// Where the stream starts in the first key when `parts` is 0.
    pub inline_at: usize,
    /// Bytes of each part (the last may be shorter), when `parts` > 0.
    pub part_bytes: u32,
    /// The first key's bytes.
    pub first_bytes: u64,
}

impl Record {
    /// Whether the commit replaced the database.
    pub fn is_switch(&self) -> bool {
        self.switched_from.is_some()
    }

    /// The record as keys: one when it fits in `max_value` bytes, else a first key with the
    /// header and the pre-images in parts of `max_value` bytes each.
    pub fn encode(&self, max_value: usize) -> Result<Encoded, StoreError> {
        let note = self
            .note
            .as_ref()
            .map(|j| j.to_string())
            .unwrap_or_default();
        if note.len() > usize::from(u16::MAX) {
            return Err(StoreError::invalid("a log note over 64 KiB"));
        }
        let stream: usize = self
            .pre_images
            .iter()
            .map(|(_, v)| v.as_ref().map_or(0, Vec::len))
            .sum();
        let header_len = FIXED + note.len() + self.pre_images.len() * 8;
        let parts = if header_len + stream <= max_value {
            0
        } else {
            let part = max_value.max(1);
            let n = stream.div_ceil(part);
            u32::try_from(n)
                .ok()
                .filter(|&n| n <= MAX_LOG_PARTS)
                .ok_or_else(|| StoreError::invalid("a log record of too many parts"))?
        };
        if header_len > max_value {
            return Err(StoreError::invalid(format!(
                "the log record of commit {} lists {} pages: over one value",
                self.txid,
                self.pre_images.len()
            )));
        }
        let mut first = Vec::with_capacity(header_len + if parts == 0 { stream } else { 0 });
        first.extend_from_slice(MAGIC);
        first.extend_from_slice(&LOG_FORMAT.to_le_bytes());
        let flags = if self.is_switch() { FLAG_SWITCH } else { 0 };
        first.extend_from_slice(&flags.to_le_bytes());
        first.extend_from_slice(&self.txid.to_le_bytes());
        first.extend_from_slice(&self.timestamp_ms.to_le_bytes());
        first.extend_from_slice(&self.page_count_before.to_le_bytes());
        first.extend_from_slice(&self.page_count_after.to_le_bytes());
        first.extend_from_slice(&self.checksum_before.to_le_bytes());
        first.extend_from_slice(&self.checksum_after.to_le_bytes());
        first.extend_from_slice(&self.switched_from.map_or(0, |g| g.0).to_le_bytes());
        first.extend_from_slice(&self.pages_written.to_le_bytes());
        first.extend_from_slice(&parts.to_le_bytes());
        first.extend_from_slice(&(self.pre_images.len() as u32).to_le_bytes());
        first.extend_from_slice(&(note.len() as u16).to_le_bytes());
        first.extend_from_slice(note.as_bytes());
        let mut prev = 0;
        for (no, v) in &self.pre_images {
            if no.get() <= prev {
                return Err(StoreError::invalid("log pre-images out of order"));
            }
            prev = no.get();
            first.extend_from_slice(&no.get().to_le_bytes());
            first.extend_from_slice(&(v.as_ref().map_or(0, Vec::len) as u32).to_le_bytes());
        }
        let values = self.pre_images.iter().filter_map(|(_, v)| v.as_deref());
        let mut keys = Vec::with_capacity(1 + parts as usize);
        if parts == 0 {
            for v in values {
                first.extend_from_slice(v);
            }
            keys.push((Key::Log(self.txid), first));
        } else {
            keys.push((Key::Log(self.txid), first));
            let mut part = Vec::with_capacity(max_value);
            for v in values {
                let mut rest: &[u8] = v;
                while !rest.is_empty() {
                    let room = max_value - part.len();
                    let (now, later) = rest.split_at(rest.len().min(room));
                    part.extend_from_slice(now);
                    rest = later;
                    if part.len() == max_value {
                        let n = keys.len() as u32;
                        keys.push((Key::LogPart(self.txid, n), std::mem::take(&mut part)));
                    }
                }
            }
            if !part.is_empty() {
                let n = keys.len() as u32;
                keys.push((Key::LogPart(self.txid, n), part));
            }
            debug_assert_eq!(keys.len(), 1 + parts as usize);
        }
        let bytes = keys.iter().map(|(_, v)| v.len() as u64).sum();
        Ok(Encoded { keys, bytes })
    }
}

impl Header {
    /// Reads the first key of a record (`max_value`: the part size it was written with, the
    /// storage's value limit).
    pub fn decode(bytes: &[u8], max_value: usize) -> Result<Header, StoreError> {
        let corrupt = |why: String| StoreError::corrupt(format!("log record: {why}"));
        if bytes.len() < 6 || &bytes[..4] != MAGIC {
            return Err(corrupt("not a dosql log record (no magic)".into()));
        }
        let mut r = Reader::new(bytes, 4, "log record", dosql_pagestore::ErrorKind::Corrupt);
        let format = r.u16()?;
        if format != LOG_FORMAT {
            return Err(corrupt(format!(
                "format {format}: written by a newer dosql (this release reads format \
                 {LOG_FORMAT}); deploy that release again, nothing was changed"
            )));
        }
        let flags = r.u16()?;
        if flags & !FLAG_SWITCH != 0 {
            return Err(corrupt(format!(
                "flags {flags:#x}: written by a newer dosql"
            )));
        }
        let txid = r.u64()?;
        let timestamp_ms = r.u64()? as i64;
        let page_count_before = r.u32()?;
        let page_count_after = r.u32()?;
        let checksum_before = r.u64()?;
        let checksum_after = r.u64()?;
        let generation = Generation(r.u32()?);
        let pages_written = r.u32()?;
        let parts = r.u32()?;
        let n = r.u32()? as usize;
        let note_len = r.u16()? as usize;
        let note = match note_len {
            0 => None,
            _ => Some(
                serde_json::from_slice(r.take(note_len)?)
                    .map_err(|e| corrupt(format!("note: {e}")))?,
            ),
        };
        if parts > MAX_LOG_PARTS {
            return Err(corrupt(format!("{parts} parts")));
        }
        let mut locations = Vec::with_capacity(n.min(bytes.len() / 8));
        let mut pre_images = Vec::with_capacity(locations.capacity());
        let mut offset = 0u64;
        let mut prev = 0;
        for _ in 0..n {
            let raw = r.u32()?;
            let no = PageNo::new(raw)
                .filter(|no| no.get() > prev)
                .ok_or_else(|| corrupt(format!("page {raw} after page {prev}")))?;
            prev = raw;
            let len = r.u32()?;
            locations.push((no, offset, len));
            pre_images.push((no, (len > 0).then(Vec::new)));
            offset += u64::from(len);
        }
        let inline_at = r.at;
        if parts == 0 {
            if (bytes.len() - inline_at) as u64 != offset {
                return Err(corrupt(format!(
                    "{} bytes of pre-images where the list says {offset}",
                    bytes.len() - inline_at
                )));
            }
        } else if offset.div_ceil(max_value.max(1) as u64) != u64::from(parts)
            || bytes.len() != inline_at
        {
            return Err(corrupt(format!(
                "{parts} parts for {offset} bytes of pre-images"
            )));
        }
        Ok(Header {
            record: Record {
                txid,
                timestamp_ms,
                page_count_before,
                page_count_after,
                checksum_before,
                checksum_after,
                switched_from: (flags & FLAG_SWITCH != 0).then_some(generation),
                pages_written,
                note,
                pre_images,
            },
            locations,
            parts,
            inline_at,
            part_bytes: u32::try_from(max_value).unwrap_or(u32::MAX),
            first_bytes: bytes.len() as u64,
        })
    }

    /// The pre-image of page `no` when this record keeps one: `Some(None)` when the page did
    /// not exist before the commit, `Some(Some(location))` for bytes in the stream.
    pub fn find(&self, no: PageNo) -> Option<Option<(u64, u32)>> {
        let at = self
            .locations
            .binary_search_by_key(&no, |(n, _, _)| *n)
            .ok()?;
        let (_, offset, len) = self.locations[at];
        Some((len > 0).then_some((offset, len)))
    }

    /// The keys holding stream bytes `offset..offset + len`: `(key, from, to)` ranges within
    /// each key's value, in order.
    pub fn spans(&self, offset: u64, len: u32) -> Vec<(Key, usize, usize)> {
        let txid = self.record.txid;
        if self.parts == 0 {
            let from = self.inline_at + offset as usize;
            return vec![(Key::Log(txid), from, from + len as usize)];
        }
        let part = u64::from(self.part_bytes.max(1));
        let mut out = Vec::new();
        let (mut at, end) = (offset, offset + u64::from(len));
        while at < end {
            let n = at / part;
            let from = at - n * part;
            let to = (end - n * part).min(part);
            out.push((Key::LogPart(txid, n as u32 + 1), from as usize, to as usize));
            at = (n + 1) * part;
        }
        out
    }

    /// Every key of the record.
    pub fn keys(&self) -> Vec<Key> {
        let txid = self.record.txid;
        std::iter::once(Key::Log(txid))
            .chain((1..=self.parts).map(|n| Key::LogPart(txid, n)))
            .collect()
    }

    /// Bytes of all the record's keys.
    pub fn bytes(&self) -> u64 {
        let stream: u64 = self.locations.iter().map(|(_, _, l)| u64::from(*l)).sum();
        if self.parts == 0 {
            self.first_bytes
        } else {
            self.first_bytes + stream
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no(n: u32) -> PageNo {
        PageNo::new(n).unwrap()
    }

    fn record(values: Vec<(u32, Option<Vec<u8>>)>) -> Record {
        Record {
            txid: 42,
            timestamp_ms: 1_765_000_000_123,
            page_count_before: 5,
            page_count_after: 7,
            checksum_before: 1 << 63 | 3,
            checksum_after: 1 << 63 | 4,
            switched_from: None,
            pages_written: 3,
            note: None,
            pre_images: values.into_iter().map(|(n, v)| (no(n), v)).collect(),
        }
    }

    /// Reads a record's pre-images back from its keys.
    fn read_back(enc: &Encoded, max: usize) -> Record {
        let h = Header::decode(&enc.keys[0].1, max).unwrap();
        let value = |k: Key| enc.keys.iter().find(|(x, _)| *x == k).unwrap().1.clone();
        let mut r = h.record.clone();
        for (no, v) in &mut r.pre_images {
            if let Some(Some((offset, len))) = h.find(*no) {
                let mut bytes = Vec::new();
                for (key, from, to) in h.spans(offset, len) {
                    bytes.extend_from_slice(&value(key)[from..to]);
                }
                *v = Some(bytes);
            }
        }
        assert_eq!(h.bytes(), enc.bytes);
        assert_eq!(
            h.keys(),
            enc.keys.iter().map(|(k, _)| *k).collect::<Vec<_>>()
        );
        r
    }

    #[test]
    fn small_records_are_one_key_and_round_trip() {
        let r = record(vec![
            (1, Some(vec![1; 100])),
            (3, Some(vec![3; 50])),
            (6, None),
        ]);
        let enc = r.encode(128 * 1024).unwrap();
        assert_eq!(enc.keys.len(), 1);
        assert_eq!(enc.keys[0].0, Key::Log(42));
        assert_eq!(enc.bytes as usize, FIXED + 3 * 8 + 150);
        assert_eq!(read_back(&enc, 128 * 1024), r);
        let switch = Record {
            switched_from: Some(Generation(3)),
            note: Some(json!({"restore": 7})),
            pre_images: vec![],
            ..r
        };
        let enc = switch.encode(1000).unwrap();
        assert_eq!(read_back(&enc, 1000), switch);
    }

    #[test]
    fn big_records_split_into_parts_and_pages_span_them() {
        let r = record(vec![
            (1, Some((0..250).map(|i| i as u8).collect())),
            (2, None),
            (4, Some(vec![4; 300])),
            (9, Some(vec![9; 7])),
        ]);
        for max in [300, 257, 100] {
            let enc = r.encode(max).unwrap();
            assert!(enc.keys.len() > 1, "max {max}");
            assert!(enc.keys.iter().all(|(_, v)| v.len() <= max));
            assert_eq!(read_back(&enc, max), r, "max {max}");
        }
        // A header that does not fit in one value is refused.
        assert!(r.encode(70).is_err());
    }

    #[test]
    fn bad_records_are_refused() {
        let good = record(vec![(2, Some(vec![1; 10]))])
            .encode(1000)
            .unwrap()
            .keys[0]
            .1
            .clone();
        let mut newer = good.clone();
        newer[4] = 2;
        let mut flagged = good.clone();
        flagged[6] = 2;
        let mut short = good.clone();
        short.pop();
        let mut long = good.clone();
        long.push(0);
        for (bad, what) in [
            (newer, "newer"),
            (flagged, "flags"),
            (short, "pre-images"),
            (long, "pre-images"),
            (b"dqlg\x01\x00".to_vec(), "cut short"),
            (vec![1, 2, 3], "magic"),
        ] {
            let e = Header::decode(&bad, 1000).unwrap_err();
            assert!(e.message().contains(what), "{what}: {e}");
        }
        let unordered = record(vec![(3, None), (2, None)]);
        assert!(unordered.encode(1000).is_err());
    }
}
