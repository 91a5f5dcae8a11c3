//! The index: where each committed blob lives, and how long each pack is when committed.
//!
//! The index is a cache of what the packs say and can always be rebuilt from them
//! ([`crate::Store::rebuild_index`]). It sits behind the [`Index`] trait because sled calls
//! itself beta and says its on-disk format will change.
//!
//! Durability: [`Index::commit`] and [`Index::init`] are durable when they return, and a batch
//! is applied entirely or not at all. Nothing else about the index is promised.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use triad_core::{BlobId, StoreId};

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

    /// The offset just past the blob's bytes.
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
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
}

impl Batch {
    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.removes.is_empty() && self.pack_lengths.is_empty()
    }
}

/// The index failed or holds something it should not.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// sled failed.
    #[error("the sled database failed")]
    Sled(#[from] sled::Error),
    /// sled panicked on its own files (it does on some damaged files).
    #[error("the sled database panicked while opening its files: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
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
    /// The index directory does not exist.
    #[error("the index directory is missing")]
    Missing,
    /// The index refused the operation (a backend that has shut down, or a test double).
    #[error("the index is unavailable")]
    Unavailable,
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
        let copy =
            MemState { store: state.store, blobs: state.blobs.clone(), packs: state.packs.clone() };
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
        Ok(())
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

/// Format version of the sled index layout.
const SLED_VERSION: u8 = 1;
const BLOB_PREFIX: u8 = b'b';
const PACK_PREFIX: u8 = b'p';
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
                removes: vec![],
                pack_lengths: vec![(1, 180), (2, 87)],
            })
            .expect("commit");
        assert_eq!(index.get(&a).expect("get"), Some(la));
        assert_eq!(index.len().expect("len"), 2);
        index
            .commit(&Batch { puts: vec![], removes: vec![a], pack_lengths: vec![(2, 200)] })
            .expect("commit");
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
    fn mem_index_behaves() {
        exercise(&mut MemIndex::new());
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
