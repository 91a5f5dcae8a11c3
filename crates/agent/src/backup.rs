//! The backup engine: scan a folder, store what changed, commit a snapshot, sign its head.
//!
//! Three phases. The *scan* walks the folder and reuses the file entry of every file whose
//! stat matches the metadata cache (and whose entry every target store holds). The *data*
//! phase reads the other files through a pipeline: the calling thread reads and cuts chunks
//! and hashes each file; sealing threads seal chunks; one writer thread writes the stores,
//! puts blobs, builds each file's entry once all its chunks are stored, and commits every
//! `commit_bytes`. Channels
//! between them are bounded, so memory stays flat whatever the file sizes. The *tree*
//! phase seals directory trees bottom-up, then the snapshot.
//!
//! Durability and crash safety: blobs are referenced only by objects written after them,
//! and the head is written only after the commit that makes the snapshot durable, so a kill
//! at any moment leaves either the previous head or the new one, each fully readable. The
//! metadata cache is written last. Blobs stored by an interrupted run are reused by the next.
//!
//! A file that changes while it is read is read again (up to `changed_file_retries` times);
//! if it keeps changing, its previous version is kept in the snapshot and it is reported.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Receiver, Sender, bounded};
use triad_core::chunk::Chunker;
use triad_core::head::{Head, SignedHead};
use triad_core::keys::VaultKeys;
use triad_core::roster::Roster;
use triad_core::seal::{self, ObjectKind, SealedBlob};
use triad_core::snapshot::{
    ChunkRef, FileEntry, Node, NodeKind, Object, Snapshot, Stats, TooLarge, Tree,
};
use triad_core::{BlobId, StoreId, Timestamp};
use triad_store::{Store, WriteError};

use crate::cache::MetadataCache;
use crate::catalog::{Catalog, CatalogError};
use crate::config::{Config, FolderConfig};
use crate::home::Home;
use crate::scan::{self, Child, DirNode, FileStat, ScanError, Skipped};

/// What the engine reports while it works, in order.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The scan is done; this much is to be read.
    Scanned {
        /// The folder's name.
        folder: String,
        /// Files in the folder.
        files: u64,
        /// Files to read (changed or new).
        files_to_read: u64,
        /// Bytes to read.
        bytes_to_read: u64,
    },
    /// A file was stored (or found unchanged in the store).
    FileStored {
        /// Path relative to the folder.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// An entry was passed over.
    Skipped {
        /// Path relative to the folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Pending blobs were made durable in every store.
    Committed {
        /// Blobs made durable.
        blobs: u64,
        /// Their bytes.
        bytes: u64,
    },
    /// The newest snapshots of the folder can no longer be read (their blobs were damaged or
    /// lost): this backup goes on from the newest one that can.
    HistoryLost {
        /// The sequences that cannot be read, newest first.
        lost: Vec<u64>,
        /// The sequence this backup goes on from (`None`: none of its snapshots can be read;
        /// the new snapshot starts a new chain, still numbered after the lost ones).
        from: Option<u64>,
    },
    /// The snapshot is durable and its head written.
    SnapshotCommitted {
        /// The snapshot.
        snapshot: BlobId,
        /// Its sequence.
        sequence: u64,
    },
}

/// Options of one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Allow a snapshot of an empty folder even if the last one had files.
    pub allow_empty: bool,
}

/// What a backup did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The folder's name.
    pub folder: String,
    /// The snapshot committed, or the unchanged latest one.
    pub snapshot: BlobId,
    /// Its sequence.
    pub sequence: u64,
    /// Whether nothing changed since the previous snapshot (no new snapshot was made).
    pub unchanged: bool,
    /// Totals of the snapshot.
    pub stats: Stats,
    /// Files read (new or changed).
    pub files_read: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Blobs that were new to the stores (data and metadata).
    pub new_blobs: u64,
    /// Of which data chunks.
    pub new_data_blobs: u64,
    /// Bytes of new blobs.
    pub new_bytes: u64,
    /// Entries passed over.
    pub skipped: Vec<Skipped>,
}

