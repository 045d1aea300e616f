//! Imports: a whole database image uploaded page by page under a fresh generation of page
//! keys that no reader looks at, then switched in with the head in one atomic write (readers
//! see the old database or the new one, never a mix), and the old generation's keys deleted
//! afterwards in bounded batches (garbage collection).
//!
//! The state machine lives in the `transfer` record:
//!
//! ```text
//!   idle ──begin──▶ staging(g, next=1) ──stage(next..k)──▶ staging(g, next=k+1) ─┐
//!     ▲                 │  ▲                                                       │
//!     │             abort │  └──────────────── begin (the staged pages: garbage) ──┤
//!     │                 ▼                                                          │
//!     └────────── idle + garbage ◀─── switch (all pages staged: the head moves to g;
//!                                      the old generation's pages become garbage)
//!   gc: deletes a bounded share of garbage keys and records what is left.
//! ```
//!
//! # The record
//!
//! Format 2 (written by this code, or 3: see below): the value of key `transfer` is an
//! `ArrayBuffer` holding UTF-8 JSON: `{"format": 2, "next_gen": n, "staging": null | {"generation", "page_size",
//! "page_count", "next"}, "garbage": [{"generation", "from", "to"}]}`. Format 1 (earlier
//! releases) was a structured value `{format: 1, next_gen, staging: null | {id, prefix,
//! page_size, page_count, next}, garbage: [{prefix, from, to}]}`; it is read, and the next
//! change writes format 2 (an `ArrayBuffer`, which a format 1 reader refuses).
//!
//! Format 3 (written by this code when the record names a row generation: `next_gen` above
//! `keys::FIRST_ROW_GENERATION`, or one staged or garbage) is format 2 in all else: on
//! SQLite-backed storage imports stage rows, so releases that would stage or collect them as
//! kv keys must refuse the record. A record without one is still written as format 2.

use dosql_pagestore::{PageNo, PageSize, StoreError, codec};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::checksum;
use crate::keys::{Generation, Key};
use crate::plan::WritePlan;
use crate::value::{StorageKind, Value, count_field};

/// The transfer record format this code writes (with a row generation in it; else 2).
pub const TRANSFER_FORMAT: u64 = 3;

/// An import in progress: pages `1..next` of generation `generation` are stored.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Staging {
    /// The generation its pages are stored under (the import's id, for clients).
    pub generation: Generation,
    /// Its page size.
    pub page_size: u32,
    /// Pages it will have.
    pub page_count: u32,
    /// The next page expected (pages arrive in order; a resend of stored pages is fine).
    pub next: u32,
    /// The LTX checksum of pages `1..next` (see `checksum`), so that the switch knows the
    /// database's checksum without reading it again (records from before it: 0, unknown).
    #[serde(default)]
    pub checksum: u64,
}

/// Keys of generation `generation`, pages `from..=to`, that no reader uses any more.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Garbage {
    /// Their generation.
    pub generation: Generation,
    /// The first page still to delete.
    pub from: u32,
    /// The last.
    pub to: u32,
}

/// The `transfer` record.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Transfer {
    /// The generation the next import gets (generations are never reused).
    pub next_gen: u32,
    /// The import being staged.
    pub staging: Option<Staging>,
    /// Dead generations' page ranges still to delete.
    pub garbage: Vec<Garbage>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    format: u64,
    #[serde(flatten)]
    transfer: Transfer,
}

impl Serialize for Generation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Generation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Generation, D::Error> {
        u32::deserialize(d).map(Generation)
    }
}

impl Transfer {
    /// The record of a database no import ever touched.
    pub fn new() -> Transfer {
        Transfer {
            next_gen: 1,
            staging: None,
            garbage: Vec::new(),
        }
    }

    /// Reads the record (format 1, 2 or 3); none stored means [`Transfer::new`].
    pub fn load(value: Option<&Value>) -> Result<Transfer, StoreError> {
        match value {
            None => Ok(Transfer::new()),
            Some(Value::Bytes(b)) => {
                let record: Record = serde_json::from_slice(b)
                    .map_err(|e| StoreError::corrupt(format!("transfer record: {e}")))?;
                if !(2..=TRANSFER_FORMAT).contains(&record.format) {
                    return Err(StoreError::corrupt(format!(
                        "transfer record format {}: written by a newer dosql (this release \
                         reads 1 to {TRANSFER_FORMAT})",
                        record.format
                    )));
                }
                Ok(record.transfer)
            }
            Some(Value::Structured(j)) => from_format_1(j),
        }
    }

