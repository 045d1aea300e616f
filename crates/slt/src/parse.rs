//! The script parser.
//!
//! It reads scripts the way the reference harness (`sqllogictest.c`) does:
//!
//! - a line's trailing `\r` is dropped (several `evidence/*.test` files have
//!   CRLF line ends, one mixes CRLF and LF), and a line of only white space
//!   counts as blank;
//! - a line whose first character is `#` is a comment wherever it is, even
//!   inside a record's SQL or its results: the harness drops such lines
//!   before it looks at them;
//! - records are separated by one or more blank lines;
//! - a record starts with any number of `skipif X` / `onlyif X` lines,
//!   then its command line, whose first four white-space separated tokens
//!   count (so `onlyif sqlite # empty RHS` is `onlyif sqlite`);
//! - a `statement` record's SQL is all its remaining lines, joined by `\n`;
//! - a `query` record's SQL runs to a `----` line or the record's end; the
//!   lines after `----` are the expected values, one per line, or a single
//!   `N values hashing to MD5` line.

use std::fmt;

/// What a `statement` record expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementExpect {
    /// `statement ok`: the SQL must succeed.
    Ok,
    /// `statement error`: the SQL must fail (with any message).
    Error,
}

/// The type letter of one result column of a `query` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `T`: text.
    Text,
    /// `I`: integer.
    Integer,
    /// `R`: floating point, shown with three decimals.
    Real,
}

impl ColumnType {
    /// The type letter as scripts write it.
    pub fn letter(self) -> char {
        match self {
            ColumnType::Text => 'T',
            ColumnType::Integer => 'I',
            ColumnType::Real => 'R',
        }
    }
}

/// How a query's formatted values are ordered before they are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortMode {
    /// `nosort` (or no sort word): in the order the engine returned them.
    NoSort,
    /// `rowsort`: rows sorted by their formatted values, column by column.
    RowSort,
    /// `valuesort`: every value sorted on its own, ignoring rows.
    ValueSort,
}

/// A `skipif` or `onlyif` line before a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `skipif NAME`: skip the record on the engine called NAME.
    SkipIf(String),
    /// `onlyif NAME`: run the record only on the engine called NAME.
    OnlyIf(String),
}

impl Condition {
    /// Whether this condition skips the record for the engine called
    /// `engine_name`. Names compare without regard to case, as the harness's
    /// `stricmp` does (its SQLite engine calls itself `SQLite`).
    pub fn skips(&self, engine_name: &str) -> bool {
        match self {
            Condition::SkipIf(name) => name.eq_ignore_ascii_case(engine_name),
            Condition::OnlyIf(name) => !name.eq_ignore_ascii_case(engine_name),
        }
    }
}

/// The expected result of a query record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// The formatted values, one per line of the script, row after row.
    /// Empty when the record has no `----` line or no lines after it.
    Values(Vec<String>),
    /// `N values hashing to MD5`: the number of values and the MD5 (in
    /// lowercase hex) of the values, each followed by `\n`.
    Hash {
        /// The number of values.
        count: usize,
        /// The MD5 of the values, lowercase hex.
        md5: String,
    },
}

/// A `query` record.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// One letter per result column.
    pub types: Vec<ColumnType>,
    /// How the formatted values are ordered.
    pub sort: SortMode,
    /// The optional label: every record with the same label must give the
    /// same result hash.
    pub label: Option<String>,
    /// The query's SQL text.
    pub sql: String,
    /// The result the script expects.
    pub expected: Expected,
}

/// What a record does.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordKind {
    /// `statement ok` or `statement error`.
    Statement {
        /// Whether the SQL must succeed or fail.
        expect: StatementExpect,
        /// The SQL text, which may hold several statements.
        sql: String,
    },
    /// `query TYPES [SORT [LABEL]]`.
    Query(Query),
    /// `hash-threshold N`: from here on, results of more than N values are
    /// compared by hash (0: never by hash, unless labelled).
    HashThreshold(usize),
    /// `halt`: stop running the script here.
    Halt,
}

/// One record of a script.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The 1-based line of the record's command line (`statement`,
    /// `query`, ...), the line the reference harness reports.
    pub line: usize,
    /// The `skipif`/`onlyif` lines before the command line.
    pub conditions: Vec<Condition>,
    /// What the record does.
    pub kind: RecordKind,
}

