//! History under storage faults. For each operation that writes (a commit, a restore that
//! rewrites pages, a restore that copies, an import's switch, pruning), each of its storage
//! writes fails in turn, refused or applied with the acknowledgement lost, and each of its
//! reads fails in turn. Afterwards, opened afresh: the database is the state before or the
//! state after (after only if the operation said it succeeded), every txid of the history
//! window rebuilds to its reference image, and the checksum is the database's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

use dosql_layout::{DoStore, FaultKv, HistoryConfig, MemKv, StorageKind};
use dosql_pagestore::{Commit, Fault, Page, PageNo, PageSize, PageStore, StoreError, codec};
use serde_json::json;
use sha2::{Digest, Sha256};

static NOW: AtomicI64 = AtomicI64::new(1_700_000_000_000);

fn now() -> i64 {
    NOW.load(Ordering::Relaxed)
}

const SIZE: u32 = 512;
const HISTORY: HistoryConfig = HistoryConfig {
    enabled: true,
    retention_ms: 60_000,
    max_bytes: 64 << 20,
};

fn open<K: dosql_layout::Kv>(kv: K) -> Result<DoStore<K>, StoreError> {
    Ok(DoStore::open(kv, PageSize::new(SIZE).unwrap())?
        .with_history(HISTORY)
        .with_clock(now))
}

fn page(seed: u64, no: u32) -> Page {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(no);
    let mut p = vec![0u8; SIZE as usize];
    // Half zeros, half noise: compressible like a B-tree page.
    for b in p.iter_mut().take(SIZE as usize / 2) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    Page::from(p)
}

fn commit(
    store: &mut impl PageStore,
    seed: u64,
    count: u32,
    pages: &[u32],
) -> Result<(), StoreError> {
    let pages = pages
        .iter()
        .filter(|&&n| n <= count)
        .map(|&n| (PageNo::new(n).unwrap(), page(seed, n)))
        .collect();
    store.commit(Commit {
        page_count: count,
        pages,
    })?;
    Ok(())
}

fn image<K: dosql_layout::Kv>(store: &mut DoStore<K>, at: u64) -> [u8; 32] {
    let count = store.image_of(at).unwrap().page_count;
    let nos: Vec<PageNo> = (1..=count).filter_map(PageNo::new).collect();
    let mut sha = Sha256::new();
    for v in store.values_at(at, &nos).unwrap() {
        match v {
            Some(v) => sha.update(
                codec::decode_page(&v, PageSize::new(SIZE).unwrap())
                    .unwrap()
                    .as_bytes(),
            ),
            None => sha.update(vec![0u8; SIZE as usize]),
        }
    }
    sha.finalize().into()
}

/// A database with history: a few commits growing, rewriting and shrinking it.
fn base(kind: StorageKind) -> (MemKv, BTreeMap<u64, [u8; 32]>) {
    let mut store = open(MemKv::new(kind)).unwrap();
    commit(&mut store, 1, 40, &(1..=40).collect::<Vec<_>>()).unwrap();
    commit(&mut store, 2, 40, &[1, 3, 5, 7]).unwrap();
    commit(&mut store, 3, 25, &[1, 2]).unwrap();
    commit(&mut store, 4, 60, &(1..=60).step_by(2).collect::<Vec<_>>()).unwrap();
    commit(&mut store, 5, 60, &[1, 59]).unwrap();
    import(&mut store, 6, 30).unwrap();
    commit(&mut store, 7, 32, &[2, 31, 32]).unwrap();
    let mut seen = BTreeMap::new();
    for t in 0..=store.record().txid {
        seen.insert(t, image(&mut store, t));
    }
    (store.into_kv(), seen)
}

/// An import of `count` pages: staged in a new generation, then switched to.
fn import<K: dosql_layout::Kv>(
    store: &mut DoStore<K>,
    seed: u64,
    count: u32,
) -> Result<(), StoreError> {
    let st = store.begin_import(PageSize::new(SIZE).unwrap(), count)?;
    let values = (1..=count)
        .map(|n| codec::encoded(&page(seed, n)))
        .collect();
    store.stage_import(st.generation, 1, values)?;
    store.switch_import(st.generation, None, json!({ "import": count }))?;
    Ok(())
}

