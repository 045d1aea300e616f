//! A database following another one commit at a time (`DoStore::apply_ltx`): after each of
//! the primary's commits (random SQL, VACUUMs that shrink the file, a restore, an import),
//! the replica applies that txid's LTX file and then has the same image, checksum and
//! lineage at every txid; a gap, a duplicate, a diverged state and a wrong checksum are
//! refused with nothing written.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use dosql_layout::ltx::Ltx;
use dosql_layout::replica::Refusal;
use dosql_layout::{MemKv, StorageKind};
use dosql_pagestore::{PageSize, codec};
use serde_json::json;

fn follow(primary: &Shared, replica: &Shared, size: PageSize) {
    let mut p = open(primary, size);
    let mut r = open(replica, size);
    let lineage = p.record().lineage;
    while r.record().txid < p.record().txid {
        let t = r.record().txid + 1;
        let ltx = Ltx::decode(&p.ltx(t, t).unwrap().0).unwrap();
        r.apply_ltx(&ltx, lineage).unwrap().unwrap();
        assert_eq!(
            r.record().checksum.known(),
            p.image_of(t).unwrap().checksum,
            "txid {t}"
        );
    }
    assert_eq!(r.record().lineage, p.record().lineage);
    let (rt, pt) = (r.record().txid, p.record().txid);
    assert_eq!(image(&mut r, rt), image(&mut p, pt));
}

#[test]
fn a_replica_applies_every_commit_and_matches_at_every_txid() {
    for kind in [StorageKind::SqliteBacked, StorageKind::Classic] {
        let size = PageSize::new(1024).unwrap();
        let primary: Shared = Arc::new(Mutex::new(MemKv::new(kind)));
        let replica: Shared = Arc::new(Mutex::new(MemKv::new(kind)));
        let mut rng = Rng(0x5EED ^ kind as u64);
        sql(
            &primary,
            size,
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)",
        );
        for step in 0..40 {
            tick(1000);
            match rng.below(10) {
                0 => sql(&primary, size, "VACUUM"),
                _ => sql(&primary, size, &random_sql(&mut rng)),
            }
            if step % 3 == 0 {
                follow(&primary, &replica, size);
            }
        }
        // A restore on the primary, then an import: both reach the replica as commits.
        {
            let mut p = open(&primary, size);
            p.restore(5).unwrap();
        }
        follow(&primary, &replica, size);
        {
            let mut p = open(&primary, size);
            let st = p.begin_import(size, 3).unwrap();
            let values = (1..=3u8).map(|b| codec::encoded(&vec![b; 1024])).collect();
            p.stage_import(st.generation, 1, values).unwrap();
            p.switch_import(st.generation, None, json!({"import": 3}))
                .unwrap();
        }
        follow(&primary, &replica, size);
        // The replica's own history rebuilds every txid as the primary's does.
        let (mut p, mut r) = (open(&primary, size), open(&replica, size));
        for t in 1..=p.record().txid {
            assert_eq!(image(&mut r, t), image(&mut p, t), "{kind:?} txid {t}");
        }
    }
}

