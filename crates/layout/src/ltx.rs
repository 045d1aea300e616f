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
        let mut w = LtxWriter::new(&LtxHeader {
            flags: if checksums.is_some() {
                0
            } else {
                FLAG_NO_CHECKSUM
            },
            page_size: size.get(),
            commit,
            min_txid: from,
            max_txid: to,
            timestamp_ms: timestamp,
            pre_apply: checksums.map_or(0, |c| c.0),
        });
        for chunk in nos.chunks(PER_CALL) {
            let values = self.values_at(to, chunk)?;
            for (no, v) in chunk.iter().zip(values) {
                let page = match &v {
                    Some(v) => codec::decode_page(v, size)?,
                    None => dosql_pagestore::Page::zeroed(size),
                };
                // A stored value shorter than the page is already an LZ4 block of it.
                let block = v.filter(|v| v.len() < size.bytes());
                w.page(no.get(), &page, block)?;
                if w.len() > MAX_LTX_BYTES {
                    return Err(StoreError::invalid(format!(
                        "the LTX file of txids {from}..={to} is over {MAX_LTX_BYTES} bytes: ask \
                         for a smaller range"
                    )));
                }
            }
        }
        let pages = w.pages();
        let post = checksums.map_or(0, |c| c.1);
        Ok((
            w.finish(post),
            LtxInfo {
                min_txid: from,
                max_txid: to,
                commit,
                pages,
                pre_apply: checksums.map_or(0, |c| c.0),
                post_apply: post,
            },
        ))
    }
}

/// An LTX file's header fields.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LtxHeader {
    /// 0, or [`FLAG_NO_CHECKSUM`].
    pub flags: u32,
    /// Bytes per page.
    pub page_size: u32,
    /// Pages in the database after the file is applied.
    pub commit: u32,
    /// The first txid the file covers (1: a snapshot).
    pub min_txid: u64,
    /// The last.
    pub max_txid: u64,
    /// When the last was committed, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// The database's checksum before the file (0 in a snapshot or without checksums).
    pub pre_apply: u64,
}

impl LtxHeader {
    /// Whether it is a snapshot (every page of the database at `max_txid`).
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == 1
    }

    /// Whether the file carries checksums.
    pub fn has_checksums(&self) -> bool {
        self.flags & FLAG_NO_CHECKSUM == 0
    }

    fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut h = [0u8; HEADER_BYTES];
        h[0..4].copy_from_slice(MAGIC);
        h[4..8].copy_from_slice(&self.flags.to_be_bytes());
        h[8..12].copy_from_slice(&self.page_size.to_be_bytes());
        h[12..16].copy_from_slice(&self.commit.to_be_bytes());
        h[16..24].copy_from_slice(&self.min_txid.to_be_bytes());
        h[24..32].copy_from_slice(&self.max_txid.to_be_bytes());
        h[32..40].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        h[40..48].copy_from_slice(&self.pre_apply.to_be_bytes());
        h
    }
}

impl LtxHeader {
    /// The header at the start of `bytes` (an LTX file, or its first 100 bytes), checked
    /// field by field; the rest of the file is not looked at.
    pub fn read(bytes: &[u8]) -> Result<LtxHeader, StoreError> {
        if bytes.len() < HEADER_BYTES {
            return Err(bad(format!("{} bytes is too short", bytes.len())));
        }
        if &bytes[0..4] != MAGIC {
            return Err(bad("the magic is not \"LTX1\""));
        }
        let header = LtxHeader {
            flags: be_u32(bytes, 4),
            page_size: be_u32(bytes, 8),
            commit: be_u32(bytes, 12),
            min_txid: be_u64(bytes, 16),
            max_txid: be_u64(bytes, 24),
            timestamp_ms: be_u64(bytes, 32) as i64,
            pre_apply: be_u64(bytes, 40),
        };
        if header.flags & !FLAG_NO_CHECKSUM != 0 {
            return Err(bad(format!("unknown flags {:#x}", header.flags)));
        }
        if !(512..=65536).contains(&header.page_size) || !header.page_size.is_power_of_two() {
            return Err(bad(format!("page size {}", header.page_size)));
        }
        if header.min_txid == 0 || header.min_txid > header.max_txid {
            return Err(bad(format!(
                "txids {}..={}",
                header.min_txid, header.max_txid
            )));
        }
        // Bytes 48..80 (a WAL position and salts, a node id) say where a file came from
        // (Litestream sets them); the rest is reserved.
        if bytes[80..HEADER_BYTES].iter().any(|&b| b != 0) {
            return Err(bad("reserved header bytes are set"));
        }
        if header.has_checksums() && !header.is_snapshot() && header.pre_apply & checksum::FLAG == 0
        {
            return Err(bad("a pre-apply checksum without its flag bit"));
        }
        if header.is_snapshot() && header.pre_apply != 0 {
            return Err(bad("a snapshot with a pre-apply checksum"));
        }
        Ok(header)
    }
}

