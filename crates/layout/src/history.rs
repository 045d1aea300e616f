//! What is read from the commit log (see `log`): the database as of an earlier txid, the list
//! of commits, restores, and the background work that keeps the log within its window and
//! finishes the checksum of a database from before checksums.

use std::collections::HashMap;

use dosql_pagestore::FixedState;

use dosql_pagestore::{Commit, Page, PageNo, PageSize, StoreError, codec};
use serde_json::{Value as Json, json};

use crate::checksum;
use crate::head::DbChecksum;
use crate::keys::{Generation, Key};
use crate::kv::Kv;
use crate::log::Header;
use crate::plan::WritePlan;
use crate::store::DoStore;
use crate::value::Value;

/// A restore rewrites at most this many pages as one commit; more (or a restore across an
/// import) copies the whole image into a new generation and switches to it.
pub const RESTORE_COMMIT_PAGES: usize = 1024;

/// Keys read or written per call (Durable Object storage's limit per call).
const PER_CALL: usize = 128;

/// The database as of an earlier txid: where each page's content is.
#[derive(Debug)]
pub struct ImageIndex {
    /// The txid rebuilt.
    pub at: u64,
    /// The head's txid it was rebuilt from (the index is good while the head stays there).
    head_txid: u64,
    /// Pages at `at`.
    pub page_count: u32,
    /// The checksum at `at`, when known.
    pub checksum: Option<u64>,
    /// When commit `at` was made (0: not known: it is older than the log).
    pub timestamp_ms: i64,
    /// Pages whose content at `at` is a pre-image: the record keeping it.
    from_log: HashMap<u32, u64, FixedState>,
    /// Pages not in `from_log` are those of this generation (a switch after `at`), or the
    /// current ones when `None`.
    fallback: Option<Generation>,
    /// The headers read, by txid.
    headers: HashMap<u64, Header, FixedState>,
}

impl ImageIndex {
    /// Pages whose content differs from the current database's, at most (all of them after
    /// a switch: `None`).
    pub fn changed_pages(&self) -> Option<Vec<u32>> {
        if self.fallback.is_some() {
            return None;
        }
        let mut v: Vec<u32> = self.from_log.keys().copied().collect();
        v.sort_unstable();
        Some(v)
    }
}

/// One commit, as `GET history` lists it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CommitInfo {
    /// Its txid.
    pub txid: u64,
    /// When it was made.
    pub timestamp_ms: i64,
    /// Pages after it.
    pub page_count: u32,
    /// Pages it wrote.
    pub pages_written: u32,
    /// The checksum after it (0: not known).
    pub checksum: u64,
    /// Where it came from, for switches and restores.
    pub note: Option<Json>,
    /// It replaced the database (an import, a restore by copy, a branch).
    pub switch: bool,
}

/// What a background step did.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Maintenance {
    /// Log records deleted.
    pub records_deleted: u64,
    /// Pages folded into a checksum being computed.
    pub pages_checksummed: u64,
    /// Garbage pages still to delete.
    pub garbage_pages: u64,
    /// There is more to do now.
    pub more: bool,
    /// When the oldest record leaves the window (ms since the epoch), if nothing is to do
    /// before.
    pub due_ms: Option<i64>,
}

/// What a restore did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Restored {
    /// The restore's own commit.
    pub txid: u64,
    /// The txid restored.
    pub from: u64,
    /// Pages after it.
    pub page_count: u32,
    /// Whether the database was replaced by a copy (a switch) rather than rewritten.
    pub switched: bool,
}

impl<K: Kv> DoStore<K> {
    /// The txids whose state can be rebuilt: `oldest..=txid`.
    pub fn window(&self) -> (u64, u64) {
        (self.head.oldest_restorable(), self.head.txid)
    }

    fn outside(&self, at: u64) -> StoreError {
        let (oldest, newest) = self.window();
        StoreError::invalid(format!(
            "txid {at} is outside the history window: txids {oldest} to {newest} can be read \
             and restored"
        ))
    }

