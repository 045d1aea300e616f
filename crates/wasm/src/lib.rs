//! The dosql wasm module for Durable Objects.
//!
//! The Durable Object (worker/src) instantiates this module once per database and calls its
//! exports. Storage goes through three host imports (module `dosql`) that only move bytes:
//! everything that decides what is stored where is `dosql_layout` (compiled in here), so the
//! Worker's TypeScript never interprets a record.
//!
//! | import | what the host does |
//! |---|---|
//! | `kv_get(req, len) -> i32` | reads the keys (and head row) a read request names (`dosql_layout::wire`) from Durable Object storage, keeps the answer, returns its length (-1: failed). May suspend (JSPI). |
//! | `kv_take(out)` | copies the kept answer to `out`. |
//! | `kv_apply(plan, len) -> i32` | issues a write plan's puts, deletes and head row in one synchronous stretch (Durable Object storage applies it atomically), after checking the limits once more; 0 = ok. |
//! | `error_message(buf, cap) -> len` | copies the host's last error message (UTF-8). |
//! | `now_ms() -> f64` | the host's clock in milliseconds, for `meta.duration_ms`. |
//!
//! Exports: `dosql_open(kind, new_page_size, cache_pages, read_ahead)` (reads the head from
//! storage; kind 1 classic, 2 SQLite-backed), `dosql_exec(op, body, len)` (see [`op`];
//! returns an HTTP status and leaves the answer in the result buffer),
//! `dosql_result_ptr/len`, `dosql_alloc/free`. Everything but the ABI lives in `dosql-api`
//! and `dosql-layout`.
//!
//! The module imports its memory (`env.memory`, at least [`INITIAL_MEMORY_BYTES`]): the host
//! gives each instance a memory whose maximum is the isolate's memory budget, so that an
//! instance can never grow past it (a failed `memory.grow` is a failed `malloc`, which SQLite
//! reports as `SQLITE_NOMEM`).

#[cfg(target_arch = "wasm32")]
mod abi;

/// The memory the module asks of its host when it is instantiated (`--initial-memory`, set by
/// build.rs): its data and its 1 MiB stack fit in it. The host (worker/src/dosql.ts,
/// `WASM_INITIAL_PAGES`) provides exactly this much to start with.
pub const INITIAL_MEMORY_BYTES: u32 = 2 * 1024 * 1024;

/// Operation codes of `dosql_exec`.
pub mod op {
    /// `{"sql", "params"}` → one answer.
    pub const QUERY: u32 = 1;
    /// `[{"sql", "params"}, ...]` in one transaction.
    pub const BATCH: u32 = 2;
    /// Page size, page count, txid, VFS counters.
    pub const STATS: u32 = 3;
    /// libSQL's Hrana over HTTP: a header line `{"version", "endpoint", "stream_timeout_ms"}`,
    /// `\n`, then the pipeline (or cursor) request body → its answer (see
    /// `dosql_api::hrana`).
    pub const HRANA: u32 = 4;
    /// `{"cache_pages", "max_txn_bytes", "heap_bytes", "max_answer_bytes"}`: the memory this
    /// instance may use from now on (its share of the isolate's budget, see
    /// `worker/src/budget.ts`) → `{}`.
    pub const LIMITS: u32 = 5;
    /// The page-transfer routes (`dosql_api::transfer`): a header line `{"method", "path",
    /// "query"}`, `\n`, the body → a header line (response headers as a JSON object), `\n`,
    /// the body.
    pub const TRANSFER: u32 = 6;
    /// The committed head as storage holds it (format, page size and count, txid, prefix,
    /// pages inline), for `/_storage_stats`.
    pub const HEAD: u32 = 7;
}

/// What [`op::LIMITS`] sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
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

#[cfg(test)]
mod tests {
    #[test]
    fn build_rs_asks_for_the_initial_memory_the_host_provides() {
        let build = include_str!("../build.rs");
        assert!(
            build.contains(&format!("--initial-memory={}", super::INITIAL_MEMORY_BYTES)),
            "build.rs and INITIAL_MEMORY_BYTES disagree"
        );
        let host = include_str!("../../../worker/src/dosql.ts");
        let pages = super::INITIAL_MEMORY_BYTES / 65536;
        assert!(
            host.contains(&format!("WASM_INITIAL_PAGES = {pages};")),
            "worker/src/dosql.ts must provide {pages} pages"
        );
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