#[test]
fn what_does_not_continue_the_replica_is_refused_and_changes_nothing() {
    let size = PageSize::new(1024).unwrap();
    let primary: Shared = Arc::new(Mutex::new(MemKv::new(StorageKind::SqliteBacked)));
    let replica: Shared = Arc::new(Mutex::new(MemKv::new(StorageKind::SqliteBacked)));
    sql(&primary, size, "CREATE TABLE t(x)");
    for i in 0..5 {
        sql(&primary, size, &format!("INSERT INTO t VALUES ({i})"));
    }
    let mut p = open(&primary, size);
    let lineage = p.record().lineage;
    let file =
        |p: &mut dosql_layout::DoStore<Shared>, t| Ltx::decode(&p.ltx(t, t).unwrap().0).unwrap();
    let mut r = open(&replica, size);
    // A gap: txid 2 before 1.
    let two = file(&mut p, 2);
    assert_eq!(
        r.apply_ltx(&two, lineage).unwrap(),
        Err(Refusal::NotNext { at: 0 })
    );
    r.apply_ltx(&file(&mut p, 1), lineage).unwrap().unwrap();
    // A duplicate.
    assert_eq!(
        r.apply_ltx(&file(&mut p, 1), lineage).unwrap(),
        Err(Refusal::NotNext { at: 1 })
    );
    // A file whose stated checksum after is wrong.
    let mut bad = two.clone();
    bad.post_apply ^= 0x10;
    assert!(matches!(
        r.apply_ltx(&bad, lineage).unwrap(),
        Err(Refusal::Diverged(_))
    ));
    // A file that follows another state.
    let mut other = two.clone();
    other.header.pre_apply ^= 0x10;
    assert!(matches!(
        r.apply_ltx(&other, lineage).unwrap(),
        Err(Refusal::Diverged(_))
    ));
    let before = (r.record().clone(), image(&mut r, 1));
    assert_eq!(r.record().txid, 1, "nothing written");
    drop(r);
    let mut r = open(&replica, size);
    assert_eq!((r.record().clone(), image(&mut r, 1)), before);
    r.apply_ltx(&two, lineage).unwrap().unwrap();
    assert_eq!(r.record().txid, 2);
}

/// A replica that is new, or too far behind its primary's history, takes a snapshot: the
/// primary's pages at its txid, with its lineage and checksum; its history starts there, and
/// the primary's next commits continue it. While it is a replica, SQL cannot commit to it.
#[test]
fn a_snapshot_resets_a_replica_and_commits_continue_it() {
    use dosql_layout::replica::Replication;
    for kind in [StorageKind::SqliteBacked, StorageKind::Classic] {
        let size = PageSize::new(1024).unwrap();
        let primary: Shared = Arc::new(Mutex::new(MemKv::new(kind)));
        let replica: Shared = Arc::new(Mutex::new(MemKv::new(kind)));
        let mut rng = Rng(0xC0FFEE ^ kind as u64);
        sql(
            &primary,
            size,
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)",
        );
        for _ in 0..300 {
            sql(&primary, size, &random_sql(&mut rng));
        }
        {
            let mut r = open(&replica, size);
            let mut rec = r.replication().unwrap().clone();
            rec.primary = Some("p".into());
            r.set_replication(rec).unwrap();
        }
        // Its own SQL cannot commit (the store refuses, whatever the SQL policy let by).
        let refused = std::panic::catch_unwind(|| sql(&replica, size, "CREATE TABLE x(y)"));
        assert!(refused.is_err(), "{kind:?}: a replica took a commit");
        for round in 0..2 {
            let mut p = open(&primary, size);
            let (t, lineage) = (p.record().txid, p.record().lineage);
            let snap = Ltx::decode(&p.ltx(1, t).unwrap().0).unwrap();
            let mut r = open(&replica, size);
            r.reset_to_snapshot(&snap, lineage).unwrap();
            assert_eq!(r.record().txid, t);
            assert_eq!(r.record().lineage, lineage);
            assert_eq!(r.record().checksum.known(), p.record().checksum.known());
            assert_eq!(image(&mut r, t), image(&mut p, t), "{kind:?} round {round}");
            // Behind again, by more than one commit: the next snapshot jumps over them.
            drop((p, r));
            for _ in 0..5 {
                sql(&primary, size, &random_sql(&mut rng));
            }
        }
        follow(&primary, &replica, size);
        // The record survives reopening; a newer format is refused, not misread.
        let mut r = open(&replica, size);
        assert_eq!(r.primary().unwrap().as_deref(), Some("p"));
        let newer = dosql_layout::Value::Bytes(br#"{"format": 2, "primary": "p"}"#.to_vec());
        assert!(Replication::load(Some(&newer)).is_err());
        let now = r.record().txid;
        let same = Ltx::decode(&open(&primary, size).ltx(1, now).unwrap().0).unwrap();
        let stale = r.reset_to_snapshot(&same, 1);
        assert!(
            stale.is_err(),
            "a snapshot not after the replica's txid is refused"
        );
    }
}
