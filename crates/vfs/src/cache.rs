//! A bounded cache of clean (committed) pages, evicting with the CLOCK algorithm: one
//! "recently used" bit per slot instead of an LRU list, so a hit costs a hash lookup and a
//! bit set, never a list splice.

use std::collections::HashMap;

use dosql_pagestore::{Page, PageNo};

#[derive(Debug)]
struct Slot {
    no: PageNo,
    page: Page,
    referenced: bool,
}

/// Up to `capacity` pages.
#[derive(Debug)]
pub(crate) struct PageCache {
    capacity: usize,
    slots: Vec<Slot>,
    index: HashMap<PageNo, usize, dosql_pagestore::FixedState>,
    hand: usize,
}

impl PageCache {
    pub(crate) fn new(capacity: usize) -> PageCache {
        PageCache {
            capacity,
            slots: Vec::new(),
            index: HashMap::default(),
            hand: 0,
        }
    }

    pub(crate) fn get(&mut self, no: PageNo) -> Option<&Page> {
        let &i = self.index.get(&no)?;
        let slot = self.slots.get_mut(i)?;
        slot.referenced = true;
        Some(&slot.page)
    }

    /// Like `get`, without counting as a use.
    pub(crate) fn peek(&self, no: PageNo) -> Option<&Page> {
        self.slots.get(*self.index.get(&no)?).map(|s| &s.page)
    }

    pub(crate) fn contains(&self, no: PageNo) -> bool {
        self.index.contains_key(&no)
    }

    pub(crate) fn insert(&mut self, no: PageNo, page: Page) {
        if self.capacity == 0 {
            return;
        }
        if let Some(&i) = self.index.get(&no) {
            if let Some(slot) = self.slots.get_mut(i) {
                slot.page = page;
                slot.referenced = true;
            }
            return;
        }
        if self.slots.len() < self.capacity {
            self.index.insert(no, self.slots.len());
            self.slots.push(Slot {
                no,
                page,
                referenced: true,
            });
            return;
        }
        // Sweep: clear referenced bits until an unreferenced slot turns up. Terminates within
        // two turns of the clock because every pass clears the bit it looked at.
        loop {
            self.hand %= self.slots.len();
            let slot = &mut self.slots[self.hand];
            if slot.referenced {
                slot.referenced = false;
                self.hand += 1;
                continue;
            }
            self.index.remove(&slot.no);
            *slot = Slot {
                no,
                page,
                referenced: true,
            };
            self.index.insert(no, self.hand);
            self.hand += 1;
            return;
        }
    }

    /// Drops every page numbered above `page_count` (after a commit that shrank the file).
    pub(crate) fn truncate(&mut self, page_count: u32) {
        if self.slots.iter().all(|s| s.no.get() <= page_count) {
            return;
        }
        self.slots.retain(|s| s.no.get() <= page_count);
        self.reindex();
    }

    /// Holds at most `capacity` pages from now on, dropping pages not recently used (by the
    /// clock's order) when it holds more.
    pub(crate) fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        if self.slots.len() <= capacity {
            return;
        }
        // Keep recently used pages first, then the others, in clock order from the hand.
        let hand = self.hand % self.slots.len().max(1);
        let mut slots = std::mem::take(&mut self.slots);
        slots.rotate_left(hand);
        slots.sort_by_key(|s| !s.referenced);
        slots.truncate(capacity);
        slots.shrink_to_fit();
        self.slots = slots;
        self.reindex();
        self.index.shrink_to_fit();
    }

    pub(crate) fn clear(&mut self) {
        self.slots.clear();
        self.index.clear();
        self.hand = 0;
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    fn reindex(&mut self) {
        self.index = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.no, i))
            .collect();
        self.hand = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dosql_pagestore::PageSize;

    fn no(n: u32) -> PageNo {
        PageNo::new(n).unwrap()
    }

    #[test]
    fn holds_at_most_capacity_and_keeps_hot_pages() {
        let mut cache = PageCache::new(3);
        let page = Page::zeroed(PageSize::MIN);
        for n in 1..=3 {
            cache.insert(no(n), page.clone());
        }
        // A full sweep clears every bit, then page 1 is evicted first; touch 2 afterwards.
        cache.insert(no(4), page.clone());
        assert!(!cache.contains(no(1)));
        assert!(cache.get(no(2)).is_some());
        cache.insert(no(5), page.clone());
        assert_eq!(cache.len(), 3);
        assert!(
            cache.contains(no(2)),
            "the page touched since the last sweep stays"
        );
        assert!(!cache.contains(no(3)));
    }

    #[test]
    fn truncate_drops_high_pages() {
        let mut cache = PageCache::new(8);
        for n in 1..=6 {
            cache.insert(no(n), Page::zeroed(PageSize::MIN));
        }
        cache.truncate(3);
        assert_eq!(cache.len(), 3);
        assert!(cache.get(no(4)).is_none());
        assert!(cache.get(no(3)).is_some());
        cache.insert(no(7), Page::zeroed(PageSize::MIN));
        assert!(cache.contains(no(7)));
    }

    #[test]
    fn shrinking_keeps_recently_used_pages() {
        let mut cache = PageCache::new(8);
        for n in 1..=8 {
            cache.insert(no(n), Page::zeroed(PageSize::MIN));
        }
        // A sweep clears every bit; then pages 3 and 6 are used again.
        cache.insert(no(9), Page::zeroed(PageSize::MIN));
        cache.get(no(3));
        cache.get(no(6));
        cache.set_capacity(3);
        assert_eq!(cache.len(), 3);
        assert!(cache.contains(no(3)) && cache.contains(no(6)) && cache.contains(no(9)));
        cache.insert(no(10), Page::zeroed(PageSize::MIN));
        assert_eq!(cache.len(), 3);
        cache.set_capacity(5);
        cache.insert(no(11), Page::zeroed(PageSize::MIN));
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let mut cache = PageCache::new(0);
        cache.insert(no(1), Page::zeroed(PageSize::MIN));
        assert!(cache.get(no(1)).is_none());
    }
}
