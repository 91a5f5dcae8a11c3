//! The store: layout on disk, the commit order, open checks, scrub and rebuild.
//!
//! # Layout
//!
//! ```text
//! <store>/triad-store            marker: magic, version, store id, vault id, media, created
//!         lock                   flock: exclusive for a writer, shared for readers
//!         packs/00000000.pack    pack files: header, then entries (header + blob bytes)
//!         index/index.redb       redb: blob id -> location, pack -> committed length
//!         heads/<device>/<folder> one signed head per folder, replaced atomically; a copy of
//!                                what the head entries in the packs say, rebuilt from them
//!         roster                 the vault's roster, replaced atomically
//!         reserve                1 MiB of zeros, released when the index needs room to open
//! ```
//!
//! # What survives a crash
//!
//! A commit writes the buffered pack bytes, syncs each pack file written to, syncs the
//! `packs/` directory when a pack file was created, and only then commits one index batch that
//! records the new blob locations and each pack's new committed length (durable when it
//! returns). So every location in the index points at synced bytes. Pack bytes past a pack's
//! committed length are a torn or uncommitted tail: the next read-write open cuts them off, and
//! removes pack files newer than every committed pack. Heads and the roster are written to a
//! temporary file, synced, renamed over the old file, and the directory is synced.
//!
//! # Heads live in the packs too
//!
//! Taking a head appends it to the pack as a head entry and commits (the index records where
//! each folder's head entries are) before the head file is replaced. So the packs alone say
//! which snapshot every folder is at, and every earlier head: a read-write open puts back a
//! head file that is missing, damaged or older than the packs say (and reports it, see
//! [`Store::repairs`]), one damaged head file never hides the others, and a folder whose newest
//! snapshot was lost can go on from an earlier one ([`Store::head_history`]). Head files written
//! by earlier builds get their head entry at the first read-write open.
//!
//! # Lost and damaged blobs are forgotten
//!
//! A blob whose bytes a pack no longer holds intact (a pack cut short or deleted, found at
//! open; or damage a scrub found, see [`Store::forget_damaged`]) is dropped from the index with
//! a tombstone and listed as *forgotten*, so that the next put of it (a backup that reads the
//! file again, or a push) stores it again, and whoever writes can ask what to put back.
//!
//! The store has one owner (`&mut self` for puts and commits); reads take `&self` and may run
//! from several threads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, trace, warn};
use triad_core::codec::RECORD_LEN_MAX;
use triad_core::head::SignedHead;
use triad_core::roster::Roster;
use triad_core::seal::{BLOB_LEN_MAX, SealedBlob};
use triad_core::{BlobId, DeviceId, FolderId, Media, StoreId, Timestamp, VaultId};
use triad_proto::store::{
    EntryHeader, EntryKind, FrameError, MARKER_LEN_MAX, Marker, PACK_VERSION, PackHeader,
};

use crate::append::Appender;
use crate::error::{CreateError, OpenError, Problem, ReadError, WriteError, is_full, is_read_only};
use crate::fs::{File, Fs, Kind, LockGuard, RealFs};
use crate::index::{Batch, HeadRecord, Index, IndexError, Location, MemIndex, RedbIndex};
use crate::pack;

const MARKER_FILE: &str = "triad-store";
const LOCK_FILE: &str = "lock";
const PACKS_DIR: &str = "packs";
const HEADS_DIR: &str = "heads";
const INDEX_DIR: &str = "index";
const ROSTER_FILE: &str = "roster";
/// A file of zeros kept next to the index: opening the index writes to it, so a store on a full
/// disk releases the reserve to open and recreates it when there is room again.
const RESERVE_FILE: &str = "reserve";
const RESERVE_LEN: usize = 1024 * 1024;
/// The largest head file read.
const HEAD_LEN_MAX: u64 = 64 * 1024;
/// Entries per index batch while rebuilding.
const REBUILD_BATCH: usize = 10_000;
/// Scrub reports progress after this many bytes.
const PROGRESS_EVERY: u64 = 16 * 1024 * 1024;

/// Settings of a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Memory the index may use for its cache, in bytes.
    pub index_cache_bytes: u64,
    /// The size at which a pack file is closed and a new one started, in bytes.
    pub pack_len_target: u64,
    /// Bytes of new blobs buffered before they are written to the pack.
    pub write_buf_len: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            index_cache_bytes: 32 * 1024 * 1024,
            pack_len_target: triad_proto::limits::PACK_LEN_TARGET,
            write_buf_len: 1024 * 1024,
        }
    }
}

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Exclusive: one writer at a time.
    ReadWrite,
    /// Shared, and works on a read-only file system: the index is rebuilt in memory from the
    /// pack entry headers.
    ReadOnly,
}

/// A committed blob and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobInfo {
    /// The blob.
    pub id: BlobId,
    /// Its length in bytes.
    pub len: u32,
    /// Where its bytes are.
    pub location: Location,
}

/// Counts of what a store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Committed blobs.
    pub blobs: u64,
    /// Bytes of committed blobs.
    pub bytes: u64,
    /// Pack files.
    pub packs: u64,
    /// Bytes of pack files (committed lengths), with headers and removed blobs.
    pub pack_bytes: u64,
}

/// A damaged blob or pack entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The blob, when it is known (a damaged entry header may not say).
    pub blob: Option<BlobId>,
    /// The pack file.
    pub pack: PathBuf,
    /// Offset in the pack: of the blob's bytes for an indexed blob, of the entry otherwise.
    pub offset: u64,
    /// What is wrong.
    pub problem: Problem,
}

/// The result of a scrub.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScrubReport {
    /// Blobs checked.
    pub blobs: u64,
    /// Bytes checked.
    pub bytes: u64,
    /// What is damaged.
    pub damaged: Vec<Damage>,
}

/// A scrub under way (see [`Store::start_scrub`]).
#[derive(Debug)]
pub struct Scrubbing {
    blobs: Vec<BlobInfo>,
    next: usize,
    report: ScrubReport,
    /// The pack being read, and its file (`None`: the pack is missing).
    current: Option<(u32, Option<Arc<dyn File>>)>,
    buf: Vec<u8>,
}

impl Scrubbing {
    /// What the scrub found so far (everything, once it is done).
    pub fn finish(self) -> ScrubReport {
        self.report
    }
}

/// What is wrong with one folder's head file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeadFault {
    /// The file cannot be read, does not decode, does not verify, or names another folder.
    Damaged(String),
    /// The packs hold a head of the folder and the file is not there.
    Missing,
    /// The packs hold a newer head of the folder than the file.
    Older {
        /// The sequence in the file.
        file: u64,
    },
}

/// A head file that was (or, on a read-only open, would be) put back from the packs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadProblem {
    /// The head file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub fault: HeadFault,
    /// The sequence of the newest head the packs hold for the folder, if any.
    pub from_packs: Option<u64>,
    /// Whether the file was rewritten from the packs.
    pub restored: bool,
}

impl std::fmt::Display for HeadProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.display();
        match &self.fault {
            HeadFault::Damaged(why) => write!(f, "head file {path} is damaged ({why})")?,
            HeadFault::Missing => write!(f, "head file {path} is missing")?,
            HeadFault::Older { file } => {
                write!(f, "head file {path} is at #{file}, older than the packs say")?
            }
        }
        match (self.from_packs, self.restored) {
            (Some(seq), true) => write!(f, "; restored #{seq} from the packs"),
            (Some(seq), false) => write!(
                f,
                "; the packs hold #{seq}, which is used instead (a read-write open puts the file back)"
            ),
            (None, _) => write!(
                f,
                "; the packs hold no head of this folder, so its history is not listed here until \
                 its device backs it up or pushes it again"
            ),
        }
    }
}

/// Committed blobs a pack no longer holds (it was cut short or deleted), found at open and
/// forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostBlobs {
    /// The pack file.
    pub pack: PathBuf,
    /// Blobs lost.
    pub blobs: u64,
    /// Bytes of them.
    pub bytes: u64,
    /// What happened to the pack.
    pub problem: Problem,
}

/// What an open found wrong and mended (see the module's notes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Repairs {
    /// Head files that were missing, damaged or behind the packs.
    pub heads: Vec<HeadProblem>,
    /// Blobs lost with the end of a pack, or a whole pack.
    pub lost: Vec<LostBlobs>,
}

impl Repairs {
    /// Whether the open found nothing wrong.
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty() && self.lost.is_empty()
    }
}

/// The result of rebuilding the index from the packs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RebuildReport {
    /// Packs read.
    pub packs: u64,
    /// Blobs indexed.
    pub blobs: u64,
    /// Bytes of blobs indexed.
    pub bytes: u64,
    /// Tombstones honoured.
    pub tombstones: u64,
    /// Head entries found.
    pub heads: u64,
    /// Entries that were damaged and not indexed.
    pub damaged: Vec<Damage>,
}

/// A blob store on disk. See the crate docs and the module's design note.
#[derive(Debug)]
pub struct Store {
    fs: Arc<dyn Fs>,
    index: Box<dyn Index>,
    path: PathBuf,
    index_path: PathBuf,
    marker: Marker,
    access: Access,
    config: Config,
    /// Held for the store's lifetime: exclusive for read-write, shared for read-only.
    _lock: Option<LockGuard>,
    /// Open pack files for reading, by sequence number.
    readers: RwLock<HashMap<u32, Arc<dyn File>>>,
    /// Committed length of every pack, as in the index.
    committed: BTreeMap<u32, u64>,
    /// The smallest pack sequence number no file uses.
    next_seq: u32,
    /// The pack being appended to.
    writer: Option<Writer>,
    /// Packs closed since the last commit, with bytes to sync and record.
    closed: Vec<Writer>,
    /// Whether a pack file was created since the packs directory was last synced.
    packs_dir_dirty: bool,
    /// Puts and removes since the last commit.
    pending: HashMap<BlobId, Pending>,
    pending_bytes: u64,
    /// Head entries appended since the last commit.
    pending_heads: Vec<HeadRecord>,
    /// Blobs forgotten (`true`) or stored again (`false`) since the last commit.
    pending_forgotten: Vec<(BlobId, bool)>,
    /// Blobs forgotten as committed.
    forgotten: HashSet<BlobId>,
    /// What the open found and mended.
    repairs: Repairs,
    /// Serialises head and roster writes (read, compare, replace).
    meta_lock: Mutex<()>,
}