    /// The record as stored (format 2, or 3 when it names a row generation).
    pub fn encode(&self) -> Value {
        // Any row generation in it, wherever it came from (a staging an earlier release began
        // lives on beside rows; a row generation can be garbage).
        let rows = self.next_gen > crate::keys::FIRST_ROW_GENERATION
            || self.staging.is_some_and(|s| s.generation.page_rows())
            || self.garbage.iter().any(|g| g.generation.page_rows());
        let record = Record {
            format: if rows { TRANSFER_FORMAT } else { 2 },
            transfer: self.clone(),
        };
        Value::Bytes(serde_json::to_vec(&record).unwrap_or_default())
    }

    /// The record with pages `1..=page_count` of `generation` to delete (a generation the
    /// commit log no longer needs), and the plan that stores it.
    pub fn discard(&self, generation: Generation, page_count: u32) -> (Transfer, WritePlan) {
        let mut next = self.clone();
        if page_count > 0 {
            next.garbage.push(Garbage {
                generation,
                from: 1,
                to: page_count,
            });
        }
        let plan = WritePlan {
            puts: vec![(Key::Transfer, next.encode())],
            ..WritePlan::default()
        };
        (next, plan)
    }

    /// Pages still to delete.
    pub fn garbage_pages(&self) -> u64 {
        self.garbage
            .iter()
            .map(|g| u64::from(g.to.saturating_sub(g.from)) + u64::from(g.from <= g.to))
            .sum()
    }

    /// Starts an import of `page_count` pages of `page_size` under a new generation (an
    /// import already staged is abandoned: its pages become garbage).
    /// On SQLite-backed storage the generation is a row generation (the first import of a
    /// database whose pages are kv keys moves them to rows); classic storage never reaches
    /// one.
    pub fn begin(
        &self,
        page_size: PageSize,
        page_count: u32,
        kind: StorageKind,
    ) -> Result<(Transfer, WritePlan), StoreError> {
        let mut next = self.clone();
        if let Some(s) = next.staging.take() {
            next.garbage.extend(staged_garbage(&s));
        }
        let generation = match kind {
            // Above the first row generation: a new database's own.
            StorageKind::SqliteBacked => {
                Generation(next.next_gen.max(Generation::FIRST_ROWS.0 + 1))
            }
            StorageKind::Classic => Generation(next.next_gen),
        };
        let usable = match kind {
            StorageKind::SqliteBacked => generation.page_rows(),
            StorageKind::Classic => generation.0 < Generation::FIRST_ROWS.0,
        };
        if !usable {
            return Err(StoreError::invalid("no generation left"));
        }
        next.next_gen = generation.0 + 1;
        next.staging = Some(Staging {
            generation,
            page_size: page_size.get(),
            page_count,
            next: 1,
            checksum: checksum::EMPTY,
        });
        let plan = WritePlan {
            puts: vec![(Key::Transfer, next.encode())],
            ..WritePlan::default()
        };
        Ok((next, plan))
    }

