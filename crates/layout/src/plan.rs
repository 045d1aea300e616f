//! Write plans: what one atomic change of the database's storage puts and deletes, checked
//! against Durable Object storage's limits before anything is written, and the commit planner
//! that turns a commit's pages into one.
//!
//! A plan is applied in one synchronous stretch (no `await` between its calls), which Durable
//! Object storage applies atomically; on classic storage its puts and deletes go in calls of
//! at most 128 keys, on SQLite-backed storage one `kv.put`/`kv.delete` per key and one
//! `sql.exec` for the head row. [`WritePlan::check`] refuses a plan that any of those calls
//! would refuse, so a refused commit writes nothing.

use std::collections::HashSet;

use dosql_pagestore::{PageNo, StoreError};

use crate::head::{DbChecksum, Head, LogWindow, pointer};
use crate::keys::Key;
use crate::value::{HeadRow, StorageKind, VALUE_OVERHEAD_BYTES, Value};

/// At most this many pages ride inside the head...
pub const INLINE_MAX_PAGES: usize = 8;
/// ...of at most this many stored bytes in all. On SQLite-backed storage a value over ~1 KB
/// spills into 4 KiB overflow pages, which cost less than another key (bench/README.md); a
/// one-row commit (page 1 and a compressed leaf) fits in one.
pub const INLINE_MAX_BYTES: usize = 4096;

/// One atomic change of storage.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct WritePlan {
    /// Keys to put, with their values.
    pub puts: Vec<(Key, Value)>,
    /// Keys to delete.
    pub deletes: Vec<Key>,
    /// SQLite-backed storage: the head row to write.
    pub head_row: Option<HeadRow>,
    /// What the plan does, for the counters of whoever applies it (nothing is decided by it).
    pub notes: PlanNotes,
}

/// What a plan does, for counters.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct PlanNotes {
    /// It writes the head: a commit (or an import's switch).
    pub commit: bool,
    /// Pages the new head carries.
    pub inline_pages: u16,
    /// Pages that left the head for their keys without being rewritten.
    pub evicted_pages: u16,
}

/// The calls a plan makes, as Durable Object storage counts them.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Calls {
    /// `put` calls (classic: one per 128 keys; SQLite-backed: one per key).
    pub puts: usize,
    /// `delete` calls.
    pub deletes: usize,
    /// Head row writes (SQLite-backed).
    pub head_rows: usize,
    /// The largest value written, in bytes.
    pub max_value_bytes: usize,
    /// Every value's bytes.
    pub bytes: usize,
}

impl WritePlan {
    /// Whether the plan writes nothing.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty() && self.head_row.is_none()
    }

    /// Checks every call of the plan against `kind`'s limits and returns the calls it makes;
    /// an error names the first limit passed, and means nothing may be written.
    pub fn check(&self, kind: StorageKind) -> Result<Calls, StoreError> {
        let limits = kind.limits();
        let refuse = |why: String| StoreError::commit(format!("storage limit: {why}"));
        if self.head_row.is_some() && kind == StorageKind::Classic {
            return Err(StoreError::invalid("classic storage has no head row"));
        }
        let mut seen = HashSet::with_capacity(self.puts.len() + self.deletes.len());
        let mut calls = Calls::default();
        for (key, value) in &self.puts {
            let k = key.encode();
            if k.len() > limits.max_key_bytes {
                return Err(refuse(format!(
                    "key of {} bytes (limit {})",
                    k.len(),
                    limits.max_key_bytes
                )));
            }
            let n = value.stored_len();
            if n + VALUE_OVERHEAD_BYTES > limits.max_value_bytes {
                return Err(refuse(format!(
                    "value of {k} is {n} bytes (limit {} serialized)",
                    limits.max_value_bytes
                )));
            }
            if !seen.insert(*key) {
                return Err(StoreError::invalid(format!(
                    "{k} is written twice in one plan"
                )));
            }
            calls.max_value_bytes = calls.max_value_bytes.max(n);
            calls.bytes += n;
        }
        for key in &self.deletes {
            if !seen.insert(*key) {
                return Err(StoreError::invalid(format!(
                    "{key} is both written and deleted in one plan"
                )));
            }
        }
        if let Some(row) = &self.head_row {
            let n = row.stored_len();
            if n + VALUE_OVERHEAD_BYTES > limits.max_value_bytes {
                return Err(refuse(format!(
                    "head of {n} bytes (limit {})",
                    limits.max_value_bytes
                )));
            }
            calls.head_rows = 1;
            calls.max_value_bytes = calls.max_value_bytes.max(n);
            calls.bytes += n;
        }
        let per_call = match kind {
            StorageKind::Classic => limits.max_keys_per_call,
            StorageKind::SqliteBacked => 1,
        };
        calls.puts = self.puts.len().div_ceil(per_call);
        calls.deletes = self.deletes.len().div_ceil(per_call);
        Ok(calls)
    }
}

