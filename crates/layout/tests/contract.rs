//! The `PageStore` contract, run against the Durable Object layout over every KV: in memory
//! (classic and SQLite-backed storage), through the fault wrapper with no faults armed, and
//! in a redb file.

use dosql_layout::{DoStore, FaultKv, MemKv, RedbKv, StorageKind};
use dosql_pagestore::{PageSize, PageStore, contract};

const KINDS: [StorageKind; 2] = [StorageKind::Classic, StorageKind::SqliteBacked];

#[test]
fn the_layout_over_memory_keeps_the_contract() {
    for kind in KINDS {
        for size in [512, 4096, 65536] {
            let size = PageSize::new(size).unwrap();
            contract::run_all(&mut || {
                Box::new(DoStore::open(MemKv::new(kind), size).unwrap()) as Box<dyn PageStore>
            });
        }
    }
}

#[test]
fn the_layout_over_the_fault_wrapper_keeps_the_contract() {
    for kind in KINDS {
        contract::run_all(&mut || {
            let (kv, _faults) = FaultKv::new(MemKv::new(kind));
            Box::new(DoStore::open(kv, PageSize::DEFAULT).unwrap()) as Box<dyn PageStore>
        });
    }
}

#[test]
fn the_layout_over_redb_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    for kind in KINDS {
        for size in [512, 4096, 65536] {
            let size = PageSize::new(size).unwrap();
            contract::run_all(&mut || {
                n += 1;
                let kv = RedbKv::open(dir.path().join(format!("store-{n}.redb")), kind).unwrap();
                Box::new(DoStore::open(kv, size).unwrap()) as Box<dyn PageStore>
            });
        }
    }
}
