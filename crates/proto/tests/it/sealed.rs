//! Sealed blobs of every object kind: deterministic sealing, address, opening.

use triad_core::BlobId;
use triad_core::seal::{self, ObjectKind, SealedBlob};
use triad_core::snapshot::Object;

use crate::fixtures;
use crate::vectors::hex_vector;

/// Seals `plaintext` as `kind`, checks the vector `name`, then verifies, opens and re-seals
/// the bytes read from the file.
fn check(name: &str, kind: ObjectKind, plaintext_source: &str, plaintext: &[u8]) {
    let keys = fixtures::keys();
    let blob = seal::seal(&keys, kind, plaintext);
    let comments = vec![
        format!("sealed {} blob (seal version 1, kind {})", kind.as_str(), kind as u8),
        "vault secret [0x11; 32]".to_owned(),
        format!("plaintext: {plaintext_source}"),
        format!(
            "object id (keyed BLAKE3 of the plaintext) {}",
            seal::object_id(&keys, kind, plaintext)
        ),
        format!("address (BLAKE3 of these bytes) {}", blob.id()),
    ];
    let bytes = hex_vector(name, &comments, blob.as_bytes());
    let verified = SealedBlob::verify(BlobId::of(&bytes), bytes.clone()).expect("a blob's shape");
    assert_eq!(verified.id(), blob.id());
    assert_eq!(verified.kind(), Some(kind));
    let opened = seal::open(&keys, &verified, kind).expect("the vector opens");
    assert_eq!(opened, plaintext);
    assert_eq!(seal::seal(&keys, kind, &opened).as_bytes(), bytes);
}

#[test]
fn sealed_chunk() {
    let source = format!(
        "the {} ASCII bytes {:?}",
        fixtures::CHUNK_PLAINTEXT.len(),
        std::str::from_utf8(fixtures::CHUNK_PLAINTEXT).expect("ASCII")
    );
    check("sealed_chunk.hex", ObjectKind::Chunk, &source, fixtures::CHUNK_PLAINTEXT);
}

#[test]
fn sealed_file_entry() {
    let plain = fixtures::file_entry().encode();
    check("sealed_file_entry.hex", ObjectKind::FileEntry, "the bytes of file_entry.hex", &plain);
    assert_eq!(
        fixtures::file_entry().seal(&fixtures::keys()),
        seal::seal(&fixtures::keys(), ObjectKind::FileEntry, &plain)
    );
}

#[test]
fn sealed_tree() {
    let plain = fixtures::tree().encode();
    check("sealed_tree.hex", ObjectKind::Tree, "the bytes of tree.hex", &plain);
}

#[test]
fn sealed_snapshot() {
    let plain = fixtures::snapshot().encode();
    check("sealed_snapshot.hex", ObjectKind::Snapshot, "the bytes of snapshot.hex", &plain);
}
