//! History as a property. Seeded random work on a database in the Durable Object layout (SQL
//! transactions of many pages, deletes that shrink the file, VACUUM, imports, restores)
//! records the SHA-256 of the database image at every txid; then the image rebuilt from the
//! log at every txid of the window equals it, restores reproduce it, pruning keeps every
//! restore point inside the window, and the head's checksum equals one computed from scratch
//! by a CRC written here, independently of the crate's.
//!
//! `DOSQL_SEED=<n>` replays one seed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dosql_layout::{DoStore, HistoryConfig, MemKv, StorageKind};
use dosql_pagestore::{PageNo, PageSize, codec};
use dosql_vfs::{Database, VfsConfig};
use serde_json::json;
use sha2::{Digest, Sha256};

type Shared = Arc<Mutex<MemKv>>;

/// The test's clock: a fn pointer reads it.
static NOW: AtomicI64 = AtomicI64::new(1_700_000_000_000);

fn now() -> i64 {
    NOW.load(Ordering::Relaxed)
}

fn tick(ms: i64) {
    NOW.fetch_add(ms, Ordering::Relaxed);
}

/// xorshift64*: deterministic per seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const HISTORY: HistoryConfig = HistoryConfig {
    enabled: true,
    retention_ms: 3_600_000,
    max_bytes: 64 * 1024 * 1024,
};

fn open(kv: &Shared, size: PageSize) -> DoStore<Shared> {
    DoStore::open(kv.clone(), size)
        .unwrap()
        .with_history(HISTORY)
        .with_clock(now)
}

fn attach(store: DoStore<Shared>) -> Database {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!("history-{}", N.fetch_add(1, Ordering::Relaxed));
    Database::attach(&name, store, VfsConfig::default()).unwrap()
}

/// The database image at `at`, page by page.
fn image(store: &mut DoStore<Shared>, at: u64) -> Vec<u8> {
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

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// LTX's database checksum of `image`, by a bitwise CRC-64/ISO written from its definition.
fn ltx_checksum(image: &[u8], page_size: usize) -> u64 {
    fn crc(bytes: &[u8]) -> u64 {
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
fn sql(kv: &Shared, size: PageSize, text: &str) {
    let db = attach(open(kv, size));
    let conn = db.connect_trusted().unwrap();
    conn.execute_batch(text).unwrap();
}

/// One random transaction.
fn random_sql(rng: &mut Rng) -> String {
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

/// Imports `bytes` (an image of `size` pages) as a whole new database.
fn import(store: &mut DoStore<Shared>, size: PageSize, bytes: &[u8]) {
    let pages: Vec<Vec<u8>> = bytes.chunks(size.bytes()).map(codec::encoded).collect();
    let s = store.begin_import(size, pages.len() as u32).unwrap();
    for (i, chunk) in pages.chunks(50).enumerate() {
        store
            .stage_import(s.generation, 1 + 50 * i as u32, chunk.to_vec())
            .unwrap();
    }
    let want = ltx_checksum(bytes, size.bytes());
    store
        .switch_import(s.generation, Some(want), json!({"import": "test"}))
        .unwrap();
}

/// Every txid of the window rebuilds, and those seen after a step (a VACUUM commits twice:
/// the state between is not seen) rebuild to what was seen.
fn check_window(store: &mut DoStore<Shared>, seen: &BTreeMap<u64, [u8; 32]>, seed: u64) {
    let (oldest, newest) = store.window();
    for t in oldest..=newest {
        let got = sha(&image(store, t));
        if let Some(want) = seen.get(&t) {
            assert_eq!(&got, want, "seed {seed}: image at txid {t}");
        }
    }
}

fn run(seed: u64, kind: StorageKind) {
    let size = PageSize::new(1024).unwrap();
    let kv: Shared = Arc::new(Mutex::new(MemKv::new(kind)));
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut seen: BTreeMap<u64, [u8; 32]> = BTreeMap::new();
    seen.insert(0, sha(&[]));
    sql(&kv, size, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    let mut store = open(&kv, size);
    assert_eq!(store.record().txid, 1);
    seen.insert(1, sha(&image(&mut store, 1)));
    drop(store);
    for step in 0..60 {
        tick(1000);
        let choice = rng.below(20);
        let mut store = open(&kv, size);
        match choice {
            0 => {
                drop(store);
                sql(&kv, size, "VACUUM");
            }
            1 if store.record().txid > 2 => {
                // Restore to a random point of the window: the image must be that point's.
                let (oldest, newest) = store.window();
                let at = oldest + rng.below(newest - oldest + 1);
                let r = store.restore(at).unwrap();
                assert_eq!(r.from, at);
                let now = sha(&image(&mut store, r.txid));
                assert_eq!(
                    Some(&now),
                    seen.get(&at),
                    "seed {seed} step {step}: restore to {at}"
                );
            }
            2 if store.record().txid > 2 => {
                // Import an earlier state as a new database.
                let (oldest, newest) = store.window();
                let at = oldest + rng.below(newest - oldest + 1);
                let bytes = image(&mut store, at);
                if !bytes.is_empty() {
                    import(&mut store, size, &bytes);
                }
            }
            _ => {
                drop(store);
                sql(&kv, size, &random_sql(&mut rng));
            }
        }
        let mut store = open(&kv, size);
        let txid = store.record().txid;
        if std::env::var("DOSQL_TRACE").is_ok() {
            eprintln!("seed {seed} step {step}: choice {choice} -> txid {txid}");
        }
        let bytes = image(&mut store, txid);
        seen.insert(txid, sha(&bytes));
        let head = store.record().checksum.known();
        assert_eq!(
            head,
            Some(ltx_checksum(&bytes, size.bytes())),
            "seed {seed} step {step}: the head's checksum"
        );
        assert_eq!(store.compute_checksum().unwrap(), head.unwrap());
        if step % 15 == 14 {
            check_window(&mut store, &seen, seed);
        }
    }
    let mut store = open(&kv, size);
    check_window(&mut store, &seen, seed);
    // Every commit is in the window; then time passes: the older half leaves it, and what
    // stays still rebuilds exactly.
    let (oldest, newest) = store.window();
    assert_eq!(oldest, 0, "seed {seed}: nothing pruned yet");
    let history = store.history(usize::MAX, None).unwrap();
    assert_eq!(history.len() as u64, newest);
    let middle = history[history.len() / 2].clone();
    NOW.store(
        middle.timestamp_ms + HISTORY.retention_ms as i64,
        Ordering::Relaxed,
    );
    let mut store = open(&kv, size);
    loop {
        let m = store.maintain(16).unwrap();
        if !m.more {
            break;
        }
    }
    let (oldest, _) = store.window();
    assert!(
        oldest > 0 && oldest < newest,
        "seed {seed}: window {oldest}..{newest}"
    );
    assert!(store.values_at(oldest - 1, &[PageNo::FIRST]).is_err());
    check_window(&mut store, &seen, seed);
    // Nothing of the pruned records is left in storage.
    let kv_now = kv.lock().unwrap().clone();
    let low = format!("l:{:020}", oldest);
    assert!(
        kv_now
            .data()
            .keys()
            .all(|k| !k.starts_with("l:") || k.as_str() >= low.as_str()),
        "seed {seed}: records below the window remain"
    );
}

#[test]
fn every_txid_in_the_window_rebuilds_exactly() {
    let seeds: Vec<u64> = match std::env::var("DOSQL_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => (1..=6).collect(),
    };
    for seed in seeds {
        for kind in [StorageKind::SqliteBacked, StorageKind::Classic] {
            run(seed, kind);
        }
    }
}
