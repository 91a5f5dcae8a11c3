//! Fuzz target bodies for the decoders of this crate: each takes arbitrary bytes, as a disk or
//! a peer could hand them over, and must return without panicking, allocating without bound or
//! looping forever. The cargo-fuzz targets in `crates/proto/fuzz` call these, and a test runs
//! them over the committed corpus on stable, so both run the same code.
//!
//! Properties are checked with `assert!`: a failed one is a bug the fuzzer reports.

use std::sync::OnceLock;

use crate::audit::{self, Range};
use crate::codec;
use crate::head::{HEAD_VERSION, SignedHead};
use crate::id::{BlobId, DeviceId, VaultId};
use crate::keys::{DeviceKey, Phrase, RecoveryKey, VaultKeys, VaultSecret};
use crate::roster::{Entry, Role, Roster, Signer};
use crate::seal::{self, ObjectKind, SealedBlob};
use crate::snapshot::{FileEntry, Object, Snapshot, Tree};

/// The vault keys every fuzz target seals and opens with.
pub fn keys() -> &'static VaultKeys {
    static KEYS: OnceLock<VaultKeys> = OnceLock::new();
    KEYS.get_or_init(|| VaultKeys::from_secret(&VaultSecret::from_bytes([4; 32])))
}

/// The vault of the fuzz targets, its recovery key and its first device's key.
pub fn vault() -> (VaultId, &'static RecoveryKey, &'static DeviceKey) {
    static KEYS: OnceLock<(RecoveryKey, DeviceKey)> = OnceLock::new();
    let (recovery, device) = KEYS.get_or_init(|| {
        (Phrase::from_entropy([8; 32]).recovery_key(), DeviceKey::from_bytes(&[1; 32]))
    });
    (recovery.vault_id(), recovery, device)
}

/// A valid roster of the fuzz vault: its first device, admitted by the recovery key.
pub fn roster_of_vault() -> &'static Roster {
    static ROSTER: OnceLock<Roster> = OnceLock::new();
    ROSTER.get_or_init(|| {
        let (_, recovery, device) = vault();
        let mut roster = Roster::new(recovery);
        let entry = Entry {
            device: device.device_id(),
            name: "laptop".into(),
            site: "home".into(),
            role: Role::Trusted,
            signer: Signer::Recovery,
        };
        roster.admit_with_recovery(recovery, entry);
        roster
    })
}

/// Metadata objects: `data` as the plaintext of a file entry, a tree and a snapshot (what a
/// trusted device, compromised or not, can seal), and as the bytes of a sealed blob.
pub fn object(data: &[u8]) {
    let keys = keys();
    decode_object::<FileEntry>(data);
    decode_object::<Snapshot>(data);
    if let Ok(tree) = Tree::decode(data) {
        let checked = tree.check(BlobId::of(data));
        assert_eq!(Tree::decode(&tree.encode()).ok().as_ref(), Some(&tree), "tree round trip");
        if checked.is_ok() {
            for node in &tree.nodes {
                assert!(crate::snapshot::check_name(&node.name).is_ok());
            }
        }
    }
    // Sealed as each kind, the plaintext opens back whole, and decodes as it did unsealed.
    if data.len() <= seal::PLAINTEXT_LEN_MAX {
        let kind = ObjectKind::ALL[usize::from(data.first().copied().unwrap_or(0) % 4)];
        let blob = seal::seal(keys, kind, data);
        let plain = seal::open(keys, &blob, kind).expect("a sealed blob opens");
        assert_eq!(plain, data);
        match kind {
            ObjectKind::Chunk => {}
            ObjectKind::FileEntry => {
                assert_eq!(FileEntry::open(keys, &blob).ok(), FileEntry::decode(data).ok());
            }
            ObjectKind::Tree => {
                let _ = Tree::open(keys, &blob);
            }
            ObjectKind::Snapshot => {
                assert_eq!(Snapshot::open(keys, &blob).ok(), Snapshot::decode(data).ok());
            }
        }
    }
    // The bytes as a blob received under their own address.
    if let Ok(blob) = SealedBlob::verify(BlobId::of(data), data.to_vec()) {
        let _ = blob.kind();
        for kind in ObjectKind::ALL {
            if let Ok(plain) = seal::open(keys, &blob, kind) {
                let owned = seal::open_owned(keys, blob.clone(), kind).expect("opens in place too");
                assert_eq!(owned.as_bytes(), plain.as_slice());
            }
        }
        let _ = FileEntry::open(keys, &blob);
        let _ = Tree::open(keys, &blob);
        let _ = Snapshot::open(keys, &blob);
    }
}

