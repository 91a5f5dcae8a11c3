//! The restore engine: write files back from a snapshot, each checked against its hash.
//!
//! Every file is written to a short temporary name in its target directory (so that every
//! name the file system accepts can be restored), its plain BLAKE3 compared with the hash
//! recorded at ingest, its mode and mtime set, fsynced, and only then renamed into place: a
//! failed or interrupted restore never leaves a partial file under the real name. A file
//! already there with the recorded content is skipped, so an interrupted restore resumes;
//! other existing files are refused unless overwriting was asked for. A file that cannot be
//! restored (a chunk missing or damaged in every store) is reported and the rest go on.
//! Chunks are fetched and opened on several threads; the file is written in order.
//!
//! Nothing is written outside the target: each folder goes to a directory named by
//! [`folder_dirs`] (its name checked with [`triad_core::snapshot::check_name`], two folders of
//! the same name kept apart), entry names are checked when their tree is read, and a restore
//! never writes through a symbolic link it finds on its way.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crossbeam_channel::bounded;

use triad_core::keys::VaultKeys;
use triad_core::seal::{self, ObjectKind, Opened};
use triad_core::snapshot::{ChunkRef, FileEntry, NameError, Node, NodeKind, Tree};
use triad_core::{BlobId, FolderId, Timestamp};
use triad_store::{Appender, RealFs};

use crate::catalog::{Catalog, CatalogError, SnapshotInfo};

/// Restored bytes are buffered up to this much before a write.
const WRITE_BUF_LEN: usize = 1024 * 1024;

/// Options of one restore.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Replace files that exist at the target.
    pub overwrite: bool,
    /// Fetching threads (0: one per core).
    pub threads: usize,
}

/// What the engine reports while it works.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A file was restored and matched its hash.
    FileRestored {
        /// Where it was written.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// A file was already there with the recorded content, and was left as it is.
    FileSkipped {
        /// Where it is.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// A file could not be restored.
    FileFailed {
        /// Where it should have been written.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Files restored and checked.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files already there with the recorded content, left as they were.
    pub skipped: u64,
    /// Their bytes.
    pub skipped_bytes: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symbolic links created.
    pub links: u64,
    /// Files that failed, with the reason.
    pub failed: Vec<(PathBuf, String)>,
}

/// A restore could not proceed at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The snapshot's metadata could not be read.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A snapshot names its folder with something that is not one plain directory name (a
    /// forged or damaged snapshot): nothing of it is restored.
    #[error(
        "snapshot {snapshot} (device {device:?}) names its folder {name:?}, which is not a safe \
         directory name: nothing was restored; the device that made it may be compromised \
         (see `triad devices`)"
    )]
    FolderName {
        /// The snapshot, short.
        snapshot: String,
        /// The device name the snapshot gives.
        device: String,
        /// The name.
        name: String,
        /// Why it is refused.
        #[source]
        source: NameError,
    },
    /// A directory on the way to a restored path is a symbolic link (made by an earlier
    /// restore or by someone else): writing through it could land outside the target.
    #[error("{path} is a symbolic link: a restore does not write through links; move it away")]
    Link {
        /// The link.
        path: PathBuf,
    },
    /// The destination could not be written.
    #[error("cannot write to {path}")]
    Destination {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The directory under `dest` that each of `chosen` restores into, in the same order:
/// `dest/<folder name>`, or `dest/<folder name>-<folder id>` when two folders known to the
/// catalog share a name, so the same folder always lands in the same place and two folders
/// never share one. Fails, before anything is written, if a snapshot's folder name is not one
/// plain directory name.
pub fn folder_dirs(
    catalog: &Catalog<'_>,
    chosen: &[SnapshotInfo],
    dest: &Path,
) -> Result<Vec<PathBuf>, RestoreError> {
    for info in chosen {
        info.snapshot.checked_folder_name().map_err(|source| RestoreError::FolderName {
            snapshot: info.id.short(),
            device: info.snapshot.device_name.clone(),
            name: info.snapshot.folder_name.clone(),
            source,
        })?;
    }
    // Every folder the catalog knows, so that restoring one folder alone gives it the same
    // directory as restoring all of them. A catalog that cannot list them all still keeps
    // the chosen ones apart.
    let mut names: BTreeMap<FolderId, String> = BTreeMap::new();
    for info in catalog.latest().unwrap_or_default().iter().chain(chosen) {
        if let Ok(name) = info.snapshot.checked_folder_name() {
            names.insert(info.snapshot.folder, name.to_owned());
        }
    }
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for name in names.values() {
        *count.entry(name).or_default() += 1;
    }
    let mut dirs: BTreeMap<FolderId, String> = names
        .iter()
        .map(|(id, name)| {
            let dir = if count[name.as_str()] > 1 {
                format!("{name}-{}", id.short())
            } else {
                name.clone()
            };
            (*id, dir)
        })
        .collect();
    // A folder literally named like another's suffixed directory: fall back to whole ids.
    let mut seen = HashSet::new();
    let clash = dirs.values().any(|d| !seen.insert(d.clone()));
    if clash {
        for (id, dir) in &mut dirs {
            if count[names[id].as_str()] > 1 {
                *dir = format!("{}-{}", names[id], id.to_hex());
            }
        }
    }
    Ok(chosen.iter().map(|info| dest.join(&dirs[&info.snapshot.folder])).collect())
}

/// Restores `rel` (relative to the folder; `None` for everything) of `snapshot` into
/// `folder_dir` (one of [`folder_dirs`]).
pub fn restore(
    catalog: &Catalog<'_>,
    keys: &VaultKeys,
    snapshot: &SnapshotInfo,
    rel: Option<&Path>,
    folder_dir: &Path,
    options: Options,
    progress: &(dyn Fn(&Event) + Sync),
) -> Result<Report, RestoreError> {
    let _span = tracing::info_span!("restore", snapshot = %snapshot.id.short()).entered();
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(2, usize::from),
        n => n,
    };
    let mut run = Run { catalog, keys, options, threads, progress, report: Report::default() };
    let rel = rel.filter(|r| r.components().next().is_some());
    match (rel, rel.map(|r| catalog.find(snapshot, r)).transpose()?.flatten()) {
        (Some(rel), Some(node)) => {
            let target = folder_dir.join(rel);
            let parent = target.parent().unwrap_or(folder_dir);
            create_dirs_below(folder_dir, parent)?;
            run.node(&node, &target)?;
        }
        _ => {
            let root: Tree = catalog.load(snapshot.snapshot.root)?;
            create_dirs_below(folder_dir, folder_dir)?;
            run.tree(&root, folder_dir)?;
        }
    }
    Ok(run.report)
}

