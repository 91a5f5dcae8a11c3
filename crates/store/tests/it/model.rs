//! Model test: random put, remove, commit, reopen and crash against a `BTreeMap` model.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use triad_core::Media;
use triad_store::{Access, Config, MemIndex, Store};

use crate::common::{STORE, blob, now, vault};
use crate::crash_fs::{CrashFs, Torn};

const IDS: u32 = 12;

#[derive(Debug, Clone)]
enum Op {
    Put(u32),
    Remove(u32),
    Commit,
    /// Commit, close and open again.
    Reopen,
    /// Close without committing (the process dies), then open again.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..IDS).prop_map(Op::Put),
        2 => (0..IDS).prop_map(Op::Remove),
        3 => Just(Op::Commit),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

/// Committed state, plus what is pending since the last commit (true: put, false: removed).
#[derive(Debug, Default)]
struct Model {
    committed: BTreeMap<u32, ()>,
    pending: BTreeMap<u32, bool>,
}

impl Model {
    fn visible(&self, n: u32) -> bool {
        self.pending.get(&n).copied().unwrap_or_else(|| self.committed.contains_key(&n))
    }

    fn commit(&mut self) {
        for (n, present) in std::mem::take(&mut self.pending) {
            if present {
                self.committed.insert(n, ());
            } else {
                self.committed.remove(&n);
            }
        }
    }
}

fn config() -> Config {
    // Small packs and a small write buffer: pack roll-overs and partial writes are frequent.
    Config { pack_len_target: 3 * 1024, write_buf_len: 2000, ..Config::default() }
}

/// How a store is opened, closed and crashed.
trait Disk {
    fn open(&self) -> Store;
    fn crash(&self);
}

struct RealDisk {
    path: std::path::PathBuf,
}

impl Disk for RealDisk {
    fn open(&self) -> Store {
        // The store's flock belongs to its open file description, which a process forked by
        // another test in this binary shares until it execs: the lock of a store just dropped
        // can outlive it by that moment. Try again a bounded number of times.
        for _ in 0..200 {
            match Store::open(&self.path, Some(STORE), vault(), Access::ReadWrite, &config()) {
                Err(triad_store::OpenError::Locked { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                result => return result.expect("open"),
            }
        }
        panic!("the store stayed locked for 2 s after it was closed");
    }

    fn crash(&self) {}
}

struct CrashDisk {
    fs: CrashFs,
    index: MemIndex,
    torn: Torn,
}

impl CrashDisk {
    fn root() -> &'static Path {
        Path::new("/disk/store")
    }
}

impl Disk for CrashDisk {
    fn open(&self) -> Store {
        let fs = Arc::new(self.fs.clone());
        let index = Box::new(self.index.clone());
        Store::open_with(
            fs,
            index,
            Self::root(),
            Some(STORE),
            vault(),
            Access::ReadWrite,
            &config(),
        )
        .expect("open")
    }

    fn crash(&self) {
        self.fs.crash(self.torn);
    }
}

fn run(disk: &dyn Disk, mut store: Store, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Put(n) => {
                let added = store.put(&blob(*n)).expect("put");
                prop_assert_eq!(added, !model.visible(*n), "put {}", n);
                model.pending.insert(*n, true);
            }
            Op::Remove(n) => {
                let removed = store.remove(blob(*n).id()).expect("remove");
                prop_assert_eq!(removed, model.visible(*n), "remove {}", n);
                if removed {
                    model.pending.insert(*n, false);
                }
            }
            Op::Commit => {
                store.commit().expect("commit");
                model.commit();
            }
            Op::Reopen => {
                store.commit().expect("commit");
                model.commit();
                drop(store);
                store = disk.open();
            }
            Op::Crash => {
                drop(store);
                disk.crash();
                model.pending.clear();
                store = disk.open();
            }
        }
        for n in 0..IDS {
            let expected = model.visible(n);
            prop_assert_eq!(store.contains(blob(n).id()).expect("contains"), expected, "{}", n);
            match store.get(blob(n).id()) {
                Ok(got) => {
                    prop_assert!(expected, "blob {} readable but not in the model", n);
                    prop_assert_eq!(got, blob(n));
                }
                Err(triad_store::ReadError::Missing { .. }) => {
                    prop_assert!(!expected, "blob {} missing", n)
                }
                Err(err) => return Err(TestCaseError::fail(format!("get {n}: {err}"))),
            }
        }
    }
    let report = store.scrub(&mut |_| {}).expect("scrub");
    prop_assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    prop_assert_eq!(report.blobs, model.committed.len() as u64);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn store_on_real_files_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store");
        let store = Store::create(&path, vault(), Media::Ssd, STORE, now(), &config())
            .expect("create");
        run(&RealDisk { path }, store, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn store_on_a_crashing_disk_agrees_with_the_model(
        ops in proptest::collection::vec(op(), 1..60),
        torn in prop_oneof![Just(Torn::Drop), Just(Torn::Half), Just(Torn::All)],
    ) {
        let fs = CrashFs::new(Path::new("/disk"));
        let index = MemIndex::new();
        let store = Store::create_with(
            Arc::new(fs.clone()),
            Box::new(index.clone()),
            CrashDisk::root(),
            vault(),
            Media::Ssd,
            STORE,
            now(),
            &config(),
        )
        .expect("create");
        run(&CrashDisk { fs, index, torn }, store, &ops)?;
    }
}
