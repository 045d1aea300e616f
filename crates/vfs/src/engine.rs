//! The safe core of the VFS: what SQLite's file operations mean for a page store.
//!
//! The main database file is the store's pages plus the current transaction's dirty pages.
//! Writes go to the dirty set only; the dirty set reaches the store as one atomic
//! [`Commit`] at SQLite's commit point, which is the first of:
//! - `SQLITE_FCNTL_COMMIT_ATOMIC_WRITE`, when SQLite uses batch-atomic writes (no journal:
//!   the transaction fit in SQLite's page cache);
//! - `SQLITE_FCNTL_SYNC` / `xSync` on the database file, the end of commit phase one in
//!   rollback-journal mode (FCNTL_SYNC arrives even with `synchronous=OFF`).
//!
//! Dirty pages that reach an unlock below RESERVED without a commit belong to a transaction
//! SQLite abandoned (an I/O error mid-transaction); they are dropped, never committed, so a
//! store never holds half a transaction. Journals and temp files are memory-only: the store
//! is never partially written, so there is never a hot journal to replay after a crash.

use std::collections::BTreeMap;

use dosql_pagestore::{Commit, Head, Page, PageNo, PageSize, PageStore};

use crate::cache::PageCache;
use crate::error::{VfsError, VfsResult};
use crate::{Stats, VfsConfig};

/// SQLite's lock levels (`SQLITE_LOCK_*`), in order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Default)]
pub(crate) enum Lock {
    #[default]
    None,
    Shared,
    Reserved,
    Pending,
    Exclusive,
}

impl Lock {
    pub(crate) fn from_sqlite(level: i32) -> Lock {
        match level {
            0 => Lock::None,
            1 => Lock::Shared,
            2 => Lock::Reserved,
            3 => Lock::Pending,
            _ => Lock::Exclusive,
        }
    }
}

/// Where SQLite asks the VFS to commit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum CommitPoint {
    /// `SQLITE_FCNTL_COMMIT_ATOMIC_WRITE`: a batch-atomic transaction, written with no journal.
    AtomicWrite,
    /// `SQLITE_FCNTL_SYNC` / `xSync` on the database: the end of a rollback-journal commit's
    /// phase one, or of a rollback (see [`DbState::is_rollback`]).
    Sync,
    /// `SQLITE_FCNTL_COMMIT_PHASETWO`: a truncation SQLite makes after its commit.
    PhaseTwo,
}

/// Lock state of one database shared by all its connections in this process, following
/// SQLite's rollback-journal locking protocol.
#[derive(Debug, Default)]
struct Locks {
    shared: u32,
    reserved: bool,
    pending: bool,
    exclusive: bool,
}

/// One attached database: its store, cache, uncommitted pages and locks.
pub(crate) struct DbState {
    store: Box<dyn PageStore>,
    size: PageSize,
    head: Head,
    /// Pages in the file as SQLite sees it now, uncommitted growth and truncation included.
    file_pages: u32,
    /// The smallest size the file had during this transaction: committed pages above it that
    /// were not written again read as zeros (a truncated file regrown is zero-filled).
    low_water: u32,
    dirty: BTreeMap<PageNo, Page>,
    cache: PageCache,
    read_ahead: u32,
    pub(crate) batch_atomic: bool,
    /// Most bytes of dirty pages a transaction may hold (VfsConfig::max_txn_bytes).
    max_txn_bytes: usize,
    locks: Locks,
    stats: Stats,
    last_error: Option<String>,
}