/// A commit, planned.
#[derive(Clone, Debug)]
pub struct CommitPlan {
    /// What to write.
    pub plan: WritePlan,
    /// The head after it.
    pub head: Head,
    /// Pages that left the head for their own keys without being rewritten.
    pub evicted: usize,
}

/// Plans the commit of `pages` (page numbers ascending, each with its stored value) and the
/// new page count onto the committed head `prev`: the commit's pages ride inside the new head
/// as far as the budget allows (the rest go under their keys), pages the previous head carried
/// and this commit does not rewrite go under their keys, pages above a shrunk count are
/// deleted, and the head gets txid + 1. On SQLite-backed storage the head is the row, and the
/// first one also puts the pointer under `meta` (`pointer_stored` says whether it is there).
/// What a commit changes besides its pages (see `store`, which works them out): the new
/// head's checksum, log window, timestamp and lineage, and the keys of its log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extras {
    /// The checksum after the commit.
    pub checksum: DbChecksum,
    /// The log window after it.
    pub log: LogWindow,
    /// The commit's timestamp.
    pub timestamp_ms: i64,
    /// The lineage after it.
    pub lineage: u64,
    /// The log record's keys written with the commit (the first; parts too when they fit).
    pub log_keys: Vec<(Key, Vec<u8>)>,
    /// Keys the commit deletes besides its pages (log records pruned with it).
    pub deletes: Vec<Key>,
}

impl Extras {
    /// Nothing besides the pages: `prev`'s checksum, log and lineage carried over (tests of
    /// page placement).
    pub fn carry(prev: &Head) -> Extras {
        Extras {
            checksum: prev.checksum,
            log: prev.log,
            timestamp_ms: prev.timestamp_ms,
            lineage: prev.lineage,
            log_keys: Vec::new(),
            deletes: Vec::new(),
        }
    }
}

/// Plans the commit of `pages` (stored values) with `page_count` pages after it, on top of
/// `prev`.
pub fn plan_commit(
    prev: &Head,
    kind: StorageKind,
    pointer_stored: bool,
    page_count: u32,
    pages: Vec<(PageNo, Vec<u8>)>,
    extras: Extras,
) -> Result<CommitPlan, StoreError> {
    let g = prev.generation;
    let mut plan = WritePlan::default();
    for (no, v) in &pages {
        if no.get() > page_count {
            return Err(StoreError::invalid(format!(
                "commit writes page {no} above its {page_count} pages"
            )));
        }
        if v.is_empty() || v.len() > prev.page_size.bytes() {
            return Err(StoreError::invalid(format!(
                "page {no}'s value is {} bytes, page size {}",
                v.len(),
                prev.page_size
            )));
        }
    }
    // The previous head's pages this commit does not rewrite leave it for their keys.
    let mut evicted = 0;
    for (no, v) in &prev.inline {
        if no.get() <= page_count && !pages.iter().any(|(n, _)| n == no) {
            plan.puts.push((Key::Page(g, *no), Value::Bytes(v.clone())));
            evicted += 1;
        }
    }
    // Over the budget, pages go under their keys in page order, page 1 last: a cold start
    // reads page 1 first, and nearly every commit rewrites it (SQLite's change counter). A
    // page 1 over the budget by itself goes first.
    let mut inline = pages;
    let mut bytes: usize = inline.iter().map(|(_, v)| v.len()).sum();
    let mut order: Vec<PageNo> = inline
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| *n != PageNo::FIRST)
        .collect();
    if let Some((_, page1)) = inline.iter().find(|(n, _)| *n == PageNo::FIRST) {
        if page1.len() > INLINE_MAX_BYTES {
            order.insert(0, PageNo::FIRST);
        } else {
            order.push(PageNo::FIRST);
        }
    }
    for no in order {
        if inline.len() <= INLINE_MAX_PAGES && bytes <= INLINE_MAX_BYTES {
            break;
        }
        let at = inline
            .iter()
            .position(|(n, _)| *n == no)
            .expect("ordered from inline");
        let (no, v) = inline.remove(at);
        bytes -= v.len();
        plan.puts.push((Key::Page(g, no), Value::Bytes(v)));
    }
    for n in page_count.saturating_add(1)..=prev.page_count {
        if let Some(no) = PageNo::new(n) {
            plan.deletes.push(Key::Page(g, no));
        }
    }
    let head = Head {
        page_size: prev.page_size,
        page_count,
        txid: prev.txid + 1,
        generation: g,
        inline,
        checksum: extras.checksum,
        log: extras.log,
        timestamp_ms: extras.timestamp_ms,
        lineage: extras.lineage,
    };
    for (key, value) in extras.log_keys {
        plan.puts.push((key, Value::Bytes(value)));
    }
    plan.deletes.extend(extras.deletes);
    place_head(&mut plan, &head, kind, pointer_stored);
    plan.notes = PlanNotes {
        commit: true,
        inline_pages: head.inline.len() as u16,
        evicted_pages: evicted.min(u16::MAX as usize) as u16,
    };
    plan.check(kind)?;
    Ok(CommitPlan {
        plan,
        head,
        evicted,
    })
}