    /// The header of log record `txid` (it must exist).
    pub(crate) fn log_header(&mut self, txid: u64) -> Result<Header, StoreError> {
        if let Some((t, b)) = &self.newest_record
            && *t == txid
        {
            return Header::decode(b, self.max_value());
        }
        match self.kv.get(&[Key::Log(txid)])?.pop().flatten() {
            Some(Value::Bytes(b)) => {
                let h = Header::decode(&b, self.max_value())?;
                if h.record.txid != txid {
                    return Err(StoreError::corrupt(format!(
                        "log record {txid} says it is {}",
                        h.record.txid
                    )));
                }
                Ok(h)
            }
            Some(Value::Structured(_)) => Err(StoreError::corrupt(format!(
                "log record {txid} is not a record"
            ))),
            None => Err(StoreError::corrupt(format!(
                "log record {txid} is missing though the head says the log keeps it"
            ))),
        }
    }

    /// Works out where the pages of the state at txid `at` are (cached while the head does
    /// not move).
    pub fn image_of(&mut self, at: u64) -> Result<&ImageIndex, StoreError> {
        let (oldest, newest) = self.window();
        if at < oldest || at > newest {
            return Err(self.outside(at));
        }
        if self
            .image
            .as_ref()
            .is_some_and(|i| i.at == at && i.head_txid == newest)
        {
            return Ok(self.image.as_ref().expect("checked"));
        }
        let mut index = ImageIndex {
            at,
            head_txid: newest,
            page_count: self.head.page_count,
            checksum: self.head.checksum.known(),
            timestamp_ms: self.head.timestamp_ms,
            from_log: HashMap::default(),
            fallback: None,
            headers: HashMap::default(),
        };
        if at >= self.head.log.oldest && at < newest {
            index.timestamp_ms = self.log_header(at)?.record.timestamp_ms;
        } else if at < newest {
            index.timestamp_ms = 0;
        }
        for t in at + 1..=newest {
            let h = self.log_header(t)?;
            if t == at + 1 {
                index.page_count = h.record.page_count_before;
                index.checksum =
                    (h.record.checksum_before != 0).then_some(h.record.checksum_before);
            }
            for (no, _, _) in &h.locations {
                index.from_log.entry(no.get()).or_insert(t);
            }
            // A switch: every page not found yet is its old generation's (the pages the
            // head carried inline, listed above, aside).
            let switched = h.record.switched_from;
            index.headers.insert(t, h);
            if let Some(g) = switched {
                index.fallback = Some(g);
                break;
            }
        }
        self.image = Some(index);
        Ok(self.image.as_ref().expect("set above"))
    }

    /// The stored values of pages `nos` as of txid `at` (`None`: zeros, or above the page
    /// count then), with the page count, checksum and timestamp of that state.
    pub fn values_at(
        &mut self,
        at: u64,
        nos: &[PageNo],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if at == self.head.txid {
            return self.stored_values(nos);
        }
        let index = self.image_of(at)?;
        enum Source {
            None,
            Current,
            Generation(Generation),
            Log(Vec<(Key, usize, usize)>),
        }
        let sources: Vec<Source> = nos
            .iter()
            .map(|no| {
                if no.get() > index.page_count {
                    return Source::None;
                }
                match index.from_log.get(&no.get()) {
                    Some(t) => {
                        let h = &index.headers[t];
                        match h.find(*no) {
                            Some(Some((offset, len))) => Source::Log(h.spans(offset, len)),
                            _ => Source::None,
                        }
                    }
                    None => match index.fallback {
                        Some(g) => Source::Generation(g),
                        None => Source::Current,
                    },
                }
            })
            .collect();
        let current: Vec<PageNo> = nos
            .iter()
            .zip(&sources)
            .filter(|(_, s)| matches!(s, Source::Current))
            .map(|(n, _)| *n)
            .collect();
        let mut current = self.stored_values(&current)?.into_iter();
        let mut keys: Vec<Key> = Vec::new();
        for (no, s) in nos.iter().zip(&sources) {
            match s {
                Source::Generation(g) => keys.push(Key::Page(*g, *no)),
                Source::Log(spans) => keys.extend(spans.iter().map(|(k, _, _)| *k)),
                _ => {}
            }
        }
        keys.sort_by_key(Key::encode);
        keys.dedup();
        let mut fetched: HashMap<Key, Vec<u8>, FixedState> =
            HashMap::with_capacity_and_hasher(keys.len(), FixedState::default());
        for chunk in keys.chunks(PER_CALL) {
            for (k, v) in chunk.iter().zip(self.kv.get(chunk)?) {
                match v {
                    Some(Value::Bytes(b)) => {
                        fetched.insert(*k, b);
                    }
                    Some(Value::Structured(_)) => {
                        return Err(StoreError::corrupt(format!("{k} holds a record")));
                    }
                    None => {}
                }
            }
        }
        let size = self.head.page_size.bytes();
        let mut out = Vec::with_capacity(nos.len());
        for (no, s) in nos.iter().zip(sources) {
            out.push(match s {
                Source::None => None,
                Source::Current => current.next().flatten(),
                Source::Generation(g) => fetched.get(&Key::Page(g, *no)).cloned(),
                Source::Log(spans) => {
                    let mut v = Vec::new();
                    for (k, from, to) in spans {
                        let bytes = fetched.get(&k).ok_or_else(|| {
                            StoreError::corrupt(format!("{k} is missing from the log"))
                        })?;
                        v.extend_from_slice(bytes.get(from..to).ok_or_else(|| {
                            StoreError::corrupt(format!("{k} is shorter than its record says"))
                        })?);
                    }
                    if v.is_empty() || v.len() > size {
                        return Err(StoreError::corrupt(format!(
                            "the pre-image of page {no} is {} bytes",
                            v.len()
                        )));
                    }
                    Some(v)
                }
            });
        }
        Ok(out)
    }