impl Record {
    /// Whether the record's conditions skip it for the engine called
    /// `engine_name`: any `skipif` naming it, or any `onlyif` naming
    /// another engine.
    pub fn is_skipped_for(&self, engine_name: &str) -> bool {
        self.conditions.iter().any(|c| c.skips(engine_name))
    }

    /// The record's SQL text, if it has one.
    pub fn sql(&self) -> Option<&str> {
        match &self.kind {
            RecordKind::Statement { sql, .. } => Some(sql),
            RecordKind::Query(query) => Some(&query.sql),
            RecordKind::HashThreshold(_) | RecordKind::Halt => None,
        }
    }
}

/// A script that does not follow the format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The 1-based line the problem is on.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// C's `isspace` in the "C" locale, which the harness uses to find blank
/// lines and tokens (Rust's `is_ascii_whitespace` leaves out `\v`).
pub(crate) fn is_c_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// One line of the script that is not a comment.
struct Line<'a> {
    number: usize,
    /// The text without its `\r`; empty for a blank line.
    text: &'a str,
}

/// The script's lines as the harness sees them: `\r` dropped, blank lines
/// made empty, comment lines gone.
fn lines(text: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let without_cr = raw.strip_suffix('\r').unwrap_or(raw);
        let text = if without_cr.bytes().all(is_c_space) {
            ""
        } else {
            without_cr
        };
        // The harness tests only the first character, so an indented `#`
        // line is not a comment.
        if text.starts_with('#') {
            continue;
        }
        out.push(Line {
            number: index + 1,
            text,
        });
    }
    out
}

/// The first four tokens of a line, as the harness's `tokenizeLine` takes
/// them; missing ones are empty.
fn tokens(line: &str) -> [&str; 4] {
    let mut out = [""; 4];
    let words = line
        .split(|c: char| c.is_ascii() && is_c_space(c as u8))
        .filter(|w| !w.is_empty());
    for (slot, word) in out.iter_mut().zip(words) {
        *slot = word;
    }
    out
}

/// Parses a whole script into its records.
///
/// Line numbers are kept in [`Record::line`]. Parsing is stricter than the
/// reference harness in one way: what the harness would report only when it
/// reaches a bad record (an unknown record type, type letter, sort mode or
/// `statement` argument) is an error here, so a script either parses
/// completely or not at all.
pub fn parse(text: &str) -> Result<Vec<Record>, ParseError> {
    let lines = lines(text);
    let mut records = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].text.is_empty() {
            i += 1;
            continue;
        }
        // The record runs from here to the next blank line.
        let start = i;
        while i < lines.len() && !lines[i].text.is_empty() {
            i += 1;
        }
        records.push(parse_record(&lines[start..i])?);
    }
    Ok(records)
}