/// Every chunk that restoring `rel` (`None`: everything) of `snapshot` reads, each once.
pub fn chunks_of(
    catalog: &Catalog<'_>,
    snapshot: &SnapshotInfo,
    rel: Option<&Path>,
) -> Result<Vec<BlobId>, RestoreError> {
    let rel = rel.filter(|r| r.components().next().is_some());
    let mut nodes: Vec<Node> = match rel.map(|r| catalog.find(snapshot, r)).transpose()?.flatten() {
        Some(node) => vec![node],
        None => catalog.load::<Tree>(snapshot.snapshot.root)?.nodes,
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    while let Some(node) = nodes.pop() {
        match node.kind {
            NodeKind::Dir { tree } => nodes.extend(catalog.load::<Tree>(tree)?.nodes),
            NodeKind::File { entry } => {
                let entry: FileEntry = catalog.load(entry)?;
                out.extend(entry.chunks.iter().map(|c| c.blob).filter(|b| seen.insert(*b)));
            }
            NodeKind::Symlink { .. } => {}
        }
    }
    Ok(out)
}

fn create_dirs(path: &Path) -> Result<(), RestoreError> {
    fs::create_dir_all(path)
        .map_err(|source| RestoreError::Destination { path: path.into(), source })
}

/// Creates `path` (inside or equal to `top`), refusing to go through a symbolic link from
/// `top` down: a link left there (by a snapshot that held one) could point anywhere.
fn create_dirs_below(top: &Path, path: &Path) -> Result<(), RestoreError> {
    let below = path.strip_prefix(top).unwrap_or(Path::new(""));
    let mut at = top.to_path_buf();
    let mut steps = vec![at.clone()];
    for component in below.components() {
        at.push(component);
        steps.push(at.clone());
    }
    for step in steps {
        match fs::symlink_metadata(&step) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(RestoreError::Link { path: step });
            }
            Ok(_) => {}
            Err(_) => create_dirs(&step)?,
        }
    }
    Ok(())
}

/// Numbers the temporary files of this process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// What happened to one file.
enum Written {
    Restored,
    Skipped,
}

struct Run<'a> {
    catalog: &'a Catalog<'a>,
    keys: &'a VaultKeys,
    options: Options,
    threads: usize,
    progress: &'a (dyn Fn(&Event) + Sync),
    report: Report,
}

/// The prefix of a restore's temporary files.
const TMP_PREFIX: &str = ".triad-restore-";

/// Removes from `dir` the temporary files of restores that were stopped (their process is
/// gone): a restore run again cleans up after the one it resumes.
fn sweep_stale_tmp(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TMP_PREFIX)) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| i32::from_str_radix(p, 16).ok()) else {
            continue;
        };
        if pid <= 0 || process_exists(pid) {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => tracing::info!(file = %entry.path().display(),
                "removed the temporary file of a restore that was stopped"),
            Err(e) => tracing::warn!(file = %entry.path().display(), error = %e,
                "cannot remove the temporary file of a restore that was stopped"),
        }
    }
}

