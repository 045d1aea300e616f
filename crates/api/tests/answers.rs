//! The API's answers, byte for byte, against `answers.txt` (with `duration_ms` masked): the
//! JSON is written by hand (lib.rs, value.rs), so its shape, key order and escaping are pinned
//! here. After an intended change: `DOSQL_BLESS=1 cargo test -p dosql-api --test answers`.

use dosql_api::Session;
use dosql_pagestore::{MemStore, PageSize};
use dosql_vfs::VfsConfig;

#[test]
fn answers_are_the_recorded_bytes() {
    let mut s = Session::open(
        "golden",
        MemStore::new(PageSize::DEFAULT),
        VfsConfig::default(),
    )
    .unwrap();
    let reqs: Vec<(&str, &str)> = vec![
        (
            "q",
            r#"{"sql": "CREATE TABLE t(a INTEGER PRIMARY KEY, b, c)"}"#,
        ),
        (
            "q",
            r#"{"sql": "INSERT INTO t(b, c) VALUES (?, ?)", "params": ["héllo \"x\"\n\u0001", 2.5]}"#,
        ),
        (
            "q",
            r#"{"sql": "INSERT INTO t(b, c) VALUES (:b, :c)", "params": {"b": {"base64": "AAEC/w=="}, "c": {"int": "9007199254740993"}}}"#,
        ),
        (
            "q",
            r#"{"sql": "INSERT INTO t(b, c) VALUES (?, ?)", "params": [{"float": "inf"}, -0.0]}"#,
        ),
        (
            "q",
            r#"{"sql": "INSERT INTO t(b, c) VALUES (?, ?)", "params": [null, true]}"#,
        ),
        ("q", r#"{"sql": "SELECT * FROM t ORDER BY a"}"#),
        (
            "q",
            r#"{"sql": "SELECT a FROM t ORDER BY a", "max_rows": 2, "row_offset": 1}"#,
        ),
        (
            "q",
            r#"{"sql": "SELECT a FROM t ORDER BY a", "max_rows": 9, "row_offset": 3}"#,
        ),
        ("q", r#"{"sql": "PRAGMA writable_schema = 1"}"#),
        (
            "q",
            r#"{"sql": "SELECT 1e300, -1e-300, 3.0, 1.5, 123456789012, -9223372036854775808, x'00ff', 'a' || char(0) || 'b' AS z"}"#,
        ),
        (
            "q",
            r#"{"sql": "SELECT 1; SELECT 2 AS two; INSERT INTO t(b) VALUES (1)"}"#,
        ),
        ("q", r#"{"sql": "UPDATE t SET c = 1"}"#),
        ("q", r#"{"sql": "SELECT * FROM t WHERE 0"}"#),
        (
            "b",
            r#"[{"sql": "INSERT INTO t(b) VALUES (?)", "params": [7]}, {"sql": "SELECT count(*) AS n FROM t"}, {"sql": "SELECT b FROM t WHERE b = 7"}]"#,
        ),
        ("b", r#"[]"#),
        ("q", r#"{"sql": "SELECT nope"}"#),
        ("q", r#"{"sql": "SELECT ?", "params": [[1]]}"#),
        ("q", r#"{"sql": "SELECT ?", "params": 5}"#),
        ("q", r#"{"sql": "SELECT ?", "extra": 5}"#),
        ("q", r#"{"sql": 5}"#),
        ("q", r#"{"sql": "SELECT 'a\u00e9\ud83d\ude00'"}"#),
        ("b", r#"{"sql": "SELECT 1"}"#),
        (
            "b",
            r#"[{"sql": "INSERT INTO t(b) VALUES (1)"}, {"sql": "INSERT INTO nope VALUES (1)"}]"#,
        ),
    ];
    let mut out = String::new();
    for (kind, body) in reqs {
        let r = if kind == "q" {
            s.query(body.as_bytes())
        } else {
            s.batch(body.as_bytes())
        };
        let text = String::from_utf8(r.body).unwrap();
        // The duration is the one field that varies from run to run.
        let masked = text
            .find("\"duration_ms\":")
            .map(|i| {
                let end = text[i..].find(',').unwrap() + i;
                format!("{}\"duration_ms\":X{}", &text[..i], &text[end..])
            })
            .unwrap_or(text);
        out.push_str(&format!("{} {}\n", r.status, masked));
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/answers.txt");
    if std::env::var_os("DOSQL_BLESS").is_some() {
        std::fs::write(&path, &out).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    for (i, (got, want)) in out.lines().zip(want.lines()).enumerate() {
        assert_eq!(got, want, "answer {} differs", i + 1);
    }
    assert_eq!(out.lines().count(), want.lines().count());
}