#[derive(Debug, Clone, Copy)]
enum Pending {
    Put(Location),
    Remove,
}

/// The pack being appended to.
#[derive(Debug)]
struct Writer {
    seq: u32,
    /// The length recorded in the index; 0 if the pack is not in the index yet.
    committed: u64,
    out: Appender,
}

impl Writer {
    fn buffered(&self, location: Location) -> Option<&[u8]> {
        if location.pack != self.seq {
            return None;
        }
        self.out.buffered(location)
    }
}

/// Where the index of an opening store comes from.
enum IndexSource {
    Given(Box<dyn Index>),
    Disk,
    Scan,
}

impl Store {
    /// Creates a new store at `path`, which must not exist or be an empty directory. Writes the
    /// `packs/` and `heads/` directories, the index and, last, the marker (file and directory
    /// synced), so that an interrupted create never leaves something that looks like a store.
    pub fn create(
        path: &Path,
        vault: VaultId,
        media: Media,
        id: StoreId,
        now: Timestamp,
        config: &Config,
    ) -> Result<Store, CreateError> {
        Self::create_inner(Arc::new(RealFs), None, path, vault, media, id, now, config)
    }

    /// Whether `path` holds a store (its marker and its packs), whichever vault it belongs to.
    pub fn exists(path: &Path) -> bool {
        path.join(MARKER_FILE).is_file() && path.join(PACKS_DIR).is_dir()
    }

    /// Opens an existing store. `expected` is the store id the caller registered at this path
    /// (`None`: any); `vault` must match the marker. Read-write opens take the store's lock
    /// exclusively and trim torn pack tails; read-only opens take it shared, never write, and
    /// build the index in memory from the pack entry headers.
    pub fn open(
        path: &Path,
        expected: Option<StoreId>,
        vault: VaultId,
        access: Access,
        config: &Config,
    ) -> Result<Store, OpenError> {
        let source = match access {
            Access::ReadWrite => IndexSource::Disk,
            Access::ReadOnly => IndexSource::Scan,
        };
        Self::open_inner(Arc::new(RealFs), source, path, expected, vault, access, config, None)
    }

    /// Opens a store over an arbitrary file layer and index (for tests).
    pub fn open_with(
        fs: Arc<dyn Fs>,
        index: Box<dyn Index>,
        path: &Path,
        expected: Option<StoreId>,
        vault: VaultId,
        access: Access,
        config: &Config,
    ) -> Result<Store, OpenError> {
        let source = IndexSource::Given(index);
        Self::open_inner(fs, source, path, expected, vault, access, config, None)
    }

