//! One Hrana statement: prepared, its arguments bound (through [`crate::bind`]), its rows
//! stepped into a result under the answer budget; and `describe`.

use std::cell::Cell;

use dosql_vfs::Database;
use rusqlite::Connection;

use super::proto::{
    Col, DescribeCol, DescribeParam, DescribeResult, ProtoError, Stmt, StmtResult, args_error,
    proto_error, sql_error,
};
use super::value::{InValue, OutValue, json_cost};
use crate::bind::{self, Arg, BindError, Count, Rules};
use crate::response::too_large;

/// Prepares, binds and runs one statement. Its rows count against `answer_left`.
pub(super) fn run(
    conn: &Connection,
    db: &Database,
    sql: &str,
    stmt: &Stmt,
    (answer_limit, answer_left): (usize, &Cell<usize>),
) -> Result<StmtResult, ProtoError> {
    let mut prepared = conn.prepare(sql).map_err(|e| sql_error(&e, db))?;
    apply_args(&mut prepared, stmt)?;
    let cols: Vec<Col> = prepared
        .columns()
        .map(|c| Col {
            name: Some(c.name().to_owned()),
            decltype: c.decl_type().map(str::to_owned),
        })
        .collect();
    let want_rows = stmt.want_rows.unwrap_or(true);
    let changes_before = conn.total_changes();
    let mut rows = Vec::new();
    {
        let mut cursor = prepared.raw_query();
        while let Some(row) = cursor.next().map_err(|e| sql_error(&e, db))? {
            if want_rows {
                let mut values = Vec::with_capacity(cols.len());
                for i in 0..cols.len() {
                    let value = row.get_ref(i).map_err(|e| sql_error(&e, db))?;
                    let cost = json_cost(value);
                    let Some(left) = answer_left.get().checked_sub(cost) else {
                        let e = too_large(answer_limit, false);
                        return Err(proto_error(&e.code, e.message));
                    };
                    answer_left.set(left);
                    values.push(OutValue::from(value));
                }
                rows.push(values);
            }
        }
    }
    // changes() keeps the count of the last INSERT/UPDATE/DELETE; report it only when this
    // statement changed something (a SELECT or DDL affects no rows).
    let changed = conn.total_changes() != changes_before;
    Ok(StmtResult {
        cols,
        rows,
        affected_row_count: if changed { conn.changes() } else { 0 },
        last_insert_rowid: Some(conn.last_insert_rowid().to_string()),
    })
}

/// Hrana's binding: positional arguments to parameters 1.., then named ones (which win);
/// every parameter must get a value, and every argument must have a parameter. Names with or
/// without their prefix (`?NNN` too).
const RULES: Rules = Rules {
    count: Count::Cover,
    prefixes: &[':', '@', '$', '?'],
};

/// Binds the statement's arguments; a mismatch is `ARGS_INVALID`.
fn apply_args(prepared: &mut rusqlite::Statement<'_>, stmt: &Stmt) -> Result<(), ProtoError> {
    let args = stmt.args.as_deref().unwrap_or_default();
    let named = stmt.named_args.as_deref().unwrap_or_default();
    let named_values = named.iter().map(|arg| (arg.name.as_str(), &arg.value));
    bind::bind(prepared, args, named_values, RULES, InValue::to_sql).map_err(|e| match e {
        BindError::Count(c) => args_error(format!(
            "{} positional arguments given; the statement takes {} parameters",
            c.positional, c.parameters
        )),
        BindError::NoParameter(name) => {
            args_error(format!("the statement has no parameter named {name:?}"))
        }
        BindError::Value(Arg::Position(i), m) => args_error(format!("argument {i}: {m}")),
        BindError::Value(Arg::Name(name), m) => args_error(format!("argument {name:?}: {m}")),
        BindError::Unbound {
            index,
            name,
            counts,
        } => {
            let name = name.unwrap_or_else(|| format!("?{index}"));
            args_error(format!(
                "parameter {name} has no argument ({} positional and {} named given, the \
                 statement takes {})",
                counts.positional, counts.named, counts.parameters
            ))
        }
        // Only `Count::Exact` refuses a second value (here a named one wins).
        BindError::Twice { index, .. } => args_error(format!("parameter {index} given twice")),
        BindError::Sqlite(e) => args_error(e.to_string()),
    })
}

/// `describe`: a statement's parameters and columns, prepared but not run.
pub(super) fn describe(
    conn: &Connection,
    db: &Database,
    sql: &str,
) -> Result<DescribeResult, ProtoError> {
    let prepared = conn.prepare(sql).map_err(|e| sql_error(&e, db))?;
    Ok(DescribeResult {
        params: (1..=prepared.parameter_count())
            .map(|i| DescribeParam {
                name: prepared.parameter_name(i).map(str::to_owned),
            })
            .collect(),
        cols: prepared
            .columns()
            .map(|c| DescribeCol {
                name: c.name().to_owned(),
                decltype: c.decl_type().map(str::to_owned),
            })
            .collect(),
        is_explain: prepared.is_explain() > 0,
        is_readonly: prepared.readonly(),
    })
}
