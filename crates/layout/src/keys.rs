//! The keys dosql writes in Durable Object storage, typed.
//!
//! | key | what |
//! |---|---|
//! | `p:0000000001` … | page 1 …: a page's stored value (see `dosql_pagestore::codec`) |
//! | `g<n>:p:0000000001` … | page 1 … of generation `n`: the database loaded by import `n` |
//! | `meta` | the head ([`crate::head`]) on classic storage; on SQLite-backed storage (head format 4 on), a pointer to the head row |
//! | `transfer` | the import record ([`crate::transfer`]) |
//! | `replication` | the replication record ([`crate::replica`]): the primary a read replica follows, the replicas of a primary |
//! | `l:00000000000000000042` | the commit log's record of commit 42 ([`crate::log`]) |
//! | `l:00000000000000000042:000001` … | its pre-images when they do not fit in the record |
//!
//! On SQLite-backed storage the pages of a *row generation* ([`Generation::page_rows`]:
//! `FIRST_ROW_GENERATION` onwards, which databases created, imported into or restored by
//! this code get) are not kv keys but rows of table `dosql_pages`, row id
//! [`Generation::row_id`] (see `wire`); their key's spelling (`g1048576:p:…`) is what the
//! local store file and the in-memory store keep them under.
//!
//! Page numbers are written in decimal, zero-padded to 10 digits (u32's width), so that the
//! keys of one generation sort in page order: a range of pages is a range of keys. Txids are
//! written in 20 digits (u64's width) and parts in 6, so the log sorts in commit order, each
//! record before its parts. Parsing is strict (exactly what [`Key::encode`] writes), so a key
//! has one spelling.

use std::fmt;

use dosql_pagestore::{PageNo, StoreError};

/// Which set of page keys holds the live database: 0 is `p:` (a database never imported
/// into, the only layout before imports existed), `n` ≥ 1 is `g<n>:p:`, written by import
/// number `n`. Generations are never reused, so a reader holding one never sees another's
/// pages.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Generation(pub u32);

/// The first row generation: the generation of a database first committed to on SQLite-backed
/// storage by this code. Earlier releases numbered generations from 0 up by one per import;
/// none came near 2^20 imports, so the ranges never meet.
pub const FIRST_ROW_GENERATION: u32 = 1 << 20;
/// Row generations: `FIRST_ROW_GENERATION..FIRST_ROW_GENERATION + ROW_GENERATIONS`, so that
/// a page's row id (generation offset × 2^32 + page number) stays below 2^53, a number the
/// host's JavaScript holds exactly.
pub const ROW_GENERATIONS: u32 = 1 << 21;

impl Generation {
    /// The generation of a database first committed to on SQLite-backed storage.
    pub const FIRST_ROWS: Generation = Generation(FIRST_ROW_GENERATION);

    /// Whether this generation's pages are rows of `dosql_pages` on SQLite-backed storage
    /// (kv keys on classic storage, which never allocates it).
    pub fn page_rows(self) -> bool {
        self.0
            .checked_sub(FIRST_ROW_GENERATION)
            .is_some_and(|d| d < ROW_GENERATIONS)
    }

    /// The row id of page `no` of this row generation: (generation - first) × 2^32 + page
    /// number, so that one generation's rows are one range in page order. `None`: not a row
    /// generation.
    pub fn row_id(self, no: PageNo) -> Option<u64> {
        self.page_rows()
            .then(|| (u64::from(self.0 - FIRST_ROW_GENERATION) << 32) | u64::from(no.get()))
    }

    /// The prefix of this generation's page keys.
    pub fn prefix(self) -> String {
        match self.0 {
            0 => "p:".to_owned(),
            n => format!("g{n}:p:"),
        }
    }

    /// The generation of a key prefix (`p:` or `g<n>:p:`), strictly.
    pub fn from_prefix(prefix: &str) -> Result<Generation, StoreError> {
        if prefix == "p:" {
            return Ok(Generation(0));
        }
        let n = prefix
            .strip_prefix('g')
            .and_then(|r| r.strip_suffix(":p:"))
            .filter(|d| {
                !d.is_empty() && !d.starts_with('0') && d.bytes().all(|b| b.is_ascii_digit())
            })
            .and_then(|d| d.parse::<u32>().ok())
            .ok_or_else(|| StoreError::corrupt(format!("not a page key prefix: {prefix:?}")))?;
        Ok(Generation(n))
    }
}

