//! Binding arguments to a prepared statement's parameters: the one routine both protocols use.
//!
//! Each protocol converts its own wire values into SQLite values (the JSON API's forms in
//! [`crate::value`], Hrana's typed values in `hrana::value`), says how strictly arguments
//! must match parameters ([`Rules`]), and turns a [`BindError`] into its own error code and
//! message: the JSON API answers `SQLITE_RANGE` / `SQLITE_MISMATCH`, Hrana `ARGS_INVALID`.

use rusqlite::Statement;
use rusqlite::types::Value;

/// How arguments must match a statement's parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// How many arguments, and whether every parameter must get one.
    pub(crate) count: Count,
    /// A name starting with one of these is looked up as given; any other name is looked up
    /// with `:`, `@` and `$` in front in turn.
    pub(crate) prefixes: &'static [char],
}

/// What [`Rules::count`] asks of the arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    /// Exactly as many arguments (positional and named together) as the statement has
    /// parameters, each reaching a parameter of its own (two names for one parameter, `a`
    /// and `:a`, are refused), so that every parameter gets a value.
    Exact,
    /// At most as many positional arguments as parameters; then every parameter must have
    /// got a value, positional or named.
    Cover,
}

/// How many arguments were given, and how many parameters the statement has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) positional: usize,
    pub(crate) named: usize,
    pub(crate) parameters: usize,
}

/// An argument, as an error names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arg<'a> {
    /// The positional argument for parameter `n` (from 1).
    Position(usize),
    /// A named argument, its name as given.
    Name(&'a str),
}