type Op = fn(&mut DoStore<FaultKv<MemKv>>) -> Result<(), StoreError>;

/// Runs `op` on a copy of `kv`: its storage calls counted, no faults.
fn dry_run(kv: &MemKv, op: Op) -> (u64, u64, MemKv) {
    let (fkv, faults) = FaultKv::new(kv.clone());
    let mut store = open(fkv).unwrap();
    let (g0, a0) = (faults.gets(), faults.applies());
    op(&mut store).unwrap();
    let (gets, applies) = (faults.gets() - g0, faults.applies() - a0);
    (gets, applies, store.into_kv().inner().clone())
}

fn check(name: &str, kind: StorageKind, op: Op) {
    let (kv, seen) = base(kind);
    let (gets, applies, after_kv) = dry_run(&kv, op);
    let before_head = open(kv.clone()).unwrap().record().clone();
    let mut after = open(after_kv).unwrap();
    let after_txid = after.record().txid;
    let after_sha = image(&mut after, after_txid);
    let before_sha = seen[&before_head.txid];
    let mut cases = 0;
    let mut outcome = |fail: &dyn Fn(&dosql_layout::KvFaults)| {
        let (fkv, faults) = FaultKv::new(kv.clone());
        let mut store = open(fkv).unwrap();
        fail(&faults);
        let result = op(&mut store);
        let inner = store.into_kv().inner().clone();
        let mut fresh = open(inner).unwrap();
        let txid = fresh.record().txid;
        let sha = image(&mut fresh, txid);
        let what = format!("{name} ({kind:?}), case {cases}: {result:?}");
        if result.is_ok() {
            assert_eq!(sha, after_sha, "{what}: succeeded, so the state after");
        } else {
            assert!(
                sha == before_sha || sha == after_sha,
                "{what}: neither the state before nor after"
            );
        }
        // The history: every txid the window keeps that existed before rebuilds as it was.
        let (oldest, _) = fresh.window();
        for (t, want) in seen.range(oldest..) {
            if *t <= before_head.txid {
                assert_eq!(&image(&mut fresh, *t), want, "{what}: txid {t}");
            }
        }
        if let Some(c) = fresh.record().checksum.known() {
            assert_eq!(c, fresh.compute_checksum().unwrap(), "{what}: checksum");
        }
        cases += 1;
    };
    for n in 1..=applies {
        for fault in [Fault::Error, Fault::LostAck] {
            outcome(&|f: &dosql_layout::KvFaults| f.fail_apply_at(f.applies() + n, fault));
        }
    }
    for n in 1..=gets {
        outcome(&|f: &dosql_layout::KvFaults| f.fail_get_at(f.gets() + n));
    }
    assert!(
        cases >= 2,
        "{name}: {applies} writes, {gets} reads: nothing was tried"
    );
}

#[test]
fn every_write_and_read_of_history_operations_fails_in_turn() {
    for kind in [StorageKind::SqliteBacked, StorageKind::Classic] {
        check("a commit", kind, |s| commit(s, 9, 70, &[1, 2, 3, 61, 70]));
        check("a commit that shrinks", kind, |s| commit(s, 9, 10, &[1]));
        check("a restore that rewrites pages", kind, |s| {
            let r = s.restore(6)?;
            assert!(
                !r.switched,
                "a restore after the last switch rewrites pages"
            );
            Ok(())
        });
        // Before the import's switch the pages differ wholesale: the restore copies.
        check("a restore that copies", kind, |s| {
            let r = s.restore(2)?;
            assert!(r.switched, "a restore across a switch copies");
            Ok(())
        });
        check("a restore to the empty database", kind, |s| {
            s.restore(0).map(|_| ())
        });
        check("an import's switch", kind, |s| import(s, 8, 3));
        check("pruning", kind, |s| {
            NOW.store(1_700_000_000_000 + 120_000, Ordering::Relaxed);
            let r = (|| {
                while s.maintain(8)?.more {}
                Ok(())
            })();
            NOW.store(1_700_000_000_000, Ordering::Relaxed);
            r
        });
    }
}
