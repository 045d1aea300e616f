//! Helpers shared by the VFS integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use dosql_layout::{DoStore, RedbKv, StorageKind};
use dosql_pagestore::PageSize;
use rusqlite::Connection;
use rusqlite::types::Value;

/// The durable store: the Durable Object layout in a redb file (what a local store file and a
/// Durable Object hold), created with pages of `size` if the file does not exist.
pub fn durable(path: impl AsRef<std::path::Path>, size: PageSize) -> DoStore<RedbKv> {
    let kv = RedbKv::open(path, StorageKind::SqliteBacked).expect("open the store file");
    DoStore::open(kv, size).expect("open the store")
}

/// The team's shared test data (../shared/testdata beside the checkout), or `DOSQL_SHARED`.
pub fn testdata() -> PathBuf {
    match std::env::var_os("DOSQL_SHARED") {
        Some(dir) => PathBuf::from(dir).join("testdata"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata"),
    }
}

/// Every row of `sql`, as SQLite values.
pub fn rows(conn: &Connection, sql: &str) -> Vec<Vec<Value>> {
    let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

pub fn integrity(conn: &Connection) -> String {
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// A small deterministic PRNG (splitmix64): tests print the seed, and the same seed replays
/// the same run on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