    /// The commits in the log, newest first: at most `limit`, older than `before` if given.
    pub fn history(
        &mut self,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Vec<CommitInfo>, StoreError> {
        let newest = before.map_or(self.head.txid, |b| b.saturating_sub(1).min(self.head.txid));
        let oldest = self.head.log.oldest;
        let mut out = Vec::new();
        let mut t = newest;
        while t >= oldest && t >= 1 && out.len() < limit {
            let h = self.log_header(t)?;
            let r = h.record;
            out.push(CommitInfo {
                txid: r.txid,
                timestamp_ms: r.timestamp_ms,
                page_count: r.page_count_after,
                pages_written: r.pages_written,
                checksum: r.checksum_after,
                note: r.note.clone(),
                switch: r.switched_from.is_some(),
            });
            t -= 1;
        }
        Ok(out)
    }

    /// The last txid committed at or before `timestamp_ms`, within the window.
    pub fn txid_at_time(&mut self, timestamp_ms: i64) -> Result<u64, StoreError> {
        if timestamp_ms >= self.head.timestamp_ms && self.head.timestamp_ms != 0 {
            return Ok(self.head.txid);
        }
        // Timestamps only grow along the log: binary search its records.
        let (mut lo, mut hi) = (self.head.log.oldest, self.head.txid);
        if lo > hi || self.log_header(lo)?.record.timestamp_ms > timestamp_ms {
            let (oldest, _) = self.window();
            return Err(StoreError::invalid(format!(
                "no commit at or before {timestamp_ms} ms is in the history window (it starts \
                 after txid {oldest})"
            )));
        }
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.log_header(mid)?.record.timestamp_ms <= timestamp_ms {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(lo)
    }

    /// Makes the database what it was at txid `at`, as a new commit (so that restoring to
    /// the txid before it undoes it): the pages changed since, rewritten (at most
    /// [`RESTORE_COMMIT_PAGES`]); else a copy of the whole state in a new generation, then a
    /// switch. Either way readers see the old database or the restored one, never a mix; the
    /// result's checksum must be the one the log says the state had.
    pub fn restore(&mut self, at: u64) -> Result<Restored, StoreError> {
        let note = json!({ "restore": at });
        let index = self.image_of(at)?;
        let (page_count, expected) = (index.page_count, index.checksum);
        let changed = index.changed_pages();
        let size = self.head.page_size;
        match changed {
            Some(pages) if pages.len() <= RESTORE_COMMIT_PAGES => {
                let nos: Vec<PageNo> = pages
                    .into_iter()
                    .filter(|&n| n <= page_count)
                    .filter_map(PageNo::new)
                    .collect();
                let values = self.values_at(at, &nos)?;
                let mut commit = Commit {
                    page_count,
                    pages: Vec::with_capacity(nos.len()),
                };
                for (no, v) in nos.into_iter().zip(values) {
                    let page = match v {
                        Some(v) => codec::decode_page(&v, size)?,
                        None => Page::zeroed(size),
                    };
                    commit.pages.push((no, page));
                }
                // A restored database is another line of commits (as a restore by copy,
                // an import or a branch makes): bookmarks of the old line do not name it.
                let lineage = crate::store::fresh_lineage(self.head.txid + 1);
                let planned = self.plan_as(&commit, &[], Some(note), Some(lineage))?;
                if let (Some(want), Some(got)) = (expected, planned.checksum())
                    && want != got
                {
                    return Err(StoreError::corrupt(format!(
                        "the state of txid {at} rebuilt from the log has checksum \
                         {got:016x}, not the {want:016x} recorded: nothing was restored"
                    )));
                }
                let head = self.apply_commit(planned)?;
                Ok(Restored {
                    txid: head.txid,
                    from: at,
                    page_count,
                    switched: false,
                })
            }
            _ => self.restore_by_copy(at, page_count, expected, note),
        }
    }

    /// A restore that copies the state at `at` into a new generation and switches to it.
    fn restore_by_copy(
        &mut self,
        at: u64,
        page_count: u32,
        expected: Option<u64>,
        note: Json,
    ) -> Result<Restored, StoreError> {
        let size = self.head.page_size;
        let staging = self.begin_copy(size, page_count)?;
        let mut from = 1u32;
        while from <= page_count {
            let to = page_count.min(from.saturating_add(PER_CALL as u32 - 2));
            let nos: Vec<PageNo> = (from..=to).filter_map(PageNo::new).collect();
            let values = self
                .values_at(at, &nos)?
                .into_iter()
                .map(|v| v.unwrap_or_else(|| codec::encoded(&vec![0u8; size.bytes()])))
                .collect();
            self.stage_import(staging.generation, from, values)?;
            from = to + 1;
        }
        let head = self.switch_import(staging.generation, expected, note)?;
        Ok(Restored {
            txid: head.txid,
            from: at,
            page_count,
            switched: true,
        })
    }

    /// One bounded step of background work, at most about `max_calls` storage calls: delete
    /// log records that left the window, fold pages into a checksum being computed, delete
    /// garbage pages.
    pub fn maintain(&mut self, max_calls: usize) -> Result<Maintenance, StoreError> {
        let mut m = Maintenance::default();
        let mut calls = 0usize;
        let now = (self.clock)();
        while calls < max_calls {
            let log = self.head.log;
            if log.floor < log.oldest {
                calls += self.delete_record(log.floor)?;
                m.records_deleted += 1;
                continue;
            }
            if log.oldest > self.head.txid {
                break;
            }
            let h = self.log_header(log.oldest)?;
            calls += 1;
            let h_cfg = self.history;
            let expired = !h_cfg.enabled
                || h.record.timestamp_ms < now.saturating_sub(h_cfg.retention_ms as i64)
                || log.bytes > h_cfg.max_bytes;
            if !expired {
                m.due_ms = Some(
                    h.record
                        .timestamp_ms
                        .saturating_add(h_cfg.retention_ms as i64),
                );
                break;
            }
            // Out of the window: the state before it can no longer be rebuilt.
            let mut head = self.head.clone();
            head.log.oldest += 1;
            head.log.bytes = head.log.bytes.saturating_sub(h.bytes());
            self.write_head(head)?;
            calls += 1;
        }
        if calls < max_calls
            && let DbChecksum::Partial { partial, cursor } = self.head.checksum
        {
            let last = self
                .head
                .page_count
                .min(cursor.saturating_add(PER_CALL as u32 - 1));
            let nos: Vec<PageNo> = (cursor..=last).filter_map(PageNo::new).collect();
            let values = self.stored_values(&nos)?;
            let size = self.head.page_size;
            let zeros = vec![0u8; size.bytes()];
            let mut sum = partial;
            for (no, v) in nos.iter().zip(values) {
                let s = match v {
                    Some(v) => checksum::page(no.get(), &codec::decode_page(&v, size)?),
                    None => checksum::page(no.get(), &zeros),
                };
                sum = checksum::toggle(sum, s);
            }
            let mut head = self.head.clone();
            head.checksum = if last >= head.page_count {
                DbChecksum::Known(sum)
            } else {
                DbChecksum::Partial {
                    partial: sum,
                    cursor: last + 1,
                }
            };
            m.pages_checksummed = nos.len() as u64;
            self.write_head(head)?;
            calls += 2;
        }
        if calls < max_calls {
            m.garbage_pages = self.collect_garbage(max_calls - calls)?;
        } else {
            m.garbage_pages = self.transfer()?.garbage_pages();
        }
        m.more = self.head.log.floor < self.head.log.oldest
            || matches!(self.head.checksum, DbChecksum::Partial { .. })
            || m.garbage_pages > 0
            || (m.due_ms.is_none() && self.head.log.oldest <= self.head.txid);
        if m.more {
            m.due_ms = Some(now);
        }
        Ok(m)
    }

    /// Deletes the keys of log record `txid` (below the window) and moves the floor past it;
    /// a switch's old generation becomes garbage. Returns the storage calls made.
    fn delete_record(&mut self, txid: u64) -> Result<usize, StoreError> {
        let mut head = self.head.clone();
        head.log.floor = txid + 1;
        let header = match self.kv.get(&[Key::Log(txid)])?.pop().flatten() {
            Some(Value::Bytes(b)) => Header::decode(&b, self.max_value()).ok(),
            _ => None,
        };
        let mut plan = WritePlan::default();
        if let Some(h) = &header {
            if let Some(g) = h.record.switched_from
                && g != self.head.generation
            {
                let (next, _) = self.transfer()?.discard(g, h.record.page_count_before);
                plan.puts.push((Key::Transfer, next.encode()));
                self.transfer = Some(next);
            }
            // Its parts first, the record last: a step cut short finds the record again.
            let mut keys = h.keys();
            keys.rotate_left(1);
            if keys.len() > PER_CALL {
                let (parts, _) = keys.split_at(keys.len() - PER_CALL);
                for chunk in parts.chunks(PER_CALL) {
                    let p = WritePlan {
                        deletes: chunk.iter().rev().copied().collect(),
                        ..WritePlan::default()
                    };
                    self.write(&p)?;
                }
                plan.deletes
                    .extend(keys[keys.len() - PER_CALL..].iter().copied());
            } else {
                plan.deletes.extend(keys);
            }
        } else {
            plan.deletes.push(Key::Log(txid));
        }
        self.write_with_head(plan, head)?;
        Ok(2)
    }

    /// Writes the head alone (no commit: the pages and txid stay).
    fn write_head(&mut self, head: crate::head::Head) -> Result<(), StoreError> {
        self.write_with_head(WritePlan::default(), head)
    }

    /// Starts a copy of `page_count` pages of `page_size` into a new generation (a restore).
    fn begin_copy(
        &mut self,
        page_size: PageSize,
        page_count: u32,
    ) -> Result<crate::transfer::Staging, StoreError> {
        self.begin_import_of(page_size, page_count, true)
    }

    /// Computes the database's checksum from every page, as `dosql verify` does.
    pub fn compute_checksum(&mut self) -> Result<u64, StoreError> {
        let size = self.head.page_size;
        let zeros = vec![0u8; size.bytes()];
        let mut sum = checksum::EMPTY;
        let count = self.head.page_count;
        let mut from = 1u32;
        while from <= count {
            let to = count.min(from.saturating_add(PER_CALL as u32 - 1));
            let nos: Vec<PageNo> = (from..=to).filter_map(PageNo::new).collect();
            for (no, v) in nos.iter().zip(self.stored_values(&nos)?) {
                let s = match v {
                    Some(v) => checksum::page(no.get(), &codec::decode_page(&v, size)?),
                    None => checksum::page(no.get(), &zeros),
                };
                sum = checksum::toggle(sum, s);
            }
            from = to + 1;
        }
        Ok(sum)
    }
}
