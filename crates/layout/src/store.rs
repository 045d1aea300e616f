//! [`DoStore`]: a [`PageStore`] in dosql's Durable Object layout over any [`Kv`]: the head
//! (see `head`), pages under their keys or inside the head, commits planned by `plan`, the
//! database's checksum (see `checksum`), the commit log (see `log`, and `history` for what
//! is read from it), and imports (see `transfer`).

use std::collections::HashMap;

use dosql_pagestore::{
    Commit, Head as PageHead, Page, PageNo, PageSize, PageStore, StoreError, codec,
};
use serde_json::Value as Json;

use crate::checksum;
use crate::head::{self, DbChecksum, HEAD_FORMAT, Head, LogWindow};
use crate::history::ImageIndex;
use crate::keys::{Generation, Key};
use crate::kv::Kv;
use crate::log::Record;
use crate::plan::{Extras, WritePlan, place_head, plan_commit};
use crate::transfer::{Staging, Transfer};
use crate::value::{StorageKind, VALUE_OVERHEAD_BYTES, Value};

/// Whether commits keep history, and for how long (see `log`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Commits write log records. Off: the log is emptied by the next commit and pruned.
    pub enabled: bool,
    /// Records of commits younger than this stay (ms).
    pub retention_ms: u64,
    /// At most this many bytes of records stay, the newest; a commit whose own record is
    /// bigger starts the window afresh after it.
    pub max_bytes: u64,
}

impl HistoryConfig {
    /// History kept 7 days, within 256 MiB.
    pub const DEFAULT: HistoryConfig = HistoryConfig {
        enabled: true,
        retention_ms: 7 * 24 * 3600 * 1000,
        max_bytes: 256 * 1024 * 1024,
    };
    /// No history.
    pub const OFF: HistoryConfig = HistoryConfig {
        enabled: false,
        retention_ms: 0,
        max_bytes: 0,
    };
}

impl Default for HistoryConfig {
    fn default() -> HistoryConfig {
        HistoryConfig::DEFAULT
    }
}

/// Milliseconds since the Unix epoch, from the host.
pub type Clock = fn() -> i64;

/// The system's clock (in the wasm: WASI's, the host's `Date.now()`).
pub fn system_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Bytes of old pages a commit reads at most to update the checksum; beyond it (a VACUUM
/// dropping thousands of pages), the checksum is computed again in the background rather
/// than one request reading the whole database.
pub const MAX_COMMIT_READ_BYTES: usize = 8 * 1024 * 1024;

/// Bytes of pages a commit may overwrite or drop and still keep their pre-images in the log
/// (the record is written with the commit, in memory at once); beyond it the log starts
/// afresh after the commit.
pub const MAX_RECORD_PAGE_BYTES: usize = 16 * 1024 * 1024;

/// Page checksums remembered (of pages written or read since the store opened), so that a
/// commit rewriting a recent page need not checksum its old content again.
const SUM_CACHE_PAGES: usize = 16_384;

/// What the layout did, since the store was opened.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct LayoutStats {
    /// Commits (import switches included).
    pub commits: u64,
    /// Pages commits carried inside the head rather than under their keys.
    pub inline_pages: u64,
    /// Pages that left the head for their keys in a commit that did not rewrite them.
    pub evicted_pages: u64,
}

