//! The store: layout on disk, the commit order, open checks, scrub and rebuild.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use triad_core::head::SignedHead;
use triad_core::roster::Roster;
use triad_core::seal::SealedBlob;
use triad_core::{BlobId, Media, StoreId, Timestamp, VaultId};

use crate::error::{CreateError, OpenError, Problem, ReadError, WriteError};
use crate::fs::Fs;
use crate::index::{Index, Location};

/// Settings of a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Memory the index may use for its cache, in bytes.
    pub index_cache_bytes: u64,
    /// The size at which a pack file is closed and a new one started, in bytes.
    pub pack_len_target: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            index_cache_bytes: 32 * 1024 * 1024,
            pack_len_target: triad_proto::limits::PACK_LEN_TARGET,
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
    /// Entries that were damaged and not indexed.
    pub damaged: Vec<Damage>,
}

/// A blob store on disk. See the crate docs.
#[derive(Debug)]
pub struct Store {
    fs: Arc<dyn Fs>,
    index: Box<dyn Index>,
    path: PathBuf,
    id: StoreId,
    vault: VaultId,
    media: Media,
}

impl Store {
    /// Creates a new store at `path`, which must not exist or be an empty directory: writes the
    /// marker (file and directory synced), the `packs/` and `heads/` directories and the index.
    pub fn create(
        path: &Path,
        vault: VaultId,
        media: Media,
        id: StoreId,
        now: Timestamp,
        config: &Config,
    ) -> Result<Store, CreateError> {
        todo!("{path:?} {vault} {media} {id} {now:?} {config:?}")
    }

    /// Opens an existing store. `expected` is the store id the caller registered at this path
    /// (`None`: any); `vault` must match the marker.
    pub fn open(
        path: &Path,
        expected: Option<StoreId>,
        vault: VaultId,
        access: Access,
        config: &Config,
    ) -> Result<Store, OpenError> {
        todo!("{path:?} {expected:?} {vault} {access:?} {config:?}")
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
        todo!("{fs:?} {index:?} {path:?} {expected:?} {vault} {access:?} {config:?}")
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
        todo!("{fs:?} {index:?} {path:?} {vault} {media} {id} {now:?} {config:?}")
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store's id, from its marker.
    pub fn id(&self) -> StoreId {
        self.id
    }

    /// The vault the store belongs to.
    pub fn vault(&self) -> VaultId {
        self.vault
    }

    /// The media the store lives on.
    pub fn media(&self) -> Media {
        self.media
    }

    /// Whether the blob is in the store (committed, or put and not yet committed).
    pub fn contains(&self, id: BlobId) -> Result<bool, ReadError> {
        todo!("{id} {:?} {:?}", self.fs, self.index)
    }

    /// Appends the blob to the current pack. Buffered: neither durable nor acknowledged until
    /// [`Store::commit`] returns. Returns `false` (and writes nothing) if it was already present.
    pub fn put(&mut self, blob: &SealedBlob) -> Result<bool, WriteError> {
        todo!("{blob:?}")
    }

    /// Makes every put and remove since the last commit durable and indexed: writes buffered
    /// bytes, syncs the pack files (and the packs directory when a pack was created), then
    /// records the new locations and pack lengths in one index batch, durable on return. Only
    /// after `Ok` may a caller acknowledge or reference those blobs. On error nothing new is
    /// acknowledged, nothing committed before is lost, and the uncommitted puts are dropped.
    pub fn commit(&mut self) -> Result<(), WriteError> {
        todo!()
    }

    /// Bytes put (or removed) but not committed yet.
    pub fn pending_bytes(&self) -> u64 {
        todo!()
    }

    /// Reads a blob and verifies it against its address.
    pub fn get(&self, id: BlobId) -> Result<SealedBlob, ReadError> {
        todo!("{id}")
    }

    /// Location and length of every committed blob, sorted by (pack, offset).
    pub fn blobs(&self) -> Result<Vec<BlobInfo>, ReadError> {
        todo!()
    }

    /// Removes a blob: forgets it in the index and appends a tombstone to the current pack (so
    /// that a rebuild does not resurrect it); durable at the next commit. Space is not reclaimed.
    /// Returns `false` if the blob was not present.
    pub fn remove(&mut self, id: BlobId) -> Result<bool, WriteError> {
        todo!("{id}")
    }

    /// Stores a head as `heads/<device hex>/<folder hex>`, atomically. Returns `Ok(false)` and
    /// keeps the stored head if that one has a higher sequence (or the same sequence and other
    /// contents).
    pub fn write_head(&self, head: &SignedHead) -> Result<bool, WriteError> {
        todo!("{head:?}")
    }

    /// Every stored head, each verified for the store's vault.
    pub fn heads(&self) -> Result<Vec<SignedHead>, ReadError> {
        todo!()
    }

    /// Stores the roster as the file `roster`, atomically.
    pub fn write_roster(&self, roster: &Roster) -> Result<(), WriteError> {
        todo!("{roster:?}")
    }

    /// The stored roster, verified; `None` if there is none.
    pub fn roster(&self) -> Result<Option<Roster>, ReadError> {
        todo!()
    }

    /// Re-reads every committed blob with its entry header and re-hashes it, calling
    /// `progress(bytes_done)` now and then. Damage is listed, never a panic.
    pub fn scrub(&self, progress: &mut dyn FnMut(u64)) -> Result<ScrubReport, ReadError> {
        let _ = progress;
        todo!()
    }

    /// Counts of blobs, bytes and packs.
    pub fn stats(&self) -> Result<Stats, ReadError> {
        todo!()
    }

    /// Deletes the index and rebuilds it from the packs alone. Entries whose bytes do not hash
    /// to their id are reported and not indexed; a tombstone removes an earlier entry of its id.
    /// Takes the store's lock exclusively.
    pub fn rebuild_index(
        path: &Path,
        vault: VaultId,
        config: &Config,
    ) -> Result<RebuildReport, OpenError> {
        todo!("{path:?} {vault} {config:?}")
    }
}
