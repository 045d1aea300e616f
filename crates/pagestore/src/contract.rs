//! The contract every [`PageStore`] must keep, as one test suite to run against each store.
//!
//! Call [`run_all`] from a test with a function that makes a fresh, empty store. The checks
//! panic with a message naming the broken rule, like assertions.

use crate::{Commit, ErrorKind, Head, Page, PageNo, PageSize, PageStore};

fn no(n: u32) -> PageNo {
    PageNo::new(n).expect("test page numbers are non-zero")
}

fn page(size: PageSize, fill: u8) -> Page {
    Page::from(vec![fill; size.bytes()])
}

fn read(store: &mut dyn PageStore, n: u32) -> Option<Vec<u8>> {
    store
        .read_page(no(n))
        .unwrap_or_else(|e| panic!("reading page {n}: {e}"))
        .map(|p| p.to_vec())
}

/// Runs every check, each on a fresh store from `new_store`.
pub fn run_all(new_store: &mut dyn FnMut() -> Box<dyn PageStore>) {
    empty_store_reads_nothing(new_store().as_mut());
    commit_then_read(new_store().as_mut());
    holes_read_as_none(new_store().as_mut());
    truncate_drops_pages(new_store().as_mut());
    invalid_commit_changes_nothing(new_store().as_mut());
    batch_read_matches_single_reads(new_store().as_mut());
}

/// A new store has no pages and txid 0.
pub fn empty_store_reads_nothing(store: &mut dyn PageStore) {
    assert_eq!(
        store.head().expect("head"),
        Head::default(),
        "a new store's head"
    );
    assert_eq!(read(store, 1), None, "page 1 of an empty store");
}

/// Committed pages read back; txid counts commits; later commits overwrite.
pub fn commit_then_read(store: &mut dyn PageStore) {
    let size = store.page_size();
    let head = store
        .commit(Commit {
            page_count: 2,
            pages: vec![(no(1), page(size, 1)), (no(2), page(size, 2))],
        })
        .expect("first commit");
    assert_eq!(
        head,
        Head {
            page_count: 2,
            txid: 1
        }
    );
    assert_eq!(store.head().expect("head"), head, "head after a commit");
    assert_eq!(read(store, 1), Some(vec![1; size.bytes()]));
    assert_eq!(read(store, 2), Some(vec![2; size.bytes()]));
    assert_eq!(read(store, 3), None, "a page above the count");
    let head = store
        .commit(Commit {
            page_count: 2,
            pages: vec![(no(2), page(size, 9))],
        })
        .expect("second commit");
    assert_eq!(head.txid, 2, "txid counts commits");
    assert_eq!(
        read(store, 1),
        Some(vec![1; size.bytes()]),
        "untouched page kept"
    );
    assert_eq!(
        read(store, 2),
        Some(vec![9; size.bytes()]),
        "page overwritten"
    );
}

/// Growing the page count without writing the pages in between leaves holes reading `None`.
pub fn holes_read_as_none(store: &mut dyn PageStore) {
    let size = store.page_size();
    store
        .commit(Commit {
            page_count: 5,
            pages: vec![(no(1), page(size, 1)), (no(5), page(size, 5))],
        })
        .expect("commit with a hole");
    assert_eq!(read(store, 3), None, "a hole");
    assert_eq!(read(store, 5), Some(vec![5; size.bytes()]));
}

/// Lowering the page count drops the pages above it, and growing it again does not bring
/// them back.
pub fn truncate_drops_pages(store: &mut dyn PageStore) {
    let size = store.page_size();
    let pages = (1..=4).map(|n| (no(n), page(size, n as u8))).collect();
    store
        .commit(Commit {
            page_count: 4,
            pages,
        })
        .expect("commit 4 pages");
    store
        .commit(Commit {
            page_count: 2,
            pages: vec![],
        })
        .expect("truncate to 2");
    assert_eq!(store.head().expect("head").page_count, 2);
    assert_eq!(read(store, 3), None, "page 3 after truncation");
    store
        .commit(Commit {
            page_count: 4,
            pages: vec![],
        })
        .expect("grow to 4");
    assert_eq!(read(store, 4), None, "a dropped page must not come back");
    assert_eq!(read(store, 2), Some(vec![2; size.bytes()]));
}

/// A malformed commit is refused whole with `ErrorKind::Invalid`.
pub fn invalid_commit_changes_nothing(store: &mut dyn PageStore) {
    let size = store.page_size();
    store
        .commit(Commit {
            page_count: 1,
            pages: vec![(no(1), page(size, 1))],
        })
        .expect("first commit");
    let bad = [
        Commit {
            page_count: 2,
            pages: vec![(no(2), page(size, 2)), (no(1), Page::from(vec![0; 3]))],
        },
        Commit {
            page_count: 1,
            pages: vec![(no(1), page(size, 7)), (no(2), page(size, 2))],
        },
        Commit {
            page_count: 2,
            pages: vec![(no(2), page(size, 7)), (no(1), page(size, 2))],
        },
    ];
    for commit in bad {
        let err = store
            .commit(commit.clone())
            .expect_err("malformed commit accepted");
        assert_eq!(err.kind(), ErrorKind::Invalid, "{commit:?}: {err}");
        assert_eq!(
            store.head().expect("head"),
            Head {
                page_count: 1,
                txid: 1
            }
        );
        assert_eq!(read(store, 1), Some(vec![1; size.bytes()]));
        assert_eq!(read(store, 2), None);
    }
}

/// `read_pages` agrees with `read_page`, in the order asked.
pub fn batch_read_matches_single_reads(store: &mut dyn PageStore) {
    let size = store.page_size();
    store
        .commit(Commit {
            page_count: 3,
            pages: vec![(no(1), page(size, 1)), (no(3), page(size, 3))],
        })
        .expect("commit");
    let got: Vec<Option<Vec<u8>>> = store
        .read_pages(&[no(3), no(2), no(1), no(9)])
        .expect("batch read")
        .into_iter()
        .map(|p| p.map(|p| p.to_vec()))
        .collect();
    assert_eq!(
        got,
        vec![
            Some(vec![3; size.bytes()]),
            None,
            Some(vec![1; size.bytes()]),
            None
        ]
    );
}
