//! triad's blob store on disk: append-only pack files, a rebuildable index, and fsync before
//! acknowledgement.
//!
//! A store is a directory on one disk, identified by a marker file, that holds sealed blobs
//! (in pack files), the signed heads of every folder, and the vault's roster, so that any one
//! store is enough to start a recovery. This crate owns the on-disk layout, the write order that
//! makes a commit durable, opening safely (an unplugged disk or an empty mount point is never
//! mistaken for a store), scrubbing and rebuilding the index. It knows nothing about the network
//! or the agent, and it never decides what to keep: callers do.
//!
//! Key types:
//! - [`Store`]: open or create a store, `put` blobs and `commit` them, `get`, heads, roster,
//!   `scrub`, `rebuild_index`.
//! - [`Index`] with [`RedbIndex`] (the store's), [`MemIndex`] (tests, read-only opens) and
//!   [`SledIndex`] (earlier builds', kept for comparison): where committed blobs live.
//! - [`Fs`] with [`RealFs`]: the file layer, behind a trait so that tests can crash it.
//!
//! ```no_run
//! use std::path::Path;
//! use triad_core::{Media, StoreId, Timestamp, VaultId};
//! use triad_core::keys::{VaultKeys, VaultSecret};
//! use triad_core::seal::{self, ObjectKind};
//! use triad_store::{Access, Config, Store};
//!
//! let vault = VaultId::from_bytes([1; 32]);
//! let path = Path::new("/mnt/backup/triad");
//! let config = Config::default();
//! let mut store = Store::create(path, vault, Media::UsbHdd, StoreId::from_bytes([2; 16]),
//!     Timestamp::new(1_800_000_000, 0), &config)?;
//! let keys = VaultKeys::from_secret(&VaultSecret::from_bytes([3; 32]));
//! let blob = seal::seal(&keys, ObjectKind::Chunk, b"photo bytes");
//! store.put(&blob)?;
//! store.commit()?; // only now may the blob be acknowledged
//! drop(store);
//! let store = Store::open(path, None, vault, Access::ReadOnly, &config)?;
//! assert_eq!(store.get(blob.id())?, blob);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod append;
mod error;
pub mod fs;
#[doc(hidden)]
pub mod fuzz;
pub mod index;
mod pack;
mod store;

pub use append::Appender;
pub use error::{CreateError, OpenError, Problem, ReadError, WriteError};
pub use fs::{Fs, RealFs};
pub use index::{HeadRecord, Index, IndexError, Location, MemIndex, RedbIndex, SledIndex};
pub use store::{
    Access, BlobInfo, Config, Damage, HeadFault, HeadProblem, LostBlobs, RebuildReport, Repairs,
    ScrubReport, Scrubbing, Stats, Store,
};
