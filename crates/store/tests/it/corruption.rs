//! Damage inside packs is found and named, and never trimmed away or allowed to spread.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use triad_proto::store::EntryHeader;
use triad_store::{BlobInfo, Config, Problem, ReadError, Store};

use crate::common::{blob, create, fill, open, small_packs};

fn info_of(store: &Store, n: u32) -> BlobInfo {
    let id = blob(n).id();
    store.blobs().expect("blobs").into_iter().find(|i| i.id == id).expect("indexed")
}

fn pack_path(store: &Store, info: &BlobInfo) -> std::path::PathBuf {
    store.path().join("packs").join(format!("{:08x}.pack", info.location.pack))
}

fn flip(path: &std::path::Path, offset: u64) {
    let file = OpenOptions::new().read(true).write(true).open(path).expect("open pack");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).expect("read");
    byte[0] ^= 0x40;
    file.write_all_at(&byte, offset).expect("write");
}

#[test]
fn a_flipped_byte_is_reported_for_exactly_that_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let config = Config::default();
    let mut store = create(&path, &config);
    fill(&mut store, 0..10);
    let info = info_of(&store, 3);
    let pack = pack_path(&store, &info);
    drop(store);
    flip(&pack, info.location.offset + 5);

    let store = open(&path, &config);
    match store.get(blob(3).id()) {
        Err(ReadError::Corrupt { blob: id, path: p, offset, problem }) => {
            assert_eq!(id, blob(3).id());
            assert_eq!(p, pack);
            assert_eq!(offset, info.location.offset);
            assert_eq!(problem, Problem::Mismatch);
        }
        other => panic!("expected corrupt, got {other:?}"),
    }
    let err = store.get(blob(3).id()).expect_err("corrupt");
    assert!(err.to_string().contains(&blob(3).id().to_string()), "{err}");
    for n in (0..10).filter(|n| *n != 3) {
        assert_eq!(store.get(blob(n).id()).expect("others read fine"), blob(n));
    }
    let mut calls = 0;
    let report = store.scrub(&mut |_| calls += 1).expect("scrub");
    assert!(calls >= 1);
    assert_eq!(report.blobs, 10);
    assert_eq!(report.damaged.len(), 1, "{:?}", report.damaged);
    assert_eq!(report.damaged[0].blob, Some(blob(3).id()));
    assert_eq!(report.damaged[0].problem, Problem::Mismatch);
    assert_eq!(report.damaged[0].pack, pack);
}

#[test]
fn a_damaged_entry_header_shows_in_scrub() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let config = Config::default();
    let mut store = create(&path, &config);
    fill(&mut store, 0..5);
    let info = info_of(&store, 2);
    let pack = pack_path(&store, &info);
    drop(store);
    // The entry header's length field, in front of the blob's bytes.
    flip(&pack, info.location.offset - 40);
    let store = open(&path, &config);
    // The bytes themselves are fine, so the blob reads.
    assert_eq!(store.get(blob(2).id()).expect("get"), blob(2));
    let report = store.scrub(&mut |_| {}).expect("scrub");
    assert_eq!(report.damaged.len(), 1);
    assert_eq!(report.damaged[0].blob, Some(blob(2).id()));
    assert_eq!(report.damaged[0].problem, Problem::Header);
}

#[test]
fn a_pack_truncated_inside_committed_data_is_reported_and_its_lost_blobs_forgotten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let config = small_packs();
    let mut store = create(&path, &config);
    fill(&mut store, 0..12);
    let last = store.blobs().expect("blobs").into_iter().last().expect("blobs");
    let first_in_pack = store
        .blobs()
        .expect("blobs")
        .into_iter()
        .find(|i| i.location.pack == last.location.pack)
        .expect("blob in the last pack");
    let pack = pack_path(&store, &last);
    drop(store);
    let cut = last.location.offset + u64::from(last.len) / 2;
    OpenOptions::new().write(true).open(&pack).expect("open").set_len(cut).expect("truncate");

    let mut store = open(&path, &config);
    // The partial entry is cut off (the pack then takes the lost blob's tombstone); the blob is
    // reported lost and forgotten, to be put again.
    let whole = last.location.offset - EntryHeader::LEN as u64;
    let len = std::fs::metadata(&pack).expect("metadata").len();
    assert_eq!(len, whole + EntryHeader::LEN as u64, "cut to a whole entry, then a tombstone");
    assert_eq!(store.repairs().lost.len(), 1, "{:?}", store.repairs());
    assert_eq!(store.repairs().lost[0].blobs, 1);
    assert_eq!(store.repairs().lost[0].problem, Problem::Short);
    assert!(matches!(store.get(last.id), Err(ReadError::Missing { .. })));
    assert_eq!(store.forgotten(), vec![last.id]);
    if first_in_pack.id != last.id {
        store.get(first_in_pack.id).expect("earlier blobs of the pack read fine");
    }
    let report = store.scrub(&mut |_| {}).expect("scrub");
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    // Put again, it is whole and no longer forgotten.
    let again = blob(11);
    assert_eq!(again.id(), last.id);
    assert!(store.put(&again).expect("put"));
    store.commit().expect("commit");
    assert!(store.forgotten().is_empty());
    assert_eq!(store.get(last.id).expect("get"), again);
}

#[test]
fn a_missing_pack_is_reported_and_its_blobs_forgotten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let config = small_packs();
    let mut store = create(&path, &config);
    fill(&mut store, 0..20);
    let info = info_of(&store, 0);
    let pack = pack_path(&store, &info);
    drop(store);
    std::fs::remove_file(&pack).expect("remove pack");
    let store = open(&path, &config);
    assert_eq!(store.repairs().lost.len(), 1, "{:?}", store.repairs());
    assert_eq!(store.repairs().lost[0].pack, pack);
    assert_eq!(store.repairs().lost[0].problem, Problem::PackMissing);
    assert!(matches!(store.get(blob(0).id()), Err(ReadError::Missing { .. })));
    assert!(store.forgotten().contains(&blob(0).id()));
    let report = store.scrub(&mut |_| {}).expect("scrub");
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
}

#[test]
fn a_scrub_in_pieces_finds_what_a_whole_scrub_finds_and_blobs_put_meanwhile_do_not_upset_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let config = small_packs();
    let mut store = create(&path, &config);
    fill(&mut store, 0..12);
    let info = info_of(&store, 7);
    flip(&pack_path(&store, &info), info.location.offset + 9);

    let whole = store.scrub(&mut |_| {}).expect("scrub");
    let mut scrubbing = store.start_scrub().expect("start");
    let mut pieces = 1;
    // One blob per piece; a put and a commit between two pieces, as the agent allows.
    while !store.scrub_some(&mut scrubbing, 1) {
        if pieces == 4 {
            fill(&mut store, 100..102);
        }
        pieces += 1;
    }
    let report = scrubbing.finish();
    assert_eq!(pieces, 12, "one blob per piece");
    assert_eq!(report, whole);
    assert_eq!(report.damaged.len(), 1, "{:?}", report.damaged);
    assert_eq!(report.damaged[0].blob, Some(blob(7).id()));
}
