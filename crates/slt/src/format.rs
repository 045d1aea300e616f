//! Result formatting, sorting and hashing, as the reference harness does them.
//!
//! The harness's SQLite engine (`slt_sqlite.c`, `sqliteQuery`) renders each
//! non-NULL value by the column's type letter:
//!
//! - `I`: `sqlite3_column_int` printed with `%d`. That is SQLite's conversion
//!   to a 64-bit integer (a real is truncated toward zero and saturated, text
//!   and blobs give the value of their leading integer, as `sqlite3Atoi64`
//!   reads it) and then a cast to a 32-bit C `int`, which keeps the low 32
//!   bits.
//! - `R`: `sqlite3_column_double` printed with SQLite's own `%.3f`
//!   (`sqlite3_snprintf`), which differs from C's: it shows at most 16
//!   significant digits, padding with zeros, rounds half away from zero on
//!   an 18 or 19 digit decimal approximation of the value, and never prints
//!   `-0.000` for a negative zero.
//! - `T`: `sqlite3_column_text`, with an empty string shown as `(empty)` and
//!   every byte outside `' '..='~'` replaced by `@`. An integer is its
//!   decimal form, a real current SQLite's `%!.17g` form (the SQLite that
//!   wrote the scripts used `%!.15g`; no `T` result in the scripts tells the
//!   two apart), a blob its bytes.
//!
//! The digits of reals are checked against SQLite 3.54.1's own `printf`:
//! they agree except in the last digit of values within about 1e-18
//! (relative) of a rounding boundary, where SQLite's 64-bit arithmetic is
//! itself approximate.
//!
//! NULL is `NULL` whatever the letter.

use crate::Value;
use crate::parse::{ColumnType, SortMode, is_c_space};
use md5::{Digest, Md5};

/// Formats one value of a column of type `column_type`, as the reference
/// harness shows it.
pub fn format_value(value: &Value, column_type: ColumnType) -> String {
    if matches!(value, Value::Null) {
        return "NULL".to_owned();
    }
    match column_type {
        // `(int)` of a 64-bit value keeps its low 32 bits on every platform
        // the harness runs on; `as i32` does the same.
        ColumnType::Integer => (int_value(value) as i32).to_string(),
        ColumnType::Real => printf_fixed(real_value(value), 3),
        ColumnType::Text => text_value(value),
    }
}

/// Formats the rows an engine returned for a query with column types
/// `types`, and orders the values by `sort`.
///
/// The result is the flat list of values, row after row, that the script's
/// expected lines (or its hash) describe. A row whose length is not the
/// number of type letters is an error, as it is in the harness ("wrong number
/// of result columns").
pub fn format_rows(
    rows: &[Vec<Value>],
    types: &[ColumnType],
    sort: SortMode,
) -> Result<Vec<String>, String> {
    let mut values = Vec::with_capacity(rows.len() * types.len());
    for row in rows {
        if row.len() != types.len() {
            return Err(format!(
                "wrong number of result columns: expected {} but got {}",
                types.len(),
                row.len()
            ));
        }
        values.extend(row.iter().zip(types).map(|(v, t)| format_value(v, *t)));
    }
    sort_values(&mut values, types.len(), sort);
    Ok(values)
}

/// Orders formatted values as the harness does: `rowsort` sorts rows of
/// `columns` values by comparing them column by column with `strcmp`
/// (byte order, which is `String`'s order), `valuesort` sorts every value.
pub(crate) fn sort_values(values: &mut Vec<String>, columns: usize, sort: SortMode) {
    match sort {
        SortMode::NoSort => {}
        SortMode::ValueSort => values.sort_unstable(),
        SortMode::RowSort => {
            if columns == 0 {
                return;
            }
            let mut rows: Vec<Vec<String>> = Vec::with_capacity(values.len() / columns);
            let mut iter = std::mem::take(values).into_iter();
            loop {
                let row: Vec<String> = iter.by_ref().take(columns).collect();
                if row.is_empty() {
                    break;
                }
                rows.push(row);
            }
            rows.sort_unstable();
            *values = rows.into_iter().flatten().collect();
        }
    }
}

