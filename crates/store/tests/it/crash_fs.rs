//! `CrashFs`: a file layer that keeps a durable and a volatile view and can crash.
//!
//! File data becomes durable at `sync`; a creation, rename or removal becomes durable when its
//! parent directory is synced. `crash` keeps only what was durable (or, in the torn modes, also
//! some unsynced file bytes). `fail_after(k)` makes every operation after the k-th fail, as if
//! the process had died there.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use triad_store::fs::{File, Fs, Kind, LockGuard};

/// What a crash does with file bytes written but not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Torn {
    /// Dropped: only synced bytes survive.
    Drop,
    /// Half of the unsynced appended bytes survive (a torn tail).
    Half,
    /// All of them survive (the kernel wrote them back before the crash).
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File(u64),
    Dir,
}

#[derive(Debug, Default, Clone)]
struct Dir {
    volatile: BTreeMap<OsString, Node>,
    durable: BTreeMap<OsString, Node>,
}

#[derive(Debug, Default)]
struct Data {
    volatile: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    root: PathBuf,
    dirs: BTreeMap<PathBuf, Dir>,
    files: HashMap<u64, Data>,
    next_ino: u64,
    ops: u64,
    fail_after: Option<u64>,
    /// A broken file system whose fsync does nothing: used to show the checks catch loss.
    sync_is_a_lie: bool,
}

impl State {
    fn op(&mut self) -> io::Result<()> {
        if self.fail_after.is_some_and(|k| self.ops >= k) {
            return Err(io::Error::other("simulated crash: the process is gone"));
        }
        self.ops += 1;
        Ok(())
    }

    fn split(path: &Path) -> io::Result<(PathBuf, OsString)> {
        match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => Ok((parent.to_path_buf(), name.to_owned())),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "no parent")),
        }
    }

    fn lookup(&self, path: &Path) -> Option<Node> {
        if self.dirs.contains_key(path) {
            return Some(Node::Dir);
        }
        let (parent, name) = Self::split(path).ok()?;
        self.dirs.get(&parent)?.volatile.get(&name).copied()
    }

    fn parent_mut(&mut self, path: &Path) -> io::Result<(&mut Dir, OsString)> {
        let (parent, name) = Self::split(path)?;
        let dir = self.dirs.get_mut(&parent).ok_or(io::ErrorKind::NotFound)?;
        Ok((dir, name))
    }

    fn new_file(&mut self, path: &Path) -> io::Result<u64> {
        let ino = self.next_ino;
        self.next_ino += 1;
        let (dir, name) = self.parent_mut(path)?;
        dir.volatile.insert(name, Node::File(ino));
        self.files.insert(ino, Data::default());
        Ok(ino)
    }
}

/// The crashable file layer. Clones share state.
#[derive(Debug, Clone)]
pub(crate) struct CrashFs {
    state: Arc<Mutex<State>>,
}

