//! The JSON API's requests as they arrive: a [`Statement`] (`sql`, its parameters, paging),
//! its [`Params`] (positional or named), and parsing a body into them.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json};

use crate::ApiError;

/// Parameters of one statement: positional or named.
#[derive(Debug)]
pub(super) enum Params {
    Positional(Vec<Json>),
    Named(Map<String, Json>),
}

/// An array or an object, read directly (an untagged enum would buffer every value first).
impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Params, D::Error> {
        struct ParamsVisitor;
        impl<'de> Visitor<'de> for ParamsVisitor {
            type Value = Params;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array (positional parameters) or an object (named parameters)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Params, A::Error> {
                let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(v) = seq.next_element()? {
                    values.push(v);
                }
                Ok(Params::Positional(values))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
                let mut values = Map::new();
                while let Some((k, v)) = map.next_entry()? {
                    values.insert(k, v);
                }
                Ok(Params::Named(values))
            }
        }
        d.deserialize_any(ParamsVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Statement<'a> {
    /// Borrowed from the request body unless it holds escapes.
    #[serde(borrow)]
    pub(super) sql: Cow<'a, str>,
    #[serde(default)]
    pub(super) params: Option<Params>,
    /// Paging (query only): rows of each statement to skip before answering.
    #[serde(default)]
    pub(super) row_offset: Option<u64>,
    /// Paging (query only): at most this many rows in the answer; fewer when the answer would
    /// pass the answer size limit. `next_offset` says where the next page starts.
    #[serde(default)]
    pub(super) max_rows: Option<u64>,
    /// Paging: answer only if the database is still at this txid (409 TXID_CHANGED if not),
    /// so that the pages of one result come from one state of the database.
    #[serde(default)]
    pub(super) at_txid: Option<u64>,
}

impl Statement<'_> {
    pub(super) fn paged(&self) -> bool {
        self.row_offset.is_some() || self.max_rows.is_some() || self.at_txid.is_some()
    }
}

impl Params {
    pub(super) fn is_empty(&self) -> bool {
        match self {
            Params::Positional(v) => v.is_empty(),
            Params::Named(m) => m.is_empty(),
        }
    }
}

pub(super) fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}