/// A backup failed. Nothing it did is referenced by a head unless it returned Ok.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The device is storage-only: it has no key to seal with.
    #[error(
        "this device is storage-only and cannot back up folders: only trusted devices hold the vault's keys"
    )]
    StorageOnly,
    /// The folder could not be walked.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The folder is empty but its last snapshot was not: maybe an unmounted disk.
    #[error(
        "folder {path} is empty but its last snapshot had {previous_files} files: if its disk is unmounted, mount it; if you really deleted everything, run `triad backup --allow-empty`"
    )]
    SourceEmpty {
        /// The folder.
        path: PathBuf,
        /// Files in the previous snapshot.
        previous_files: u64,
    },
    /// A store refused a write.
    #[error("cannot write to store {path}")]
    Store {
        /// The store.
        path: PathBuf,
        /// The cause.
        #[source]
        source: WriteError,
    },
    /// A store could not be read.
    #[error("cannot read store {path}")]
    StoreRead {
        /// The store.
        path: PathBuf,
        /// The cause.
        #[source]
        source: triad_store::ReadError,
    },
    /// The previous snapshot could not be read.
    #[error("cannot read the previous snapshot of this folder")]
    Catalog(#[source] Box<CatalogError>),
    /// A directory has more entries than one tree blob can hold.
    #[error("directory {path} has too many entries to back up as one directory")]
    TooLarge {
        /// The directory, relative to the folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: TooLarge,
    },
    /// No store to write to.
    #[error("no store to back up into: add one with `triad store add PATH --media MEDIA`")]
    NoStore,
}

/// One backup to run.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The folder.
    pub folder: &'a FolderConfig,
    /// When the scan starts (recorded in the snapshot and head).
    pub now: Timestamp,
    /// Options.
    pub options: Options,
}

impl From<CatalogError> for BackupError {
    fn from(e: CatalogError) -> Self {
        BackupError::Catalog(Box::new(e))
    }
}

/// The stores a backup writes to. Each operation takes the lock for itself alone (a look, a
/// put, a commit), so that others (a push arriving, an audit) use the stores in between.
pub type Stores = RwLock<Vec<Store>>;

fn look(stores: &Stores) -> RwLockReadGuard<'_, Vec<Store>> {
    stores.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(stores: &Stores) -> RwLockWriteGuard<'_, Vec<Store>> {
    stores.write().unwrap_or_else(PoisonError::into_inner)
}

