//! Real read-only mounts and a real full disk, inside a private mount namespace.
//!
//! The outer tests re-run this test binary under `unshare -m` after mounting a small tmpfs or a
//! read-only bind mount, and tell the inner (ignored) tests where it is through an environment
//! variable. Root ignores file modes, so only a real mount proves anything. Without the
//! privilege to unshare, the outer tests say why and pass.

use std::path::{Path, PathBuf};
use std::process::Command;

use triad_store::{Access, Config, CreateError, OpenError, Store, WriteError};

use crate::common::{STORE, big_blob, blob, create, fill, head, now, open, roster, vault};

const MOUNT_ENV: &str = "TRIAD_STORE_TEST_MOUNT";
const BLOBS: u32 = 50;

fn can_unshare() -> bool {
    let probe = Command::new("unshare").args(["-m", "--propagation", "private", "true"]).output();
    match probe {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!(
                "skipping: `unshare -m` is not permitted here ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            false
        }
        Err(err) => {
            eprintln!("skipping: cannot run `unshare` ({err})");
            false
        }
    }
}

/// Runs `setup` (a shell snippet over "$1" and "$2") in a new mount namespace, then the inner
/// test `inner` of this binary with `MOUNT_ENV` set to `mount`.
fn run_inner(setup: &str, args: [&Path; 2], mount: &Path, inner: &str) {
    let exe = std::env::current_exe().expect("test binary path");
    let script =
        format!("{setup} && exec \"$0\" --exact {inner} --ignored --nocapture --test-threads=1");
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .arg(&exe)
        .args(args)
        .env(MOUNT_ENV, mount)
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "inner test failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(stdout.contains(&format!("test {inner} ... ok")), "inner test did not run\n{stdout}");
}

fn mount_dir() -> Option<PathBuf> {
    let dir = std::env::var_os(MOUNT_ENV).map(PathBuf::from);
    if dir.is_none() {
        eprintln!("not inside the test's mount namespace: run the outer test instead");
    }
    dir
}

#[test]
fn a_full_disk_loses_nothing_committed() {
    if !can_unshare() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = "mount -t tmpfs -o size=6m tmpfs \"$1\"";
    run_inner(setup, [dir.path(), dir.path()], dir.path(), "mounts::full_disk_inner");
}

