//! Heads and the roster: atomic files, sequence never goes back, damage named by path.

use triad_core::head::SignedHead;
use triad_store::{Config, HeadFault, ReadError, WriteError};

use crate::common::{create, folder, head, open, roster};

#[test]
fn heads_only_move_forward() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let mut store = create(&path, &Config::default());
    assert!(store.heads().expect("heads").is_empty());
    assert!(store.write_head(&head(1, 5)).expect("write"));
    assert!(!store.write_head(&head(1, 4)).expect("older is refused"));
    assert!(store.write_head(&head(1, 5)).expect("the same again is fine"));
    assert!(store.write_head(&head(2, 1)).expect("another folder"));
    assert!(store.write_head(&head(1, 6)).expect("newer"));
    // Same sequence, other contents: the first one stays.
    let mut fork = head(1, 6).head;
    fork.snapshot = triad_core::BlobId::of(b"fork");
    let fork: SignedHead = fork.sign(&crate::common::device_key());
    assert!(!store.write_head(&fork).expect("fork refused"));
    drop(store);

    let store = open(&path, &Config::default());
    let heads = store.heads().expect("heads");
    let seqs: Vec<_> = heads.iter().map(|h| (h.head.folder, h.head.sequence)).collect();
    assert_eq!(seqs, vec![(folder(1), 6), (folder(2), 1)]);
    assert_eq!(heads[0], head(1, 6));
    // No temporary files are left behind.
    let device_dir = path.join("heads").join(crate::common::device_key().device_id().to_hex());
    assert_eq!(std::fs::read_dir(device_dir).expect("device dir").count(), 2);
}

#[test]
fn a_bad_head_is_refused_and_a_damaged_head_file_is_named_and_read_from_the_packs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let mut store = create(&path, &Config::default());
    let mut forged = head(1, 1);
    forged.head.sequence = 99;
    assert!(matches!(store.write_head(&forged), Err(WriteError::Head(_))));
    store.write_head(&head(1, 1)).expect("write");
    store.write_head(&head(2, 3)).expect("write");
    let file = path
        .join("heads")
        .join(crate::common::device_key().device_id().to_hex())
        .join(folder(1).to_hex());
    std::fs::write(&file, b"\x01garbage").expect("damage");
    // The damaged file hides nothing: its head comes from the packs, the other folder's too.
    assert_eq!(store.heads().expect("heads"), vec![head(1, 1), head(2, 3)]);
    let problems = store.check_heads().expect("check");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, file);
    assert!(matches!(problems[0].fault, HeadFault::Damaged(_)), "{problems:?}");
    assert_eq!(problems[0].from_packs, Some(1));
    // A damaged head is replaced by a valid one.
    assert!(store.write_head(&head(1, 1)).expect("replace"));
    assert!(store.check_heads().expect("check").is_empty());
    assert_eq!(store.heads().expect("heads"), vec![head(1, 1), head(2, 3)]);
}

#[test]
fn a_lost_heads_folder_comes_back_from_the_packs_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let mut store = create(&path, &Config::default());
    for seq in 1..=3 {
        store.write_head(&head(1, seq)).expect("write");
    }
    store.write_head(&head(2, 1)).expect("write");
    drop(store);
    std::fs::remove_dir_all(path.join("heads")).expect("lose heads");

    let store = open(&path, &Config::default());
    let restored: Vec<_> = store.repairs().heads.iter().filter(|p| p.restored).collect();
    assert_eq!(restored.len(), 2, "{:?}", store.repairs());
    assert!(restored.iter().all(|p| p.fault == HeadFault::Missing));
    assert_eq!(store.heads().expect("heads"), vec![head(1, 3), head(2, 1)]);
    let history: Vec<u64> = store
        .head_history(crate::common::device_key().device_id(), folder(1))
        .expect("history")
        .iter()
        .map(|h| h.head.sequence)
        .collect();
    assert_eq!(history, vec![3, 2, 1]);
    drop(store);
    // The files are back: the next open finds nothing wrong.
    let store = open(&path, &Config::default());
    assert!(store.repairs().is_empty(), "{:?}", store.repairs());

    // Rebuilding the index finds the head entries again.
    drop(store);
    let report =
        triad_store::Store::rebuild_index(&path, crate::common::vault(), &Config::default())
            .expect("rebuild");
    assert_eq!(report.heads, 4);
    std::fs::remove_dir_all(path.join("heads")).expect("lose heads");
    let store = open(&path, &Config::default());
    assert_eq!(store.heads().expect("heads"), vec![head(1, 3), head(2, 1)]);
}

#[test]
fn the_roster_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let store = create(&path, &Config::default());
    assert_eq!(store.roster().expect("roster"), None);
    store.write_roster(&roster()).expect("write");
    assert_eq!(store.roster().expect("roster"), Some(roster()));
    std::fs::write(path.join("roster"), b"junk").expect("damage");
    assert!(matches!(store.roster(), Err(ReadError::Roster { .. })));
    store.write_roster(&roster()).expect("rewrite");
    drop(store);
    let store = open(&path, &Config::default());
    assert_eq!(store.roster().expect("roster"), Some(roster()));
}
