//! How SQLite values travel in JSON, both ways.
//!
//! | SQLite  | JSON |
//! |---------|------|
//! | NULL    | `null` |
//! | INTEGER | a number when within ±(2^53 − 1), so JavaScript reads it exactly; otherwise `{"int": "<decimal digits>"}` |
//! | REAL    | a number written with a fraction or exponent (`1.0`, `2.5e-7`); ±infinity as `{"float": "inf"}` / `{"float": "-inf"}` |
//! | TEXT    | a string |
//! | BLOB    | `{"base64": "<standard base64 with padding>"}` |
//!
//! Parameters accept the same forms, plus `true`/`false` (as 1/0). A JSON number without a
//! fraction or exponent binds as INTEGER, any other number as REAL.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rusqlite::types::{Value, ValueRef};
use serde_json::{Map, Value as Json};

/// Largest integer JavaScript represents exactly (`Number.MAX_SAFE_INTEGER`).
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Appends `value` as JSON to `out`, as the table above says (the tests check it against the
/// same mapping built as a `serde_json::Value` and serialized).
pub fn write_json(out: &mut Vec<u8>, value: ValueRef<'_>) {
    match value {
        ValueRef::Null => out.extend_from_slice(b"null"),
        ValueRef::Integer(i) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&i) => {
            write_i64(out, i);
        }
        ValueRef::Integer(i) => {
            out.extend_from_slice(b"{\"int\":\"");
            write_i64(out, i);
            out.extend_from_slice(b"\"}");
        }
        ValueRef::Real(f) if f.is_finite() => write_serialized(out, &f),
        ValueRef::Real(f) if f > 0.0 => out.extend_from_slice(br#"{"float":"inf"}"#),
        ValueRef::Real(_) => out.extend_from_slice(br#"{"float":"-inf"}"#),
        ValueRef::Text(t) => write_str(out, &String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => {
            out.extend_from_slice(b"{\"base64\":\"");
            out.extend_from_slice(BASE64.encode(b).as_bytes());
            out.extend_from_slice(b"\"}");
        }
    }
}

/// Appends `s` as a JSON string (escaped as serde_json escapes).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_serialized(out, s);
}

/// Appends `i` as a JSON number.
pub fn write_i64(out: &mut Vec<u8>, i: i64) {
    write_serialized(out, &i);
}

fn write_serialized<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Writing to a Vec cannot fail, and these types always serialize.
    let _ = serde_json::to_writer(out, v);
}

/// A parameter from JSON, or a message saying why it cannot be one.
pub fn from_json(value: &Json) -> Result<Value, String> {
    match value {
        Json::Null => Ok(Value::Null),
        Json::Bool(b) => Ok(Value::Integer(i64::from(*b))),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(Value::Integer(i))
            } else if n.is_u64() {
                Err(format!("integer {n} is out of SQLite's 64-bit range"))
            } else {
                n.as_f64()
                    .map(Value::Real)
                    .ok_or_else(|| format!("number {n} is not representable"))
            }
        }
        Json::String(s) => Ok(Value::Text(s.clone())),
        Json::Object(o) => tagged(o),
        Json::Array(_) => Err("arrays are not SQLite values".into()),
    }
}