#[test]
#[ignore = "runs inside the mount namespace made by a_full_disk_loses_nothing_committed"]
fn full_disk_inner() {
    let Some(dir) = mount_dir() else { return };
    let path = dir.join("store");
    let config = Config {
        pack_len_target: 1024 * 1024,
        index_cache_bytes: 1024 * 1024,
        ..Config::default()
    };
    let mut store = create(&path, &config);
    let mut acked = Vec::new();
    let mut batch = Vec::new();
    let mut n = 0;
    let err = loop {
        assert!(n < 1000, "a 6 MiB disk never filled up");
        let blob = big_blob(n, 60 * 1024);
        if let Err(err) = store.put(&blob) {
            break err;
        }
        batch.push(n);
        if batch.len() == 3 {
            match store.commit() {
                Ok(()) => acked.append(&mut batch),
                Err(err) => break err,
            }
        }
        n += 1;
    };
    assert!(matches!(err, WriteError::Full { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("store at {} is full", path.display()));
    assert!(acked.len() > 10, "only {} blobs fitted", acked.len());
    // Everything committed is still readable in this session...
    for n in &acked {
        store.get(big_blob(*n, 60 * 1024).id()).expect("committed blob after a full disk");
    }
    drop(store);
    // ...and after reopening on the same full disk.
    let store = open(&path, &config);
    for n in &acked {
        let blob = big_blob(*n, 60 * 1024);
        assert_eq!(store.get(blob.id()).expect("committed blob after reopen"), blob);
    }
    let report = store.scrub(&mut |_| {}).expect("scrub");
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    assert_eq!(report.blobs, acked.len() as u64);
    // Still usable: a write either fits or says the disk is full, and loses nothing.
    let mut store = store;
    let extra = blob(7);
    match store.put(&extra).and_then(|_| store.commit()) {
        Ok(()) => assert_eq!(store.get(extra.id()).expect("extra"), extra),
        Err(err) => assert!(matches!(err, WriteError::Full { .. }), "{err:?}"),
    }
    drop(store);
    let store = Store::open(&path, Some(STORE), vault(), Access::ReadOnly, &config).expect("ro");
    for n in &acked {
        store.get(big_blob(*n, 60 * 1024).id()).expect("committed blob, read-only open");
    }
    eprintln!("{} blobs committed before the disk was full", acked.len());
}

#[test]
fn a_read_only_mount_is_read_but_never_written() {
    if !can_unshare() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source");
    let target = dir.path().join("target");
    std::fs::create_dir(&target).expect("mkdir");
    let config = Config::default();
    let mut store = create(&source.join("store"), &config);
    fill(&mut store, 0..BLOBS);
    store.write_head(&head(1, 3)).expect("head");
    store.write_roster(&roster()).expect("roster");
    drop(store);
    let setup = "mount --bind \"$1\" \"$2\" && mount -o remount,bind,ro \"$2\"";
    run_inner(setup, [&source, &target], &target, "mounts::read_only_inner");
    // The inner test wrote nothing through the mount, so the store is unchanged here.
    let store = open(&source.join("store"), &config);
    assert_eq!(store.stats().expect("stats").blobs, u64::from(BLOBS));
}

#[test]
#[ignore = "runs inside the mount namespace made by a_read_only_mount_is_read_but_never_written"]
fn read_only_inner() {
    let Some(dir) = mount_dir() else { return };
    let path = dir.join("store");
    let config = Config::default();
    let err = Store::open(&path, Some(STORE), vault(), Access::ReadWrite, &config)
        .expect_err("read-write open of a read-only mount");
    assert!(matches!(err, OpenError::ReadOnly { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "store at {} is on a read-only file system: remount it writable or open it read-only",
            path.display()
        )
    );
    let err = Store::rebuild_index(&path, vault(), &config).expect_err("rebuild");
    assert!(matches!(err, OpenError::ReadOnly { .. }), "{err:?}");
    let err =
        Store::create(&dir.join("new"), vault(), triad_core::Media::Sd, STORE, now(), &config)
            .expect_err("create");
    assert!(matches!(err, CreateError::ReadOnly { .. }), "{err:?}");

    let mut store =
        Store::open(&path, Some(STORE), vault(), Access::ReadOnly, &config).expect("read-only");
    for n in 0..BLOBS {
        assert_eq!(store.get(blob(n).id()).expect("get"), blob(n));
    }
    assert_eq!(store.heads().expect("heads"), vec![head(1, 3)]);
    assert_eq!(store.roster().expect("roster"), Some(roster()));
    assert!(store.scrub(&mut |_| {}).expect("scrub").damaged.is_empty());
    assert!(matches!(store.put(&blob(BLOBS)), Err(WriteError::ReadOnly { .. })));
}

#[test]
fn an_index_on_a_full_disk_keeps_what_it_committed() {
    if !can_unshare() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = "mount -t tmpfs -o size=2m tmpfs \"$1\"";
    run_inner(setup, [dir.path(), dir.path()], dir.path(), "mounts::full_index_inner");
}

#[test]
#[ignore = "runs inside the mount namespace made by an_index_on_a_full_disk_keeps_what_it_committed"]
fn full_index_inner() {
    use triad_core::BlobId;
    use triad_store::index::Batch;
    use triad_store::{Index, IndexError, Location, RedbIndex};

    let Some(dir) = mount_dir() else { return };
    let path = dir.join("index");
    let id = |n: u64| BlobId::of(&n.to_le_bytes());
    let location = |n: u64| Location { pack: 0, offset: n * 100, len: 52 };
    let mut index = RedbIndex::open(&path, 256 * 1024, true).expect("create");
    index.init(STORE).expect("init");
    // Leave the index little room: it is the index, not a pack, that meets the full disk.
    let filler = dir.join("filler");
    let room = 256 * 1024;
    let free = {
        let out = Command::new("df").args(["-B1", "--output=avail"]).arg(&dir).output();
        let out = out.expect("df");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().nth(1).and_then(|l| l.trim().parse::<usize>().ok()).expect("df figure")
    };
    std::fs::write(&filler, vec![1u8; free.saturating_sub(room)]).expect("filler");

    let mut committed = 0u64;
    let err = loop {
        assert!(committed < 1_000_000, "the index never filled the disk");
        let batch = Batch {
            puts: (committed..committed + 500).map(|n| (id(n), location(n))).collect(),
            pack_lengths: vec![(0, (committed + 500) * 100)],
            ..Batch::default()
        };
        match index.commit(&batch) {
            Ok(()) => committed += 500,
            Err(err) => break err,
        }
    };
    let full = match &err {
        IndexError::Redb(redb_err) => match redb_err.as_ref() {
            redb::Error::Io(io_err) => io_err.raw_os_error() == Some(libc::ENOSPC),
            _ => false,
        },
        _ => false,
    };
    assert!(full, "{err:?}");
    assert!(committed >= 500, "not one batch fitted");
    // The same handle still reads everything committed...
    for n in (0..committed).step_by(97) {
        assert_eq!(index.get(&id(n)).expect("get after a full disk"), Some(location(n)));
    }
    assert_eq!(index.len().expect("len"), committed);
    drop(index);
    // ...and so does a reopen on the same full disk, and writes go on once there is room.
    let mut index = RedbIndex::open(&path, 256 * 1024, false).expect("reopen on a full disk");
    assert_eq!(index.len().expect("len"), committed);
    assert_eq!(index.pack_lengths().expect("lengths").get(&0), Some(&(committed * 100)));
    std::fs::remove_file(&filler).expect("free the disk");
    let batch = Batch { puts: vec![(id(committed), location(committed))], ..Batch::default() };
    index.commit(&batch).expect("commit once there is room");
    assert_eq!(index.len().expect("len"), committed + 1);
    eprintln!("{committed} entries committed before the disk was full");
}
