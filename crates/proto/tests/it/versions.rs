//! Unknown format versions are refused with an error that names them, never guessed at.

use triad_core::BlobId;
use triad_core::codec::DecodeError;
use triad_core::head::{HeadError, SignedHead};
use triad_core::roster::{Roster, RosterError};
use triad_core::seal::{self, ObjectKind, OpenError, SealedBlob};
use triad_core::snapshot::{FileEntry, Object, Snapshot, Tree};
use triad_proto::store::{EntryHeader, FrameError, Marker, PackHeader};

use crate::fixtures;

/// `bytes` with the byte at `at` set to 2, a version no build reads yet.
fn bumped(mut bytes: Vec<u8>, at: usize) -> Vec<u8> {
    assert_eq!(bytes[at], 1, "every format is at version 1");
    bytes[at] = 2;
    bytes
}

fn is_version_2(err: &DecodeError) -> bool {
    matches!(err, DecodeError::Version { found: 2, expected: 1, .. })
}

#[test]
fn object_records() {
    let entry = bumped(fixtures::file_entry().encode(), 0);
    assert!(FileEntry::decode(&entry).is_err_and(|e| is_version_2(&e)));
    let tree = bumped(fixtures::tree().encode(), 0);
    assert!(Tree::decode(&tree).is_err_and(|e| is_version_2(&e)));
    let snapshot = bumped(fixtures::snapshot().encode(), 0);
    let err = Snapshot::decode(&snapshot).expect_err("version 2 is refused");
    assert_eq!(
        err.to_string(),
        "unsupported snapshot format version 2 (this build reads version 1)"
    );
}

#[test]
fn heads_and_rosters() {
    let head = bumped(fixtures::signed_head().encode(), 0);
    let err = SignedHead::decode(&head, fixtures::vault()).expect_err("version 2 is refused");
    assert!(matches!(&err, HeadError::Decode(e) if is_version_2(e)), "{err:?}");
    // Rosters are at version 3 (versions 1 and 2 are still read, see records.rs); 4 is
    // refused.
    let mut roster = fixtures::roster().encode();
    assert_eq!(roster[0], 3);
    roster[0] = 4;
    let err = Roster::decode(&roster).expect_err("version 4 is refused");
    assert!(
        matches!(&err, RosterError::Decode(DecodeError::Version { found: 4, expected: 3, .. })),
        "{err:?}"
    );
}

#[test]
fn sealed_blobs() {
    let keys = fixtures::keys();
    for kind in ObjectKind::ALL {
        let blob = seal::seal(&keys, kind, b"plaintext");
        let bytes = bumped(blob.into_bytes(), 0);
        let blob = SealedBlob::verify(BlobId::of(&bytes), bytes).expect("the shape is fine");
        let err = seal::open(&keys, &blob, kind).expect_err("version 2 is refused");
        assert!(matches!(err, OpenError::Version { found: 2, .. }), "{err:?}");
    }
    // An unknown kind byte is refused as well.
    let mut bytes = seal::seal(&keys, ObjectKind::Chunk, b"plaintext").into_bytes();
    bytes[1] = 9;
    let blob = SealedBlob::verify(BlobId::of(&bytes), bytes).expect("the shape is fine");
    assert_eq!(blob.kind(), None);
    let err = seal::open(&keys, &blob, ObjectKind::Chunk).expect_err("kind 9 is refused");
    assert!(matches!(err, OpenError::Kind { found: "unknown object", .. }), "{err:?}");
}

#[test]
fn store_framing() {
    let marker = bumped(fixtures::marker().encode(), 8);
    let err = Marker::decode(&marker).expect_err("version 2 is refused");
    assert!(matches!(&err, FrameError::Marker(e) if is_version_2(e)), "{err:?}");

    let header = PackHeader { store: triad_core::StoreId::from_bytes(fixtures::STORE), seq: 0 };
    // Pack version 2 (head entries) is current; version 1 is still read; 3 is refused.
    let mut pack = header.encode().to_vec();
    assert_eq!(pack[8], 2);
    pack[8] = 1;
    assert_eq!(PackHeader::decode_versioned(&pack).expect("version 1 is read"), (header, 1));
    pack[8] = 3;
    let err = PackHeader::decode(&pack).expect_err("version 3 is refused");
    assert!(matches!(err, FrameError::Version { found: 3, expected: 2, .. }), "{err:?}");

    // Entry headers carry no version of their own (the pack header's covers them), but an
    // unknown kind is refused even under a valid checksum.
    let mut entry = EntryHeader::tombstone(BlobId::from_bytes([0xc2; 32])).encode();
    entry[4] = 4;
    let check = *blake3::hash(&entry[..44]).as_bytes();
    entry[44..].copy_from_slice(&check[..4]);
    let err = EntryHeader::decode(&entry).expect_err("kind 4 is refused");
    assert!(matches!(err, FrameError::Kind { found: 4 }), "{err:?}");
}