fn decode_object<T: Object + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(value) = T::decode(data) {
        assert_eq!(T::decode(&value.encode()).ok().as_ref(), Some(&value), "round trip");
    }
}

/// Signed heads, as read from a store's `heads/` folder or a peer's answer.
pub fn head(data: &[u8]) {
    let (vault, _, _) = vault();
    if let Ok(head) = SignedHead::decode(data, vault) {
        assert_eq!(head.head.vault, vault);
    }
    if let Ok(head) = codec::decode::<SignedHead>("head", HEAD_VERSION, data) {
        assert_eq!(
            codec::decode::<SignedHead>("head", HEAD_VERSION, &head.encode()).ok().as_ref(),
            Some(&head)
        );
        // Verified against the vault it names: the signature check runs on its bytes.
        let _ = head.verify(head.head.vault);
    }
}

/// Rosters, as read from a home, a store or a peer, and merged into a valid one; and the same
/// bytes as a device's signed address record and signed verdict.
pub fn roster(data: &[u8]) {
    if let Ok(roster) = Roster::decode(data) {
        assert!(roster.verify().is_ok());
        let _ = roster.devices();
        let mut mine = roster_of_vault().clone();
        let _ = mine.merge(&roster);
        assert!(mine.verify().is_ok(), "a merge keeps a roster valid");
    }
    // The same bytes as a device's address record: one that decodes verified.
    let vault = roster_of_vault().vault;
    if let Ok(record) = crate::address::SignedAddressRecord::decode(data, vault) {
        let again = crate::address::SignedAddressRecord::decode(&record.encode(), vault);
        assert_eq!(again.ok().as_ref(), Some(&record), "address record round trip");
        assert!(record.record.addrs.len() <= crate::address::ADDRESSES_MAX);
    }
    // And as a device's verdict.
    if let Ok(signed) = crate::verdict::SignedVerdict::decode(data, vault) {
        let again = crate::verdict::SignedVerdict::decode(&signed.encode(), vault);
        assert_eq!(again.ok().as_ref(), Some(&signed), "verdict round trip");
        let _ = signed.verdict.worst();
    }
    // Unverified, the accessors and a merge must still be safe.
    if let Ok(roster) = codec::decode::<Roster>("roster", crate::roster::ROSTER_VERSION, data) {
        let _ = roster.devices();
        let device = roster
            .legacy
            .entries
            .first()
            .map(|e| e.entry.device)
            .or_else(|| {
                roster.changes.first().map(|c| match &c.change.what {
                    crate::roster::What::Admit(entry) => entry.device,
                    crate::roster::What::Remove(removal) => removal.device,
                })
            })
            .unwrap_or(DeviceId::from_bytes([0; 32]));
        let _ = roster.device(device);
        let _ = roster.verify();
        let _ = roster.is_removed(device);
        let mut mine = roster_of_vault().clone();
        if mine.merge(&roster).is_ok() {
            assert!(mine.verify().is_ok(), "a merge keeps a roster valid");
        }
    }
}

/// Audit answers: a peer's slice for a range, checked against a blob's address; and the
/// holder's side for a range a peer asks about.
///
/// Layout: start (8 bytes LE), length (4 bytes LE), blob id (32 bytes), then the slice.
pub fn audit(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<44>() else {
        return;
    };
    let start = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    let blob = BlobId::from_bytes(head[12..].try_into().expect("32 bytes"));
    let _ = audit::check(Range { blob, start, len }, rest);
    // The holder answers with a slice of its own bytes (here `rest`), which must verify.
    let own = Range { blob: BlobId::of(rest), start, len: len.min(audit::SLICE_LEN) };
    let slice = audit::slice(rest, own);
    assert!(audit::check(own, &slice), "an honest slice verifies");
}
