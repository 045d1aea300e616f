//! How a page is stored as a value in Durable Object storage (meta format 2): compressed.
//!
//! A value is either
//! - exactly the page size: the raw page (format 1 stored only these, so older data still
//!   reads, and a page that does not compress is stored this way), or
//! - shorter: the page as one LZ4 block (no frame, no length prefix: the page size gives the
//!   decompressed length).
//!
//! Why: a B-tree page is rarely full and keeps its free space as zeros between its cell
//! pointers and its cells (dosql's connections run `PRAGMA secure_delete = FAST`, so freed
//! cells are zeroed too), and rows repeat themselves. A one-row commit of a 4 KiB database
//! stores a half-full leaf in about 1 KiB and page 1 in about 0.2 KiB, and a whole database in
//! about half its size. Smaller values are measurably cheaper to write in Durable Object
//! storage (bench/README.md). The wasm encodes and decodes every page it commits and reads;
//! `dosql export` decodes the values `GET /pages` answers with.

use crate::{Page, PageSize, StoreError};

/// A page is stored compressed only when that saves at least this many bytes: every read of
/// the page decodes it, and LZ4 on data that barely compresses is nearly all literal runs,
/// slower to decode than a copy, for a few bytes of storage (bench W4's pages of random text
/// saved 26 bytes of 4,096 and cost a cold object's first query a decompression per page, in
/// V8's baseline code). No more than 40: on SQLite-backed storage a 4 KiB page's row holds
/// its value in one leaf of workerd's B-tree up to 4,057 bytes (4,061 of payload, less the
/// record's header) and spills into an overflow page past that, so every page that
/// compresses to fit stays compressed and is read in one leaf. Readers take either form.
pub const MIN_SAVING_BYTES: usize = 40;

/// Appends the stored form of `page` (a whole page) to `out`.
pub fn encode_page(page: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(
        start + lz4_flex::block::get_maximum_output_size(page.len()),
        0,
    );
    match lz4_flex::block::compress_into(page, &mut out[start..]) {
        Ok(n) if n + MIN_SAVING_BYTES <= page.len() => out.truncate(start + n),
        // Incompressible, or nearly (or, never expected, a buffer too small): the raw page.
        _ => {
            out.truncate(start);
            out.extend_from_slice(page);
        }
    }
}

/// The stored form of `page`.
pub fn encoded(page: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(page.len() / 2);
    encode_page(page, &mut out);
    out
}

/// The page of `size` bytes that `value` stores. A value no encoder produced is `Corrupt`.
pub fn decode_page(value: &[u8], size: PageSize) -> Result<Page, StoreError> {
    let size = size.bytes();
    if value.len() == size {
        return Ok(Page::copy_from(value));
    }
    if value.is_empty() || value.len() > size {
        return Err(StoreError::corrupt(format!(
            "a stored page value is {} bytes, page size {size}",
            value.len()
        )));
    }
    let mut page = vec![0u8; size];
    match lz4_flex::block::decompress_into(value, &mut page) {
        Ok(n) if n == size => Ok(Page::from(page)),
        Ok(n) => Err(StoreError::corrupt(format!(
            "a stored page value decompresses to {n} bytes, page size {size}"
        ))),
        Err(e) => Err(StoreError::corrupt(format!(
            "a stored page value does not decompress: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn encoded(page: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_page(page, &mut out);
        out
    }

    /// A small deterministic PRNG (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn byte(&mut self) -> u8 {
            self.next() as u8
        }
    }

    fn round_trip(page: &[u8]) -> Vec<u8> {
        let size = PageSize::new(page.len() as u32).unwrap();
        let stored = encoded(page);
        assert!(stored.len() <= page.len());
        assert_eq!(decode_page(&stored, size).unwrap().as_bytes(), page);
        stored
    }

    #[test]
    fn btree_shaped_pages_come_back_exactly_and_smaller() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for size in [512usize, 1024, 4096, 16384, 65536] {
            for _ in 0..50 {
                // Header and cell pointers, a zero gap, then cells of repetitive text.
                let head = rng.below(size * 2 / 5);
                let tail = rng.below(size - head);
                let mut page = vec![0u8; size];
                page[..head].iter_mut().for_each(|b| *b = rng.byte());
                for (i, b) in page[size - tail..].iter_mut().enumerate() {
                    *b = b"value-17-"[i % 9];
                }
                let stored = round_trip(&page);
                let gap = size - head - tail;
                if gap >= size / 4 {
                    assert!(
                        stored.len() < size - gap / 2,
                        "{size}: {} for a {gap}-byte gap",
                        stored.len()
                    );
                }
            }
        }
    }

    #[test]
    fn incompressible_pages_are_stored_raw_and_any_page_round_trips() {
        let mut rng = Rng(7);
        let noise: Vec<u8> = (0..4096).map(|_| rng.byte()).collect();
        assert_eq!(round_trip(&noise), noise);
        assert!(round_trip(&[0u8; 4096]).len() < 64);
        for _ in 0..300 {
            let mut page: Vec<u8> = (0..4096)
                .map(|_| if rng.below(2) == 0 { 0 } else { rng.byte() })
                .collect();
            let a = rng.below(4096);
            let b = a + rng.below(4096 - a);
            page[a..b].fill(0);
            round_trip(&page);
        }
    }

    #[test]
    fn a_page_is_compressed_only_when_that_saves_forty_bytes_and_then_fits_a_workerd_leaf() {
        let mut rng = Rng(11);
        // Noise with a run of zeros: LZ4 saves about the run's length.
        let mut page = |zeros: usize| {
            let mut p: Vec<u8> = (0..4096).map(|_| rng.byte()).collect();
            p[100..100 + zeros].fill(0);
            p
        };
        for (zeros, compressed) in [(0, false), (30, false), (120, true), (2000, true)] {
            let p = page(zeros);
            let stored = round_trip(&p);
            assert_eq!(
                stored.len() < 4096,
                compressed,
                "{zeros} zeros: {}",
                stored.len()
            );
            if compressed {
                // Within what one leaf of workerd's B-tree holds of a row's blob.
                assert!(stored.len() <= 4057 && stored.len() + MIN_SAVING_BYTES <= 4096);
            }
        }
    }

    #[test]
    fn values_no_encoder_wrote_are_corrupt() {
        let size = PageSize::DEFAULT;
        let raw = vec![5u8; 4096];
        assert_eq!(decode_page(&raw, size).unwrap().as_bytes(), &raw[..]);
        let short = encoded(&[1u8; 2048]); // a valid block, but of a 2 KiB page
        let mut truncated = encoded(&[3u8; 4096]);
        truncated.pop();
        for bad in [vec![], vec![0u8; 4097], vec![0xFFu8; 100], short, truncated] {
            let err = decode_page(&bad, size).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        }
    }
}