/// Backs a folder up into every store in `stores`, and writes `roster` beside its head.
pub fn run(
    home: &Home,
    config: &Config,
    roster: &Roster,
    stores: &Stores,
    request: Request<'_>,
    progress: &(dyn Fn(&Event) + Sync),
) -> Result<Report, BackupError> {
    let Request { folder, now, options } = request;
    if look(stores).is_empty() {
        return Err(BackupError::NoStore);
    }
    let keys = home.keys().map_err(|_| BackupError::StorageOnly)?;
    let folder_name = folder
        .path
        .file_name()
        .map_or_else(|| "folder".to_owned(), |n| n.to_string_lossy().into_owned());
    let _span = tracing::info_span!("backup", folder = %folder.id.short()).entered();

    let excludes = config.excludes(folder)?;
    let scan = scan::scan(&folder.path, &excludes)?;
    for s in &scan.skipped {
        progress(&Event::Skipped { path: s.rel.clone(), reason: s.reason.clone() });
    }

    // The previous snapshot of this folder by this device, from any store; for a folder this
    // device took over from a lost one (the same folder id), the lost device's latest. When it
    // cannot be read, the newest earlier one that can, and the sequence goes on after the
    // newest known, so history never restarts at #1 while the stores hold some of it.
    let (parent, parent_is_mine, newest_sequence, lost) = {
        let guard = look(stores);
        let catalog = Catalog::new(keys, &guard);
        let heads = catalog.heads()?;
        let mine =
            heads.iter().find(|h| h.head.device == home.device_id() && h.head.folder == folder.id);
        let taken_over = heads
            .iter()
            .filter(|h| h.head.folder == folder.id)
            .max_by_key(|h| (h.head.time, h.head.sequence));
        match mine.or(taken_over) {
            Some(h) => {
                let (parent, lost) = readable_parent(&catalog, &guard, h)?;
                (parent, mine.is_some(), Some(h.head.sequence), lost)
            }
            None => (None, false, None, Vec::new()),
        }
    };
    if !lost.is_empty() {
        let from = parent.as_ref().map(|(_, p)| p.sequence);
        tracing::warn!(lost = ?lost, from = ?from, "newest snapshots of the folder are unreadable");
        progress(&Event::HistoryLost { lost: lost.clone(), from });
    }
    let now_empty = scan.files.is_empty() && scan.root.children.is_empty();
    if let Some((_, previous)) = parent.as_ref().filter(|_| now_empty && !options.allow_empty)
        && previous.stats.files > 0
    {
        return Err(BackupError::SourceEmpty {
            path: folder.path.clone(),
            previous_files: previous.stats.files,
        });
    }

    let cache_path = home.cache_dir().join(folder.id.to_hex());
    let old_cache = MetadataCache::load(&cache_path);
    let mut new_cache = MetadataCache::default();
    let mut entries: Vec<Option<BlobId>> = vec![None; scan.files.len()];
    let mut to_read: Vec<usize> = Vec::new();
    // Blobs a store dropped as damaged or lost: a file whose entry uses one is read again, so
    // that its chunks are stored again.
    let forgotten: HashSet<BlobId> = look(stores).iter().flat_map(Store::forgotten).collect();
    for (i, file) in scan.files.iter().enumerate() {
        let reusable = match old_cache.lookup(&file.rel, &file.stat) {
            Some(entry) => (all_contain(&look(stores), entry)?
                && (forgotten.is_empty() || uses_none(keys, stores, entry, &forgotten)))
            .then_some(entry),
            None => None,
        };
        match reusable {
            Some(entry) => {
                entries[i] = Some(entry);
                new_cache.insert(&file.rel, &file.stat, entry);
            }
            None => to_read.push(i),
        }
    }
    let bytes_to_read: u64 = to_read.iter().map(|&i| scan.files[i].stat.size).sum();
    progress(&Event::Scanned {
        folder: folder_name.clone(),
        files: scan.files.len() as u64,
        files_to_read: to_read.len() as u64,
        bytes_to_read,
    });

    let mut tally = Tally::default();
    let read = read_files(
        keys,
        config,
        &folder.path,
        &scan.files,
        &to_read,
        stores,
        &mut tally,
        progress,
    )?;
    let mut skipped = scan.skipped.clone();
    for outcome in read {
        let file = &scan.files[outcome.file];
        match outcome.result {
            Ok((entry, stat)) => {
                entries[outcome.file] = Some(entry);
                new_cache.insert(&file.rel, &stat, entry);
            }
            Err(reason) => {
                let kept = match old_cache.previous(&file.rel) {
                    Some(prev) if all_contain(&look(stores), prev)? => Some(prev),
                    _ => None,
                };
                let reason = match kept {
                    Some(_) => format!("{reason}; the previous version is kept"),
                    None => reason,
                };
                entries[outcome.file] = kept;
                progress(&Event::Skipped { path: file.rel.clone(), reason: reason.clone() });
                skipped.push(Skipped { rel: file.rel.clone(), reason });
            }
        }
    }

    // Trees, bottom-up.
    let mut stats = Stats::default();
    let mut trees = TreeWriter { keys, stores, tally: &mut tally };
    let root = trees.write(&scan.root, Path::new("."), &scan.files, &entries, &mut stats)?;

    // Unchanged only against this device's own snapshot: a folder taken over gets a head of
    // this device at its first backup, even with nothing changed.
    let unchanged =
        parent_is_mine && lost.is_empty() && parent.as_ref().is_some_and(|(_, p)| p.root == root);
    let (snapshot_id, sequence) = if let Some((id, previous)) =
        parent.as_ref().filter(|_| unchanged)
    {
        commit_all(stores, &mut tally, progress)?;
        (*id, previous.sequence)
    } else {
        let sequence = parent
            .as_ref()
            .map(|(_, p)| p.sequence)
            .max(newest_sequence)
            .map_or(1, |newest| newest + 1);
        let snapshot = Snapshot {
            folder: folder.id,
            folder_name: folder_name.clone(),
            folder_path: folder.path.as_os_str().as_encoded_bytes().to_vec(),
            device: home.device_id(),
            device_name: home.identity().name.clone(),
            sequence,
            time: now,
            parent: parent.as_ref().map(|(id, _)| *id),
            root,
            stats,
        };
        let blob = snapshot.seal(keys);
        put_all(stores, &blob, &mut tally, false, &[])?;
        commit_all(stores, &mut tally, progress)?;
        let head = Head {
            vault: home.vault(),
            device: home.device_id(),
            folder: folder.id,
            sequence,
            snapshot: blob.id(),
            time: now,
        }
        .sign(home.device_key());
        for store in write(stores).iter_mut() {
            let path = store.path().to_path_buf();
            store
                .write_head(&head)
                .map_err(|source| BackupError::Store { path: path.clone(), source })?;
            store.write_roster(roster).map_err(|source| BackupError::Store { path, source })?;
        }
        tracing::info!(snapshot = %blob.id().short(), sequence, files = stats.files, "snapshot committed");
        progress(&Event::SnapshotCommitted { snapshot: blob.id(), sequence });
        (blob.id(), sequence)
    };
    if let Err(e) = new_cache.save(&cache_path) {
        tracing::warn!(path = %cache_path.display(), error = %e, "cannot save the metadata cache; the next backup reads every file");
    }
    Ok(Report {
        folder: folder_name,
        snapshot: snapshot_id,
        sequence,
        unchanged,
        stats,
        files_read: tally.files_read,
        bytes_read: tally.bytes_read,
        new_blobs: tally.new_blobs,
        new_data_blobs: tally.new_data_blobs,
        new_bytes: tally.new_bytes,
        skipped,
    })
}

