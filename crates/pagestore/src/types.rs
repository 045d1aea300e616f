//! Domain types: page numbers, page sizes, pages, commits.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;

/// A 1-based page number, as SQLite numbers pages: page 1 holds the database header and
/// starts at byte offset 0 of the file. Page 0 does not exist, so the type cannot hold it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageNo(NonZeroU32);

impl PageNo {
    /// Page 1, the page holding the database header.
    pub const FIRST: PageNo = PageNo(NonZeroU32::MIN);

    /// `None` for 0.
    pub const fn new(n: u32) -> Option<PageNo> {
        match NonZeroU32::new(n) {
            Some(n) => Some(PageNo(n)),
            None => None,
        }
    }

    /// The page number as SQLite and the storage keys spell it.
    pub const fn get(self) -> u32 {
        self.0.get()
    }

    /// The page that holds byte `offset` of a file with pages of `size`.
    pub fn containing(offset: u64, size: PageSize) -> Option<PageNo> {
        let index = offset / u64::from(size.get());
        u32::try_from(index + 1).ok().and_then(PageNo::new)
    }

    /// Byte offset of the page's first byte in the database file.
    pub fn offset(self, size: PageSize) -> u64 {
        u64::from(self.get() - 1) * u64::from(size.get())
    }
}

impl fmt::Debug for PageNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PageNo({})", self.get())
    }
}

impl fmt::Display for PageNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}

/// A SQLite page size: a power of two from 512 to 65536 bytes. Fixed when a store is created.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PageSize(u32);

impl PageSize {
    /// SQLite's default page size.
    pub const DEFAULT: PageSize = PageSize(4096);
    /// Smallest size SQLite accepts.
    pub const MIN: PageSize = PageSize(512);
    /// Largest size SQLite accepts.
    pub const MAX: PageSize = PageSize(65536);

    /// `None` unless `bytes` is a power of two in 512..=65536.
    pub const fn new(bytes: u32) -> Option<PageSize> {
        if bytes >= Self::MIN.0 && bytes <= Self::MAX.0 && bytes.is_power_of_two() {
            Some(PageSize(bytes))
        } else {
            None
        }
    }

    /// Size in bytes.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Size in bytes, as a length.
    pub const fn bytes(self) -> usize {
        self.0 as usize
    }

    /// The page size recorded in a SQLite database header (bytes 16-17, big-endian, where 1
    /// means 65536). `None` if `header` is too short or holds no valid size.
    pub fn from_header(header: &[u8]) -> Option<PageSize> {
        let raw = u16::from_be_bytes([*header.get(16)?, *header.get(17)?]);
        let bytes = if raw == 1 { 65536 } else { u32::from(raw) };
        PageSize::new(bytes)
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The bytes of one page. Cheap to clone (shared, immutable), so a page can sit in a cache
/// and in a commit at once without copying.
#[derive(Clone, PartialEq, Eq)]
pub struct Page(Arc<[u8]>);

impl Page {
    /// A page holding a copy of `bytes`.
    pub fn copy_from(bytes: &[u8]) -> Page {
        Page(Arc::from(bytes))
    }

    /// A page of `size` zero bytes.
    pub fn zeroed(size: PageSize) -> Page {
        Page(Arc::from(vec![0u8; size.bytes()]))
    }

    /// The page's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for a zero-length page (never valid in a store; useful in checks).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Page {
    fn from(v: Vec<u8>) -> Page {
        Page(Arc::from(v))
    }
}

impl std::ops::Deref for Page {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Page({} bytes)", self.0.len())
    }
}

/// The committed state of a store: how many pages the database has and how many commits
/// produced it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Head {
    /// Pages in the database; the database file is `page_count * page_size` bytes.
    pub page_count: u32,
    /// Commit counter: 0 for a new store, +1 for every successful commit.
    pub txid: u64,
}

/// One atomic change to a store: new contents for some pages and the new database size.
#[derive(Clone, Debug, Default)]
pub struct Commit {
    /// Pages in the database after the commit. Pages above it are dropped; pages between the
    /// old count and this one that `pages` does not hold read as zeros.
    pub page_count: u32,
    /// New page contents, each exactly one page long and numbered at most `page_count`.
    /// Sorted by page number so stores can write in key order.
    pub pages: Vec<(PageNo, Page)>,
}

impl Commit {
    /// Checks the commit against a store's page size: every page is `size` long, numbered at
    /// most `page_count`, and no page number repeats. Stores call this before changing
    /// anything, so a malformed commit is refused whole.
    pub fn validate(&self, size: PageSize) -> Result<(), crate::StoreError> {
        let mut prev: Option<PageNo> = None;
        for (no, page) in &self.pages {
            if page.len() != size.bytes() {
                return Err(crate::StoreError::invalid(format!(
                    "page {no} is {} bytes; this store's pages are {size} bytes",
                    page.len()
                )));
            }
            if no.get() > self.page_count {
                return Err(crate::StoreError::invalid(format!(
                    "page {no} is beyond the commit's page count {}",
                    self.page_count
                )));
            }
            if prev.is_some_and(|p| p >= *no) {
                return Err(crate::StoreError::invalid(format!(
                    "commit pages are not in strictly increasing order at page {no}"
                )));
            }
            prev = Some(*no);
        }
        Ok(())
    }
}
