//! Result sets as text, in the shell's output modes.
//!
//! Values arrive as the JSON API types them (README "HTTP API"): `null`, numbers, strings,
//! `{"int": ".."}` for integers beyond ±(2^53 − 1), `{"float": "inf"}`, `{"base64": ".."}` for
//! blobs. Text modes print them the way sqlite3 does where it is unambiguous: NULL as an
//! empty field (list, csv) or `NULL` (table, line), reals with a fraction (`2.0`), blobs as SQL
//! hex literals (`X'00ff'`). JSON mode keeps the API's typed values, so nothing is lost.

use std::io::{self, Write};

use base64::Engine as _;
use serde_json::Value as Json;

/// How the shell prints result sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A boxed table with a header (the default on a terminal).
    Table,
    /// One JSON array of objects per result set, values typed as the API types them.
    Json,
    /// RFC 4180 CSV (header with `.headers on`).
    Csv,
    /// One `column = value` line per value, a blank line between rows.
    Line,
    /// Values separated by `|`, as sqlite3 prints them (the default when stdout is not a
    /// terminal; header with `.headers on`).
    List,
}

impl Mode {
    /// The mode's name as `.mode` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Table => "table",
            Mode::Json => "json",
            Mode::Csv => "csv",
            Mode::Line => "line",
            Mode::List => "list",
        }
    }

    /// Parses a `.mode` argument.
    pub fn parse(s: &str) -> Option<Mode> {
        [Mode::Table, Mode::Json, Mode::Csv, Mode::Line, Mode::List]
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
    }
}

/// Column names and rows of one statement.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ResultSet {
    /// Column names; empty for a statement that returns no rows (INSERT...).
    pub columns: Vec<String>,
    /// Rows, each as many values as there are columns.
    pub rows: Vec<Vec<Json>>,
}

