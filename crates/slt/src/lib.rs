//! A sqllogictest runner for dosql.
//!
//! It reads the test scripts of SQLite's sqllogictest project (`select1.test`,
//! `evidence/*.test`, ...), formats query results exactly as SQLite's
//! reference harness (`sqllogictest.c` with its `slt_sqlite.c` engine) does,
//! and checks an engine against the script, or against an oracle engine.
//!
//! The crate knows no database: an engine is anything that implements
//! [`Engine`], and returns typed [`Value`]s, so the formatting rules the
//! harness gets from `sqlite3_column_int`, `sqlite3_column_double` and
//! `sqlite3_column_text` are applied here, once, for every engine alike.
//!
//! ```
//! use dosql_slt::{Engine, Value, parse, run};
//!
//! struct Answer;
//! impl Engine for Answer {
//!     fn statement(&mut self, _sql: &str) -> Result<(), String> {
//!         Ok(())
//!     }
//!     fn query(&mut self, _sql: &str) -> Result<Vec<Vec<Value>>, String> {
//!         Ok(vec![vec![Value::Integer(42)]])
//!     }
//! }
//!
//! let records = parse("query I nosort\nSELECT 42\n----\n42\n").unwrap();
//! let report = run(&records, &mut Answer);
//! assert_eq!(report.passed, 1);
//! assert!(report.divergences.is_empty());
//! ```

#![forbid(unsafe_code)]

mod format;
mod parse;
mod run;
#[cfg(feature = "rusqlite")]
mod sqlite;

pub use format::{format_rows, format_value, hash_values};
pub use parse::{
    ColumnType, Condition, Expected, ParseError, Query, Record, RecordKind, SortMode,
    StatementExpect, parse,
};
pub use run::{
    DEFAULT_HASH_THRESHOLD, Finding, FindingKind, Options, Report, run, run_differential,
    run_differential_with, run_with,
};

/// A value as an engine returns it: one of SQLite's five storage classes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// An IEEE 754 double.
    Real(f64),
    /// Text (SQLite's UTF-8 text).
    Text(String),
    /// A blob: raw bytes.
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Integer(value)
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Value::Real(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(value.to_owned())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Text(value)
    }
}

impl From<Vec<u8>> for Value {
    fn from(value: Vec<u8>) -> Self {
        Value::Blob(value)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

/// A database engine that the runner can drive.
///
/// One value of it is one connection to one database: the runner sends the
/// records of a script to it in order, so state (tables, rows) carries over
/// from record to record.
pub trait Engine {
    /// Runs every SQL statement in `sql`, in order, as `sqlite3_exec` does.
    ///
    /// A statement record may hold several statements separated by `;`
    /// (for example `INSERT ...; DROP INDEX ...;` in
    /// `evidence/slt_lang_aggfunc.test`), and the reference harness runs them
    /// all. An error in any of them is the record's error; the message is
    /// only reported, never compared.
    fn statement(&mut self, sql: &str) -> Result<(), String>;

    /// Runs the single query `sql` and returns its rows, each a list of the
    /// values of its columns.
    fn query(&mut self, sql: &str) -> Result<Vec<Vec<Value>>, String>;
}

impl<E: Engine + ?Sized> Engine for &mut E {
    fn statement(&mut self, sql: &str) -> Result<(), String> {
        (**self).statement(sql)
    }

    fn query(&mut self, sql: &str) -> Result<Vec<Vec<Value>>, String> {
        (**self).query(sql)
    }
}

impl<E: Engine + ?Sized> Engine for Box<E> {
    fn statement(&mut self, sql: &str) -> Result<(), String> {
        (**self).statement(sql)
    }

    fn query(&mut self, sql: &str) -> Result<Vec<Vec<Value>>, String> {
        (**self).query(sql)
    }
}