impl std::fmt::Debug for DbState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbState")
            .field("size", &self.size)
            .field("head", &self.head)
            .field("file_pages", &self.file_pages)
            .field("dirty", &self.dirty.len())
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl DbState {
    pub(crate) fn new(mut store: Box<dyn PageStore>, config: &VfsConfig) -> VfsResult<DbState> {
        let head = store.head().map_err(VfsError::Read)?;
        Ok(DbState {
            size: store.page_size(),
            store,
            head,
            file_pages: head.page_count,
            low_water: head.page_count,
            dirty: BTreeMap::new(),
            cache: PageCache::new(config.cache_pages),
            read_ahead: config.read_ahead,
            batch_atomic: config.batch_atomic,
            max_txn_bytes: config.max_txn_bytes,
            locks: Locks::default(),
            stats: Stats::default(),
            last_error: None,
        })
    }

    pub(crate) fn page_size(&self) -> PageSize {
        self.size
    }

    pub(crate) fn head(&self) -> Head {
        self.head
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            cached_pages: self.cache.len() as u64,
            ..self.stats
        }
    }

    pub(crate) fn set_memory_limits(&mut self, cache_pages: usize, max_txn_bytes: usize) {
        self.cache.set_capacity(cache_pages);
        self.max_txn_bytes = max_txn_bytes;
    }

    pub(crate) fn reset_stats(&mut self) {
        self.stats = Stats::default();
    }

    pub(crate) fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    pub(crate) fn take_last_error(&mut self) -> Option<String> {
        self.last_error.take()
    }

    /// Remembers `err` for [`crate::Database::last_error`] and passes it on.
    pub(crate) fn note<T>(&mut self, result: VfsResult<T>) -> VfsResult<T> {
        if let Err(e) = &result
            && e.is_failure()
        {
            self.last_error = Some(e.to_string());
        }
        result
    }

    pub(crate) fn file_size(&self) -> u64 {
        u64::from(self.file_pages) * u64::from(self.size.get())
    }

    /// The current content of page `no`: dirty, cached, or from the store (with read-ahead).
    /// `None` reads as zeros.
    fn page(&mut self, no: PageNo) -> VfsResult<Option<Page>> {
        if let Some(page) = self.dirty.get(&no) {
            return Ok(Some(page.clone()));
        }
        if no.get()
            > self
                .head
                .page_count
                .min(self.file_pages)
                .min(self.low_water)
        {
            // Beyond the committed file, or truncated in this transaction: zeros.
            return Ok(None);
        }
        if let Some(page) = self.cache.get(no) {
            self.stats.cache_hits += 1;
            return Ok(Some(page.clone()));
        }
        self.stats.cache_misses += 1;
        let last = no
            .get()
            .saturating_add(self.read_ahead)
            .min(self.head.page_count);
        let wanted: Vec<PageNo> = (no.get()..=last)
            .filter_map(PageNo::new)
            .filter(|&n| n == no || (!self.cache.contains(n) && !self.dirty.contains_key(&n)))
            .collect();
        let pages = self.store.read_pages(&wanted).map_err(VfsError::Read)?;
        self.stats.store_reads += 1;
        let mut found = None;
        for (n, page) in wanted.into_iter().zip(pages) {
            let Some(page) = page else { continue };
            if page.len() != self.size.bytes() {
                return Err(VfsError::Read(dosql_pagestore::StoreError::corrupt(
                    format!("page {n} is {} bytes; expected {}", page.len(), self.size),
                )));
            }
            self.stats.pages_read += 1;
            if n == no {
                found = Some(page.clone());
            }
            self.cache.insert(n, page);
        }
        Ok(found)
    }

    /// Reads `buf.len()` bytes at `offset`, zero-filling past the end of the file.
    pub(crate) fn read(&mut self, offset: u64, buf: &mut [u8]) -> VfsResult<()> {
        let size = self.size;
        let ps = u64::from(size.get());
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let Some(no) = PageNo::containing(at, size) else {
                buf[done..].fill(0);
                return Err(VfsError::ShortRead);
            };
            let within = (at % ps) as usize;
            let n = (size.bytes() - within).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            if no.get() > self.file_pages {
                buf[done..].fill(0);
                return Err(VfsError::ShortRead);
            }
            match self.page(no)? {
                Some(page) => out.copy_from_slice(&page[within..within + n]),
                None => out.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    /// Buffers a write of one whole page in the dirty set. SQLite writes the main database
    /// one page at a time; anything else means SQLite's page size differs from the store's
    /// (e.g. `PRAGMA page_size` + `VACUUM`), which the store cannot hold: one store page must
    /// stay one SQLite page.
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) -> VfsResult<()> {
        let size = self.size;
        if !offset.is_multiple_of(u64::from(size.get())) || data.len() != size.bytes() {
            return Err(VfsError::BadWrite(format!(
                "write of {} bytes at offset {offset} is not one {size}-byte page; this \
                 database's page size is {size}, fixed when it was created",
                data.len()
            )));
        }
        let no = PageNo::containing(offset, size).ok_or_else(|| {
            VfsError::BadWrite(format!("offset {offset} is beyond the largest page"))
        })?;
        if no == PageNo::FIRST {
            // VACUUM or a backup into this database can rewrite the header with another page
            // size while still writing in chunks of the old one; refuse that transaction.
            if let Some(header_size) = PageSize::from_header(data).filter(|&h| h != size) {
                return Err(VfsError::BadWrite(format!(
                    "the database header asks for {header_size}-byte pages; this database's \
                     page size is {size}, fixed when it was created"
                )));
            }
        }
        if !self.dirty.contains_key(&no)
            && (self.dirty.len() + 1).saturating_mul(size.bytes()) > self.max_txn_bytes
        {
            return Err(VfsError::TooLarge(format!(
                "the transaction changes more than {} KiB of pages, this database's limit \
                 (its share of the isolate's memory budget); split it into smaller transactions",
                self.max_txn_bytes / 1024
            )));
        }
        self.dirty.insert(no, Page::copy_from(data));
        self.file_pages = self.file_pages.max(no.get());
        Ok(())
    }

    /// Sets the file size, in whole pages.
    pub(crate) fn truncate(&mut self, bytes: u64) -> VfsResult<()> {
        let ps = u64::from(self.size.get());
        if !bytes.is_multiple_of(ps) {
            return Err(VfsError::BadTruncate(format!(
                "truncate to {bytes} bytes is not a whole number of {ps}-byte pages"
            )));
        }
        let pages = u32::try_from(bytes / ps)
            .map_err(|_| VfsError::BadTruncate(format!("{bytes} bytes is too large")))?;
        self.file_pages = pages;
        self.low_water = self.low_water.min(pages);
        if let Some(first_gone) = pages.checked_add(1).and_then(PageNo::new) {
            self.dirty.split_off(&first_gone);
        }
        Ok(())
    }

    /// Whether there is anything to commit.
    pub(crate) fn has_changes(&self) -> bool {
        !self.dirty.is_empty()
            || self.file_pages != self.head.page_count
            || self.low_water < self.head.page_count.min(self.file_pages)
    }

    /// Whether the dirty pages at a [`CommitPoint::Sync`] are a rollback putting committed
    /// pages back rather than a transaction's commit. A rollback of a transaction that
    /// spilled pages to the file plays the journal back into the file and syncs it, exactly
    /// like a commit; but every commit in rollback-journal mode rewrites page 1 with SQLite's
    /// file change counter (bytes 24..28) advanced, while a rollback leaves page 1 alone or
    /// puts its committed bytes back. The store still holds the state before the transaction,
    /// so a rollback commits nothing: otherwise it would be a commit that changes no content
    /// (and, for pages the cache no longer holds, rewrites them as they were).
    fn is_rollback(&mut self) -> bool {
        if self.head.page_count == 0 {
            return false;
        }
        let Some(page1) = self.dirty.get(&PageNo::FIRST).cloned() else {
            return true;
        };
        let committed = match self.cache.peek(PageNo::FIRST) {
            Some(p) => Some(p.clone()),
            // Not knowing errs on the side of committing, which is always safe.
            None => self.store.read_page(PageNo::FIRST).ok().flatten(),
        };
        committed.is_some_and(|c| c.get(24..28) == page1.get(24..28))
    }

    /// Sends the dirty pages and the file size to the store as one commit. On failure the
    /// transaction's pages are dropped and the state re-read from the store, so the database
    /// is exactly what the store holds (the state before the transaction, or after it if the
    /// store lost only the acknowledgement).
    pub(crate) fn commit(&mut self, point: CommitPoint) -> VfsResult<()> {
        if !self.has_changes() {
            return Ok(());
        }
        if point == CommitPoint::Sync && self.is_rollback() {
            self.discard();
            return Ok(());
        }
        let atomic = point == CommitPoint::AtomicWrite;
        let dirty = std::mem::take(&mut self.dirty);
        // Leave out pages identical to their committed, cached content: a rollback of a
        // transaction that spilled to the file writes the original pages back and syncs, and
        // that must not cost a store write.
        let pages: Vec<(PageNo, Page)> = dirty
            .into_iter()
            .filter(|(no, page)| {
                no.get() > self.head.page_count
                    || self
                        .cache
                        .peek(*no)
                        .is_none_or(|committed| committed != page)
            })
            .collect();
        // Committed pages that a truncation in this transaction cut off and that the file
        // regrew over without rewriting them are zeros now; the store must forget them.
        let mut pages = pages;
        let regrown = (self.low_water + 1)..=self.head.page_count.min(self.file_pages);
        if !regrown.is_empty() {
            for n in regrown {
                if let Some(no) = PageNo::new(n)
                    && !pages.iter().any(|(p, _)| *p == no)
                {
                    pages.push((no, Page::zeroed(self.size)));
                }
            }
            pages.sort_by_key(|(no, _)| *no);
        }
        if pages.is_empty() && self.file_pages == self.head.page_count {
            self.low_water = self.head.page_count;
            return Ok(());
        }
        let written = pages.len() as u64;
        // The committed contents the cache holds of pages this commit overwrites or drops:
        // stores that keep checksums and history need them and need not read them back.
        let mut known: Vec<(PageNo, Page)> = pages
            .iter()
            .map(|(no, _)| *no)
            .chain((self.file_pages + 1..=self.head.page_count).filter_map(PageNo::new))
            .filter(|no| no.get() <= self.head.page_count)
            .filter_map(|no| self.cache.peek(no).map(|p| (no, p.clone())))
            .collect();
        known.sort_unstable_by_key(|(no, _)| *no);
        let commit = Commit {
            page_count: self.file_pages,
            pages: pages.clone(),
        };
        match self.store.commit_known(commit, &known) {
            Ok(head) => {
                self.head = head;
                self.file_pages = head.page_count;
                self.low_water = head.page_count;
                self.cache.truncate(head.page_count);
                for (no, page) in pages {
                    self.cache.insert(no, page);
                }
                self.stats.commits += 1;
                self.stats.batch_commits += u64::from(atomic);
                self.stats.pages_written += written;
                Ok(())
            }
            Err(e) => {
                self.stats.failed_commits += 1;
                self.resync();
                Err(if atomic {
                    VfsError::AtomicCommit(e)
                } else {
                    VfsError::Commit(e)
                })
            }
        }
    }

    /// Forgets everything not known to be in the store.
    fn resync(&mut self) {
        self.dirty.clear();
        self.cache.clear();
        if let Ok(head) = self.store.head() {
            self.head = head;
        }
        self.file_pages = self.head.page_count;
        self.low_water = self.head.page_count;
    }

    /// Drops the uncommitted transaction (batch-atomic rollback, abandoned transactions).
    pub(crate) fn discard(&mut self) {
        if self.has_changes() {
            self.stats.discarded_transactions += 1;
        }
        self.dirty.clear();
        self.file_pages = self.head.page_count;
        self.low_water = self.head.page_count;
    }

    /// Raises the lock of a connection holding `held` to `want`.
    pub(crate) fn lock(&mut self, held: &mut Lock, want: Lock) -> VfsResult<()> {
        if *held >= want {
            return Ok(());
        }
        let l = &mut self.locks;
        match want {
            Lock::None => {}
            Lock::Shared => {
                if l.pending || l.exclusive {
                    return Err(VfsError::Busy);
                }
                l.shared += 1;
                *held = Lock::Shared;
            }
            Lock::Reserved => {
                if l.reserved || l.pending || l.exclusive {
                    return Err(VfsError::Busy);
                }
                l.reserved = true;
                *held = Lock::Reserved;
            }
            Lock::Pending | Lock::Exclusive => {
                if *held < Lock::Pending {
                    // Going straight from SHARED to EXCLUSIVE (hot-journal rollback) needs
                    // the reserved lock to be free too.
                    if l.pending || (*held < Lock::Reserved && l.reserved) {
                        return Err(VfsError::Busy);
                    }
                    l.pending = true;
                    *held = Lock::Pending;
                }
                if l.shared > 1 {
                    return Err(VfsError::Busy);
                }
                l.exclusive = true;
                *held = Lock::Exclusive;
            }
        }
        Ok(())
    }

    /// Lowers the lock of a connection holding `held` to `want` (SHARED or NONE).
    pub(crate) fn unlock(&mut self, held: &mut Lock, want: Lock) {
        if *held <= want {
            return;
        }
        if *held >= Lock::Reserved {
            if self.has_changes() {
                self.discard();
            }
            let l = &mut self.locks;
            if *held >= Lock::Pending {
                l.pending = false;
                l.exclusive = false;
            }
            // Whoever holds RESERVED or above is the only writer: the reserved flag is ours.
            l.reserved = false;
        }
        if want == Lock::None && *held >= Lock::Shared {
            self.locks.shared = self.locks.shared.saturating_sub(1);
        }
        *held = want;
    }

    /// Whether any connection holds RESERVED or above.
    pub(crate) fn reserved(&self) -> bool {
        self.locks.reserved || self.locks.pending || self.locks.exclusive
    }

    /// The store, to work on directly, when no transaction is writing (`None` otherwise).
    /// Afterwards the head is read again (work on the store may have moved it); the cache is
    /// kept unless `pages_changed`.
    pub(crate) fn with_store<R>(
        &mut self,
        pages_changed: bool,
        f: impl FnOnce(&mut dyn PageStore) -> R,
    ) -> Option<R> {
        if self.reserved() || self.has_changes() {
            return None;
        }
        let r = f(self.store.as_mut());
        if pages_changed {
            self.resync();
        } else if let Ok(head) = self.store.head() {
            self.head = head;
            self.file_pages = head.page_count;
            self.low_water = head.page_count;
        }
        Some(r)
    }
}

