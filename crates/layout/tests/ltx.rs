//! LTX files of the commit log, read back by a decoder written here from the format's
//! description (superfly/ltx `ltx.go`, `encoder.go`, `decoder.go`), not by the code that
//! writes them: every checksum verifies (the file's, over the decompressed pages, and the
//! database's before and after), the page index points at the frames, and applying a
//! snapshot then the following ranges in order reproduces the database at each of them.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use dosql_layout::{MemKv, StorageKind};
use dosql_pagestore::PageSize;

/// A file as the decoder read it.
struct Ltx {
    flags: u32,
    page_size: u32,
    commit: u32,
    min: u64,
    max: u64,
    pre_apply: u64,
    post_apply: u64,
    pages: Vec<(u32, Vec<u8>)>,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

fn uvarint(b: &[u8], at: &mut usize) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let byte = b[*at];
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

/// Decodes `file`, checking everything the format lets a reader check.
fn decode(file: &[u8]) -> Ltx {
    assert_eq!(&file[..4], b"LTX1");
    let flags = be32(&file[4..]);
    assert_eq!(flags & !0x2, 0, "only the no-checksum flag");
    let page_size = be32(&file[8..]);
    let commit = be32(&file[12..]);
    let (min, max) = (be64(&file[16..]), be64(&file[24..]));
    let pre_apply = be64(&file[40..]);
    assert!(
        file[48..100].iter().all(|&b| b == 0),
        "no WAL fields, no node id"
    );
    assert!(min >= 1 && min <= max);
    // What the file checksum covers, rebuilt as the reader goes.
    let mut covered = file[..100].to_vec();
    let mut at = 100;
    let mut pages = Vec::new();
    let mut offsets = Vec::new();
    loop {
        let frame = at;
        let no = be32(&file[at..]);
        let pflags = u16::from_be_bytes([file[at + 4], file[at + 5]]);
        covered.extend_from_slice(&file[at..at + 6]);
        at += 6;
        if no == 0 {
            assert_eq!(pflags, 0);
            break;
        }
        assert_eq!(pflags, 1, "a size and an LZ4 block");
        let len = be32(&file[at..]) as usize;
        covered.extend_from_slice(&file[at..at + 4]);
        at += 4;
        let page = lz4_flex::block::decompress(&file[at..at + len], page_size as usize).unwrap();
        assert_eq!(page.len(), page_size as usize);
        at += len;
        covered.extend_from_slice(&page);
        assert!(no <= commit, "page {no} above commit {commit}");
        assert!(
            pages.last().is_none_or(|(p, _): &(u32, Vec<u8>)| *p < no),
            "ascending pages"
        );
        assert_ne!(no, 0x4000_0000 / page_size + 1, "the lock page");
        offsets.push((no, frame as u64, (at - frame) as u64));
        pages.push((no, page));
    }
    let index_start = at;
    let mut entries = Vec::new();
    loop {
        let no = uvarint(file, &mut at);
        if no == 0 {
            break;
        }
        let offset = uvarint(file, &mut at);
        let size = uvarint(file, &mut at);
        entries.push((no as u32, offset, size));
    }
    let index_len = be64(&file[at..]);
    assert_eq!(index_len as usize, at - index_start, "the index's length");
    at += 8;
    covered.extend_from_slice(&file[index_start..at]);
    assert_eq!(entries, offsets, "the index points at the frames");
    let post_apply = be64(&file[at..]);
    covered.extend_from_slice(&file[at..at + 8]);
    let file_checksum = be64(&file[at + 8..]);
    assert_eq!(at + 16, file.len(), "the trailer ends the file");
    assert_eq!(
        file_checksum,
        crc64_iso(&covered) | 1 << 63,
        "the file checksum"
    );
    if flags & 0x2 == 0 {
        assert_ne!(post_apply, 0);
        if min == 1 {
            assert_eq!(pre_apply, 0, "a snapshot has no pre-apply checksum");
        }
    } else {
        assert_eq!((pre_apply, post_apply), (0, 0));
    }
    Ltx {
        flags,
        page_size,
        commit,
        min,
        max,
        pre_apply,
        post_apply,
        pages,
    }
}

/// Applies `ltx` to `image` as LiteFS does: the pages, then the size.
fn apply(image: &mut Vec<u8>, ltx: &Ltx) {
    let size = ltx.page_size as usize;
    let commit = ltx.commit as usize * size;
    if image.len() < commit {
        image.resize(commit, 0);
    }
    for (no, page) in &ltx.pages {
        let at = (*no as usize - 1) * size;
        image[at..at + size].copy_from_slice(page);
    }
    image.truncate(commit);
}

#[test]
fn snapshots_and_ranges_decode_verify_and_apply_to_the_database() {
    for kind in [StorageKind::SqliteBacked, StorageKind::Classic] {
        for seed in 1..=3u64 {
            let size = PageSize::new(1024).unwrap();
            let kv: Shared = Arc::new(Mutex::new(MemKv::new(kind)));
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            sql(&kv, size, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
            for _ in 0..30 {
                tick(1000);
                if rng.below(8) == 0 {
                    sql(&kv, size, "VACUUM");
                } else {
                    sql(&kv, size, &random_sql(&mut rng));
                }
            }
            let mut store = open(&kv, size);
            let (_, newest) = store.window();
            // A snapshot at a random txid, then ranges up to the head.
            let mut at = 1 + rng.below(newest / 2);
            let (file, info) = store.ltx(1, at).unwrap();
            let ltx = decode(&file);
            assert_eq!((ltx.min, ltx.max, ltx.commit), (1, at, info.commit));
            assert_eq!(
                ltx.pages.len() as u32,
                ltx.commit,
                "a snapshot holds every page"
            );
            let mut replica = Vec::new();
            apply(&mut replica, &ltx);
            assert_eq!(
                replica,
                image(&mut store, at),
                "seed {seed}: snapshot at {at}"
            );
            assert_eq!(ltx.post_apply, ltx_checksum(&replica, 1024));
            while at < newest {
                let to = (at + 1 + rng.below(5)).min(newest);
                let (file, _) = store.ltx(at + 1, to).unwrap();
                let ltx = decode(&file);
                assert_eq!((ltx.min, ltx.max), (at + 1, to));
                assert_eq!(ltx.flags, 0, "checksums known");
                assert_eq!(
                    ltx.pre_apply,
                    ltx_checksum(&replica, 1024),
                    "pre-apply of {at}"
                );
                apply(&mut replica, &ltx);
                assert_eq!(replica, image(&mut store, to), "seed {seed}: {at}..={to}");
                assert_eq!(ltx.post_apply, ltx_checksum(&replica, 1024));
                at = to;
            }
            // Outside the window or backwards: refused.
            assert!(store.ltx(0, 1).is_err());
            assert!(store.ltx(3, 2).is_err());
            assert!(store.ltx(1, newest + 1).is_err());
        }
    }
}

/// A store with a history of random commits (and VACUUMs), and its newest txid.
fn history_store(kind: StorageKind, seed: u64) -> (Shared, u64) {
    let size = PageSize::new(1024).unwrap();
    let kv: Shared = Arc::new(Mutex::new(MemKv::new(kind)));
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    sql(&kv, size, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    for _ in 0..20 {
        tick(1000);
        if rng.below(8) == 0 {
            sql(&kv, size, "VACUUM");
        } else {
            sql(&kv, size, &random_sql(&mut rng));
        }
    }
    let newest = open(&kv, size).window().1;
    (kv, newest)
}

/// The production reader (`dosql_layout::ltx::Ltx`, used by followers and backups) agrees
/// with the independent one above, reads its own encoding back the same, and refuses every
/// file with any single byte changed, unless the change left every page the same (an LZ4
/// match copying zeros from another offset of zeros: LTX checksums the decompressed pages).
#[test]
fn the_reader_agrees_and_refuses_every_corrupted_byte() {
    let size = PageSize::new(1024).unwrap();
    let (kv, newest) = history_store(StorageKind::SqliteBacked, 7);
    let mut store = open(&kv, size);
    // The smallest one-commit file, to flip each of its bytes.
    let small = (2..=newest)
        .min_by_key(|&t| store.ltx(t, t).unwrap().0.len())
        .unwrap();
    for (from, to) in [(1, newest), (small, small), (newest - 3, newest)] {
        let (file, _) = store.ltx(from, to).unwrap();
        let theirs = decode(&file);
        let ours = dosql_layout::ltx::Ltx::decode(&file).unwrap();
        assert_eq!(ours.pages, theirs.pages);
        assert_eq!(
            (
                ours.header.min_txid,
                ours.header.max_txid,
                ours.header.commit
            ),
            (theirs.min, theirs.max, theirs.commit)
        );
        assert_eq!(
            (ours.header.pre_apply, ours.post_apply),
            (theirs.pre_apply, theirs.post_apply)
        );
        // Our writer compresses pages itself; the server passes stored blocks through. The
        // two files may differ in bytes but read the same.
        let again = dosql_layout::ltx::Ltx::decode(&ours.encode().unwrap()).unwrap();
        assert_eq!(again, ours);
        if from == small {
            for i in 0..file.len() {
                let mut bad = file.clone();
                bad[i] ^= 0x01;
                if let Ok(read) = dosql_layout::ltx::Ltx::decode(&bad) {
                    assert_eq!(
                        read,
                        ours,
                        "byte {i} of {} changed, read otherwise",
                        file.len()
                    );
                }
            }
            assert!(dosql_layout::ltx::Ltx::decode(&file[..file.len() - 1]).is_err());
        }
    }
}

/// Compacting a snapshot and the following files gives the snapshot at the end: the same
/// pages as the server's own snapshot there, and its checksum.
#[test]
fn compaction_of_contiguous_files_is_the_snapshot_at_their_end() {
    use dosql_layout::ltx::Ltx as Ours;
    let size = PageSize::new(1024).unwrap();
    for kind in [StorageKind::SqliteBacked, StorageKind::Classic] {
        let (kv, newest) = history_store(kind, 11);
        let mut store = open(&kv, size);
        let mut files = vec![Ours::decode(&store.ltx(1, 3).unwrap().0).unwrap()];
        for t in 4..=newest {
            files.push(Ours::decode(&store.ltx(t, t).unwrap().0).unwrap());
        }
        let whole = Ours::decode(&store.ltx(1, newest).unwrap().0).unwrap();
        let compacted = Ours::compact(&files).unwrap();
        assert_eq!(compacted.pages, whole.pages, "{kind:?}");
        assert_eq!(compacted.header, whole.header, "{kind:?}");
        assert_eq!(compacted.post_apply, whole.post_apply);
        // Ranges compact too (not from 1: not a snapshot), and gaps are refused.
        let tail = Ours::compact(&files[2..]).unwrap();
        assert_eq!(tail.header.min_txid, 5);
        assert_eq!(tail.header.pre_apply, files[2].header.pre_apply);
        assert!(Ours::compact(&[files[0].clone(), files[2].clone()]).is_err());
    }
}

/// A file that shrinks the database between two that grow it: the compacted file gives what
/// applying the three in order gives (pages dropped by the shrink come back as zeros).
#[test]
fn compaction_across_a_shrink_gives_what_applying_in_order_gives() {
    use dosql_layout::ltx::{FLAG_NO_CHECKSUM, Ltx as Ours, LtxHeader};
    let size = 512usize;
    let page = |b: u8| vec![b; size];
    let file = |min, max, commit, pages: Vec<(u32, Vec<u8>)>| Ours {
        header: LtxHeader {
            flags: FLAG_NO_CHECKSUM,
            page_size: size as u32,
            commit,
            min_txid: min,
            max_txid: max,
            timestamp_ms: max as i64,
            pre_apply: 0,
        },
        pages,
        post_apply: 0,
    };
    let files = [
        file(2, 2, 6, vec![(1, page(1)), (5, page(5)), (6, page(6))]),
        file(3, 3, 2, vec![(1, page(11))]),
        file(4, 4, 5, vec![(3, page(33))]),
    ];
    // Applied in order to a database of 6 pages of 0xee.
    let mut image = vec![0xeeu8; 6 * size];
    let apply = |image: &mut Vec<u8>, l: &Ours| {
        image.resize(image.len().max(l.header.commit as usize * size), 0);
        for (no, p) in &l.pages {
            let at = (*no as usize - 1) * size;
            image[at..at + size].copy_from_slice(p);
        }
        image.truncate(l.header.commit as usize * size);
    };
    let mut one_by_one = image.clone();
    for f in &files {
        apply(&mut one_by_one, f);
    }
    let compacted = Ours::compact(&files).unwrap();
    apply(&mut image, &compacted);
    assert_eq!(image, one_by_one);
    assert_eq!(
        &image[3 * size..4 * size],
        &page(0)[..],
        "page 4 dropped, then zeros"
    );
    // And it survives its own encoding.
    assert_eq!(
        Ours::decode(&compacted.encode().unwrap()).unwrap(),
        compacted
    );
}

#[test]
fn the_newest_commits_file_is_built_without_reading_its_record_back_and_is_the_same() {
    use dosql_pagestore::{Commit, Page, PageNo, PageStore};
    for kind in [StorageKind::SqliteBacked, StorageKind::Classic] {
        let size = PageSize::new(1024).unwrap();
        let kv: Shared = Arc::new(Mutex::new(MemKv::new(kind)));
        let mut store = open(&kv, size);
        let page = |b: u8| Page::from(vec![b; 1024]);
        let no = |n: u32| PageNo::new(n).unwrap();
        for round in 1..=4u8 {
            tick(1000);
            // Every page of the file written or carried in the head: nothing but the record
            // would be read for the file.
            let mut pages = vec![(no(1), page(round))];
            if round % 2 == 1 {
                pages.push((no(2), page(round)));
            }
            store
                .commit(Commit {
                    page_count: 2,
                    pages,
                })
                .unwrap();
            let t = store.record().txid;
            let gets = kv.lock().unwrap().counts().get_keys;
            let (cached, _) = store.ltx(t, t).unwrap();
            assert_eq!(
                kv.lock().unwrap().counts().get_keys,
                gets,
                "{kind:?}: the newest record was read back from storage"
            );
            // A fresh store has no cache: the same file from storage.
            let (stored, _) = open(&kv, size).ltx(t, t).unwrap();
            assert_eq!(
                decode(&cached).pages,
                decode(&stored).pages,
                "{kind:?} txid {t}"
            );
            assert_eq!(cached, stored, "{kind:?} txid {t}");
            // An older commit's file still reads its record (and is right).
            if t > 1 {
                let (older, _) = store.ltx(t - 1, t - 1).unwrap();
                assert_eq!(older, open(&kv, size).ltx(t - 1, t - 1).unwrap().0);
            }
        }
    }
}