/// A database in the Durable Object layout over `K`.
#[derive(Debug)]
pub struct DoStore<K> {
    pub(crate) kv: K,
    pub(crate) head: Head,
    /// The format the head was stored in when read (0: none; this code writes [`HEAD_FORMAT`]).
    format: u16,
    /// SQLite-backed storage: whether `meta` holds the pointer to the head row.
    pointer_stored: bool,
    /// The import record, read on first use.
    pub(crate) transfer: Option<Transfer>,
    /// The replication record ([`crate::replica`]), read on first use.
    pub(crate) replication: Option<crate::replica::Replication>,
    /// A write failed: storage may or may not hold it, so the head is read again before it is
    /// trusted.
    uncertain: bool,
    new_page_size: PageSize,
    pub(crate) stats: LayoutStats,
    pub(crate) history: HistoryConfig,
    pub(crate) clock: Clock,
    /// Checksums of pages' current content, by page number.
    sums: HashMap<u32, u64, dosql_pagestore::FixedState>,
    /// The last state rebuilt from the log (see `history`), while the head has not moved.
    pub(crate) image: Option<ImageIndex>,
    /// The first part of the log record the last commit wrote, by txid: replicas, followers
    /// and backups ask for the newest commit's LTX file right after it, and reading the record
    /// back from storage was most of that (a `_replicate` per commit in bench W3 with replicas).
    /// Set only by [`apply_commit`](Self::apply_commit) after its write; every other write
    /// forgets it.
    pub(crate) newest_record: Option<(u64, Vec<u8>)>,
}

impl<K: Kv> DoStore<K> {
    /// Opens the database `kv` holds (any format from 1 to [`HEAD_FORMAT`]), or an empty one
    /// with pages of `new_page_size` when it holds none.
    pub fn open(mut kv: K, new_page_size: PageSize) -> Result<DoStore<K>, StoreError> {
        let loaded = load(&mut kv, new_page_size)?;
        Ok(DoStore {
            kv,
            head: loaded.head,
            format: loaded.format,
            pointer_stored: loaded.pointer_stored,
            transfer: None,
            replication: None,
            uncertain: false,
            new_page_size,
            stats: LayoutStats::default(),
            // Off unless asked for: keeping history means pruning it (see `history`).
            history: HistoryConfig::OFF,
            clock: system_clock,
            sums: HashMap::default(),
            image: None,
            newest_record: None,
        })
    }

    /// Keeps history as `history` says from now on.
    pub fn with_history(mut self, history: HistoryConfig) -> DoStore<K> {
        self.history = history;
        self
    }

    /// Sets the history configuration.
    pub fn set_history(&mut self, history: HistoryConfig) {
        self.history = history;
    }

    /// The history configuration.
    pub fn history_config(&self) -> HistoryConfig {
        self.history
    }

    /// Takes the time from `clock` (tests, the wasm's host).
    pub fn with_clock(mut self, clock: Clock) -> DoStore<K> {
        self.clock = clock;
        self
    }

    /// The storage kind's largest value this layout writes (framing left out).
    pub(crate) fn max_value(&self) -> usize {
        self.kv.kind().limits().max_value_bytes - VALUE_OVERHEAD_BYTES
    }

    /// The time now, never before the last commit (timestamps in the log only grow).
    pub(crate) fn now(&self) -> i64 {
        (self.clock)().max(self.head.timestamp_ms)
    }

    /// The KV.
    pub fn kv(&self) -> &K {
        &self.kv
    }

    /// The KV, to write to it directly (tests).
    pub fn kv_mut(&mut self) -> &mut K {
        &mut self.kv
    }

    /// Gives the KV back.
    pub fn into_kv(self) -> K {
        self.kv
    }

    /// The committed head record.
    pub fn record(&self) -> &Head {
        &self.head
    }

    /// The format the head was stored in when last read: 0 for a database never committed
    /// to, [`HEAD_FORMAT`] once this code committed.
    pub fn stored_format(&self) -> u16 {
        self.format
    }

    /// What the layout did since the store was opened.
    pub fn layout_stats(&self) -> LayoutStats {
        self.stats
    }

    /// Reads the head again if a write failed, so that the store says what storage holds.
    pub(crate) fn settle(&mut self) -> Result<(), StoreError> {
        if self.uncertain {
            let loaded = load(&mut self.kv, self.new_page_size)?;
            self.head = loaded.head;
            self.format = loaded.format;
            self.pointer_stored = loaded.pointer_stored;
            self.transfer = None;
            self.replication = None;
            self.uncertain = false;
            self.sums.clear();
            self.image = None;
        }
        Ok(())
    }