/// Why arguments could not be bound; each protocol words it as its own error.
#[derive(Debug)]
pub(crate) enum BindError<'a> {
    /// The arguments do not number what [`Rules::count`] asks.
    Count(Counts),
    /// A named argument names no parameter of the statement.
    NoParameter(&'a str),
    /// An argument's value is not a SQLite value: the conversion's message.
    Value(Arg<'a>, String),
    /// Parameter `index` (from 1; `name` when it has one) got a value twice ([`Count::Exact`]).
    Twice { index: usize, name: Option<String> },
    /// Parameter `index` (from 1; `name` when it has one) got no value.
    Unbound {
        index: usize,
        name: Option<String>,
        counts: Counts,
    },
    /// SQLite refused a name lookup or a value (a string over its length limit, ...).
    Sqlite(rusqlite::Error),
}

/// Binds `positional` to parameters 1.., then `named` (which, with [`Count::Cover`], win over
/// positional ones for the same parameter), converting each value with `to_value` just before
/// it is bound. Checks the counts of `rules` first, and that every parameter got a value last.
pub(crate) fn bind<'a, V: 'a>(
    stmt: &mut Statement<'_>,
    positional: &'a [V],
    named: impl ExactSizeIterator<Item = (&'a str, &'a V)>,
    rules: Rules,
    to_value: impl Fn(&V) -> Result<Value, String>,
) -> Result<(), BindError<'a>> {
    let counts = Counts {
        positional: positional.len(),
        named: named.len(),
        parameters: stmt.parameter_count(),
    };
    let count_ok = match rules.count {
        Count::Exact => counts.positional + counts.named == counts.parameters,
        Count::Cover => counts.positional <= counts.parameters,
    };
    if !count_ok {
        return Err(BindError::Count(counts));
    }
    // Which parameters got a value.
    let mut bound = vec![false; counts.parameters];
    for (i, v) in positional.iter().enumerate() {
        let value = to_value(v).map_err(|m| BindError::Value(Arg::Position(i + 1), m))?;
        stmt.raw_bind_parameter(i + 1, value)
            .map_err(BindError::Sqlite)?;
        bound[i] = true;
    }
    for (name, v) in named {
        let index = if name.starts_with(rules.prefixes) {
            stmt.parameter_index(name).map_err(BindError::Sqlite)?
        } else {
            // SQLite names include their prefix; clients may leave it out.
            [":", "@", "$"]
                .iter()
                .find_map(|p| stmt.parameter_index(&format!("{p}{name}")).ok().flatten())
        };
        let index = index.ok_or(BindError::NoParameter(name))?;
        if rules.count == Count::Exact && bound[index - 1] {
            let name = stmt.parameter_name(index).map(str::to_owned);
            return Err(BindError::Twice { index, name });
        }
        let value = to_value(v).map_err(|m| BindError::Value(Arg::Name(name), m))?;
        stmt.raw_bind_parameter(index, value)
            .map_err(BindError::Sqlite)?;
        bound[index - 1] = true;
    }
    if let Some(index) = bound.iter().position(|b| !b).map(|i| i + 1) {
        return Err(BindError::Unbound {
            index,
            name: stmt.parameter_name(index).map(str::to_owned),
            counts,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    const EXACT: Rules = Rules {
        count: Count::Exact,
        prefixes: &[':', '@', '$'],
    };
    const COVER: Rules = Rules {
        count: Count::Cover,
        prefixes: &[':', '@', '$', '?'],
    };

    fn int(v: &i64) -> Result<Value, String> {
        if *v < 0 {
            Err(format!("{v} is negative"))
        } else {
            Ok(Value::Integer(*v))
        }
    }

    /// Binds and runs `sql`, answering its one row.
    fn run(
        sql: &str,
        positional: &[i64],
        named: &[(&str, i64)],
        rules: Rules,
    ) -> Result<Vec<Value>, String> {
        let conn = Connection::open_in_memory().unwrap();
        let mut stmt = conn.prepare(sql).unwrap();
        let named = named.iter().map(|(n, v)| (*n, v));
        bind(&mut stmt, positional, named, rules, int).map_err(|e| format!("{e:?}"))?;
        let n = stmt.column_count();
        let mut rows = stmt.raw_query();
        let row = rows.next().unwrap().unwrap();
        Ok((0..n).map(|i| row.get(i).unwrap()).collect())
    }

    #[test]
    fn names_bind_with_or_without_their_prefix_and_win_over_positions() {
        let got = run(
            "SELECT :a, @b, $c",
            &[1, 2, 3],
            &[("b", 20), ("$c", 30)],
            COVER,
        );
        let want: Vec<Value> = [1, 20, 30].into_iter().map(Value::Integer).collect();
        assert_eq!(got, Ok(want));
        assert_eq!(
            run("SELECT ?2, ?1", &[], &[("?1", 1), ("?2", 2)], COVER),
            Ok(vec![Value::Integer(2), Value::Integer(1)])
        );
    }

    #[test]
    fn each_rule_checks_its_counts() {
        let err = |r: Result<Vec<Value>, String>| r.unwrap_err();
        assert!(err(run("SELECT ?", &[1, 2], &[], EXACT)).starts_with("Count"));
        assert!(err(run("SELECT ?, ?", &[1], &[], EXACT)).starts_with("Count"));
        assert!(err(run("SELECT ?", &[1, 2], &[], COVER)).starts_with("Count"));
        assert!(err(run("SELECT ?, ?", &[1], &[], COVER)).starts_with("Unbound { index: 2"));
        // `?NNN` is a name only where the rules say so.
        assert!(err(run("SELECT ?1", &[], &[("?1", 1)], EXACT)).starts_with("NoParameter"));
        assert!(err(run("SELECT ?", &[-1], &[], EXACT)).starts_with("Value(Position(1)"));
        assert!(err(run("SELECT :a", &[], &[("a", -1)], EXACT)).starts_with("Value(Name(\"a\")"));
    }

    #[test]
    fn exact_rules_refuse_two_names_for_one_parameter() {
        // Two arguments for two parameters, but both reach :a and :b would stay NULL.
        let twice = run("SELECT :a, :b", &[], &[("a", 1), (":a", 2)], EXACT).unwrap_err();
        assert!(
            twice.starts_with("Twice { index: 1, name: Some(\":a\")"),
            "{twice}"
        );
        assert_eq!(
            run("SELECT :a, :b", &[], &[("a", 1), (":b", 2)], EXACT),
            Ok(vec![Value::Integer(1), Value::Integer(2)])
        );
        // Under the cover rules the later name wins, and :b unbound is an error.
        let cover = run("SELECT :a, :b", &[], &[("a", 1), (":a", 2)], COVER).unwrap_err();
        assert!(cover.starts_with("Unbound { index: 2"), "{cover}");
    }
}
