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
    /// A crash test double refused the operation.
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
    /// Opens (or creates, if `create`) the sled database in `dir`.
    pub fn open(dir: &Path, cache_bytes: u64, create: bool) -> Result<Self, IndexError> {
        todo!("{dir:?} {cache_bytes} {create}")
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

impl Index for SledIndex {
    fn store(&self) -> Result<Option<StoreId>, IndexError> {
        todo!()
    }

    fn init(&mut self, store: StoreId) -> Result<(), IndexError> {
        todo!("{store}")
    }

    fn get(&self, id: &BlobId) -> Result<Option<Location>, IndexError> {
        todo!("{id}")
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), IndexError> {
        todo!("{batch:?}")
    }

    fn pack_lengths(&self) -> Result<BTreeMap<u32, u64>, IndexError> {
        todo!()
    }

    fn scan(&self, visit: &mut dyn FnMut(BlobId, Location)) -> Result<(), IndexError> {
        let _ = visit;
        todo!()
    }

    fn len(&self) -> Result<u64, IndexError> {
        todo!()
    }
}

#[allow(dead_code)]
const _: (u8, u8, u8, &[u8], &[u8]) =
    (SLED_VERSION, BLOB_PREFIX, PACK_PREFIX, META_VERSION, META_STORE);
