//! [`DoStore`]: a [`PageStore`] in dosql's Durable Object layout over any [`Kv`]: the head
//! (see `head`), pages under their keys or inside the head, commits planned by `plan`, and
//! imports (see `transfer`).

use dosql_pagestore::{
    Commit, Head as PageHead, Page, PageNo, PageSize, PageStore, StoreError, codec,
};

use crate::head::{self, HEAD_FORMAT, Head};
use crate::keys::{Generation, Key};
use crate::kv::Kv;
use crate::plan::{WritePlan, place_head, plan_commit};
use crate::transfer::{Staging, Transfer};
use crate::value::{StorageKind, Value};

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
    kv: K,
    head: Head,
    /// The format the head was stored in when read (0: none; this code writes [`HEAD_FORMAT`]).
    format: u16,
    /// SQLite-backed storage: whether `meta` holds the pointer to the head row.
    pointer_stored: bool,
    /// The import record, read on first use.
    transfer: Option<Transfer>,
    /// A write failed: storage may or may not hold it, so the head is read again before it is
    /// trusted.
    uncertain: bool,
    new_page_size: PageSize,
    stats: LayoutStats,
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
            uncertain: false,
            new_page_size,
            stats: LayoutStats::default(),
        })
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
    fn settle(&mut self) -> Result<(), StoreError> {
        if self.uncertain {
            let loaded = load(&mut self.kv, self.new_page_size)?;
            self.head = loaded.head;
            self.format = loaded.format;
            self.pointer_stored = loaded.pointer_stored;
            self.transfer = None;
            self.uncertain = false;
        }
        Ok(())
    }

    /// Applies `plan`; a failure leaves the store uncertain until it reads storage again.
    fn write(&mut self, plan: &WritePlan) -> Result<(), StoreError> {
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

    fn set_transfer(&mut self, next: Transfer, plan: &WritePlan) -> Result<(), StoreError> {
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
        let (next, plan) = self.transfer()?.begin(page_size, page_count)?;
        self.set_transfer(next, &plan)?;
        Ok(self.staging().expect("begun"))
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
    /// record that turns the old generation into garbage. Readers see the old pages or the
    /// new, never a mix.
    pub fn switch_import(&mut self, generation: Generation) -> Result<&Head, StoreError> {
        let (live, count) = (self.head.generation, self.head.page_count);
        let t = self.transfer()?;
        if t.staging.map(|s| s.generation) != Some(generation) {
            return Err(StoreError::invalid(format!(
                "import {} is not in progress",
                generation.0
            )));
        }
        let (next, s) = t.switched(live, count)?;
        let page_size = PageSize::new(s.page_size)
            .ok_or_else(|| StoreError::corrupt(format!("staged page size {}", s.page_size)))?;
        let head = Head {
            page_size,
            page_count: s.page_count,
            txid: self.head.txid + 1,
            generation: s.generation,
            inline: Vec::new(),
        };
        let mut plan = WritePlan {
            puts: vec![(Key::Transfer, next.encode())],
            ..WritePlan::default()
        };
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
        Ok(&self.head)
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
        self.settle()?;
        c.validate(self.head.page_size)?;
        let values = c
            .pages
            .iter()
            .map(|(no, page)| {
                let mut v = Vec::with_capacity(page.len() / 2);
                codec::encode_page(page, &mut v);
                (*no, v)
            })
            .collect();
        let kind = self.kv.kind();
        let planned = plan_commit(&self.head, kind, self.pointer_stored, c.page_count, values)?;
        self.write(&planned.plan)?;
        self.stats.commits += 1;
        self.stats.inline_pages += planned.head.inline.len() as u64;
        self.stats.evicted_pages += planned.evicted as u64;
        self.head = planned.head;
        self.format = HEAD_FORMAT;
        self.pointer_stored |= kind == StorageKind::SqliteBacked;
        Ok(PageHead {
            page_count: self.head.page_count,
            txid: self.head.txid,
        })
    }
}
