//! Times as users write them (`dosql restore --time`) and as `dosql history` shows them:
//! RFC 3339 (`2026-12-06T10:26:00Z`, `2026-12-06T11:26:00.5+01:00`), `now`, or `<n> <unit>
//! ago` (seconds, minutes, hours, days, weeks; singular, plural or abbreviated: `10 minutes
//! ago`, `90s ago`, `2h ago`). Milliseconds since the Unix epoch, UTC.

use crate::bail;
use crate::error::Result;

/// `text` as ms since the epoch; `now_ms` is the time "now" and "… ago" count from.
pub fn parse(text: &str, now_ms: i64) -> Result<i64> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(now_ms);
    }
    if let Some(ago) = t.strip_suffix("ago").map(str::trim) {
        return relative(ago, now_ms).ok_or_else(|| bad(text));
    }
    rfc3339(t).ok_or_else(|| bad(text))
}

fn bad(text: &str) -> crate::error::Error {
    crate::error::Error::msg(format!(
        "{text:?} is not a time: use RFC 3339 (2026-12-06T10:26:00Z) or \"<n> minutes ago\" \
         (seconds, minutes, hours, days, weeks)"
    ))
}

fn relative(s: &str, now_ms: i64) -> Option<i64> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: i64 = s[..digits].parse().ok()?;
    let unit = s[digits..].trim().to_ascii_lowercase();
    let ms = match unit.as_str() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        "w" | "week" | "weeks" => 604_800_000,
        _ => return None,
    };
    now_ms.checked_sub(n.checked_mul(ms)?)
}

/// Days from 1970-01-01 to `y-m-d` (proleptic Gregorian; Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut at = 19;
    let mut ms = 0i64;
    if b[at] == b'.' {
        let end = at + 1 + s[at + 1..].find(|c: char| !c.is_ascii_digit())?;
        let frac = &s[at + 1..end];
        if frac.is_empty() {
            return None;
        }
        ms = format!("{frac:0<3}")[..3].parse().ok()?;
        at = end;
    }
    let offset_min = match b.get(at)? {
        b'Z' | b'z' if at + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if at + 6 == b.len() && b[at + 3] == b':' => {
            let m = num(at + 1..at + 3)? * 60 + num(at + 4..at + 6)?;
            if *sign == b'+' { m } else { -m }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    Some(((days * 24 + h) * 60 + mi - offset_min) * 60_000 + sec * 1000 + ms)
}

/// `ms` as RFC 3339 in UTC, to the millisecond.
pub fn format(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// The system clock, ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A refusal for a time after now (a restore cannot go to the future).
pub fn not_future(ms: i64, now: i64) -> Result<()> {
    if ms > now + 60_000 {
        bail!("{} is in the future", format(ms));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_and_format() {
        assert_eq!(parse("1970-01-01T00:00:00Z", 0).unwrap(), 0);
        assert_eq!(parse("2026-12-06T10:26:00Z", 0).unwrap(), 1_796_552_760_000);
        assert_eq!(
            parse("2026-12-06T11:26:00.5+01:00", 0).unwrap(),
            1_796_552_760_500
        );
        assert_eq!(
            parse("2000-02-29T23:59:59.999-00:30", 0).unwrap(),
            951_870_599_999
        );
        assert_eq!(format(1_796_552_760_500), "2026-12-06T10:26:00.500Z");
        assert_eq!(format(951_868_799_999), "2000-02-29T23:59:59.999Z");
        let now = 1_796_552_760_000;
        assert_eq!(parse("10 minutes ago", now).unwrap(), now - 600_000);
        assert_eq!(parse("90s ago", now).unwrap(), now - 90_000);
        assert_eq!(parse(" 2h ago ", now).unwrap(), now - 7_200_000);
        assert_eq!(parse("1 week ago", now).unwrap(), now - 604_800_000);
        assert_eq!(parse("now", now).unwrap(), now);
        for bad in [
            "",
            "yesterday",
            "10 fortnights ago",
            "ago",
            "2026-13-01T00:00:00Z",
            "2026-12-06 10:26:00",
            "2026-12-06T10:26:00+0100",
            "2026-12-06T10:26:00.Z",
        ] {
            assert!(parse(bad, now).is_err(), "{bad:?}");
        }
        for ms in [0, 1, 86_399_999, 1_796_552_760_500, -1, 4_102_444_800_000] {
            assert_eq!(parse(&format(ms), 0).unwrap(), ms, "{}", format(ms));
        }
    }
}
