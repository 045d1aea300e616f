//! dosql's storage layout in Durable Object storage, in one place, in Rust: the typed keys
//! ([`keys`]), the head record and every format of it that exists ([`head`]), the commit
//! planner and write plans checked against production's limits ([`plan`]), imports as a
//! state machine ([`transfer`]), and [`DoStore`], a `PageStore` in this layout over any
//! [`Kv`] — the Durable Object's storage in the wasm (its host bridge), [`MemKv`] and
//! [`FaultKv`] in tests, and [`RedbKv`], a local file holding the very same records.
//!
//! The Worker's TypeScript only moves bytes: it reads the keys the wasm asks for and applies
//! the plans the wasm hands it (see `crates/wasm`, `worker/src/kv.ts`). What goes where is
//! decided here, and tested natively.

#![forbid(unsafe_code)]

mod bytes;
pub mod checksum;
pub mod head;
pub mod history;
pub mod keys;
pub mod kv;
pub mod log;
pub mod ltx;
pub mod plan;
#[cfg(feature = "redb")]
mod redb_kv;
pub mod replica;
pub mod store;
pub mod transfer;
pub mod value;
pub mod wire;

pub use head::{DbChecksum, HEAD_FORMAT, HEAD_TABLE, Head, LogWindow};
pub use history::{CommitInfo, Maintenance, Restored};
pub use keys::{Generation, Key};
pub use kv::{CallCounts, FaultKv, Kv, KvFaults, MemKv};
pub use plan::{INLINE_MAX_BYTES, INLINE_MAX_PAGES, PlanNotes, WritePlan};
#[cfg(feature = "redb")]
pub use redb_kv::RedbKv;
pub use store::{Clock, DoStore, HistoryConfig, LayoutStats, system_clock};
pub use transfer::{Garbage, Staging, Transfer};
pub use value::{HeadRow, Limits, StorageKind, Value};
