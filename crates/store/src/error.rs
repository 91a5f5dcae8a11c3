//! Errors of the store, one enum per operation.

use std::io;
use std::path::PathBuf;

use triad_core::head::HeadError;
use triad_core::roster::RosterError;
use triad_core::{BlobId, StoreId, VaultId};
use triad_proto::store::FrameError;

use crate::index::IndexError;

/// A store could not be opened (or its index rebuilt).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Nothing exists at the path.
    #[error("store at {path} is missing: is the disk plugged in and mounted?")]
    Missing {
        /// The store path.
        path: PathBuf,
    },
    /// The path is an empty directory: most likely a mount point without its disk.
    #[error(
        "store at {path} is empty: this looks like an empty mount point; plug in or mount the disk"
    )]
    Empty {
        /// The store path.
        path: PathBuf,
    },
    /// The path holds something, but no store marker.
    #[error("{path} is not a triad store")]
    NotAStore {
        /// The store path.
        path: PathBuf,
    },
    /// The marker file exists but cannot be read as a marker.
    #[error("store marker {path} is damaged")]
    Marker {
        /// The marker file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: FrameError,
    },
    /// The store belongs to another vault.
    #[error("store at {path} belongs to vault {found}, not to this vault ({expected})")]
    OtherVault {
        /// The store path.
        path: PathBuf,
        /// The vault in the marker.
        found: VaultId,
        /// The vault of the caller.
        expected: VaultId,
    },
    /// The store is not the one the caller registered at this path.
    #[error(
        "a different store is mounted at {path} (found store {found}, expected {expected}): \
         mount the right disk or register this store"
    )]
    OtherStore {
        /// The store path.
        path: PathBuf,
        /// The store id in the marker.
        found: StoreId,
        /// The store id the caller expected.
        expected: StoreId,
    },
    /// Another process holds the store's lock.
    #[error("store at {path} is in use by another triad process")]
    Locked {
        /// The store path.
        path: PathBuf,
    },
    /// The store was opened for writing but its file system is mounted read-only.
    #[error(
        "store at {path} is on a read-only file system: remount it writable or open it read-only"
    )]
    ReadOnly {
        /// The store path.
        path: PathBuf,
    },
    /// The disk is so full that the index cannot open, even after releasing the store's space
    /// reserve.
    #[error("store at {path} is full: free some space on its disk, or open the store read-only")]
    Full {
        /// The store path.
        path: PathBuf,
    },
    /// The index cannot be used.
    #[error(
        "index at {path} cannot be used: run `triad store rebuild-index` to rebuild it from the packs"
    )]
    Index {
        /// The index directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: IndexError,
    },
    /// A file of the store could not be read or written.
    #[error("cannot access {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A store could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// The path exists and is neither missing nor an empty directory.
    #[error("cannot create a store at {path}: it exists and is not an empty directory")]
    Exists {
        /// The store path.
        path: PathBuf,
    },
    /// The file system is mounted read-only.
    #[error("cannot create a store at {path}: the file system is read-only")]
    ReadOnly {
        /// The store path.
        path: PathBuf,
    },
    /// The file system is full.
    #[error("cannot create a store at {path}: the disk is full")]
    Full {
        /// The store path.
        path: PathBuf,
    },
    /// The new index could not be created.
    #[error("cannot create the index at {path}")]
    Index {
        /// The index directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: IndexError,
    },
    /// A file could not be written.
    #[error("cannot create {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The new store could not be opened after it was written.
    #[error("cannot open the new store")]
    Open(#[source] OpenError),
}