    /// Stores `values` (stored page values, as the client sent them) as pages `from..` of the
    /// staged import, with the record of how far it got, in one write. The caller checked
    /// that `from` is at most `next` (in order, a resend is fine) and the values decode.
    pub fn stage(
        &self,
        from: u32,
        values: Vec<Vec<u8>>,
        kind: StorageKind,
    ) -> Result<(Transfer, WritePlan), StoreError> {
        let s = self
            .staging
            .ok_or_else(|| StoreError::invalid("no import is staged"))?;
        let last = u64::from(from) + values.len() as u64 - 1;
        if from == 0 || values.is_empty() || from > s.next || last > u64::from(s.page_count) {
            return Err(StoreError::invalid(format!(
                "pages {from}..{last} do not follow the staged {} of {}",
                s.next - 1,
                s.page_count
            )));
        }
        let mut next = self.clone();
        let staging = next.staging.as_mut().expect("checked above");
        let size = PageSize::new(s.page_size)
            .ok_or_else(|| StoreError::corrupt(format!("staged page size {}", s.page_size)))?;
        // Pages new to the staging join its checksum (a resend of stored ones changes
        // nothing); a record from before checksums (0) stays unknown.
        for (i, v) in values.iter().enumerate() {
            let no = from + i as u32;
            if no >= s.next && staging.checksum != 0 {
                let page = codec::decode_page(v, size)?;
                staging.checksum = checksum::toggle(staging.checksum, checksum::page(no, &page));
            }
        }
        staging.next = staging.next.max(last as u32 + 1);
        let mut plan = WritePlan::default();
        for (i, v) in values.into_iter().enumerate() {
            let no = PageNo::new(from + i as u32).expect("from ≥ 1");
            plan.puts
                .push((Key::Page(s.generation, no), Value::Bytes(v)));
        }
        plan.puts.push((Key::Transfer, next.encode()));
        plan.check(kind)?;
        Ok((next, plan))
    }

    /// Drops the staged import: its pages become garbage.
    pub fn abort(&self) -> Option<(Transfer, WritePlan)> {
        let s = self.staging?;
        let mut next = self.clone();
        next.staging = None;
        next.garbage.extend(staged_garbage(&s));
        let plan = WritePlan {
            puts: vec![(Key::Transfer, next.encode())],
            ..WritePlan::default()
        };
        Some((next, plan))
    }

    /// The record after the staged import was switched in over a database of generation
    /// `live` with `page_count` pages: those become garbage. (The caller writes the head.)
    pub fn switched(
        &self,
        live: Generation,
        page_count: u32,
        keep_live: bool,
    ) -> Result<(Transfer, Staging), StoreError> {
        let s = self
            .staging
            .ok_or_else(|| StoreError::invalid("no import is staged"))?;
        if s.next != s.page_count + 1 {
            return Err(StoreError::invalid(format!(
                "the import has {} of its {} pages",
                s.next - 1,
                s.page_count
            )));
        }
        let mut next = self.clone();
        next.staging = None;
        // Kept while the commit log holds the switch: its pre-images are these pages.
        if page_count > 0 && !keep_live {
            next.garbage.push(Garbage {
                generation: live,
                from: 1,
                to: page_count,
            });
        }
        Ok((next, s))
    }

    /// Deletes up to `max_calls` calls' worth of garbage keys (never of `live` or the staged
    /// generation, whatever the record says) and records what is left, in one write.
    /// Garbage keys are under generations no reader uses, so this needs no atomicity with
    /// anything; the record only saves repeating work.
    pub fn collect(
        &self,
        live: Generation,
        max_calls: usize,
        kind: StorageKind,
    ) -> Option<(Transfer, WritePlan)> {
        if self.garbage.is_empty() {
            return None;
        }
        let per_call = kind.limits().max_keys_per_call;
        let budget = max_calls.saturating_mul(per_call).min(u32::MAX as usize) as u32;
        let mut next = self.clone();
        let staged = next.staging.map(|s| s.generation);
        next.garbage
            .retain(|g| g.generation != live && Some(g.generation) != staged && g.from <= g.to);
        let mut plan = WritePlan::default();
        let mut left = budget;
        while left > 0 && !next.garbage.is_empty() {
            let g = &mut next.garbage[0];
            let to = g.to.min(g.from.saturating_add(left - 1));
            for n in g.from..=to {
                if let Some(no) = PageNo::new(n) {
                    plan.deletes.push(Key::Page(g.generation, no));
                }
            }
            left -= to - g.from + 1;
            if to >= g.to {
                next.garbage.remove(0);
            } else {
                g.from = to + 1;
            }
        }
        plan.puts.push((Key::Transfer, next.encode()));
        Some((next, plan))
    }
}

fn staged_garbage(s: &Staging) -> Option<Garbage> {
    (s.next > 1).then_some(Garbage {
        generation: s.generation,
        from: 1,
        to: s.next - 1,
    })
}

