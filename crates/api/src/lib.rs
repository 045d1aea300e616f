//! dosql's request APIs over one database: what the Durable Object serves over HTTP, and what
//! the CLI uses on a local store. Bodies in, `(status, JSON body)` out; no HTTP here.
//!
//! Two protocols reach the same database:
//! - [`json`]: dosql's JSON API ([`Session`]: query, batch, stats), with values as described
//!   in [`value`];
//! - [`hrana`]: libSQL's Hrana over HTTP, for libSQL clients.
//!
//! Both bind arguments to statements through one routine (`bind`), answer with a
//! [`Response`] under the same [`Limits`], and report SQLite's errors through [`error`].
//! [`transfer`] moves whole databases in and out as pages (`dosql import`, `dosql export`).
//! [`http`] frames the routes the host hands over whole (page transfer, Hrana).

#![forbid(unsafe_code)]

mod bind;
pub mod branch;
pub mod error;
pub mod history;
pub mod hrana;
pub mod http;
pub mod json;
pub mod replica;
mod response;
pub mod transfer;
pub mod value;

pub use error::ApiError;
pub use json::{ClockMs, Session, monotonic_ms};
pub use response::{Limits, Response};