#[derive(Debug, Default)]
struct Tally {
    files_read: u64,
    bytes_read: u64,
    new_blobs: u64,
    new_data_blobs: u64,
    new_bytes: u64,
    pending_blobs: u64,
}

/// The snapshot `head` names and, if it cannot be read, the newest earlier snapshot of its
/// folder that can (from the head entries every store keeps), with the sequences lost.
#[allow(clippy::type_complexity)]
fn readable_parent(
    catalog: &Catalog<'_>,
    stores: &[Store],
    head: &SignedHead,
) -> Result<(Option<(BlobId, Snapshot)>, Vec<u64>), BackupError> {
    let err = match catalog.load::<Snapshot>(head.head.snapshot) {
        Ok(snapshot) => return Ok((Some((head.head.snapshot, snapshot)), Vec::new())),
        Err(err @ (CatalogError::Unreadable { .. } | CatalogError::Object { .. })) => err,
        Err(err) => return Err(err.into()),
    };
    tracing::warn!(snapshot = %head.head.snapshot.short(), error = %crate::restore::DisplayChain(&err),
        "the folder's newest snapshot is unreadable; looking for an earlier one");
    let mut earlier: Vec<SignedHead> = Vec::new();
    for store in stores {
        let history = store
            .head_history(head.head.device, head.head.folder)
            .map_err(|source| BackupError::StoreRead { path: store.path().into(), source })?;
        earlier.extend(history);
    }
    earlier.sort_by_key(|h| std::cmp::Reverse(h.head.sequence));
    earlier.dedup_by_key(|h| h.head.snapshot);
    let mut lost = vec![head.head.sequence];
    for older in earlier.iter().filter(|h| h.head.sequence < head.head.sequence) {
        match catalog.load::<Snapshot>(older.head.snapshot) {
            Ok(snapshot) => return Ok((Some((older.head.snapshot, snapshot)), lost)),
            Err(_) => {
                if lost.last() != Some(&older.head.sequence) {
                    lost.push(older.head.sequence);
                }
            }
        }
    }
    Ok((None, lost))
}

