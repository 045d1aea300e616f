//! The runner against small fake engines.

use dosql_slt::{
    Engine, FindingKind, Options, Report, Value, hash_values, parse, run, run_differential,
    run_differential_with, run_with,
};
use std::collections::{HashMap, HashSet};

/// An engine that answers from tables: queries by their exact SQL, and
/// statements succeed unless listed as failing. It logs what it ran.
#[derive(Debug, Default)]
struct Fake {
    answers: HashMap<String, Result<Vec<Vec<Value>>, String>>,
    failing: HashSet<String>,
    log: Vec<String>,
}

impl Fake {
    fn answer(mut self, sql: &str, rows: Vec<Vec<Value>>) -> Self {
        self.answers.insert(sql.to_owned(), Ok(rows));
        self
    }

    fn fail_query(mut self, sql: &str) -> Self {
        self.answers
            .insert(sql.to_owned(), Err(format!("no such thing: {sql}")));
        self
    }

    fn fail_statement(mut self, sql: &str) -> Self {
        self.failing.insert(sql.to_owned());
        self
    }
}

impl Engine for Fake {
    fn statement(&mut self, sql: &str) -> Result<(), String> {
        self.log.push(sql.to_owned());
        if self.failing.contains(sql) {
            Err(format!("failed: {sql}"))
        } else {
            Ok(())
        }
    }

    fn query(&mut self, sql: &str) -> Result<Vec<Vec<Value>>, String> {
        self.log.push(sql.to_owned());
        self.answers
            .get(sql)
            .cloned()
            .unwrap_or_else(|| Err(format!("unknown query: {sql}")))
    }
}

fn ints(values: &[i64]) -> Vec<Vec<Value>> {
    values.iter().map(|v| vec![Value::Integer(*v)]).collect()
}

fn check(report: &Report, run: usize, skipped: usize, passed: usize) {
    assert_eq!(
        (report.run, report.skipped, report.passed),
        (run, skipped, passed),
        "{report}"
    );
}

#[test]
fn a_matching_engine_passes_everything() {
    let script = "\
statement ok
CREATE TABLE t1(x INTEGER)

statement error
CREATE TABLE t1(x INTEGER)

query I rowsort
SELECT x FROM t1
----
1
2
3

query IT nosort
SELECT x, y FROM t2
----
1
(empty)
NULL
NULL
";
    let records = parse(script).unwrap();
    let mut engine = Fake::default()
        .answer("SELECT x FROM t1", ints(&[3, 1, 2]))
        .answer(
            "SELECT x, y FROM t2",
            vec![
                vec![Value::Integer(1), Value::from("")],
                vec![Value::Null, Value::Null],
            ],
        );
    // The second CREATE fails, as the script wants.
    engine.failing.insert("CREATE TABLE t1(x INTEGER)".into());
    let report = run(&records, &mut engine);
    check(&report, 4, 0, 3);
    // The first CREATE was expected to succeed and failed on this fake.
    assert_eq!(report.divergences.len(), 1, "{report}");
    assert_eq!(report.divergences[0].line, 1);
    assert_eq!(report.divergences[0].kind, FindingKind::Statement);

    let mut engine = Fake::default()
        .answer("SELECT x FROM t1", ints(&[3, 1, 2]))
        .answer(
            "SELECT x, y FROM t2",
            vec![
                vec![Value::Integer(1), Value::from("")],
                vec![Value::Null, Value::Null],
            ],
        );
    let report = run(&records, &mut engine);
    // Now the second CREATE succeeds where the script expects an error.
    check(&report, 4, 0, 3);
    assert_eq!(report.divergences[0].line, 4);
    assert_eq!(report.divergences[0].expected, "error");
    assert_eq!(report.divergences[0].got, "ok");
    assert!(report.differences.is_empty());
}

