//! History as a property. Seeded random work on a database in the Durable Object layout (SQL
//! transactions of many pages, deletes that shrink the file, VACUUM, imports, restores)
//! records the SHA-256 of the database image at every txid; then the image rebuilt from the
//! log at every txid of the window equals it, restores reproduce it, pruning keeps every
//! restore point inside the window, and the head's checksum equals one computed from scratch
//! by a CRC written here, independently of the crate's.
//!
//! `DOSQL_SEED=<n>` replays one seed.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use dosql_layout::{DoStore, MemKv, StorageKind};
use dosql_pagestore::{PageNo, PageSize, codec};
use serde_json::json;

mod common;
use common::*;

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
        let bytes = image(store, t);
        if let Some(want) = seen.get(&t) {
            assert_eq!(&sha(&bytes), want, "seed {seed}: image at txid {t}");
        }
        // The checksum the log recorded for that state is the state's.
        if let Some(c) = store.image_of(t).unwrap().checksum {
            assert_eq!(
                c,
                ltx_checksum(&bytes, 1024),
                "seed {seed}: checksum at txid {t}"
            );
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
                let lineage = store.record().lineage;
                let r = store.restore(at).unwrap();
                assert_eq!(r.from, at);
                assert_ne!(
                    store.record().lineage,
                    lineage,
                    "a restore starts a new lineage"
                );
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
