//! Hrana's typed values both ways: `{"type": "integer", "value": "42"}` and its kin in
//! requests ([`InValue`], converted to SQLite values for binding), in answers ([`OutValue`]),
//! and what each costs against the answer size limit.

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use rusqlite::types::{Value as SqlValue, ValueRef};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

/// Blobs arrive in standard base64, with or without padding.
const BASE64_IN: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A value in a request: `{"type": "null" | "integer" | "float" | "text" | "blob", ...}`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(super) enum InValue {
    Null,
    Integer { value: IntegerText },
    Float { value: f64 },
    Text { value: String },
    Blob { base64: String },
}

/// An integer's `value`: a decimal string, as the protocol says; a JSON number is accepted too.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum IntegerText {
    Text(String),
    Number(i64),
}

impl InValue {
    /// The SQLite value to bind, or why this is not one.
    pub(super) fn to_sql(&self) -> Result<SqlValue, String> {
        Ok(match self {
            InValue::Null => SqlValue::Null,
            InValue::Integer {
                value: IntegerText::Number(i),
            } => SqlValue::Integer(*i),
            InValue::Integer {
                value: IntegerText::Text(s),
            } => SqlValue::Integer(
                s.parse::<i64>()
                    .map_err(|_| format!("{s:?} is not a 64-bit integer"))?,
            ),
            InValue::Float { value } => SqlValue::Real(*value),
            InValue::Text { value } => SqlValue::Text(value.clone()),
            InValue::Blob { base64 } => SqlValue::Blob(
                BASE64_IN
                    .decode(base64)
                    .map_err(|e| format!("bad base64 in blob: {e}"))?,
            ),
        })
    }
}

/// About how many bytes `v` takes in an answer (`{"type":"text","value":"..."}`): what the
/// answer size limit counts.
pub(super) fn json_cost(v: ValueRef<'_>) -> usize {
    const FRAME: usize = 32;
    FRAME
        + match v {
            ValueRef::Null | ValueRef::Integer(_) | ValueRef::Real(_) => 24,
            // Characters JSON escapes take up to six bytes.
            ValueRef::Text(t) => {
                t.len()
                    + 5 * t
                        .iter()
                        .filter(|&&b| b < 0x20 || b == b'"' || b == b'\\')
                        .count()
            }
            ValueRef::Blob(b) => b.len().div_ceil(3) * 4,
        }
}

/// A value in an answer.
#[derive(Debug)]
pub(super) enum OutValue {
    Null,
    Integer(i64),
    Float(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<ValueRef<'_>> for OutValue {
    fn from(v: ValueRef<'_>) -> OutValue {
        match v {
            ValueRef::Null => OutValue::Null,
            ValueRef::Integer(i) => OutValue::Integer(i),
            ValueRef::Real(f) => OutValue::Float(f),
            ValueRef::Text(t) => OutValue::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => OutValue::Blob(b.to_vec()),
        }
    }
}

impl Serialize for OutValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        match self {
            OutValue::Null => m.serialize_entry("type", "null")?,
            OutValue::Integer(i) => {
                // A string: JSON readers that hold numbers as doubles would round 64-bit ints.
                m.serialize_entry("type", "integer")?;
                m.serialize_entry("value", &i.to_string())?;
            }
            OutValue::Float(f) if f.is_finite() => {
                m.serialize_entry("type", "float")?;
                m.serialize_entry("value", f)?;
            }
            OutValue::Float(f) => {
                // JSON has no infinity, but 1e999 is a valid JSON number that overflows to
                // ±Infinity in JavaScript's JSON.parse (serde_json would write null).
                m.serialize_entry("type", "float")?;
                let text = if *f > 0.0 { "1e999" } else { "-1e999" };
                let raw =
                    RawValue::from_string(text.to_owned()).map_err(serde::ser::Error::custom)?;
                m.serialize_entry("value", &raw)?;
            }
            OutValue::Text(t) => {
                m.serialize_entry("type", "text")?;
                m.serialize_entry("value", t)?;
            }
            OutValue::Blob(b) => {
                m.serialize_entry("type", "blob")?;
                m.serialize_entry("base64", &STANDARD.encode(b))?;
            }
        }
        m.end()
    }
}
