//! Databases written by release 12121ec (tests/golden: meta format 3 on classic storage, head
//! format 4 on SQLite-backed storage; pages inline, under keys, shrunk, 16 KiB pages, an import
//! switched in with garbage left, an import staged) open with this code and answer what that
//! release answered; their next commit moves them to format 5 and they keep answering; a
//! staged import goes on where it stopped. The local store file of that release moves to this
//! layout. Formats 1 and 2, which that release read but no longer wrote, are built by hand.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use dosql_layout::value::bytes_of;
use dosql_layout::{
    DoStore, Generation, HEAD_FORMAT, HeadRow, Kv, MemKv, RedbKv, StorageKind, Value,
};
use dosql_pagestore::{PageNo, PageSize, PageStore};
use dosql_vfs::{Database, VfsConfig};
use rusqlite::types::Value as Sql;
use serde_json::{Value as Json, json};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

struct Golden {
    name: String,
    kind: StorageKind,
    page_size: PageSize,
    txid: u64,
    kv: MemKv,
    answers: Vec<(String, Json)>,
}

fn value(v: &Json) -> Value {
    match bytes_of(v) {
        Some(b) => Value::Bytes(b),
        None => Value::Structured(v.clone()),
    }
}

fn load(name: &str) -> Golden {
    let text = std::fs::read_to_string(golden_dir().join(format!("{name}.json"))).unwrap();
    let j: Json = serde_json::from_str(&text).unwrap();
    let kind = match j["storage"].as_str().unwrap() {
        "classic" => StorageKind::Classic,
        _ => StorageKind::SqliteBacked,
    };
    let data: BTreeMap<String, Value> = j["kv"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), value(v)))
        .collect();
    let row = match &j["head_row"] {
        Json::Null => None,
        r => Some(HeadRow {
            text: r["head"].as_str().unwrap().to_owned(),
            blob: match &r["inline"] {
                Json::Null => None,
                b => Some(bytes_of(b).unwrap()),
            },
        }),
    };
    Golden {
        name: name.to_owned(),
        kind,
        page_size: PageSize::new(j["page_size"].as_u64().unwrap() as u32).unwrap(),
        txid: j["head"]["txid"].as_u64().unwrap(),
        kv: MemKv::with_contents(kind, data, row),
        answers: j["answers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["sql"].as_str().unwrap().to_owned(), a["rows"].clone()))
            .collect(),
    }
}

/// A cell as dosql's JSON API writes it (the golden answers came from it).
fn json_of(v: Sql) -> Json {
    match v {
        Sql::Null => Json::Null,
        Sql::Integer(i) => json!(i),
        Sql::Real(f) => json!(f),
        Sql::Text(t) => json!(t),
        Sql::Blob(b) => json!({"base64": base64::engine::general_purpose::STANDARD.encode(b)}),
    }
}

fn attach<K: Kv + Send + 'static>(store: DoStore<K>) -> Database {
    static N: AtomicUsize = AtomicUsize::new(0);
    Database::attach(
        &format!("golden-{}", N.fetch_add(1, Ordering::Relaxed)),
        store,
        VfsConfig::default(),
    )
    .unwrap()
}

