//! Running a request's statements on the session's connection: preparing (through the
//! statement cache where it pays), binding parameters through [`crate::bind`], stepping rows
//! into an [`Outcome`] under the answer budget and the paging window.

use rusqlite::CachedStatement;
use rusqlite::fallible_iterator::FallibleIterator;
use serde_json::Map;

use super::Session;
use super::outcome::{AnswerBudget, Outcome, RowWindow};
use super::request::{Params, Statement};
use super::transaction::{may_take_parameters, statement_heads};
use crate::bind::{self, Arg, BindError, Count, Rules};
use crate::response::too_large;
use crate::{ApiError, value};

/// The single statement a request ran last, prepared, and its SQL: the next statement of a
/// batch with the same text runs it again, without the statement cache's hashing and LRU
/// bookkeeping (batches repeating one statement are the common case; bench/README.md).
type Held<'s, 'c> = Option<(&'s str, CachedStatement<'c>)>;

impl Session {
    /// Runs every statement of `stmt.sql`, binding parameters to those that take them.
    pub(super) fn run<'s, 'c>(
        &'c self,
        stmt: &'s Statement<'_>,
        held: &mut Held<'s, 'c>,
        budget: &mut AnswerBudget,
    ) -> Result<Outcome, ApiError> {
        let window = stmt.paged().then(|| RowWindow {
            offset: stmt.row_offset.unwrap_or(0),
            max: stmt.max_rows,
        });
        // Parameters that no statement can take are refused before anything compiles or runs:
        // a statement run outside a transaction (one after stray `;`s, or any of a request
        // that manages its transactions itself) used to commit and then be refused (the HTTP
        // fuzzer), and compiling alone can apply a PRAGMA. The text decides (see
        // `may_take_parameters`); what it cannot is checked below, after the statements ran.
        if stmt.params.as_ref().is_some_and(|p| !p.is_empty())
            && !may_take_parameters(&stmt.sql)
            && !statement_heads(&stmt.sql).is_empty()
        {
            return Err(no_parameters());
        }
        let mut last = Outcome::default();
        let mut bound = false;
        let mut any = false;
        // Most requests hold one statement: prepare it through the connection's statement
        // cache, so a batch repeating one statement, or a client repeating a query, parses it
        // once. Several statements go through SQLite's statement-by-statement parse instead.
        // (A `;` before the end may separate statements or sit in a literal: either way the
        // general path is right, and rusqlite's own check would compile the rest too early.)
        let body = stmt
            .sql
            .trim_end_matches(|c: char| c == ';' || c.is_whitespace());
        if !body.contains(';') {
            match held {
                Some((sql, prepared)) if *sql == body => prepared.clear_bindings(),
                _ => {
                    // The statement held before goes back to the cache.
                    *held = None;
                    match self.conn.prepare_cached(body) {
                        Ok(prepared) => *held = Some((body, prepared)),
                        Err(rusqlite::Error::Empty) => {}
                        Err(e) => return Err(self.sql_error(&e)),
                    }
                }
            }
            if let Some((_, prepared)) = held {
                any = true;
                let params = stmt.params.as_ref();
                // Refused before it runs: a rejected request changes nothing. (Several
                // statements whose text has a parameter's mark are checked after they ran.)
                if prepared.parameter_count() == 0 && params.is_some_and(|p| !p.is_empty()) {
                    return Err(no_parameters());
                }
                self.step(prepared, params, &mut bound, &mut last, budget, window)?;
            }
        } else {
            let mut batch = rusqlite::Batch::new(&self.conn, &stmt.sql);
            while let Some(mut prepared) = batch.next().map_err(|e| self.sql_error(&e))? {
                any = true;
                let params = stmt.params.as_ref();
                self.step(&mut prepared, params, &mut bound, &mut last, budget, window)?;
            }
        }
        if !any {
            return Err(ApiError::bad_request("no SQL statement in \"sql\""));
        }
        if !bound && stmt.params.as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(no_parameters());
        }
        Ok(last)
    }

    /// Binds (if the statement takes parameters), runs one statement to completion (or, when
    /// paged, to the end of its page) and folds its outcome into `last`. Its rows count
    /// against `budget` as they are written.
    fn step(
        &self,
        prepared: &mut rusqlite::Statement<'_>,
        params: Option<&Params>,
        bound: &mut bool,
        last: &mut Outcome,
        budget: &mut AnswerBudget,
        window: Option<RowWindow>,
    ) -> Result<(), ApiError> {
        if window.is_some() && !prepared.readonly() {
            return Err(ApiError::bad_request(
                "paging (\"max_rows\", \"row_offset\", \"at_txid\") needs read-only \
                 statements: each page runs the query again",
            ));
        }
        if prepared.parameter_count() > 0 {
            if *bound {
                return Err(ApiError::bad_request(
                    "parameters can be given to only one statement of a request",
                ));
            }
            apply_params(prepared, params)?;
            *bound = true;
        }
        let changes_before = self.conn.total_changes();
        let n = prepared.column_count();
        let mut columns = Vec::new();
        for i in 0..n {
            if i > 0 {
                columns.push(b',');
            }
            value::write_str(
                &mut columns,
                prepared.column_name(i).map_err(|e| self.sql_error(&e))?,
            );
        }
        let mut rows = Vec::new();
        let mut next_offset = None;
        {
            let mut cursor = prepared.raw_query();
            let mut seen = 0u64;
            let mut taken = 0u64;
            while let Some(row) = cursor.next().map_err(|e| self.sql_error(&e))? {
                seen += 1;
                let Some(w) = window else {
                    self.write_row(&mut rows, row, n, budget)?;
                    continue;
                };
                if seen <= w.offset {
                    continue;
                }
                if w.max.is_some_and(|max| taken >= max) {
                    next_offset = Some(seen - 1);
                    break;
                }
                match self.write_row(&mut rows, row, n, budget) {
                    Ok(()) => taken += 1,
                    // The page is full: it ends before this row (write_row left the rows as
                    // they were), unless this row alone is too large for any page.
                    Err(e) if e.code == "RESULT_TOO_LARGE" && taken > 0 => {
                        next_offset = Some(seen - 1);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let changed = self.conn.total_changes() > changes_before;
        let outcome = Outcome {
            columns,
            rows,
            rows_affected: if changed { self.conn.changes() } else { 0 },
            last_insert_rowid: self.conn.last_insert_rowid(),
            next_offset,
        };
        // A statement without result columns does not replace a previous result set.
        if n > 0 || last.columns.is_empty() {
            *last = outcome;
        } else {
            last.rows_affected = outcome.rows_affected;
            last.last_insert_rowid = outcome.last_insert_rowid;
        }
        Ok(())
    }
}

impl Session {
    /// Writes one row (after a comma unless it is the first) as a JSON array, counting its
    /// bytes against `budget` value by value, so that no answer grows past the limit.
    fn write_row(
        &self,
        rows: &mut Vec<u8>,
        row: &rusqlite::Row<'_>,
        n: usize,
        budget: &mut AnswerBudget,
    ) -> Result<(), ApiError> {
        let start = rows.len();
        if start > 0 {
            rows.push(b',');
        }
        rows.push(b'[');
        for i in 0..n {
            if i > 0 {
                rows.push(b',');
            }
            value::write_json(rows, row.get_ref(i).map_err(|e| self.sql_error(&e))?);
            if budget.used + (rows.len() - start) > budget.limit {
                rows.truncate(start);
                return Err(too_large(budget.limit, true));
            }
        }
        rows.push(b']');
        budget.used += rows.len() - start;
        Ok(())
    }
}

fn no_parameters() -> ApiError {
    ApiError::new(
        400,
        "SQLITE_RANGE",
        "parameters given, but no statement takes any",
    )
}

fn param_error(msg: String) -> ApiError {
    ApiError::new(400, "SQLITE_MISMATCH", msg)
}

/// The JSON API's binding: exactly as many parameters as the statement takes (positional or
/// named, never both), names with or without their prefix (:name, @name, $name).
const RULES: Rules = Rules {
    count: Count::Exact,
    prefixes: &[':', '@', '$'],
};

/// Binds positional or named parameters; counts and names must match the statement's.
fn apply_params(
    stmt: &mut rusqlite::Statement<'_>,
    params: Option<&Params>,
) -> Result<(), ApiError> {
    let no_names = Map::new();
    let (positional, named) = match params {
        None => (&[][..], &no_names),
        Some(Params::Positional(values)) => (values.as_slice(), &no_names),
        Some(Params::Named(map)) => (&[][..], map),
    };
    let named = named.iter().map(|(name, v)| (name.as_str(), v));
    bind::bind(stmt, positional, named, RULES, value::from_json).map_err(|e| match e {
        BindError::Count(c) => ApiError::new(
            400,
            "SQLITE_RANGE",
            match params {
                None => format!(
                    "the statement takes {} parameters; none given",
                    c.parameters
                ),
                Some(Params::Positional(_)) => format!(
                    "{} parameters given; the statement takes {}",
                    c.positional, c.parameters
                ),
                Some(Params::Named(_)) => format!(
                    "{} named parameters given; the statement takes {}",
                    c.named, c.parameters
                ),
            },
        ),
        BindError::NoParameter(name) => ApiError::new(
            400,
            "SQLITE_RANGE",
            format!("the statement has no parameter named {name:?}"),
        ),
        BindError::Value(Arg::Position(i), m) => param_error(format!("parameter {i}: {m}")),
        BindError::Value(Arg::Name(name), m) => param_error(format!("parameter {name}: {m}")),
        BindError::Sqlite(e) => ApiError::from_sqlite(&e, None),
        BindError::Twice { index, name } => ApiError::new(
            400,
            "SQLITE_RANGE",
            format!(
                "parameter {} is given twice (a name with and without its prefix?)",
                name.unwrap_or_else(|| format!("?{index}"))
            ),
        ),
        // Unreachable after `Twice` with exact counts; worded all the same.
        BindError::Unbound { index, .. } => ApiError::new(
            400,
            "SQLITE_RANGE",
            format!("parameter {index} has no value"),
        ),
    })
}