impl ResultSet {
    /// From an API answer (`{"columns", "rows", ...}`).
    pub fn from_answer(answer: &Json) -> ResultSet {
        let columns = answer["columns"]
            .as_array()
            .map(|c| {
                c.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let rows = answer["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| r.as_array().cloned().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        ResultSet { columns, rows }
    }
}

/// Writes `rs` in `mode`; `headers` adds a header line in list and csv modes.
pub fn render(out: &mut dyn Write, mode: Mode, headers: bool, rs: &ResultSet) -> io::Result<()> {
    if rs.columns.is_empty() || rs.rows.is_empty() {
        // Like sqlite3: a statement without rows prints nothing.
        return Ok(());
    }
    match mode {
        Mode::Table => table(out, rs),
        Mode::Json => json(out, rs),
        Mode::Csv => {
            if headers {
                let names: Vec<String> = rs.columns.iter().map(|c| csv_field(c)).collect();
                writeln!(out, "{}", names.join(","))?;
            }
            for row in &rs.rows {
                let fields: Vec<String> = row.iter().map(|v| csv_field(&text(v, ""))).collect();
                writeln!(out, "{}", fields.join(","))?;
            }
            Ok(())
        }
        Mode::List => {
            if headers {
                writeln!(out, "{}", rs.columns.join("|"))?;
            }
            for row in &rs.rows {
                let fields: Vec<String> = row.iter().map(|v| text(v, "")).collect();
                writeln!(out, "{}", fields.join("|"))?;
            }
            Ok(())
        }
        Mode::Line => {
            let width = rs
                .columns
                .iter()
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0);
            for (i, row) in rs.rows.iter().enumerate() {
                if i > 0 {
                    writeln!(out)?;
                }
                for (name, v) in rs.columns.iter().zip(row) {
                    writeln!(out, "{name:>width$} = {}", text(v, "NULL"))?;
                }
            }
            Ok(())
        }
    }
}

/// A value as text; `null` is what NULL prints as.
pub fn text(v: &Json, null: &str) -> String {
    match v {
        Json::Null => null.to_owned(),
        Json::Bool(b) => i32::from(*b).to_string(),
        Json::Number(n) if n.is_f64() => real(n.as_f64().unwrap_or(f64::NAN)),
        Json::Number(n) => n.to_string(),
        Json::String(s) => s.clone(),
        Json::Object(o) => {
            if let Some(i) = o.get("int").and_then(Json::as_str) {
                i.to_owned()
            } else if let Some(f) = o.get("float").and_then(Json::as_str) {
                if f.starts_with('-') { "-Inf" } else { "Inf" }.to_owned()
            } else if let Some(b) = o.get("base64").and_then(Json::as_str) {
                match base64::engine::general_purpose::STANDARD.decode(b) {
                    Ok(bytes) => {
                        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                        format!("X'{hex}'")
                    }
                    Err(_) => v.to_string(),
                }
            } else {
                v.to_string()
            }
        }
        Json::Array(_) => v.to_string(),
    }
}

/// A REAL as SQLite prints it: always with a fraction or an exponent (`2.0`, `1.0e+20`).
fn real(f: f64) -> String {
    if !f.is_finite() {
        return if f > 0.0 { "Inf" } else { "-Inf" }.to_owned();
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e15).contains(&a) {
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = if mantissa.contains('.') {
            mantissa.to_owned()
        } else {
            format!("{mantissa}.0")
        };
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    let s = format!("{f}");
    if s.contains('.') { s } else { format!("{s}.0") }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Control characters would break the table's lines: show them escaped.
fn cell(v: &Json) -> String {
    let t = text(v, "NULL");
    if t.chars().any(char::is_control) {
        t.chars()
            .map(|c| match c {
                '\n' => "\\n".to_owned(),
                '\r' => "\\r".to_owned(),
                '\t' => "\\t".to_owned(),
                c if c.is_control() => format!("\\x{:02x}", u32::from(c)),
                c => c.to_string(),
            })
            .collect()
    } else {
        t
    }
}

fn table(out: &mut dyn Write, rs: &ResultSet) -> io::Result<()> {
    let cells: Vec<Vec<String>> = rs
        .rows
        .iter()
        .map(|r| r.iter().map(cell).collect())
        .collect();
    let n = rs.columns.len();
    let mut widths: Vec<usize> = rs.columns.iter().map(|c| c.chars().count()).collect();
    for row in &cells {
        for (i, c) in row.iter().enumerate().take(n) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+";
    let line = |out: &mut dyn Write, fields: &[String], numeric: &[bool]| -> io::Result<()> {
        let mut s = String::new();
        for (i, w) in widths.iter().enumerate() {
            let f = fields.get(i).map(String::as_str).unwrap_or("");
            let pad = w - f.chars().count().min(*w);
            if numeric.get(i).copied().unwrap_or(false) {
                s.push_str(&format!("| {}{f} ", " ".repeat(pad)));
            } else {
                s.push_str(&format!("| {f}{} ", " ".repeat(pad)));
            }
        }
        writeln!(out, "{s}|")
    };
    writeln!(out, "{rule}")?;
    line(out, &rs.columns, &[])?;
    writeln!(out, "{rule}")?;
    for (row, values) in cells.iter().zip(&rs.rows) {
        // Numbers right-aligned, as people read them.
        let numeric: Vec<bool> = values
            .iter()
            .map(|v| v.is_number() || v.get("int").is_some())
            .collect();
        line(out, row, &numeric)?;
    }
    writeln!(out, "{rule}")
}

fn json(out: &mut dyn Write, rs: &ResultSet) -> io::Result<()> {
    // Built by hand: a JSON object type would reorder (or merge) the columns.
    let names: Vec<String> = rs
        .columns
        .iter()
        .map(|c| Json::String(c.clone()).to_string())
        .collect();
    for (i, row) in rs.rows.iter().enumerate() {
        let fields: Vec<String> = names
            .iter()
            .zip(row)
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        let open = if i == 0 { "[" } else { "" };
        let close = if i + 1 == rs.rows.len() { "]" } else { "," };
        writeln!(out, "{open}{{{}}}{close}", fields.join(","))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rs() -> ResultSet {
        ResultSet {
            columns: vec!["id".into(), "name".into(), "x".into()],
            rows: vec![
                vec![json!(1), json!("ann"), json!(2.0)],
                vec![
                    json!({"int": "9007199254740993"}),
                    json!("b,\"c\""),
                    Json::Null,
                ],
                vec![json!(3), json!({"base64": "AP8="}), json!(1e20)],
            ],
        }
    }

    fn show(mode: Mode, headers: bool) -> String {
        let mut out = Vec::new();
        render(&mut out, mode, headers, &rs()).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn modes() {
        assert_eq!(
            show(Mode::List, false),
            "1|ann|2.0\n9007199254740993|b,\"c\"|\n3|X'00ff'|1.0e+20\n"
        );
        assert_eq!(
            show(Mode::Csv, true),
            "id,name,x\n1,ann,2.0\n9007199254740993,\"b,\"\"c\"\"\",\n3,X'00ff',1.0e+20\n"
        );
        assert_eq!(
            show(Mode::Json, false),
            "[{\"id\":1,\"name\":\"ann\",\"x\":2.0},\n{\"id\":{\"int\":\"9007199254740993\"},\"name\":\"b,\\\"c\\\"\",\"x\":null},\n{\"id\":3,\"name\":{\"base64\":\"AP8=\"},\"x\":1e+20}]\n"
        );
        assert_eq!(
            show(Mode::Line, false),
            "  id = 1\nname = ann\n   x = 2.0\n\n  id = 9007199254740993\nname = b,\"c\"\n   x = NULL\n\n  id = 3\nname = X'00ff'\n   x = 1.0e+20\n"
        );
        let t = show(Mode::Table, true);
        assert!(t.starts_with("+------------------+---------+---------+\n| id               | name    | x       |\n"), "{t}");
        assert!(
            t.contains("|                1 | ann     |     2.0 |"),
            "{t}"
        );
    }

    #[test]
    fn reals() {
        assert_eq!(real(0.5), "0.5");
        assert_eq!(real(-3.0), "-3.0");
        assert_eq!(real(1.5e-7), "1.5e-07");
        assert_eq!(real(0.0), "0.0");
    }
}
