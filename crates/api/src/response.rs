//! What both protocols answer with: a [`Response`] (HTTP status and JSON body), and the
//! [`Limits`] on how much one answer may carry.

use serde_json::Value as Json;

use crate::ApiError;

/// An answer: HTTP status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// 200, or the error's status.
    pub status: u16,
    /// UTF-8 JSON.
    pub body: Vec<u8>,
}

impl Response {
    pub(crate) fn ok(body: &Json) -> Response {
        Response {
            status: 200,
            body: body.to_string().into_bytes(),
        }
    }

    pub(crate) fn ok_bytes(body: Vec<u8>) -> Response {
        Response { status: 200, body }
    }

    pub(crate) fn error(err: &ApiError) -> Response {
        Response {
            status: err.status,
            body: err.body().to_string().into_bytes(),
        }
    }

    /// The body as JSON (for tests and the CLI).
    pub fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap_or(Json::Null)
    }
}

/// Limits on what one request may make the database answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of rows one answer may carry (JSON as written). Over it, a query answers 400
    /// `RESULT_TOO_LARGE` while its rows are stepped; a paged query stops its page there.
    pub max_answer_bytes: usize,
}

impl Limits {
    /// 8 MiB: an answer is built whole in the wasm's memory and copied once more to the
    /// Worker, and a Durable Object's isolate has 128 MB for every object it hosts.
    pub const DEFAULT_MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_answer_bytes: Limits::DEFAULT_MAX_ANSWER_BYTES,
        }
    }
}

/// The error for an answer over `limit` bytes.
pub(crate) fn too_large(limit: usize, paging_hint: bool) -> ApiError {
    let hint = if paging_hint {
        "; read it in pages (\"max_rows\", \"row_offset\" and \"at_txid\"; see the README) or \
         select less"
    } else {
        "; select less, or read it in pages through /query"
    };
    ApiError::new(
        400,
        "RESULT_TOO_LARGE",
        format!("the answer would be over {limit} bytes{hint}"),
    )
}