    /// Creates a store over an arbitrary file layer and index (for tests).
    #[allow(clippy::too_many_arguments)]
    pub fn create_with(
        fs: Arc<dyn Fs>,
        index: Box<dyn Index>,
        path: &Path,
        vault: VaultId,
        media: Media,
        id: StoreId,
        now: Timestamp,
        config: &Config,
    ) -> Result<Store, CreateError> {
        Self::create_inner(fs, Some(index), path, vault, media, id, now, config)
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store's id, from its marker.
    pub fn id(&self) -> StoreId {
        self.marker.store
    }

    /// The vault the store belongs to.
    pub fn vault(&self) -> VaultId {
        self.marker.vault
    }

    /// The media the store lives on.
    pub fn media(&self) -> Media {
        self.marker.media
    }

    /// When the store was created.
    pub fn created(&self) -> Timestamp {
        self.marker.created
    }

    /// How the store was opened.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Whether the blob is in the store (committed, or put and not yet committed).
    pub fn contains(&self, id: BlobId) -> Result<bool, ReadError> {
        Ok(self.location(id)?.is_some())
    }

    /// Whether the blob is durably in the store: committed, and not removed since. A put not
    /// yet committed does not count: it may still be dropped.
    pub fn holds_committed(&self, id: BlobId) -> Result<bool, ReadError> {
        if matches!(self.pending.get(&id), Some(Pending::Remove)) {
            return Ok(false);
        }
        Ok(self.index.get(&id).map_err(|source| self.index_error(source))?.is_some())
    }

    /// Appends the blob to the current pack. Buffered: neither durable nor acknowledged until
    /// [`Store::commit`] returns. Returns `false` (and writes nothing) if it was already present.
    pub fn put(&mut self, blob: &SealedBlob) -> Result<bool, WriteError> {
        self.check_writable()?;
        let id = blob.id();
        if self.location(id).map_err(WriteError::Read)?.is_some() {
            return Ok(false);
        }
        let bytes = blob.as_bytes();
        let header = EntryHeader::blob(id, bytes.len());
        let len = u32::try_from(bytes.len()).expect("a sealed blob is under BLOB_LEN_MAX");
        let location = self.append(header, bytes)?;
        debug_assert_eq!(location.len, len);
        self.pending.insert(id, Pending::Put(location));
        if self.forgotten.contains(&id) {
            self.pending_forgotten.push((id, false));
        }
        self.pending_bytes += header.entry_len();
        trace!(blob = %id, pack = location.pack, offset = location.offset, "blob put");
        Ok(true)
    }

    /// Removes a blob: forgets it in the index and appends a tombstone to the current pack (so
    /// that a rebuild does not resurrect it); durable at the next commit. Space is not reclaimed.
    /// Returns `false` if the blob was not present.
    pub fn remove(&mut self, id: BlobId) -> Result<bool, WriteError> {
        self.check_writable()?;
        if self.location(id).map_err(WriteError::Read)?.is_none() {
            return Ok(false);
        }
        let header = EntryHeader::tombstone(id);
        self.append(header, &[])?;
        self.pending.insert(id, Pending::Remove);
        self.pending_bytes += header.entry_len();
        trace!(blob = %id, "blob removed");
        Ok(true)
    }

    /// Makes every put and remove since the last commit durable and indexed, in this order:
    /// write the buffered bytes, sync every pack file written to (and the packs directory when a
    /// pack was created), then record the new locations and pack lengths in one index batch,
    /// durable when it returns. Only after `Ok` may a caller acknowledge or reference those
    /// blobs.
    ///
    /// On error nothing new is acknowledged, nothing committed before is lost, the uncommitted
    /// puts and removes are dropped (put them again), and the store stays usable.
    pub fn commit(&mut self) -> Result<(), WriteError> {
        self.check_writable()?;
        if self.pending.is_empty()
            && self.pending_heads.is_empty()
            && self.pending_forgotten.is_empty()
            && self.closed.is_empty()
            && self.writer_is_clean()
        {
            return Ok(());
        }
        if let Err(err) = self.sync_packs() {
            self.rewind();
            return Err(err);
        }
        let mut batch = Batch::default();
        for (id, pending) in &self.pending {
            match pending {
                Pending::Put(location) => batch.puts.push((*id, *location)),
                Pending::Remove => batch.removes.push(*id),
            }
        }
        for writer in self.closed.iter().chain(&self.writer) {
            batch.pack_lengths.push((writer.seq, writer.out.written()));
        }
        batch.heads = std::mem::take(&mut self.pending_heads);
        batch.forgotten = std::mem::take(&mut self.pending_forgotten);
        if let Err(source) = self.index.commit(&batch) {
            // The index may or may not hold the batch now (the engine can fail while syncing a
            // commit that reaches the disk all the same). So the synced bytes stay where they are
            // and are never overwritten: the next commit records the pack lengths past them.
            self.pending.clear();
            self.pending_bytes = 0;
            if index_is_full(&source) {
                return Err(WriteError::Full { path: self.path.clone() });
            }
            return Err(WriteError::Index { path: self.index_path.clone(), source });
        }
        for writer in self.closed.iter_mut().chain(&mut self.writer) {
            writer.committed = writer.out.written();
            self.committed.insert(writer.seq, writer.committed);
        }
        self.closed.clear();
        for (id, dropped) in &batch.forgotten {
            if *dropped {
                self.forgotten.insert(*id);
            } else {
                self.forgotten.remove(id);
            }
        }
        debug!(
            store = %self.marker.store,
            blobs = batch.puts.len(),
            removed = batch.removes.len(),
            bytes = self.pending_bytes,
            "commit"
        );
        self.pending.clear();
        self.pending_bytes = 0;
        Ok(())
    }

    /// Bytes put (or removed) but not committed yet, entry headers included.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// Reads a blob (committed, or put and not yet committed) with one positioned read and
    /// verifies it against its address.
    pub fn get(&self, id: BlobId) -> Result<SealedBlob, ReadError> {
        let location = self.location(id)?.ok_or(ReadError::Missing { blob: id })?;
        let buffered =
            self.closed.iter().chain(&self.writer).find_map(|writer| writer.buffered(location));
        let bytes = match buffered {
            Some(bytes) => bytes.to_vec(),
            None => self.read_blob(id, location)?,
        };
        SealedBlob::verify(id, bytes).map_err(|_| ReadError::Corrupt {
            blob: id,
            path: self.pack_path(location.pack),
            offset: location.offset,
            problem: Problem::Mismatch,
        })
    }

    /// Location and length of every committed blob, sorted by (pack, offset).
    pub fn blobs(&self) -> Result<Vec<BlobInfo>, ReadError> {
        let mut out = Vec::new();
        self.index
            .scan(&mut |id, location| out.push(BlobInfo { id, len: location.len, location }))
            .map_err(|source| self.index_error(source))?;
        out.sort_unstable_by_key(|info| (info.location.pack, info.location.offset));
        Ok(out)
    }

    /// Takes a head: appends it to the pack as a head entry and commits (which also makes every
    /// put so far durable), then stores it as `heads/<device hex>/<folder hex>`, atomically
    /// (temporary file, sync, rename, sync directory). Returns `Ok(false)` and keeps the stored
    /// head if that one has a higher sequence, or the same sequence and other contents. The head
    /// must verify for the store's vault.
    pub fn write_head(&mut self, head: &SignedHead) -> Result<bool, WriteError> {
        self.check_writable()?;
        head.verify(self.marker.vault).map_err(WriteError::Head)?;
        let (device, folder) = (head.head.device, head.head.folder);
        let file = self.head_path(device, folder);
        let in_file = match self.read_head(&file) {
            Ok(found) => found.filter(|h| h.head.device == device && h.head.folder == folder),
            Err(ReadError::Head { path, source }) => {
                warn!(path = %path.display(), error = %source, "replacing a damaged head file");
                None
            }
            Err(err) => return Err(WriteError::Read(err)),
        };
        let records = self.head_records().map_err(WriteError::Read)?;
        let records = records.get(&(device, folder)).map(Vec::as_slice).unwrap_or_default();
        let in_packs = self.newest_pack_head(records);
        let stored = match (in_file.clone(), in_packs) {
            (Some(a), Some(b)) => Some(if b.head.sequence > a.head.sequence { b } else { a }),
            (a, b) => a.or(b),
        };
        if let Some(stored) = &stored {
            if stored.head.sequence > head.head.sequence {
                debug!(folder = %folder, stored = stored.head.sequence,
                    offered = head.head.sequence, "older head refused");
                return Ok(false);
            }
            if stored.head.sequence == head.head.sequence && stored != head {
                warn!(folder = %folder, sequence = stored.head.sequence,
                    "a different head with the same sequence refused");
                return Ok(false);
            }
        }
        if !records.iter().any(|r| r.sequence == head.head.sequence) {
            let record = head.encode();
            let header = EntryHeader::head(&record);
            let location = self.append(header, &record)?;
            self.pending_heads.push(HeadRecord {
                device,
                folder,
                sequence: head.head.sequence,
                location,
            });
            self.pending_bytes += header.entry_len();
            self.commit()?;
        }
        if in_file.as_ref() == Some(head) {
            // Already there; make sure its rename is durable.
            let dir = parent_dir(&file);
            self.fs.sync_dir(&dir).map_err(|e| self.write_error(&dir, e))?;
        } else {
            self.write_head_file(head)?;
        }
        debug!(folder = %folder, sequence = head.head.sequence, "head stored");
        Ok(true)
    }

    /// The newest head of every folder, each verified for the store's vault, sorted by device
    /// and folder: from its head file, or from the packs when they hold a newer one or the file
    /// is missing or damaged (see [`Store::repairs`] for what was wrong). One damaged head never
    /// hides the others.
    pub fn heads(&self) -> Result<Vec<SignedHead>, ReadError> {
        let (mut out, _) = self.head_files()?;
        for (key, records) in self.head_records()? {
            let file_seq = out.get(&key).map(|h| h.head.sequence);
            if records.last().map(|r| r.sequence) > file_seq
                && let Some(head) = self.newest_pack_head(&records)
                && Some(head.head.sequence) > file_seq
            {
                out.insert(key, head);
            }
        }
        Ok(out.into_values().collect())
    }

    /// Every head of the folder that can still be read, from the packs and the head file,
    /// newest first: where a backup goes on from when the newest snapshot was lost.
    pub fn head_history(
        &self,
        device: DeviceId,
        folder: FolderId,
    ) -> Result<Vec<SignedHead>, ReadError> {
        let mut out: BTreeMap<u64, SignedHead> = BTreeMap::new();
        let records = self.head_records()?;
        for record in records.get(&(device, folder)).map(Vec::as_slice).unwrap_or_default() {
            match self.read_head_entry(record) {
                Ok(head) => {
                    out.insert(head.head.sequence, head);
                }
                Err(err) => debug!(folder = %folder, sequence = record.sequence, error = %err,
                    "head entry unreadable"),
            }
        }
        if let Ok(Some(head)) = self.read_head(&self.head_path(device, folder))
            && head.head.device == device
            && head.head.folder == folder
        {
            out.insert(head.head.sequence, head);
        }
        Ok(out.into_values().rev().collect())
    }

    /// Head files that are missing, damaged or older than the packs say. A read-write open puts
    /// them back and reports them in [`Store::repairs`]; this looks again now.
    pub fn check_heads(&self) -> Result<Vec<HeadProblem>, ReadError> {
        Ok(self.find_head_problems()?.into_iter().map(|(problem, _)| problem).collect())
    }

    /// What the open found wrong and mended: head files put back from the packs, and blobs lost
    /// with a pack cut short or deleted (forgotten, so that they are stored again). On a
    /// read-only open, head problems are found but not mended.
    pub fn repairs(&self) -> &Repairs {
        &self.repairs
    }

    /// Drops damaged blobs (found by a scrub) from the index with a tombstone and lists them as
    /// forgotten, then commits: the next put of each stores it again. Returns how many were
    /// dropped (blobs no longer in the index are skipped).
    pub fn forget_damaged(&mut self, ids: &[BlobId]) -> Result<u64, WriteError> {
        self.check_writable()?;
        let mut dropped = 0;
        for &id in ids {
            if self.remove(id)? {
                self.pending_forgotten.push((id, true));
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.commit()?;
            warn!(store = %self.marker.store, blobs = dropped,
                "damaged blobs forgotten; the next backup or push stores them again");
        }
        Ok(dropped)
    }

    /// Blobs dropped as damaged or lost and not stored again since: the next backup reads again
    /// the files that use them.
    pub fn forgotten(&self) -> Vec<BlobId> {
        let mut out: Vec<BlobId> = self.forgotten.iter().copied().collect();
        out.sort_unstable();
        out
    }

    /// Stores the roster as the file `roster`, atomically (as heads are). The roster must
    /// verify and belong to the store's vault.
    pub fn write_roster(&self, roster: &Roster) -> Result<(), WriteError> {
        self.check_writable()?;
        if roster.vault != self.marker.vault {
            return Err(WriteError::RosterVault {
                found: roster.vault,
                expected: self.marker.vault,
            });
        }
        roster.verify().map_err(WriteError::Roster)?;
        let _guard = self.meta_lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.write_atomic(&self.path.clone(), ROSTER_FILE, &roster.encode())?;
        debug!(devices = roster.devices().len(), "roster stored");
        Ok(())
    }

    /// The stored roster, verified; `None` if there is none.
    pub fn roster(&self) -> Result<Option<Roster>, ReadError> {
        let file = self.path.join(ROSTER_FILE);
        let Some(bytes) = self.read_small(&file, RECORD_LEN_MAX as u64)? else {
            return Ok(None);
        };
        let roster = Roster::decode(&bytes)
            .map_err(|source| ReadError::Roster { path: file.clone(), source })?;
        if roster.vault != self.marker.vault {
            return Err(ReadError::RosterVault { path: file, found: roster.vault });
        }
        Ok(Some(roster))
    }

    /// Re-reads every committed blob with its entry header, re-hashes it and checks every pack
    /// header, calling `progress(bytes_done)` now and then. Damage is listed, never a panic; only
    /// a failure to read the index is an error.
    pub fn scrub(&self, progress: &mut dyn FnMut(u64)) -> Result<ScrubReport, ReadError> {
        let mut scrubbing = self.start_scrub()?;
        while !self.scrub_some(&mut scrubbing, PROGRESS_EVERY) {
            progress(scrubbing.report.bytes);
        }
        progress(scrubbing.report.bytes);
        let report = scrubbing.finish();
        info!(store = %self.marker.store, blobs = report.blobs, bytes = report.bytes,
            damaged = report.damaged.len(), "scrub done");
        Ok(report)
    }

    /// Starts a scrub to be done a piece at a time ([`Store::scrub_some`]), so that whoever
    /// shares the store gets it in between. It checks the blobs committed now; packs are only
    /// appended to, so what it checks stays where it was.
    pub fn start_scrub(&self) -> Result<Scrubbing, ReadError> {
        Ok(Scrubbing {
            blobs: self.blobs()?,
            next: 0,
            report: ScrubReport::default(),
            current: None,
            buf: Vec::new(),
        })
    }

    /// Checks the next blobs of `scrubbing`, about `bytes` of them (at least one); returns
    /// whether the scrub is done.
    pub fn scrub_some(&self, scrubbing: &mut Scrubbing, bytes: u64) -> bool {
        let until = scrubbing.report.bytes.saturating_add(bytes.max(1));
        while scrubbing.report.bytes < until {
            let Some(info) = scrubbing.blobs.get(scrubbing.next).copied() else { return true };
            scrubbing.next += 1;
            let location = info.location;
            let pack_path = self.pack_path(location.pack);
            if scrubbing.current.as_ref().is_none_or(|(seq, _)| *seq != location.pack) {
                let report = &mut scrubbing.report;
                let file = self.check_pack_header(location.pack, &pack_path, &mut report.damaged);
                scrubbing.current = Some((location.pack, file));
            }
            let file = scrubbing.current.as_ref().and_then(|(_, file)| file.as_ref());
            scrubbing.report.blobs += 1;
            scrubbing.report.bytes += u64::from(location.len);
            let problem = match file {
                None => Some(Problem::PackMissing),
                Some(file) => check_entry(file.as_ref(), info.id, location, &mut scrubbing.buf),
            };
            if let Some(problem) = problem {
                warn!(blob = %info.id, pack = location.pack, offset = location.offset,
                    %problem, "scrub found a damaged blob");
                scrubbing.report.damaged.push(Damage {
                    blob: Some(info.id),
                    pack: pack_path,
                    offset: location.offset,
                    problem,
                });
            }
        }
        scrubbing.next >= scrubbing.blobs.len()
    }

    /// Counts of committed blobs, their bytes, and packs.
    /// Bytes of packs committed, plus what is put and not yet committed: what the store holds
    /// on disk, for quotas. Cheap (no index scan).
    pub fn bytes_held(&self) -> u64 {
        self.committed.values().sum::<u64>() + self.pending_bytes
    }

    /// Counts of blobs and bytes, from the index.
    pub fn stats(&self) -> Result<Stats, ReadError> {
        let mut stats = Stats::default();
        self.index
            .scan(&mut |_, location| {
                stats.blobs += 1;
                stats.bytes += u64::from(location.len);
            })
            .map_err(|source| self.index_error(source))?;
        stats.packs = self.committed.len() as u64;
        stats.pack_bytes = self.committed.values().sum();
        Ok(stats)
    }

    /// Deletes the index and rebuilds it from the packs alone, holding the store's lock
    /// exclusively. Every blob's bytes are re-hashed: entries that do not match their id, and
    /// damaged entry headers, are reported and not indexed. A tombstone removes an earlier entry
    /// of its id. A pack's committed length becomes the end of its last complete entry, so the
    /// next open trims a torn tail.
    pub fn rebuild_index(
        path: &Path,
        vault: VaultId,
        config: &Config,
    ) -> Result<RebuildReport, OpenError> {
        let fs: Arc<dyn Fs> = Arc::new(RealFs);
        let marker = check_marker(fs.as_ref(), path, None, vault)?;
        let _lock = take_lock(fs.as_ref(), path, Access::ReadWrite)?;
        let index_dir = path.join(INDEX_DIR);
        let index_error = |source| OpenError::Index { path: index_dir.clone(), source };
        match std::fs::remove_dir_all(&index_dir) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(OpenError::Io { path: index_dir, source }),
        }
        let mut index = RedbIndex::open(&index_dir, config.index_cache_bytes, true)
            .map_err(|e| index_open_error(path, &index_dir, e))?;
        let mut report = RebuildReport::default();
        let mut batch: BTreeMap<BlobId, Option<Location>> = BTreeMap::new();
        let mut lengths = Vec::new();
        let packs_dir = path.join(PACKS_DIR);
        for seq in list_packs(fs.as_ref(), &packs_dir)? {
            let pack_path = packs_dir.join(pack::file_name(seq));
            let file = fs.open(&pack_path, false).map_err(|e| open_io(&pack_path, e))?;
            let len = file.len().map_err(|e| open_io(&pack_path, e))?;
            let expect = PackHeader { store: marker.store, seq };
            let mut flush_error = None;
            let mut heads = Vec::new();
            let reader = file.as_ref();
            let walked = pack::walk(reader, len, expect, true, &mut |found| match found {
                pack::Found::Entry { header, offset, problem: Some(problem) } => {
                    report.damaged.push(Damage {
                        blob: Some(header.blob),
                        pack: pack_path.clone(),
                        offset: offset + EntryHeader::LEN as u64,
                        problem,
                    });
                }
                pack::Found::Entry { header, offset, problem: None } => {
                    match header.kind {
                        EntryKind::Blob => {
                            let location = Location {
                                pack: seq,
                                offset: offset + EntryHeader::LEN as u64,
                                len: header.len,
                            };
                            batch.insert(header.blob, Some(location));
                        }
                        EntryKind::Tombstone => {
                            report.tombstones += 1;
                            batch.insert(header.blob, None);
                        }
                        EntryKind::Head => {
                            let location = Location {
                                pack: seq,
                                offset: offset + EntryHeader::LEN as u64,
                                len: header.len,
                            };
                            match head_record(reader, location, marker.vault) {
                                Some(record) => heads.push(record),
                                None => report.damaged.push(Damage {
                                    blob: None,
                                    pack: pack_path.clone(),
                                    offset: location.offset,
                                    problem: Problem::Mismatch,
                                }),
                            }
                        }
                    }
                    if batch.len() >= REBUILD_BATCH && flush_error.is_none() {
                        flush_error = commit_rebuild(&mut index, &mut batch, Vec::new()).err();
                    }
                }
                pack::Found::Damaged { offset } => report.damaged.push(Damage {
                    blob: None,
                    pack: pack_path.clone(),
                    offset,
                    problem: Problem::Header,
                }),
            })
            .map_err(|e| open_io(&pack_path, e))?;
            if let Some(err) = flush_error {
                return Err(index_error(err));
            }
            if !walked.header_ok {
                report.damaged.push(Damage {
                    blob: None,
                    pack: pack_path.clone(),
                    offset: 0,
                    problem: Problem::PackHeader,
                });
            }
            report.packs += 1;
            report.heads += heads.len() as u64;
            lengths.push((seq, walked.end));
            if !heads.is_empty() {
                let batch = Batch { heads, ..Batch::default() };
                index.commit(&batch).map_err(index_error)?;
            }
        }
        commit_rebuild(&mut index, &mut batch, lengths).map_err(index_error)?;
        // Damaged blobs are not indexed; list them as forgotten so that a backup puts them back.
        let forgotten: Vec<(BlobId, bool)> =
            report.damaged.iter().filter_map(|d| Some((d.blob?, true))).collect();
        if !forgotten.is_empty() {
            index.commit(&Batch { forgotten, ..Batch::default() }).map_err(index_error)?;
        }
        index.init(marker.store).map_err(index_error)?;
        index
            .scan(&mut |_, location| {
                report.blobs += 1;
                report.bytes += u64::from(location.len);
            })
            .map_err(index_error)?;
        info!(store = %marker.store, packs = report.packs, blobs = report.blobs,
            damaged = report.damaged.len(), "index rebuilt");
        Ok(report)
    }
}

/// Private: opening and creating.
impl Store {
    #[allow(clippy::too_many_arguments)]
    fn create_inner(
        fs: Arc<dyn Fs>,
        index: Option<Box<dyn Index>>,
        path: &Path,
        vault: VaultId,
        media: Media,
        id: StoreId,
        now: Timestamp,
        config: &Config,
    ) -> Result<Store, CreateError> {
        let io_error = |file: &Path, source: io::Error| create_io(path, file, source);
        match fs.kind(path).map_err(|e| io_error(path, e))? {
            None => {
                fs.create_dir_all(path).map_err(|e| io_error(path, e))?;
                let parent = parent_dir(path);
                fs.sync_dir(&parent).map_err(|e| io_error(&parent, e))?;
            }
            Some(Kind::Dir) => {
                if !fs.read_dir(path).map_err(|e| io_error(path, e))?.is_empty() {
                    return Err(CreateError::Exists { path: path.to_path_buf() });
                }
            }
            Some(_) => return Err(CreateError::Exists { path: path.to_path_buf() }),
        }
        let lock = take_lock(fs.as_ref(), path, Access::ReadWrite).map_err(CreateError::Open)?;
        for dir in [PACKS_DIR, HEADS_DIR] {
            let dir = path.join(dir);
            fs.create_dir(&dir).map_err(|e| io_error(&dir, e))?;
        }
        let index_dir = path.join(INDEX_DIR);
        if index.is_none() {
            let reserve = path.join(RESERVE_FILE);
            let file = fs.create(&reserve).map_err(|e| io_error(&reserve, e))?;
            file.write_all_at(&vec![0; RESERVE_LEN], 0).map_err(|e| io_error(&reserve, e))?;
            file.sync().map_err(|e| io_error(&reserve, e))?;
        }
        let mut index = match index {
            Some(index) => index,
            None => Box::new(
                RedbIndex::open(&index_dir, config.index_cache_bytes, true)
                    .map_err(|source| CreateError::Index { path: index_dir.clone(), source })?,
            ),
        };
        index.init(id).map_err(|source| CreateError::Index { path: index_dir.clone(), source })?;
        fs.sync_dir(path).map_err(|e| io_error(path, e))?;
        // The marker goes last: until it is durable, the directory is not a store.
        let marker = Marker { store: id, vault, media, created: now };
        let tmp = path.join(format!(".{MARKER_FILE}.tmp"));
        let file = fs.create(&tmp).map_err(|e| io_error(&tmp, e))?;
        file.write_all_at(&marker.encode(), 0).map_err(|e| io_error(&tmp, e))?;
        file.sync().map_err(|e| io_error(&tmp, e))?;
        drop(file);
        let marker_path = path.join(MARKER_FILE);
        fs.rename(&tmp, &marker_path).map_err(|e| io_error(&marker_path, e))?;
        fs.sync_dir(path).map_err(|e| io_error(path, e))?;
        info!(store = %id, media = %media, "store created");
        let source = IndexSource::Given(index);
        Self::open_inner(fs, source, path, Some(id), vault, Access::ReadWrite, config, lock)
            .map_err(CreateError::Open)
    }

