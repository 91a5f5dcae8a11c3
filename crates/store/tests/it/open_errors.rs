//! Opening refuses anything that is not the expected store, with messages that say what to do.

use triad_core::{Media, StoreId};
use triad_store::{Access, Config, CreateError, OpenError, Store};

use crate::common::{STORE, create, fill, now, other_vault, vault};

fn open_rw(path: &std::path::Path) -> Result<Store, OpenError> {
    Store::open(path, Some(STORE), vault(), Access::ReadWrite, &Config::default())
}

#[test]
fn a_missing_path_asks_for_the_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("not-there");
    let err = open_rw(&path).expect_err("missing");
    assert!(matches!(err, OpenError::Missing { .. }));
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("is the disk plugged in and mounted?"), "{text}");
}

#[test]
fn an_empty_directory_is_a_mount_point_and_is_never_initialised() {
    let dir = tempfile::tempdir().expect("tempdir");
    for access in [Access::ReadWrite, Access::ReadOnly] {
        let err =
            Store::open(dir.path(), None, vault(), access, &Config::default()).expect_err("empty");
        assert!(matches!(err, OpenError::Empty { .. }), "{err:?}");
        assert!(err.to_string().contains("looks like an empty mount point"), "{err}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0, "left untouched");
}

#[test]
fn a_directory_without_a_marker_is_not_a_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("holiday.jpg"), b"not a store").expect("write");
    let err = open_rw(dir.path()).expect_err("not a store");
    assert!(matches!(err, OpenError::NotAStore { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("{} is not a triad store", dir.path().display()));
    let err = Store::create(dir.path(), vault(), Media::Hdd, STORE, now(), &Config::default())
        .expect_err("not empty");
    assert!(matches!(err, CreateError::Exists { .. }), "{err:?}");
}

#[test]
fn a_store_of_another_vault_or_id_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    drop(create(&path, &Config::default()));
    let err = Store::open(&path, None, other_vault(), Access::ReadWrite, &Config::default())
        .expect_err("other vault");
    assert!(matches!(err, OpenError::OtherVault { .. }), "{err:?}");
    let other = StoreId::from_bytes([9; 16]);
    let err = Store::open(&path, Some(other), vault(), Access::ReadWrite, &Config::default())
        .expect_err("other store");
    assert!(matches!(err, OpenError::OtherStore { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!("a different store is mounted at {}", path.display()))
    );
    let err = Store::create(&path, vault(), Media::Hdd, STORE, now(), &Config::default())
        .expect_err("exists");
    assert!(matches!(err, CreateError::Exists { .. }), "{err:?}");
}

#[test]
fn a_damaged_marker_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    drop(create(&path, &Config::default()));
    std::fs::write(path.join("triad-store"), b"TRIADSTO\x01garbage").expect("write");
    let err = open_rw(&path).expect_err("damaged marker");
    assert!(matches!(err, OpenError::Marker { .. }), "{err:?}");
    assert!(err.to_string().contains("triad-store"), "{err}");
}

#[test]
fn a_second_writer_is_locked_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let first = create(&path, &Config::default());
    let err = open_rw(&path).expect_err("second writer");
    assert!(matches!(err, OpenError::Locked { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("store at {} is in use by another triad process", path.display())
    );
    let err = Store::open(&path, None, vault(), Access::ReadOnly, &Config::default())
        .expect_err("reader while writing");
    assert!(matches!(err, OpenError::Locked { .. }), "{err:?}");
    let err = Store::rebuild_index(&path, vault(), &Config::default()).expect_err("rebuild");
    assert!(matches!(err, OpenError::Locked { .. }), "{err:?}");
    drop(first);
    drop(open_rw(&path).expect("free again"));
}

#[test]
fn a_garbage_index_is_an_error_that_says_rebuild() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let mut store = create(&path, &Config::default());
    fill(&mut store, 0..20);
    drop(store);
    let index = path.join("index");

    // Junk in every file of the index.
    let mut files = Vec::new();
    let mut dirs = vec![index.clone()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).expect("read index") {
            let p = entry.expect("entry").path();
            if p.is_dir() { dirs.push(p) } else { files.push(p) }
        }
    }
    assert!(!files.is_empty());
    for (i, file) in files.iter().enumerate() {
        let junk: Vec<u8> = (0..4096u32).map(|j| (j * 7 + i as u32) as u8).collect();
        std::fs::write(file, junk).expect("write junk");
    }
    let err = open_rw(&path).expect_err("garbage index");
    assert!(matches!(err, OpenError::Index { .. }), "{err:?}");
    assert!(err.to_string().contains("triad store rebuild-index"), "{err}");

    // An empty index directory (a database engine would happily start afresh) and a missing one.
    std::fs::remove_dir_all(&index).expect("remove");
    std::fs::create_dir(&index).expect("mkdir");
    let err = open_rw(&path).expect_err("empty index");
    assert!(matches!(err, OpenError::Index { .. }), "{err:?}");
    std::fs::remove_dir_all(&index).expect("remove");
    let err = open_rw(&path).expect_err("missing index");
    assert!(matches!(err, OpenError::Index { .. }), "{err:?}");
    // Packs were not touched by any of this.
    Store::rebuild_index(&path, vault(), &Config::default()).expect("rebuild");
    let store = open_rw(&path).expect("open after rebuild");
    for n in 0..20 {
        store.get(crate::common::blob(n).id()).expect("get");
    }
}

#[test]
fn a_sled_index_of_an_earlier_build_says_rebuild() {
    use triad_store::{Index, IndexError, SledIndex};

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let mut store = create(&path, &Config::default());
    fill(&mut store, 0..20);
    drop(store);
    // What an earlier build left: a sled database in `index/`, and no redb file.
    let index = path.join("index");
    std::fs::remove_dir_all(&index).expect("remove");
    let mut sled = SledIndex::open(&index, 1 << 20, true).expect("sled");
    sled.init(STORE).expect("init");
    drop(sled);

    let err = open_rw(&path).expect_err("sled index");
    let OpenError::Index { source, .. } = &err else { panic!("{err:?}") };
    assert!(matches!(source, IndexError::OldFormat), "{source:?}");
    assert!(err.to_string().contains("triad store rebuild-index"), "{err}");
    // A read-only open never reads the index, so it works as it is.
    let store = Store::open(&path, Some(STORE), vault(), Access::ReadOnly, &Config::default())
        .expect("read-only open");
    assert_eq!(store.stats().expect("stats").blobs, 20);
    drop(store);

    let report = Store::rebuild_index(&path, vault(), &Config::default()).expect("rebuild");
    assert_eq!(report.blobs, 20);
    assert!(!index.join("conf").exists(), "the sled files are gone");
    let store = open_rw(&path).expect("open after rebuild");
    for n in 0..20 {
        store.get(crate::common::blob(n).id()).expect("get");
    }
}