/// Whether the file entry `entry` uses none of `forgotten` (an entry that cannot be read counts
/// as using one: its file is read again).
fn uses_none(
    keys: &VaultKeys,
    stores: &Stores,
    entry: BlobId,
    forgotten: &HashSet<BlobId>,
) -> bool {
    let guard = look(stores);
    match Catalog::new(keys, &guard).load::<FileEntry>(entry) {
        Ok(file) => !file.chunks.iter().any(|c| forgotten.contains(&c.blob)),
        Err(_) => false,
    }
}

fn all_contain(stores: &[Store], id: BlobId) -> Result<bool, BackupError> {
    for store in stores {
        let has = store
            .contains(id)
            .map_err(|source| BackupError::StoreRead { path: store.path().into(), source })?;
        if !has {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Puts `blob` into every store; a data chunk (`data`) into every store but the catalogs
/// (`catalogs`), which hold metadata only.
fn put_all(
    stores: &Stores,
    blob: &SealedBlob,
    tally: &mut Tally,
    data: bool,
    catalogs: &[StoreId],
) -> Result<(), BackupError> {
    let mut new = false;
    for store in write(stores).iter_mut() {
        if data && catalogs.contains(&store.id()) {
            continue;
        }
        let path = store.path().to_path_buf();
        new |= store.put(blob).map_err(|source| BackupError::Store { path, source })?;
    }
    if new {
        tally.new_blobs += 1;
        tally.pending_blobs += 1;
        tally.new_bytes += blob.as_bytes().len() as u64;
        if data {
            tally.new_data_blobs += 1;
        }
    }
    Ok(())
}

fn commit_all(
    stores: &Stores,
    tally: &mut Tally,
    progress: &(dyn Fn(&Event) + Sync),
) -> Result<(), BackupError> {
    let mut stores = write(stores);
    let bytes = stores.iter().map(Store::pending_bytes).max().unwrap_or(0);
    for store in stores.iter_mut() {
        let path = store.path().to_path_buf();
        store.commit().map_err(|source| BackupError::Store { path, source })?;
    }
    if tally.pending_blobs > 0 {
        tracing::debug!(blobs = tally.pending_blobs, bytes, "committed");
        progress(&Event::Committed { blobs: tally.pending_blobs, bytes });
        tally.pending_blobs = 0;
    }
    Ok(())
}

struct TreeWriter<'a> {
    keys: &'a VaultKeys,
    stores: &'a Stores,
    tally: &'a mut Tally,
}

impl TreeWriter<'_> {
    fn write(
        &mut self,
        dir: &DirNode,
        rel: &Path,
        files: &[scan::FileRecord],
        entries: &[Option<BlobId>],
        stats: &mut Stats,
    ) -> Result<BlobId, BackupError> {
        stats.dirs += 1;
        let mut tree = Tree::default();
        for child in &dir.children {
            let node = match child {
                Child::File(i) => {
                    let Some(entry) = entries[*i] else { continue };
                    let file = &files[*i];
                    stats.files += 1;
                    stats.bytes += file.stat.size;
                    Node {
                        name: file_name_bytes(&file.rel),
                        kind: NodeKind::File { entry },
                        mode: file.stat.mode,
                        mtime: file.stat.mtime,
                    }
                }
                Child::Dir(sub) => {
                    let sub_rel = rel.join(std::ffi::OsStr::from_bytes(&sub.name));
                    let id = self.write(sub, &sub_rel, files, entries, stats)?;
                    Node {
                        name: sub.name.clone(),
                        kind: NodeKind::Dir { tree: id },
                        mode: sub.mode,
                        mtime: sub.mtime,
                    }
                }
                Child::Symlink { name, target, mtime } => Node {
                    name: name.clone(),
                    kind: NodeKind::Symlink { target: target.clone() },
                    mode: 0o777,
                    mtime: *mtime,
                },
            };
            tree.nodes.push(node);
        }
        let blob = tree
            .try_seal(self.keys)
            .map_err(|source| BackupError::TooLarge { path: rel.to_path_buf(), source })?;
        put_all(self.stores, &blob, self.tally, false, &[])?;
        Ok(blob.id())
    }
}

fn file_name_bytes(rel: &Path) -> Vec<u8> {
    rel.file_name().map(|n| n.as_encoded_bytes().to_vec()).unwrap_or_default()
}

/// The outcome of reading one file.
struct ReadOutcome {
    file: usize,
    /// The stored file entry and the stat it was read with, or why it was not stored.
    result: Result<(BlobId, FileStat), String>,
}

enum Job {
    Chunk { token: u64, index: u32, data: Bytes },
}

enum Done {
    Sealed { token: u64, index: u32, blob: SealedBlob, len: u32 },
    FileEnd { token: u64, file: usize, chunks: u32, hash: [u8; 32], stat: FileStat },
    FileFailed { file: usize, token: u64, reason: String, retry: bool },
}

/// Reads, seals and stores the files `to_read`; returns one outcome per file.
#[allow(clippy::too_many_arguments)]
fn read_files(
    keys: &VaultKeys,
    config: &Config,
    folder: &Path,
    files: &[scan::FileRecord],
    to_read: &[usize],
    stores: &Stores,
    tally: &mut Tally,
    progress: &(dyn Fn(&Event) + Sync),
) -> Result<Vec<ReadOutcome>, BackupError> {
    let threads = match config.backup.threads {
        0 => std::thread::available_parallelism().map_or(2, usize::from),
        n => n,
    };
    let (job_tx, job_rx) = bounded::<Job>(threads);
    let (done_tx, done_rx) = bounded::<Done>(threads * 4);
    let stop = AtomicBool::new(false);
    let mut token = 0u64;
    let retries = config.backup.changed_file_retries;
    let commit_bytes = config.backup.commit_bytes;
    let catalogs = config.catalog_ids();

    std::thread::scope(|scope| {
        for _ in 0..threads {
            let job_rx = job_rx.clone();
            let done_tx = done_tx.clone();
            scope.spawn(move || seal_worker(keys, job_rx, done_tx));
        }
        drop(job_rx);
        let writer = scope.spawn(|| {
            let out = Out { stores, catalogs: &catalogs, commit_bytes };
            let result = write_loop(keys, files, &out, tally, done_rx, progress);
            if result.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            result
        });
        // The reader: this thread, one file after the other (a file's plain hash is sequential).
        for &i in to_read {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let abs = folder.join(&files[i].rel);
            read_with_retries(&abs, i, retries, &mut token, &job_tx, &done_tx);
        }
        drop(job_tx);
        drop(done_tx);
        writer.join().expect("the writer thread does not panic")
    })
}

/// Reads one file, again while it changes under the reader, up to `retries` more times.
fn read_with_retries(
    abs: &Path,
    i: usize,
    retries: u32,
    token: &mut u64,
    job_tx: &Sender<Job>,
    done_tx: &Sender<Done>,
) {
    for attempt in 0..=retries {
        *token += 1;
        let token = *token;
        let reason = match read_one(abs, i, token, job_tx, done_tx) {
            Ok(ReadResult::Done) => return,
            Ok(ReadResult::Changed) if attempt < retries => {
                tracing::debug!(path = %abs.display(), attempt, "file changed while read; reading again");
                continue;
            }
            Ok(ReadResult::Changed) => {
                format!("kept changing while it was read ({} attempts)", retries + 1)
            }
            Ok(ReadResult::Gone) => "deleted during the backup".to_owned(),
            Err(e) => format!("cannot read: {e}"),
        };
        let _ = done_tx.send(Done::FileFailed { file: i, token, reason, retry: false });
        return;
    }
}

enum ReadResult {
    Done,
    Changed,
    Gone,
}

fn same_content_stat(a: &FileStat, b: &FileStat) -> bool {
    a.size == b.size && a.mtime == b.mtime && a.ctime == b.ctime && a.inode == b.inode
}

/// Reads one file, sends its chunks to the sealers and its end (or failure) to the writer.
fn read_one(
    abs: &Path,
    file: usize,
    token: u64,
    jobs: &Sender<Job>,
    done: &Sender<Done>,
) -> io::Result<ReadResult> {
    let mut f = match File::open(abs) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ReadResult::Gone),
        Err(e) => return Err(e),
    };
    let before = FileStat::of(&f.metadata()?);
    let chunker = Chunker::DEFAULT;
    // Room for several chunks. Chunks are handed to the sealers as views into this buffer
    // (no copy); the unconsumed tail is moved into a fresh buffer on each refill, which is
    // small next to what was consumed.
    let cap = chunker.max_len() * 3;
    // Small files (sidecars) get a small buffer: never more than the file, plus one byte to
    // see the end.
    let expected = usize::try_from(before.size).unwrap_or(usize::MAX);
    let mut buf = BytesMut::with_capacity(cap.min(expected.saturating_add(1)));
    let mut hasher = blake3::Hasher::new();
    let mut index = 0u32;
    let mut total = 0u64;
    let mut read = 0usize;
    let mut eof = false;
    let closed = |_| io::Error::other("backup stopped");
    loop {
        // What is left of the file as it was when opened, plus one byte to see the end.
        let want = expected.saturating_sub(read) + 1;
        let target = cap.min(buf.len().saturating_add(want));
        while !eof && buf.len() < target {
            let start = buf.len();
            buf.resize(target, 0);
            let n = f.read(&mut buf[start..])?;
            buf.truncate(start + n);
            read += n;
            eof = n == 0;
        }
        // A file that grew, or shrank, since it was opened is read again (or reported): stop
        // before its end is cut into a chunk, which the file once finished would not have.
        // Every chunk stored so far was cut by its content alone, and the file as it will be
        // makes the same ones, so a file still being copied or recorded leaves nothing that
        // no snapshot uses.
        if read > expected
            || (eof && read < expected)
            || (eof && f.metadata()?.len() != read as u64)
        {
            let failed =
                Done::FileFailed { file, token, reason: "changed while read".into(), retry: true };
            done.send(failed).map_err(|_| io::Error::other("backup stopped"))?;
            return Ok(ReadResult::Changed);
        }
        while let Some(len) = chunker.cut(&buf, eof) {
            let data = buf.split_to(len).freeze();
            hasher.update(&data);
            total += len as u64;
            jobs.send(Job::Chunk { token, index, data }).map_err(closed)?;
            index += 1;
        }
        if eof && buf.is_empty() {
            break;
        }
    }
    let after = FileStat::of(&f.metadata()?);
    let on_disk = match std::fs::symlink_metadata(abs) {
        Ok(meta) => FileStat::of(&meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ReadResult::Gone),
        Err(e) => return Err(e),
    };
    let done_msg = if same_content_stat(&before, &after)
        && same_content_stat(&after, &on_disk)
        && total == after.size
    {
        Done::FileEnd {
            token,
            file,
            chunks: index,
            hash: *hasher.finalize().as_bytes(),
            stat: after,
        }
    } else {
        Done::FileFailed { file, token, reason: "changed while read".into(), retry: true }
    };
    let changed = matches!(done_msg, Done::FileFailed { .. });
    done.send(done_msg).map_err(|_| io::Error::other("backup stopped"))?;
    Ok(if changed { ReadResult::Changed } else { ReadResult::Done })
}