/// Whether a process `pid` runs (a signal 0 reaches it, or it exists under another user).
fn process_exists(pid: i32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else { return false };
    !matches!(rustix::process::test_kill_process(pid), Err(rustix::io::Errno::SRCH))
}

impl Run<'_> {
    fn tree(&mut self, tree: &Tree, dir: &Path) -> Result<(), RestoreError> {
        sweep_stale_tmp(dir);
        for node in &tree.nodes {
            let target = dir.join(std::ffi::OsStr::from_bytes(&node.name));
            self.node(node, &target)?;
        }
        Ok(())
    }

    fn node(&mut self, node: &Node, target: &Path) -> Result<(), RestoreError> {
        match &node.kind {
            NodeKind::Dir { tree } => {
                let tree: Tree = self.catalog.load(*tree)?;
                match fs::symlink_metadata(target) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) if !self.options.overwrite => {
                        self.fail(target, "exists and is not a directory (use --overwrite)".into());
                        return Ok(());
                    }
                    Ok(_) => {
                        fs::remove_file(target).map_err(|source| RestoreError::Destination {
                            path: target.into(),
                            source,
                        })?;
                        create_dirs(target)?;
                    }
                    Err(_) => create_dirs(target)?,
                }
                self.tree(&tree, target)?;
                self.report.dirs += 1;
                // Mode and mtime last: adding entries changes a directory's mtime.
                let _ = fs::set_permissions(target, fs::Permissions::from_mode(node.mode));
                if let Ok(dir) = File::open(target) {
                    let _ = dir.set_times(FileTimes::new().set_modified(system_time(node.mtime)));
                }
            }
            NodeKind::File { entry } => {
                let entry: FileEntry = match self.catalog.load(*entry) {
                    Ok(entry) => entry,
                    Err(e) => {
                        self.fail(target, format!("{:#}", DisplayChain(&e)));
                        return Ok(());
                    }
                };
                match self.file(&entry, target) {
                    Ok(Written::Restored) => {
                        self.report.files += 1;
                        self.report.bytes += entry.size;
                        (self.progress)(&Event::FileRestored {
                            path: target.into(),
                            bytes: entry.size,
                        });
                    }
                    Ok(Written::Skipped) => {
                        self.report.skipped += 1;
                        self.report.skipped_bytes += entry.size;
                        (self.progress)(&Event::FileSkipped {
                            path: target.into(),
                            bytes: entry.size,
                        });
                    }
                    Err(reason) => self.fail(target, reason),
                }
            }
            NodeKind::Symlink { target: link } => {
                if fs::symlink_metadata(target).is_ok() {
                    if !self.options.overwrite {
                        self.fail(target, "already exists (use --overwrite)".into());
                        return Ok(());
                    }
                    let _ = fs::remove_file(target);
                }
                let link = Path::new(std::ffi::OsStr::from_bytes(link));
                std::os::unix::fs::symlink(link, target)
                    .map_err(|source| RestoreError::Destination { path: target.into(), source })?;
                self.report.links += 1;
            }
        }
        Ok(())
    }

    fn fail(&mut self, target: &Path, reason: String) {
        // Said once, by the caller; paths go at debug.
        tracing::debug!(path = %target.display(), %reason, "file not restored");
        (self.progress)(&Event::FileFailed { path: target.into(), reason: reason.clone() });
        self.report.failed.push((target.into(), reason));
    }

    /// Writes one file; on failure returns the reason and leaves nothing at `target`. A
    /// regular file already at `target` with the recorded content is left as it is (its
    /// mode and mtime set), which is what lets an interrupted restore resume.
    fn file(&self, entry: &FileEntry, target: &Path) -> Result<Written, String> {
        if let Ok(meta) = fs::symlink_metadata(target) {
            if meta.is_file() && meta.len() == entry.size && has_content(target, entry) {
                let _ = fs::set_permissions(target, fs::Permissions::from_mode(entry.mode));
                if let Ok(file) = OpenOptions::new().write(true).open(target) {
                    let _ = file.set_times(FileTimes::new().set_modified(system_time(entry.mtime)));
                }
                return Ok(Written::Skipped);
            }
            if !self.options.overwrite {
                return Err("already exists (use --overwrite)".into());
            }
        }
        let dir = target.parent().unwrap_or(Path::new("."));
        let (tmp, out) = create_tmp(dir)?;
        let result = self.write_checked(entry, out, &tmp);
        let result = result.and_then(|()| {
            fs::rename(&tmp, target).map_err(|e| format!("cannot rename into place: {e}"))
        });
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| Written::Restored)
    }

    fn write_checked(&self, entry: &FileEntry, out: File, tmp: &Path) -> Result<(), String> {
        let out = Arc::new(out);
        let cannot_write = |e: io::Error| format!("cannot write: {e}");
        // Restored bytes go past the page cache where the file system allows it: a restore
        // writes far more than it reads back soon.
        let mut appender = Appender::open(&RealFs, tmp.to_owned(), out.clone(), 0)
            .map_err(|e| format!("cannot open {}: {e}", tmp.display()))?;
        let mut hasher = blake3::Hasher::new();
        self.fetch_in_order(&entry.chunks, &mut |plain| {
            hasher.update(plain);
            appender.push(plain);
            if appender.pending_len() >= WRITE_BUF_LEN {
                appender.flush(false).map_err(cannot_write)?;
            }
            Ok(())
        })?;
        appender.flush(true).map_err(cannot_write)?;
        if appender.written() != entry.size || *hasher.finalize().as_bytes() != entry.hash {
            return Err("restored content does not match the hash recorded at backup".into());
        }
        drop(appender);
        out.set_permissions(fs::Permissions::from_mode(entry.mode))
            .map_err(|e| format!("cannot set mode: {e}"))?;
        out.set_times(FileTimes::new().set_modified(system_time(entry.mtime)))
            .map_err(|e| format!("cannot set mtime: {e}"))?;
        out.sync_all().map_err(|e| format!("cannot sync: {e}"))
    }

    /// Fetches and opens `chunks` on several threads, handing the plaintexts to `sink` in
    /// order while later chunks are still being fetched. At most a few chunks per thread are
    /// in flight, so memory stays bounded whatever the file size.
    fn fetch_in_order(
        &self,
        chunks: &[ChunkRef],
        sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        let one = |chunk: &ChunkRef| -> Result<Opened, String> {
            let blob =
                self.catalog.blob(chunk.blob, "chunk").map_err(|e| DisplayChain(&e).to_string())?;
            let plain =
                seal::open_owned(self.keys, blob, ObjectKind::Chunk).map_err(|e| e.to_string())?;
            if plain.as_bytes().len() != chunk.len as usize {
                return Err(format!("chunk {} has the wrong length", chunk.blob.short()));
            }
            Ok(plain)
        };
        if chunks.len() <= 1 || self.threads == 1 {
            return chunks.iter().try_for_each(|c| sink(one(c)?.as_bytes()));
        }
        let (job_tx, job_rx) = bounded::<(usize, &ChunkRef)>(self.threads);
        let (done_tx, done_rx) = bounded::<(usize, Result<Opened, String>)>(self.threads);
        std::thread::scope(|scope| {
            for _ in 0..self.threads {
                let (job_rx, done_tx) = (job_rx.clone(), done_tx.clone());
                let one = &one;
                scope.spawn(move || {
                    for (i, chunk) in job_rx {
                        if done_tx.send((i, one(chunk))).is_err() {
                            return;
                        }
                    }
                });
            }
            drop((job_rx, done_tx));
            scope.spawn(move || {
                for job in chunks.iter().enumerate() {
                    if job_tx.send(job).is_err() {
                        return;
                    }
                }
            });
            // Reorder: results arrive in any order; hand them on in chunk order.
            let mut waiting = std::collections::BTreeMap::new();
            let mut next = 0;
            for (i, result) in done_rx {
                waiting.insert(i, result);
                while let Some(result) = waiting.remove(&next) {
                    sink(result?.as_bytes())?;
                    next += 1;
                }
            }
            Ok(())
        })
    }
}