    /// Opens a store read-only over `fs`, its index built from the packs (for fuzzing).
    pub(crate) fn open_scanned(
        fs: Arc<dyn Fs>,
        path: &Path,
        vault: VaultId,
        config: &Config,
    ) -> Result<Store, OpenError> {
        let (source, access) = (IndexSource::Scan, Access::ReadOnly);
        Self::open_inner(fs, source, path, None, vault, access, config, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn open_inner(
        fs: Arc<dyn Fs>,
        source: IndexSource,
        path: &Path,
        expected: Option<StoreId>,
        vault: VaultId,
        access: Access,
        config: &Config,
        lock: Option<LockGuard>,
    ) -> Result<Store, OpenError> {
        let marker = check_marker(fs.as_ref(), path, expected, vault)?;
        let lock = match lock {
            Some(lock) => Some(lock),
            None => take_lock(fs.as_ref(), path, access)?,
        };
        let packs_dir = path.join(PACKS_DIR);
        let index_path = path.join(INDEX_DIR);
        let seqs = list_packs(fs.as_ref(), &packs_dir)?;
        let on_disk = matches!(source, IndexSource::Disk);
        let index: Box<dyn Index> = match source {
            IndexSource::Given(index) => index,
            IndexSource::Disk => {
                if fs.kind(&index_path).map_err(|e| open_io(&index_path, e))?.is_none() {
                    let source = IndexError::Missing;
                    return Err(OpenError::Index { path: index_path, source });
                }
                Box::new(open_index(fs.as_ref(), path, config)?)
            }
            IndexSource::Scan => {
                Box::new(scan_index(fs.as_ref(), &packs_dir, &seqs, marker.store, marker.vault)?)
            }
        };
        let index_error = |source| OpenError::Index { path: index_path.clone(), source };
        let found = index.store().map_err(index_error)?;
        if found != Some(marker.store) {
            return Err(index_error(IndexError::OtherStore { found, expected: marker.store }));
        }
        let committed = index.pack_lengths().map_err(index_error)?;
        let forgotten = index.forgotten().map_err(index_error)?;
        let mut store = Store {
            fs,
            index,
            path: path.to_path_buf(),
            index_path,
            marker,
            access,
            config: config.clone(),
            _lock: lock,
            readers: RwLock::new(HashMap::new()),
            next_seq: 0,
            committed,
            writer: None,
            closed: Vec::new(),
            packs_dir_dirty: false,
            pending: HashMap::new(),
            pending_bytes: 0,
            pending_heads: Vec::new(),
            pending_forgotten: Vec::new(),
            forgotten: HashSet::new(),
            repairs: Repairs::default(),
            meta_lock: Mutex::new(()),
        };
        store.forgotten = forgotten.into_iter().collect();
        let mut remaining = seqs;
        if access == Access::ReadWrite {
            remaining = store.trim_packs(remaining)?;
            if on_disk {
                store.restore_reserve();
            }
        }
        let last = remaining.last().copied().max(store.committed.keys().next_back().copied());
        store.next_seq = last.map_or(0, |seq| seq.saturating_add(1));
        if access == Access::ReadWrite {
            store.forget_lost()?;
            store.repairs.heads = store.repair_heads();
        } else {
            store.repairs.heads = store.check_heads().unwrap_or_else(|err| {
                warn!(store = %store.path.display(), error = %err, "cannot check the heads");
                Vec::new()
            });
        }
        debug!(store = %store.marker.store, ?access, packs = store.committed.len(), "store open");
        Ok(store)
    }

    /// Brings each pack file back to its committed length: a longer file has a torn or
    /// uncommitted tail (cut off), a shorter one has lost committed bytes (left alone and
    /// reported), and a file newer than every committed pack was never committed (removed).
    /// Returns the pack files that remain.
    fn trim_packs(&mut self, seqs: Vec<u32>) -> Result<Vec<u32>, OpenError> {
        let packs_dir = self.path.join(PACKS_DIR);
        let newest_committed = self.committed.keys().next_back().copied();
        let mut remaining = Vec::with_capacity(seqs.len());
        let mut removed = false;
        for seq in seqs {
            let file_path = packs_dir.join(pack::file_name(seq));
            let committed = self.committed.get(&seq).copied();
            if committed.is_none() && newest_committed.is_none_or(|newest| seq > newest) {
                info!(pack = %file_path.display(), "removing a pack that was never committed");
                self.fs
                    .remove_file(&file_path)
                    .map_err(|e| open_write_io(&self.path, &file_path, e))?;
                removed = true;
                continue;
            }
            remaining.push(seq);
            let file = self
                .fs
                .open(&file_path, true)
                .map_err(|e| open_write_io(&self.path, &file_path, e))?;
            let len = file.len().map_err(|e| open_io(&file_path, e))?;
            match committed {
                None => warn!(pack = %file_path.display(),
                    "pack file is not in the index: run `triad store rebuild-index`"),
                Some(committed) if len > committed => {
                    info!(pack = %file_path.display(), from = len, to = committed,
                        "trimming an uncommitted pack tail");
                    file.set_len(committed)
                        .map_err(|e| open_write_io(&self.path, &file_path, e))?;
                    file.sync().map_err(|e| open_write_io(&self.path, &file_path, e))?;
                }
                Some(committed) if len < committed => warn!(pack = %file_path.display(),
                    len, committed, "pack file is shorter than its committed length: the blobs past its end are lost and are forgotten, to be stored again"),
                Some(_) => {}
            }
        }
        for seq in self.committed.keys() {
            if remaining.binary_search(seq).is_err() {
                warn!(pack = %packs_dir.join(pack::file_name(*seq)).display(),
                    "committed pack file is missing: its blobs are lost");
            }
        }
        if removed {
            self.fs.sync_dir(&packs_dir).map_err(|e| open_write_io(&self.path, &packs_dir, e))?;
        }
        Ok(remaining)
    }
}

/// A head problem, and the head the packs hold to mend it.
type FoundHeadProblem = (HeadProblem, Option<SignedHead>);

/// Private: heads.
impl Store {
    fn head_path(&self, device: DeviceId, folder: FolderId) -> PathBuf {
        self.path.join(HEADS_DIR).join(device.to_hex()).join(folder.to_hex())
    }

    /// The head files that read and verify, by folder, and those that do not: (path, folder,
    /// why). Only failing to list `heads/` itself is an error.
    #[allow(clippy::type_complexity)]
    fn head_files(
        &self,
    ) -> Result<
        (BTreeMap<(DeviceId, FolderId), SignedHead>, Vec<(PathBuf, (DeviceId, FolderId), String)>),
        ReadError,
    > {
        let heads_dir = self.path.join(HEADS_DIR);
        let mut good = BTreeMap::new();
        let mut bad = Vec::new();
        for device_name in self.list_dir(&heads_dir)? {
            let Some(device) = device_name.to_str().and_then(|n| n.parse::<DeviceId>().ok()) else {
                continue;
            };
            let device_dir = heads_dir.join(&device_name);
            if !matches!(self.fs.kind(&device_dir), Ok(Some(Kind::Dir))) {
                continue;
            }
            let names = match self.list_dir(&device_dir) {
                Ok(names) => names,
                Err(err) => {
                    warn!(dir = %device_dir.display(), error = %err, "cannot list head files");
                    continue;
                }
            };
            for folder_name in names {
                let Some(folder) = folder_name.to_str().and_then(|n| n.parse::<FolderId>().ok())
                else {
                    continue; // temporary files start with a dot
                };
                let file = device_dir.join(&folder_name);
                match self.read_head(&file) {
                    Ok(Some(head)) if head.head.device == device && head.head.folder == folder => {
                        good.insert((device, folder), head);
                    }
                    Ok(Some(_)) => bad.push((
                        file,
                        (device, folder),
                        "it holds the head of another device or folder".to_owned(),
                    )),
                    Ok(None) => {}
                    Err(err) => {
                        let why = error_text(&err);
                        warn!(path = %file.display(), error = %why, "damaged head file");
                        bad.push((file, (device, folder), why));
                    }
                }
            }
        }
        Ok((good, bad))
    }

    /// The head entries the index knows, by folder, oldest first.
    fn head_records(&self) -> Result<BTreeMap<(DeviceId, FolderId), Vec<HeadRecord>>, ReadError> {
        let mut out: BTreeMap<_, Vec<HeadRecord>> = BTreeMap::new();
        for record in self.index.heads().map_err(|source| self.index_error(source))? {
            out.entry((record.device, record.folder)).or_default().push(record);
        }
        for records in out.values_mut() {
            records.sort_by_key(|r| r.sequence);
        }
        Ok(out)
    }

    /// Reads and verifies the head a head entry holds.
    fn read_head_entry(&self, record: &HeadRecord) -> Result<SignedHead, ReadError> {
        let path = self.pack_path(record.location.pack);
        let location = record.location;
        let damaged =
            |problem| ReadError::HeadEntry { path: path.clone(), offset: location.offset, problem };
        if u64::from(location.len) > HEAD_LEN_MAX {
            return Err(damaged(Problem::Length));
        }
        let buffered =
            self.closed.iter().chain(&self.writer).find_map(|writer| writer.buffered(location));
        let bytes = match buffered {
            Some(bytes) => bytes.to_vec(),
            None => {
                let file = match self.reader(location.pack) {
                    Ok(file) => file,
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {
                        return Err(damaged(Problem::PackMissing));
                    }
                    Err(source) => return Err(ReadError::Io { path, source }),
                };
                let mut bytes = vec![0; location.len as usize];
                match file.read_exact_at(&mut bytes, location.offset) {
                    Ok(()) => bytes,
                    Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                        return Err(damaged(Problem::Short));
                    }
                    Err(source) => return Err(ReadError::Io { path, source }),
                }
            }
        };
        let head = SignedHead::decode(&bytes, self.marker.vault)
            .map_err(|_| damaged(Problem::Mismatch))?;
        if head.head.device != record.device
            || head.head.folder != record.folder
            || head.head.sequence != record.sequence
        {
            return Err(damaged(Problem::Header));
        }
        Ok(head)
    }

    /// The newest head entry of `records` (one folder's, oldest first) that reads and verifies.
    fn newest_pack_head(&self, records: &[HeadRecord]) -> Option<SignedHead> {
        records.iter().rev().find_map(|record| match self.read_head_entry(record) {
            Ok(head) => Some(head),
            Err(err) => {
                warn!(folder = %record.folder, sequence = record.sequence, error = %err,
                    "head entry unreadable; trying an older one");
                None
            }
        })
    }

    fn find_head_problems(&self) -> Result<Vec<FoundHeadProblem>, ReadError> {
        let (good, bad) = self.head_files()?;
        let records = self.head_records()?;
        let from_packs = |key| records.get(&key).and_then(|records| self.newest_pack_head(records));
        let mut out = Vec::new();
        let mut damaged = HashSet::new();
        for (path, key, why) in bad {
            damaged.insert(key);
            let head = from_packs(key);
            let problem = HeadProblem {
                path,
                fault: HeadFault::Damaged(why),
                from_packs: head.as_ref().map(|h| h.head.sequence),
                restored: false,
            };
            out.push((problem, head));
        }
        for (&key, folder_records) in &records {
            let file_seq = good.get(&key).map(|h| h.head.sequence);
            // Only a file that is missing or behind the packs' index is worth a read.
            if damaged.contains(&key) || folder_records.last().map(|r| r.sequence) <= file_seq {
                continue;
            }
            let Some(head) = from_packs(key) else { continue };
            let fault = match good.get(&key) {
                None => HeadFault::Missing,
                Some(file) if file.head.sequence < head.head.sequence => {
                    HeadFault::Older { file: file.head.sequence }
                }
                Some(_) => continue,
            };
            let problem = HeadProblem {
                path: self.head_path(key.0, key.1),
                fault,
                from_packs: Some(head.head.sequence),
                restored: false,
            };
            out.push((problem, Some(head)));
        }
        Ok(out)
    }

    /// Puts back head files from the packs, and gives head files of earlier builds their head
    /// entry. Best effort: what cannot be mended is reported and the open goes on.
    fn repair_heads(&mut self) -> Vec<HeadProblem> {
        let found = match self.find_head_problems() {
            Ok(found) => found,
            Err(err) => {
                warn!(store = %self.path.display(), error = %err, "cannot check the heads");
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(found.len());
        for (mut problem, head) in found {
            if let Some(head) = head {
                match self.write_head_file(&head) {
                    Ok(()) => problem.restored = true,
                    Err(err) => warn!(path = %problem.path.display(), error = %err,
                        "cannot restore a head file"),
                }
            }
            warn!(store = %self.path.display(), "{problem}");
            out.push(problem);
        }
        if let Err(err) = self.record_head_files() {
            warn!(store = %self.path.display(), error = %err,
                "cannot add head entries for head files of an earlier build");
        }
        out
    }

    /// Appends a head entry for every head file newer than every head entry of its folder (a
    /// head written by an earlier build), so that the packs can give it back.
    fn record_head_files(&mut self) -> Result<(), WriteError> {
        let (good, _) = self.head_files().map_err(WriteError::Read)?;
        let records = self.head_records().map_err(WriteError::Read)?;
        let mut added = 0;
        for (key, head) in good {
            let newest = records.get(&key).and_then(|r| r.last()).map(|r| r.sequence);
            if newest >= Some(head.head.sequence) {
                continue;
            }
            let record = head.encode();
            let header = EntryHeader::head(&record);
            let location = self.append(header, &record)?;
            self.pending_heads.push(HeadRecord {
                device: key.0,
                folder: key.1,
                sequence: head.head.sequence,
                location,
            });
            self.pending_bytes += header.entry_len();
            added += 1;
        }
        if added > 0 {
            self.commit()?;
            info!(store = %self.marker.store, heads = added, "head entries added to the packs");
        }
        Ok(())
    }

    fn write_head_file(&self, head: &SignedHead) -> Result<(), WriteError> {
        let heads = self.path.join(HEADS_DIR);
        let device_dir = heads.join(head.head.device.to_hex());
        if self.fs.kind(&device_dir).map_err(|e| self.write_error(&device_dir, e))?.is_none() {
            let heads_missing =
                self.fs.kind(&heads).map_err(|e| self.write_error(&heads, e))?.is_none();
            self.fs.create_dir_all(&device_dir).map_err(|e| self.write_error(&device_dir, e))?;
            if heads_missing {
                self.fs.sync_dir(&self.path).map_err(|e| self.write_error(&self.path, e))?;
            }
            self.fs.sync_dir(&heads).map_err(|e| self.write_error(&heads, e))?;
        }
        self.write_atomic(&device_dir, &head.head.folder.to_hex(), &head.encode())
    }

    /// Forgets the committed blobs that a pack cut short, or deleted, no longer holds, and cuts
    /// a short pack back to its last whole entry: they are stored again by the next put.
    fn forget_lost(&mut self) -> Result<(), OpenError> {
        let mut short: BTreeMap<u32, (u64, Problem)> = BTreeMap::new();
        for (&seq, &committed) in &self.committed {
            let path = self.pack_path(seq);
            match self.fs.open(&path, false).and_then(|file| file.len()) {
                Ok(len) if len < committed => {
                    short.insert(seq, (len, Problem::Short));
                }
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    short.insert(seq, (0, Problem::PackMissing));
                }
                Err(err) => warn!(pack = %path.display(), error = %err, "cannot check a pack"),
            }
        }
        if short.is_empty() {
            return Ok(());
        }
        let mut lost: BTreeMap<u32, (u64, u64, Vec<BlobId>)> = BTreeMap::new();
        self.index
            .scan(&mut |id, location| {
                if let Some((len, _)) = short.get(&location.pack)
                    && location.end() > *len
                {
                    let entry = lost.entry(location.pack).or_default();
                    entry.0 += 1;
                    entry.1 += u64::from(location.len);
                    entry.2.push(id);
                }
            })
            .map_err(|source| OpenError::Index { path: self.index_path.clone(), source })?;
        // Cut each short pack back to its last whole entry, so that it can be appended to.
        let mut lengths = Vec::new();
        for (&seq, (len, problem)) in &short {
            if *problem != Problem::Short {
                continue;
            }
            let path = self.pack_path(seq);
            let file =
                self.fs.open(&path, true).map_err(|e| open_write_io(&self.path, &path, e))?;
            let expect = PackHeader { store: self.marker.store, seq };
            let walked = pack::walk(file.as_ref(), *len, expect, false, &mut |_| {})
                .map_err(|e| open_io(&path, e))?;
            if walked.end < *len {
                file.set_len(walked.end).map_err(|e| open_write_io(&self.path, &path, e))?;
                file.sync().map_err(|e| open_write_io(&self.path, &path, e))?;
            }
            lengths.push((seq, walked.end));
        }
        if !lengths.is_empty() {
            let batch = Batch { pack_lengths: lengths.clone(), ..Batch::default() };
            self.index
                .commit(&batch)
                .map_err(|source| OpenError::Index { path: self.index_path.clone(), source })?;
            self.committed.extend(lengths);
            self.readers_mut().clear();
        }
        let mut ids = Vec::new();
        for (seq, (blobs, bytes, pack_ids)) in lost {
            let problem = short.get(&seq).map_or(Problem::Short, |(_, p)| *p);
            let pack = self.pack_path(seq);
            warn!(pack = %pack.display(), blobs, %problem,
                "committed blobs are lost with the pack's end; forgotten, to be stored again");
            self.repairs.lost.push(LostBlobs { pack, blobs, bytes, problem });
            ids.extend(pack_ids);
        }
        if let Err(err) = self.forget_damaged(&ids) {
            warn!(store = %self.path.display(), error = %err, "cannot forget lost blobs");
        }
        Ok(())
    }
}

/// Private: writing.
impl Store {
    /// Recreates the space reserve if it was released, when there is room; best effort.
    fn restore_reserve(&self) {
        let reserve = self.path.join(RESERVE_FILE);
        if !matches!(self.fs.kind(&reserve), Ok(None)) {
            return;
        }
        let made = self.fs.create(&reserve).and_then(|file| {
            file.write_all_at(&vec![0; RESERVE_LEN], 0)?;
            file.sync()?;
            self.fs.sync_dir(&self.path)
        });
        match made {
            Ok(()) => debug!(store = %self.marker.store, "space reserve recreated"),
            Err(err) => {
                debug!(store = %self.marker.store, error = %err, "no room for the space reserve yet");
                let _ = self.fs.remove_file(&reserve);
            }
        }
    }

    fn check_writable(&self) -> Result<(), WriteError> {
        match self.access {
            Access::ReadWrite => Ok(()),
            Access::ReadOnly => Err(WriteError::ReadOnly { path: self.path.clone() }),
        }
    }

    fn write_error(&self, file: &Path, source: io::Error) -> WriteError {
        WriteError::io(&self.path, file, source)
    }

    fn writer_is_clean(&self) -> bool {
        self.writer.as_ref().is_none_or(|w| w.out.end() == w.committed) && !self.packs_dir_dirty
    }

    /// Appends an entry to the current pack (rolling to a new pack when full) and returns where
    /// its body is. On error nothing of the entry is kept.
    fn append(&mut self, header: EntryHeader, body: &[u8]) -> Result<Location, WriteError> {
        let entry_len = header.entry_len();
        self.prepare_writer(entry_len)?;
        let writer = self.writer.as_mut().expect("prepare_writer leaves a writer");
        let out = &mut writer.out;
        let before = out.pending_len();
        let location = Location {
            pack: writer.seq,
            offset: out.end() + EntryHeader::LEN as u64,
            len: header.len,
        };
        out.push(&header.encode());
        out.push(body);
        if out.pending_len() >= self.config.write_buf_len
            && let Err(err) = out.flush(false)
        {
            // The earlier buffered entries stay buffered: a later flush writes them again at
            // the same offset.
            out.truncate_pending(before);
            let path = out.path().to_owned();
            return Err(self.write_error(&path, err));
        }
        Ok(location)
    }

    /// Makes sure there is a writer with room for `entry_len` more bytes (or an empty pack).
    fn prepare_writer(&mut self, entry_len: u64) -> Result<(), WriteError> {
        if let Some(writer) = &mut self.writer {
            let has_entries = writer.out.end() > PackHeader::LEN as u64;
            if !has_entries || writer.out.end() + entry_len <= self.config.pack_len_target {
                return Ok(());
            }
            let out = &mut writer.out;
            out.flush(true).map_err(|e| WriteError::io(&self.path, out.path(), e))?;
            let mut full = self.writer.take().expect("checked above");
            full.out.release_memory();
            self.closed.push(full);
            return self.new_pack();
        }
        // Append to the newest committed pack if it has room and is intact.
        if let Some((&seq, &len)) = self.committed.last_key_value()
            && seq + 1 == self.next_seq
            && len + entry_len <= self.config.pack_len_target
        {
            let path = self.pack_path(seq);
            match self.fs.open(&path, true) {
                Ok(file) => {
                    let file: Arc<dyn File> = Arc::from(file);
                    let mut header = [0u8; PackHeader::LEN];
                    // Entries of a version go only into packs of that version.
                    let current = file.read_exact_at(&mut header, 0).is_ok()
                        && PackHeader::decode_versioned(&header)
                            .is_ok_and(|(_, version)| version == PACK_VERSION);
                    if current && file.len().map_err(|e| self.write_error(&path, e))? == len {
                        self.readers_mut().insert(seq, file.clone());
                        let out = Appender::open(&*self.fs, path.clone(), file, len)
                            .map_err(|e| self.write_error(&path, e))?;
                        self.writer = Some(Writer { seq, committed: len, out });
                        return Ok(());
                    }
                }
                // The pack was deleted from the disk: its blobs are lost (a scrub says which),
                // and new entries go to a new pack.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.write_error(&path, e)),
            }
        }
        self.new_pack()
    }

    fn new_pack(&mut self) -> Result<(), WriteError> {
        let seq = self.next_seq;
        let path = self.pack_path(seq);
        // A file of this name can only be left over from a failed commit: never committed.
        let file: Arc<dyn File> =
            Arc::from(self.fs.create(&path).map_err(|e| self.write_error(&path, e))?);
        self.packs_dir_dirty = true;
        let mut out = Appender::open(&*self.fs, path.clone(), file.clone(), 0)
            .map_err(|e| self.write_error(&path, e))?;
        out.push(&PackHeader { store: self.marker.store, seq }.encode());
        self.next_seq = seq.checked_add(1).expect("fewer than 2^32 packs");
        self.readers_mut().insert(seq, file);
        debug!(pack = seq, direct = out.is_direct(), "new pack");
        self.writer = Some(Writer { seq, committed: 0, out });
        Ok(())
    }

    fn sync_packs(&mut self) -> Result<(), WriteError> {
        for writer in self.closed.iter_mut().chain(&mut self.writer) {
            let out = &mut writer.out;
            out.flush(true).map_err(|e| WriteError::io(&self.path, out.path(), e))?;
            if out.written() != writer.committed {
                out.file().sync().map_err(|e| WriteError::io(&self.path, out.path(), e))?;
            }
        }
        if self.packs_dir_dirty {
            let dir = self.path.join(PACKS_DIR);
            self.fs.sync_dir(&dir).map_err(|e| self.write_error(&dir, e))?;
            self.packs_dir_dirty = false;
        }
        Ok(())
    }

    /// Forgets everything since the last commit after writing or syncing packs failed. Nothing
    /// written since then is in the index, so the oldest pack written to continues at its
    /// committed length (its bytes past it will be overwritten), and newer pack files are
    /// reused from their start.
    fn rewind(&mut self) {
        let mut writers: Vec<Writer> = self.closed.drain(..).chain(self.writer.take()).collect();
        writers.sort_by_key(|w| w.seq);
        if let Some(mut first) = writers.into_iter().next() {
            first.out.rewind_to(first.committed);
            if first.committed == 0 {
                first.out.push(&PackHeader { store: self.marker.store, seq: first.seq }.encode());
            }
            self.next_seq = first.seq + 1;
            self.writer = Some(first);
        }
        if !self.pending.is_empty() {
            warn!(store = %self.marker.store, puts = self.pending.len(), "commit failed; uncommitted puts dropped");
        }
        self.pending.clear();
        self.pending_bytes = 0;
        self.pending_heads.clear();
        self.pending_forgotten.clear();
    }

    fn write_atomic(&self, dir: &Path, name: &str, bytes: &[u8]) -> Result<(), WriteError> {
        let tmp = dir.join(format!(".{name}.tmp"));
        let target = dir.join(name);
        let file = self.fs.create(&tmp).map_err(|e| self.write_error(&tmp, e))?;
        file.write_all_at(bytes, 0).map_err(|e| self.write_error(&tmp, e))?;
        file.sync().map_err(|e| self.write_error(&tmp, e))?;
        drop(file);
        self.fs.rename(&tmp, &target).map_err(|e| self.write_error(&target, e))?;
        self.fs.sync_dir(dir).map_err(|e| self.write_error(dir, e))?;
        Ok(())
    }
}

/// Private: reading.
impl Store {
    fn pack_path(&self, seq: u32) -> PathBuf {
        self.path.join(PACKS_DIR).join(pack::file_name(seq))
    }

    fn index_error(&self, source: IndexError) -> ReadError {
        ReadError::Index { path: self.index_path.clone(), source }
    }

    fn readers_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u32, Arc<dyn File>>> {
        self.readers.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where a blob is, including puts not committed yet; `None` if absent or removed.
    fn location(&self, id: BlobId) -> Result<Option<Location>, ReadError> {
        match self.pending.get(&id) {
            Some(Pending::Put(location)) => Ok(Some(*location)),
            Some(Pending::Remove) => Ok(None),
            None => self.index.get(&id).map_err(|source| self.index_error(source)),
        }
    }

    fn reader(&self, seq: u32) -> io::Result<Arc<dyn File>> {
        let cached = self.readers.read().unwrap_or_else(PoisonError::into_inner).get(&seq).cloned();
        if let Some(file) = cached {
            return Ok(file);
        }
        let file: Arc<dyn File> = Arc::from(self.fs.open(&self.pack_path(seq), false)?);
        self.readers_mut().insert(seq, file.clone());
        Ok(file)
    }

    fn read_blob(&self, id: BlobId, location: Location) -> Result<Vec<u8>, ReadError> {
        let path = self.pack_path(location.pack);
        let corrupt = |problem| ReadError::Corrupt {
            blob: id,
            path: path.clone(),
            offset: location.offset,
            problem,
        };
        if location.len as usize > BLOB_LEN_MAX {
            return Err(corrupt(Problem::Length));
        }
        let file = match self.reader(location.pack) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(corrupt(Problem::PackMissing));
            }
            Err(source) => return Err(ReadError::Io { path, source }),
        };
        let mut bytes = vec![0; location.len as usize];
        match file.read_exact_at(&mut bytes, location.offset) {
            Ok(()) => Ok(bytes),
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Err(corrupt(Problem::Short)),
            Err(source) => Err(ReadError::Io { path, source }),
        }
    }

    /// Opens a pack for scrubbing and checks its header; damage is pushed to `damaged`.
    fn check_pack_header(
        &self,
        seq: u32,
        path: &Path,
        damaged: &mut Vec<Damage>,
    ) -> Option<Arc<dyn File>> {
        let damage = |problem| Damage { blob: None, pack: path.to_path_buf(), offset: 0, problem };
        let file = match self.reader(seq) {
            Ok(file) => file,
            Err(err) => {
                let problem = if err.kind() == io::ErrorKind::NotFound {
                    Problem::PackMissing
                } else {
                    Problem::Unreadable(err.kind())
                };
                warn!(pack = %path.display(), %problem, "scrub cannot open a pack");
                damaged.push(damage(problem));
                return None;
            }
        };
        let mut header = [0u8; PackHeader::LEN];
        let ok = file.read_exact_at(&mut header, 0).is_ok()
            && PackHeader::decode(&header)
                .is_ok_and(|h| h == PackHeader { store: self.marker.store, seq });
        if !ok {
            warn!(pack = %path.display(), "scrub found a damaged pack header");
            damaged.push(damage(Problem::PackHeader));
        }
        Some(file)
    }

    /// Reads a small file whole; `None` if it does not exist.
    fn read_small(&self, file: &Path, limit: u64) -> Result<Option<Vec<u8>>, ReadError> {
        match self.fs.read(file, limit) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) if err.kind() == io::ErrorKind::FileTooLarge => {
                let len = self.fs.open(file, false).and_then(|f| f.len()).unwrap_or(limit + 1);
                Err(ReadError::TooLarge { path: file.to_path_buf(), len })
            }
            Err(source) => Err(ReadError::Io { path: file.to_path_buf(), source }),
        }
    }