/// A key dosql writes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Key {
    /// A page of a generation.
    Page(Generation, PageNo),
    /// `meta`.
    Meta,
    /// `transfer`.
    Transfer,
    /// `replication`.
    Replication,
    /// The commit log's record of a commit (its txid).
    Log(u64),
    /// Part `n` (from 1) of a log record's pre-images.
    LogPart(u64, u32),
}

/// Decimal digits of a page number in a key (u32::MAX has 10).
const PAGE_DIGITS: usize = 10;
/// Decimal digits of a txid in a key (u64::MAX has 20).
const TXID_DIGITS: usize = 20;
/// Decimal digits of a log record's part number.
const PART_DIGITS: usize = 6;
/// The most parts a record may have (what [`PART_DIGITS`] can spell).
pub const MAX_LOG_PARTS: u32 = 999_999;

impl Key {
    /// The key as stored.
    pub fn encode(&self) -> String {
        match self {
            Key::Page(g, no) => {
                let mut s = g.prefix();
                s.push_str(&format!("{:0width$}", no.get(), width = PAGE_DIGITS));
                s
            }
            Key::Meta => "meta".to_owned(),
            Key::Transfer => "transfer".to_owned(),
            Key::Replication => "replication".to_owned(),
            Key::Log(txid) => format!("l:{txid:0TXID_DIGITS$}"),
            Key::LogPart(txid, part) => format!("l:{txid:0TXID_DIGITS$}:{part:0PART_DIGITS$}"),
        }
    }

    /// The key `s` spells; anything [`Key::encode`] would not write is an error.
    pub fn parse(s: &str) -> Result<Key, StoreError> {
        match s {
            "meta" => return Ok(Key::Meta),
            "transfer" => return Ok(Key::Transfer),
            "replication" => return Ok(Key::Replication),
            _ => {}
        }
        let bad = || StoreError::corrupt(format!("not a dosql key: {s:?}"));
        if let Some(rest) = s.strip_prefix("l:") {
            let digits = |d: &str, n: usize| d.len() == n && d.bytes().all(|b| b.is_ascii_digit());
            let (txid, part) = match rest.split_once(':') {
                None => (rest, None),
                Some((t, p)) => (t, Some(p)),
            };
            if !digits(txid, TXID_DIGITS) {
                return Err(bad());
            }
            let txid: u64 = txid.parse().map_err(|_| bad())?;
            return match part {
                None => Ok(Key::Log(txid)),
                Some(p) if digits(p, PART_DIGITS) => match p.parse::<u32>() {
                    Ok(n) if n >= 1 => Ok(Key::LogPart(txid, n)),
                    _ => Err(bad()),
                },
                Some(_) => Err(bad()),
            };
        }
        if s.len() < PAGE_DIGITS + 2 {
            return Err(bad());
        }
        let (prefix, digits) = s.split_at(s.len() - PAGE_DIGITS);
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let generation = Generation::from_prefix(prefix).map_err(|_| bad())?;
        let no = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| u32::try_from(n).ok())
            .and_then(PageNo::new)
            .ok_or_else(bad)?;
        Ok(Key::Page(generation, no))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(g: u32, n: u32) -> Key {
        Key::Page(Generation(g), PageNo::new(n).unwrap())
    }

