//! The dosql wasm module for Durable Objects.
//!
//! The Durable Object (worker/src) instantiates this module once per database and calls its
//! exports. Storage goes through five host imports (module `dosql`) that only move bytes:
//! everything that decides what is stored where is `dosql_layout` (compiled in here), so the
//! Worker's TypeScript never interprets a record.
//!
//! | import | what the host does |
//! |---|---|
//! | `kv_get(req, len) -> i32` | reads the keys (and head row) a read request names (`dosql_layout::wire`) from Durable Object storage, keeps the answer, returns its length (-1: failed). May suspend (JSPI). |
//! | `kv_row(select, select_len, id, out, cap) -> i32` | SQLite-backed storage: reads one page's row (`dosql_layout::wire::page_row`: a static SELECT and the row id, as an f64 below 2^53), writes its blob to `out` when it fits in `cap` bytes and keeps it otherwise; returns its length (-2: no row, -1: failed). Never suspends: a cold object's page reads, each alone, without a read request's framing. |
//! | `kv_head(select, select_len, key, key_len) -> i32` | SQLite-backed storage: reads the head row and one key's value (the replication record) and keeps the answer a read request of the two gets; returns its length (-1: failed). Never suspends: a database's open, without a read request's parsing. |
//! | `kv_take(out)` | copies the kept answer (of `kv_get`, `kv_head` or `kv_row`) to `out`. |
//! | `kv_apply(plan, len) -> i32` | issues a write plan's puts, deletes and head row in one synchronous stretch (Durable Object storage applies it atomically), after checking the limits once more; 0 = ok. |
//! | `error_message(buf, cap) -> len` | copies the host's last error message (UTF-8). |
//! | `now_ms() -> f64` | the host's clock in milliseconds, for `meta.duration_ms`. |
//!
//! Exports: `dosql_open(kind, new_page_size, cache_pages, read_ahead)` (reads the head from
//! storage; kind 1 classic, 2 SQLite-backed), `dosql_exec(op, body, len)` (see [`op`];
//! returns an HTTP status and leaves the answer in the result buffer),
//! `dosql_result_ptr/len`, `dosql_alloc/free`, and `dosql_warm_up()` (see [`warmup`]).
//! Everything but the ABI lives in `dosql-api` and `dosql-layout`.
//!
//! The module imports its memory (`env.memory`, at least [`INITIAL_MEMORY_BYTES`]): the host
//! gives each instance a memory whose maximum is the isolate's memory budget, so that an
//! instance can never grow past it (a failed `memory.grow` is a failed `malloc`, which SQLite
//! reports as `SQLITE_NOMEM`).

mod abi;
pub mod warmup;

/// The memory the module asks of its host when it is instantiated (`--initial-memory`, set by
/// build.rs): its data and its 1 MiB stack fit in it. The host (worker/src/constants.ts,
/// `WASM_INITIAL_PAGES`) provides exactly this much to start with.
pub const INITIAL_MEMORY_BYTES: u32 = 2 * 1024 * 1024;

/// Limits the host (worker/src) keeps on the module's behalf. They are decided here, with the
/// rest, and reach the TypeScript through worker/src/constants.ts, which
/// tests/generated_constants.rs writes from them (and fails on when it is stale).
pub mod host {
    /// The largest request body the host reads and hands to the module (413 above it).
    pub const MAX_BODY_BYTES: usize = dosql_api::transfer::MAX_BODY_BYTES;
    /// The most of an oversized body the host reads and drops before answering 413, so that a
    /// client still sending reads the answer instead of a reset connection.
    pub const MAX_DRAIN_BYTES: usize = 16 * 1024 * 1024;
    /// The largest answer, whatever the instance's share of memory.
    pub const MAX_ANSWER_BYTES: usize = dosql_api::Limits::DEFAULT_MAX_ANSWER_BYTES;
    /// How long a Hrana stream may go without a request before it is rolled back and closed,
    /// unless HRANA_STREAM_TIMEOUT_MS says otherwise.
    pub const DEFAULT_STREAM_TIMEOUT_MS: u64 =
        dosql_api::hrana::DEFAULT_STREAM_TIMEOUT.as_millis() as u64;
    /// The isolate's memory budget: every instance's linear memory together (DOSQL_MEMORY_BUDGET
    /// overrides it). Leaves half of the 128 MB isolate to V8's heap, request and response
    /// buffers, and workerd.
    pub const DEFAULT_MEMORY_BUDGET_BYTES: usize = 64 * 1024 * 1024;
    /// How long after a database's first write its background work (pruning the history,
    /// finishing a checksum, deleting garbage) first runs; it then reschedules itself.
    pub const MAINTAIN_DELAY_MS: u64 = 60_000;
    /// The smallest budget accepted: one instance's fixed costs (data, stack, request body and
    /// answer buffers, about 4 MB) must stay a small part of it.
    pub const MIN_MEMORY_BUDGET_BYTES: usize = 32 * 1024 * 1024;
    /// The page cache's bytes unless CACHE_PAGES or CACHE_BYTES say otherwise (within the
    /// instance's share: a fifth of it at most).
    pub const DEFAULT_CACHE_BYTES: usize = 32 * 1024 * 1024;
}