    /// Applies `plan`; a failure leaves the store uncertain until it reads storage again.
    pub(crate) fn write(&mut self, plan: &WritePlan) -> Result<(), StoreError> {
        self.newest_record = None;
        self.kv.apply(plan).inspect_err(|_| self.uncertain = true)
    }

    /// The stored values (as stored: raw or compressed, see `codec`) of pages `nos`, in order;
    /// `None` for a page never stored (it reads as zeros) or above the page count.
    pub fn stored_values(&mut self, nos: &[PageNo]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.settle()?;
        let mut out: Vec<Option<Vec<u8>>> = vec![None; nos.len()];
        let mut wanted: Vec<(usize, Key)> = Vec::new();
        for (i, &no) in nos.iter().enumerate() {
            if no.get() > self.head.page_count {
                continue;
            }
            match self.head.inline_value(no) {
                Some(v) => out[i] = Some(v.to_vec()),
                None => wanted.push((i, Key::Page(self.head.generation, no))),
            }
        }
        let per_call = self.kv.kind().limits().max_keys_per_call;
        for chunk in wanted.chunks(per_call) {
            let keys: Vec<Key> = chunk.iter().map(|(_, k)| *k).collect();
            let values = self.kv.get(&keys)?;
            if values.len() != keys.len() {
                return Err(StoreError::read(format!(
                    "asked {} keys, got {} values",
                    keys.len(),
                    values.len()
                )));
            }
            for ((i, key), value) in chunk.iter().zip(values) {
                out[*i] = match value {
                    None => None,
                    Some(Value::Bytes(b)) => Some(b),
                    Some(Value::Structured(_)) => {
                        return Err(StoreError::corrupt(format!(
                            "{key} holds a record, not a page value"
                        )));
                    }
                };
            }
        }
        Ok(out)
    }

    /// The import record (read on first use).
    pub fn transfer(&mut self) -> Result<&Transfer, StoreError> {
        self.settle()?;
        if self.transfer.is_none() {
            let value = self.kv.get(&[Key::Transfer])?.pop().flatten();
            self.transfer = Some(Transfer::load(value.as_ref())?);
        }
        Ok(self.transfer.as_ref().expect("loaded above"))
    }

    pub(crate) fn set_transfer(
        &mut self,
        next: Transfer,
        plan: &WritePlan,
    ) -> Result<(), StoreError> {
        self.write(plan)?;
        self.transfer = Some(next);
        Ok(())
    }

    /// Starts an import of `page_count` pages of `page_size` under a new generation (an
    /// import already staged is abandoned).
    pub fn begin_import(
        &mut self,
        page_size: PageSize,
        page_count: u32,
    ) -> Result<Staging, StoreError> {
        self.begin_import_of(page_size, page_count, false)
    }

    /// [`DoStore::begin_import`]; a restore may copy an empty state (`allow_empty`).
    pub(crate) fn begin_import_of(
        &mut self,
        page_size: PageSize,
        page_count: u32,
        allow_empty: bool,
    ) -> Result<Staging, StoreError> {
        if page_count == 0 && !allow_empty {
            return Err(StoreError::invalid("an import has at least one page"));
        }
        let kind = self.kv.kind();
        let (next, plan) = self.transfer()?.begin(page_size, page_count, kind)?;
        self.set_transfer(next, &plan)?;
        Ok(self.staging().expect("begun"))
    }

    /// Writes `plan` with `head` as the new head, which commits nothing unless `head` says
    /// so (background work that moves the log window or the checksum's progress).
    pub(crate) fn write_with_head(
        &mut self,
        mut plan: WritePlan,
        head: Head,
    ) -> Result<(), StoreError> {
        let kind = self.kv.kind();
        place_head(&mut plan, &head, kind, self.pointer_stored);
        plan.check(kind)?;
        self.write(&plan)?;
        self.head = head;
        self.format = HEAD_FORMAT;
        self.pointer_stored |= kind == StorageKind::SqliteBacked;
        Ok(())
    }

    /// The import being staged.
    pub fn staging(&self) -> Option<Staging> {
        self.transfer.as_ref().and_then(|t| t.staging)
    }

