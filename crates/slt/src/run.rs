//! Running records against an engine, or against an engine and an oracle.

use crate::format::{format_rows, hash_values};
use crate::parse::{Expected, Query, Record, RecordKind, SortMode, StatementExpect};
use crate::{Engine, Value};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;

/// The hash threshold a script starts with: `DEFAULT_HASH_THRESHOLD` in the
/// reference harness. A result of more than this many values is compared by
/// its MD5 until a `hash-threshold` record changes it (0 turns hashing off).
pub const DEFAULT_HASH_THRESHOLD: usize = 8;

/// A value list longer than this is shown by its hash in a [`Finding`].
const MAX_LISTED_VALUES: usize = 64;

/// How records are run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The engine name that `skipif`/`onlyif` lines are matched against,
    /// without regard to case. `sqlite` by default: dosql must behave as
    /// SQLite does.
    pub engine_name: String,
    /// The hash threshold at the start of the script;
    /// [`DEFAULT_HASH_THRESHOLD`] by default.
    pub hash_threshold: usize,
    /// In a differential run, also compare the typed values the two engines
    /// returned, not only their formatted forms (on by default). The
    /// harness's formatting hides some differences: an `I` column keeps only
    /// the low 32 bits, an `R` column three decimals, and 1 and 1.0 look the
    /// same in both. Rows are compared as sets where the record's sort mode
    /// allows any order, and doubles bit for bit.
    pub compare_raw_values: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            engine_name: "sqlite".to_owned(),
            hash_threshold: DEFAULT_HASH_THRESHOLD,
            compare_raw_values: true,
        }
    }
}

/// What kind of mismatch a [`Finding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    /// A statement succeeded on one side and failed on the other (messages
    /// are never compared).
    Statement,
    /// A query failed on one side and not on the other.
    QueryError,
    /// A query's formatted values (or their hash) differ.
    WrongResult,
    /// The formatted values agree but the typed values do not (only with
    /// [`Options::compare_raw_values`], only between engines).
    RawValues,
    /// A labelled result's hash differs from the first result with the same
    /// label.
    Label,
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FindingKind::Statement => "statement outcome",
            FindingKind::QueryError => "query error",
            FindingKind::WrongResult => "wrong result",
            FindingKind::RawValues => "typed values",
            FindingKind::Label => "label mismatch",
        })
    }
}

/// One record whose outcome did not match.
///
/// In [`Report::differences`], `expected` is the oracle's outcome and `got`
/// the engine under test's. In [`Report::divergences`], `expected` is the
/// script's expectation and `got` the outcome of the engine checked against
/// it (the oracle in a differential run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The 1-based line of the record's command line.
    pub line: usize,
    /// What kind of mismatch this is.
    pub kind: FindingKind,
    /// The record's SQL.
    pub sql: String,
    /// The outcome that was expected, as text: `ok`, `error`,
    /// `error: MESSAGE`, the values one per line, or `N values hashing to
    /// MD5`.
    pub expected: String,
    /// The outcome that was seen, in the same form.
    pub got: String,
    /// More about the mismatch, such as the first value that differs.
    pub detail: Option<String>,
}

/// The result of running a script.
///
/// `records = run + skipped + (control records that ran) + (records after a
/// halt)`, where control records are `hash-threshold` and `halt`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// A name for the script, shown by `Display` (empty unless the caller
    /// sets it, for example to the file name).
    pub name: String,
    /// How many records the script has.
    pub records: usize,
    /// How many statement and query records ran.
    pub run: usize,
    /// How many records (of any kind) `skipif`/`onlyif` skipped.
    pub skipped: usize,
    /// How many of the records that ran produced no finding at all.
    pub passed: usize,
    /// The line of the `halt` record that stopped the run, if one did.
    pub halted_at: Option<usize>,
    /// Records where the engine under test and the oracle disagree. Always
    /// empty for [`run`].
    pub differences: Vec<Finding>,
    /// Records where the outcome (the oracle's, in a differential run)
    /// disagrees with the script, including label mismatches.
    pub divergences: Vec<Finding>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.name.is_empty() {
            write!(f, "{}: ", self.name)?;
        }
        write!(
            f,
            "{} records, {} run, {} skipped, {} passed, {} differences, {} divergences",
            self.records,
            self.run,
            self.skipped,
            self.passed,
            self.differences.len(),
            self.divergences.len()
        )?;
        if let Some(line) = self.halted_at {
            write!(f, ", halted at line {line}")?;
        }
        writeln!(f)?;
        for finding in &self.differences {
            self.write_finding(f, "difference", finding, ("oracle", "engine"))?;
        }
        for finding in &self.divergences {
            self.write_finding(f, "divergence", finding, ("script", "got"))?;
        }
        Ok(())
    }
}

