//! The Hrana 3 `cursor` endpoint: a batch on a stream, answered as lines of JSON (the
//! baton line, then the batch's cursor entries).

use std::time::Instant;

use dosql_vfs::Database;
use serde::{Deserialize, Serialize};

use super::proto::{Batch, Col, ProtoError, http_error};
use super::value::OutValue;
use super::{Hrana, Version};
use crate::Response;

impl Hrana {
    /// `POST v3/cursor`: runs a batch on the stream and answers newline-separated JSON: the
    /// `{"baton", "base_url"}` line, then the batch's cursor entries. The whole result is
    /// built before the answer (nothing is streamed), like every other answer here.
    pub fn cursor(&mut self, db: &Database, body: &[u8], now: Instant) -> Response {
        self.expire(now);
        let req: CursorReq = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return http_error(
                    400,
                    "PROTOCOL_ERROR",
                    format!("invalid cursor request body: {e}"),
                );
            }
        };
        let mut stream = match self.take(db, req.baton.as_deref()) {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        stream.budget(self.limits.max_answer_bytes);
        let outcome = stream.batch(db, Version::V3, &req.batch);
        let baton = match self.put_back(stream, now) {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        let mut out = Vec::new();
        let mut line = |value: &dyn erased::Line| {
            value.write(&mut out);
            out.push(b'\n');
        };
        line(&CursorResp {
            baton,
            base_url: None,
        });
        match outcome {
            Ok(result) => {
                let steps = result.step_results.iter().zip(&result.step_errors);
                for (step, (ok, err)) in steps.enumerate() {
                    if let Some(r) = ok {
                        line(&CursorEntry::StepBegin {
                            step,
                            cols: &r.cols,
                        });
                        for row in &r.rows {
                            line(&CursorEntry::Row { row });
                        }
                        line(&CursorEntry::StepEnd {
                            affected_row_count: r.affected_row_count,
                            last_insert_rowid: &r.last_insert_rowid,
                        });
                    } else if let Some(error) = err {
                        line(&CursorEntry::StepError { step, error });
                    }
                }
            }
            Err(error) => line(&CursorEntry::Error { error: &error }),
        }
        Response {
            status: 200,
            body: out,
        }
    }
}

#[derive(Debug, Deserialize)]
struct CursorReq {
    #[serde(default)]
    baton: Option<String>,
    batch: Batch,
}

#[derive(Debug, Serialize)]
struct CursorResp {
    baton: Option<String>,
    base_url: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum CursorEntry<'a> {
    StepBegin {
        step: usize,
        cols: &'a [Col],
    },
    StepEnd {
        affected_row_count: u64,
        last_insert_rowid: &'a Option<String>,
    },
    StepError {
        step: usize,
        error: &'a ProtoError,
    },
    Row {
        row: &'a [OutValue],
    },
    Error {
        error: &'a ProtoError,
    },
}

/// Writing the lines of a cursor answer without naming each type.
mod erased {
    pub(super) trait Line {
        fn write(&self, out: &mut Vec<u8>);
    }

    impl<T: serde::Serialize> Line for T {
        fn write(&self, out: &mut Vec<u8>) {
            // Serializing these types cannot fail: no maps with non-string keys, no I/O.
            let _ = serde_json::to_writer(out, self);
        }
    }
}
