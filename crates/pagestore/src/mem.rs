//! The in-memory store: a map from page number to page. Lost when dropped.

use std::collections::BTreeMap;

use crate::{Commit, Head, Page, PageNo, PageSize, PageStore, StoreError};

/// Pages in a `BTreeMap`. Clone it to snapshot a database (pages are shared, not copied).
#[derive(Clone, Debug)]
pub struct MemStore {
    size: PageSize,
    head: Head,
    pages: BTreeMap<PageNo, Page>,
}

impl MemStore {
    /// An empty store with pages of `size`.
    pub fn new(size: PageSize) -> MemStore {
        MemStore {
            size,
            head: Head::default(),
            pages: BTreeMap::new(),
        }
    }

    /// How many pages the store holds (holes are not counted).
    pub fn stored_pages(&self) -> usize {
        self.pages.len()
    }
}

impl PageStore for MemStore {
    fn page_size(&self) -> PageSize {
        self.size
    }

    fn head(&mut self) -> Result<Head, StoreError> {
        Ok(self.head)
    }

    fn read_page(&mut self, no: PageNo) -> Result<Option<Page>, StoreError> {
        Ok(self.pages.get(&no).cloned())
    }

    fn commit(&mut self, commit: Commit) -> Result<Head, StoreError> {
        commit.validate(self.size)?;
        if let Some(first_dropped) = commit.page_count.checked_add(1).and_then(PageNo::new) {
            self.pages.split_off(&first_dropped);
        }
        self.pages.extend(commit.pages);
        self.head = Head {
            page_count: commit.page_count,
            txid: self.head.txid + 1,
        };
        Ok(self.head)
    }
}