/// Operation codes of `dosql_exec`.
pub mod op {
    /// `{"sql", "params"}` → one answer.
    pub const QUERY: u32 = 1;
    /// `[{"sql", "params"}, ...]` in one transaction.
    pub const BATCH: u32 = 2;
    /// Page size, page count, txid, VFS counters.
    pub const STATS: u32 = 3;
    /// libSQL's Hrana over HTTP, its routes under `/db/<name>/` (`dosql_api::hrana::Hrana::
    /// route`): the request and the answer framed as `dosql_api::http` says.
    pub const HRANA: u32 = 4;
    /// [`LimitsRequest`]: the memory this instance may use from now on (from its share of the
    /// isolate's budget, see `worker/src/budget.ts`) → the [`MemoryLimits`] set.
    pub const LIMITS: u32 = 5;
    /// The routes served whole: page transfer (`dosql_api::transfer`) and history
    /// (`dosql_api::history`), framed as `dosql_api::http` says.
    pub const ROUTE: u32 = 6;
    /// The committed head as storage holds it (format, page size and count, txid, prefix,
    /// pages inline), for `/_storage_stats`.
    pub const HEAD: u32 = 7;
}

/// What [`op::LIMITS`] sets: the memory one instance may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryLimits {
    /// Pages the VFS's page cache may hold.
    pub cache_pages: usize,
    /// Bytes of changed pages one transaction may buffer until its commit.
    pub max_txn_bytes: usize,
    /// SQLite's hard heap limit in bytes (its soft limit is three quarters of it).
    pub heap_bytes: i64,
    /// Bytes of rows one answer may carry.
    pub max_answer_bytes: usize,
}

/// The body of [`op::LIMITS`]: the limits themselves, or the instance's share of the
/// isolate's memory budget to make them from ([`MemoryLimits::for_share`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum LimitsRequest {
    /// `{"share_bytes", "cache_bytes"}`.
    Share(Share),
    /// `{"cache_pages", "max_txn_bytes", "heap_bytes", "max_answer_bytes"}`.
    Limits(MemoryLimits),
}

/// An instance's share of the isolate's memory budget (worker/src/budget.ts), and the page
/// cache's settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Share {
    /// Bytes the instance may hold.
    pub share_bytes: usize,
    /// CACHE_PAGES: the most pages the page cache may hold, within the share.
    #[serde(default)]
    pub cache_pages: Option<usize>,
    /// CACHE_BYTES: the most bytes the page cache may hold when `cache_pages` is unset
    /// (default [`host::DEFAULT_CACHE_BYTES`]), so that 64 KiB pages take no more memory than
    /// 4 KiB ones.
    #[serde(default)]
    pub cache_bytes: Option<usize>,
    /// The history settings, as the host's environment has them.
    #[serde(default)]
    pub history: Option<HistorySettings>,
    /// DOSQL_TEST_REPLICATION_FAULTS (tests only; `dosql_api::replica::Faults`).
    #[serde(default)]
    pub replication_faults: Option<String>,
}

/// The history settings as the host's environment spells them (unset: `None`): HISTORY
/// ("off" turns history off), HISTORY_RETENTION_MS and HISTORY_MAX_BYTES (see
/// `dosql_layout::HistoryConfig::DEFAULT` for the defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySettings {
    /// HISTORY.
    #[serde(default)]
    pub enabled: Option<String>,
    /// HISTORY_RETENTION_MS.
    #[serde(default)]
    pub retention_ms: Option<String>,
    /// HISTORY_MAX_BYTES.
    #[serde(default)]
    pub max_bytes: Option<String>,
}

impl HistorySettings {
    /// The configuration they say, or what is wrong with them.
    pub fn config(&self) -> Result<dosql_layout::HistoryConfig, String> {
        let d = dosql_layout::HistoryConfig::DEFAULT;
        let number = |name: &str, v: &Option<String>, default: u64| -> Result<u64, String> {
            match v.as_deref().map(str::trim) {
                None | Some("") => Ok(default),
                Some(s) => s
                    .parse::<u64>()
                    .map_err(|_| format!("{name} must be a non-negative integer, not {s:?}")),
            }
        };
        let enabled = match self.enabled.as_deref().map(str::trim) {
            None | Some("" | "on" | "1" | "true") => true,
            Some("off" | "0" | "false") => false,
            Some(s) => return Err(format!("HISTORY must be \"on\" or \"off\", not {s:?}")),
        };
        Ok(dosql_layout::HistoryConfig {
            enabled,
            retention_ms: number("HISTORY_RETENTION_MS", &self.retention_ms, d.retention_ms)?,
            max_bytes: number("HISTORY_MAX_BYTES", &self.max_bytes, d.max_bytes)?,
        })
    }
}

