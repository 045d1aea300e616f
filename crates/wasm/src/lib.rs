//! The dosql wasm module for Durable Objects.
//!
//! The Durable Object (worker/src) instantiates this module once per database and calls its
//! exports; pages come and go through host imports (module `dosql`):
//!
//! | import | what the host does |
//! |---|---|
//! | `read_pages(nos, n, out, lens) -> i32` | reads the page keys for `n` page numbers (u32 LE at `nos`) from DO storage; page `i`'s stored value goes to `out + i*page_size` and its length to `lens[i]` (0: never stored); 0 = ok. May suspend (JSPI). |
//! | `commit(page_count, nos, n, data, lens) -> i32` | writes `n` stored values (back to back at `data`, value `i` is `lens[i]` bytes), drops pages above `page_count`, writes `meta` with txid+1: all with no await in between, so DO storage applies them atomically; 0 = ok. |
//! | `error_message(buf, cap) -> len` | copies the host's last error message (UTF-8). |
//! | `now_ms() -> f64` | the host's clock in milliseconds, for `meta.duration_ms`. |
//!
//! Exports: `dosql_open`, `dosql_exec` (op 1 query, 2 batch, 3 stats, 4 Hrana, 5 memory
//! limits; returns an HTTP status and leaves the answer in the result buffer),
//! `dosql_result_ptr/len`, `dosql_alloc/free`. Everything but the ABI lives in `dosql-api`.
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
