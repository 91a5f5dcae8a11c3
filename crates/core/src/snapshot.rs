//! The metadata chain: snapshot → trees → file entries → chunks.
//!
//! Every object here is encoded with the one codec and sealed as a blob of its own kind, so
//! a store holds metadata it cannot read unless it has the vault keys. A file entry carries
//! no name (names live in trees), so the same file content and metadata in two places is one
//! blob. Names are raw bytes: Unix file names need not be UTF-8.

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::id::{BlobId, DeviceId, FolderId};
use crate::keys::VaultKeys;
use crate::seal::{self, ObjectKind, OpenError, PLAINTEXT_LEN_MAX, SealedBlob};
use crate::time::Timestamp;

/// Format version of file entries, trees and snapshots.
pub const OBJECT_VERSION: u8 = 1;

/// One chunk of a file: the blob that holds it and its plaintext length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// Address of the sealed chunk.
    pub blob: BlobId,
    /// Plaintext length in bytes.
    pub len: u32,
}

/// A file's content and metadata, without its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Length in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: Timestamp,
    /// Unix permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Plain BLAKE3 of the whole content, as `b3sum` prints it; checked on restore.
    pub hash: [u8; 32],
    /// The chunks, in order.
    pub chunks: Vec<ChunkRef>,
}

/// What a tree entry names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    /// A regular file, described by a sealed [`FileEntry`].
    File {
        /// The file entry blob.
        entry: BlobId,
    },
    /// A directory, described by a sealed [`Tree`].
    Dir {
        /// The tree blob.
        tree: BlobId,
    },
    /// A symbolic link and its target, as stored on disk.
    Symlink {
        /// The link target bytes.
        target: Vec<u8>,
    },
}

/// One named entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The file name (one path component, raw bytes).
    pub name: Vec<u8>,
    /// What it is.
    pub kind: NodeKind,
    /// Unix permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: Timestamp,
}

/// A directory: its entries, sorted by name, names unique.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tree {
    /// The entries, sorted by name.
    pub nodes: Vec<Node>,
}

/// Totals recorded with a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Regular files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot, the root included.
    pub dirs: u64,
    /// Bytes of file content in the snapshot.
    pub bytes: u64,
}

/// The state of one folder at one time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The folder.
    pub folder: FolderId,
    /// The folder's name (its last path component), used as the restore directory name.
    pub folder_name: String,
    /// The folder's absolute path on the device that made the snapshot (raw bytes).
    pub folder_path: Vec<u8>,
    /// The device that made it.
    pub device: DeviceId,
    /// That device's name at the time.
    pub device_name: String,
    /// Position in this folder's history, from 1.
    pub sequence: u64,
    /// When the scan started.
    pub time: Timestamp,
    /// The previous snapshot of this folder, if any.
    pub parent: Option<BlobId>,
    /// The root tree.
    pub root: BlobId,
    /// Totals.
    pub stats: Stats,
}

/// A metadata blob could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The blob did not open.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The plaintext is not a valid object.
    #[error("blob {blob} holds a malformed object")]
    Decode {
        /// The blob.
        blob: BlobId,
        /// What the codec said.
        #[source]
        source: DecodeError,
    },
    /// A tree's entries are not sorted and unique, or a name is not one path component.
    #[error("tree {blob} has an invalid entry name {name:?}")]
    InvalidName {
        /// The blob.
        blob: BlobId,
        /// The offending name, lossily decoded.
        name: String,
    },
}

/// An object is too large to be sealed as one blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} of {len} bytes is larger than the {PLAINTEXT_LEN_MAX}-byte limit of one blob")]
pub struct TooLarge {
    /// What kind of object.
    pub kind: &'static str,
    /// Its encoded length.
    pub len: usize,
}

/// An object of the metadata chain: how it is encoded and which kind it seals as.
pub trait Object: Serialize + serde::de::DeserializeOwned {
    /// The kind it seals as.
    const KIND: ObjectKind;

    /// Encodes the object with the one codec.
    fn encode(&self) -> Vec<u8> {
        codec::encode(OBJECT_VERSION, self)
    }

    /// Decodes an object from its plaintext.
    fn decode(plain: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(Self::KIND.as_str(), OBJECT_VERSION, plain)
    }

    /// Encodes and seals the object.
    ///
    /// # Panics
    /// If the encoding is larger than [`PLAINTEXT_LEN_MAX`]; use [`Object::try_seal`] for
    /// objects built from outside input.
    fn seal(&self, keys: &VaultKeys) -> SealedBlob {
        seal::seal(keys, Self::KIND, &self.encode())
    }

    /// Encodes and seals the object, or says it is too large to be one blob.
    fn try_seal(&self, keys: &VaultKeys) -> Result<SealedBlob, TooLarge> {
        let plain = self.encode();
        if plain.len() > PLAINTEXT_LEN_MAX {
            return Err(TooLarge { kind: Self::KIND.as_str(), len: plain.len() });
        }
        Ok(seal::seal(keys, Self::KIND, &plain))
    }

    /// Opens and decodes a sealed object, checking what can be checked.
    fn open(keys: &VaultKeys, blob: &SealedBlob) -> Result<Self, ReadError> {
        let plain = seal::open(keys, blob, Self::KIND)?;
        let value =
            Self::decode(&plain).map_err(|source| ReadError::Decode { blob: blob.id(), source })?;
        value.check(blob.id())?;
        Ok(value)
    }