    /// Stores `values` (stored page values) as pages `from..` of the staged import of
    /// `generation`, with the record of how far it got, in one write.
    pub fn stage_import(
        &mut self,
        generation: Generation,
        from: u32,
        values: Vec<Vec<u8>>,
    ) -> Result<Staging, StoreError> {
        let kind = self.kv.kind();
        self.refuse_keys_over_rows(generation)?;
        let t = self.transfer()?;
        if t.staging.map(|s| s.generation) != Some(generation) {
            return Err(StoreError::invalid(format!(
                "import {} is not in progress",
                generation.0
            )));
        }
        let (next, plan) = t.stage(from, values, kind)?;
        self.set_transfer(next, &plan)?;
        Ok(self.staging().expect("staged"))
    }

    /// Refuses to go on with an import an earlier release staged under kv keys once this
    /// database's pages are rows (it was first committed to by this code meanwhile): the
    /// switch would put a row generation in the history of a head those releases read, which
    /// they would read as zeros. Beginning the import again stages rows.
    fn refuse_keys_over_rows(&self, generation: Generation) -> Result<(), StoreError> {
        // txid 0: nothing committed, whatever generation a first commit would take.
        if self.head.txid > 0 && self.head.generation.page_rows() && !generation.page_rows() {
            return Err(StoreError::invalid(format!(
                "import {} was staged under kv keys by an earlier release, and this \
                 database's pages are rows now: begin the import again",
                generation.0
            )));
        }
        Ok(())
    }

    /// Drops the staged import (its pages become garbage); false when none was staged.
    pub fn abort_import(&mut self) -> Result<bool, StoreError> {
        match self.transfer()?.abort() {
            None => Ok(false),
            Some((next, plan)) => {
                self.set_transfer(next, &plan)?;
                Ok(true)
            }
        }
    }

    /// Makes the staged import of `generation` (all its pages stored) the database: the head
    /// moves to its generation, page size and page count with txid + 1, in one write with the
    /// import record. Readers see the old pages or the new, never a mix. With history, the
    /// switch is a log record whose pre-images are the old generation (kept until the record
    /// leaves the log); without, the old generation becomes garbage at once. `expected`: the
    /// checksum the importer computed (refused if the staged pages do not have it); `note`:
    /// where the database came from, for the log.
    pub fn switch_import(
        &mut self,
        generation: Generation,
        expected: Option<u64>,
        note: Json,
    ) -> Result<&Head, StoreError> {
        self.switch_import_as(generation, expected, note, None)
    }