    fn read_head(&self, file: &Path) -> Result<Option<SignedHead>, ReadError> {
        let Some(bytes) = self.read_small(file, HEAD_LEN_MAX)? else {
            return Ok(None);
        };
        SignedHead::decode(&bytes, self.marker.vault)
            .map(Some)
            .map_err(|source| ReadError::Head { path: file.to_path_buf(), source })
    }

    fn list_dir(&self, dir: &Path) -> Result<Vec<std::ffi::OsString>, ReadError> {
        match self.fs.read_dir(dir) {
            Ok(names) => Ok(names),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(read_io(dir, source)),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            debug!(store = %self.marker.store, puts = self.pending.len(),
                "store closed with uncommitted puts; they are dropped");
        }
    }
}

/// Checks an indexed blob's entry header and bytes; `None` if both are sound.
pub(crate) fn check_entry(
    file: &dyn File,
    id: BlobId,
    location: Location,
    buf: &mut Vec<u8>,
) -> Option<Problem> {
    let header_len = EntryHeader::LEN as u64;
    if location.len as usize > BLOB_LEN_MAX {
        return Some(Problem::Length);
    }
    if location.offset < PackHeader::LEN as u64 + header_len {
        return Some(Problem::Header);
    }
    buf.resize(EntryHeader::LEN + location.len as usize, 0);
    match file.read_exact_at(buf, location.offset - header_len) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Some(Problem::Short),
        Err(err) => return Some(Problem::Unreadable(err.kind())),
    }
    let (header, body) = buf.split_at(EntryHeader::LEN);
    if BlobId::of(body) != id {
        return Some(Problem::Mismatch);
    }
    match EntryHeader::decode(header) {
        Ok(h) if h.kind == EntryKind::Blob && h.blob == id && h.len == location.len => None,
        _ => Some(Problem::Header),
    }
}