fn tagged(o: &Map<String, Json>) -> Result<Value, String> {
    let only = |key: &str| -> Option<&str> {
        if o.len() == 1 {
            o.get(key).and_then(Json::as_str)
        } else {
            None
        }
    };
    if let Some(b64) = only("base64") {
        return BASE64
            .decode(b64)
            .map(Value::Blob)
            .map_err(|e| format!("bad base64 in blob parameter: {e}"));
    }
    if let Some(digits) = only("int") {
        return digits
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("{digits:?} is not a 64-bit integer"));
    }
    if let Some(f) = only("float") {
        return match f {
            "inf" | "+inf" | "Infinity" => Ok(Value::Real(f64::INFINITY)),
            "-inf" | "-Infinity" => Ok(Value::Real(f64::NEG_INFINITY)),
            other => other
                .parse::<f64>()
                .map(Value::Real)
                .map_err(|_| format!("{other:?} is not a float")),
        };
    }
    Err(r#"objects must be {"base64": "..."}, {"int": "..."} or {"float": "..."}"#.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The mapping of the table above as a value tree: the reference `write_json` must match.
    fn to_json(value: ValueRef<'_>) -> Json {
        match value {
            ValueRef::Null => Json::Null,
            ValueRef::Integer(i) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&i) => json!(i),
            ValueRef::Integer(i) => json!({ "int": i.to_string() }),
            ValueRef::Real(f) if f.is_finite() => json!(f),
            ValueRef::Real(f) => json!({ "float": if f > 0.0 { "inf" } else { "-inf" } }),
            ValueRef::Text(t) => Json::String(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => json!({ "base64": BASE64.encode(b) }),
        }
    }

    #[test]
    fn values_round_trip() {
        let cases = [
            Value::Null,
            Value::Integer(0),
            Value::Integer(MAX_SAFE_INTEGER),
            Value::Integer(MAX_SAFE_INTEGER + 1),
            Value::Integer(i64::MIN),
            Value::Real(1.0),
            Value::Real(-2.5e-300),
            Value::Real(f64::INFINITY),
            Value::Text("héllo \"quoted\"".into()),
            Value::Blob(vec![0, 1, 2, 255]),
        ];
        for v in cases {
            let json = to_json(ValueRef::from(&v));
            // Through text, as it travels.
            let text = serde_json::to_string(&json).unwrap();
            let back = from_json(&serde_json::from_str(&text).unwrap()).unwrap();
            assert_eq!(back, v, "{text}");
        }
    }

    #[test]
    fn written_json_is_the_serialized_value() {
        let cases = [
            Value::Null,
            Value::Integer(0),
            Value::Integer(-MAX_SAFE_INTEGER),
            Value::Integer(MAX_SAFE_INTEGER + 1),
            Value::Integer(i64::MIN),
            Value::Real(1.0),
            Value::Real(-0.0),
            Value::Real(1e300),
            Value::Real(-2.5e-300),
            Value::Real(0.1),
            Value::Real(f64::INFINITY),
            Value::Real(f64::NEG_INFINITY),
            Value::Text("héllo \"quoted\" \\ \n\t\u{1}\u{7f}\u{2028} 😀".into()),
            Value::Text(String::new()),
            Value::Blob(vec![]),
            Value::Blob(vec![0, 1, 2, 255]),
        ];
        for v in cases {
            let mut out = Vec::new();
            write_json(&mut out, ValueRef::from(&v));
            let want = serde_json::to_vec(&to_json(ValueRef::from(&v))).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&want),
                "{v:?}"
            );
        }
        // Text that is not UTF-8 is written as serde_json writes its lossy conversion.
        let mut out = Vec::new();
        write_json(&mut out, ValueRef::Text(b"a\xffb"));
        assert_eq!(
            out,
            serde_json::to_vec(&to_json(ValueRef::Text(b"a\xffb"))).unwrap()
        );
    }

    #[test]
    fn big_integers_are_strings_and_reals_keep_a_fraction() {
        assert_eq!(
            to_json(ValueRef::Integer(1 << 60)),
            json!({"int": "1152921504606846976"})
        );
        assert_eq!(
            serde_json::to_string(&to_json(ValueRef::Real(3.0))).unwrap(),
            "3.0"
        );
    }

    #[test]
    fn bad_parameters_say_why() {
        assert!(from_json(&json!([1])).is_err());
        assert!(from_json(&json!({"base64": "!!"})).is_err());
        assert!(from_json(&json!({"int": "12x"})).is_err());
        assert!(from_json(&json!({"what": 1})).is_err());
        assert!(from_json(&serde_json::from_str("18446744073709551615").unwrap()).is_err());
    }
}