/// Creates a new temporary file in `dir` under a short name of its own (a prefix on the real
/// name would push a long name past the file system's limit).
fn create_tmp(dir: &Path) -> Result<(PathBuf, File), String> {
    let mut last = None;
    for _ in 0..16 {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{TMP_PREFIX}{:x}-{n:x}", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(format!("cannot create {}: {e}", tmp.display())),
        }
    }
    let e = last.expect("the loop ran");
    Err(format!("cannot create a temporary file in {}: {e}", dir.display()))
}

/// Whether the file at `path` holds exactly the content `entry` records.
fn has_content(path: &Path, entry: &FileEntry) -> bool {
    let Ok(file) = File::open(path) else { return false };
    let mut hasher = blake3::Hasher::new();
    let mut reader = io::BufReader::with_capacity(WRITE_BUF_LEN, file);
    match io::copy(&mut reader, &mut hasher) {
        Ok(len) => len == entry.size && *hasher.finalize().as_bytes() == entry.hash,
        Err(_) => false,
    }
}

fn system_time(t: Timestamp) -> SystemTime {
    if t.secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::new(t.secs.unsigned_abs(), t.nanos)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs())
            + Duration::from_nanos(u64::from(t.nanos))
    }
}

/// Shows an error with its sources, `a: b: c`.
pub struct DisplayChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}