/// Reads the head entry body at `location` and, if it is a signed head of the vault, its
/// record.
fn head_record(file: &dyn File, location: Location, vault: VaultId) -> Option<HeadRecord> {
    if u64::from(location.len) > HEAD_LEN_MAX {
        return None;
    }
    let mut bytes = vec![0; location.len as usize];
    file.read_exact_at(&mut bytes, location.offset).ok()?;
    match SignedHead::decode(&bytes, vault) {
        Ok(head) => Some(HeadRecord {
            device: head.head.device,
            folder: head.head.folder,
            sequence: head.head.sequence,
            location,
        }),
        Err(err) => {
            warn!(offset = location.offset, error = %err, "head entry does not verify; skipped");
            None
        }
    }
}

fn commit_rebuild(
    index: &mut dyn Index,
    batch: &mut BTreeMap<BlobId, Option<Location>>,
    pack_lengths: Vec<(u32, u64)>,
) -> Result<(), IndexError> {
    let mut out = Batch { pack_lengths, ..Batch::default() };
    for (id, location) in std::mem::take(batch) {
        match location {
            Some(location) => out.puts.push((id, location)),
            None => out.removes.push(id),
        }
    }
    index.commit(&out)
}

/// Builds an index in memory from the pack entry headers, without reading blob bodies.
fn scan_index(
    fs: &dyn Fs,
    packs_dir: &Path,
    seqs: &[u32],
    store: StoreId,
    vault: VaultId,
) -> Result<MemIndex, OpenError> {
    let mut index = MemIndex::new();
    index.init(store).expect("a memory index does not fail");
    for &seq in seqs {
        let path = packs_dir.join(pack::file_name(seq));
        let file = fs.open(&path, false).map_err(|e| open_io(&path, e))?;
        let len = file.len().map_err(|e| open_io(&path, e))?;
        // Entries apply in order: a tombstone removes an earlier entry of its id (also one in
        // an earlier pack), a later entry brings it back.
        let mut changes: BTreeMap<BlobId, Option<Location>> = BTreeMap::new();
        let mut heads = Vec::new();
        let walked =
            pack::walk(file.as_ref(), len, PackHeader { store, seq }, false, &mut |found| {
                match found {
                    pack::Found::Entry { header, offset, .. } => {
                        let location = Location {
                            pack: seq,
                            offset: offset + EntryHeader::LEN as u64,
                            len: header.len,
                        };
                        match header.kind {
                            EntryKind::Blob => {
                                changes.insert(header.blob, Some(location));
                            }
                            EntryKind::Tombstone => {
                                changes.insert(header.blob, None);
                            }
                            EntryKind::Head => {
                                if let Some(record) = head_record(file.as_ref(), location, vault) {
                                    heads.push(record);
                                }
                            }
                        }
                    }
                    pack::Found::Damaged { offset } => {
                        warn!(pack = %path.display(), offset, "damaged entry header skipped")
                    }
                }
            })
            .map_err(|e| open_io(&path, e))?;
        if !walked.header_ok {
            warn!(pack = %path.display(), "damaged pack header");
        }
        let mut batch = Batch { pack_lengths: vec![(seq, walked.end)], heads, ..Batch::default() };
        for (id, location) in changes {
            match location {
                Some(location) => batch.puts.push((id, location)),
                None => batch.removes.push(id),
            }
        }
        index.commit(&batch).expect("a memory index does not fail");
    }
    Ok(index)
}

