//! Helpers of the history and LTX tests: a seeded RNG, a clock the tests move, a database
//! over an in-memory KV, random SQL transactions, images and an independent LTX checksum.
#![allow(dead_code)]

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dosql_layout::{DoStore, HistoryConfig, MemKv};
use dosql_pagestore::{PageNo, PageSize, codec};
use dosql_vfs::{Database, VfsConfig};
use sha2::{Digest, Sha256};

pub type Shared = Arc<Mutex<MemKv>>;

/// The test's clock: a fn pointer reads it.
pub static NOW: AtomicI64 = AtomicI64::new(1_700_000_000_000);

pub fn now() -> i64 {
    NOW.load(Ordering::Relaxed)
}

pub fn tick(ms: i64) {
    NOW.fetch_add(ms, Ordering::Relaxed);
}

/// xorshift64*: deterministic per seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub const HISTORY: HistoryConfig = HistoryConfig {
    enabled: true,
    retention_ms: 3_600_000,
    max_bytes: 64 * 1024 * 1024,
};

pub fn open(kv: &Shared, size: PageSize) -> DoStore<Shared> {
    DoStore::open(kv.clone(), size)
        .unwrap()
        .with_history(HISTORY)
        .with_clock(now)
}

pub fn attach(store: DoStore<Shared>) -> Database {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!("history-{}", N.fetch_add(1, Ordering::Relaxed));
    Database::attach(&name, store, VfsConfig::default()).unwrap()
}

/// The database image at `at`, page by page.
pub fn image(store: &mut DoStore<Shared>, at: u64) -> Vec<u8> {
    let size = store.record().page_size;
    let count = store.image_of(at).unwrap().page_count;
    let nos: Vec<PageNo> = (1..=count).filter_map(PageNo::new).collect();
    let mut out = Vec::with_capacity(count as usize * size.bytes());
    for v in store.values_at(at, &nos).unwrap() {
        match v {
            Some(v) => out.extend_from_slice(&codec::decode_page(&v, size).unwrap()),
            None => out.resize(out.len() + size.bytes(), 0),
        }
    }
    out
}

pub fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// CRC-64/ISO, bitwise, written from its definition (not the crate's table-driven one).
pub fn crc64_iso(bytes: &[u8]) -> u64 {
    let mut c = !0u64;
    for &b in bytes {
        c ^= u64::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xD800_0000_0000_0000
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// LTX's database checksum of `image`, from [`crc64_iso`].
pub fn ltx_checksum(image: &[u8], page_size: usize) -> u64 {
    let crc = crc64_iso;
    let lock = (0x4000_0000 / page_size + 1) as u32;
    let mut sum = 1u64 << 63;
    for (i, page) in image.chunks(page_size).enumerate() {
        let no = i as u32 + 1;
        if no == lock {
            continue;
        }
        let mut data = no.to_be_bytes().to_vec();
        data.extend_from_slice(page);
        sum ^= crc(&data) | 1 << 63;
        sum |= 1 << 63;
    }
    sum
}

/// Runs SQL against the database `kv` holds, as one transaction.
pub fn sql(kv: &Shared, size: PageSize, text: &str) {
    let db = attach(open(kv, size));
    let conn = db.connect_trusted().unwrap();
    conn.execute_batch(text).unwrap();
}

/// One random transaction.
pub fn random_sql(rng: &mut Rng) -> String {
    let mut s = String::from("BEGIN;");
    for _ in 0..1 + rng.below(4) {
        match rng.below(10) {
            0..=3 => {
                let n = 1 + rng.below(40);
                let len = [10, 200, 1500, 5000][rng.below(4) as usize];
                s += &format!(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<{n}) \
                     INSERT INTO t(v) SELECT randomblob({len}) FROM n;"
                );
            }
            4 | 5 => {
                s += &format!(
                    "UPDATE t SET v = randomblob({}) WHERE id % {} = {};",
                    1 + rng.below(800),
                    2 + rng.below(5),
                    rng.below(2)
                )
            }
            6 | 7 => s += &format!("DELETE FROM t WHERE id % {} = 0;", 2 + rng.below(3)),
            8 => s += "DELETE FROM t WHERE id > (SELECT max(id) FROM t) - 5;",
            _ => s += "CREATE TABLE IF NOT EXISTS u(x); INSERT INTO u VALUES (randomblob(3000));",
        }
    }
    s += "COMMIT;";
    s
}
