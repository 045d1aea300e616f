//! A database that follows another one commit at a time (a read replica): each of the other
//! database's commits, read as an LTX file of that one txid, becomes this database's next
//! commit, with the same txid, the same pages and page count, and the other's lineage, so
//! that both have the same checksum at every txid and a bookmark (`lineage:txid`) means the
//! same state on either. A commit is applied only when it continues this database exactly:
//! the next txid, the same page size, and (when the file carries checksums) the checksum
//! before it equal to this database's; the checksum after it must be the one the file
//! states, or nothing is written. One commit per txid keeps this database's own history
//! contiguous, so it can serve history, restores and LTX files of its own.

use dosql_pagestore::{Commit, Page, PageNo, PageSize, StoreError, codec};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::head::Head;
use crate::keys::Key;
use crate::kv::Kv;
use crate::ltx::Ltx;
use crate::plan::WritePlan;
use crate::store::DoStore;
use crate::value::Value;

/// The format of the replication record this code writes; it refuses newer ones.
pub const REPLICATION_FORMAT: u32 = 1;

/// Pages staged per write when a replica takes a snapshot (as an import's request).
const SNAPSHOT_CHUNK_PAGES: usize = 128;

/// The replication record (`replication` key): which database this one follows, if it is a
/// read replica, and which follow it, if it is a primary. Absent: neither.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Replication {
    /// [`REPLICATION_FORMAT`].
    pub format: u32,
    /// The primary this database is a read replica of.
    #[serde(default)]
    pub primary: Option<String>,
    /// This database's read replicas.
    #[serde(default)]
    pub replicas: Vec<ReplicaEntry>,
}

/// One read replica of a primary.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReplicaEntry {
    /// Its database name.
    pub name: String,
    /// The location hint it was created with (Cloudflare's; ignored locally).
    #[serde(default)]
    pub location_hint: Option<String>,
    /// When it was attached (Unix milliseconds).
    pub added_ms: i64,
}

impl Replication {
    /// Reads the record; none stored is the default (neither a replica nor a primary).
    pub fn load(value: Option<&Value>) -> Result<Replication, StoreError> {
        let Some(v) = value else {
            return Ok(Replication {
                format: REPLICATION_FORMAT,
                ..Replication::default()
            });
        };
        let Value::Bytes(b) = v else {
            return Err(StoreError::corrupt("replication record: not bytes"));
        };
        // The format first, so that a newer record is refused for what it is.
        let format = serde_json::from_slice::<serde_json::Value>(b)
            .ok()
            .and_then(|j| j["format"].as_u64());
        match format {
            Some(f) if f == u64::from(REPLICATION_FORMAT) => serde_json::from_slice(b)
                .map_err(|e| StoreError::corrupt(format!("replication record: {e}"))),
            Some(f) => Err(StoreError::corrupt(format!(
                "replication record format {f}: written by a newer dosql (this release reads \
                 {REPLICATION_FORMAT})"
            ))),
            None => Err(StoreError::corrupt("replication record: no format")),
        }
    }

