//! [`Engine`] for a rusqlite connection: plain SQLite (the oracle) or dosql through its VFS.

use rusqlite::Connection;
use rusqlite::types::ValueRef;

use crate::{Engine, Value};

impl Engine for Connection {
    fn statement(&mut self, sql: &str) -> Result<(), String> {
        // Like the reference harness (sqlite3_exec): every statement of the record runs.
        self.execute_batch(sql).map_err(|e| e.to_string())
    }

    fn query(&mut self, sql: &str) -> Result<Vec<Vec<Value>>, String> {
        let mut stmt = self.prepare(sql).map_err(|e| e.to_string())?;
        let n = stmt.column_count();
        let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| e.to_string())? {
            let mut values = Vec::with_capacity(n);
            for i in 0..n {
                values.push(match row.get_ref(i).map_err(|e| e.to_string())? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Integer(v),
                    ValueRef::Real(v) => Value::Real(v),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                });
            }
            out.push(values);
        }
        Ok(out)
    }
}