fn check_marker(
    fs: &dyn Fs,
    path: &Path,
    expected: Option<StoreId>,
    vault: VaultId,
) -> Result<Marker, OpenError> {
    match fs.kind(path).map_err(|e| open_io(path, e))? {
        None => return Err(OpenError::Missing { path: path.to_path_buf() }),
        Some(Kind::Dir) => {}
        Some(_) => return Err(OpenError::NotAStore { path: path.to_path_buf() }),
    }
    let marker_path = path.join(MARKER_FILE);
    let bytes = match fs.read(&marker_path, MARKER_LEN_MAX as u64) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let empty = fs.read_dir(path).map_err(|e| open_io(path, e))?.is_empty();
            return Err(if empty {
                OpenError::Empty { path: path.to_path_buf() }
            } else {
                OpenError::NotAStore { path: path.to_path_buf() }
            });
        }
        Err(err) if err.kind() == io::ErrorKind::FileTooLarge => {
            let source = FrameError::Size { what: "store marker", len: MARKER_LEN_MAX + 1 };
            return Err(OpenError::Marker { path: marker_path, source });
        }
        Err(source) => return Err(OpenError::Io { path: marker_path, source }),
    };
    let marker =
        Marker::decode(&bytes).map_err(|source| OpenError::Marker { path: marker_path, source })?;
    if marker.vault != vault {
        return Err(OpenError::OtherVault {
            path: path.to_path_buf(),
            found: marker.vault,
            expected: vault,
        });
    }
    if let Some(expected) = expected
        && marker.store != expected
    {
        return Err(OpenError::OtherStore {
            path: path.to_path_buf(),
            found: marker.store,
            expected,
        });
    }
    Ok(marker)
}

