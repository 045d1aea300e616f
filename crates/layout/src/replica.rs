//! A database that follows another one commit at a time (a read replica): each of the other
//! database's commits, read as an LTX file of that one txid, becomes this database's next
//! commit, with the same txid, the same pages and page count, and the other's lineage, so
//! that both have the same checksum at every txid and a bookmark (`lineage:txid`) means the
//! same state on either. A commit is applied only when it continues this database exactly:
//! the next txid, the same page size, and (when the file carries checksums) the checksum
//! before it equal to this database's; the checksum after it must be the one the file
//! states, or nothing is written. One commit per txid keeps this database's own history
//! contiguous, so it can serve history, restores and LTX files of its own.

use dosql_pagestore::{Commit, Page, PageNo, StoreError};
use serde_json::json;

use crate::head::Head;
use crate::kv::Kv;
use crate::ltx::Ltx;
use crate::store::DoStore;

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
