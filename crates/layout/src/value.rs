//! What Durable Object storage holds, as dosql sees it: values of keys, SQLite-backed storage's
//! head row, the two kinds of storage, and the production limits on them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use dosql_pagestore::StoreError;
use serde_json::Value as Json;

/// The two kinds of Durable Object storage dosql runs on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StorageKind {
    /// KV-backed storage (`new_classes`): `get`/`put`/`delete` of up to 128 keys per call,
    /// values up to 128 KiB. The head is the key `meta`.
    Classic,
    /// SQLite-backed storage (`new_sqlite_classes`): the synchronous `storage.kv` (one key per
    /// call) and `storage.sql`; values up to 2 MB. The head is a row of table `dosql_head`.
    SqliteBacked,
}

impl StorageKind {
    /// The limits production enforces on this kind of storage (local workerd does not).
    pub fn limits(self) -> Limits {
        Limits {
            max_keys_per_call: 128,
            max_key_bytes: 2048,
            max_value_bytes: match self {
                StorageKind::Classic => 128 * 1024,
                StorageKind::SqliteBacked => 2 * 1000 * 1000,
            },
        }
    }
}

/// Durable Object storage's limits on one call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Limits {
    /// Keys per `get`/`put`/`delete` call.
    pub max_keys_per_call: usize,
    /// Bytes in a key (UTF-8; dosql's keys are ASCII).
    pub max_key_bytes: usize,
    /// Bytes in a value, as stored. A value's serialization adds a few bytes of framing,
    /// which [`VALUE_OVERHEAD_BYTES`] leaves room for.
    pub max_value_bytes: usize,
}

/// Room for V8 serialization's framing around an `ArrayBuffer` (and, for the head row, for
/// the row's other columns).
pub const VALUE_OVERHEAD_BYTES: usize = 64;

/// A stored value.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Value {
    /// An `ArrayBuffer` (or a typed array): a page's stored value, and every record this
    /// code writes.
    Bytes(Vec<u8>),
    /// A structured JavaScript value, as older releases wrote `meta` and `transfer` (and as
    /// the pointer to the head row is written): its JSON, in which every `ArrayBuffer` is
    /// `{"$bytes": "<standard base64>"}` (the host converts both ways).
    Structured(Json),
}

impl Value {
    /// Bytes this value takes in storage, about (a structured value: its JSON's length).
    pub fn stored_len(&self) -> usize {
        match self {
            Value::Bytes(b) => b.len(),
            Value::Structured(j) => j.to_string().len(),
        }
    }
}

/// SQLite-backed storage's row 0 of table `dosql_head`: the head's text and its binary part.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HeadRow {
    /// Column `head` (TEXT): JSON.
    pub text: String,
    /// Column `inline` (BLOB), or NULL.
    pub blob: Option<Vec<u8>>,
}

impl HeadRow {
    /// Bytes the row stores.
    pub fn stored_len(&self) -> usize {
        self.text.len() + self.blob.as_ref().map_or(0, Vec::len)
    }
}

/// The bytes a structured value holds where an `ArrayBuffer` was: `{"$bytes": "<base64>"}`.
pub fn bytes_of(v: &Json) -> Option<Vec<u8>> {
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    STANDARD.decode(obj.get("$bytes")?.as_str()?).ok()
}

/// A structured value's field that must be a non-negative integer of at most `max`.
pub(crate) fn count_field(v: &Json, field: &str, max: u64) -> Result<Option<u64>, StoreError> {
    match v.get(field) {
        None => Ok(None),
        Some(x) => x.as_u64().filter(|&n| n <= max).map(Some).ok_or_else(|| {
            StoreError::corrupt(format!("{field} is not an integer in 0..={max}: {x}"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn binary_parts_of_structured_values() {
        assert_eq!(bytes_of(&json!({"$bytes": "AAEC"})), Some(vec![0, 1, 2]));
        assert_eq!(bytes_of(&json!({"$bytes": "!"})), None);
        assert_eq!(bytes_of(&json!({"$bytes": "AA==", "x": 1})), None);
        assert_eq!(bytes_of(&json!("AAEC")), None);
    }

    #[test]
    fn limits_by_kind() {
        assert_eq!(StorageKind::Classic.limits().max_value_bytes, 131_072);
        assert_eq!(StorageKind::SqliteBacked.limits().max_keys_per_call, 128);
    }
}
