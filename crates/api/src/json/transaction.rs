//! Which statements of a request manage transactions themselves: the first words of each
//! statement, read without a parser, decide whether a /query runs as one transaction and
//! whether a /batch's statement would end the batch's.

/// What [`skipped`] passed over.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Skipped {
    /// A string literal or a quoted name ('…', "…", `…`, […]).
    Quoted,
    /// A comment (-- to the line's end, /* … */).
    Comment,
}

/// When a string literal, a quoted name or a comment starts at `b[i]`: what it is and the
/// index of its last byte (past the end when it is not closed). A doubled quote inside a
/// literal reads as two literals back to back, which skips the same bytes.
fn skipped(b: &[u8], i: usize) -> Option<(Skipped, usize)> {
    // The index of the first byte from `from` on that `at` accepts, else the end.
    let first = |from: usize, at: &dyn Fn(&[u8]) -> bool| {
        (from..b.len()).find(|&j| at(&b[j..])).unwrap_or(b.len())
    };
    match b[i] {
        c @ (b'\'' | b'"' | b'`' | b'[') => {
            let close = if c == b'[' { b']' } else { c };
            Some((Skipped::Quoted, first(i + 1, &|r| r[0] == close)))
        }
        b'-' if b.get(i + 1) == Some(&b'-') => {
            Some((Skipped::Comment, first(i + 2, &|r| r[0] == b'\n')))
        }
        b'/' if b.get(i + 1) == Some(&b'*') => {
            let star = first(i + 2, &|r| r.starts_with(b"*/"));
            Some((Skipped::Comment, (star + 1).min(b.len())))
        }
        _ => None,
    }
}

/// The first words (up to four, upper-cased) of each statement of `sql`: `sql` split at the
/// semicolons outside string literals, quoted names and comments. (A trigger's body splits
/// too: its inner statements show as statements, and its `END` makes the callers say no,
/// which is the safe answer.)
pub(super) fn statement_heads(sql: &str) -> Vec<Vec<String>> {
    const WORDS: usize = 4;
    let b = sql.as_bytes();
    let mut heads = Vec::new();
    let mut words: Vec<String> = Vec::new();
    // Something that is not a word (a literal, an operator) was seen in this statement: the
    // words after it are not at its head.
    let mut past_head = false;
    let mut i = 0;
    while i < b.len() {
        if let Some((what, end)) = skipped(b, i) {
            past_head |= what == Skipped::Quoted;
            i = end + 1;
            continue;
        }
        match b[i] {
            b';' => {
                if !words.is_empty() || past_head {
                    heads.push(std::mem::take(&mut words));
                }
                past_head = false;
            }
            c if c.is_ascii_whitespace() => {}
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                if !past_head && words.len() < WORDS {
                    words.push(sql[start..i].to_ascii_uppercase());
                }
                continue;
            }
            _ => past_head = true,
        }
        i += 1;
    }
    if !words.is_empty() || past_head {
        heads.push(words);
    }
    heads
}

/// Whether `sql` may take parameters: whether a parameter's mark (`?`, `:`, `@`, `$`, `#`)
/// appears outside string literals, quoted names and comments. `false` is certain: then no
/// statement of it takes any (a mark in a place the scan does not know, such as `$` inside a
/// name, only makes it answer `true`). Decided from the text, because compiling a statement
/// can change the connection (SQLite applies flag PRAGMAs while it compiles them).
pub(super) fn may_take_parameters(sql: &str) -> bool {
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if let Some((_, end)) = skipped(b, i) {
            i = end + 1;
            continue;
        }
        if matches!(b[i], b'?' | b':' | b'@' | b'$' | b'#') {
            return true;
        }
        i += 1;
    }
    false
}

/// Whether a statement with these first words ends the transaction it runs in: `COMMIT`,
/// `END`, and `ROLLBACK` without `TO` (which only rolls back to a savepoint).
pub(super) fn ends_transaction(head: &[String]) -> bool {
    match head.first().map(String::as_str) {
        Some("COMMIT" | "END") => true,
        Some("ROLLBACK") => !head.iter().any(|w| w == "TO"),
        _ => false,
    }
}

/// Whether the statements of a /query with several of them run as one transaction: yes,
/// unless one of them manages transactions itself (`BEGIN`, `COMMIT`, `END`, `ROLLBACK`,
/// `SAVEPOINT`, `RELEASE`) or does not work inside one (`VACUUM`, `ATTACH`, `DETACH`, and
/// `PRAGMA`, some of which are silently ignored inside a transaction). Those requests run
/// statement by statement, as SQLite runs them.
pub(super) fn one_transaction(sql: &str) -> bool {
    const OWN: &[&str] = &[
        "BEGIN",
        "COMMIT",
        "END",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
        "VACUUM",
        "ATTACH",
        "DETACH",
        "PRAGMA",
    ];
    let heads = statement_heads(sql);
    heads.len() > 1
        && !heads
            .iter()
            .any(|h| h.first().is_some_and(|w| OWN.contains(&w.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_marks_count_outside_literals_and_comments_only() {
        for sql in [
            "SELECT ?",
            "SELECT ?1",
            "SELECT :a",
            "SELECT @a",
            "SELECT $a",
            "INSERT INTO t VALUES ('x', ?)",
            "SELECT 1; -- ?\n SELECT :b",
            // A `$` inside a name: a mark where the scan cannot tell, so it says maybe.
            "SELECT a$b FROM t",
        ] {
            assert!(may_take_parameters(sql), "{sql}");
        }
        for sql in [
            "SELECT 1",
            ";;;; CREATE TABLE IF NOT EXISTS t(a)",
            "SELECT '?', \"a:b\", `@c`, [$d] /* :e */ -- ?f",
            "SELECT 'it''s ?'",
            "CREATE TABLE w(a); INSERT INTO w VALUES (1); PRAGMA user_version = 3",
        ] {
            assert!(!may_take_parameters(sql), "{sql}");
        }
    }

    #[test]
    fn statements_split_outside_literals_and_comments() {
        assert_eq!(
            statement_heads("insert into t values ('a;b'); -- x;\n select \"c;\" /* ; */ ;; "),
            vec![vec!["INSERT", "INTO", "T", "VALUES"], vec!["SELECT"]]
        );
        assert_eq!(statement_heads("  ;  "), Vec::<Vec<String>>::new());
        let ends = |sql: &str| statement_heads(sql).iter().any(|h| ends_transaction(h));
        assert!(ends("insert into t values (1); commit"));
        assert!(ends("rollback transaction"));
        assert!(!ends("rollback transaction to savepoint s"));
        assert!(!ends("ROLLBACK TO s; RELEASE s"));
        assert!(!ends("select 'commit'"));
        assert!(one_transaction(
            "CREATE TABLE t(x); INSERT INTO t VALUES (1)"
        ));
        assert!(!one_transaction("INSERT INTO t VALUES (1)"));
        assert!(!one_transaction("BEGIN; INSERT INTO t VALUES (1); COMMIT"));
        assert!(!one_transaction(
            "INSERT INTO t VALUES (1); pragma foreign_keys = 1"
        ));
        assert!(!one_transaction(
            "CREATE TRIGGER r AFTER INSERT ON t BEGIN SELECT 1; END; INSERT INTO t VALUES (1)"
        ));
    }
}
