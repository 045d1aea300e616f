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
//! Exports: `dosql_open`, `dosql_exec` (op 1 query, 2 batch, 3 stats, 4 Hrana; returns an
//! HTTP status and leaves the answer in the result buffer), `dosql_result_ptr/len`,
//! `dosql_alloc/free`. Everything but the ABI lives in `dosql-api`.

#[cfg(target_arch = "wasm32")]
mod abi;

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
}