impl Report {
    fn write_finding(
        &self,
        f: &mut fmt::Formatter<'_>,
        what: &str,
        finding: &Finding,
        (expected_name, got_name): (&str, &str),
    ) -> fmt::Result {
        let place = if self.name.is_empty() {
            format!("line {}", finding.line)
        } else {
            format!("{}:{}", self.name, finding.line)
        };
        writeln!(f, "{what} at {place} ({}):", finding.kind)?;
        write_block(f, "sql", &finding.sql)?;
        write_block(f, expected_name, &finding.expected)?;
        write_block(f, got_name, &finding.got)?;
        if let Some(detail) = &finding.detail {
            writeln!(f, "  note: {detail}")?;
        }
        Ok(())
    }
}

fn write_block(f: &mut fmt::Formatter<'_>, name: &str, text: &str) -> fmt::Result {
    writeln!(f, "  {name}:")?;
    for line in text.lines() {
        writeln!(f, "    {line}")?;
    }
    Ok(())
}

/// Runs `records` on `engine` and checks every outcome against the script.
///
/// Mismatches are reported as [`Report::divergences`]. Uses
/// [`Options::default`]: engine name `sqlite`, hash threshold 8.
pub fn run<E: Engine + ?Sized>(records: &[Record], engine: &mut E) -> Report {
    run_with(records, engine, &Options::default())
}

/// [`run`] with explicit [`Options`].
pub fn run_with<E: Engine + ?Sized>(
    records: &[Record],
    engine: &mut E,
    options: &Options,
) -> Report {
    let mut engine = engine;
    Runner::new(options).run(records, &mut engine, None)
}

/// Runs `records` on both `engine_under_test` and `oracle`, record by record
/// in script order, and reports every record where the two disagree
/// ([`Report::differences`]) and every record where the oracle disagrees with
/// the script ([`Report::divergences`]: known differences between the
/// oracle and the SQLite that wrote the script).
///
/// Statement outcomes compare as ok or error only; query errors compare as
/// error or not, never by message. Uses [`Options::default`].
pub fn run_differential<A: Engine + ?Sized, B: Engine + ?Sized>(
    records: &[Record],
    engine_under_test: &mut A,
    oracle: &mut B,
) -> Report {
    run_differential_with(records, engine_under_test, oracle, &Options::default())
}

/// [`run_differential`] with explicit [`Options`].
pub fn run_differential_with<A: Engine + ?Sized, B: Engine + ?Sized>(
    records: &[Record],
    engine_under_test: &mut A,
    oracle: &mut B,
    options: &Options,
) -> Report {
    let mut engine_under_test = engine_under_test;
    let mut oracle = oracle;
    Runner::new(options).run(records, &mut oracle, Some(&mut engine_under_test))
}

/// A query that ran: its formatted (and sorted) values and the typed rows.
struct QueryOutput {
    values: Vec<String>,
    rows: Vec<Vec<Value>>,
}

struct Runner<'o> {
    options: &'o Options,
    hash_threshold: usize,
    /// Label -> (hash of the first result with it, that record's line).
    labels: HashMap<String, (String, usize)>,
    report: Report,
}

impl<'o> Runner<'o> {
    fn new(options: &'o Options) -> Self {
        Runner {
            options,
            hash_threshold: options.hash_threshold,
            labels: HashMap::new(),
            report: Report::default(),
        }
    }

