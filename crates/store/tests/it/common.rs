//! Helpers shared by the tests: a vault, blobs, heads, and stores in temporary directories.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use triad_core::head::{Head, SignedHead};
use triad_core::keys::{DeviceKey, Phrase, VaultKeys, VaultSecret};
use triad_core::roster::{Entry, Role, Roster, Signer};
use triad_core::seal::{self, ObjectKind, SealedBlob};
use triad_core::{BlobId, FolderId, Media, StoreId, Timestamp, VaultId};
use triad_store::{Access, Config, Store};

pub(crate) fn phrase() -> Phrase {
    Phrase::from_entropy([7; 32])
}

pub(crate) fn vault() -> VaultId {
    phrase().vault_id()
}

pub(crate) fn other_vault() -> VaultId {
    Phrase::from_entropy([8; 32]).vault_id()
}

pub(crate) const STORE: StoreId = StoreId::from_bytes([0x51; 16]);

pub(crate) fn now() -> Timestamp {
    Timestamp::new(1_800_000_000, 0)
}

/// Blob number `n`: a chunk of 200 to ~1700 bytes whose content depends on `n`. Cached: tests
/// ask for the same blobs over and over.
pub(crate) fn blob(n: u32) -> SealedBlob {
    thread_local! {
        static CACHE: RefCell<HashMap<u32, SealedBlob>> = RefCell::new(HashMap::new());
    }
    CACHE.with(|cache| cache.borrow_mut().entry(n).or_insert_with(|| make_blob(n)).clone())
}

fn make_blob(n: u32) -> SealedBlob {
    let keys = VaultKeys::from_secret(&VaultSecret::from_bytes([(n % 251) as u8; 32]));
    let len = 200 + (n as usize * 397) % 1500;
    let bytes: Vec<u8> =
        (0..len).map(|i| (i as u32).wrapping_mul(31).wrapping_add(n) as u8).collect();
    seal::seal(&keys, ObjectKind::Chunk, &bytes)
}

/// A blob of exactly `len` plaintext bytes.
pub(crate) fn big_blob(n: u32, len: usize) -> SealedBlob {
    let keys = VaultKeys::from_secret(&VaultSecret::from_bytes([9; 32]));
    let mut bytes = vec![0u8; len];
    bytes[..4].copy_from_slice(&n.to_le_bytes());
    seal::seal(&keys, ObjectKind::Chunk, &bytes)
}

pub(crate) fn device_key() -> DeviceKey {
    DeviceKey::from_bytes(&[3; 32])
}

pub(crate) fn folder(n: u8) -> FolderId {
    FolderId::from_bytes([n; 16])
}

pub(crate) fn head(folder_n: u8, sequence: u64) -> SignedHead {
    let key = device_key();
    Head {
        vault: vault(),
        device: key.device_id(),
        folder: folder(folder_n),
        sequence,
        snapshot: BlobId::of(&sequence.to_le_bytes()),
        time: now(),
    }
    .sign(&key)
}

pub(crate) fn roster() -> Roster {
    let recovery = phrase().recovery_key();
    let mut roster = Roster::new(&recovery);
    let entry = Entry {
        device: device_key().device_id(),
        name: "laptop".to_owned(),
        site: "home".to_owned(),
        role: Role::Trusted,
        signer: Signer::Recovery,
    };
    roster.admit_with_recovery(&recovery, entry);
    roster
}

/// A small pack target so that a few blobs roll over to new packs.
pub(crate) fn small_packs() -> Config {
    Config { pack_len_target: 8 * 1024, index_cache_bytes: 1024 * 1024, ..Config::default() }
}

pub(crate) fn create(path: &Path, config: &Config) -> Store {
    Store::create(path, vault(), Media::UsbHdd, STORE, now(), config).expect("create store")
}

pub(crate) fn open(path: &Path, config: &Config) -> Store {
    Store::open(path, Some(STORE), vault(), Access::ReadWrite, config).expect("open store")
}

/// Puts blobs `range` and commits them.
pub(crate) fn fill(store: &mut Store, range: std::ops::Range<u32>) {
    for n in range {
        assert!(store.put(&blob(n)).expect("put"));
    }
    store.commit().expect("commit");
}
