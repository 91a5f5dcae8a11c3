//! Put, commit, get and reopen with real files and a real index; pack roll-over; read-only opens.

use triad_core::seal::SealedBlob;
use triad_store::{Access, Config, ReadError, Store, WriteError};

use crate::common::{STORE, big_blob, blob, create, fill, open, small_packs, vault};

#[test]
fn blobs_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let config = Config::default();
    let mut store = create(&path, &config);
    assert_eq!(store.id(), STORE);
    assert_eq!(store.vault(), vault());
    for n in 0..500 {
        assert!(store.put(&blob(n)).expect("put"), "blob {n} is new");
        if n % 100 == 99 {
            store.commit().expect("commit");
            assert_eq!(store.pending_bytes(), 0);
        }
    }
    // Already present: committed or pending.
    assert!(!store.put(&blob(3)).expect("put again"));
    for n in 0..500 {
        assert_eq!(store.get(blob(n).id()).expect("get"), blob(n));
    }
    let stats = store.stats().expect("stats");
    assert_eq!(stats.blobs, 500);
    assert_eq!(stats.packs, 1);
    drop(store);

    let store = open(&path, &config);
    for n in 0..500 {
        assert_eq!(store.get(blob(n).id()).expect("get after reopen"), blob(n));
    }
    assert!(matches!(
        store.get(blob(9999).id()),
        Err(ReadError::Missing { blob }) if blob == crate::common::blob(9999).id()
    ));
    let infos = store.blobs().expect("blobs");
    assert_eq!(infos.len(), 500);
    assert!(
        infos.windows(2).all(|w| (w[0].location.pack, w[0].location.offset)
            < (w[1].location.pack, w[1].location.offset))
    );
}

#[test]
fn pending_blobs_are_visible_but_not_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let config = Config::default();
    let mut store = create(&path, &config);
    fill(&mut store, 0..3);
    store.put(&blob(10)).expect("put");
    assert!(store.pending_bytes() > 0);
    assert!(store.contains(blob(10).id()).expect("contains"));
    assert_eq!(store.get(blob(10).id()).expect("read from the buffer"), blob(10));
    assert!(store.remove(blob(0).id()).expect("remove"));
    assert!(!store.contains(blob(0).id()).expect("contains"));
    drop(store); // without commit: a crash of the process

    let store = open(&path, &config);
    assert!(!store.contains(blob(10).id()).expect("contains"));
    assert!(store.contains(blob(0).id()).expect("the removal was not committed"));
}

#[test]
fn packs_roll_over_and_large_blobs_fit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let config = small_packs();
    let mut store = create(&path, &config);
    fill(&mut store, 0..40);
    // A blob larger than the pack target gets a pack of its own.
    let big = big_blob(1, 3 * 1024 * 1024);
    assert!(store.put(&big).expect("put big"));
    fill(&mut store, 40..50);
    let stats = store.stats().expect("stats");
    assert!(stats.packs > 5, "{stats:?}");
    drop(store);

    let store = open(&path, &config);
    for n in 0..50 {
        assert_eq!(store.get(blob(n).id()).expect("get"), blob(n));
    }
    assert_eq!(store.get(big.id()).expect("big"), big);
    let packs = std::fs::read_dir(path.join("packs")).expect("packs").count() as u64;
    assert_eq!(packs, store.stats().expect("stats").packs);
    for entry in std::fs::read_dir(path.join("packs")).expect("packs") {
        let entry = entry.expect("entry");
        let len = entry.metadata().expect("metadata").len();
        // A pack only goes over the target with its one oversized blob.
        assert!(len <= config.pack_len_target || len > 3 * 1024 * 1024, "{len}");
    }
    let report = store.scrub(&mut |_| {}).expect("scrub");
    assert_eq!(report.blobs, 51);
    assert!(report.damaged.is_empty());
}

#[test]
fn read_only_opens_share_and_refuse_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let config = small_packs();
    let mut store = create(&path, &config);
    fill(&mut store, 0..30);
    store.remove(blob(4).id()).expect("remove");
    store.commit().expect("commit");
    // An uncommitted tail is ignored by readers: it does not verify or is not listed.
    store.put(&blob(31)).expect("put");
    drop(store);

    let a = Store::open(&path, Some(STORE), vault(), Access::ReadOnly, &config).expect("reader a");
    let mut b =
        Store::open(&path, Some(STORE), vault(), Access::ReadOnly, &config).expect("reader b");
    for n in (0..30).filter(|n| *n != 4) {
        assert_eq!(a.get(blob(n).id()).expect("get"), blob(n));
        assert_eq!(b.get(blob(n).id()).expect("get"), blob(n));
    }
    assert!(!a.contains(blob(4).id()).expect("tombstone honoured"));
    assert!(matches!(b.put(&blob(50)), Err(WriteError::ReadOnly { .. })));
    assert!(matches!(b.commit(), Err(WriteError::ReadOnly { .. })));
    assert!(matches!(b.remove(blob(1).id()), Err(WriteError::ReadOnly { .. })));
    assert!(matches!(b.write_head(&crate::common::head(1, 1)), Err(WriteError::ReadOnly { .. })));
    let writer = Store::open(&path, Some(STORE), vault(), Access::ReadWrite, &config);
    assert!(matches!(writer, Err(triad_store::OpenError::Locked { .. })), "{writer:?}");
    let _: SealedBlob = a.get(blob(0).id()).expect("get");
}