/// The MD5, in lowercase hex, of the values each followed by `\n`: the hash
/// in `N values hashing to MD5` lines and the one labels are compared by.
pub fn hash_values(values: &[String]) -> String {
    let mut hasher = Md5::new();
    for value in values {
        hasher.update(value.as_bytes());
        hasher.update(b"\n");
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// `sqlite3_column_int64`: SQLite's conversion of a value to an integer.
fn int_value(value: &Value) -> i64 {
    match value {
        Value::Null => 0,
        Value::Integer(i) => *i,
        // `sqlite3RealToI64` truncates toward zero and saturates outside the
        // 64-bit range, which is what `as` does. SQLite never hands out a
        // NaN (it turns NaN results into NULL); `as` makes one 0.
        Value::Real(r) => *r as i64,
        Value::Text(text) => leading_integer(text.as_bytes()),
        Value::Blob(bytes) => leading_integer(bytes),
    }
}

/// `sqlite3Atoi64`: the integer at the start of `bytes` after white space,
/// saturated to the 64-bit range; 0 when there are no digits.
fn leading_integer(bytes: &[u8]) -> i64 {
    let mut rest = skip_spaces(bytes);
    let negative = rest.first() == Some(&b'-');
    if matches!(rest.first(), Some(b'-' | b'+')) {
        rest = &rest[1..];
    }
    // The magnitude, saturated just past i64::MAX so that -2^63 still fits.
    const LIMIT: u64 = 1 << 63;
    let mut magnitude: u64 = 0;
    for &byte in rest.iter().take_while(|b| b.is_ascii_digit()) {
        magnitude = magnitude
            .saturating_mul(10)
            .saturating_add(u64::from(byte - b'0'))
            .min(LIMIT);
    }
    if negative {
        // 0 <= magnitude <= 2^63, so the negation always fits.
        0i64.wrapping_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).unwrap_or(i64::MAX)
    }
}

/// `sqlite3_column_double`: SQLite's conversion of a value to a double.
fn real_value(value: &Value) -> f64 {
    match value {
        Value::Null => 0.0,
        // The nearest double, as C's conversion gives.
        Value::Integer(i) => *i as f64,
        Value::Real(r) => *r,
        Value::Text(text) => leading_real(text.as_bytes()),
        Value::Blob(bytes) => leading_real(bytes),
    }
}

/// `sqlite3AtoF`: the number at the start of `bytes` after white space
/// (`[+-]digits[.digits][e[+-]digits]`, digits on at least one side of the
/// point); 0.0 when there is none. Rust's parser rounds correctly, where
/// SQLite reads at most about 19 significant digits: the two can differ only
/// in the last bit, for inputs of more than 19 digits.
fn leading_real(bytes: &[u8]) -> f64 {
    let text = skip_spaces(bytes);
    let mut end = 0;
    if matches!(text.first(), Some(b'-' | b'+')) {
        end += 1;
    }
    let integer_digits = count_digits(&text[end..]);
    end += integer_digits;
    let mut fraction_digits = 0;
    if text.get(end) == Some(&b'.') {
        fraction_digits = count_digits(&text[end + 1..]);
        end += 1 + fraction_digits;
    }
    if integer_digits + fraction_digits == 0 {
        return 0.0;
    }
    if matches!(text.get(end), Some(b'e' | b'E')) {
        let mut exponent_end = end + 1;
        if matches!(text.get(exponent_end), Some(b'-' | b'+')) {
            exponent_end += 1;
        }
        let exponent_digits = count_digits(&text[exponent_end.min(text.len())..]);
        // An `e` without digits is not part of the number.
        if exponent_digits > 0 {
            end = exponent_end + exponent_digits;
        }
    }
    std::str::from_utf8(&text[..end])
        .ok()
        .and_then(|number| number.parse::<f64>().ok())
        .unwrap_or(0.0)
}

fn count_digits(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|b| b.is_ascii_digit()).count()
}

fn skip_spaces(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().take_while(|b| is_c_space(**b)).count();
    &bytes[start..]
}

/// `sqlite3_column_text` as the harness shows it in a `T` column.
fn text_value(value: &Value) -> String {
    let bytes: Vec<u8> = match value {
        Value::Null => return "NULL".to_owned(),
        Value::Integer(i) => i.to_string().into_bytes(),
        Value::Real(r) => real_to_text(*r).into_bytes(),
        Value::Text(text) => text.as_bytes().to_vec(),
        Value::Blob(bytes) => bytes.clone(),
    };
    // The harness handles the value as a C string, so it ends at a NUL.
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    if end == 0 {
        return "(empty)".to_owned();
    }
    // Byte by byte: a multi-byte UTF-8 character becomes several `@`s.
    bytes[..end]
        .iter()
        .map(|&b| {
            if (b' '..=b'~').contains(&b) {
                b as char
            } else {
                '@'
            }
        })
        .collect()
}