fn rows(db: &Database, sql: &str) -> Json {
    let conn = db.connect().unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    let rows: Vec<Json> = stmt
        .query_map([], |r| {
            Ok(Json::Array(
                (0..n).map(|i| json_of(r.get(i).unwrap())).collect(),
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    Json::Array(rows)
}

const NAMES: [&str; 6] = ["inline", "grown", "shrunk", "16k", "imported", "staging"];

#[test]
fn databases_of_release_12121ec_answer_as_they_did_and_move_to_format_5() {
    for kind in ["classic", "sqlite"] {
        for name in NAMES {
            let g = load(&format!("{kind}-{name}"));
            let store = DoStore::open(g.kv.clone(), PageSize::DEFAULT).unwrap();
            assert_eq!(
                store.stored_format(),
                if g.kind == StorageKind::Classic { 3 } else { 4 },
                "{}",
                g.name
            );
            assert_eq!(store.record().txid, g.txid, "{}", g.name);
            assert_eq!(store.record().page_size, g.page_size, "{}", g.name);
            let db = attach(store);
            for (sql, want) in &g.answers {
                assert_eq!(&rows(&db, sql), want, "{}: {sql}", g.name);
            }
            // The next commit writes format 5; the database keeps its content.
            db.connect()
                .unwrap()
                .execute_batch("INSERT INTO t(v) VALUES ('format 5')")
                .unwrap();
            drop(db);
        }
    }
}

type Shared = Arc<Mutex<MemKv>>;

#[test]
fn after_their_next_commit_they_are_format_5_and_still_answer() {
    for kind in ["classic", "sqlite"] {
        for name in NAMES {
            let g = load(&format!("{kind}-{name}"));
            let kv: Shared = Arc::new(Mutex::new(g.kv.clone()));
            let db = attach(DoStore::open(kv.clone(), PageSize::DEFAULT).unwrap());
            let before = rows(&db, "SELECT * FROM t ORDER BY id");
            db.connect()
                .unwrap()
                .execute_batch("INSERT INTO t(v) VALUES ('format 5')")
                .unwrap();
            drop(db);
            let store = DoStore::open(kv.clone(), PageSize::DEFAULT).unwrap();
            assert_eq!(store.stored_format(), HEAD_FORMAT, "{}", g.name);
            assert_eq!(store.record().txid, g.txid + 1, "{}", g.name);
            {
                let kv = kv.lock().unwrap();
                match g.kind {
                    StorageKind::Classic => assert!(
                        matches!(kv.data().get("meta"), Some(Value::Bytes(_))),
                        "{}",
                        g.name
                    ),
                    StorageKind::SqliteBacked => {
                        assert_eq!(kv.stored_head_row().unwrap().text, r#"{"format":5}"#);
                        assert!(
                            dosql_layout::head::is_pointer(kv.data().get("meta").unwrap()),
                            "{}: the pointer stays",
                            g.name
                        );
                    }
                }
            }
            let db = attach(store);
            let mut after = before.as_array().unwrap().clone();
            let last_id = after.last().map_or(0, |r| r[0].as_i64().unwrap());
            after.push(json!([last_id + 1, "format 5"]));
            assert_eq!(
                rows(&db, "SELECT * FROM t ORDER BY id"),
                Json::Array(after),
                "{}",
                g.name
            );
            assert_eq!(
                rows(&db, "PRAGMA integrity_check"),
                json!([["ok"]]),
                "{}",
                g.name
            );
        }
    }
}

#[test]
fn imports_of_release_12121ec_go_on_where_they_stopped() {
    for kind in ["classic", "sqlite"] {
        // Garbage left by a switched import is collected; the live generation is untouched.
        let g = load(&format!("{kind}-imported"));
        let kv: Shared = Arc::new(Mutex::new(g.kv.clone()));
        let mut store = DoStore::open(kv.clone(), PageSize::DEFAULT).unwrap();
        assert_eq!(store.record().generation, Generation(1));
        assert_eq!(store.transfer().unwrap().garbage_pages(), 2);
        assert_eq!(store.collect_garbage(4).unwrap(), 0);
        assert!(
            !kv.lock()
                .unwrap()
                .data()
                .keys()
                .any(|k| k.starts_with("p:")),
            "{}",
            g.name
        );
        let db = attach(store);
        for (sql, want) in &g.answers {
            assert_eq!(&rows(&db, sql), want, "{}: {sql}", g.name);
        }
        drop(db);
        // The staged import (1 of its 3 pages stored) goes on: the rest, the switch.
        let g = load(&format!("{kind}-staging"));
        let kv: Shared = Arc::new(Mutex::new(g.kv.clone()));
        let mut store = DoStore::open(kv.clone(), PageSize::DEFAULT).unwrap();
        let staged = store.transfer().unwrap().staging.unwrap();
        assert_eq!(
            (staged.generation, staged.next, staged.page_count),
            (Generation(1), 2, 3)
        );
        // An image of three pages: a real database's (a one-table SQLite file).
        let image = image_of_rows(3);
        let values: Vec<Vec<u8>> = image.chunks(4096).map(<[u8]>::to_vec).collect();
        assert_eq!(values.len(), 3);
        store.stage_import(Generation(1), 1, values).unwrap();
        store
            .switch_import(Generation(1), None, json!({"import": 1}))
            .unwrap();
        assert_eq!(store.record().txid, g.txid + 1);
        let db = attach(store);
        assert_eq!(
            rows(&db, "SELECT count(*) FROM x"),
            json!([[3]]),
            "{}",
            g.name
        );
    }
}

/// A SQLite file of `pages` pages of 4 KiB with a table `x` of three rows.
fn image_of_rows(pages: usize) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.sqlite");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("PRAGMA page_size=4096; PRAGMA journal_mode=DELETE; CREATE TABLE x(v); INSERT INTO x VALUES (1), (2), (3); CREATE TABLE y(v);").unwrap();
    drop(c);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), pages * 4096);
    bytes
}

#[test]
fn formats_1_and_2_read_and_move_to_format_5() {
    let image = image_of_rows(3);
    let pages: Vec<&[u8]> = image.chunks(4096).collect();
    let b64 = |b: &[u8]| json!({"$bytes": base64::engine::general_purpose::STANDARD.encode(b)});
    for kind in [StorageKind::Classic, StorageKind::SqliteBacked] {
        for format in [1, 2] {
            let mut data = BTreeMap::new();
            let mut meta = json!({"format": format, "page_size": 4096, "page_count": 3, "txid": 9});
            for (i, p) in pages.iter().enumerate() {
                if format == 2 && i == 0 {
                    // Format 2 carried page 1 in meta; its key held a stale page.
                    meta["page1"] = b64(p);
                    data.insert("p:0000000001".to_owned(), Value::Bytes(vec![0; 4096]));
                } else {
                    data.insert(format!("p:{:010}", i + 1), Value::Bytes(p.to_vec()));
                }
            }
            data.insert("meta".to_owned(), Value::Structured(meta));
            let kv: Shared = Arc::new(Mutex::new(MemKv::with_contents(kind, data, None)));
            let store = DoStore::open(kv.clone(), PageSize::DEFAULT).unwrap();
            assert_eq!(store.stored_format(), format);
            let db = attach(store);
            assert_eq!(
                rows(&db, "SELECT v FROM x ORDER BY v"),
                json!([[1], [2], [3]])
            );
            db.connect()
                .unwrap()
                .execute_batch("INSERT INTO x VALUES (4)")
                .unwrap();
            drop(db);
            let store = DoStore::open(kv, PageSize::DEFAULT).unwrap();
            assert_eq!(
                (store.stored_format(), store.record().txid),
                (HEAD_FORMAT, 10)
            );
            let db = attach(store);
            assert_eq!(rows(&db, "SELECT count(*) FROM x"), json!([[4]]));
        }
    }
}

#[test]
fn the_local_store_file_of_release_12121ec_moves_to_this_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.redb");
    let mut gz = flate2::read::GzDecoder::new(
        std::fs::File::open(golden_dir().join("redb-12121ec.redb.gz")).unwrap(),
    );
    let mut bytes = Vec::new();
    gz.read_to_end(&mut bytes).unwrap();
    std::fs::write(&path, bytes).unwrap();
    for round in 0..2 {
        let kv = RedbKv::open(&path, StorageKind::Classic).unwrap();
        assert_eq!(
            kv.kind(),
            StorageKind::SqliteBacked,
            "moved as SQLite-backed storage"
        );
        let mut store = DoStore::open(kv, PageSize::DEFAULT).unwrap();
        assert_eq!(store.stored_format(), HEAD_FORMAT);
        assert_eq!(PageStore::head(&mut store).unwrap().txid, 2 + round);
        let db = attach(store);
        assert_eq!(
            rows(&db, "SELECT count(*), max(title) FROM album WHERE year > 0"),
            json!([[2001 + round, "album 999"]])
        );
        assert_eq!(rows(&db, "PRAGMA integrity_check"), json!([["ok"]]));
        db.connect()
            .unwrap()
            .execute_batch("INSERT INTO album(title, year) VALUES ('again', 2027)")
            .unwrap();
    }
    let _ = PageNo::FIRST;
}
