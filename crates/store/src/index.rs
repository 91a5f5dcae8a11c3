//! The index: where each committed blob lives, and how long each pack is when committed.
//!
//! The index is a cache of what the packs say and can always be rebuilt from them
//! ([`crate::Store::rebuild_index`]). It sits behind the [`Index`] trait so that its engine can
//! change without touching the store: the store keeps it in redb ([`RedbIndex`]); [`SledIndex`]
//! is the engine of earlier builds, kept so that the two can be measured side by side, and
//! [`MemIndex`] serves tests and read-only opens.
//!
//! Durability: [`Index::commit`] and [`Index::init`] are durable when they return, and a batch
//! is applied entirely or not at all. Nothing else about the index is promised.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use triad_core::{BlobId, DeviceId, FolderId, StoreId};

/// Where a blob's bytes are: pack sequence number, offset of the bytes (after the entry
/// header) and length. Encoded as 16 little-endian bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The pack's sequence number.
    pub pack: u32,
    /// Offset of the blob's bytes in the pack file.
    pub offset: u64,
    /// The blob's length in bytes.
    pub len: u32,
}

impl Location {
    /// Bytes of an encoded location.
    pub const LEN: usize = 16;

    /// Encodes the location: pack u32, offset u64, len u32, little-endian.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..4].copy_from_slice(&self.pack.to_le_bytes());
        out[4..12].copy_from_slice(&self.offset.to_le_bytes());
        out[12..].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    /// Decodes a location; `None` if `bytes` is not 16 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; Self::LEN] = bytes.try_into().ok()?;
        Some(Self {
            pack: u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")),
            offset: u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes")),
            len: u32::from_le_bytes(bytes[12..].try_into().expect("4 bytes")),
        })
    }

    /// The offset just past the blob's bytes. A location read from a damaged index may name any
    /// offset: past the end of every file, it saturates instead of overflowing.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(u64::from(self.len))
    }
}

/// Where a head entry is: which folder's head, at which sequence, and the entry's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HeadRecord {
    /// The device that owns the folder.
    pub device: DeviceId,
    /// The folder.
    pub folder: FolderId,
    /// The head's sequence.
    pub sequence: u64,
    /// Where the signed head record is (the body of a head entry).
    pub location: Location,
}

impl HeadRecord {
    /// Bytes of the key: device, folder, sequence big-endian (so keys sort by folder, then
    /// sequence).
    pub const KEY_LEN: usize = 32 + 16 + 8;

    /// The record's key.
    pub fn key(&self) -> [u8; Self::KEY_LEN] {
        let mut key = [0u8; Self::KEY_LEN];
        key[..32].copy_from_slice(self.device.as_bytes());
        key[32..48].copy_from_slice(self.folder.as_bytes());
        key[48..].copy_from_slice(&self.sequence.to_be_bytes());
        key
    }

    /// Decodes a record from its key and location bytes; `None` if malformed.
    pub fn from_parts(key: &[u8], location: &[u8]) -> Option<Self> {
        let key: &[u8; Self::KEY_LEN] = key.try_into().ok()?;
        Some(Self {
            device: DeviceId::try_from_slice(&key[..32])?,
            folder: FolderId::try_from_slice(&key[32..48])?,
            sequence: u64::from_be_bytes(key[48..].try_into().ok()?),
            location: Location::from_bytes(location)?,
        })
    }
}

/// One atomic change to the index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Blobs to record (or move).
    pub puts: Vec<(BlobId, Location)>,
    /// Blobs to forget. Applied after `puts`.
    pub removes: Vec<BlobId>,
    /// New committed lengths of packs.
    pub pack_lengths: Vec<(u32, u64)>,
    /// Head entries to record.
    pub heads: Vec<HeadRecord>,
    /// Blobs dropped because their bytes were damaged or lost (`true`), or stored intact again
    /// (`false`): what the next backup should put back.
    pub forgotten: Vec<(BlobId, bool)>,
}

impl Batch {
    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty()
            && self.removes.is_empty()
            && self.pack_lengths.is_empty()
            && self.heads.is_empty()
            && self.forgotten.is_empty()
    }
}