    /// The record as stored.
    pub fn encode(&self) -> Value {
        Value::Bytes(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// Why a commit was not applied (nothing was written).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Refusal {
    /// It is not the next txid: this database is at `at`.
    NotNext {
        /// This database's txid.
        at: u64,
    },
    /// It does not continue this database's state: another page size or checksum (the other
    /// database was replaced, or this one was written to): this one must be reset.
    Diverged(String),
}

impl<K: Kv> DoStore<K> {
    /// The replication record (read on first use).
    pub fn replication(&mut self) -> Result<&Replication, StoreError> {
        if self.replication.is_none() {
            let value = self.kv.get(&[Key::Replication])?.pop().flatten();
            self.replication = Some(Replication::load(value.as_ref())?);
        }
        Ok(self.replication.as_ref().expect("loaded above"))
    }

    /// The primary this database is a read replica of.
    pub fn primary(&mut self) -> Result<Option<String>, StoreError> {
        Ok(self.replication()?.primary.clone())
    }

    /// Stores `r` as the replication record, in one write.
    pub fn set_replication(&mut self, r: Replication) -> Result<(), StoreError> {
        self.settle()?;
        let plan = WritePlan {
            puts: vec![(Key::Replication, r.encode())],
            ..WritePlan::default()
        };
        plan.check(self.kv.kind())?;
        self.write(&plan)?;
        self.replication = Some(r);
        Ok(())
    }

    /// Makes this database the state a snapshot LTX file (`min_txid` 1) of its primary holds:
    /// its pages staged as an import, then switched to in one write, at the snapshot's txid
    /// and with `lineage`; its own history starts afresh there. The snapshot's checksum is
    /// checked at the switch. For a replica that is new, too far behind (the primary's
    /// history no longer has its next commit) or no longer on its primary's line of commits.
    pub fn reset_to_snapshot(&mut self, ltx: &Ltx, lineage: u64) -> Result<&Head, StoreError> {
        self.settle()?;
        let h = ltx.header;
        if !h.is_snapshot() {
            return Err(StoreError::invalid("not a snapshot LTX file"));
        }
        let size = PageSize::new(h.page_size)
            .ok_or_else(|| StoreError::invalid(format!("page size {}", h.page_size)))?;
        let staging = self.begin_import(size, h.commit.max(1))?;
        let zeros = vec![0u8; size.bytes()];
        let mut pages = ltx.pages.iter().peekable();
        let mut chunk: Vec<Vec<u8>> = Vec::with_capacity(SNAPSHOT_CHUNK_PAGES);
        let mut from = 1u32;
        for no in 1..=h.commit {
            // Pages an LTX snapshot leaves out (the lock page) read as zeros.
            let page = match pages.peek() {
                Some((n, p)) if *n == no => {
                    pages.next();
                    p.as_slice()
                }
                _ => zeros.as_slice(),
            };
            let mut v = Vec::with_capacity(page.len() / 2);
            codec::encode_page(page, &mut v);
            chunk.push(v);
            if chunk.len() == SNAPSHOT_CHUNK_PAGES || no == h.commit {
                let n = chunk.len() as u32;
                self.stage_import(staging.generation, from, std::mem::take(&mut chunk))?;
                from += n;
            }
        }
        let expected = h.has_checksums().then_some(ltx.post_apply);
        self.switch_import_as(
            staging.generation,
            expected,
            json!({ "replica": "snapshot" }),
            Some((h.max_txid, lineage)),
        )
    }

    /// Applies `ltx`, one commit (`min_txid` = `max_txid` = this database's txid + 1) of the
    /// database this one follows, whose lineage is `lineage`. `Ok(Err(_))`: refused, nothing
    /// written; `Err`: storage failed (nothing written either: the commit is one write).
    pub fn apply_ltx(
        &mut self,
        ltx: &Ltx,
        lineage: u64,
    ) -> Result<Result<&Head, Refusal>, StoreError> {
        self.settle()?;
        let h = ltx.header;
        let at = self.head.txid;
        if h.is_snapshot() && at > 0 || h.min_txid != at + 1 || h.max_txid != h.min_txid {
            return Ok(Err(Refusal::NotNext { at }));
        }
        if h.page_size != self.head.page_size.get() {
            return Ok(Err(Refusal::Diverged(format!(
                "pages of {} bytes, this database's are {}",
                h.page_size,
                self.head.page_size.get()
            ))));
        }
        if h.has_checksums()
            && !h.is_snapshot()
            && self.head.checksum.known().is_some_and(|c| c != h.pre_apply)
        {
            return Ok(Err(Refusal::Diverged(format!(
                "txid {} follows checksum {:016x}, this database has {:016x}",
                h.min_txid,
                h.pre_apply,
                self.head.checksum.value()
            ))));
        }
        let mut pages = Vec::with_capacity(ltx.pages.len());
        for (no, page) in &ltx.pages {
            let no =
                PageNo::new(*no).ok_or_else(|| StoreError::invalid("page 0 in an LTX file"))?;
            pages.push((no, Page::from(page.clone())));
        }
        let commit = Commit {
            page_count: h.commit,
            pages,
        };
        commit.validate(self.head.page_size)?;
        let planned = self.plan_as(
            &commit,
            &[],
            Some(json!({ "replica": true })),
            Some(lineage),
        )?;
        if h.has_checksums()
            && let Some(got) = planned.checksum()
            && got != ltx.post_apply
        {
            return Ok(Err(Refusal::Diverged(format!(
                "after txid {} this database would have checksum {got:016x}, the file says {:016x}",
                h.max_txid, ltx.post_apply
            ))));
        }
        self.apply_commit(planned)?;
        Ok(Ok(&self.head))
    }
}
