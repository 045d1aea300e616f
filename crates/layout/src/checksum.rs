//! The database checksum of LTX (superfly/ltx `checksum.go`), so that a dosql database, its
//! history and the LTX files it serves can be checked against each other and against
//! Litestream's and LiteFS's tools.
//!
//! - CRC-64/ISO: polynomial 0x1B (reflected: 0xD800000000000000), initial value and final
//!   XOR all ones (Go's `hash/crc64` with the ISO table); the check value of "123456789" is
//!   `0xB90956C775A41001`.
//! - A page's checksum: CRC-64/ISO of its number (u32, big-endian) followed by its bytes,
//!   with bit 63 set ([`FLAG`]).
//! - The database's checksum: the XOR of every page's checksum, the lock page excluded,
//!   with bit 63 set; an empty database's is [`EMPTY`]. A commit updates it from each
//!   changed page's old and new checksum (`old ^ c(p, before) ^ c(p, after)`), a dropped
//!   page's checksum is XORed out, so it never needs the whole database.

/// Bit 63, set on every checksum so that a real one is never 0 (0 means "not known").
pub const FLAG: u64 = 1 << 63;
/// The checksum of a database without pages.
pub const EMPTY: u64 = FLAG;

const POLY: u64 = 0xD800_0000_0000_0000;

/// Slicing-by-8 tables: `TABLES[0]` is the byte-at-a-time table, `TABLES[k][b]` the CRC of
/// byte `b` followed by `k` zero bytes. Eight bytes per step: about four times the speed
/// of one, which matters because every commit checksums the pages it writes.
static TABLES: [[u64; 256]; 8] = tables();

const fn tables() -> [[u64; 256]; 8] {
    let mut t = [[0u64; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        t[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    t
}

/// CRC-64/ISO of a byte stream, fed in pieces.
#[derive(Clone, Copy, Debug)]
pub struct Crc64(u64);

impl Default for Crc64 {
    fn default() -> Crc64 {
        Crc64::new()
    }
}

impl Crc64 {
    /// A CRC of nothing yet.
    pub const fn new() -> Crc64 {
        Crc64(!0)
    }

    /// Feeds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut crc = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let v = crc ^ u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            crc = TABLES[7][(v & 0xff) as usize]
                ^ TABLES[6][((v >> 8) & 0xff) as usize]
                ^ TABLES[5][((v >> 16) & 0xff) as usize]
                ^ TABLES[4][((v >> 24) & 0xff) as usize]
                ^ TABLES[3][((v >> 32) & 0xff) as usize]
                ^ TABLES[2][((v >> 40) & 0xff) as usize]
                ^ TABLES[1][((v >> 48) & 0xff) as usize]
                ^ TABLES[0][(v >> 56) as usize];
        }
        for &b in chunks.remainder() {
            crc = TABLES[0][((crc ^ u64::from(b)) & 0xff) as usize] ^ (crc >> 8);
        }
        self.0 = crc;
    }

    /// The CRC of everything fed so far.
    pub const fn sum(self) -> u64 {
        !self.0
    }
}

/// CRC-64/ISO of `bytes`.
pub fn crc64(bytes: &[u8]) -> u64 {
    let mut c = Crc64::new();
    c.update(bytes);
    c.sum()
}

/// The lock page of a database with pages of `page_size` bytes: the page holding byte
/// 0x40000000 (SQLite's pending byte), which SQLite never writes and LTX leaves out.
pub const fn lock_page(page_size: u32) -> u32 {
    0x4000_0000 / page_size + 1
}

/// Page `no`'s checksum with content `page` (its decoded bytes, a whole page). The lock page
/// counts for nothing (0).
pub fn page(no: u32, page: &[u8]) -> u64 {
    if no == lock_page(page.len() as u32) {
        return 0;
    }
    let mut c = Crc64::new();
    c.update(&no.to_be_bytes());
    c.update(page);
    FLAG | c.sum()
}

/// `db` with page checksum `page` added or removed (XOR is its own inverse).
pub fn toggle(db: u64, page: u64) -> u64 {
    FLAG | (db ^ page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_iso_has_its_check_value() {
        assert_eq!(crc64(b"123456789"), 0xB909_56C7_75A4_1001);
        assert_eq!(crc64(b""), 0);
        // Fed in pieces of every alignment, the same.
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let whole = crc64(&data);
        for split in [0, 1, 7, 8, 9, 500, 999] {
            let mut c = Crc64::new();
            c.update(&data[..split]);
            c.update(&data[split..]);
            assert_eq!(c.sum(), whole, "split at {split}");
        }
        // Byte at a time, straight from the definition.
        let mut slow = !0u64;
        for &b in &data {
            slow ^= u64::from(b);
            for _ in 0..8 {
                slow = if slow & 1 == 1 {
                    (slow >> 1) ^ POLY
                } else {
                    slow >> 1
                };
            }
        }
        assert_eq!(!slow, whole);
    }

    #[test]
    fn page_checksums_set_the_flag_and_skip_the_lock_page() {
        let p = vec![0u8; 4096];
        assert_eq!(page(1, &p) & FLAG, FLAG);
        assert_ne!(page(1, &p), page(2, &p), "the page number counts");
        assert_eq!(lock_page(4096), 262_145);
        assert_eq!(lock_page(65536), 16_385);
        assert_eq!(page(lock_page(4096), &p), 0);
        let db = toggle(toggle(EMPTY, page(1, &p)), page(2, &p));
        assert_eq!(toggle(toggle(db, page(2, &p)), page(1, &p)), EMPTY);
    }
}
