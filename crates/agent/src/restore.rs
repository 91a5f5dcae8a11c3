//! The restore engine: write files back from a snapshot, each checked against its hash.
//!
//! Every file is written to a temporary name in its target directory, its plain BLAKE3
//! compared with the hash recorded at ingest, its mode and mtime set, fsynced, and only then
//! renamed into place: a failed or interrupted restore never leaves a partial file under the
//! real name. Existing files are refused unless overwriting was asked for. A file that cannot
//! be restored (a chunk missing or damaged in every store) is reported and the rest go on.
//! Chunks are fetched and opened on several threads; the file is written in order.

use std::collections::HashSet;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::bounded;

use triad_core::keys::VaultKeys;
use triad_core::seal::{self, ObjectKind, Opened};
use triad_core::snapshot::{ChunkRef, FileEntry, Node, NodeKind, Tree};
use triad_core::{BlobId, Timestamp};
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

/// Restores `rel` (relative to the folder; `None` for everything) of `snapshot` into
/// `dest/<folder name>/…`.
pub fn restore(
    catalog: &Catalog<'_>,
    keys: &VaultKeys,
    snapshot: &SnapshotInfo,
    rel: Option<&Path>,
    dest: &Path,
    options: Options,
    progress: &(dyn Fn(&Event) + Sync),
) -> Result<Report, RestoreError> {
    let _span = tracing::info_span!("restore", snapshot = %snapshot.id.short()).entered();
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(2, usize::from),
        n => n,
    };
    let mut run = Run { catalog, keys, options, threads, progress, report: Report::default() };
    let folder_dir = dest.join(&snapshot.snapshot.folder_name);
    let rel = rel.filter(|r| r.components().next().is_some());
    match (rel, rel.map(|r| catalog.find(snapshot, r)).transpose()?.flatten()) {
        (Some(rel), Some(node)) => {
            let target = folder_dir.join(rel);
            let parent = target.parent().unwrap_or(&folder_dir);
            create_dirs(parent)?;
            run.node(&node, &target)?;
        }
        _ => {
            let root: Tree = catalog.load(snapshot.snapshot.root)?;
            create_dirs(&folder_dir)?;
            run.tree(&root, &folder_dir)?;
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

struct Run<'a> {
    catalog: &'a Catalog<'a>,
    keys: &'a VaultKeys,
    options: Options,
    threads: usize,
    progress: &'a (dyn Fn(&Event) + Sync),
    report: Report,
}

impl Run<'_> {
    fn tree(&mut self, tree: &Tree, dir: &Path) -> Result<(), RestoreError> {
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
                    Ok(()) => {
                        self.report.files += 1;
                        self.report.bytes += entry.size;
                        (self.progress)(&Event::FileRestored {
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
        tracing::warn!(path = %target.display(), %reason, "file not restored");
        (self.progress)(&Event::FileFailed { path: target.into(), reason: reason.clone() });
        self.report.failed.push((target.into(), reason));
    }

    /// Writes one file; on failure returns the reason and leaves nothing at `target`.
    fn file(&self, entry: &FileEntry, target: &Path) -> Result<(), String> {
        if fs::symlink_metadata(target).is_ok() && !self.options.overwrite {
            return Err("already exists (use --overwrite)".into());
        }
        let dir = target.parent().unwrap_or(Path::new("."));
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(".triad-restore-{}-{name}", std::process::id()));
        let result = self.write_checked(entry, &tmp);
        let result = result.and_then(|()| {
            fs::rename(&tmp, target).map_err(|e| format!("cannot rename into place: {e}"))
        });
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn write_checked(&self, entry: &FileEntry, tmp: &Path) -> Result<(), String> {
        let out = Arc::new(
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(tmp)
                .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?,
        );
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