impl MemoryLimits {
    /// The limits for an instance with a share of `share.share_bytes`: a fifth each for the
    /// page cache, the transaction's changed pages (which a commit briefly holds twice: the
    /// pages and their stored values) and SQLite's heap, and a tenth (at most
    /// [`host::MAX_ANSWER_BYTES`]) for an answer. With the instance's fixed costs (data,
    /// stack, request and answer buffers) that is about 0.9 of the share, so the instance
    /// stays within it even with every limit reached at once.
    pub fn for_share(share: &Share, page_size: usize) -> MemoryLimits {
        let fifth = share.share_bytes / 5;
        let cache_bytes = match share.cache_pages {
            Some(pages) => pages.saturating_mul(page_size),
            None => share.cache_bytes.unwrap_or(host::DEFAULT_CACHE_BYTES),
        };
        MemoryLimits {
            cache_pages: (fifth.min(cache_bytes) / page_size.max(1)).max(16),
            max_txn_bytes: fifth,
            heap_bytes: i64::try_from(fifth).unwrap_or(i64::MAX),
            max_answer_bytes: (share.share_bytes / 10).min(host::MAX_ANSWER_BYTES),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_share_makes_limits_within_it() {
        use super::{LimitsRequest, MemoryLimits, Share, host};
        let share = Share {
            share_bytes: 40 << 20,
            cache_pages: None,
            cache_bytes: None,
            history: None,
            replication_faults: None,
        };
        let l = MemoryLimits::for_share(&share, 4096);
        assert_eq!(l.cache_pages, (8 << 20) / 4096);
        assert_eq!(l.max_txn_bytes, 8 << 20);
        assert_eq!(l.heap_bytes, 8 << 20);
        assert_eq!(l.max_answer_bytes, 4 << 20);
        // CACHE_BYTES caps the cache; at least 16 pages; answers at most MAX_ANSWER_BYTES.
        let small = Share {
            share_bytes: 1 << 30,
            cache_pages: None,
            cache_bytes: Some(4096),
            history: None,
            replication_faults: None,
        };
        assert_eq!(MemoryLimits::for_share(&small, 4096).cache_pages, 16);
        let pages = Share {
            cache_pages: Some(1000),
            ..small.clone()
        };
        assert_eq!(MemoryLimits::for_share(&pages, 65536).cache_pages, 1000);
        assert_eq!(
            MemoryLimits::for_share(&small, 4096).max_answer_bytes,
            host::MAX_ANSWER_BYTES
        );
        let r: LimitsRequest =
            serde_json::from_str(r#"{"share_bytes": 41943040, "cache_bytes": null}"#).unwrap();
        assert_eq!(r, LimitsRequest::Share(share));
        assert!(serde_json::from_str::<LimitsRequest>(r#"{"share_bytes": 1, "x": 2}"#).is_err());
    }

    #[test]
    fn history_settings_default_and_refuse_nonsense() {
        use super::HistorySettings;
        let d = dosql_layout::HistoryConfig::DEFAULT;
        assert_eq!(HistorySettings::default().config(), Ok(d));
        let off = HistorySettings {
            enabled: Some("off".into()),
            ..HistorySettings::default()
        };
        assert!(!off.config().unwrap().enabled);
        let set = HistorySettings {
            retention_ms: Some("60000".into()),
            max_bytes: Some(" 1024 ".into()),
            ..HistorySettings::default()
        };
        assert_eq!(set.config().unwrap().retention_ms, 60_000);
        assert_eq!(set.config().unwrap().max_bytes, 1024);
        for bad in [
            HistorySettings {
                enabled: Some("maybe".into()),
                ..HistorySettings::default()
            },
            HistorySettings {
                retention_ms: Some("-1".into()),
                ..HistorySettings::default()
            },
            HistorySettings {
                max_bytes: Some("1e9".into()),
                ..HistorySettings::default()
            },
        ] {
            assert!(bad.config().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn memory_limits_parse_strictly() {
        let l: super::MemoryLimits = serde_json::from_str(
            r#"{"cache_pages": 10, "max_txn_bytes": 4096, "heap_bytes": 8, "max_answer_bytes": 9}"#,
        )
        .unwrap();
        assert_eq!(l.cache_pages, 10);
        assert!(serde_json::from_str::<super::MemoryLimits>(r#"{"cache_pages": 10}"#).is_err());
    }
}
