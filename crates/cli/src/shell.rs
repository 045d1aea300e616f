//! `dosql shell`: SQL against one database, interactively (line editing, history) or from a
//! script (an argument or stdin), with dot-commands people know from sqlite3.
//!
//! Every statement is one request to the JSON API (remote: `POST /query`; local: the same API
//! through `dosql_api::Session`), and the API refuses a request that leaves a transaction open.
//! So the shell sends an explicit transaction whole: from `BEGIN` on, statements are held and
//! go out together, as one request, at `COMMIT`/`END`/`ROLLBACK`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value as Json, json};

use crate::bail;
use crate::db::Database;
use crate::error::{Context, Error, Result};
use crate::render::{Mode, ResultSet, render};

/// Whether to go on reading input.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Read the next line.
    Continue,
    /// `.quit`.
    Quit,
}

/// The shell's state over one database.
pub struct Shell<'o> {
    /// Where the SQL goes.
    db: &'o mut dyn Database,
    out: Box<dyn Write + 'o>,
    mode: Mode,
    headers: bool,
    timer: bool,
    interactive: bool,
    /// Text of a statement not yet complete (no closing `;`).
    pending: String,
    /// Statements of an explicit transaction, held until it ends.
    txn: Option<String>,
    /// `.read` nesting.
    depth: usize,
}

impl std::fmt::Debug for Shell<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shell")
            .field("mode", &self.mode)
            .field("pending", &self.pending)
            .finish()
    }
}

