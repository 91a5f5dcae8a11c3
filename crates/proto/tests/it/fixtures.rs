//! The fixed inputs every vector is built from.

use triad_core::head::{Head, SignedHead};
use triad_core::keys::{DeviceKey, Phrase, VaultKeys, VaultSecret};
use triad_core::roster::{Entry, Role, Roster, Signer};
use triad_core::snapshot::{ChunkRef, FileEntry, Node, NodeKind, Snapshot, Stats, Tree};
use triad_core::{BlobId, DeviceId, FolderId, Media, StoreId, Timestamp, VaultId};
use triad_proto::store::Marker;

/// Entropy of the phrase: `Phrase::from_entropy([0x2a; 32])`.
pub(crate) const ENTROPY: [u8; 32] = [0x2a; 32];
/// The vault secret the sealed vectors use: `VaultSecret::from_bytes([0x11; 32])`.
pub(crate) const SECRET: [u8; 32] = [0x11; 32];
/// The laptop's device key: `DeviceKey::from_bytes(&[0x03; 32])`.
pub(crate) const LAPTOP_KEY: [u8; 32] = [0x03; 32];
/// The Raspberry Pi's device key: `DeviceKey::from_bytes(&[0x04; 32])`.
pub(crate) const PI_KEY: [u8; 32] = [0x04; 32];
/// The folder of the snapshot and the head.
pub(crate) const FOLDER: [u8; 16] = [0xf0; 16];
/// The store of the marker and the pack vectors.
pub(crate) const STORE: [u8; 16] = [0x5e; 16];
/// The plaintext of the sealed chunk vector.
pub(crate) const CHUNK_PLAINTEXT: &[u8] = b"triad golden vector: the plaintext of one chunk";

pub(crate) fn phrase() -> Phrase {
    Phrase::from_entropy(ENTROPY)
}

/// The vault id of [`phrase`]: heads, the roster and the marker name it.
pub(crate) fn vault() -> VaultId {
    phrase().vault_id()
}

pub(crate) fn keys() -> VaultKeys {
    VaultKeys::from_secret(&VaultSecret::from_bytes(SECRET))
}

pub(crate) fn laptop() -> DeviceKey {
    DeviceKey::from_bytes(&LAPTOP_KEY)
}

pub(crate) fn pi() -> DeviceKey {
    DeviceKey::from_bytes(&PI_KEY)
}

pub(crate) fn file_entry() -> FileEntry {
    FileEntry {
        size: 3_000_000,
        mtime: Timestamp::new(1_767_225_600, 123_456_789),
        mode: 0o644,
        hash: [0x48; 32],
        chunks: vec![
            ChunkRef { blob: BlobId::from_bytes([0xc1; 32]), len: 1_048_576 },
            ChunkRef { blob: BlobId::from_bytes([0xc2; 32]), len: 1_951_424 },
        ],
    }
}

/// A file with a name that is not UTF-8, a directory and a symbolic link, sorted by name.
pub(crate) fn tree() -> Tree {
    Tree {
        nodes: vec![
            Node {
                name: b"caf\xe9.cr3".to_vec(),
                kind: NodeKind::File { entry: BlobId::from_bytes([0xe1; 32]) },
                mode: 0o644,
                mtime: Timestamp::new(1_767_225_600, 123_456_789),
            },
            Node {
                name: b"edits".to_vec(),
                kind: NodeKind::Dir { tree: BlobId::from_bytes([0xd1; 32]) },
                mode: 0o755,
                mtime: Timestamp::new(1_767_225_700, 0),
            },
            Node {
                name: b"latest".to_vec(),
                kind: NodeKind::Symlink { target: b"edits/caf\xe9.jpg".to_vec() },
                mode: 0o777,
                mtime: Timestamp::new(-1, 500_000_000),
            },
        ],
    }
}

pub(crate) fn snapshot() -> Snapshot {
    Snapshot {
        folder: FolderId::from_bytes(FOLDER),
        folder_name: "2026-11-wedding".to_owned(),
        folder_path: b"/home/ana/Pictures/2026-11-wedding".to_vec(),
        device: DeviceId::from_bytes([0xde; 32]),
        device_name: "laptop".to_owned(),
        sequence: 7,
        time: Timestamp::new(1_795_000_000, 0),
        parent: Some(BlobId::from_bytes([0xa0; 32])),
        root: BlobId::from_bytes([0xa1; 32]),
        stats: Stats { files: 1200, dirs: 14, bytes: 30_000_000_000 },
    }
}

pub(crate) fn signed_head() -> SignedHead {
    let key = laptop();
    Head {
        vault: vault(),
        device: key.device_id(),
        folder: FolderId::from_bytes(FOLDER),
        sequence: 7,
        snapshot: BlobId::from_bytes([0xa2; 32]),
        time: Timestamp::new(1_795_000_000, 0),
    }
    .sign(&key)
}

/// The laptop admitted with the recovery key, then the Pi admitted by the laptop.
pub(crate) fn roster() -> Roster {
    let recovery = phrase().recovery_key();
    let mut roster = Roster::new(&recovery);
    let entry = |key: &DeviceKey, name: &str, site: &str, role| Entry {
        device: key.device_id(),
        name: name.to_owned(),
        site: site.to_owned(),
        role,
        signer: Signer::Recovery,
    };
    roster.admit_with_recovery(&recovery, entry(&laptop(), "laptop", "home", Role::Trusted));
    roster.admit_with_device(&laptop(), entry(&pi(), "pi", "parents", Role::StorageOnly));
    roster
}

pub(crate) fn marker() -> Marker {
    Marker {
        store: StoreId::from_bytes(STORE),
        vault: vault(),
        media: Media::UsbHdd,
        created: Timestamp::new(1_795_000_000, 5),
    }
}