/// Adds the write of `head` to `plan`: `meta` on classic storage; the head row (and, the
/// first time, the pointer under `meta`) on SQLite-backed storage.
pub fn place_head(plan: &mut WritePlan, head: &Head, kind: StorageKind, pointer_stored: bool) {
    match kind {
        StorageKind::Classic => plan.puts.push((Key::Meta, Value::Bytes(head.encode()))),
        StorageKind::SqliteBacked => {
            plan.head_row = Some(head.to_head_row());
            if !pointer_stored {
                plan.puts.push((Key::Meta, pointer()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Generation;
    use dosql_pagestore::PageSize;

    fn no(n: u32) -> PageNo {
        PageNo::new(n).unwrap()
    }

    fn head(count: u32, inline: Vec<(u32, usize)>) -> Head {
        Head {
            page_count: count,
            txid: 7,
            generation: Generation(0),
            inline: inline
                .into_iter()
                .map(|(n, len)| (no(n), vec![n as u8; len]))
                .collect(),
            ..Head::empty(PageSize::DEFAULT)
        }
    }

    /// A commit of pages alone.
    fn plan_pages(
        prev: &Head,
        kind: StorageKind,
        pointer_stored: bool,
        page_count: u32,
        pages: Vec<(PageNo, Vec<u8>)>,
    ) -> Result<CommitPlan, StoreError> {
        plan_commit(
            prev,
            kind,
            pointer_stored,
            page_count,
            pages,
            Extras::carry(prev),
        )
    }

    fn keys(plan: &WritePlan) -> Vec<String> {
        plan.puts.iter().map(|(k, _)| k.encode()).collect()
    }

    #[test]
    fn a_small_commit_is_the_head_alone() {
        for kind in [StorageKind::Classic, StorageKind::SqliteBacked] {
            let c = plan_pages(
                &head(2, vec![]),
                kind,
                true,
                2,
                vec![(no(1), vec![1; 100]), (no(2), vec![2; 300])],
            )
            .unwrap();
            assert_eq!(c.head.txid, 8);
            assert_eq!(c.head.inline.len(), 2);
            match kind {
                StorageKind::Classic => assert_eq!(keys(&c.plan), ["meta"]),
                StorageKind::SqliteBacked => {
                    assert!(c.plan.puts.is_empty());
                    assert!(c.plan.head_row.is_some());
                }
            }
        }
        // SQLite-backed, the first time: the pointer too.
        let c = plan_pages(
            &head(0, vec![]),
            StorageKind::SqliteBacked,
            false,
            1,
            vec![(no(1), vec![1; 10])],
        )
        .unwrap();
        assert_eq!(keys(&c.plan), ["meta"]);
    }

    #[test]
    fn pages_not_rewritten_leave_the_head_and_over_budget_pages_go_first_in_page_order() {
        let prev = head(20, vec![(1, 100), (5, 100), (9, 100)]);
        let pages: Vec<(PageNo, Vec<u8>)> =
            (1..=10).map(|n| (no(n), vec![n as u8; 1000])).collect();
        let c = plan_pages(&prev, StorageKind::Classic, true, 20, pages).unwrap();
        // Nothing evicted (1, 5, 9 are rewritten); 10 pages of 1000 bytes: keep 4 (4000
        // bytes), page 1 among them since it leaves last.
        assert_eq!(c.evicted, 0);
        assert_eq!(
            keys(&c.plan),
            [
                "p:0000000002",
                "p:0000000003",
                "p:0000000004",
                "p:0000000005",
                "p:0000000006",
                "p:0000000007",
                "meta"
            ]
        );
        let nos: Vec<u32> = c.head.inline.iter().map(|(n, _)| n.get()).collect();
        assert_eq!(nos, [1, 8, 9, 10]);
        // The next commit rewrites page 1 only: 8, 9, 10 go under their keys.
        let c2 = plan_pages(
            &c.head,
            StorageKind::Classic,
            true,
            20,
            vec![(no(1), vec![1; 50])],
        )
        .unwrap();
        assert_eq!(c2.evicted, 3);
        assert_eq!(
            keys(&c2.plan),
            ["p:0000000008", "p:0000000009", "p:0000000010", "meta"]
        );
        // A page 1 that fills the budget alone stays; one over it by itself goes first.
        let c3 = plan_pages(
            &c2.head,
            StorageKind::Classic,
            true,
            20,
            vec![(no(1), vec![1; 4096]), (no(2), vec![2; 10])],
        )
        .unwrap();
        assert_eq!(
            c3.head
                .inline
                .iter()
                .map(|(n, _)| n.get())
                .collect::<Vec<_>>(),
            [1]
        );
        let big = Head {
            page_size: PageSize::new(8192).unwrap(),
            ..head(3, vec![])
        };
        let c4 = plan_pages(
            &big,
            StorageKind::Classic,
            true,
            3,
            vec![(no(1), vec![1; 5000]), (no(2), vec![2; 10])],
        )
        .unwrap();
        assert_eq!(
            c4.head
                .inline
                .iter()
                .map(|(n, _)| n.get())
                .collect::<Vec<_>>(),
            [2]
        );
    }

    #[test]
    fn a_shrink_deletes_the_pages_above_and_drops_them_from_the_head() {
        let prev = head(6, vec![(6, 10), (2, 10)]);
        let c = plan_pages(
            &prev,
            StorageKind::SqliteBacked,
            true,
            3,
            vec![(no(1), vec![1; 10])],
        )
        .unwrap();
        let deletes: Vec<String> = c.plan.deletes.iter().map(Key::encode).collect();
        assert_eq!(deletes, ["p:0000000004", "p:0000000005", "p:0000000006"]);
        assert_eq!(
            keys(&c.plan),
            ["p:0000000002"],
            "page 2 left the head; page 6 is gone"
        );
        assert_eq!(c.head.inline.len(), 1);
    }

    #[test]
    fn generations_keep_their_prefix() {
        let mut prev = head(3, vec![]);
        prev.generation = Generation(4);
        let pages = (1..=3).map(|n| (no(n), vec![0; 3000])).collect();
        let c = plan_pages(&prev, StorageKind::Classic, true, 3, pages).unwrap();
        assert!(
            keys(&c.plan)
                .iter()
                .all(|k| k == "meta" || k.starts_with("g4:p:"))
        );
    }

    #[test]
    fn limits_are_checked_before_anything_is_written() {
        let mut plan = WritePlan::default();
        plan.puts
            .push((Key::Meta, Value::Bytes(vec![0; 128 * 1024])));
        let e = plan.check(StorageKind::Classic).unwrap_err();
        assert!(e.message().contains("storage limit"), "{e}");
        assert!(plan.check(StorageKind::SqliteBacked).is_ok());
        let mut plan = WritePlan::default();
        for n in 1..=300 {
            plan.puts
                .push((Key::Page(Generation(0), no(n)), Value::Bytes(vec![1])));
        }
        assert_eq!(plan.check(StorageKind::Classic).unwrap().puts, 3);
        assert_eq!(plan.check(StorageKind::SqliteBacked).unwrap().puts, 300);
        plan.deletes.push(Key::Page(Generation(0), no(1)));
        assert!(plan.check(StorageKind::Classic).is_err(), "put and deleted");
        let bad = plan_pages(
            &head(2, vec![]),
            StorageKind::Classic,
            true,
            1,
            vec![(no(2), vec![1])],
        );
        assert!(bad.is_err());
        let bad = plan_pages(
            &head(2, vec![]),
            StorageKind::Classic,
            true,
            2,
            vec![(no(2), vec![1; 4097])],
        );
        assert!(bad.is_err());
    }
}
