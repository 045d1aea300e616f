//! Pages as rows (`keys::Generation::page_rows`): a database first committed to on
//! SQLite-backed storage lives in a row generation, classic storage never does, and an import
//! an earlier release staged under kv keys is not switched in over rows (whose history that
//! release would read as zeros): it is refused with a clear error, and beginning it again
//! stages rows.

use std::sync::{Arc, Mutex};

use dosql_layout::{Generation, Key, Kv, MemKv, StorageKind, Transfer, WritePlan};
use dosql_pagestore::{PageSize, codec};
use serde_json::json;

mod common;
use common::*;

fn image_pages(size: PageSize) -> Vec<Vec<u8>> {
    let kv: Shared = Arc::new(Mutex::new(MemKv::new(StorageKind::SqliteBacked)));
    sql(
        &kv,
        size,
        "CREATE TABLE x(v); INSERT INTO x VALUES (1), (2), (3)",
    );
    let mut store = open(&kv, size);
    let txid = store.record().txid;
    image(&mut store, txid)
        .chunks(size.bytes())
        .map(codec::encoded)
        .collect()
}

#[test]
fn new_databases_are_row_generations_on_sqlite_backed_storage_only() {
    let size = PageSize::DEFAULT;
    for (kind, rows) in [
        (StorageKind::SqliteBacked, true),
        (StorageKind::Classic, false),
    ] {
        let kv: Shared = Arc::new(Mutex::new(MemKv::new(kind)));
        sql(
            &kv,
            size,
            "CREATE TABLE t(v); INSERT INTO t VALUES (zeroblob(30000))",
        );
        let store = open(&kv, size);
        assert_eq!(store.record().generation.page_rows(), rows, "{kind:?}");
        let spelled = if rows { "g1048576:p:" } else { "p:" };
        let keys: Vec<String> = kv.lock().unwrap().data().keys().cloned().collect();
        assert!(
            keys.iter().any(|k| k.starts_with(spelled)),
            "{kind:?}: {keys:?}"
        );
    }
}

#[test]
fn an_import_staged_under_keys_by_an_earlier_release_is_not_switched_in_over_rows() {
    let size = PageSize::DEFAULT;
    let kv: Shared = Arc::new(Mutex::new(MemKv::new(StorageKind::SqliteBacked)));
    // What an earlier release left: an import of 3 pages staged under `g1:p:` keys, no head.
    let mut old = Transfer::new();
    old.next_gen = 2;
    old.staging = Some(dosql_layout::Staging {
        generation: Generation(1),
        page_size: size.get(),
        page_count: 3,
        next: 1,
        checksum: 0,
    });
    kv.lock()
        .unwrap()
        .apply(&WritePlan {
            puts: vec![(Key::Transfer, old.encode())],
            ..WritePlan::default()
        })
        .unwrap();
    // This code commits meanwhile: the database's pages are rows.
    sql(
        &kv,
        size,
        "CREATE TABLE mine(v); INSERT INTO mine VALUES ('kept')",
    );
    let mut store = open(&kv, size);
    assert!(store.record().generation.page_rows());
    let pages = image_pages(size);
    let e = store
        .stage_import(Generation(1), 1, pages.clone())
        .unwrap_err();
    assert!(e.message().contains("begin the import again"), "{e}");
    let e = store
        .switch_import(Generation(1), None, json!({"import": 1}))
        .unwrap_err();
    assert!(e.message().contains("begin the import again"), "{e}");
    assert!(store.record().generation.page_rows(), "nothing switched");
    // Begun again, it stages rows and switches in.
    let s = store.begin_import(size, pages.len() as u32).unwrap();
    assert!(s.generation.page_rows(), "{:?}", s.generation);
    store.stage_import(s.generation, 1, pages).unwrap();
    store
        .switch_import(s.generation, None, json!({"import": 2}))
        .unwrap();
    assert_eq!(store.record().generation, s.generation);
    let db = attach(store);
    let conn = db.connect().unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM x", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);
}