    /// [`DoStore::switch_import`]; `at`: the txid and lineage the database takes (a read
    /// replica taking its primary's state), which starts its history afresh (the txids
    /// between are the primary's, never this database's).
    pub(crate) fn switch_import_as(
        &mut self,
        generation: Generation,
        expected: Option<u64>,
        note: Json,
        at: Option<(u64, u64)>,
    ) -> Result<&Head, StoreError> {
        let (live, count) = (self.head.generation, self.head.page_count);
        if let Some((txid, _)) = at
            && txid <= self.head.txid
        {
            return Err(StoreError::invalid(format!(
                "txid {txid} is not after this database's {}",
                self.head.txid
            )));
        }
        let keep = self.history.enabled && at.is_none();
        self.refuse_keys_over_rows(generation)?;
        let t = self.transfer()?;
        if t.staging.map(|s| s.generation) != Some(generation) {
            return Err(StoreError::invalid(format!(
                "import {} is not in progress",
                generation.0
            )));
        }
        let (mut next, s) = t.switched(live, count, keep)?;
        let page_size = PageSize::new(s.page_size)
            .ok_or_else(|| StoreError::corrupt(format!("staged page size {}", s.page_size)))?;
        let checksum = match s.checksum {
            0 => DbChecksum::Partial {
                partial: checksum::EMPTY,
                cursor: 1,
            },
            c => DbChecksum::Known(c),
        };
        if let (Some(want), Some(got)) = (expected, checksum.known())
            && want != got
        {
            return Err(StoreError::invalid(format!(
                "the staged pages' checksum is {got:016x}, not the {want:016x} the importer \
                 computed: pages were lost or changed on the way; nothing was switched"
            )));
        }
        let prev = self.head.clone();
        let now = self.now();
        let txid = at.map_or(prev.txid + 1, |(t, _)| t);
        let mut plan = WritePlan::default();
        let (log, record_keys) = if at.is_some() {
            (LogWindow::restarted(&prev, txid), Vec::new())
        } else if keep {
            let record = Record {
                txid,
                timestamp_ms: now,
                page_count_before: prev.page_count,
                page_count_after: s.page_count,
                checksum_before: prev.checksum.known().unwrap_or(0),
                checksum_after: checksum.known().unwrap_or(0),
                switched_from: Some(live),
                pages_written: s.page_count,
                note: Some(note),
                // The old generation's keys hold every page but those the head carried
                // inline, whose keys may be older: those are kept here.
                pre_images: {
                    let mut v: Vec<(PageNo, Option<Vec<u8>>)> = prev
                        .inline
                        .iter()
                        .map(|(n, v)| (*n, Some(v.clone())))
                        .collect();
                    v.sort_unstable_by_key(|(n, _)| *n);
                    v
                },
            };
            let enc = record.encode(self.max_value())?;
            (self.log_after(&prev, Some(enc.bytes)), enc.keys)
        } else {
            (self.log_after(&prev, None), Vec::new())
        };
        if keep && log.oldest > txid {
            // The log started afresh: nothing keeps the old generation.
            let (n, _) = next.discard(live, count);
            next = n;
        }
        let head = Head {
            page_size,
            page_count: s.page_count,
            txid,
            generation: s.generation,
            inline: Vec::new(),
            checksum,
            log,
            timestamp_ms: now,
            lineage: at.map_or_else(|| fresh_lineage(txid), |(_, l)| l),
        };
        plan.puts.push((Key::Transfer, next.encode()));
        for (k, v) in record_keys.into_iter().filter(|_| log.oldest <= txid) {
            plan.puts.push((k, Value::Bytes(v)));
        }
        let kind = self.kv.kind();
        place_head(&mut plan, &head, kind, self.pointer_stored);
        plan.notes.commit = true;
        plan.check(kind)?;
        self.write(&plan)?;
        self.transfer = Some(next);
        self.head = head;
        self.format = HEAD_FORMAT;
        self.pointer_stored |= kind == StorageKind::SqliteBacked;
        self.stats.commits += 1;
        self.sums.clear();
        self.image = None;
        Ok(&self.head)
    }

    /// The log window after a commit on top of `prev` whose record takes `record` bytes
    /// (`None`: it writes none).
    pub(crate) fn log_after(&self, prev: &Head, record: Option<u64>) -> LogWindow {
        let txid = prev.txid + 1;
        match record {
            Some(bytes) if bytes <= self.history.max_bytes => LogWindow {
                oldest: prev.log.oldest,
                floor: prev.log.floor,
                bytes: prev.log.bytes + bytes,
            },
            // No record (history off), or one bigger than the whole window: nothing before
            // this commit can be rebuilt any more. The records left are pruned later.
            _ => LogWindow::restarted(prev, txid),
        }
    }

    /// Deletes up to `max_calls` calls' worth of garbage keys; returns the pages still to
    /// delete.
    pub fn collect_garbage(&mut self, max_calls: usize) -> Result<u64, StoreError> {
        let live = self.head.generation;
        let kind = self.kv.kind();
        if let Some((next, plan)) = self.transfer()?.collect(live, max_calls, kind) {
            self.set_transfer(next, &plan)?;
        }
        Ok(self.transfer()?.garbage_pages())
    }
}

/// The largest newest log record kept in memory ([`DoStore::newest_record`]).
const NEWEST_RECORD_MAX_BYTES: usize = 256 * 1024;

/// A commit worked out, ready to write.
pub(crate) struct Planned {
    plan: WritePlan,
    head: Head,
    evicted: usize,
    /// Checksums of the pages written.
    sums: Vec<(u32, u64)>,
}