/// The index failed or holds something it should not.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// redb failed. Boxed: redb's error is large, and this one travels inside every store error.
    #[error("the redb database failed")]
    Redb(#[source] Box<redb::Error>),
    /// sled failed.
    #[error("the sled database failed")]
    Sled(#[from] sled::Error),
    /// A file or directory of the index could not be read or written.
    #[error("cannot access the index files")]
    Io(#[from] io::Error),
    /// The database engine panicked on its own files (sled and redb do on some damaged files).
    #[error("the index database panicked: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The index directory holds a sled database, the index of earlier builds, which this build
    /// no longer reads.
    #[error("the index directory holds a sled index from an earlier build of triad")]
    OldFormat,
    /// A key or value in the index is not what this build writes.
    #[error("the index holds a malformed {what}")]
    Malformed {
        /// What was malformed.
        what: &'static str,
    },
    /// The index was written by another format version.
    #[error("the index has format version {found}, this build reads {expected}")]
    Version {
        /// The version found.
        found: u8,
        /// The version this build reads.
        expected: u8,
    },
    /// The index belongs to another store, or was never initialised.
    #[error("the index belongs to store {found:?}, not to store {expected}")]
    OtherStore {
        /// The store recorded in the index (`None`: none, the index is new or was wiped).
        found: Option<StoreId>,
        /// The store expected.
        expected: StoreId,
    },
    /// The index directory, or the database file in it, does not exist.
    #[error("the index is missing")]
    Missing,
    /// The index refused the operation (a backend that has shut down, or a test double).
    #[error("the index is unavailable")]
    Unavailable,
}

impl From<redb::Error> for IndexError {
    fn from(err: redb::Error) -> Self {
        IndexError::Redb(Box::new(err))
    }
}

/// The store's index. Object-safe; see the module docs for the durability rules.
pub trait Index: Send + Sync + fmt::Debug {
    /// The store this index was initialised for, if any.
    fn store(&self) -> Result<Option<StoreId>, IndexError>;
    /// Records the store this index belongs to; durable on return.
    fn init(&mut self, store: StoreId) -> Result<(), IndexError>;
    /// Where a committed blob is.
    fn get(&self, id: &BlobId) -> Result<Option<Location>, IndexError>;
    /// Applies a batch atomically; durable on return.
    fn commit(&mut self, batch: &Batch) -> Result<(), IndexError>;
    /// The committed length of every pack.
    fn pack_lengths(&self) -> Result<BTreeMap<u32, u64>, IndexError>;
    /// Calls `visit` for every committed blob, in no particular order.
    fn scan(&self, visit: &mut dyn FnMut(BlobId, Location)) -> Result<(), IndexError>;
    /// How many blobs are committed.
    fn len(&self) -> Result<u64, IndexError>;
    /// Every head entry recorded, sorted by device, folder and sequence.
    fn heads(&self) -> Result<Vec<HeadRecord>, IndexError>;
    /// Blobs dropped as damaged or lost and not stored again since.
    fn forgotten(&self) -> Result<Vec<BlobId>, IndexError>;
    /// Whether no blob is committed.
    fn is_empty(&self) -> Result<bool, IndexError> {
        Ok(self.len()? == 0)
    }
}

#[derive(Debug, Default)]
struct MemState {
    store: Option<StoreId>,
    blobs: BTreeMap<BlobId, Location>,
    packs: BTreeMap<u32, u64>,
    heads: std::collections::BTreeSet<HeadRecord>,
    forgotten: std::collections::BTreeSet<BlobId>,
}

/// An index in memory, for tests and read-only opens. Clones share the same state, so a test
/// can keep a handle and reopen a store over what had been committed.
#[derive(Debug, Clone, Default)]
pub struct MemIndex {
    state: Arc<RwLock<MemState>>,
}

impl MemIndex {
    /// An empty, uninitialised index.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new index with its own copy of this one's state.
    pub fn deep_clone(&self) -> Self {
        let state = self.read();
        let copy = MemState {
            store: state.store,
            blobs: state.blobs.clone(),
            packs: state.packs.clone(),
            heads: state.heads.clone(),
            forgotten: state.forgotten.clone(),
        };
        Self { state: Arc::new(RwLock::new(copy)) }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, MemState> {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, MemState> {
        self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Index for MemIndex {
    fn store(&self) -> Result<Option<StoreId>, IndexError> {
        Ok(self.read().store)
    }

    fn init(&mut self, store: StoreId) -> Result<(), IndexError> {
        self.write().store = Some(store);
        Ok(())
    }

    fn get(&self, id: &BlobId) -> Result<Option<Location>, IndexError> {
        Ok(self.read().blobs.get(id).copied())
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), IndexError> {
        let mut state = self.write();
        for (id, location) in &batch.puts {
            state.blobs.insert(*id, *location);
        }
        for id in &batch.removes {
            state.blobs.remove(id);
        }
        for (pack, len) in &batch.pack_lengths {
            state.packs.insert(*pack, *len);
        }
        for record in &batch.heads {
            state.heads.retain(|r| r.key() != record.key());
            state.heads.insert(*record);
        }
        for (id, forgotten) in &batch.forgotten {
            if *forgotten {
                state.forgotten.insert(*id);
            } else {
                state.forgotten.remove(id);
            }
        }
        Ok(())
    }

    fn heads(&self) -> Result<Vec<HeadRecord>, IndexError> {
        Ok(self.read().heads.iter().copied().collect())
    }

    fn forgotten(&self) -> Result<Vec<BlobId>, IndexError> {
        Ok(self.read().forgotten.iter().copied().collect())
    }

    fn pack_lengths(&self) -> Result<BTreeMap<u32, u64>, IndexError> {
        Ok(self.read().packs.clone())
    }

    fn scan(&self, visit: &mut dyn FnMut(BlobId, Location)) -> Result<(), IndexError> {
        for (id, location) in &self.read().blobs {
            visit(*id, *location);
        }
        Ok(())
    }

    fn len(&self) -> Result<u64, IndexError> {
        Ok(self.read().blobs.len() as u64)
    }
}

/// Format version of the redb index layout.
pub const REDB_VERSION: u8 = 1;
/// Blob id → encoded [`Location`].
const REDB_BLOBS: TableDefinition<&[u8; 32], &[u8; Location::LEN]> = TableDefinition::new("blobs");
/// Pack sequence number → committed length.
const REDB_PACKS: TableDefinition<u32, u64> = TableDefinition::new("packs");
/// `version` → the layout version (one byte); `store` → the store id (16 bytes).
const REDB_META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Head key ([`HeadRecord::key`]) → encoded [`Location`] of the head entry's body.
const REDB_HEADS: TableDefinition<&[u8; HeadRecord::KEY_LEN], &[u8; Location::LEN]> =
    TableDefinition::new("heads");
/// Blob id → nothing: blobs dropped as damaged or lost, not stored again since.
const REDB_FORGOTTEN: TableDefinition<&[u8; 32], ()> = TableDefinition::new("forgotten");
const REDB_META_VERSION: &str = "version";
const REDB_META_STORE: &str = "store";

/// An index in one redb database file, `index.redb` inside the index directory. Three tables,
/// written together by one write transaction per batch:
///
/// - `blobs`: blob id (32 bytes) → [`Location`] (16 bytes)
/// - `packs`: pack sequence number (u32) → committed length (u64)
/// - `meta`: `version` → the layout version ([`REDB_VERSION`]); `store` → the store id
/// - `heads`: device, folder, sequence (56 bytes) → [`Location`] of a head entry's body
/// - `forgotten`: blob id (32 bytes) → nothing, for blobs dropped as damaged or lost
///
/// `heads` and `forgotten` were added without a layout change: an index without them reads as
/// empty tables, and they are created by the first commit that writes to them.
///
/// Every write transaction commits with redb's default `Durability::Immediate`: the commit is
/// synced to the disk before it returns. The page cache is bounded by the `cache_bytes` given
/// to [`RedbIndex::open`].
///
/// redb stops using a database after an I/O error on it (every later call fails until it is
/// reopened), so a commit that fails on I/O, a full disk for one, reopens the database: what
/// was committed before stays readable, and the next commit may succeed once there is room.
#[derive(Debug)]
pub struct RedbIndex {
    /// `None` only after a reopen failed; every call then fails with [`IndexError::Unavailable`].
    db: Option<redb::Database>,
    dir: PathBuf,
    cache_bytes: u64,
}

impl RedbIndex {
    /// The name of the database file inside the index directory.
    pub const FILE_NAME: &'static str = "index.redb";

    /// Opens the redb database in `dir`. With `create`, makes the directory and the database
    /// file if they are missing (syncing the directories) and stamps a new database with the
    /// layout version. Without it, a missing directory or file is [`IndexError::Missing`], and a
    /// directory that holds the sled index of earlier builds is [`IndexError::OldFormat`].
    ///
    /// redb locks the file; a conflict is an [`IndexError::Redb`] holding
    /// `redb::Error::DatabaseAlreadyOpen`.
    pub fn open(dir: &Path, cache_bytes: u64, create: bool) -> Result<Self, IndexError> {
        let file = dir.join(Self::FILE_NAME);
        if create {
            use std::os::unix::fs::DirBuilderExt;
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => sync_dir(&parent_of(dir))?,
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(err.into()),
            }
        } else {
            match std::fs::symlink_metadata(&file) {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    return Err(if holds_sled(dir) {
                        IndexError::OldFormat
                    } else {
                        IndexError::Missing
                    });
                }
                Err(err) => return Err(err.into()),
            }
        }
        let db = open_redb(&file, cache_bytes, create)?;
        if create {
            // redb creates the file after the umask; a store is private whatever it is.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            // The file may be new: its name is durable only once the directory is synced.
            sync_dir(dir)?;
        }
        let mut index = Self { db: Some(db), dir: dir.to_path_buf(), cache_bytes };
        match index.meta(REDB_META_VERSION)? {
            Some(found) if found == [REDB_VERSION] => {}
            Some(found) => {
                let found = found.first().copied().unwrap_or(0);
                return Err(IndexError::Version { found, expected: REDB_VERSION });
            }
            None if create => index.write(|txn| {
                // Every table exists from the start, so readers never meet a missing one.
                txn.open_table(REDB_BLOBS)?;
                txn.open_table(REDB_PACKS)?;
                txn.open_table(REDB_META)?.insert(REDB_META_VERSION, [REDB_VERSION].as_slice())?;
                Ok(())
            })?,
            // An existing index without a version was never initialised or lost its contents:
            // the store's check of `store()` reports it.
            None => {}
        }
        Ok(index)
    }

    /// The index directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Bytes of the database file.
    pub fn size_on_disk(&self) -> Result<u64, IndexError> {
        Ok(std::fs::metadata(self.dir.join(Self::FILE_NAME))?.len())
    }

    fn db(&self) -> Result<&redb::Database, IndexError> {
        self.db.as_ref().ok_or(IndexError::Unavailable)
    }

    /// Runs `read` over a read transaction, turning a panic of redb into an error.
    fn read<T>(
        &self,
        read: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, IndexError> {
        let db = self.db()?;
        catch_panic(|| {
            let txn = db.begin_read()?;
            read(&txn)
        })?
        .map_err(IndexError::from)
    }

    /// Runs `write` in one write transaction and commits it (durable on return). After an I/O
    /// error the database is reopened, since redb refuses every later call on it.
    fn write(
        &mut self,
        write: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), IndexError> {
        let db = self.db()?;
        let result = catch_panic(|| {
            let txn = db.begin_write()?;
            write(&txn)?;
            txn.commit()?;
            Ok::<(), redb::Error>(())
        })
        .and_then(|done| done.map_err(IndexError::from));
        if let Err(IndexError::Redb(err)) = &result
            && matches!(**err, redb::Error::Io(_) | redb::Error::PreviousIo)
        {
            self.reopen();
        }
        result
    }

    /// Closes and reopens the database after an I/O error; best effort.
    fn reopen(&mut self) {
        if let Some(db) = self.db.take()
            && let Err(err) = db.close()
        {
            tracing::debug!(index = %self.dir.display(), error = %err,
                "closing the index after an i/o error failed");
        }
        let file = self.dir.join(Self::FILE_NAME);
        match open_redb(&file, self.cache_bytes, false) {
            Ok(db) => self.db = Some(db),
            Err(err) => tracing::warn!(index = %self.dir.display(), error = %err,
                "cannot reopen the index after an i/o error; reopen the store"),
        }
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, IndexError> {
        self.read(|txn| match Self::table(txn, REDB_META)? {
            Some(table) => Ok(table.get(key)?.map(|value| value.value().to_vec())),
            None => Ok(None),
        })
    }

    /// Opens a table for reading; `None` if the database has no such table (a file that was
    /// never stamped).
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        txn: &redb::ReadTransaction,
        definition: TableDefinition<K, V>,
    ) -> Result<Option<redb::ReadOnlyTable<K, V>>, redb::Error> {
        match txn.open_table(definition) {
            Ok(table) => Ok(Some(table)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
}

impl Index for RedbIndex {
    fn store(&self) -> Result<Option<StoreId>, IndexError> {
        match self.meta(REDB_META_STORE)? {
            None => Ok(None),
            Some(bytes) => StoreId::try_from_slice(&bytes)
                .map(Some)
                .ok_or(IndexError::Malformed { what: "store id" }),
        }
    }

    fn init(&mut self, store: StoreId) -> Result<(), IndexError> {
        self.write(|txn| {
            let mut meta = txn.open_table(REDB_META)?;
            meta.insert(REDB_META_VERSION, [REDB_VERSION].as_slice())?;
            meta.insert(REDB_META_STORE, store.as_bytes().as_slice())?;
            Ok(())
        })
    }

    fn get(&self, id: &BlobId) -> Result<Option<Location>, IndexError> {
        let found = self.read(|txn| {
            let Some(table) = Self::table(txn, REDB_BLOBS)? else {
                return Ok(None);
            };
            Ok(table.get(id.as_bytes())?.map(|value| *value.value()))
        })?;
        Ok(found.map(|bytes| Location::from_bytes(&bytes).expect("a fixed 16-byte value")))
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), IndexError> {
        // Sorted keys touch each B-tree page once. The sort is stable, so of two puts of one id
        // the later still wins.
        let mut puts: Vec<&(BlobId, Location)> = batch.puts.iter().collect();
        puts.sort_by_key(|(id, _)| *id);
        self.write(|txn| {
            let mut blobs = txn.open_table(REDB_BLOBS)?;
            for (id, location) in puts {
                blobs.insert(id.as_bytes(), &location.to_bytes())?;
            }
            for id in &batch.removes {
                blobs.remove(id.as_bytes())?;
            }
            let mut packs = txn.open_table(REDB_PACKS)?;
            for (pack, len) in &batch.pack_lengths {
                packs.insert(*pack, *len)?;
            }
            if !batch.heads.is_empty() {
                let mut heads = txn.open_table(REDB_HEADS)?;
                for record in &batch.heads {
                    heads.insert(&record.key(), &record.location.to_bytes())?;
                }
            }
            if !batch.forgotten.is_empty() {
                let mut forgotten = txn.open_table(REDB_FORGOTTEN)?;
                for (id, dropped) in &batch.forgotten {
                    if *dropped {
                        forgotten.insert(id.as_bytes(), ())?;
                    } else {
                        forgotten.remove(id.as_bytes())?;
                    }
                }
            }
            Ok(())
        })
    }

    fn heads(&self) -> Result<Vec<HeadRecord>, IndexError> {
        let found = self.read(|txn| {
            let mut out = Vec::new();
            if let Some(table) = Self::table(txn, REDB_HEADS)? {
                for item in table.iter()? {
                    let (key, location) = item?;
                    out.push((*key.value(), *location.value()));
                }
            }
            Ok(out)
        })?;
        found
            .iter()
            .map(|(key, location)| {
                HeadRecord::from_parts(key, location).ok_or(IndexError::Malformed { what: "head" })
            })
            .collect()
    }

    fn forgotten(&self) -> Result<Vec<BlobId>, IndexError> {
        self.read(|txn| {
            let mut out = Vec::new();
            if let Some(table) = Self::table(txn, REDB_FORGOTTEN)? {
                for item in table.iter()? {
                    out.push(BlobId::from_bytes(*item?.0.value()));
                }
            }
            Ok(out)
        })
    }

    fn pack_lengths(&self) -> Result<BTreeMap<u32, u64>, IndexError> {
        self.read(|txn| {
            let mut out = BTreeMap::new();
            if let Some(table) = Self::table(txn, REDB_PACKS)? {
                for item in table.iter()? {
                    let (pack, len) = item?;
                    out.insert(pack.value(), len.value());
                }
            }
            Ok(out)
        })
    }

    fn scan(&self, visit: &mut dyn FnMut(BlobId, Location)) -> Result<(), IndexError> {
        self.read(|txn| {
            if let Some(table) = Self::table(txn, REDB_BLOBS)? {
                for item in table.iter()? {
                    let (id, location) = item?;
                    let location =
                        Location::from_bytes(location.value()).expect("a fixed 16-byte value");
                    visit(BlobId::from_bytes(*id.value()), location);
                }
            }
            Ok(())
        })
    }

    /// The blob count redb keeps with the table: no scan.
    fn len(&self) -> Result<u64, IndexError> {
        self.read(|txn| match Self::table(txn, REDB_BLOBS)? {
            Some(table) => table.len().map_err(redb::Error::from),
            None => Ok(0),
        })
    }
}

/// Opens (or, with `create`, creates) a redb file with a bounded cache. redb may panic on a file
/// damaged outside it; that becomes an error that says to rebuild, never a crash.
fn open_redb(file: &Path, cache_bytes: u64, create: bool) -> Result<redb::Database, IndexError> {
    let mut builder = redb::Builder::new();
    builder.set_cache_size(usize::try_from(cache_bytes).unwrap_or(usize::MAX));
    let opened = catch_panic(|| if create { builder.create(file) } else { builder.open(file) })?;
    opened.map_err(|err| IndexError::from(redb::Error::from(err)))
}

fn catch_panic<T>(run: impl FnOnce() -> T) -> Result<T, IndexError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .map_err(|payload| IndexError::Panicked { message: panic_message(payload.as_ref()) })
}

/// Whether `dir` holds a sled 0.34 database (its `conf` and `db` files).
fn holds_sled(dir: &Path) -> bool {
    ["conf", "db"].iter().any(|name| dir.join(name).is_file())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl IndexError {
    /// The I/O error underneath, if the engine failed on I/O.
    pub(crate) fn io_error(&self) -> Option<&io::Error> {
        match self {
            IndexError::Io(err) | IndexError::Sled(sled::Error::Io(err)) => Some(err),
            IndexError::Redb(err) => match err.as_ref() {
                redb::Error::Io(err) => Some(err),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether another handle holds the index's lock.
    pub(crate) fn is_lock_conflict(&self) -> bool {
        match self {
            IndexError::Redb(err) => matches!(**err, redb::Error::DatabaseAlreadyOpen),
            IndexError::Sled(err) => is_sled_lock_conflict(err),
            _ => false,
        }
    }
}

/// Format version of the sled index layout.
const SLED_VERSION: u8 = 1;
const BLOB_PREFIX: u8 = b'b';
const PACK_PREFIX: u8 = b'p';
const HEAD_PREFIX: u8 = b'h';
const FORGOTTEN_PREFIX: u8 = b'f';
const META_VERSION: &[u8] = b"mversion";
const META_STORE: &[u8] = b"mstore";

/// An index in a sled database. One tree, keys prefixed by kind so that one `sled::Batch`
/// updates blobs and pack lengths atomically:
///
/// - `b` + blob id (33 bytes) → [`Location`] (16 bytes)
/// - `p` + pack seq, big-endian (5 bytes) → committed length, u64 little-endian
/// - `mversion` → the layout version; `mstore` → the store id
#[derive(Debug)]
pub struct SledIndex {
    db: sled::Db,
    path: PathBuf,
}

impl SledIndex {
    /// Opens the sled database in `dir`, creating it if `create` (a new database is stamped
    /// with the layout version). sled takes its own lock on the directory; a conflict shows up
    /// as an [`IndexError::Sled`] whose I/O error kind is `WouldBlock`.
    pub fn open(dir: &Path, cache_bytes: u64, create: bool) -> Result<Self, IndexError> {
        let config = sled::Config::new().path(dir).cache_capacity(cache_bytes);
        let mut attempts = 0;
        let db = loop {
            // sled panics instead of failing on some damaged files; a damaged index must be an
            // error that says "rebuild", never a crash of the agent.
            let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
                .map_err(|payload| IndexError::Panicked {
                message: panic_message(payload.as_ref()),
            })?;
            match opened {
                Ok(db) => break db,
                // sled's I/O threads keep its files open (and locked) for a moment after the
                // last handle is dropped, so reopening at once in the same process can fail.
                Err(err) if is_sled_lock_conflict(&err) && attempts < LOCK_RETRIES => {
                    attempts += 1;
                    std::thread::sleep(LOCK_RETRY_DELAY);
                }
                Err(err) => return Err(err.into()),
            }
        };
        match db.get(META_VERSION)? {
            Some(found) if found.as_ref() == [SLED_VERSION] => {}
            Some(found) => {
                let found = found.first().copied().unwrap_or(0);
                return Err(IndexError::Version { found, expected: SLED_VERSION });
            }
            None if create => {
                db.insert(META_VERSION, &[SLED_VERSION])?;
                db.flush()?;
            }
            // An existing index without a version was never initialised or lost its contents:
            // the store's check of `store()` reports it.
            None => {}
        }
        Ok(Self { db, path: dir.to_path_buf() })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes sled reports for its files.
    pub fn size_on_disk(&self) -> Result<u64, IndexError> {
        Ok(self.db.size_on_disk()?)
    }
}

/// How often, and how far apart, opening sled is retried while its lock is still held.
const LOCK_RETRIES: u32 = 100;
const LOCK_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// Whether sled failed to open because another handle holds its lock. sled reports it as an
/// `Other` I/O error with this text.
pub(crate) fn is_sled_lock_conflict(err: &sled::Error) -> bool {
    matches!(err, sled::Error::Io(io_err)
        if io_err.kind() == std::io::ErrorKind::WouldBlock
            || io_err.to_string().contains("could not acquire lock"))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic".to_owned()
    }
}

fn blob_key(id: &BlobId) -> [u8; 33] {
    let mut key = [0u8; 33];
    key[0] = BLOB_PREFIX;
    key[1..].copy_from_slice(id.as_bytes());
    key
}

fn pack_key(pack: u32) -> [u8; 5] {
    let mut key = [0u8; 5];
    key[0] = PACK_PREFIX;
    key[1..].copy_from_slice(&pack.to_be_bytes());
    key
}

impl Index for SledIndex {
    fn store(&self) -> Result<Option<StoreId>, IndexError> {
        match self.db.get(META_STORE)? {
            None => Ok(None),
            Some(bytes) => StoreId::try_from_slice(&bytes)
                .map(Some)
                .ok_or(IndexError::Malformed { what: "store id" }),
        }
    }

    fn init(&mut self, store: StoreId) -> Result<(), IndexError> {
        self.db.insert(META_VERSION, &[SLED_VERSION])?;
        self.db.insert(META_STORE, store.as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    fn get(&self, id: &BlobId) -> Result<Option<Location>, IndexError> {
        match self.db.get(blob_key(id))? {
            None => Ok(None),
            Some(bytes) => Location::from_bytes(&bytes)
                .map(Some)
                .ok_or(IndexError::Malformed { what: "blob location" }),
        }
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), IndexError> {
        let mut sled_batch = sled::Batch::default();
        for (id, location) in &batch.puts {
            sled_batch.insert(&blob_key(id)[..], &location.to_bytes()[..]);
        }
        for id in &batch.removes {
            sled_batch.remove(&blob_key(id)[..]);
        }
        for (pack, len) in &batch.pack_lengths {
            sled_batch.insert(&pack_key(*pack)[..], &len.to_le_bytes()[..]);
        }
        for record in &batch.heads {
            let mut key = vec![HEAD_PREFIX];
            key.extend_from_slice(&record.key());
            sled_batch.insert(key, &record.location.to_bytes()[..]);
        }
        for (id, dropped) in &batch.forgotten {
            let mut key = vec![FORGOTTEN_PREFIX];
            key.extend_from_slice(id.as_bytes());
            if *dropped {
                sled_batch.insert(key, &[][..]);
            } else {
                sled_batch.remove(key);
            }
        }
        self.db.apply_batch(sled_batch)?;
        // sled syncs on its own only every 500 ms: the commit is durable after this flush.
        self.db.flush()?;
        Ok(())
    }

    fn pack_lengths(&self) -> Result<BTreeMap<u32, u64>, IndexError> {
        let mut out = BTreeMap::new();
        for item in self.db.scan_prefix([PACK_PREFIX]) {
            let (key, value) = item?;
            let pack = key
                .get(1..)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .ok_or(IndexError::Malformed { what: "pack key" })?;
            let len = <[u8; 8]>::try_from(value.as_ref())
                .map(u64::from_le_bytes)
                .map_err(|_| IndexError::Malformed { what: "pack length" })?;
            out.insert(pack, len);
        }
        Ok(out)
    }

    fn scan(&self, visit: &mut dyn FnMut(BlobId, Location)) -> Result<(), IndexError> {
        for item in self.db.scan_prefix([BLOB_PREFIX]) {
            let (key, value) = item?;
            let id = key
                .get(1..)
                .and_then(BlobId::try_from_slice)
                .ok_or(IndexError::Malformed { what: "blob key" })?;
            let location = Location::from_bytes(&value)
                .ok_or(IndexError::Malformed { what: "blob location" })?;
            visit(id, location);
        }
        Ok(())
    }

    fn heads(&self) -> Result<Vec<HeadRecord>, IndexError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix([HEAD_PREFIX]) {
            let (key, value) = item?;
            let record = key.get(1..).and_then(|key| HeadRecord::from_parts(key, &value));
            out.push(record.ok_or(IndexError::Malformed { what: "head" })?);
        }
        Ok(out)
    }

    fn forgotten(&self) -> Result<Vec<BlobId>, IndexError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix([FORGOTTEN_PREFIX]).keys() {
            let key = item?;
            let id = key.get(1..).and_then(BlobId::try_from_slice);
            out.push(id.ok_or(IndexError::Malformed { what: "forgotten blob" })?);
        }
        Ok(out)
    }

    /// Counts the blobs: a full scan of the blob keys.
    fn len(&self) -> Result<u64, IndexError> {
        let mut n = 0u64;
        for item in self.db.scan_prefix([BLOB_PREFIX]).keys() {
            item?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(index: &mut dyn Index) {
        let store = StoreId::from_bytes([4; 16]);
        assert_eq!(index.store().expect("store"), None);
        index.init(store).expect("init");
        assert_eq!(index.store().expect("store"), Some(store));
        let a = BlobId::of(b"a");
        let b = BlobId::of(b"b");
        let la = Location { pack: 1, offset: 80, len: 100 };
        let lb = Location { pack: 2, offset: 80, len: 7 };
        index
            .commit(&Batch {
                puts: vec![(a, la), (b, lb)],
                pack_lengths: vec![(1, 180), (2, 87)],
                ..Batch::default()
            })
            .expect("commit");
        assert_eq!(index.get(&a).expect("get"), Some(la));
        assert_eq!(index.len().expect("len"), 2);
        let device = triad_core::DeviceId::from_bytes([7; 32]);
        let folder = triad_core::FolderId::from_bytes([8; 16]);
        let head = |sequence, offset| HeadRecord {
            device,
            folder,
            sequence,
            location: Location { pack: 2, offset, len: 150 },
        };
        index
            .commit(&Batch {
                removes: vec![a],
                pack_lengths: vec![(2, 200)],
                heads: vec![head(2, 300), head(1, 100)],
                forgotten: vec![(a, true), (b, true)],
                ..Batch::default()
            })
            .expect("commit");
        index.commit(&Batch { forgotten: vec![(b, false)], ..Batch::default() }).expect("commit");
        assert_eq!(index.heads().expect("heads"), vec![head(1, 100), head(2, 300)]);
        assert_eq!(index.forgotten().expect("forgotten"), vec![a]);
        assert_eq!(index.get(&a).expect("get"), None);
        let mut seen = Vec::new();
        index.scan(&mut |id, loc| seen.push((id, loc))).expect("scan");
        assert_eq!(seen, vec![(b, lb)]);
        let lengths = index.pack_lengths().expect("lengths");
        assert_eq!(lengths.into_iter().collect::<Vec<_>>(), vec![(1, 180), (2, 200)]);
    }

    #[test]
    fn location_is_sixteen_little_endian_bytes() {
        let loc = Location { pack: 1, offset: 2, len: 3 };
        let bytes = loc.to_bytes();
        assert_eq!(bytes, [1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(Location::from_bytes(&bytes), Some(loc));
        assert_eq!(Location::from_bytes(&bytes[..15]), None);
    }

    #[test]
    fn a_damaged_location_has_an_end() {
        let damaged = Location::from_bytes(&[0xff; 16]).expect("16 bytes");
        assert_eq!(damaged.end(), u64::MAX);
    }

    #[test]
    fn mem_index_behaves() {
        exercise(&mut MemIndex::new());
    }

    #[test]
    fn redb_index_behaves_and_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index");
        {
            let mut index = RedbIndex::open(&path, 1 << 20, true).expect("open");
            exercise(&mut index);
        }
        assert!(path.join(RedbIndex::FILE_NAME).is_file());
        let index = RedbIndex::open(&path, 1 << 20, false).expect("reopen");
        assert_eq!(index.store().expect("store"), Some(StoreId::from_bytes([4; 16])));
        assert_eq!(index.len().expect("len"), 1);
    }

    #[test]
    fn redb_index_refuses_a_second_handle_and_a_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index");
        let err = RedbIndex::open(&path, 1 << 20, false).expect_err("no directory");
        assert!(matches!(err, IndexError::Missing), "{err:?}");
        let first = RedbIndex::open(&path, 1 << 20, true).expect("create");
        let err = RedbIndex::open(&path, 1 << 20, false).expect_err("second handle");
        assert!(err.is_lock_conflict(), "{err:?}");
        drop(first);
        std::fs::remove_file(path.join(RedbIndex::FILE_NAME)).expect("remove");
        let err = RedbIndex::open(&path, 1 << 20, false).expect_err("no file");
        assert!(matches!(err, IndexError::Missing), "{err:?}");
    }

    #[test]
    fn redb_index_reports_an_old_sled_index_and_a_garbage_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index");
        {
            let mut sled = SledIndex::open(&path, 1 << 20, true).expect("sled");
            sled.init(StoreId::from_bytes([4; 16])).expect("init");
        }
        let err = RedbIndex::open(&path, 1 << 20, false).expect_err("sled index");
        assert!(matches!(err, IndexError::OldFormat), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the index directory holds a sled index from an earlier build of triad"
        );

        let garbage = dir.path().join("garbage");
        std::fs::create_dir(&garbage).expect("mkdir");
        std::fs::write(garbage.join(RedbIndex::FILE_NAME), vec![0xA5; 4096]).expect("write");
        let err = RedbIndex::open(&garbage, 1 << 20, false).expect_err("garbage");
        assert!(
            !err.is_lock_conflict()
                && err.io_error().is_none_or(|e| e.kind() == io::ErrorKind::InvalidData),
            "{err:?}"
        );
    }

    #[test]
    fn sled_index_behaves_and_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index");
        {
            let mut index = SledIndex::open(&path, 1 << 20, true).expect("open");
            exercise(&mut index);
        }
        let index = SledIndex::open(&path, 1 << 20, false).expect("reopen");
        assert_eq!(index.store().expect("store"), Some(StoreId::from_bytes([4; 16])));
        assert_eq!(index.len().expect("len"), 1);
    }
}