/// Parses one record: its lines, none of them blank.
fn parse_record(lines: &[Line<'_>]) -> Result<Record, ParseError> {
    let mut conditions = Vec::new();
    let mut rest = lines;
    loop {
        let Some((first, tail)) = rest.split_first() else {
            let line = lines.last().map_or(0, |l| l.number);
            return Err(error(
                line,
                "a skipif/onlyif line must be followed by a record",
            ));
        };
        let [word, name, ..] = tokens(first.text);
        match word {
            "skipif" => conditions.push(Condition::SkipIf(name.to_owned())),
            "onlyif" => conditions.push(Condition::OnlyIf(name.to_owned())),
            _ => break,
        }
        rest = tail;
    }
    let Some((command, body)) = rest.split_first() else {
        // The loop above only breaks with a line in hand.
        return Err(error(0, "empty record"));
    };
    let line = command.number;
    let [word, arg1, arg2, arg3] = tokens(command.text);
    let kind = match word {
        "statement" => {
            let expect = match arg1 {
                "ok" => StatementExpect::Ok,
                "error" => StatementExpect::Error,
                _ => {
                    return Err(error(line, "statement argument should be 'ok' or 'error'"));
                }
            };
            RecordKind::Statement {
                expect,
                sql: join(body),
            }
        }
        "query" => RecordKind::Query(parse_query(line, [arg1, arg2, arg3], body)?),
        "hash-threshold" => match arg1.parse::<usize>() {
            Ok(n) => RecordKind::HashThreshold(n),
            Err(_) => return Err(error(line, "hash-threshold needs a number")),
        },
        "halt" => RecordKind::Halt,
        _ => return Err(error(line, &format!("unknown record type: '{word}'"))),
    };
    Ok(Record {
        line,
        conditions,
        kind,
    })
}

fn parse_query(line: usize, args: [&str; 3], body: &[Line<'_>]) -> Result<Query, ParseError> {
    let [type_word, sort_word, label] = args;
    if type_word.is_empty() {
        return Err(error(line, "missing type string"));
    }
    let mut types = Vec::with_capacity(type_word.len());
    for c in type_word.chars() {
        types.push(match c {
            'T' => ColumnType::Text,
            'I' => ColumnType::Integer,
            'R' => ColumnType::Real,
            _ => {
                return Err(error(
                    line,
                    &format!("unknown type character '{c}' in type string"),
                ));
            }
        });
    }
    let sort = match sort_word {
        "" | "nosort" => SortMode::NoSort,
        "rowsort" => SortMode::RowSort,
        "valuesort" => SortMode::ValueSort,
        _ => return Err(error(line, &format!("unknown sort method: '{sort_word}'"))),
    };
    let separator = body.iter().position(|l| l.text == "----");
    let (sql_lines, result_lines) = match separator {
        Some(at) => (&body[..at], &body[at + 1..]),
        None => (body, &body[body.len()..]),
    };
    let expected = match result_lines.split_first() {
        Some((first, more)) => match parse_hash_line(first.text) {
            Some((count, md5)) => {
                if let Some(extra) = more.first() {
                    return Err(error(extra.number, "unexpected line after a result hash"));
                }
                Expected::Hash { count, md5 }
            }
            None => Expected::Values(result_lines.iter().map(|l| l.text.to_owned()).collect()),
        },
        None => Expected::Values(Vec::new()),
    };
    Ok(Query {
        types,
        sort,
        label: (!label.is_empty()).then(|| label.to_owned()),
        sql: join(sql_lines),
        expected,
    })
}

/// Reads `N values hashing to MD5`.
fn parse_hash_line(text: &str) -> Option<(usize, String)> {
    let mut words = text.split_ascii_whitespace();
    let count = words.next()?.parse::<usize>().ok()?;
    if (words.next()?, words.next()?, words.next()?) != ("values", "hashing", "to") {
        return None;
    }
    let md5 = words.next()?;
    if words.next().is_some() || md5.len() != 32 || !md5.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((count, md5.to_ascii_lowercase()))
}

fn join(lines: &[Line<'_>]) -> String {
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(line.text);
    }
    out
}

fn error(line: usize, message: &str) -> ParseError {
    ParseError {
        line,
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Record {
        let mut records = parse(text).expect("parses");
        assert_eq!(records.len(), 1, "{records:?}");
        records.remove(0)
    }

    #[test]
    fn statement_records_keep_all_their_sql() {
        let text = "statement ok\nINSERT INTO t1 VALUES(-1,'true');\nDROP INDEX t1i1;\n\n\
                    statement error\nSELECT count(DISTINCT *) FROM t1\n";
        let records = parse(text).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].line, 1);
        assert_eq!(
            records[0].kind,
            RecordKind::Statement {
                expect: StatementExpect::Ok,
                sql: "INSERT INTO t1 VALUES(-1,'true');\nDROP INDEX t1i1;".into()
            }
        );
        assert_eq!(records[1].line, 5);
        assert_eq!(
            records[1].kind,
            RecordKind::Statement {
                expect: StatementExpect::Error,
                sql: "SELECT count(DISTINCT *) FROM t1".into()
            }
        );
    }

    #[test]
    fn query_with_values_label_and_multiline_sql() {
        let record = one("query IT rowsort label-7\nSELECT x, y\n  FROM t1\n----\n2\ninsert\n");
        let RecordKind::Query(query) = record.kind else {
            panic!("not a query: {record:?}");
        };
        assert_eq!(query.types, vec![ColumnType::Integer, ColumnType::Text]);
        assert_eq!(query.sort, SortMode::RowSort);
        assert_eq!(query.label.as_deref(), Some("label-7"));
        assert_eq!(query.sql, "SELECT x, y\n  FROM t1");
        assert_eq!(
            query.expected,
            Expected::Values(vec!["2".into(), "insert".into()])
        );
    }

    #[test]
    fn query_with_hash() {
        let record = one(
            "query I nosort\nSELECT a FROM t1\n----\n30 values hashing to 3C13DEE48D9356AE19AF2515E05E6B54\n",
        );
        let RecordKind::Query(query) = record.kind else {
            panic!("not a query");
        };
        assert_eq!(query.sort, SortMode::NoSort);
        assert_eq!(query.label, None);
        assert_eq!(
            query.expected,
            Expected::Hash {
                count: 30,
                md5: "3c13dee48d9356ae19af2515e05e6b54".into()
            }
        );
    }

    #[test]
    fn query_without_results_or_separator_expects_nothing() {
        for text in [
            "query R nosort\nSELECT sum(x) FROM t1\n----\n",
            "query R nosort\nSELECT sum(x) FROM t1\n",
            "query R\nSELECT sum(x) FROM t1",
        ] {
            let RecordKind::Query(query) = one(text).kind else {
                panic!("not a query");
            };
            assert_eq!(query.sql, "SELECT sum(x) FROM t1");
            assert_eq!(query.expected, Expected::Values(vec![]), "{text:?}");
        }
    }

    #[test]
    fn conditions_crlf_comments_and_blank_lines() {
        let text = "# header comment\r\n\r\nonlyif sqlite # empty RHS\r\nskipif mssql  # this is allowed\r\n\
                    query I nosort\r\nSELECT 1 IN ()\r\n# a comment inside the record\r\n----\r\n0\r\n   \r\n\
                    \t\r\nhash-threshold 8\r\n";
        let records = parse(text).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0].conditions,
            vec![
                Condition::OnlyIf("sqlite".into()),
                Condition::SkipIf("mssql".into())
            ]
        );
        assert_eq!(records[0].line, 5);
        let RecordKind::Query(query) = &records[0].kind else {
            panic!("not a query");
        };
        assert_eq!(query.sql, "SELECT 1 IN ()");
        assert_eq!(query.expected, Expected::Values(vec!["0".into()]));
        assert_eq!(records[1].kind, RecordKind::HashThreshold(8));
        assert_eq!(records[1].line, 12);
    }

    #[test]
    fn indented_hash_is_not_a_comment() {
        let RecordKind::Statement { sql, .. } =
            one("statement ok\nSELECT 1\n  # not a comment\n").kind
        else {
            panic!("not a statement");
        };
        assert_eq!(sql, "SELECT 1\n  # not a comment");
    }

    #[test]
    fn halt_and_condition_matching() {
        let records = parse("onlyif mssql\nhalt\n\nskipif sqlite\nhalt\n\nhalt\n").unwrap();
        assert_eq!(records.len(), 3);
        assert!(records.iter().all(|r| r.kind == RecordKind::Halt));
        assert!(records[0].is_skipped_for("sqlite"));
        assert!(!records[0].is_skipped_for("MSSQL"));
        assert!(records[1].is_skipped_for("sqlite"));
        assert!(records[1].is_skipped_for("SQLite"));
        assert!(!records[1].is_skipped_for("mysql"));
        assert!(!records[2].is_skipped_for("sqlite"));
    }

    #[test]
    fn bad_scripts_are_errors_with_their_line() {
        let cases = [
            ("\n\nfrobnicate\n", 3, "unknown record type"),
            (
                "query X nosort\nSELECT 1\n",
                1,
                "unknown type character 'X'",
            ),
            ("query I bogussort\nSELECT 1\n", 1, "unknown sort method"),
            ("query\nSELECT 1\n", 1, "missing type string"),
            ("statement maybe\nSELECT 1\n", 1, "'ok' or 'error'"),
            ("hash-threshold many\n", 1, "needs a number"),
            ("skipif mysql\n", 1, "must be followed"),
            (
                "query I nosort\nSELECT 1\n----\n3 values hashing to 0123456789abcdef0123456789abcdef\n1\n",
                5,
                "after a result hash",
            ),
        ];
        for (text, line, message) in cases {
            let err = parse(text).expect_err(text);
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.message.contains(message), "{text:?}: {err}");
        }
    }

    #[test]
    fn hash_line_must_be_well_formed_to_count_as_hash() {
        assert_eq!(
            parse_hash_line("8 values hashing to d41d8cd98f00b204e9800998ecf8427e"),
            Some((8, "d41d8cd98f00b204e9800998ecf8427e".into()))
        );
        assert_eq!(parse_hash_line("8 values hashing to d41d8cd9"), None);
        assert_eq!(
            parse_hash_line("8 values hash to d41d8cd98f00b204e9800998ecf8427e"),
            None
        );
        assert_eq!(parse_hash_line("values hashing to"), None);
        assert_eq!(parse_hash_line("42"), None);
    }
}
