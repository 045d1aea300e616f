//! LTX files (superfly/ltx, version 3) of the commit log: commits `from..=to` compacted into
//! one file (each page's newest version), or with `from` = 1 a snapshot of the whole database
//! at `to`, for Litestream's and LiteFS's tools and for replicas and backups.
//!
//! The format, all integers big-endian (read from superfly/ltx `ltx.go`, `encoder.go`):
//!
//! ```text
//! header, 100 bytes: "LTX1", flags u32 (0x2: no checksums), page size u32, commit u32 (pages
//!   after), min txid u64, max txid u64, timestamp ms i64, pre-apply checksum u64 (0 in a
//!   snapshot), WAL offset, WAL size u64, WAL salts u32 ×2 (0: not from a WAL), node id u64,
//!   20 zero bytes
//! page frames, ascending page numbers, none above commit, never the lock page:
//!   page number u32, flags u16 (0x1: a u32 size follows, then one LZ4 block), size u32, block
//! end of pages: six zero bytes
//! page index: per page uvarint(page number), uvarint(frame offset), uvarint(frame size);
//!   uvarint(0); then the index's length u64
//! trailer: post-apply checksum u64, file checksum u64
//! ```
//!
//! The file checksum is CRC-64/ISO over the header, each frame's header and size field
//! followed by the page *decompressed*, the end of pages, the index and its length, and the
//! post-apply checksum; with bit 63 set. The pre- and post-apply checksums are the database
//! checksums before `from` and after `to` (see `checksum`); when the log does not know one
//! (a database from before checksums), the file says so with flag 0x2 and both are 0.

use std::collections::BTreeSet;

use dosql_pagestore::{PageNo, StoreError, codec};

use crate::checksum::{self, Crc64};
use crate::kv::Kv;
use crate::store::DoStore;

/// The LTX version written.
pub const LTX_VERSION: u32 = 3;
/// Header flag: the file carries no checksums.
pub const FLAG_NO_CHECKSUM: u32 = 0x2;
/// Page frame flag: a size and an LZ4 block follow.
pub const PAGE_FLAG_SIZE: u16 = 0x1;
/// Bytes an LTX file may have when served whole; a bigger range is refused (ask for a
/// smaller one).
pub const MAX_LTX_BYTES: usize = 32 * 1024 * 1024;

/// Pages read per storage call.
const PER_CALL: usize = 128;

/// What a file covers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LtxInfo {
    /// First and last txid.
    pub min_txid: u64,
    /// Last txid.
    pub max_txid: u64,
    /// Pages after `max_txid`.
    pub commit: u32,
    /// Pages in the file.
    pub pages: u32,
    /// Checksums (0 when not known).
    pub pre_apply: u64,
    /// After.
    pub post_apply: u64,
}

