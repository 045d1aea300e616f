//! Routes the host hands over whole: page transfer ([`crate::transfer`]) and Hrana
//! ([`crate::hrana::Hrana::route`]). The host frames the HTTP request as one line of JSON,
//! `{"method", "path", "query", "db"?, "hrana_stream_timeout_ms"?, "step"?}` (`db`: the
//! database's own name), a newline, then the body
//! unchanged; the answer comes back as one line of JSON (the response's headers), a newline,
//! then the body. The host copies bytes and nothing else: routes, methods, errors and headers
//! are decided here.
//!
//! A route that needs another database (a branch, a replica's catch-up) answers a request to
//! carry instead ([`Answer::send`]: `x-dosql-send: {"to", "method", "path",
//! "location_hint"?}`, the body to send, and `x-dosql-state`); the host sends it to that
//! database's Durable Object and calls the route again with `"step": {"state", "status"}` in
//! the header line and the other database's answer, byte for byte, as the body.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value as Json, json};

use crate::{ApiError, Response};

/// A valid database name (the Worker's rule): 1-64 of `A-Z a-z 0-9 _ . -`.
pub fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The database name in field `field` of a JSON body: 400 BAD_REQUEST when it is missing or
/// not a string, 400 BAD_DATABASE_NAME when it is not a valid name.
pub fn name_field<'a>(body: &'a Json, field: &str) -> Result<&'a str, ApiError> {
    let Some(name) = body[field].as_str() else {
        let got = if body[field].is_null() {
            "missing".to_owned()
        } else {
            format!("not a string: {}", body[field])
        };
        return Err(ApiError::bad_request(format!(
            "the body's \"{field}\" (a database name) is {got}"
        )));
    };
    if !valid_name(name) {
        return Err(ApiError::new(
            400,
            "BAD_DATABASE_NAME",
            format!("{field}: a database name is 1-64 characters of A-Z a-z 0-9 _ . -"),
        ));
    }
    Ok(name)
}

/// Another database's error answer (`status`, `body`) to a carried request, said about it:
/// its code (`fallback` when it gave none), `<what>: <its message>`, and 502 for its 5xx.
pub fn relayed(what: &str, status: u16, body: &[u8], fallback: &str) -> ApiError {
    let text = String::from_utf8_lossy(body);
    let answer: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
    let code = answer["error"]["code"].as_str().unwrap_or(fallback);
    let message = answer["error"]["message"].as_str().unwrap_or(&text);
    let status = if status >= 500 { 502 } else { status };
    ApiError::new(status, code, format!("{what}: {message}"))
}

/// A framed request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The path after `/db/<name>/`: `pages`, `import/<id>`, `v3/pipeline`, ...
    pub path: &'a str,
    /// The query string without its `?`.
    pub query: &'a str,
    /// HRANA_STREAM_TIMEOUT_MS as the host's environment has it (unset: `None`).
    pub hrana_stream_timeout_ms: Option<&'a str>,
    /// The database's own name, when the host says it.
    pub db: Option<&'a str>,
    /// A step of a route that had the host carry a request: its state and the other
    /// database's status (the body is the other database's answer).
    pub step: Option<Step<'a>>,
    /// The body.
    pub body: &'a [u8],
}

/// See [`Request::step`].
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Step<'a> {
    /// The state the route handed out with its request, as JSON.
    #[serde(borrow)]
    pub state: &'a RawValue,
    /// The other database's HTTP status.
    pub status: u16,
}

impl Step<'_> {
    /// The state as `T`.
    pub fn state<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_str(self.state.get())
            .map_err(|e| ApiError::bad_request(format!("bad step state: {e}")))
    }
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    method: &'a str,
    #[serde(borrow)]
    path: &'a str,
    #[serde(default, borrow)]
    query: &'a str,
    #[serde(default, borrow)]
    hrana_stream_timeout_ms: Option<&'a str>,
    #[serde(default, borrow)]
    db: Option<&'a str>,
    #[serde(default, borrow)]
    step: Option<Step<'a>>,
}