/// A write (put, commit, remove, head, roster) failed. Nothing of it was acknowledged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The store was opened read-only.
    #[error("store at {path} is open read-only")]
    ReadOnly {
        /// The store path.
        path: PathBuf,
    },
    /// The disk is full.
    #[error("store at {path} is full")]
    Full {
        /// The store path.
        path: PathBuf,
    },
    /// A file could not be written or synced.
    #[error("cannot write {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The index could not record the commit.
    #[error("cannot update the index at {path}")]
    Index {
        /// The index directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: IndexError,
    },
    /// A head to be stored does not verify.
    #[error("refusing to store an invalid head")]
    Head(#[source] HeadError),
    /// A roster to be stored belongs to another vault or does not verify.
    #[error("refusing to store a roster of vault {found} in a store of vault {expected}")]
    RosterVault {
        /// The vault named by the roster.
        found: VaultId,
        /// The store's vault.
        expected: VaultId,
    },
    /// The roster to be stored does not verify.
    #[error("refusing to store an invalid roster")]
    Roster(#[source] RosterError),
    /// Reading the current state before the write failed.
    #[error("cannot read the store before writing")]
    Read(#[source] ReadError),
}

/// What is wrong with a damaged blob or pack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The bytes do not hash to the blob's address.
    #[error("the bytes do not match the address")]
    Mismatch,
    /// The pack ends before the blob does.
    #[error("the pack ends before the blob does")]
    Short,
    /// The pack file the index names does not exist.
    #[error("the pack file is missing")]
    PackMissing,
    /// The entry header in front of the blob is damaged or names another blob.
    #[error("the entry header is damaged")]
    Header,
    /// The pack header is damaged or names another store or pack.
    #[error("the pack header is damaged")]
    PackHeader,
    /// The length recorded is over the limit for a blob.
    #[error("the recorded length is over the limit")]
    Length,
    /// Reading the bytes failed.
    #[error("the bytes cannot be read ({0})")]
    Unreadable(io::ErrorKind),
}

/// A read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The blob is not in the store.
    #[error("blob {blob} is not in the store")]
    Missing {
        /// The blob.
        blob: BlobId,
    },
    /// The blob is in the index but its bytes are damaged.
    #[error("blob {blob} at offset {offset} of {path} is damaged: {problem}")]
    Corrupt {
        /// The blob.
        blob: BlobId,
        /// The pack file.
        path: PathBuf,
        /// Where the blob's bytes start in the pack.
        offset: u64,
        /// What is wrong.
        problem: Problem,
    },
    /// A file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The index could not be read.
    #[error("cannot read the index at {path}: run `triad store rebuild-index` if this persists")]
    Index {
        /// The index directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: IndexError,
    },
    /// A head file is damaged or does not verify.
    #[error("head file {path} is damaged or does not verify")]
    Head {
        /// The head file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: HeadError,
    },
    /// A head entry in a pack is damaged, lost, or does not verify.
    #[error("the head entry at offset {offset} of {path} is damaged: {problem}")]
    HeadEntry {
        /// The pack file.
        path: PathBuf,
        /// Offset of the entry's body.
        offset: u64,
        /// What is wrong.
        problem: Problem,
    },
    /// A head file's name does not match the head inside.
    #[error("head file {path} holds the head of another device or folder")]
    HeadPlace {
        /// The head file.
        path: PathBuf,
    },
    /// The roster file is damaged or does not verify.
    #[error("roster file {path} is damaged or does not verify")]
    Roster {
        /// The roster file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: RosterError,
    },
    /// The roster file belongs to another vault.
    #[error("roster file {path} belongs to vault {found}, not to this store's vault")]
    RosterVault {
        /// The roster file.
        path: PathBuf,
        /// The vault named by the roster.
        found: VaultId,
    },
    /// A file is larger than any valid file of its kind.
    #[error("{path} is {len} bytes, larger than any valid file of its kind")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
}

impl WriteError {
    /// Maps an I/O error on `file` of the store at `store` to a write error.
    pub(crate) fn io(store: &std::path::Path, file: &std::path::Path, source: io::Error) -> Self {
        if is_full(&source) {
            WriteError::Full { path: store.to_path_buf() }
        } else if is_read_only(&source) {
            WriteError::ReadOnly { path: store.to_path_buf() }
        } else {
            WriteError::Io { path: file.to_path_buf(), source }
        }
    }
}

/// Whether the error says the disk or quota is full.
pub(crate) fn is_full(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::StorageFull
        || err.kind() == io::ErrorKind::QuotaExceeded
        || matches!(err.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Whether the error says the file system is read-only.
pub(crate) fn is_read_only(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::ReadOnlyFilesystem || err.raw_os_error() == Some(libc::EROFS)
}