    #[test]
    fn keys_round_trip() {
        for key in [
            Key::Meta,
            Key::Transfer,
            Key::Replication,
            page(0, 1),
            page(0, u32::MAX),
            page(1, 42),
            page(u32::MAX, 7),
            Key::Log(0),
            Key::Log(42),
            Key::Log(u64::MAX),
            Key::LogPart(42, 1),
            Key::LogPart(u64::MAX, MAX_LOG_PARTS),
        ] {
            assert_eq!(Key::parse(&key.encode()).unwrap(), key, "{key}");
        }
        assert_eq!(page(0, 2).encode(), "p:0000000002");
        assert_eq!(page(3, 10).encode(), "g3:p:0000000010");
        assert_eq!(Key::Log(42).encode(), "l:00000000000000000042");
        assert_eq!(
            Key::LogPart(42, 3).encode(),
            "l:00000000000000000042:000003"
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        for bad in [
            "",
            "Meta",
            "Replication",
            "replication:",
            "p:",
            "p:0000000000",
            "p:1",
            "p:00000000001",
            "p:4294967296",
            "p:000000000x",
            "g0:p:0000000001",
            "g01:p:0000000001",
            "g:p:0000000001",
            "gx:p:0000000001",
            "g4294967296:p:0000000001",
            "q:0000000001",
            "g1p:0000000001",
            "p:-000000001",
            "p:+000000001",
            "l:",
            "l:42",
            "l:0000000000000000004",
            "l:000000000000000000042",
            "l:18446744073709551616",
            "l:00000000000000000042:",
            "l:00000000000000000042:000000",
            "l:00000000000000000042:1",
            "l:00000000000000000042:0000001",
            "l:00000000000000000042:00000x",
            "l:0000000000000000004x",
        ] {
            assert!(Key::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn page_keys_sort_in_page_order_within_a_generation() {
        for g in [0, 1, 12] {
            let mut keys: Vec<String> = [1, 2, 9, 10, 11, 100, 999_999, u32::MAX]
                .iter()
                .map(|&n| page(g, n).encode())
                .collect();
            let in_page_order = keys.clone();
            keys.sort();
            assert_eq!(keys, in_page_order, "generation {g}");
        }
        // Generations do not interleave: each is one contiguous range.
        let mut all: Vec<(String, u32)> = Vec::new();
        for g in [0, 1, 2, 10] {
            for n in [1, 5, 4000] {
                all.push((page(g, n).encode(), g));
            }
        }
        all.sort();
        let gens: Vec<u32> = all.iter().map(|(_, g)| *g).collect();
        let mut runs = gens.clone();
        runs.dedup();
        let mut distinct = runs.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(runs.len(), distinct.len(), "a generation split: {gens:?}");
    }

    #[test]
    fn log_keys_sort_in_commit_order_each_record_before_its_parts() {
        let keys = [
            Key::Log(1),
            Key::LogPart(1, 1),
            Key::LogPart(1, 2),
            Key::LogPart(1, 10),
            Key::Log(2),
            Key::Log(10),
            Key::LogPart(10, 1),
            Key::Log(u64::MAX),
        ];
        let encoded: Vec<String> = keys.iter().map(Key::encode).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(sorted, encoded);
        // And apart from every page key and the records.
        assert!(
            encoded
                .iter()
                .all(|k| k.as_str() > "g" && k.as_str() < "meta" && k.as_str() < "p:")
        );
    }

    #[test]
    fn row_generations_have_row_ids_in_page_order_below_2_pow_53() {
        let no = |n| PageNo::new(n).unwrap();
        for g in [
            0,
            1,
            FIRST_ROW_GENERATION - 1,
            FIRST_ROW_GENERATION + ROW_GENERATIONS,
        ] {
            assert!(!Generation(g).page_rows(), "{g}");
            assert_eq!(Generation(g).row_id(no(1)), None);
        }
        assert!(!Generation(u32::MAX).page_rows());
        let first = Generation::FIRST_ROWS;
        assert_eq!(first.row_id(no(1)), Some(1));
        assert_eq!(first.row_id(no(u32::MAX)), Some(u64::from(u32::MAX)));
        assert_eq!(
            Generation(FIRST_ROW_GENERATION + 1).row_id(no(1)),
            Some((1 << 32) + 1)
        );
        let last = Generation(FIRST_ROW_GENERATION + ROW_GENERATIONS - 1);
        assert_eq!(last.row_id(no(u32::MAX)), Some((1 << 53) - 1));
        // One generation's rows are one range, below the next generation's.
        let ids: Vec<u64> = [first, Generation(FIRST_ROW_GENERATION + 1)]
            .iter()
            .flat_map(|g| [1, 2, 1000, u32::MAX].map(|n| g.row_id(no(n)).unwrap()))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }

    #[test]
    fn prefixes_round_trip() {
        for g in [0, 1, 99, u32::MAX] {
            assert_eq!(
                Generation::from_prefix(&Generation(g).prefix()).unwrap(),
                Generation(g)
            );
        }
        for bad in ["", "p", "g0:p:", "g1:p", "g-1:p:", "G1:p:"] {
            assert!(Generation::from_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