/// The exact decimal expansion of a finite `x > 0`: its significant digits
/// (ASCII, no trailing zeros) and the position of the decimal point, so that
/// `x = 0.d1d2d3... * 10^point`.
fn exact_digits(x: f64) -> (Vec<u8>, i32) {
    // Every double's exact expansion has at most 767 significant digits, so
    // 768 digits in scientific notation are exact (the rest pads with zeros).
    let text = format!("{x:.767e}");
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let mut digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    let exponent = exponent.parse::<i32>().unwrap_or(0);
    (digits, exponent + 1)
}

/// The decimal digits SQLite's printf starts from for a finite `x > 0`
/// (`sqlite3FpDecode` calling `sqlite3Fp2Convert10` for 18 digits): `x`
/// scaled by the power of ten `p` that SQLite picks from `x`'s binary
/// exponent, rounded to an integer. That integer has 18 or 19 digits, and
/// every later rounding starts from it, so a value just below a rounding
/// boundary can round up (-236.1755, which is -236.17549999999999954...,
/// prints as `-236.176`). SQLite computes the scaled value with 64-bit
/// arithmetic, so its last digit can differ from this exact rounding, which
/// changes the output only for values within about 1e-18 (relative) of a
/// rounding boundary. Returns the digits, the decimal point, and how many
/// digits SQLite holds (trailing zeros included).
fn sqlite_digits(x: f64) -> (Vec<u8>, i32, usize) {
    let (mut digits, mut point) = exact_digits(x);
    // SQLite's binary exponent for x = m * 2^e with m's top bit (bit 63) set.
    let bits = x.to_bits();
    let biased = i32::try_from((bits >> 52) & 0x7ff).unwrap_or(0);
    let mantissa = bits & ((1 << 52) - 1);
    let e = if biased == 0 {
        -1074 - i32::try_from(mantissa.leading_zeros()).unwrap_or(0)
    } else {
        biased - 1086
    };
    // floor(log10(2^(e+63))) by SQLite's approximation (78913/2^18 is about
    // log10(2)); `>>` on i32 floors as C's does on the compilers it uses.
    let p = 17 - (((e + 63) * 78913) >> 18);
    let held = point + p;
    if let Ok(keep) = usize::try_from(held) {
        let before = point;
        round_digits(&mut digits, &mut point, keep);
        // A carry into a new leading digit makes the integer one digit longer.
        let held = keep + usize::try_from(point - before).unwrap_or(0);
        return (digits, point, held);
    }
    let held = digits.len();
    (digits, point, held)
}

/// Rounds `digits` to `keep` significant digits, half away from zero (SQLite
/// looks only at the first dropped digit), moving `point` when the carry
/// adds a digit in front; then drops trailing zeros.
fn round_digits(digits: &mut Vec<u8>, point: &mut i32, keep: usize) {
    if keep == 0 || digits.len() <= keep {
        return;
    }
    let round_up = digits.get(keep).is_some_and(|d| *d >= b'5');
    digits.truncate(keep);
    if round_up {
        let mut carried_out = true;
        for digit in digits.iter_mut().rev() {
            if *digit == b'9' {
                *digit = b'0';
            } else {
                *digit += 1;
                carried_out = false;
                break;
            }
        }
        if carried_out {
            digits.insert(0, b'1');
            *point += 1;
        }
    }
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
}

/// The most significant digits SQLite's `%f` shows (its `mxRound` without
/// the `!` flag); the rest of the integer part is zeros.
const FIXED_MAX_DIGITS: i32 = 16;

