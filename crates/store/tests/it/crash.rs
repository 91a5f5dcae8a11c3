//! Write order: a crash after any file operation loses nothing that was acknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use triad_core::Media;
use triad_store::{Access, Config, MemIndex, Store};

use crate::common::{STORE, blob, folder, head, now, roster, vault};
use crate::crash_fs::{CrashFs, Torn};

/// What the workload saw acknowledged before the crash.
#[derive(Debug, Default)]
struct Acked {
    blobs: BTreeSet<u32>,
    removed: BTreeSet<u32>,
    heads: BTreeMap<u8, u64>,
    roster: bool,
}

fn config() -> Config {
    Config { pack_len_target: 4 * 1024, ..Config::default() }
}

fn root() -> &'static Path {
    Path::new("/disk/store")
}

/// A store on a fresh crashable disk, created before any crash is armed.
fn fresh() -> (CrashFs, MemIndex, Store) {
    let fs = CrashFs::new(Path::new("/disk"));
    let index = MemIndex::new();
    let store = Store::create_with(
        Arc::new(fs.clone()),
        Box::new(index.clone()),
        root(),
        vault(),
        Media::Ssd,
        STORE,
        now(),
        &config(),
    )
    .expect("create");
    (fs, index, store)
}

fn commit_puts(
    store: &mut Store,
    acked: &mut Acked,
    blobs: std::ops::Range<u32>,
) -> Result<(), String> {
    for n in blobs.clone() {
        store.put(&blob(n)).map_err(|e| e.to_string())?;
    }
    store.commit().map_err(|e| e.to_string())?;
    acked.blobs.extend(blobs);
    Ok(())
}

/// Puts, commits, rolls packs, removes, writes heads and the roster. Stops at the first error.
fn workload(store: &mut Store, acked: &mut Acked) -> Result<(), String> {
    commit_puts(store, acked, 0..5)?;
    if store.write_head(&head(1, 1)).map_err(|e| e.to_string())? {
        acked.heads.insert(1, 1);
    }
    commit_puts(store, acked, 5..12)?;
    store.remove(blob(2).id()).map_err(|e| e.to_string())?;
    store.remove(blob(7).id()).map_err(|e| e.to_string())?;
    store.commit().map_err(|e| e.to_string())?;
    for n in [2, 7] {
        acked.blobs.remove(&n);
        acked.removed.insert(n);
    }
    store.write_roster(&roster()).map_err(|e| e.to_string())?;
    acked.roster = true;
    store.write_head(&head(1, 2)).map_err(|e| e.to_string())?;
    acked.heads.insert(1, 2);
    store.write_head(&head(2, 1)).map_err(|e| e.to_string())?;
    acked.heads.insert(2, 1);
    // Put 2 again after its removal, and some new blobs; a crash before this commit must
    // leave 2 removed.
    store.put(&blob(2)).map_err(|e| e.to_string())?;
    commit_puts(store, acked, 12..16)?;
    acked.blobs.insert(2);
    acked.removed.remove(&2);
    Ok(())
}

/// Reopens over what survived and checks every acknowledgement. Returns what is wrong.
fn check(fs: &CrashFs, index: &MemIndex, acked: &Acked) -> Result<(), String> {
    let mut store = Store::open_with(
        Arc::new(fs.clone()),
        Box::new(index.clone()),
        root(),
        Some(STORE),
        vault(),
        Access::ReadWrite,
        &config(),
    )
    .map_err(|e| format!("open after crash: {e}"))?;
    for n in &acked.blobs {
        let got = store.get(blob(*n).id()).map_err(|e| format!("acknowledged blob {n}: {e}"))?;
        if got != blob(*n) {
            return Err(format!("acknowledged blob {n} reads back different bytes"));
        }
    }
    for n in &acked.removed {
        if store.contains(blob(*n).id()).map_err(|e| e.to_string())? {
            return Err(format!("removed blob {n} came back"));
        }
    }
    let heads = store.heads().map_err(|e| format!("heads: {e}"))?;
    for (f, seq) in &acked.heads {
        let stored = heads.iter().find(|h| h.head.folder == folder(*f)).map(|h| h.head.sequence);
        if stored.is_none_or(|s| s < *seq) {
            return Err(format!("head of folder {f} is {stored:?}, acknowledged {seq}"));
        }
    }
    if acked.roster && store.roster().map_err(|e| e.to_string())?.is_none() {
        return Err("acknowledged roster is missing".to_owned());
    }
    let report = store.scrub(&mut |_| {}).map_err(|e| e.to_string())?;
    if !report.damaged.is_empty() {
        return Err(format!("indexed bytes do not verify: {:?}", report.damaged));
    }
    // The store keeps working after the crash: new puts land after the trimmed tail.
    store.put(&blob(100)).map_err(|e| format!("put after crash: {e}"))?;
    store.commit().map_err(|e| format!("commit after crash: {e}"))?;
    drop(store);
    let store = Store::open_with(
        Arc::new(fs.clone()),
        Box::new(index.clone()),
        root(),
        Some(STORE),
        vault(),
        Access::ReadWrite,
        &config(),
    )
    .map_err(|e| format!("second open: {e}"))?;
    store.get(blob(100).id()).map_err(|e| format!("blob put after the crash: {e}"))?;
    for n in &acked.blobs {
        store.get(blob(*n).id()).map_err(|e| format!("acknowledged blob {n} after reuse: {e}"))?;
    }
    Ok(())
}

/// Runs the workload with a crash after `k` operations; returns the check's verdict and
/// whether the workload ran to the end.
fn crash_at(k: u64, torn: Torn, lying: bool) -> (Result<(), String>, bool) {
    let (fs, index, mut store) = fresh();
    if lying {
        fs.make_sync_a_lie();
    }
    fs.fail_after(k);
    let mut acked = Acked::default();
    let finished = workload(&mut store, &mut acked).is_ok();
    drop(store);
    fs.crash(torn);
    (check(&fs, &index, &acked), finished)
}

fn workload_ops() -> u64 {
    let (fs, _index, mut store) = fresh();
    let before = fs.ops();
    workload(&mut store, &mut Acked::default()).expect("workload without a crash");
    fs.ops() - before
}

#[test]
fn a_crash_after_any_operation_loses_nothing_acknowledged() {
    let n = workload_ops();
    assert!(n > 40, "the workload does real work ({n} operations)");
    for torn in [Torn::Drop, Torn::Half, Torn::All] {
        for k in 0..=n {
            let (verdict, finished) = crash_at(k, torn, false);
            if let Err(problem) = verdict {
                panic!("crash after {k} of {n} operations ({torn:?}): {problem}");
            }
            assert_eq!(finished, k >= n, "the workload stops at the crash");
        }
    }
}

#[test]
fn the_check_catches_a_disk_that_does_not_sync() {
    // The same workload on a disk whose fsync is a no-op: the index then points at bytes that
    // a crash drops, and the check must notice for some crash point.
    let n = workload_ops();
    let caught = (0..=n).filter(|k| crash_at(*k, Torn::Drop, true).0.is_err()).count();
    assert!(caught > 0, "losing unsynced pack bytes must be detected");
}
