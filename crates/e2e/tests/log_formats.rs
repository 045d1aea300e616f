//! Histories written by release 6c5aa8d's commit log format (records under kv keys
//! `l:<txid>` on both storage kinds; the data directory `crates/e2e/golden/
//! release-0ce0a5a-history-data.tar.gz`, what it answered in `release-0ce0a5a-history.json`)
//! are read by this code, which keeps new records of SQLite-backed storage as rows of a
//! table: the same commits and checksums, every old txid restorable, new commits beside the
//! old ones, a restore to a state only the old records rebuild, a restart. (Where the records
//! go, and deleting both kinds when the history is pruned: worker/test/kv.test.mjs.)

use dosql_e2e::{Server, repo};
use serde_json::{Value as Json, json};

fn unpack() -> tempfile::TempDir {
    dosql_e2e::unpack_golden("release-0ce0a5a-history-data.tar.gz")
}

#[test]
fn histories_in_the_kv_log_format_are_read_and_restored_beside_new_records() {
    let golden: Json = serde_json::from_str(
        &std::fs::read_to_string(repo().join("crates/e2e/golden/release-0ce0a5a-history.json"))
            .unwrap(),
    )
    .unwrap();
    for storage in ["sqlite", "classic"] {
        let dir = unpack();
        let data = dir.path().join("data");
        let env = [
            ("DOSQL_STORAGE", storage),
            ("DOSQL_MAINTAIN_DELAY_MS", "100"),
        ];
        let mut server = Server::start_on_with_env(&data, &env);
        let db = server.db("hist");
        assert_eq!(
            db.history_summary(),
            golden[storage],
            "{storage}: the history as written"
        );
        // Every txid the old records rebuild, by the checksum of its restore.
        let want: Vec<(u64, String)> = golden[storage]["commits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["txid"].as_u64().unwrap(),
                    c["checksum"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        for (t, sum) in want.iter().filter(|(t, _)| [1, 4, 9, 11].contains(t)) {
            let r = db.restore(*t);
            assert_eq!(
                r["checksum"].as_str(),
                Some(sum.as_str()),
                "{storage}: txid {t}"
            );
        }
        // New commits (their records: rows on SQLite-backed storage) beside the old ones.
        db.restore(13);
        db.query("INSERT INTO t(v) VALUES ('new')", json!([])).ok();
        let now = db.send("GET", "/history?limit=1", None).unwrap().ok();
        let newest = now["txid"].as_u64().unwrap();
        // A state only the old records rebuild, restored through the new ones; and back.
        let r = db.restore(5);
        assert_eq!(
            r["checksum"].as_str(),
            want.iter().find(|(t, _)| *t == 5).map(|(_, s)| s.as_str())
        );
        assert_eq!(db.int("SELECT count(*) FROM t"), 12);
        let back = db.restore(newest);
        assert_eq!(back["checksum"], now["checksum"]);
        assert_eq!(db.int("SELECT count(*) FROM t WHERE v = 'new'"), 1);
        assert_eq!(db.rows("PRAGMA integrity_check"), vec![json!(["ok"])]);
        // A restart keeps all of it.
        server.restart_with_env(&env);
        let db = server.db("hist");
        let all = db.send("GET", "/history?limit=1000", None).unwrap().ok();
        assert_eq!(
            all["window"]["oldest_txid"], 0,
            "{storage}: {}",
            all["window"]
        );
        server.stop();
    }
}