impl Planned {
    /// The database's checksum after the commit, when known.
    pub(crate) fn checksum(&self) -> Option<u64> {
        self.head.checksum.known()
    }
}

/// What a commit overwrites or drops: a page's old stored value (`None`: it read as zeros)
/// and checksum.
struct Old {
    value: Option<Vec<u8>>,
    sum: Option<u64>,
}

impl<K: Kv> DoStore<K> {
    /// Works out commit `c` on top of the head: its pages' stored values, the checksum, the
    /// log record, the new head. `known`: old contents the caller has (saves reads);
    /// `note`: said in the log record (a restore).
    pub(crate) fn plan(
        &mut self,
        c: &Commit,
        known: &[(PageNo, Page)],
        note: Option<Json>,
    ) -> Result<Planned, StoreError> {
        self.plan_as(c, known, note, None)
    }

    /// [`plan`](Self::plan), the new head taking `lineage` when given (a replica takes its
    /// primary's).
    pub(crate) fn plan_as(
        &mut self,
        c: &Commit,
        known: &[(PageNo, Page)],
        note: Option<Json>,
        lineage: Option<u64>,
    ) -> Result<Planned, StoreError> {
        let prev = self.head.clone();
        let size = prev.page_size;
        let txid = prev.txid + 1;
        let zeros = vec![0u8; size.bytes()];
        // The pages whose old content matters: those rewritten and those dropped.
        let mut touched: Vec<PageNo> = c
            .pages
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| n.get() <= prev.page_count)
            .collect();
        touched.extend((c.page_count + 1..=prev.page_count).filter_map(PageNo::new));
        touched.sort_unstable();
        let keep = self.history.enabled
            && touched.len().saturating_mul(size.bytes()) <= MAX_RECORD_PAGE_BYTES;
        let old = self.old_contents(&touched, known, keep)?;
        // The checksum: old pages out, new pages in (pages the file grew by without being
        // written are zeros, and count too).
        let mut sum = prev.checksum;
        let mut sums = Vec::with_capacity(c.pages.len());
        match &old {
            Some(old) => {
                let mut value = sum.value();
                for (no, o) in touched.iter().zip(old) {
                    if sum.covers(no.get()) {
                        value = checksum::toggle(value, o.sum.expect("asked for covered pages"));
                    }
                }
                for (no, page) in &c.pages {
                    let s = checksum::page(no.get(), page);
                    sums.push((no.get(), s));
                    if sum.covers(no.get()) {
                        value = checksum::toggle(value, s);
                    }
                }
                for n in prev.page_count + 1..=c.page_count {
                    if sum.covers(n) && c.pages.binary_search_by_key(&n, |(p, _)| p.get()).is_err()
                    {
                        value = checksum::toggle(value, checksum::page(n, &zeros));
                    }
                }
                sum = sum.with_value(value);
                if let DbChecksum::Partial { partial, cursor } = sum
                    && cursor > c.page_count
                {
                    sum = DbChecksum::Known(partial);
                }
            }
            // Too many old pages to read in one commit: computed again in the background.
            None => {
                sum = DbChecksum::Partial {
                    partial: checksum::EMPTY,
                    cursor: 1,
                };
            }
        }
        let values: Vec<(PageNo, Vec<u8>)> = c
            .pages
            .iter()
            .map(|(no, page)| {
                let mut v = Vec::with_capacity(page.len() / 2);
                codec::encode_page(page, &mut v);
                (*no, v)
            })
            .collect();
        let now = self.now();
        let (log, log_keys) = match (&old, keep) {
            (Some(old), true) => {
                let record = Record {
                    txid,
                    timestamp_ms: now,
                    page_count_before: prev.page_count,
                    page_count_after: c.page_count,
                    checksum_before: prev.checksum.known().unwrap_or(0),
                    checksum_after: sum.known().unwrap_or(0),
                    switched_from: None,
                    pages_written: c.pages.len() as u32,
                    note,
                    // Every page written or dropped: the old ones with their pre-images, the
                    // new ones (above the old count) without, so that the record also says
                    // which pages the commit wrote (LTX files and replicas need that).
                    pre_images: {
                        let mut v: Vec<(PageNo, Option<Vec<u8>>)> = touched
                            .iter()
                            .zip(old)
                            .map(|(no, o)| (*no, o.value.clone()))
                            .collect();
                        v.extend(
                            c.pages
                                .iter()
                                .filter(|(n, _)| n.get() > prev.page_count)
                                .map(|(n, _)| (*n, None)),
                        );
                        v.sort_unstable_by_key(|(n, _)| *n);
                        v
                    },
                };
                let enc = record.encode(self.max_value())?;
                let log = self.log_after(&prev, Some(enc.bytes));
                let keys = if log.oldest <= txid {
                    enc.keys
                } else {
                    Vec::new()
                };
                (log, keys)
            }
            _ => (self.log_after(&prev, None), Vec::new()),
        };
        let extras = Extras {
            checksum: sum,
            log,
            timestamp_ms: now,
            lineage: match lineage {
                Some(l) => l,
                None if prev.lineage == 0 => fresh_lineage(txid),
                None => prev.lineage,
            },
            log_keys,
            deletes: Vec::new(),
        };
        let kind = self.kv.kind();
        let planned = plan_commit(
            &prev,
            kind,
            self.pointer_stored,
            c.page_count,
            values,
            extras,
        )?;
        Ok(Planned {
            plan: planned.plan,
            head: planned.head,
            evicted: planned.evicted,
            sums,
        })
    }

    /// Writes a planned commit.
    pub(crate) fn apply_commit(&mut self, mut p: Planned) -> Result<PageHead, StoreError> {
        self.write(&p.plan)?;
        let txid = p.head.txid;
        // Moved out of the written plan, not copied; a big record (a big commit's pre-images)
        // is not kept: memory outside SQLite's heap limit, for a file few would ask for.
        self.newest_record = p.plan.puts.iter_mut().find_map(|(k, v)| match (k, v) {
            (Key::Log(t), Value::Bytes(b)) if *t == txid && b.len() <= NEWEST_RECORD_MAX_BYTES => {
                Some((txid, std::mem::take(b)))
            }
            _ => None,
        });
        let kind = self.kv.kind();
        self.stats.commits += 1;
        self.stats.inline_pages += p.head.inline.len() as u64;
        self.stats.evicted_pages += p.evicted as u64;
        self.head = p.head;
        self.format = HEAD_FORMAT;
        self.pointer_stored |= kind == StorageKind::SqliteBacked;
        self.image = None;
        if self.sums.len() + p.sums.len() > SUM_CACHE_PAGES {
            self.sums.clear();
        }
        self.sums.retain(|&n, _| n <= self.head.page_count);
        self.sums.extend(p.sums);
        Ok(PageHead {
            page_count: self.head.page_count,
            txid: self.head.txid,
        })
    }

    /// The old content of `touched` pages: a checksum for each one the database checksum
    /// covers, and with `values` the stored value of each. From what is at hand first (the
    /// head's inline values, remembered checksums, `known` contents), then storage. `None`
    /// when that would read more than [`MAX_COMMIT_READ_BYTES`].
    fn old_contents(
        &mut self,
        touched: &[PageNo],
        known: &[(PageNo, Page)],
        values: bool,
    ) -> Result<Option<Vec<Old>>, StoreError> {
        let size = self.head.page_size;
        let state = self.head.checksum;
        let covers = move |no: PageNo| state.covers(no.get());
        let hint = |no: PageNo| {
            known
                .binary_search_by_key(&no, |(n, _)| *n)
                .ok()
                .map(|i| &known[i].1)
        };
        let mut out: Vec<Old> = Vec::with_capacity(touched.len());
        let mut reads: Vec<(usize, PageNo)> = Vec::new();
        for (i, &no) in touched.iter().enumerate() {
            let inline = self.head.inline_value(no);
            let cached = self.sums.get(&no.get()).copied();
            let h = hint(no);
            let mut o = Old {
                value: None,
                sum: None,
            };
            if covers(no) {
                o.sum = cached.or_else(|| h.map(|p| checksum::page(no.get(), p)));
            }
            if values {
                o.value = match (inline, h) {
                    (Some(v), _) => Some(v.to_vec()),
                    (None, Some(p)) => Some(codec::encoded(p)),
                    (None, None) => None,
                };
            }
            let need_sum = covers(no) && o.sum.is_none();
            let need_value = values && o.value.is_none();
            if need_sum && let Some(v) = inline {
                o.sum = Some(checksum::page(no.get(), &codec::decode_page(v, size)?));
            } else if need_sum || need_value {
                reads.push((i, no));
            }
            out.push(o);
        }
        if reads.len().saturating_mul(size.bytes()) > MAX_COMMIT_READ_BYTES {
            return Ok(None);
        }
        let nos: Vec<PageNo> = reads.iter().map(|(_, n)| *n).collect();
        let stored = self.stored_values(&nos)?;
        let zeros = vec![0u8; size.bytes()];
        for ((i, no), v) in reads.into_iter().zip(stored) {
            let o = &mut out[i];
            if o.sum.is_none() && covers(no) {
                o.sum = Some(match &v {
                    Some(v) => checksum::page(no.get(), &codec::decode_page(v, size)?),
                    None => checksum::page(no.get(), &zeros),
                });
            }
            if values && o.value.is_none() {
                o.value = v;
            }
        }
        // A page whose stored value is raw zeros reads as zeros: keep it as "absent".
        Ok(Some(out))
    }
}