const MAGIC: &[u8; 4] = b"LTX1";
const HEADER_BYTES: usize = 100;
const TRAILER_BYTES: usize = 16;

/// Writes one LTX file: the header, then pages in ascending order, then [`LtxWriter::finish`].
#[derive(Debug)]
pub struct LtxWriter {
    out: Vec<u8>,
    crc: Crc64,
    entries: Vec<(u32, u64, u64)>,
    header: LtxHeader,
}

impl LtxWriter {
    /// A file with `header`.
    pub fn new(header: &LtxHeader) -> LtxWriter {
        let mut w = LtxWriter {
            out: Vec::with_capacity(4096),
            crc: Crc64::new(),
            entries: Vec::new(),
            header: *header,
        };
        w.put(&header.encode());
        w
    }

    fn put(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
        self.crc.update(bytes);
    }

    /// Adds page `no` (above the last one added, not above `commit`, not the lock page) with
    /// content `page`; `block`: its LZ4 block when the caller has it already.
    pub fn page(&mut self, no: u32, page: &[u8], block: Option<Vec<u8>>) -> Result<(), StoreError> {
        let h = self.header;
        if page.len() != h.page_size as usize
            || no == 0
            || no > h.commit
            || no == checksum::lock_page(h.page_size)
            || self.entries.last().is_some_and(|e| e.0 >= no)
        {
            return Err(StoreError::invalid(format!(
                "LTX page {no} ({} bytes) does not belong after page {:?} in a file of {} pages \
                 of {} bytes",
                page.len(),
                self.entries.last().map(|e| e.0),
                h.commit,
                h.page_size
            )));
        }
        let block = block.unwrap_or_else(|| lz4_flex::block::compress(page));
        let offset = self.out.len() as u64;
        self.put(&no.to_be_bytes());
        self.put(&PAGE_FLAG_SIZE.to_be_bytes());
        self.put(&(block.len() as u32).to_be_bytes());
        self.out.extend_from_slice(&block);
        self.crc.update(page);
        self.entries
            .push((no, offset, self.out.len() as u64 - offset));
        Ok(())
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// Whether nothing but the header was written.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Pages added.
    pub fn pages(&self) -> u32 {
        self.entries.len() as u32
    }

    /// The file, with the database's checksum after it (0 without checksums).
    pub fn finish(mut self, post_apply: u64) -> Vec<u8> {
        self.put(&[0u8; 6]);
        let mut idx = Vec::new();
        for (no, offset, len) in &self.entries {
            uvarint(&mut idx, u64::from(*no));
            uvarint(&mut idx, *offset);
            uvarint(&mut idx, *len);
        }
        uvarint(&mut idx, 0);
        self.put(&idx);
        self.put(&(idx.len() as u64).to_be_bytes());
        self.put(&post_apply.to_be_bytes());
        let file = checksum::FLAG | self.crc.sum();
        self.out.extend_from_slice(&file.to_be_bytes());
        self.out
    }
}

/// An LTX file read whole, every check passed: its header, its pages (ascending, decoded),
/// and the database's checksum after it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Ltx {
    /// The header.
    pub header: LtxHeader,
    /// Page number and content, ascending.
    pub pages: Vec<(u32, Vec<u8>)>,
    /// The database's checksum after the file (0 without checksums).
    pub post_apply: u64,
}