fn take_lock(fs: &dyn Fs, path: &Path, access: Access) -> Result<Option<LockGuard>, OpenError> {
    let lock_path = path.join(LOCK_FILE);
    let exclusive = access == Access::ReadWrite;
    match fs.try_lock(&lock_path, exclusive, exclusive) {
        Ok(Some(guard)) => Ok(Some(guard)),
        Ok(None) => Err(OpenError::Locked { path: path.to_path_buf() }),
        // A read-only store without a lock file (made by hand, or on read-only media):
        // nothing to share a lock with.
        Err(err) if !exclusive && err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(open_write_io(path, &lock_path, err)),
    }
}

fn list_packs(fs: &dyn Fs, packs_dir: &Path) -> Result<Vec<u32>, OpenError> {
    let names = fs.read_dir(packs_dir).map_err(|e| open_io(packs_dir, e))?;
    let mut seqs: Vec<u32> = names
        .iter()
        .filter_map(|name| {
            let seq = name.to_str().and_then(pack::parse_file_name);
            if seq.is_none() {
                debug!(name = ?name, "ignoring a file that is not a pack");
            }
            seq
        })
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// Opens the index of the store at `path`. Opening writes to the index file, so on a full disk
/// the space reserve is released and the open tried once more.
fn open_index(fs: &dyn Fs, path: &Path, config: &Config) -> Result<RedbIndex, OpenError> {
    let index_dir = path.join(INDEX_DIR);
    match RedbIndex::open(&index_dir, config.index_cache_bytes, false) {
        Ok(index) => return Ok(index),
        Err(err) if !index_is_full(&err) => return Err(index_open_error(path, &index_dir, err)),
        Err(_) => {}
    }
    let reserve = path.join(RESERVE_FILE);
    match fs.remove_file(&reserve) {
        Ok(()) => {
            warn!(store = %path.display(), "store is full: released its space reserve to open the index");
            fs.sync_dir(path).map_err(|e| open_write_io(path, path, e))?;
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(open_write_io(path, &reserve, err)),
    }
    RedbIndex::open(&index_dir, config.index_cache_bytes, false)
        .map_err(|e| index_open_error(path, &index_dir, e))
}

/// Whether an index error is the disk being full.
fn index_is_full(err: &IndexError) -> bool {
    err.io_error().is_some_and(is_full)
}

/// Maps a failure to open the index: a full disk, a read-only file system and a lock held
/// elsewhere get their own errors; anything else says to rebuild the index.
fn index_open_error(store: &Path, index_dir: &Path, err: IndexError) -> OpenError {
    if index_is_full(&err) {
        return OpenError::Full { path: store.to_path_buf() };
    }
    if err.io_error().is_some_and(is_read_only) {
        return OpenError::ReadOnly { path: store.to_path_buf() };
    }
    if err.is_lock_conflict() {
        return OpenError::Locked { path: store.to_path_buf() };
    }
    OpenError::Index { path: index_dir.to_path_buf(), source: err }
}

fn open_io(path: &Path, source: io::Error) -> OpenError {
    OpenError::Io { path: path.to_path_buf(), source }
}

/// An I/O error while opening, where a read-only file system is worth its own message.
fn open_write_io(store: &Path, file: &Path, source: io::Error) -> OpenError {
    if is_read_only(&source) {
        OpenError::ReadOnly { path: store.to_path_buf() }
    } else {
        open_io(file, source)
    }
}

fn create_io(store: &Path, file: &Path, source: io::Error) -> CreateError {
    if is_read_only(&source) {
        CreateError::ReadOnly { path: store.to_path_buf() }
    } else if is_full(&source) {
        CreateError::Full { path: store.to_path_buf() }
    } else {
        CreateError::Io { path: file.to_path_buf(), source }
    }
}

/// An error and its causes on one line.
fn error_text(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn read_io(path: &Path, source: io::Error) -> ReadError {
    ReadError::Io { path: path.to_path_buf(), source }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Store>();
    }

    #[test]
    fn config_parses_with_defaults_and_refuses_unknown_fields() {
        let config: Config = serde_json::from_str("{}").expect("defaults");
        assert_eq!(config, Config::default());
        assert_eq!(config.index_cache_bytes, 32 * 1024 * 1024);
        assert_eq!(config.pack_len_target, triad_proto::limits::PACK_LEN_TARGET);
        let config: Config = serde_json::from_str(r#"{"pack_len_target": 1000}"#).expect("one");
        assert_eq!(config.pack_len_target, 1000);
        assert!(serde_json::from_str::<Config>(r#"{"pack_len": 1000}"#).is_err());
    }
}