impl<K: Kv> DoStore<K> {
    /// The LTX file of commits `from..=to` (`from` = 1: a snapshot of the state at `to`).
    pub fn ltx(&mut self, from: u64, to: u64) -> Result<(Vec<u8>, LtxInfo), StoreError> {
        let (oldest, newest) = self.window();
        if from == 0 || from > to || to > newest || to < oldest {
            return Err(StoreError::invalid(format!(
                "an LTX file covers txids from..=to with 1 ≤ from ≤ to ≤ {newest} and to ≥ \
                 {oldest} (the history window), not {from}..={to}"
            )));
        }
        let snapshot = from == 1;
        if !snapshot && from < self.head.log.oldest {
            return Err(StoreError::invalid(format!(
                "the history keeps the commits from txid {} on, not {from}",
                self.head.log.oldest
            )));
        }
        let index = self.image_of(to)?;
        let (commit, post, timestamp) = (index.page_count, index.checksum, index.timestamp_ms);
        let size = self.head.page_size;
        // The pages: all of them for a snapshot, else those the commits wrote (all of them
        // when one replaced the database).
        let mut pages: BTreeSet<u32> = BTreeSet::new();
        let mut pre = None;
        let mut all = snapshot;
        if !snapshot {
            for t in from..=to {
                let h = self.log_header(t)?;
                if t == from {
                    pre = (h.record.checksum_before != 0).then_some(h.record.checksum_before);
                }
                if h.record.is_switch() {
                    all = true;
                    break;
                }
                pages.extend(h.locations.iter().map(|(n, _, _)| n.get()));
            }
        }
        if all {
            pages = (1..=commit).collect();
        }
        let lock = checksum::lock_page(size.get());
        let nos: Vec<PageNo> = pages
            .into_iter()
            .filter(|&n| n <= commit && n != lock)
            .filter_map(PageNo::new)
            .collect();
        let checksums = match (snapshot, pre, post) {
            (true, _, Some(post)) => Some((0, post)),
            (false, Some(pre), Some(post)) => Some((pre, post)),
            _ => None,
        };
        let mut out = Vec::with_capacity(100 + nos.len() * 64);
        let mut crc = Crc64::new();
        let put = |out: &mut Vec<u8>, crc: &mut Crc64, bytes: &[u8]| {
            out.extend_from_slice(bytes);
            crc.update(bytes);
        };
        let mut header = Vec::with_capacity(100);
        header.extend_from_slice(b"LTX1");
        let flags = if checksums.is_some() {
            0
        } else {
            FLAG_NO_CHECKSUM
        };
        header.extend_from_slice(&flags.to_be_bytes());
        header.extend_from_slice(&size.get().to_be_bytes());
        header.extend_from_slice(&commit.to_be_bytes());
        header.extend_from_slice(&from.to_be_bytes());
        header.extend_from_slice(&to.to_be_bytes());
        header.extend_from_slice(&timestamp.to_be_bytes());
        header.extend_from_slice(&checksums.map_or(0, |c| c.0).to_be_bytes());
        header.resize(100, 0);
        put(&mut out, &mut crc, &header);
        let mut entries: Vec<(u32, u64, u64)> = Vec::with_capacity(nos.len());
        for chunk in nos.chunks(PER_CALL) {
            let values = self.values_at(to, chunk)?;
            for (no, v) in chunk.iter().zip(values) {
                let page = match &v {
                    Some(v) => codec::decode_page(v, size)?,
                    None => dosql_pagestore::Page::zeroed(size),
                };
                // A stored value shorter than the page is already an LZ4 block of it.
                let block = match v {
                    Some(v) if v.len() < size.bytes() => v,
                    _ => lz4_flex::block::compress(&page),
                };
                let offset = out.len() as u64;
                put(&mut out, &mut crc, &no.get().to_be_bytes());
                put(&mut out, &mut crc, &PAGE_FLAG_SIZE.to_be_bytes());
                put(&mut out, &mut crc, &(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
                crc.update(&page);
                entries.push((no.get(), offset, out.len() as u64 - offset));
                if out.len() > MAX_LTX_BYTES {
                    return Err(StoreError::invalid(format!(
                        "the LTX file of txids {from}..={to} is over {MAX_LTX_BYTES} bytes: ask \
                         for a smaller range"
                    )));
                }
            }
        }
        put(&mut out, &mut crc, &[0u8; 6]);
        let index_start = out.len();
        let mut idx = Vec::new();
        for (no, offset, len) in &entries {
            uvarint(&mut idx, u64::from(*no));
            uvarint(&mut idx, *offset);
            uvarint(&mut idx, *len);
        }
        uvarint(&mut idx, 0);
        put(&mut out, &mut crc, &idx);
        let index_len = (out.len() - index_start) as u64;
        put(&mut out, &mut crc, &index_len.to_be_bytes());
        let post = checksums.map_or(0, |c| c.1);
        put(&mut out, &mut crc, &post.to_be_bytes());
        let file = checksum::FLAG | crc.sum();
        out.extend_from_slice(&file.to_be_bytes());
        Ok((
            out,
            LtxInfo {
                min_txid: from,
                max_txid: to,
                commit,
                pages: entries.len() as u32,
                pre_apply: checksums.map_or(0, |c| c.0),
                post_apply: post,
            },
        ))
    }
}

/// Go's `binary.AppendUvarint`: 7 bits at a time, low first, high bit = more.
fn uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    #[test]
    fn uvarints_are_gos() {
        let mut v = Vec::new();
        for n in [0u64, 1, 127, 128, 300, u64::MAX] {
            super::uvarint(&mut v, n);
        }
        assert_eq!(
            v,
            [
                0, 1, 127, 0x80, 1, 0xac, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                1
            ]
        );
    }
}
