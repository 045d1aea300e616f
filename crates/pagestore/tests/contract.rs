//! The store contract, run against every store this crate has.

use dosql_pagestore::{FaultStore, MemStore, PageSize, PageStore, contract};

#[test]
fn mem_store_keeps_the_contract() {
    for size in [512, 4096, 65536] {
        let size = PageSize::new(size).unwrap();
        contract::run_all(&mut || Box::new(MemStore::new(size)) as Box<dyn PageStore>);
    }
}

#[test]
fn fault_store_without_faults_keeps_the_contract() {
    contract::run_all(&mut || {
        Box::new(FaultStore::new(MemStore::new(PageSize::DEFAULT)).0) as Box<dyn PageStore>
    });
}