fn seal_worker(keys: &VaultKeys, jobs: Receiver<Job>, done: Sender<Done>) {
    for job in jobs {
        let Job::Chunk { token, index, data } = job;
        let len = u32::try_from(data.len()).expect("chunks are at most a few MiB");
        let blob = seal::seal(keys, ObjectKind::Chunk, &data);
        drop(data);
        if done.send(Done::Sealed { token, index, blob, len }).is_err() {
            return;
        }
    }
}

#[derive(Default)]
struct Assembly {
    chunks: Vec<Option<ChunkRef>>,
    received: u32,
    end: Option<(usize, u32, [u8; 32], FileStat)>,
}

/// Where the writer puts what it is handed.
struct Out<'a> {
    stores: &'a Stores,
    /// The catalogs among them: no data chunks there.
    catalogs: &'a [StoreId],
    /// Commit whenever this many bytes are pending.
    commit_bytes: u64,
}

/// The writer: the only thread that touches the stores during the data phase.
fn write_loop(
    keys: &VaultKeys,
    files: &[scan::FileRecord],
    out: &Out<'_>,
    tally: &mut Tally,
    done: Receiver<Done>,
    progress: &(dyn Fn(&Event) + Sync),
) -> Result<Vec<ReadOutcome>, BackupError> {
    let Out { stores, catalogs, commit_bytes } = *out;
    let mut assemblies: HashMap<u64, Assembly> = HashMap::new();
    // Attempts that failed: their late chunks are stored (harmless) but not assembled.
    let mut dead: HashSet<u64> = HashSet::new();
    let mut outcomes = Vec::new();
    for msg in done {
        let token = match msg {
            Done::Sealed { token, index, blob, len } => {
                put_all(stores, &blob, tally, true, catalogs)?;
                if dead.contains(&token) {
                    continue;
                }
                let a = assemblies.entry(token).or_default();
                let index = index as usize;
                if a.chunks.len() <= index {
                    a.chunks.resize(index + 1, None);
                }
                a.chunks[index] = Some(ChunkRef { blob: blob.id(), len });
                a.received += 1;
                token
            }
            Done::FileEnd { token, file, chunks, hash, stat } => {
                assemblies.entry(token).or_default().end = Some((file, chunks, hash, stat));
                token
            }
            Done::FileFailed { file, token, reason, retry } => {
                assemblies.remove(&token);
                dead.insert(token);
                if !retry {
                    outcomes.push(ReadOutcome { file, result: Err(reason) });
                }
                continue;
            }
        };
        let complete = assemblies
            .get(&token)
            .is_some_and(|a| a.end.as_ref().is_some_and(|(_, n, _, _)| *n == a.received));
        if complete {
            let a = assemblies.remove(&token).expect("checked above");
            let (file, _, hash, stat) = a.end.expect("checked above");
            let chunks: Vec<ChunkRef> =
                a.chunks.into_iter().map(|c| c.expect("every chunk index arrived")).collect();
            let entry =
                FileEntry { size: stat.size, mtime: stat.mtime, mode: stat.mode, hash, chunks };
            let blob = match entry.try_seal(keys) {
                Ok(blob) => blob,
                Err(e) => {
                    outcomes
                        .push(ReadOutcome { file, result: Err(format!("cannot be stored: {e}")) });
                    continue;
                }
            };
            put_all(stores, &blob, tally, false, &[])?;
            tally.files_read += 1;
            tally.bytes_read += stat.size;
            progress(&Event::FileStored { path: files[file].rel.clone(), bytes: stat.size });
            outcomes.push(ReadOutcome { file, result: Ok((blob.id(), stat)) });
        }
        if look(stores).iter().map(Store::pending_bytes).max().unwrap_or(0) >= commit_bytes {
            commit_all(stores, tally, progress)?;
        }
    }
    Ok(outcomes)
}