impl<'a> Request<'a> {
    /// A request without settings.
    pub fn new(method: &'a str, path: &'a str, query: &'a str, body: &'a [u8]) -> Request<'a> {
        Request {
            method,
            path,
            query,
            hrana_stream_timeout_ms: None,
            db: None,
            step: None,
            body,
        }
    }

    /// Reads the host's framing (see the module docs).
    pub fn parse(input: &'a [u8]) -> Result<Request<'a>, ApiError> {
        let split = input
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| ApiError::bad_request("missing the request's header line"))?;
        let line: Line<'a> = serde_json::from_slice(&input[..split])
            .map_err(|e| ApiError::bad_request(format!("bad request header line: {e}")))?;
        Ok(Request {
            method: line.method,
            path: line.path,
            query: line.query,
            hrana_stream_timeout_ms: line.hrana_stream_timeout_ms,
            db: line.db,
            step: line.step,
            body: &input[split + 1..],
        })
    }

    /// Whether the method is `want` (a `HEAD` counts as a `GET`).
    pub fn is(&self, want: &str) -> bool {
        self.method == want || (want == "GET" && self.method == "HEAD")
    }
}

/// An answer: status, headers, body; and whether the database was switched under the session
/// (an import committed: the caller opens it again, its head, page size and pages changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Headers besides `content-type` (JSON unless one is given here).
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The database was switched.
    pub switched: bool,
}

impl Answer {
    /// 200 with `value`.
    pub fn json(value: &Json) -> Answer {
        Answer::from(Response {
            status: 200,
            body: value.to_string().into_bytes(),
        })
    }

    /// `e` as dosql's JSON error.
    pub fn error(e: &ApiError) -> Answer {
        Answer::from(Response {
            status: e.status,
            body: e.body().to_string().into_bytes(),
        })
    }

    /// 405 for a route that takes `allow` (e.g. "GET or POST").
    pub fn not_allowed(what: &str, allow: &str) -> Answer {
        let e = ApiError::new(405, "METHOD_NOT_ALLOWED", format!("{what} takes {allow}"));
        Answer::error(&e).with("allow", allow.replace(" or ", ", "))
    }

    /// A request for the host to carry to database `to` (see the module docs); `state`
    /// comes back with the answer.
    pub fn send(
        to: &str,
        location_hint: Option<&str>,
        method: &str,
        path: String,
        body: Vec<u8>,
        state: &impl Serialize,
    ) -> Answer {
        let mut a = Answer::json(&Json::Null);
        a.body = body;
        let mut send = json!({"to": to, "method": method, "path": path});
        if let Some(h) = location_hint {
            send["location_hint"] = json!(h);
        }
        a.headers = vec![
            ("content-type", "application/octet-stream".into()),
            ("x-dosql-send", send.to_string()),
            (
                "x-dosql-state",
                serde_json::to_string(state).unwrap_or_default(),
            ),
        ];
        a
    }

    /// With one more header.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }

    /// The host's framing: the headers as one line of JSON, a newline, the body.
    pub fn framed(&self) -> Vec<u8> {
        let headers: serde_json::Map<String, Json> = self
            .headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let mut out = Json::Object(headers).to_string().into_bytes();
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out
    }
}

impl From<Response> for Answer {
    fn from(r: Response) -> Answer {
        Answer {
            status: r.status,
            headers: Vec::new(),
            body: r.body,
            switched: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_answers_frame() {
        let r =
            Request::parse(b"{\"method\":\"PUT\",\"path\":\"import/1\",\"query\":\"from=1\"}\nab")
                .unwrap();
        assert_eq!(
            (r.method, r.path, r.query, r.body),
            ("PUT", "import/1", "from=1", &b"ab"[..])
        );
        assert_eq!(r.hrana_stream_timeout_ms, None);
        let r = Request::parse(
            b"{\"method\":\"HEAD\",\"path\":\"v2\",\"hrana_stream_timeout_ms\":\"5\"}\n",
        )
        .unwrap();
        assert!(r.is("GET") && !r.is("POST"));
        assert_eq!(r.hrana_stream_timeout_ms, Some("5"));
        assert!(Request::parse(b"no line").is_err());
        assert!(Request::parse(b"{\"path\":\"v2\"}\n").is_err());
        let a = Answer::not_allowed("import", "GET or POST");
        assert_eq!(a.status, 405);
        let framed = a.framed();
        let split = framed.iter().position(|&b| b == b'\n').unwrap();
        let headers: Json = serde_json::from_slice(&framed[..split]).unwrap();
        assert_eq!(headers, json!({"allow": "GET, POST"}));
        assert_eq!(&framed[split + 1..], &a.body[..]);
    }
}
