//! A SQLite database file as fixed-size pages behind one small trait, [`PageStore`].
//!
//! SQLite sees a file; the dosql VFS turns that file into pages and hands them to a store.
//! The store only needs two operations: read a page, and commit a set of pages together
//! with the new database size atomically. This crate has the trait, the domain types, an
//! in-memory store ([`MemStore`], the reference), a fault-injecting wrapper ([`FaultStore`]),
//! the contract every store keeps ([`contract`]) and how a page is stored ([`codec`]). The
//! Durable Object layout, and the durable local store that holds the same records, are
//! `dosql-layout`'s `DoStore`.
//!
//! Pages are numbered from 1 ([`PageNo`]), like SQLite numbers them.

#![forbid(unsafe_code)]

mod error;
mod fault;
mod image;
mod mem;
mod types;

pub mod codec;
pub mod contract;

pub use error::{ErrorKind, StoreError};
pub use fault::{Fault, FaultPlan, FaultStore};
pub use image::{SQLITE_MAGIC, commit_from_image, image_of};
pub use mem::MemStore;
pub use types::{Commit, Head, Page, PageNo, PageSize};

/// The hasher of the maps a database's open and reads make, keyed by page numbers, txids and
/// database names (the page cache's index, the store's checksum sums, the history's indexes,
/// the VFS's registry): fixed keys, so that making one draws no randomness. `std`'s default
/// draws the thread's keys from the platform when the first map is made, and a spare instance
/// opens a database at module scope (`dosql_prime`), where Workers forbid random values.
/// What these maps hold is bounded by the database and the cache, and chosen by the code, not
/// a client's bytes: predictable hashing there costs no denial of service.
pub type FixedState = std::hash::BuildHasherDefault<std::hash::DefaultHasher>;

/// Storage for one database's pages.
///
/// # Contract
/// Every implementation behaves as follows; [`contract::run_all`] checks it.
/// - The page size is fixed for the store's life: every page read or committed is exactly
///   [`page_size`](PageStore::page_size) bytes.
/// - [`head`](PageStore::head) reports the last successful commit: the page count and the
///   commit counter (0 for a store that was never committed to).
/// - Reading a page numbered above the page count, or one the store never received (a hole
///   left by growing the page count), returns `Ok(None)`: the caller reads it as zeros.
/// - [`commit`](PageStore::commit) is atomic: after it returns `Ok`, every page of the commit,
///   the new page count and `txid + 1` are durable (as durable as the store is) and visible to
///   reads; pages above the new count are gone. After it returns `Err`, nothing changed: reads
///   return what they returned before. A store that cannot tell whether a commit landed (a
///   lost acknowledgement) must say so with an error and re-read its state on the next
///   [`head`](PageStore::head), so callers re-synchronise through `head`.
/// - A malformed commit (see [`Commit::validate`]) is refused with
///   [`ErrorKind::Invalid`] and changes nothing.
/// - Errors never leave the store unusable: the next call may succeed.
///
/// A store is owned by one database handle at a time; it need not be safe to use from two
/// handles (Durable Objects have exactly one writer in the world, and the VFS serialises).
pub trait PageStore: Send + 'static {
    /// The store's page size.
    fn page_size(&self) -> PageSize;

    /// The state left by the last successful commit.
    fn head(&mut self) -> Result<Head, StoreError>;

    /// The contents of page `no`, or `None` if it reads as zeros (beyond the page count, or
    /// never written).
    fn read_page(&mut self, no: PageNo) -> Result<Option<Page>, StoreError>;

    /// Several pages at once, in the order asked, for read-ahead. Stores whose backend has a
    /// batch read (Durable Object `get([...])`) override it; the default reads one by one.
    fn read_pages(&mut self, nos: &[PageNo]) -> Result<Vec<Option<Page>>, StoreError> {
        nos.iter().map(|&no| self.read_page(no)).collect()
    }

    /// Applies `commit` atomically and returns the new head.
    fn commit(&mut self, commit: Commit) -> Result<Head, StoreError>;

    /// [`PageStore::commit`], told the committed contents the caller knows of pages the
    /// commit overwrites or drops (`known`, sorted by page number; any subset). Stores that
    /// keep checksums or history need old contents and use these instead of reading them
    /// back; the contents must be what the store holds. The default ignores them.
    fn commit_known(
        &mut self,
        commit: Commit,
        known: &[(PageNo, Page)],
    ) -> Result<Head, StoreError> {
        let _ = known;
        self.commit(commit)
    }

    /// The store as `Any`, for callers that know its concrete type and use more of it than
    /// this trait (the Durable Object's history); `None` by default.
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
}

impl<S: PageStore + ?Sized> PageStore for Box<S> {
    fn page_size(&self) -> PageSize {
        (**self).page_size()
    }
    fn head(&mut self) -> Result<Head, StoreError> {
        (**self).head()
    }
    fn read_page(&mut self, no: PageNo) -> Result<Option<Page>, StoreError> {
        (**self).read_page(no)
    }
    fn read_pages(&mut self, nos: &[PageNo]) -> Result<Vec<Option<Page>>, StoreError> {
        (**self).read_pages(nos)
    }
    fn commit(&mut self, commit: Commit) -> Result<Head, StoreError> {
        (**self).commit(commit)
    }
    fn commit_known(
        &mut self,
        commit: Commit,
        known: &[(PageNo, Page)],
    ) -> Result<Head, StoreError> {
        (**self).commit_known(commit, known)
    }
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        (**self).as_any_mut()
    }
}