/// SQLite's `%.<precision>f` (`sqlite3_snprintf`, `sqlite3FpDecode`).
///
/// It differs from C's `printf`: it rounds half away from zero on its
/// decimal digits (0.0625 is `0.063`, C says `0.062`), which start as an
/// 18 or 19 digit approximation (see [`sqlite_digits`]), keeps at most 16
/// significant digits (1e20 - 1 is `100000000000000000000.000`, and -2^63 is
/// `-9223372036854776000.000`, as `evidence/slt_lang_aggfunc.test` expects),
/// and a negative zero prints as `0.000`, while a negative value that
/// rounds to zero keeps its sign (`-0.000`). Infinities are `Inf` and
/// `-Inf`, NaN is `NaN`.
pub(crate) fn printf_fixed(r: f64, precision: usize) -> String {
    if r.is_nan() {
        return "NaN".to_owned();
    }
    if r.is_infinite() {
        return if r < 0.0 { "-Inf" } else { "Inf" }.to_owned();
    }
    let precision_i32 = i32::try_from(precision).unwrap_or(i32::MAX);
    // `r < 0.0` is false for -0.0, which SQLite prints without a sign.
    let negative = r < 0.0;
    let (mut digits, mut point) = if r == 0.0 {
        (vec![b'0'], 1)
    } else {
        let (digits, point, _) = sqlite_digits(r.abs());
        (digits, point)
    };
    // How many significant digits reach the last decimal place shown.
    let significant = point.saturating_add(precision_i32);
    if significant == 0 {
        // The first digit is the one just past the last place shown: it
        // decides alone between 0 and one unit of the last place.
        if digits.first().is_some_and(|d| *d >= b'5') {
            digits = vec![b'1'];
            point += 1;
        }
    } else if significant > 0 {
        let keep = significant.min(FIXED_MAX_DIGITS);
        round_digits(&mut digits, &mut point, usize::try_from(keep).unwrap_or(0));
    }
    // When `significant < 0` every digit lies past the last place shown, so
    // the places below print as zeros.
    let digit_at = |position: i32| -> char {
        usize::try_from(position)
            .ok()
            .and_then(|i| digits.get(i))
            .map_or('0', |d| *d as char)
    };
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if point <= 0 {
        out.push('0');
    } else {
        (0..point).for_each(|i| out.push(digit_at(i)));
    }
    if precision > 0 {
        out.push('.');
        (0..precision_i32).for_each(|i| out.push(digit_at(point + i)));
    }
    out
}

/// SQLite's text form of a REAL: `%!.17g` (`vdbeMemRenderNum`), which is what
/// `sqlite3_column_text` returns for a real in current SQLite.
///
/// Seventeen significant digits, except that when the 17 digits look like
/// binary noise (a run of 9s or 0s) and a shorter form converts back to the
/// same double, SQLite uses the shorter one (49.47 rather than
/// 49.469999999999999). `%g` picks exponential form for exponents below -4
/// or above 16, and the `!` flag keeps one digit after the point: `1.0`,
/// `0.1`, `1.0e+17`, `0.66666666666666663`.
pub(crate) fn real_to_text(r: f64) -> String {
    if r.is_nan() {
        return "NaN".to_owned();
    }
    if r.is_infinite() {
        return if r < 0.0 { "-Inf" } else { "Inf" }.to_owned();
    }
    if r == 0.0 {
        return "0.0".to_owned();
    }
    let magnitude = r.abs();
    let (mut digits, mut point, held) = sqlite_digits(magnitude);
    let keep = shorter_form(&digits, point, held, magnitude).unwrap_or(17);
    round_digits(&mut digits, &mut point, keep);
    let mut out = String::new();
    if r < 0.0 {
        out.push('-');
    }
    let exponent = point - 1;
    let tail = |from: usize| -> String {
        let rest: String = digits.iter().skip(from).map(|d| *d as char).collect();
        if rest.is_empty() {
            "0".to_owned()
        } else {
            rest
        }
    };
    if !(-4..=16).contains(&exponent) {
        out.push(char::from(digits.first().copied().unwrap_or(b'0')));
        out.push('.');
        out.push_str(&tail(1));
        out.push('e');
        out.push(if exponent < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exponent.unsigned_abs()));
    } else if point <= 0 {
        out.push_str("0.");
        (0..-point).for_each(|_| out.push('0'));
        out.push_str(&tail(0));
    } else {
        let whole = usize::try_from(point).unwrap_or(0);
        (0..whole).for_each(|i| out.push(digits.get(i).map_or('0', |d| *d as char)));
        out.push('.');
        out.push_str(&tail(whole));
    }
    out
}

