//! Databases with history as this release writes them (head format 5 with its checksum and
//! log window, log records format 1 under `l:` keys): `tests/golden/history-*.json`, written
//! by this test with `DOSQL_BLESS_GOLDEN=1` at git c2a3e80's layout (unchanged since release
//! 6c5aa8d). A later format must keep reading them: every txid of their window rebuilds to
//! the SHA-256 recorded when they were written, the checksums hold, a restore and a new
//! commit work.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use common::*;
use dosql_layout::value::bytes_of;
use dosql_layout::{HeadRow, MemKv, StorageKind, Value};
use dosql_pagestore::{PageSize, codec};
use serde_json::{Value as Json, json};

fn path(kind: StorageKind) -> PathBuf {
    let name = match kind {
        StorageKind::Classic => "classic",
        StorageKind::SqliteBacked => "sqlite",
    };
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/history-{name}.json"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Builds a database with history: commits, a shrink, a restore, an import, a commit after.
fn build(kind: StorageKind) -> Shared {
    let size = PageSize::new(1024).unwrap();
    let kv: Shared = Arc::new(Mutex::new(MemKv::new(kind)));
    sql(&kv, size, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    for i in 0..6 {
        tick(1000);
        sql(
            &kv,
            size,
            &format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<30) \
                 INSERT INTO t(v) SELECT printf('%d-%d-%.*c', {i}, i, 300, 'x') FROM n"
            ),
        );
    }
    tick(1000);
    sql(
        &kv,
        size,
        "DELETE FROM t WHERE id % 3 = 0; UPDATE t SET v = 'y' WHERE id % 5 = 0",
    );
    tick(1000);
    sql(&kv, size, "DELETE FROM t WHERE id > 40");
    tick(1000);
    sql(&kv, size, "VACUUM");
    tick(1000);
    open(&kv, size).restore(4).unwrap();
    tick(1000);
    {
        let mut s = open(&kv, size);
        let bytes = image(&mut s, 6);
        let st = s.begin_import(size, (bytes.len() / 1024) as u32).unwrap();
        let values = bytes.chunks(1024).map(codec::encoded).collect();
        s.stage_import(st.generation, 1, values).unwrap();
        s.switch_import(st.generation, None, json!({"import": "golden"}))
            .unwrap();
    }
    tick(1000);
    sql(&kv, size, "INSERT INTO t(v) VALUES ('after the import')");
    kv
}

fn dump(kv: &Shared) -> Json {
    let size = PageSize::new(1024).unwrap();
    let mut store = open(kv, size);
    let (oldest, newest) = store.window();
    let mut images = serde_json::Map::new();
    for t in oldest..=newest {
        let (checksum, page_count) = {
            let idx = store.image_of(t).unwrap();
            (idx.checksum, idx.page_count)
        };
        images.insert(
            t.to_string(),
            json!({
                "sha256": hex(&sha(&image(&mut store, t))),
                "checksum": checksum.map(|c| format!("{c:016x}")),
                "page_count": page_count,
            }),
        );
    }
    drop(store);
    let m = kv.lock().unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let data: serde_json::Map<String, Json> = m
        .data()
        .iter()
        .map(|(k, v)| {
            let j = match v {
                Value::Bytes(b) => json!({ "$bytes": b64(b) }),
                Value::Structured(j) => j.clone(),
            };
            (k.clone(), j)
        })
        .collect();
    let row = m.stored_head_row().map(|r| {
        json!({ "head": r.text, "inline": r.blob.as_deref().map(|b| json!({ "$bytes": b64(b) })) })
    });
    json!({ "page_size": 1024, "kv": data, "head_row": row, "window": [oldest, newest], "images": images })
}

fn load(kind: StorageKind) -> (Shared, Json) {
    let text = std::fs::read_to_string(path(kind)).unwrap();
    let j: Json = serde_json::from_str(&text).unwrap();
    let data: BTreeMap<String, Value> = j["kv"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let value = match bytes_of(v) {
                Some(b) => Value::Bytes(b),
                None => Value::Structured(v.clone()),
            };
            (k.clone(), value)
        })
        .collect();
    let row = match &j["head_row"] {
        Json::Null => None,
        r => Some(HeadRow {
            text: r["head"].as_str().unwrap().to_owned(),
            blob: bytes_of(&r["inline"]),
        }),
    };
    let kv = Arc::new(Mutex::new(MemKv::with_contents(kind, data, row)));
    (kv, j)
}

#[test]
fn databases_with_history_of_this_release_rebuild_every_txid() {
    for kind in [StorageKind::SqliteBacked, StorageKind::Classic] {
        if std::env::var_os("DOSQL_BLESS_GOLDEN").is_some() {
            let kv = build(kind);
            let text = serde_json::to_string_pretty(&dump(&kv)).unwrap();
            std::fs::write(path(kind), text + "\n").unwrap();
        }
        let (kv, j) = load(kind);
        let size = PageSize::new(1024).unwrap();
        let mut store = open(&kv, size);
        let window = (
            j["window"][0].as_u64().unwrap(),
            j["window"][1].as_u64().unwrap(),
        );
        assert_eq!(store.window(), window, "{kind:?}");
        for (t, want) in j["images"].as_object().unwrap() {
            let t: u64 = t.parse().unwrap();
            assert_eq!(
                hex(&sha(&image(&mut store, t))),
                want["sha256"],
                "{kind:?} txid {t}"
            );
            let checksum = store.image_of(t).unwrap().checksum;
            assert_eq!(
                json!(checksum.map(|c| format!("{c:016x}"))),
                want["checksum"],
                "{kind:?} txid {t}"
            );
        }
        assert_eq!(
            store.record().checksum.known(),
            Some(store.compute_checksum().unwrap())
        );
        // A restore and a new commit on top.
        let (oldest, newest) = store.window();
        store.restore(oldest).unwrap();
        assert_eq!(
            hex(&sha(&image(&mut store, newest + 1))),
            j["images"][oldest.to_string()]["sha256"]
        );
        drop(store);
        sql(
            &kv,
            size,
            "CREATE TABLE IF NOT EXISTS later(x); INSERT INTO later VALUES (1)",
        );
        let mut store = open(&kv, size);
        assert!(
            store.record().txid > newest + 1,
            "the commit after the restore"
        );
        assert_eq!(
            store.record().checksum.known(),
            Some(store.compute_checksum().unwrap())
        );
    }
}