    /// Checks invariants the codec cannot express.
    fn check(&self, _blob: BlobId) -> Result<(), ReadError> {
        Ok(())
    }
}

impl Object for FileEntry {
    const KIND: ObjectKind = ObjectKind::FileEntry;
}

impl Object for Snapshot {
    const KIND: ObjectKind = ObjectKind::Snapshot;
}

impl Object for Tree {
    const KIND: ObjectKind = ObjectKind::Tree;

    fn check(&self, blob: BlobId) -> Result<(), ReadError> {
        let mut previous: Option<&[u8]> = None;
        for node in &self.nodes {
            let name = node.name.as_slice();
            let bad = check_name(name).is_err() || previous.is_some_and(|p| p >= name);
            if bad {
                let name = String::from_utf8_lossy(name).into_owned();
                return Err(ReadError::InvalidName { blob, name });
            }
            previous = Some(name);
        }
        Ok(())
    }
}

/// Why a name read from a snapshot, head, roster or peer cannot be used as a path component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("the name is empty")]
    Empty,
    /// The name is `.` or `..`.
    #[error("the name is `.` or `..`")]
    Dot,
    /// The name holds a `/`: it would name a path, not one entry.
    #[error("the name holds a `/`")]
    Separator,
    /// The name holds a NUL byte.
    #[error("the name holds a NUL byte")]
    Nul,
}

/// Checks that `name` is one safe path component: not empty, not `.` or `..`, without `/`
/// or NUL. This is the one check for every name that comes from a snapshot, a head, the
/// roster or a peer before it is joined to a path on disk: a name that passes cannot lead
/// outside the directory it is joined to (restores rely on it).
pub fn check_name(name: &[u8]) -> Result<(), NameError> {
    match name {
        [] => Err(NameError::Empty),
        b"." | b".." => Err(NameError::Dot),
        _ if name.contains(&b'/') => Err(NameError::Separator),
        _ if name.contains(&0) => Err(NameError::Nul),
        _ => Ok(()),
    }
}

impl Snapshot {
    /// The folder's name, checked with [`check_name`]: the name of the directory a restore
    /// writes the folder into (before any suffix that keeps two folders apart).
    pub fn checked_folder_name(&self) -> Result<&str, NameError> {
        check_name(self.folder_name.as_bytes()).map(|()| self.folder_name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::VaultSecret;

    fn keys() -> VaultKeys {
        VaultKeys::from_secret(&VaultSecret::from_bytes([4; 32]))
    }

    fn node(name: &[u8]) -> Node {
        Node {
            name: name.to_vec(),
            kind: NodeKind::Symlink { target: b"x".to_vec() },
            mode: 0o777,
            mtime: Timestamp::EPOCH,
        }
    }

    #[test]
    fn objects_seal_and_open() {
        let k = keys();
        let entry = FileEntry {
            size: 3,
            mtime: Timestamp::new(1, 2),
            mode: 0o644,
            hash: *blake3::hash(b"abc").as_bytes(),
            chunks: vec![ChunkRef { blob: BlobId::of(b"c"), len: 3 }],
        };
        let blob = entry.seal(&k);
        assert_eq!(FileEntry::open(&k, &blob).expect("opens"), entry);
        assert!(Tree::open(&k, &blob).is_err(), "kinds are checked");
    }

    #[test]
    fn an_object_over_the_blob_limit_is_refused_not_sealed() {
        let k = keys();
        let nodes: Vec<Node> = (0..200_000u32)
            .map(|i| Node {
                name: format!("IMG_{i:08}_with_a_long_descriptive_name.CR3").into_bytes(),
                kind: NodeKind::File { entry: BlobId::of(&i.to_le_bytes()) },
                mode: 0o644,
                mtime: Timestamp::EPOCH,
            })
            .collect();
        let tree = Tree { nodes };
        let err = tree.try_seal(&k).expect_err("too large for one blob");
        assert_eq!(err.kind, "tree");
        assert!(err.len > PLAINTEXT_LEN_MAX);
        let small = Tree { nodes: vec![node(b"a")] };
        assert!(small.try_seal(&k).is_ok());
    }

    #[test]
    fn unsafe_or_unsorted_names_are_refused() {
        let k = keys();
        for names in [vec![&b".."[..]], vec![b"a/b"], vec![b""], vec![b"b", b"a"], vec![b"a", b"a"]]
        {
            let tree = Tree { nodes: names.iter().map(|n| node(n)).collect() };
            let blob = tree.seal(&k);
            assert!(
                matches!(Tree::open(&k, &blob), Err(ReadError::InvalidName { .. })),
                "{names:?}"
            );
        }
        let fine = Tree { nodes: vec![node(b"a"), node(b"b")] };
        assert!(Tree::open(&k, &fine.seal(&k)).is_ok());
    }

    #[test]
    fn only_one_plain_component_passes_the_name_check() {
        for (name, want) in [
            (&b""[..], Err(NameError::Empty)),
            (b".", Err(NameError::Dot)),
            (b"..", Err(NameError::Dot)),
            (b"../../x", Err(NameError::Separator)),
            (b"/etc", Err(NameError::Separator)),
            (b"a\0b", Err(NameError::Nul)),
            (b"...", Ok(())),
            (b".hidden", Ok(())),
            (b"2026 wedding \xff", Ok(())),
        ] {
            assert_eq!(check_name(name), want, "{name:?}");
        }
    }
}