/// SQLite's attempt (in `sqlite3FpDecode`, for 17-digit output) to find a
/// shorter rendering that converts back to the same double. `digits` are
/// SQLite's starting digits, of which it holds `held` (with trailing zeros).
/// Returns how many digits to keep when it finds one.
fn shorter_form(digits: &[u8], point: i32, held: usize, value: f64) -> Option<usize> {
    let digit = |i: usize| digits.get(i).copied().unwrap_or(b'0');
    let prefix_value =
        |len: usize| -> Option<u64> { std::str::from_utf8(digits.get(..len)?).ok()?.parse().ok() };
    // `candidate * 10^exponent` converts back to `value`?
    let round_trips = |candidate: u64, exponent: i32| -> bool {
        format!("{candidate}e{exponent}").parse::<f64>().ok() == Some(value)
    };
    if digit(15) == b'9' && digit(14) == b'9' {
        // A run of 9s ending at digit 15: try rounding up at its start.
        let mut start = 14;
        while start > 0 && digit(start - 1) == b'9' {
            start -= 1;
        }
        let candidate = if start == 0 {
            1
        } else {
            prefix_value(start)?.checked_add(1)?
        };
        let exponent = point - i32::try_from(start).ok()?;
        round_trips(candidate, exponent).then_some(start + 1)
    } else if usize::try_from(point).is_ok_and(|p| p >= held)
        || (digit(15) == b'0' && digit(14) == b'0' && digit(13) == b'0')
    {
        // Zeros (or a large integer): try cutting at digit 13 or before.
        let mut end = 13;
        while end > 1 && digit(end - 1) == b'0' {
            end -= 1;
        }
        let candidate = prefix_value(end)?;
        let exponent = point - i32::try_from(end).ok()?;
        round_trips(candidate, exponent).then_some(end + 1)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ColumnType::{Integer, Real, Text};

    #[test]
    fn null_is_null_in_every_column_type() {
        for t in [Integer, Real, Text] {
            assert_eq!(format_value(&Value::Null, t), "NULL");
        }
    }

    #[test]
    fn text_column() {
        let f = |v: Value| format_value(&v, Text);
        assert_eq!(f(Value::from("insert or replace")), "insert or replace");
        assert_eq!(f(Value::from("")), "(empty)");
        assert_eq!(f(Value::from("tab\there\nnewline~")), "tab@here@newline~");
        assert_eq!(f(Value::from("\u{7f}")), "@");
        // Byte by byte: 'é' is two bytes in UTF-8.
        assert_eq!(f(Value::from("café")), "caf@@");
        // A C string ends at its first NUL.
        assert_eq!(f(Value::from("ab\0cd")), "ab");
        assert_eq!(f(Value::from("\0cd")), "(empty)");
        assert_eq!(f(Value::Blob(b"blob\x01".to_vec())), "blob@");
        assert_eq!(f(Value::Blob(vec![])), "(empty)");
        assert_eq!(f(Value::Integer(-42)), "-42");
        assert_eq!(f(Value::Integer(i64::MIN)), "-9223372036854775808");
        assert_eq!(f(Value::Real(1.0)), "1.0");
        assert_eq!(f(Value::Real(-2.5)), "-2.5");
    }

    #[test]
    fn integer_column() {
        let f = |v: Value| format_value(&v, Integer);
        assert_eq!(f(Value::Integer(123)), "123");
        assert_eq!(f(Value::Integer(-7)), "-7");
        // `sqlite3_column_int` keeps the low 32 bits.
        assert_eq!(f(Value::Integer((1 << 32) + 5)), "5");
        assert_eq!(f(Value::Integer(i64::from(i32::MAX) + 1)), "-2147483648");
        // Reals truncate toward zero and saturate before the 32-bit cast.
        assert_eq!(f(Value::Real(1.0)), "1");
        assert_eq!(f(Value::Real(2.9)), "2");
        assert_eq!(f(Value::Real(-2.9)), "-2");
        assert_eq!(f(Value::Real(1e20)), "-1"); // i64::MAX as i32
        assert_eq!(f(Value::Real(-1e20)), "0"); // i64::MIN as i32
        // Text and blobs: the leading integer.
        assert_eq!(f(Value::from("12abc")), "12");
        assert_eq!(f(Value::from(" \t-7 ")), "-7");
        assert_eq!(f(Value::from("+3")), "3");
        assert_eq!(f(Value::from("3.9")), "3");
        assert_eq!(f(Value::from("1e5")), "1");
        assert_eq!(f(Value::from("abc")), "0");
        assert_eq!(f(Value::from("")), "0");
        assert_eq!(f(Value::from("- 5")), "0");
        assert_eq!(f(Value::Blob(b"42".to_vec())), "42");
    }

    #[test]
    fn leading_integer_saturates() {
        assert_eq!(leading_integer(b"9223372036854775807"), i64::MAX);
        assert_eq!(leading_integer(b"9223372036854775808"), i64::MAX);
        assert_eq!(leading_integer(b"-9223372036854775808"), i64::MIN);
        assert_eq!(leading_integer(b"-99999999999999999999999"), i64::MIN);
        assert_eq!(leading_integer(b"00000000000000000000000012"), 12);
    }

    #[test]
    fn leading_real_reads_a_prefix() {
        assert_eq!(leading_real(b"3.5abc"), 3.5);
        assert_eq!(leading_real(b"  -.5"), -0.5);
        assert_eq!(leading_real(b"5."), 5.0);
        assert_eq!(leading_real(b"1e3x"), 1000.0);
        assert_eq!(leading_real(b"1e+x"), 1.0);
        assert_eq!(leading_real(b"2E-2"), 0.02);
        assert_eq!(leading_real(b"."), 0.0);
        assert_eq!(leading_real(b"-"), 0.0);
        assert_eq!(leading_real(b"abc"), 0.0);
        assert_eq!(leading_real(b"1e999"), f64::INFINITY);
    }

    #[test]
    fn real_column_basics() {
        let f = |v: Value| format_value(&v, Real);
        assert_eq!(f(Value::Real(5.0)), "5.000");
        assert_eq!(f(Value::Real(-0.25)), "-0.250");
        assert_eq!(f(Value::Real(123.4567)), "123.457");
        assert_eq!(f(Value::Real(0.1)), "0.100");
        assert_eq!(f(Value::Real(9.9996)), "10.000");
        assert_eq!(f(Value::Real(999.9999)), "1000.000");
        assert_eq!(f(Value::Integer(7)), "7.000");
        assert_eq!(f(Value::Integer(-3)), "-3.000");
        assert_eq!(f(Value::from("3.5abc")), "3.500");
        assert_eq!(f(Value::from("abc")), "0.000");
    }

    #[test]
    fn real_column_zero_and_sign() {
        let f = |r: f64| format_value(&Value::Real(r), Real);
        assert_eq!(f(0.0), "0.000");
        // SQLite's printf tests `r < 0.0`, which a negative zero fails.
        assert_eq!(f(-0.0), "0.000");
        // A negative value that rounds to zero keeps its sign, as in C.
        assert_eq!(f(-0.0001), "-0.000");
        assert_eq!(f(-0.0004), "-0.000");
        assert_eq!(f(1e-300), "0.000");
        assert_eq!(f(5e-324), "0.000");
    }

    #[test]
    fn real_column_rounding() {
        let f = |r: f64| format_value(&Value::Real(r), Real);
        // 0.0005 is 0.000500000000000000010408... : up.
        assert_eq!(f(0.0005), "0.001");
        assert_eq!(f(-0.0005), "-0.001");
        assert_eq!(f(0.0004999), "0.000");
        assert_eq!(f(0.00095), "0.001");
        // 0.0625 is exact: a true tie, which SQLite rounds up (C: 0.062).
        assert_eq!(f(0.0625), "0.063");
        assert_eq!(f(-1.0625), "-1.063");
        // 1.0005 is 1.000499999999999944... and 0.1235 is 0.123499999...: down.
        assert_eq!(f(1.0005), "1.000");
        assert_eq!(f(0.1235), "0.123");
        // 2.0005 is 2.000500000000000166...: up.
        assert_eq!(f(2.0005), "2.001");
        // 1.0015 is 1.00150000000000005684... : up.
        assert_eq!(f(1.0015), "1.002");
        // -236.1755 is -236.17549999999999954525...: SQLite first rounds it
        // to 18 digits (236175500000000000) and then to 6, so it goes up
        // where C's printf goes down. Checked against SQLite 3.54.1.
        assert_eq!(f(-236.1755), "-236.176");
        assert_eq!(f(154.4255), "154.426");
    }

    #[test]
    fn real_column_large_values_keep_16_significant_digits() {
        let f = |r: f64| format_value(&Value::Real(r), Real);
        assert_eq!(f(1e20), "100000000000000000000.000");
        assert_eq!(f(-9223372036854775808.0), "-9223372036854776000.000");
        assert_eq!(f(-18446744073709551616.0), "-18446744073709550000.000");
        assert_eq!(f(123456789012345678.0), "123456789012345700.000");
        assert_eq!(f(1e23), "99999999999999990000000.000");
        assert_eq!(f(1234567890123.4567), "1234567890123.457");
        // 16 digits reach only the first decimal here.
        assert_eq!(f(123456789012345.67), "123456789012345.700");
        assert_eq!(f(f64::MAX).len(), 309 + 4);
        assert!(f(f64::MAX).starts_with("1797693134862316000"));
        assert_eq!(f(f64::INFINITY), "Inf");
        assert_eq!(f(f64::NEG_INFINITY), "-Inf");
        assert_eq!(f(f64::NAN), "NaN");
    }

    #[test]
    fn printf_fixed_other_precisions() {
        assert_eq!(printf_fixed(2.5, 0), "3");
        assert_eq!(printf_fixed(0.5, 0), "1");
        assert_eq!(printf_fixed(0.4, 0), "0");
        assert_eq!(printf_fixed(1.25, 1), "1.3");
        assert_eq!(printf_fixed(0.1, 20), "0.10000000000000000000");
    }

    #[test]
    fn real_text_form() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (100.0, "100.0"),
            (-2.5, "-2.5"),
            (123.456, "123.456"),
            (2.0 / 3.0, "0.66666666666666663"),
            (49.47, "49.47"),
            (0.0001, "0.0001"),
            (1e-5, "1.0e-05"),
            (1.5e300, "1.5e+300"),
            (1e16, "10000000000000000.0"),
            (1e17, "1.0e+17"),
            (-0.0, "0.0"),
            (9007199254740993.0, "9007199254740992.0"),
            (0.3, "0.3"),
            (0.1 + 0.2, "0.30000000000000004"),
            (5e-324, "4.9406564584124654e-324"),
            // These two were read back from SQLite 3.54.1: the 17th digit
            // comes from SQLite's 18-digit starting value, not the exact one
            // (which gives ...353 and 347681.809608487).
            (
                f64::from_bits(0x3e6b_c392_b9e5_ccda),
                "5.1714400972364354e-08",
            ),
            (f64::from_bits(0x4115_3887_3d0a_01d9), "347681.80960848701"),
        ];
        for (value, text) in cases {
            assert_eq!(real_to_text(value), text, "{value:e}");
        }
    }

    #[test]
    fn hashes_match_md5_of_newline_terminated_values() {
        // md5 of the empty string.
        assert_eq!(hash_values(&[]), "d41d8cd98f00b204e9800998ecf8427e");
        // md5("1\n2\n3\n").
        let values: Vec<String> = ["1", "2", "3"].map(String::from).to_vec();
        assert_eq!(hash_values(&values), "c0710d6b4f15dfa88f600b0e6b624077");
        // md5("NULL\n(empty)\n-0.250\n").
        let values: Vec<String> = ["NULL", "(empty)", "-0.250"].map(String::from).to_vec();
        assert_eq!(hash_values(&values), "d2c183aea6e6b79130266b8604442047");
    }

    #[test]
    fn sort_modes() {
        let rows = vec![
            vec![Value::Integer(10), Value::from("b")],
            vec![Value::Integer(9), Value::from("a")],
            vec![Value::Integer(10), Value::from("a")],
        ];
        let types = [Integer, Text];
        assert_eq!(
            format_rows(&rows, &types, SortMode::NoSort).unwrap(),
            ["10", "b", "9", "a", "10", "a"]
        );
        // Rows compare as strings, column by column: "10" < "9".
        assert_eq!(
            format_rows(&rows, &types, SortMode::RowSort).unwrap(),
            ["10", "a", "10", "b", "9", "a"]
        );
        assert_eq!(
            format_rows(&rows, &types, SortMode::ValueSort).unwrap(),
            ["10", "10", "9", "a", "a", "b"]
        );
        // NULL sorts among the strings as the text "NULL".
        let rows = vec![
            vec![Value::Null],
            vec![Value::Integer(-1)],
            vec![Value::from("")],
        ];
        assert_eq!(
            format_rows(&rows, &[Text], SortMode::RowSort).unwrap(),
            ["(empty)", "-1", "NULL"]
        );
    }

    #[test]
    fn wrong_column_count_is_an_error() {
        let rows = vec![
            vec![Value::Integer(1)],
            vec![Value::Integer(1), Value::Integer(2)],
        ];
        let err = format_rows(&rows, &[Integer], SortMode::NoSort).unwrap_err();
        assert!(err.contains("expected 1 but got 2"), "{err}");
    }
}