const HELP: &str = "\
.headers on|off    Column names in list and csv modes
.help              This text
.mode [MODE]       Output mode: table, json, csv, line or list (no argument: show it)
.quit / .exit      Leave the shell
.read FILE         Run the SQL and dot-commands in FILE
.schema [PATTERN]  CREATE statements (of the tables matching the LIKE pattern)
.tables [PATTERN]  Tables and views (matching the LIKE pattern)
.timer on|off      Time every statement (real time, and the server's own time)
SQL ends with ';'. An explicit transaction (BEGIN ... COMMIT) is sent as one request at COMMIT.";

impl<'o> Shell<'o> {
    /// A shell on `db` writing to `out`.
    pub fn new(
        db: &'o mut dyn Database,
        out: Box<dyn Write + 'o>,
        mode: Mode,
        headers: bool,
        interactive: bool,
    ) -> Shell<'o> {
        Shell {
            db,
            out,
            mode,
            headers,
            timer: false,
            interactive,
            pending: String::new(),
            txn: None,
            depth: 0,
        }
    }

    /// Whether a statement or transaction is still open (for the continuation prompt).
    pub fn continuing(&self) -> bool {
        !self.pending.trim().is_empty() || self.txn.is_some()
    }

    /// Drops the statement being typed (Ctrl-C).
    pub fn clear_pending(&mut self) {
        self.pending.clear();
    }

    /// One line of input: a dot-command, or SQL (run once a statement is complete).
    pub fn line(&mut self, line: &str) -> Result<Flow> {
        if self.pending.trim().is_empty() && line.trim_start().starts_with('.') {
            self.pending.clear();
            let flow = self.dot(line.trim());
            self.flush()?;
            return flow;
        }
        self.pending.push_str(line);
        self.pending.push('\n');
        let statements = take_statements(&mut self.pending);
        let result = statements.into_iter().try_for_each(|s| self.statement(&s));
        if result.is_err() {
            // A failed statement ends what was typed with it.
            self.pending.clear();
        }
        self.flush()?;
        result.map(|()| Flow::Continue)
    }

    /// End of input: runs a last statement left without its `;`.
    pub fn finish(&mut self) -> Result<()> {
        let rest = std::mem::take(&mut self.pending);
        let result = if is_blank(&rest) {
            Ok(())
        } else {
            self.statement(&rest)
        };
        self.flush()?;
        result?;
        if self.txn.take().is_some() {
            bail!(
                "the input ended inside a transaction (BEGIN without COMMIT): nothing of it was run"
            );
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(Error::output)
    }

    fn statement(&mut self, sql: &str) -> Result<()> {
        if is_blank(sql) {
            return Ok(());
        }
        let words = leading_words(sql, 3);
        let first = words.first().map(String::as_str).unwrap_or("");
        if let Some(held) = &mut self.txn {
            held.push_str(sql.trim());
            held.push('\n');
            if first == "ROLLBACK" && !words.iter().any(|w| w == "TO") {
                // Nothing of the transaction was sent: rolling it back is dropping it.
                self.txn = None;
                return Ok(());
            }
            if matches!(first, "COMMIT" | "END") {
                let group = self.txn.take().unwrap_or_default();
                return self.execute(&group);
            }
            return Ok(());
        }
        if first == "BEGIN" {
            self.txn = Some(format!("{}\n", sql.trim()));
            if self.interactive {
                eprintln!("(transaction: statements are held and sent together at COMMIT)");
            }
            return Ok(());
        }
        self.execute(sql)
    }

    fn execute(&mut self, sql: &str) -> Result<()> {
        let started = Instant::now();
        let answer = self.db.query(sql, &Json::Null)?;
        let rs = ResultSet::from_answer(&answer);
        render(&mut self.out, self.mode, self.headers, &rs).map_err(Error::output)?;
        if self.timer {
            let server = answer["meta"]["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0;
            writeln!(
                self.out,
                "Run Time: real {:.3} server {server:.3}",
                started.elapsed().as_secs_f64()
            )
            .map_err(Error::output)?;
        }
        Ok(())
    }

    fn dot(&mut self, line: &str) -> Result<Flow> {
        let args = split_args(line)?;
        let (cmd, args) = args
            .split_first()
            .map_or(("", &[][..]), |(c, a)| (c.as_str(), a));
        let on_off = |args: &[String], what: &str| -> Result<bool> {
            match args.first().map(|s| s.to_ascii_lowercase()).as_deref() {
                Some("on" | "1" | "yes" | "true") => Ok(true),
                Some("off" | "0" | "no" | "false") => Ok(false),
                _ => bail!("usage: {what} on|off"),
            }
        };
        match cmd {
            ".quit" | ".exit" | ".q" => return Ok(Flow::Quit),
            ".help" => writeln!(self.out, "{HELP}").map_err(Error::output)?,
            ".mode" => match args.first() {
                None => writeln!(self.out, "current output mode: {}", self.mode.name())
                    .map_err(Error::output)?,
                Some(m) => {
                    self.mode = Mode::parse(m).ok_or_else(|| {
                        Error::msg(format!(
                            "unknown mode {m:?}: table, json, csv, line or list"
                        ))
                    })?;
                }
            },
            ".headers" | ".header" => self.headers = on_off(args, ".headers")?,
            ".timer" => self.timer = on_off(args, ".timer")?,
            ".tables" => self.tables(args.first().map(String::as_str))?,
            ".schema" => self.schema(args.first().map(String::as_str))?,
            ".read" => match args {
                [file] => self.read(Path::new(file))?,
                _ => bail!("usage: .read FILE"),
            },
            other => bail!("unknown command {other}: .help lists the commands"),
        }
        Ok(Flow::Continue)
    }

    fn tables(&mut self, pattern: Option<&str>) -> Result<()> {
        let answer = self.db.query(
            "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') \
             AND name NOT LIKE 'sqlite_%' AND (?1 IS NULL OR name LIKE ?1) ORDER BY 1",
            &json!([pattern]),
        )?;
        let names: Vec<String> = ResultSet::from_answer(&answer)
            .rows
            .iter()
            .map(|r| {
                r.first()
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        // Columns across an 80-character line, as sqlite3 lays them out.
        let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0) + 2;
        let per_line = (80 / width).max(1);
        let lines = names.len().div_ceil(per_line);
        for l in 0..lines {
            let mut s = String::new();
            for c in 0..per_line {
                if let Some(n) = names.get(c * lines + l) {
                    s.push_str(&format!("{n:<width$}"));
                }
            }
            writeln!(self.out, "{}", s.trim_end()).map_err(Error::output)?;
        }
        Ok(())
    }

    fn schema(&mut self, pattern: Option<&str>) -> Result<()> {
        let answer = self.db.query(
            "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL \
             AND (?1 IS NULL OR tbl_name LIKE ?1) \
             ORDER BY tbl_name, type = 'table' DESC, name",
            &json!([pattern]),
        )?;
        for row in ResultSet::from_answer(&answer).rows {
            if let Some(sql) = row.first().and_then(Json::as_str) {
                writeln!(self.out, "{sql};").map_err(Error::output)?;
            }
        }
        Ok(())
    }

    fn read(&mut self, path: &Path) -> Result<()> {
        if self.depth >= 16 {
            bail!(".read nested too deeply (a file reading itself?)");
        }
        let text = std::fs::read_to_string(path).with_context(|| path.display())?;
        // The file is its own input: what was typed before stays pending around it.
        let outer = std::mem::take(&mut self.pending);
        self.depth += 1;
        let result = (|| {
            for line in text.lines() {
                if self.line(line)? == Flow::Quit {
                    break;
                }
            }
            self.finish()
        })();
        self.depth -= 1;
        self.pending = outer;
        result.map_err(|e| e.context(path.display()))
    }
}

/// Whether `sql` ends with a complete statement, by SQLite's own rules (strings, comments,
/// trigger bodies with inner `;`).
fn complete(sql: &str) -> bool {
    dosql_vfs::sql_is_complete(sql)
}

/// Removes the complete statements from the front of `buf` and returns them.
fn take_statements(buf: &mut String) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let ends: Vec<usize> = buf.match_indices(';').map(|(i, _)| i + 1).collect();
    for end in ends {
        if complete(&buf[start..end]) {
            out.push(buf[start..end].to_owned());
            start = end;
        }
    }
    buf.drain(..start);
    out
}

/// Skips whitespace, `;` and comments; the rest of `s`.
fn skip_blank(mut s: &str) -> &str {
    loop {
        let t = s.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if let Some(rest) = t.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(rest) = t.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r);
        } else {
            return t;
        }
    }
}