fn from_format_1(j: &Json) -> Result<Transfer, StoreError> {
    let bad = |why: &str| StoreError::corrupt(format!("unsupported transfer record ({why}): {j}"));
    match count_field(j, "format", u64::MAX)? {
        Some(1) => {}
        Some(f) if f > TRANSFER_FORMAT => {
            return Err(StoreError::corrupt(format!(
                "transfer record format {f}: written by a newer dosql"
            )));
        }
        _ => return Err(bad("format")),
    }
    let next_gen =
        count_field(j, "next_gen", u32::MAX as u64)?.ok_or_else(|| bad("next_gen"))? as u32;
    let generation = |v: &Json| -> Result<Generation, StoreError> {
        Generation::from_prefix(
            v.get("prefix")
                .and_then(Json::as_str)
                .ok_or_else(|| bad("prefix"))?,
        )
    };
    let u32_of = |v: &Json, f: &str| -> Result<u32, StoreError> {
        Ok(count_field(v, f, u32::MAX as u64)?.ok_or_else(|| bad(f))? as u32)
    };
    let staging = match j.get("staging") {
        None | Some(Json::Null) => None,
        Some(s) => Some(Staging {
            generation: generation(s)?,
            page_size: u32_of(s, "page_size")?,
            page_count: u32_of(s, "page_count")?,
            next: u32_of(s, "next")?,
            // Format 1 staging was never checksummed.
            checksum: 0,
        }),
    };
    let garbage = j
        .get("garbage")
        .and_then(Json::as_array)
        .ok_or_else(|| bad("garbage"))?
        .iter()
        .map(|g| {
            Ok(Garbage {
                generation: generation(g)?,
                from: u32_of(g, "from")?,
                to: u32_of(g, "to")?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Transfer {
        next_gen,
        staging,
        garbage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn format_1_reads_and_format_2_round_trips() {
        let old = json!({"format": 1, "next_gen": 3, "staging": {"id": "2", "prefix": "g2:p:", "page_size": 4096, "page_count": 9, "next": 4}, "garbage": [{"prefix": "p:", "from": 1, "to": 5}]});
        let t = Transfer::load(Some(&Value::Structured(old))).unwrap();
        assert_eq!(t.next_gen, 3);
        assert_eq!(t.staging.unwrap().generation, Generation(2));
        assert_eq!(
            t.garbage,
            vec![Garbage {
                generation: Generation(0),
                from: 1,
                to: 5
            }]
        );
        assert_eq!(t.garbage_pages(), 5);
        assert_eq!(Transfer::load(Some(&t.encode())).unwrap(), t);
        let Value::Bytes(b) = t.encode() else {
            panic!()
        };
        assert!(String::from_utf8(b).unwrap().starts_with(r#"{"format":2,"#));
        assert!(
            Transfer::load(Some(&Value::Bytes(
                br#"{"format":4,"next_gen":1,"staging":null,"garbage":[]}"#.to_vec()
            )))
            .is_err()
        );
        assert!(Transfer::load(Some(&Value::Structured(json!({"format": 1})))).is_err());
    }

    #[test]
    fn imports_on_sqlite_backed_storage_stage_row_generations_in_format_3() {
        let sqlite = StorageKind::SqliteBacked;
        let first = Generation::FIRST_ROWS.0;
        // A database whose pages are kv keys (generations 0, 1, 2 so far) moves to rows.
        let old = Transfer {
            next_gen: 3,
            ..Transfer::new()
        };
        let (t, plan) = old.begin(PageSize::DEFAULT, 2, sqlite).unwrap();
        let g = t.staging.unwrap().generation;
        assert_eq!((g.0, t.next_gen), (first + 1, first + 2));
        assert!(g.page_rows());
        let Value::Bytes(b) = &plan.puts[0].1 else {
            panic!()
        };
        assert!(String::from_utf8_lossy(b).starts_with(r#"{"format":3,"#));
        assert_eq!(Transfer::load(Some(&plan.puts[0].1)).unwrap(), t);
        let (t2, _) = t.begin(PageSize::DEFAULT, 2, sqlite).unwrap();
        assert_eq!(t2.staging.unwrap().generation.0, first + 2);
        // Classic storage never reaches a row generation; the row range has an end.
        let (c, plan) = old
            .begin(PageSize::DEFAULT, 2, StorageKind::Classic)
            .unwrap();
        assert_eq!(c.staging.unwrap().generation, Generation(3));
        let Value::Bytes(b) = &plan.puts[0].1 else {
            panic!()
        };
        assert!(String::from_utf8_lossy(b).starts_with(r#"{"format":2,"#));
        let full = Transfer {
            next_gen: first - 1,
            ..Transfer::new()
        };
        assert!(
            full.begin(PageSize::DEFAULT, 1, StorageKind::Classic)
                .is_ok()
        );
        let full = Transfer {
            next_gen: first,
            ..Transfer::new()
        };
        assert!(
            full.begin(PageSize::DEFAULT, 1, StorageKind::Classic)
                .is_err()
        );
        let full = Transfer {
            next_gen: first + crate::keys::ROW_GENERATIONS,
            ..Transfer::new()
        };
        assert!(full.begin(PageSize::DEFAULT, 1, sqlite).is_err());
        // A row generation as garbage alone (an earlier release's staging switched in over a
        // new database's rows) makes the record format 3 too.
        let rows_garbage = Transfer {
            next_gen: 4,
            staging: None,
            garbage: vec![Garbage {
                generation: Generation::FIRST_ROWS,
                from: 1,
                to: 2,
            }],
        };
        let Value::Bytes(b) = rows_garbage.encode() else {
            panic!()
        };
        assert!(String::from_utf8_lossy(&b).starts_with(r#"{"format":3,"#));
    }

    #[test]
    fn an_import_moves_through_its_states() {
        let kind = StorageKind::Classic;
        let page = |b: u8| vec![b; 4096];
        let t = Transfer::new();
        let (t, _) = t.begin(PageSize::DEFAULT, 3, kind).unwrap();
        let s = t.staging.unwrap();
        assert_eq!((s.generation, s.next), (Generation(1), 1));
        assert!(t.stage(2, vec![page(1)], kind).is_err(), "out of order");
        assert!(t.stage(1, vec![vec![1]], kind).is_err(), "not a page");
        let (t, plan) = t.stage(1, vec![page(1), page(2)], kind).unwrap();
        assert_eq!(plan.puts.len(), 3);
        assert!(
            t.switched(Generation(0), 5, false).is_err(),
            "not all pages yet"
        );
        let (t, _) = t.stage(2, vec![page(2), page(3)], kind).unwrap(); // a resend and the last
        assert!(
            t.stage(3, vec![page(3), page(4)], kind).is_err(),
            "beyond the count"
        );
        // The staged checksum counts each page once, resends included.
        let want = (1..=3u32).fold(checksum::EMPTY, |c, n| {
            checksum::toggle(c, checksum::page(n, &page(n as u8)))
        });
        assert_eq!(t.staging.unwrap().checksum, want);
        let (t, s) = t.switched(Generation(0), 5, false).unwrap();
        assert_eq!(s.page_count, 3);
        assert_eq!(
            t.garbage,
            vec![Garbage {
                generation: Generation(0),
                from: 1,
                to: 5
            }]
        );
        // A second import abandons nothing (none staged), then is aborted: its pages are garbage.
        let (t, _) = t.begin(PageSize::DEFAULT, 2, kind).unwrap();
        let (t, _) = t.stage(1, vec![page(1)], kind).unwrap();
        let (t, _) = t.abort().unwrap();
        assert_eq!(t.garbage_pages(), 6);
        assert_eq!(t.next_gen, 3);
        // Collection: a bounded share per call, never the live generation.
        let (t, plan) = t.collect(Generation(1), 1, StorageKind::Classic).unwrap();
        assert_eq!(plan.deletes.len(), 6);
        assert!(t.garbage.is_empty());
        let mut big = Transfer::new();
        big.garbage.push(Garbage {
            generation: Generation(0),
            from: 1,
            to: 300,
        });
        big.garbage.push(Garbage {
            generation: Generation(5),
            from: 1,
            to: 10,
        });
        let (big, plan) = big.collect(Generation(5), 2, StorageKind::Classic).unwrap();
        assert_eq!(plan.deletes.len(), 256);
        assert_eq!(
            big.garbage,
            vec![Garbage {
                generation: Generation(0),
                from: 257,
                to: 300
            }]
        );
    }
}