/// A new lineage: random (the platform's randomness through the hasher's keys), never 0.
pub(crate) fn fresh_lineage(txid: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(txid);
    h.finish().max(1)
}

/// Reads the head: SQLite-backed storage's row when there is one (then it is the head,
/// whatever `meta` holds), else `meta`.
fn load<K: Kv>(kv: &mut K, new_page_size: PageSize) -> Result<head::Loaded, StoreError> {
    let kind = kv.kind();
    let row = match kind {
        StorageKind::SqliteBacked => kv.head_row()?,
        StorageKind::Classic => None,
    };
    let meta = match row {
        Some(_) => None,
        None => kv.get(&[Key::Meta])?.pop().flatten(),
    };
    head::load(kind, row.as_ref(), meta.as_ref(), new_page_size)
}

impl<K: Kv + Send + 'static> PageStore for DoStore<K> {
    fn page_size(&self) -> PageSize {
        self.head.page_size
    }

    fn head(&mut self) -> Result<PageHead, StoreError> {
        self.settle()?;
        Ok(PageHead {
            page_count: self.head.page_count,
            txid: self.head.txid,
        })
    }

    fn read_page(&mut self, no: PageNo) -> Result<Option<Page>, StoreError> {
        Ok(self.read_pages(&[no])?.pop().flatten())
    }

    fn read_pages(&mut self, nos: &[PageNo]) -> Result<Vec<Option<Page>>, StoreError> {
        let size = self.head.page_size;
        self.stored_values(nos)?
            .into_iter()
            .map(|v| v.map(|v| codec::decode_page(&v, size)).transpose())
            .collect()
    }

    fn commit(&mut self, c: Commit) -> Result<PageHead, StoreError> {
        self.commit_known(c, &[])
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }

    fn commit_known(
        &mut self,
        c: Commit,
        known: &[(PageNo, Page)],
    ) -> Result<PageHead, StoreError> {
        self.settle()?;
        c.validate(self.head.page_size)?;
        // A read replica changes only by its primary's commits (`apply_ltx`): SQL that got
        // past the SQL policy's read-only mode (a VACUUM) writes nothing.
        if let Some(primary) = self.primary()? {
            return Err(StoreError::invalid(format!(
                "this database is a read replica of {primary}; writes go to the primary"
            )));
        }
        let planned = self.plan(&c, known, None)?;
        self.apply_commit(planned)
    }
}
