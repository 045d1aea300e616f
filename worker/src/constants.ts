// Generated from the Rust crates by crates/wasm/tests/generated_constants.rs: do not edit.
// After changing a constant there: DOSQL_BLESS=1 cargo test -p dosql-wasm --test generated_constants
/** Operation codes of dosql_exec (crates/wasm/src/lib.rs: op). */
export const OP_QUERY = 1, OP_BATCH = 2, OP_STATS = 3, OP_HRANA = 4, OP_LIMITS = 5, OP_ROUTE = 6, OP_HEAD = 7;
/** The memory an instance starts with, in 64 KiB wasm pages (INITIAL_MEMORY_BYTES). */
export const WASM_INITIAL_PAGES = 32;
/** Limits the host keeps for the module (crates/wasm/src/lib.rs: host, where each is explained). */
export const MAX_BODY_BYTES = 1048576, MAX_DRAIN_BYTES = 16777216, DEFAULT_STREAM_TIMEOUT_MS = 10000, DEFAULT_BUDGET_BYTES = 67108864, MIN_BUDGET_BYTES = 33554432, DEFAULT_CACHE_BYTES = 33554432, MAINTAIN_DELAY_MS = 60000;