/// Nothing but whitespace, `;` and comments.
fn is_blank(sql: &str) -> bool {
    skip_blank(sql).is_empty()
}

/// The first `n` words of a statement, upper-cased (comments skipped).
fn leading_words(sql: &str, n: usize) -> Vec<String> {
    skip_blank(sql)
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .take(n)
        .map(str::to_ascii_uppercase)
        .collect()
}

/// Splits a dot-command line into words; '...' and "..." quote.
fn split_args(line: &str) -> Result<Vec<String>> {
    let mut args = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        let mut word = String::new();
        if c == '\'' || c == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some(q) if q == c => break,
                    Some(x) => word.push(x),
                    None => bail!("unterminated quote in {line:?}"),
                }
            }
        } else {
            while let Some(&x) = chars.peek() {
                if x.is_whitespace() {
                    break;
                }
                word.push(x);
                chars.next();
            }
        }
        args.push(word);
    }
    Ok(args)
}

/// Options of `dosql shell`.
#[derive(Debug)]
pub struct ShellOptions {
    /// SQL (or a dot-command) to run instead of reading input.
    pub sql: Option<String>,
    /// Output mode; by default table on a terminal, list otherwise.
    pub mode: Option<Mode>,
    /// Headers in list/csv modes.
    pub headers: bool,
}

/// `dosql shell <target> [SQL]`.
pub fn run(db: &mut dyn Database, opts: ShellOptions) -> Result<()> {
    let target = db.to_string();
    let stdout = std::io::stdout();
    let terminal_out = stdout.is_terminal();
    let mode = opts.mode.unwrap_or(if terminal_out {
        Mode::Table
    } else {
        Mode::List
    });
    let interactive = opts.sql.is_none() && std::io::stdin().is_terminal();
    let out: Box<dyn Write> = Box::new(std::io::BufWriter::new(stdout.lock()));
    let mut shell = Shell::new(db, out, mode, opts.headers, interactive);
    if let Some(sql) = opts.sql {
        for line in sql.lines() {
            if shell.line(line)? == Flow::Quit {
                return Ok(());
            }
        }
        return shell.finish();
    }
    if !interactive {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let line = line.context("reading stdin")?;
            if shell.line(&line)? == Flow::Quit {
                return Ok(());
            }
        }
        return shell.finish();
    }
    interactive_loop(&mut shell, &target)
}

fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DOSQL_HISTORY") {
        return Some(PathBuf::from(p)).filter(|p| !p.as_os_str().is_empty());
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".dosql_history"))
}

fn interactive_loop(shell: &mut Shell<'_>, target: &str) -> Result<()> {
    use rustyline::error::ReadlineError;
    let mut editor = rustyline::DefaultEditor::new().context("starting the line editor")?;
    let history = history_path();
    if let Some(h) = &history {
        // No history yet is fine.
        let _ = editor.load_history(h);
    }
    eprintln!("dosql shell on {target}: SQL ends with ';', .help for commands, .quit to leave");
    loop {
        let prompt = if shell.continuing() {
            "   ...> "
        } else {
            "dosql> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                match shell.line(&line) {
                    Ok(Flow::Quit) => break,
                    Ok(Flow::Continue) => {}
                    Err(e) if e.is_broken_pipe() => return Err(e),
                    Err(e) => eprintln!("Error: {e}"),
                }
            }
            // Ctrl-C drops the statement being typed, as in sqlite3.
            Err(ReadlineError::Interrupted) => shell.clear_pending(),
            Err(ReadlineError::Eof) => break,
            Err(e) => bail!("reading input: {e}"),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    if let Err(e) = shell.finish() {
        eprintln!("Error: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_by_sqlite_rules() {
        let mut buf = String::from(
            "SELECT 1; SELECT ';'; CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; SELECT 2; END; SELECT",
        );
        let got = take_statements(&mut buf);
        assert_eq!(
            got,
            vec![
                "SELECT 1;",
                " SELECT ';';",
                " CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; SELECT 2; END;",
            ]
        );
        assert_eq!(buf, " SELECT");
    }

    #[test]
    fn words_and_blanks() {
        assert!(is_blank(" ; -- hi\n /* x */ ;"));
        assert!(!is_blank("-- hi\nSELECT 1"));
        assert_eq!(
            leading_words("/* c */ rollback to sp1;", 3),
            ["ROLLBACK", "TO", "SP1"]
        );
        assert_eq!(split_args(".read 'a b.sql'").unwrap(), [".read", "a b.sql"]);
        assert!(split_args(".read 'a").is_err());
    }
}