fn bad(what: impl std::fmt::Display) -> StoreError {
    StoreError::corrupt(format!("not a valid LTX file: {what}"))
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn read_uvarint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl Ltx {
    /// Reads `bytes` as one LTX file of version 3, checking everything the format says: the
    /// header's fields, ascending pages within the commit and never the lock page, each LZ4
    /// block decoding to exactly one page, the page index against the frames, a snapshot
    /// holding every page, and the file checksum. A file that fails any check is refused,
    /// never partly read.
    pub fn decode(bytes: &[u8]) -> Result<Ltx, StoreError> {
        if bytes.len() < HEADER_BYTES + 6 + 9 + TRAILER_BYTES {
            return Err(bad(format!("{} bytes is too short", bytes.len())));
        }
        let header = LtxHeader::read(bytes)?;
        let size = header.page_size as usize;
        let lock = checksum::lock_page(header.page_size);
        let mut crc = Crc64::new();
        crc.update(&bytes[..HEADER_BYTES]);
        let mut at = HEADER_BYTES;
        let mut pages: Vec<(u32, Vec<u8>)> = Vec::new();
        let mut frames: Vec<(u32, u64, u64)> = Vec::new();
        let body_end = bytes.len() - TRAILER_BYTES;
        loop {
            if at + 6 > body_end {
                return Err(bad("the pages do not end"));
            }
            let no = be_u32(bytes, at);
            let flags = u16::from_be_bytes([bytes[at + 4], bytes[at + 5]]);
            if no == 0 {
                if flags != 0 {
                    return Err(bad("the end of pages has flags"));
                }
                crc.update(&bytes[at..at + 6]);
                at += 6;
                break;
            }
            if flags != PAGE_FLAG_SIZE {
                return Err(bad(format!("page {no} has flags {flags:#x}")));
            }
            if no > header.commit || no == lock || pages.last().is_some_and(|p| p.0 >= no) {
                return Err(bad(format!(
                    "page {no} out of order, above the commit ({}) or the lock page",
                    header.commit
                )));
            }
            if at + 10 > body_end {
                return Err(bad(format!("page {no} is cut short")));
            }
            let len = be_u32(bytes, at + 6) as usize;
            let start = at + 10;
            if start + len > body_end {
                return Err(bad(format!("page {no} is cut short")));
            }
            let page = lz4_flex::block::decompress(&bytes[start..start + len], size)
                .ok()
                .filter(|p| p.len() == size)
                .ok_or_else(|| bad(format!("page {no} does not decode to {size} bytes")))?;
            crc.update(&bytes[at..start]);
            crc.update(&page);
            frames.push((no, at as u64, (start + len - at) as u64));
            pages.push((no, page));
            at = start + len;
        }
        if header.is_snapshot() {
            let want = header.commit as usize - usize::from(header.commit >= lock);
            if pages.len() != want {
                return Err(bad(format!(
                    "a snapshot of {} pages holds {}",
                    header.commit,
                    pages.len()
                )));
            }
        }
        // The page index, its length, the trailer.
        let index_start = at;
        let mut i = at;
        for &(no, offset, len) in &frames {
            let got = (
                read_uvarint(bytes, &mut i),
                read_uvarint(bytes, &mut i),
                read_uvarint(bytes, &mut i),
            );
            if got != (Some(u64::from(no)), Some(offset), Some(len)) {
                return Err(bad(format!("the page index disagrees at page {no}")));
            }
        }
        if read_uvarint(bytes, &mut i) != Some(0) || i + 8 != body_end {
            return Err(bad("the page index does not end where its length says"));
        }
        if be_u64(bytes, i) != (i - index_start) as u64 {
            return Err(bad("the page index length is wrong"));
        }
        crc.update(&bytes[index_start..body_end + 8]);
        let post_apply = be_u64(bytes, body_end);
        let file = be_u64(bytes, body_end + 8);
        if file != checksum::FLAG | crc.sum() {
            return Err(bad(format!(
                "its file checksum is {file:016x}, its content's {:016x}",
                checksum::FLAG | crc.sum()
            )));
        }
        if !header.has_checksums() && (header.pre_apply != 0 || post_apply != 0) {
            return Err(bad("checksums in a file flagged as without them"));
        }
        if header.has_checksums() && post_apply & checksum::FLAG == 0 {
            return Err(bad("a post-apply checksum without its flag bit"));
        }
        // A snapshot holds the whole database: its checksum is its pages'.
        if header.has_checksums() && header.is_snapshot() {
            let sum = pages.iter().fold(checksum::EMPTY, |s, (no, p)| {
                checksum::toggle(s, checksum::page(*no, p))
            });
            if sum != post_apply {
                return Err(bad(format!(
                    "a snapshot whose pages have checksum {sum:016x}, not the {post_apply:016x} it states"
                )));
            }
        }
        Ok(Ltx {
            header,
            pages,
            post_apply,
        })
    }

    /// The file's bytes (refused when its pages are out of order or out of range).
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let mut w = LtxWriter::new(&self.header);
        for (no, page) in &self.pages {
            w.page(*no, page, None)?;
        }
        Ok(w.finish(self.post_apply))
    }

    /// Contiguous files (each one's min txid the previous one's max + 1) as one: each page's
    /// newest version, none above the last file's commit, the last file's commit, timestamp
    /// and post-apply checksum, the first one's pre-apply checksum. A snapshot first gives a
    /// snapshot.
    pub fn compact(files: &[Ltx]) -> Result<Ltx, StoreError> {
        let (first, last) = match (files.first(), files.last()) {
            (Some(f), Some(l)) => (f, l),
            _ => return Err(StoreError::invalid("no LTX files to compact")),
        };
        let mut pages: std::collections::BTreeMap<u32, &Vec<u8>> = Default::default();
        let mut checksums = true;
        let zeros = vec![0u8; first.header.page_size as usize];
        let mut low = u32::MAX;
        for (i, f) in files.iter().enumerate() {
            if f.header.page_size != first.header.page_size {
                return Err(StoreError::invalid("LTX files of different page sizes"));
            }
            if i > 0 && f.header.min_txid != files[i - 1].header.max_txid + 1 {
                return Err(StoreError::invalid(format!(
                    "LTX files are not contiguous: txid {} follows {}",
                    f.header.min_txid,
                    files[i - 1].header.max_txid
                )));
            }
            if i > 0 && f.header.is_snapshot() {
                return Err(StoreError::invalid("a snapshot after another file"));
            }
            if i > 0
                && f.header.has_checksums()
                && files[i - 1].header.has_checksums()
                && f.header.pre_apply != files[i - 1].post_apply
            {
                return Err(StoreError::corrupt(format!(
                    "LTX file {}..={} starts from checksum {:016x}, not the {:016x} its \
                     predecessor ends with",
                    f.header.min_txid,
                    f.header.max_txid,
                    f.header.pre_apply,
                    files[i - 1].post_apply
                )));
            }
            checksums &= f.header.has_checksums();
            for (no, page) in &f.pages {
                pages.insert(*no, page);
            }
            // A file that shrinks the database drops the pages above it; a later one that
            // grows it again without writing them leaves them zeros (filled in below).
            pages.retain(|no, _| *no <= f.header.commit);
            low = low.min(f.header.commit);
        }
        let commit = last.header.commit;
        let lock = checksum::lock_page(first.header.page_size);
        for no in low.saturating_add(1)..=commit {
            if no != lock {
                pages.entry(no).or_insert(&zeros);
            }
        }
        Ok(Ltx {
            header: LtxHeader {
                flags: if checksums { 0 } else { FLAG_NO_CHECKSUM },
                page_size: first.header.page_size,
                commit,
                min_txid: first.header.min_txid,
                max_txid: last.header.max_txid,
                timestamp_ms: last.header.timestamp_ms,
                pre_apply: if checksums { first.header.pre_apply } else { 0 },
            },
            pages: pages
                .into_iter()
                .filter(|(no, _)| *no <= commit)
                .map(|(no, p)| (no, p.clone()))
                .collect(),
            post_apply: if checksums { last.post_apply } else { 0 },
        })
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
