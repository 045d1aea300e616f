//! Writing the JSON API's answers: one statement's [`Outcome`] (columns and rows written as
//! JSON while they are stepped), the answer size budget and the paging window they are
//! written under, and the `meta` object.

use dosql_vfs::Stats;

use crate::value;

/// How many bytes of rows an answer may hold ([`crate::Limits::max_answer_bytes`]), and how many it
/// holds so far: checked while rows are stepped, so that a huge result is refused (or cut
/// into pages) before its memory is spent.
#[derive(Debug, Clone, Copy)]
pub(super) struct AnswerBudget {
    pub(super) limit: usize,
    pub(super) used: usize,
}

/// Where one statement's rows start and stop (paging).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RowWindow {
    pub(super) offset: u64,
    pub(super) max: Option<u64>,
}

/// The outcome of one statement (or the last of several). Rows are written as JSON while
/// they are stepped: no value tree per cell, and no map per outcome (a 10,000-statement
/// batch made 10,000 of them, most of a fresh instance's time in malloc).
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// The column names as the elements of a JSON array: `"id","v"`.
    pub(super) columns: Vec<u8>,
    /// The rows as the elements of a JSON array: `[1,"a"],[2,"b"]`.
    pub(super) rows: Vec<u8>,
    pub(super) rows_affected: u64,
    pub(super) last_insert_rowid: i64,
    /// Paging: where the next page starts, when rows remain.
    pub(super) next_offset: Option<u64>,
}

impl Outcome {
    /// Writes the outcome as a JSON object with `meta` (its JSON) and, for a paged answer,
    /// `next_offset` and `txid` among its fields. Keys in sorted order, as serde_json writes
    /// a map, so answers keep one shape.
    pub(super) fn write_json(
        &self,
        out: &mut Vec<u8>,
        meta: Option<&[u8]>,
        page_txid: Option<u64>,
    ) {
        out.extend_from_slice(b"{\"columns\":[");
        out.extend_from_slice(&self.columns);
        out.extend_from_slice(b"],\"last_insert_rowid\":");
        value::write_i64(out, self.last_insert_rowid);
        if let Some(json) = meta {
            out.extend_from_slice(b",\"meta\":");
            out.extend_from_slice(json);
        }
        if page_txid.is_some() {
            out.extend_from_slice(b",\"next_offset\":");
            match self.next_offset {
                Some(n) => write_u64(out, n),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(b",\"rows\":[");
        out.extend_from_slice(&self.rows);
        out.extend_from_slice(b"],\"rows_affected\":");
        value::write_i64(out, i64::try_from(self.rows_affected).unwrap_or(i64::MAX));
        if let Some(txid) = page_txid {
            out.extend_from_slice(b",\"txid\":");
            write_u64(out, txid);
        }
        out.push(b'}');
    }
}

/// What a query or a batch answers, before `meta` joins it.
pub(super) enum Answer {
    /// The outcome, and the txid it was read at when the query was paged.
    Query(Outcome, Option<u64>),
    /// The outcomes as the elements of a JSON array, written as each statement finished.
    Batch(Vec<u8>),
}

/// Appends an answer's `meta` object: the keys in sorted order, as serde_json writes a map.
pub(super) fn write_meta(out: &mut Vec<u8>, duration_ms: f64, before: &Stats, after: &Stats) {
    let counters = [
        (
            "cache_hits",
            after.cache_hits.saturating_sub(before.cache_hits),
        ),
        (
            "cache_misses",
            after.cache_misses.saturating_sub(before.cache_misses),
        ),
    ];
    let pages = [
        (
            "pages_read",
            after.pages_read.saturating_sub(before.pages_read),
        ),
        (
            "pages_written",
            after.pages_written.saturating_sub(before.pages_written),
        ),
    ];
    out.push(b'{');
    for (key, n) in counters {
        write_key(out, key);
        write_u64(out, n);
        out.push(b',');
    }
    write_key(out, "duration_ms");
    // A finite, non-negative f64, written as serde_json writes it (14.0, 0.25, ...).
    let _ = serde_json::to_writer(&mut *out, &duration_ms);
    for (key, n) in pages {
        out.push(b',');
        write_key(out, key);
        write_u64(out, n);
    }
    out.push(b'}');
}

fn write_key(out: &mut Vec<u8>, key: &str) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

fn write_u64(out: &mut Vec<u8>, n: u64) {
    let _ = serde_json::to_writer(&mut *out, &n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn meta_is_written_as_serde_json_writes_the_same_map() {
        let before = Stats {
            cache_hits: 3,
            pages_read: 1,
            ..Stats::default()
        };
        let after = Stats {
            cache_hits: 10,
            cache_misses: 2,
            pages_read: 5,
            pages_written: u64::MAX,
            ..Stats::default()
        };
        for duration_ms in [0.0, 14.0, 0.125, 1e-7, 123_456.789] {
            let mut out = Vec::new();
            write_meta(&mut out, duration_ms, &before, &after);
            let expected = json!({
                "duration_ms": duration_ms,
                "pages_read": 4,
                "pages_written": u64::MAX,
                "cache_hits": 7,
                "cache_misses": 2,
            })
            .to_string();
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }
}
