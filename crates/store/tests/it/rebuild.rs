//! The index is rebuilt from the packs alone: tombstones honoured, damage reported, tails cut.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;

use triad_store::{OpenError, Problem, Store};

use crate::common::{blob, create, fill, open, small_packs, vault};

#[test]
fn rebuild_restores_every_blob_and_honours_tombstones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let config = small_packs();
    let mut store = create(&path, &config);
    fill(&mut store, 0..40);
    for n in [3, 17, 25] {
        assert!(store.remove(blob(n).id()).expect("remove"));
    }
    store.commit().expect("commit");
    // Removed, then put again: present after the rebuild.
    assert!(store.put(&blob(17)).expect("put again"));
    fill(&mut store, 40..45);
    let damaged = store.blobs().expect("blobs").into_iter().find(|i| i.id == blob(30).id());
    let damaged = damaged.expect("indexed");
    let stats_before = store.stats().expect("stats");
    drop(store);

    // Damage one blob's bytes, and leave a torn tail on the newest pack.
    let damaged_pack = path.join("packs").join(format!("{:08x}.pack", damaged.location.pack));
    let file = OpenOptions::new().read(true).write(true).open(&damaged_pack).expect("open");
    file.write_all_at(b"rot", damaged.location.offset + 10).expect("write");
    let mut packs: Vec<_> = std::fs::read_dir(path.join("packs"))
        .expect("packs")
        .map(|e| e.expect("entry").path())
        .collect();
    packs.sort();
    let newest = packs.last().expect("a pack").clone();
    let committed_len = std::fs::metadata(&newest).expect("metadata").len();
    OpenOptions::new()
        .append(true)
        .open(&newest)
        .expect("open")
        .write_all(b"TRBE half an entry header")
        .expect("append");

    std::fs::remove_dir_all(path.join("index")).expect("delete the index");
    let err = Store::open(&path, None, vault(), triad_store::Access::ReadWrite, &config)
        .expect_err("no index");
    assert!(matches!(err, OpenError::Index { .. }), "{err:?}");

    let report = Store::rebuild_index(&path, vault(), &config).expect("rebuild");
    assert_eq!(report.tombstones, 3);
    assert_eq!(report.packs, packs.len() as u64);
    assert_eq!(report.damaged.len(), 1, "{:?}", report.damaged);
    assert_eq!(report.damaged[0].blob, Some(blob(30).id()));
    assert_eq!(report.damaged[0].problem, Problem::Mismatch);
    assert_eq!(report.damaged[0].pack, damaged_pack);
    assert_eq!(report.blobs, stats_before.blobs - 1);

    let store = open(&path, &config);
    assert_eq!(std::fs::metadata(&newest).expect("metadata").len(), committed_len, "tail cut");
    for n in 0..45 {
        let present = store.contains(blob(n).id()).expect("contains");
        match n {
            3 | 25 => assert!(!present, "removed blob {n} stays removed"),
            30 => assert!(!present, "damaged blob is not indexed"),
            _ => assert_eq!(store.get(blob(n).id()).expect("get"), blob(n)),
        }
    }
    assert!(store.scrub(&mut |_| {}).expect("scrub").damaged.is_empty());
}

#[test]
fn rebuild_refuses_what_is_not_a_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Store::rebuild_index(dir.path(), vault(), &small_packs()).expect_err("empty");
    assert!(matches!(err, OpenError::Empty { .. }), "{err:?}");
    let path = dir.path().join("store");
    drop(create(&path, &small_packs()));
    let err = Store::rebuild_index(&path, crate::common::other_vault(), &small_packs())
        .expect_err("other vault");
    assert!(matches!(err, OpenError::OtherVault { .. }), "{err:?}");
    let report = Store::rebuild_index(&path, vault(), &small_packs()).expect("empty store");
    assert_eq!(report.blobs, 0);
}