/// A journal or temp file: bytes in memory, gone when closed.
#[derive(Debug, Default)]
pub(crate) struct MemFile {
    data: Vec<u8>,
}

impl MemFile {
    pub(crate) fn read(&self, offset: u64, buf: &mut [u8]) -> VfsResult<()> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.data.len());
        let end = start.saturating_add(buf.len()).min(self.data.len());
        let n = end - start;
        buf[..n].copy_from_slice(&self.data[start..end]);
        if n < buf.len() {
            buf[n..].fill(0);
            return Err(VfsError::ShortRead);
        }
        Ok(())
    }

    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) -> VfsResult<()> {
        let start = usize::try_from(offset)
            .map_err(|_| VfsError::BadWrite(format!("offset {offset} is too large")))?;
        let end = start + data.len();
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[start..end].copy_from_slice(data);
        Ok(())
    }

    pub(crate) fn truncate(&mut self, size: u64) {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size < self.data.len() {
            self.data.truncate(size);
        }
    }

    pub(crate) fn size(&self) -> u64 {
        self.data.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dosql_pagestore::MemStore;

    fn state() -> DbState {
        let store = MemStore::new(PageSize::MIN);
        DbState::new(Box::new(store), &VfsConfig::default()).unwrap()
    }

    fn page_of(s: &mut DbState, n: u32) -> Vec<u8> {
        let mut buf = vec![0xAA; 512];
        s.read(u64::from(n - 1) * 512, &mut buf).unwrap();
        buf
    }

    #[test]
    fn a_truncated_then_regrown_file_reads_zeros_and_commits_them() {
        let mut s = state();
        for n in 1..=4u8 {
            s.write(u64::from(n - 1) * 512, &[n; 512]).unwrap();
        }
        s.commit(CommitPoint::PhaseTwo).unwrap();
        s.truncate(2 * 512).unwrap();
        s.truncate(4 * 512).unwrap();
        assert_eq!(
            page_of(&mut s, 3),
            vec![0; 512],
            "cut off, then regrown: zeros"
        );
        assert_eq!(page_of(&mut s, 2), vec![2; 512]);
        assert!(s.has_changes());
        s.commit(CommitPoint::PhaseTwo).unwrap();
        assert_eq!(s.head().page_count, 4);
        s.cache.clear();
        assert_eq!(
            page_of(&mut s, 4),
            vec![0; 512],
            "the store forgot the old page 4"
        );
        assert_eq!(page_of(&mut s, 1), vec![1; 512]);
    }

    #[test]
    fn reads_past_the_end_are_short_and_zero_filled() {
        let mut s = state();
        let mut buf = vec![7u8; 100];
        assert_eq!(s.read(0, &mut buf), Err(VfsError::ShortRead));
        assert_eq!(buf, vec![0; 100]);
    }

    #[test]
    fn writes_must_be_whole_pages_of_the_store_size() {
        let mut s = state();
        assert!(matches!(s.write(0, &[0; 100]), Err(VfsError::BadWrite(_))));
        assert!(matches!(s.write(10, &[0; 512]), Err(VfsError::BadWrite(_))));
        assert!(s.write(512, &[0; 512]).is_ok());
    }
}
