//! SQLite's sqllogictest scripts through the Durable Object over HTTP, record by record
//! against plain SQLite of the same build: zero differences.

use std::path::PathBuf;

use dosql_e2e::{HttpEngine, Server, testdata};
use dosql_slt::{parse, run_differential};
use rusqlite::Connection;

#[test]
fn sqllogictest_over_http_matches_plain_sqlite() {
    let server = Server::start();
    let root = testdata().join("sqllogictest");
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in [root.clone(), root.join("evidence")] {
        let mut more: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "test"))
            .collect();
        more.sort();
        files.extend(more);
    }
    assert!(files.len() >= 17);
    let tmp = tempfile::tempdir().unwrap();
    let (mut differences, mut records, mut summary) = (0, 0, String::new());
    let mut divergences = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let name = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let parsed = parse(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut engine = HttpEngine(server.db(&format!("slt-{i}")));
        let mut oracle = Connection::open(tmp.path().join(format!("{i}.sqlite"))).unwrap();
        oracle.execute_batch("PRAGMA synchronous=OFF").unwrap();
        let mut report = run_differential(&parsed, &mut engine, &mut oracle);
        report.name = name.clone();
        records += report.records;
        differences += report.differences.len();
        divergences.extend(report.divergences.iter().map(|d| (name.clone(), d.line)));
        summary += &report.to_string();
        let integrity = engine.0.rows("PRAGMA integrity_check");
        assert_eq!(integrity[0][0], "ok", "{name}");
    }
    println!("sqllogictest over HTTP: {records} records\n{summary}");
    assert_eq!(
        differences, 0,
        "dosql over HTTP differs from plain SQLite:\n{summary}"
    );
    assert_eq!(
        divergences,
        vec![("evidence/slt_lang_aggfunc.test".to_owned(), 480)],
        "only the known divergence between SQLite 3.54 and the scripts:\n{summary}"
    );
}