#[test]
fn wrong_values_and_extra_or_missing_rows_are_reported() {
    let script = "\
query I nosort
SELECT 1
----
1

query I nosort
SELECT 2
----
2

query I nosort
SELECT 3
----
3
";
    let records = parse(script).unwrap();
    let mut engine = Fake::default()
        .answer("SELECT 1", ints(&[7]))
        .answer("SELECT 2", ints(&[2, 2]))
        .answer("SELECT 3", vec![]);
    let report = run(&records, &mut engine);
    check(&report, 3, 0, 0);
    let notes: Vec<_> = report
        .divergences
        .iter()
        .map(|f| (f.line, f.kind, f.detail.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        notes,
        vec![
            (
                1,
                FindingKind::WrongResult,
                "first difference at value 1: expected `1`, got `7`".to_owned()
            ),
            (
                6,
                FindingKind::WrongResult,
                "expected 1 values, got 2".to_owned()
            ),
            (
                11,
                FindingKind::WrongResult,
                "expected 1 values, got 0".to_owned()
            ),
        ]
    );
}

#[test]
fn query_errors_and_column_counts() {
    let script = "\
query I nosort
SELECT nothing
----
1

query II nosort
SELECT 1
----
1
1
";
    let records = parse(script).unwrap();
    let mut engine = Fake::default()
        .fail_query("SELECT nothing")
        .answer("SELECT 1", ints(&[1]));
    let report = run(&records, &mut engine);
    check(&report, 2, 0, 0);
    assert!(
        report
            .divergences
            .iter()
            .all(|f| f.kind == FindingKind::QueryError)
    );
    assert!(
        report.divergences[1]
            .got
            .contains("wrong number of result columns")
    );
}

#[test]
fn hashed_results_and_the_threshold() {
    let values: Vec<String> = (1..=9).map(|i| i.to_string()).collect();
    let hash = hash_values(&values);
    let script = format!(
        "\
query I nosort
SELECT nine
----
9 values hashing to {hash}

hash-threshold 0

query I nosort
SELECT nine
----
1
2
3
4
5
6
7
8
9
"
    );
    let records = parse(&script).unwrap();
    let mut engine = Fake::default().answer("SELECT nine", ints(&[1, 2, 3, 4, 5, 6, 7, 8, 9]));
    let report = run(&records, &mut engine);
    check(&report, 2, 0, 2);
    assert!(report.divergences.is_empty(), "{report}");

    // The wrong values under a hash: reported against the hash.
    let mut engine = Fake::default().answer("SELECT nine", ints(&[1, 2, 3, 4, 5, 6, 7, 8, 10]));
    let report = run(&records, &mut engine);
    check(&report, 2, 0, 0);
    assert_eq!(
        report.divergences[0].expected,
        format!("9 values hashing to {hash}")
    );
    assert!(
        report.divergences[0]
            .got
            .starts_with("9 values hashing to ")
    );
    assert_ne!(report.divergences[0].got, report.divergences[0].expected);
}

#[test]
fn skip_rules_for_sqlite() {
    let script = "\
skipif sqlite
statement ok
skipped one

onlyif mysql
statement ok
skipped two

onlyif sqlite
statement ok
ran one

skipif mysql
statement ok
ran two

onlyif SQLite
skipif mssql
statement ok
ran three

onlyif sqlite
skipif sqlite
statement ok
skipped three
";
    let records = parse(script).unwrap();
    let mut engine = Fake::default();
    let report = run(&records, &mut engine);
    assert_eq!(engine.log, ["ran one", "ran two", "ran three"]);
    check(&report, 3, 3, 3);

    // Another engine name flips them.
    let options = Options {
        engine_name: "mysql".into(),
        ..Options::default()
    };
    let mut engine = Fake::default();
    let report = run_with(&records, &mut engine, &options);
    assert_eq!(engine.log, ["skipped one", "skipped two"]);
    check(&report, 2, 4, 2);
}

#[test]
fn halt_stops_unless_skipped() {
    let script = "\
onlyif mssql
halt

statement ok
first

halt

statement ok
never
";
    let records = parse(script).unwrap();
    let mut engine = Fake::default();
    let report = run(&records, &mut engine);
    assert_eq!(report.records, 4);
    assert_eq!(report.halted_at, Some(7));
    check(&report, 1, 1, 1);
    assert_eq!(engine.log, ["first"]);
    assert!(report.to_string().contains("halted at line 7"));
}

#[test]
fn labels_must_agree() {
    let script = "\
query I rowsort label-a
SELECT a1
----
1
2

query I rowsort label-a
SELECT a2
----
1
2

query I nosort label-b
SELECT b1
----
5

query I nosort label-b
SELECT b2
----
5
";
    let records = parse(script).unwrap();
    let good = || {
        Fake::default()
            .answer("SELECT a1", ints(&[2, 1]))
            .answer("SELECT a2", ints(&[1, 2]))
            .answer("SELECT b1", ints(&[5]))
            .answer("SELECT b2", ints(&[5]))
    };
    let report = run(&records, &mut good());
    check(&report, 4, 0, 4);

    // The second label-b query disagrees both with its expected values and
    // with the first label-b result.
    let mut engine = good().answer("SELECT b2", ints(&[6]));
    let report = run(&records, &mut engine);
    check(&report, 4, 0, 3);
    let kinds: Vec<_> = report
        .divergences
        .iter()
        .map(|f| (f.line, f.kind))
        .collect();
    assert_eq!(
        kinds,
        [(18, FindingKind::WrongResult), (18, FindingKind::Label)]
    );
    assert_eq!(
        report.divergences[1].detail.as_deref(),
        Some("labeled result [label-b] does not agree with line 13")
    );
}

#[test]
fn skipped_labelled_records_still_register_their_expected_hash() {
    // The harness checks a skipped record's expected result against its
    // label too; here the script's skipped result disagrees with the one
    // the engine later gives.
    let script = "\
skipif sqlite
query I nosort label-x
SELECT x
----
1

query I nosort label-x
SELECT x
----
2
";
    let records = parse(script).unwrap();
    let mut engine = Fake::default().answer("SELECT x", ints(&[2]));
    let report = run(&records, &mut engine);
    check(&report, 1, 1, 0);
    assert_eq!(report.divergences.len(), 1);
    assert_eq!(report.divergences[0].kind, FindingKind::Label);
    assert_eq!(report.divergences[0].line, 7);
}

#[test]
fn skipped_labelled_records_without_results_register_nothing() {
    let script = "\
onlyif mssql
query I nosort label-y
SELECT y
----

query I nosort label-y
SELECT y
----
2
";
    let records = parse(script).unwrap();
    let mut engine = Fake::default().answer("SELECT y", ints(&[2]));
    let report = run(&records, &mut engine);
    check(&report, 1, 1, 1);
    assert!(report.divergences.is_empty(), "{report}");
}

#[test]
fn differential_run_separates_differences_from_divergences() {
    let script = "\
statement ok
CREATE TABLE t1(x)

query R nosort
SELECT sum(x) FROM t1
----

query I nosort
SELECT count(*) FROM t1
----
0

statement error
INSERT INTO nowhere VALUES(1)

query I nosort
SELECT broken
----
1
";
    let records = parse(script).unwrap();
    // The oracle disagrees with the script on `sum` (a known divergence),
    // and the engine disagrees with the oracle on `count` and on the
    // failing INSERT.
    let mut oracle = Fake::default()
        .answer("SELECT sum(x) FROM t1", vec![vec![Value::Real(-1.0)]])
        .answer("SELECT count(*) FROM t1", ints(&[0]))
        .fail_statement("INSERT INTO nowhere VALUES(1)")
        .fail_query("SELECT broken");
    let mut engine = Fake::default()
        .answer("SELECT sum(x) FROM t1", vec![vec![Value::Real(-1.0)]])
        .answer("SELECT count(*) FROM t1", ints(&[1]))
        .fail_query("SELECT broken");
    let report = run_differential(&records, &mut engine, &mut oracle);
    check(&report, 5, 0, 1);
    let differences: Vec<_> = report
        .differences
        .iter()
        .map(|f| (f.line, f.kind))
        .collect();
    assert_eq!(
        differences,
        [(8, FindingKind::WrongResult), (13, FindingKind::Statement)]
    );
    assert_eq!(report.differences[0].expected, "0");
    assert_eq!(report.differences[0].got, "1");
    assert_eq!(
        report.differences[1].expected,
        "error: failed: INSERT INTO nowhere VALUES(1)"
    );
    assert_eq!(report.differences[1].got, "ok");
    let divergences: Vec<_> = report
        .divergences
        .iter()
        .map(|f| (f.line, f.kind))
        .collect();
    assert_eq!(
        divergences,
        [(4, FindingKind::WrongResult), (16, FindingKind::QueryError)]
    );
    assert_eq!(report.divergences[0].expected, "(no values)");
    assert_eq!(report.divergences[0].got, "-1.000");
    // Both engines ran every record, in order.
    assert_eq!(engine.log, oracle.log);
    assert_eq!(engine.log.len(), 5);

    let text = report.to_string();
    assert!(
        text.starts_with("5 records, 5 run, 0 skipped, 1 passed, 2 differences, 2 divergences\n"),
        "{text}"
    );
    assert!(
        text.contains("difference at line 8 (wrong result):"),
        "{text}"
    );
    assert!(
        text.contains("divergence at line 16 (query error):"),
        "{text}"
    );
}

#[test]
fn error_messages_are_not_compared() {
    let records = parse("statement error\nBAD\n\nquery I nosort\nWORSE\n----\n1\n").unwrap();
    let mut oracle = Fake::default().fail_statement("BAD").fail_query("WORSE");
    let mut engine = Fake::default();
    engine.failing.insert("BAD".into());
    engine
        .answers
        .insert("WORSE".into(), Err("another message".into()));
    let report = run_differential(&records, &mut engine, &mut oracle);
    assert!(report.differences.is_empty(), "{report}");
    assert_eq!(report.divergences.len(), 1, "{report}");
}

#[test]
fn typed_values_that_format_alike_are_a_difference() {
    let script = "\
query I nosort
SELECT one
----
1

query I rowsort
SELECT rows
----
1
2
5

query I nosort
SELECT big
----
5
";
    let records = parse(script).unwrap();
    let oracle = || {
        Fake::default()
            .answer("SELECT one", ints(&[1]))
            .answer("SELECT rows", ints(&[5, 2, 1]))
            .answer("SELECT big", ints(&[5]))
    };
    // Same values, other order under rowsort: no difference.
    let mut engine = oracle()
        .answer("SELECT one", vec![vec![Value::Real(1.0)]])
        .answer("SELECT rows", ints(&[1, 2, 5]))
        // The low 32 bits agree, so `I` formatting cannot tell.
        .answer("SELECT big", ints(&[(1 << 32) + 5]));
    let report = run_differential(&records, &mut engine, &mut oracle());
    let kinds: Vec<_> = report
        .differences
        .iter()
        .map(|f| (f.line, f.kind))
        .collect();
    assert_eq!(
        kinds,
        [(1, FindingKind::RawValues), (13, FindingKind::RawValues)],
        "{report}"
    );
    assert_eq!(
        report.differences[0].detail.as_deref(),
        Some("row 1: oracle [Integer(1)], engine [Real(1.0)]")
    );
    assert!(report.divergences.is_empty(), "{report}");

    let options = Options {
        compare_raw_values: false,
        ..Options::default()
    };
    let mut engine = oracle()
        .answer("SELECT one", vec![vec![Value::Real(1.0)]])
        .answer("SELECT big", ints(&[(1 << 32) + 5]));
    let report = run_differential_with(&records, &mut engine, &mut oracle(), &options);
    assert!(report.differences.is_empty(), "{report}");
    check(&report, 3, 0, 3);
}

#[test]
fn engines_work_through_trait_objects() {
    let records = parse("statement ok\nX\n").unwrap();
    let mut boxed: Box<dyn Engine> = Box::new(Fake::default());
    let report = run(&records, &mut boxed);
    check(&report, 1, 0, 1);
    let dynamic: &mut dyn Engine = &mut Fake::default();
    let report = run_differential(&records, dynamic, &mut Fake::default());
    check(&report, 1, 0, 1);
}
