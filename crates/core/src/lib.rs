//! The sans-IO core of triad: the object model and its one codec, ids, keys, chunking,
//! sealing, snapshots, heads and the roster.
//!
//! This crate performs no I/O. It opens no files or sockets, reads no clock and draws no
//! randomness: time and random bytes are passed in by the caller. That is what lets the same
//! logic run in the agent, in tests, and in deterministic simulations.
//!
//! Key types:
//! - [`keys::Phrase`], [`keys::VaultKeys`] and [`keys::DeviceKey`]: the recovery phrase and what
//!   is derived from it, one way.
//! - [`chunk::Chunker`]: content-defined cut points (FastCDC 2020) over a streaming buffer.
//! - [`seal::SealedBlob`]: an encrypted, authenticated, content-addressed blob; made only by
//!   [`seal::seal`] or checked by [`seal::SealedBlob::verify`].
//! - [`snapshot::Snapshot`], [`snapshot::Tree`], [`snapshot::FileEntry`]: the metadata chain.
//! - [`head::SignedHead`]: "folder F of device D is at snapshot S (sequence n)", signed.
//!
//! ```
//! use triad_core::keys::{Phrase, VaultKeys};
//! use triad_core::seal::{self, ObjectKind};
//!
//! let phrase = Phrase::from_entropy([7; 32]);
//! let keys = VaultKeys::from_secret(&phrase.vault_secret());
//! let blob = seal::seal(&keys, ObjectKind::Chunk, b"raw bytes of a photo");
//! let again = seal::seal(&keys, ObjectKind::Chunk, b"raw bytes of a photo");
//! assert_eq!(blob.id(), again.id()); // deterministic: deduplicates across devices
//! let plain = seal::open(&keys, &blob, ObjectKind::Chunk).expect("opens with the same keys");
//! assert_eq!(plain, b"raw bytes of a photo");
//! ```

pub mod address;
pub mod audit;
pub mod chunk;
pub mod codec;
#[doc(hidden)]
pub mod fuzz;
pub mod greet;
pub mod head;
pub mod id;
pub mod keys;
pub mod ledger;
pub mod media;
pub mod policy;
pub mod roster;
pub mod round;
pub mod schedule;
pub mod seal;
pub mod snapshot;
pub mod time;
pub mod verdict;

pub use id::{BlobId, ChunkId, DeviceId, FolderId, StoreId, VaultId};
pub use media::Media;
pub use time::Timestamp;