impl CrashFs {
    /// A file system whose only directory is `root` (durable).
    pub(crate) fn new(root: &Path) -> Self {
        let mut state = State { root: root.to_path_buf(), ..State::default() };
        state.dirs.insert(root.to_path_buf(), Dir::default());
        Self { state: Arc::new(Mutex::new(state)) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Operations done so far.
    pub(crate) fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Every operation after the next `k` fails.
    pub(crate) fn fail_after(&self, k: u64) {
        let mut state = self.lock();
        state.fail_after = Some(state.ops + k);
    }

    /// Makes `sync` of files do nothing (a broken disk that lies about flushing).
    pub(crate) fn make_sync_a_lie(&self) {
        self.lock().sync_is_a_lie = true;
    }

    /// Crashes: keeps what was durable, forgets the rest, and works again afterwards.
    pub(crate) fn crash(&self, torn: Torn) {
        let mut state = self.lock();
        let root = state.root.clone();
        let mut kept: BTreeMap<PathBuf, Dir> = BTreeMap::new();
        // Parents sort before their children.
        for (path, dir) in std::mem::take(&mut state.dirs) {
            let reachable = path == root
                || path.parent().zip(path.file_name()).is_some_and(|(parent, name)| {
                    kept.get(parent).is_some_and(|p| p.durable.get(name) == Some(&Node::Dir))
                });
            if reachable {
                kept.insert(path, Dir { volatile: dir.durable.clone(), durable: dir.durable });
            }
        }
        let live: std::collections::HashSet<u64> = kept
            .values()
            .flat_map(|d| d.durable.values())
            .filter_map(|n| match n {
                Node::File(ino) => Some(*ino),
                Node::Dir => None,
            })
            .collect();
        state.files.retain(|ino, _| live.contains(ino));
        for data in state.files.values_mut() {
            let appended = data.volatile.len() > data.durable.len()
                && data.volatile.starts_with(&data.durable);
            let keep = match torn {
                Torn::Drop => data.durable.len(),
                Torn::Half if appended => {
                    data.durable.len() + (data.volatile.len() - data.durable.len()) / 2
                }
                Torn::All if appended => data.volatile.len(),
                _ => data.durable.len(),
            };
            if keep > data.durable.len() {
                data.volatile.truncate(keep);
                data.durable = data.volatile.clone();
            } else {
                data.volatile = data.durable.clone();
            }
        }
        state.dirs = kept;
        state.fail_after = None;
    }

    /// The volatile bytes of a file (for tests that damage or inspect packs).
    pub(crate) fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.lock();
        match state.lookup(path)? {
            Node::File(ino) => Some(state.files[&ino].volatile.clone()),
            Node::Dir => None,
        }
    }
}

#[derive(Debug)]
struct CrashFile {
    state: Arc<Mutex<State>>,
    ino: u64,
}

impl CrashFile {
    fn with<T>(&self, f: impl FnOnce(&mut State, u64) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.op()?;
        if !state.files.contains_key(&self.ino) {
            return Err(io::Error::other("stale file handle"));
        }
        f(&mut state, self.ino)
    }
}

impl File for CrashFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(|state, ino| {
            let data = &state.files[&ino].volatile;
            let start = offset as usize;
            let end = start + buf.len();
            if end > data.len() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf.copy_from_slice(&data[start..end]);
            Ok(())
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(|state, ino| {
            let data = &mut state.files.get_mut(&ino).expect("checked").volatile;
            let start = offset as usize;
            if data.len() < start + buf.len() {
                data.resize(start + buf.len(), 0);
            }
            data[start..start + buf.len()].copy_from_slice(buf);
            Ok(())
        })
    }

    fn sync(&self) -> io::Result<()> {
        self.with(|state, ino| {
            if !state.sync_is_a_lie {
                let data = state.files.get_mut(&ino).expect("checked");
                data.durable = data.volatile.clone();
            }
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|state, ino| Ok(state.files[&ino].volatile.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|state, ino| {
            state.files.get_mut(&ino).expect("checked").volatile.resize(len as usize, 0);
            Ok(())
        })
    }
}

impl Fs for CrashFs {
    fn kind(&self, path: &Path) -> io::Result<Option<Kind>> {
        let mut state = self.lock();
        state.op()?;
        Ok(state.lookup(path).map(|node| match node {
            Node::File(_) => Kind::File,
            Node::Dir => Kind::Dir,
        }))
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.op()?;
        if state.lookup(path).is_some() {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let (dir, name) = state.parent_mut(path)?;
        dir.volatile.insert(name, Node::Dir);
        state.dirs.insert(path.to_path_buf(), Dir::default());
        Ok(())
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let missing: Vec<PathBuf> = {
            let state = self.lock();
            path.ancestors()
                .take_while(|p| state.lookup(p).is_none())
                .map(Path::to_path_buf)
                .collect()
        };
        for dir in missing.iter().rev() {
            self.create_dir(dir)?;
        }
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let mut state = self.lock();
        state.op()?;
        let dir = state.dirs.get(path).ok_or(io::ErrorKind::NotFound)?;
        Ok(dir.volatile.keys().cloned().collect())
    }

    fn open(&self, path: &Path, _write: bool) -> io::Result<Box<dyn File>> {
        let mut state = self.lock();
        state.op()?;
        match state.lookup(path) {
            Some(Node::File(ino)) => Ok(Box::new(CrashFile { state: self.state.clone(), ino })),
            Some(Node::Dir) => Err(io::ErrorKind::IsADirectory.into()),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn File>> {
        let mut state = self.lock();
        state.op()?;
        if state.lookup(path).is_some() {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let ino = state.new_file(path)?;
        Ok(Box::new(CrashFile { state: self.state.clone(), ino }))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn File>> {
        let mut state = self.lock();
        state.op()?;
        let ino = match state.lookup(path) {
            Some(Node::File(ino)) => {
                state.files.get_mut(&ino).expect("live file").volatile.clear();
                ino
            }
            Some(Node::Dir) => return Err(io::ErrorKind::IsADirectory.into()),
            None => state.new_file(path)?,
        };
        Ok(Box::new(CrashFile { state: self.state.clone(), ino }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.op()?;
        let Some(Node::File(ino)) = state.lookup(from) else {
            return Err(io::ErrorKind::NotFound.into());
        };
        let (dir, name) = state.parent_mut(from)?;
        dir.volatile.remove(&name);
        let (dir, name) = state.parent_mut(to)?;
        dir.volatile.insert(name, Node::File(ino));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.op()?;
        let (dir, name) = state.parent_mut(path)?;
        match dir.volatile.get(&name) {
            Some(Node::File(_)) => {
                dir.volatile.remove(&name);
                Ok(())
            }
            Some(Node::Dir) => Err(io::ErrorKind::IsADirectory.into()),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.op()?;
        let dir = state.dirs.get_mut(path).ok_or(io::ErrorKind::NotFound)?;
        dir.durable = dir.volatile.clone();
        Ok(())
    }

    fn try_lock(&self, _: &Path, _: bool, _: bool) -> io::Result<Option<LockGuard>> {
        Ok(Some(Box::new(())))
    }
}

#[test]
fn the_double_drops_what_was_not_synced() {
    let root = Path::new("/crash");
    let fs = CrashFs::new(root);
    let dir = root.join("d");
    fs.create_dir(&dir).expect("mkdir");
    fs.sync_dir(root).expect("sync root");

    // Synced data in a synced directory entry survives.
    let kept = fs.create(&dir.join("kept")).expect("create");
    kept.write_all_at(b"durable", 0).expect("write");
    kept.sync().expect("sync");
    fs.sync_dir(&dir).expect("sync dir");
    kept.write_all_at(b" and volatile", 7).expect("write more");

    // A file whose entry was never synced disappears, even with synced data.
    let lost = fs.create(&dir.join("lost")).expect("create");
    lost.write_all_at(b"gone", 0).expect("write");
    lost.sync().expect("sync");

    // A rename that was not followed by a directory sync is undone.
    fs.rename(&dir.join("kept"), &dir.join("renamed")).expect("rename");

    fs.crash(Torn::Drop);
    assert_eq!(fs.contents(&dir.join("kept")).as_deref(), Some(&b"durable"[..]));
    assert_eq!(fs.contents(&dir.join("lost")), None);
    assert_eq!(fs.contents(&dir.join("renamed")), None);

    // A directory whose creation was not synced in its parent disappears with its contents.
    let sub = root.join("sub");
    fs.create_dir(&sub).expect("mkdir");
    let file = fs.create(&sub.join("f")).expect("create");
    file.write_all_at(b"x", 0).expect("write");
    file.sync().expect("sync");
    fs.sync_dir(&sub).expect("sync sub");
    fs.crash(Torn::Drop);
    assert_eq!(fs.kind(&sub).expect("kind"), None);

    // Torn modes keep part of an unsynced append.
    let f = fs.create(&dir.join("t")).expect("create");
    f.write_all_at(b"0123", 0).expect("write");
    f.sync().expect("sync");
    fs.sync_dir(&dir).expect("sync dir");
    f.write_all_at(b"456789", 4).expect("append");
    fs.crash(Torn::Half);
    assert_eq!(fs.contents(&dir.join("t")).as_deref(), Some(&b"0123456"[..]));

    // After `fail_after`, every operation fails.
    fs.fail_after(1);
    fs.kind(root).expect("one more operation");
    assert!(fs.kind(root).is_err());
}