    /// Runs the script. `checked` is the engine whose outcomes are compared
    /// with the script (the oracle); `under_test`, if any, is compared with
    /// `checked`.
    fn run(
        mut self,
        records: &[Record],
        checked: &mut (dyn Engine + '_),
        mut under_test: Option<&mut (dyn Engine + '_)>,
    ) -> Report {
        self.report.records = records.len();
        for record in records {
            let findings_before = self.report.differences.len() + self.report.divergences.len();
            if record.is_skipped_for(&self.options.engine_name) {
                self.report.skipped += 1;
                self.check_skipped_label(record);
                continue;
            }
            match &record.kind {
                RecordKind::HashThreshold(n) => {
                    self.hash_threshold = *n;
                    continue;
                }
                RecordKind::Halt => {
                    self.report.halted_at = Some(record.line);
                    break;
                }
                RecordKind::Statement { expect, sql } => {
                    self.statement(
                        record.line,
                        *expect,
                        sql,
                        checked,
                        under_test.as_deref_mut(),
                    );
                }
                RecordKind::Query(query) => {
                    self.query(record.line, query, checked, under_test.as_deref_mut());
                }
            }
            self.report.run += 1;
            if self.report.differences.len() + self.report.divergences.len() == findings_before {
                self.report.passed += 1;
            }
        }
        self.report
    }

    fn statement(
        &mut self,
        line: usize,
        expect: StatementExpect,
        sql: &str,
        checked: &mut (dyn Engine + '_),
        under_test: Option<&mut (dyn Engine + '_)>,
    ) {
        let outcome = checked.statement(sql);
        if let Some(engine) = under_test {
            let other = engine.statement(sql);
            if outcome.is_ok() != other.is_ok() {
                self.report.differences.push(Finding {
                    line,
                    kind: FindingKind::Statement,
                    sql: sql.to_owned(),
                    expected: render_statement(&outcome),
                    got: render_statement(&other),
                    detail: None,
                });
            }
        }
        if outcome.is_ok() != (expect == StatementExpect::Ok) {
            let expected = match expect {
                StatementExpect::Ok => "ok",
                StatementExpect::Error => "error",
            };
            self.report.divergences.push(Finding {
                line,
                kind: FindingKind::Statement,
                sql: sql.to_owned(),
                expected: expected.to_owned(),
                got: render_statement(&outcome),
                detail: None,
            });
        }
    }

    fn query(
        &mut self,
        line: usize,
        query: &Query,
        checked: &mut (dyn Engine + '_),
        under_test: Option<&mut (dyn Engine + '_)>,
    ) {
        let outcome = run_query(checked, query);
        if let Some(engine) = under_test {
            let other = run_query(engine, query);
            if let Some(finding) = self.compare_engines(line, query, &outcome, &other) {
                self.report.differences.push(finding);
            }
        }
        let output = match outcome {
            Ok(output) => output,
            Err(message) => {
                self.report.divergences.push(Finding {
                    line,
                    kind: FindingKind::QueryError,
                    sql: query.sql.clone(),
                    expected: render_expected(&query.expected),
                    got: format!("error: {message}"),
                    detail: None,
                });
                return;
            }
        };
        if !matches_expected(&output.values, &query.expected) {
            let (got, detail) = match &query.expected {
                Expected::Values(expected) => (
                    render_values(&output.values, output.values.len() > MAX_LISTED_VALUES),
                    first_difference(expected, &output.values),
                ),
                Expected::Hash { count, .. } => (
                    render_values(&output.values, true),
                    (*count != output.values.len())
                        .then(|| format!("expected {count} values, got {}", output.values.len())),
                ),
            };
            self.report.divergences.push(Finding {
                line,
                kind: FindingKind::WrongResult,
                sql: query.sql.clone(),
                expected: render_expected(&query.expected),
                got,
                detail,
            });
        }
        if let Some(label) = &query.label {
            let hash = hash_values(&output.values);
            self.check_label(line, label, &query.sql, hash);
        }
    }

    /// Compares the engine under test's query outcome with the oracle's.
    fn compare_engines(
        &self,
        line: usize,
        query: &Query,
        oracle: &Result<QueryOutput, String>,
        engine: &Result<QueryOutput, String>,
    ) -> Option<Finding> {
        let finding = |kind, expected, got, detail| Finding {
            line,
            kind,
            sql: query.sql.clone(),
            expected,
            got,
            detail,
        };
        match (oracle, engine) {
            (Err(_), Err(_)) => None,
            (Ok(_), Err(_)) | (Err(_), Ok(_)) => Some(finding(
                FindingKind::QueryError,
                self.render_outcome(oracle),
                self.render_outcome(engine),
                None,
            )),
            (Ok(a), Ok(b)) => {
                if a.values != b.values {
                    return Some(finding(
                        FindingKind::WrongResult,
                        self.render_outcome(oracle),
                        self.render_outcome(engine),
                        first_difference(&a.values, &b.values),
                    ));
                }
                if !self.options.compare_raw_values {
                    return None;
                }
                raw_difference(&a.rows, &b.rows, query.sort).map(|detail| {
                    finding(
                        FindingKind::RawValues,
                        self.render_outcome(oracle),
                        self.render_outcome(engine),
                        Some(detail),
                    )
                })
            }
        }
    }

    /// An outcome as the harness would print it: values, or their hash when
    /// there are more than the hash threshold (or too many to list).
    fn render_outcome(&self, outcome: &Result<QueryOutput, String>) -> String {
        match outcome {
            Err(message) => format!("error: {message}"),
            Ok(output) => {
                let count = output.values.len();
                let hashed = (self.hash_threshold > 0 && count > self.hash_threshold)
                    || count > MAX_LISTED_VALUES;
                render_values(&output.values, hashed)
            }
        }
    }

    /// The harness checks labels even on skipped records: the result the
    /// script gives there must hash like every other record with the label.
    fn check_skipped_label(&mut self, record: &Record) {
        let RecordKind::Query(query) = &record.kind else {
            return;
        };
        let Some(label) = &query.label else {
            return;
        };
        let hash = match &query.expected {
            Expected::Hash { md5, .. } => md5.clone(),
            // The harness checks nothing when a skipped record shows no
            // result lines.
            Expected::Values(values) if values.is_empty() => return,
            Expected::Values(values) => hash_values(values),
        };
        self.check_label(record.line, label, &query.sql, hash);
    }

    /// Records the first hash for `label`; reports a later one that differs.
    fn check_label(&mut self, line: usize, label: &str, sql: &str, hash: String) {
        match self.labels.get(label) {
            None => {
                self.labels.insert(label.to_owned(), (hash, line));
            }
            Some((first_hash, first_line)) if *first_hash != hash => {
                self.report.divergences.push(Finding {
                    line,
                    kind: FindingKind::Label,
                    sql: sql.to_owned(),
                    expected: format!("{label}: {first_hash}"),
                    got: format!("{label}: {hash}"),
                    detail: Some(format!(
                        "labeled result [{label}] does not agree with line {first_line}"
                    )),
                });
            }
            Some(_) => {}
        }
    }
}

fn run_query(engine: &mut (dyn Engine + '_), query: &Query) -> Result<QueryOutput, String> {
    let rows = engine.query(&query.sql)?;
    let values = format_rows(&rows, &query.types, query.sort)?;
    Ok(QueryOutput { values, rows })
}

/// Whether formatted values meet the script's expectation. A result given
/// as values must match value for value; one given as a hash must have that
/// many values with that hash. (The harness picks the form from the hash
/// threshold and compares only that form; it also stops comparing values at
/// the end of the shorter list, so it misses extra or missing values, which
/// this does not.)
fn matches_expected(values: &[String], expected: &Expected) -> bool {
    match expected {
        Expected::Values(expected) => values == expected.as_slice(),
        Expected::Hash { count, md5 } => values.len() == *count && hash_values(values) == *md5,
    }
}

fn render_statement(outcome: &Result<(), String>) -> String {
    match outcome {
        Ok(()) => "ok".to_owned(),
        Err(message) => format!("error: {message}"),
    }
}

fn render_values(values: &[String], hashed: bool) -> String {
    if hashed {
        format!("{} values hashing to {}", values.len(), hash_values(values))
    } else if values.is_empty() {
        "(no values)".to_owned()
    } else {
        values.join("\n")
    }
}

fn render_expected(expected: &Expected) -> String {
    match expected {
        Expected::Values(values) => render_values(values, values.len() > MAX_LISTED_VALUES),
        Expected::Hash { count, md5 } => format!("{count} values hashing to {md5}"),
    }
}

/// Where two value lists first differ, for a finding's note.
fn first_difference(expected: &[String], got: &[String]) -> Option<String> {
    let at = expected.iter().zip(got).position(|(a, b)| a != b);
    match at {
        Some(i) => Some(format!(
            "first difference at value {}: expected `{}`, got `{}`",
            i + 1,
            expected[i],
            got[i]
        )),
        None if expected.len() != got.len() => Some(format!(
            "expected {} values, got {}",
            expected.len(),
            got.len()
        )),
        None => None,
    }
}

/// Compares typed rows, in the order the sort mode fixes: as returned for
/// `nosort`, as a set of rows for `rowsort`, as a set of values for
/// `valuesort`. Returns a description of the first difference.
fn raw_difference(oracle: &[Vec<Value>], engine: &[Vec<Value>], sort: SortMode) -> Option<String> {
    match sort {
        SortMode::NoSort => first_raw_difference(oracle, engine, "row"),
        SortMode::RowSort => {
            let mut a = oracle.to_vec();
            let mut b = engine.to_vec();
            a.sort_by(|x, y| compare_rows(x, y));
            b.sort_by(|x, y| compare_rows(x, y));
            first_raw_difference(&a, &b, "sorted row")
        }
        SortMode::ValueSort => {
            let mut a: Vec<Value> = oracle.iter().flatten().cloned().collect();
            let mut b: Vec<Value> = engine.iter().flatten().cloned().collect();
            a.sort_by(compare_values);
            b.sort_by(compare_values);
            let at = a
                .iter()
                .zip(&b)
                .position(|(x, y)| compare_values(x, y) != Ordering::Equal);
            match at {
                Some(i) => Some(format!(
                    "sorted value {}: oracle {:?}, engine {:?}",
                    i + 1,
                    a[i],
                    b[i]
                )),
                None if a.len() != b.len() => {
                    Some(format!("oracle {} values, engine {}", a.len(), b.len()))
                }
                None => None,
            }
        }
    }
}

fn first_raw_difference(a: &[Vec<Value>], b: &[Vec<Value>], what: &str) -> Option<String> {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if compare_rows(x, y) != Ordering::Equal {
            return Some(format!("{what} {}: oracle {x:?}, engine {y:?}", i + 1));
        }
    }
    (a.len() != b.len()).then(|| format!("oracle {} rows, engine {}", a.len(), b.len()))
}

fn compare_rows(a: &[Value], b: &[Value]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let order = compare_values(x, y);
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// A total order on values: by storage class, then by value, doubles by
/// their bits' total order (so -0.0 and 0.0 differ, and NaN equals itself).
fn compare_values(a: &Value, b: &Value) -> Ordering {
    fn rank(value: &Value) -> u8 {
        match value {
            Value::Null => 0,
            Value::Integer(_) => 1,
            Value::Real(_) => 2,
            Value::Text(_) => 3,
            Value::Blob(_) => 4,
        }
    }
    match (a, b) {
        (Value::Integer(x), Value::Integer(y)) => x.cmp(y),
        (Value::Real(x), Value::Real(y)) => x.total_cmp(y),
        (Value::Text(x), Value::Text(y)) => x.cmp(y),
        (Value::Blob(x), Value::Blob(y)) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}
