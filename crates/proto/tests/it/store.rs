//! Store framing: the marker file, pack headers, entry headers and a small whole pack.

use triad_core::seal::{self, ObjectKind, SealedBlob};
use triad_core::{BlobId, StoreId};
use triad_proto::store::{EntryHeader, EntryKind, Marker, PackHeader};

use crate::fixtures;
use crate::vectors::hex_vector;

#[test]
fn store_marker() {
    let marker = fixtures::marker();
    let comments = vec![
        "store marker file `triad-store`: \"TRIADSTO\", then a codec record (marker version 1)"
            .to_owned(),
        format!("store [0x5e; 16], vault {} (vault id of phrase.txt),", marker.vault),
        "media usb-hdd, created (1795000000 s, 5 ns)".to_owned(),
    ];
    let bytes = hex_vector("store_marker.hex", &comments, &marker.encode());
    let back = Marker::decode(&bytes).expect("the vector decodes");
    assert_eq!(back, marker);
    assert_eq!(back.encode(), bytes);
}

#[test]
fn pack_header() {
    let header = PackHeader { store: StoreId::from_bytes(fixtures::STORE), seq: 0x2a };
    let comments = vec![
        "pack header (pack version 2): store [0x5e; 16], seq 42 (file packs/0000002a.pack)"
            .to_owned(),
    ];
    let bytes = hex_vector("pack_header.hex", &comments, &header.encode());
    let back = PackHeader::decode(&bytes).expect("the vector decodes");
    assert_eq!(back, header);
    assert_eq!(back.encode().as_slice(), bytes);
}

#[test]
fn entry_header_blob() {
    let header = EntryHeader::blob(BlobId::from_bytes([0xc1; 32]), 1_048_618);
    let comments = vec![
        "pack entry header (pack version 1): kind 1 (blob), len 1048618, blob [0xc1; 32],"
            .to_owned(),
        "then the first 4 bytes of BLAKE3 over the 44 bytes before them".to_owned(),
    ];
    let bytes = hex_vector("entry_header_blob.hex", &comments, &header.encode());
    let back = EntryHeader::decode(&bytes).expect("the vector decodes");
    assert_eq!(back, header);
    assert_eq!(back.encode().as_slice(), bytes);
}

#[test]
fn entry_header_tombstone() {
    let header = EntryHeader::tombstone(BlobId::from_bytes([0xc2; 32]));
    let comments = vec![
        "pack entry header (pack version 1): kind 2 (tombstone), len 0, blob [0xc2; 32],"
            .to_owned(),
        "then the first 4 bytes of BLAKE3 over the 44 bytes before them".to_owned(),
    ];
    let bytes = hex_vector("entry_header_tombstone.hex", &comments, &header.encode());
    let back = EntryHeader::decode(&bytes).expect("the vector decodes");
    assert_eq!(back, header);
    assert_eq!(back.encode().as_slice(), bytes);
}

#[test]
fn entry_header_head() {
    let record = fixtures::signed_head().encode();
    let header = EntryHeader::head(&record);
    let comments = vec![
        format!(
            "pack entry header (pack version 2): kind 3 (head), len {} (the record of signed_head.hex),",
            record.len()
        ),
        "id: BLAKE3 of that record, then the first 4 bytes of BLAKE3 over the 44 bytes before them"
            .to_owned(),
    ];
    let bytes = hex_vector("entry_header_head.hex", &comments, &header.encode());
    let back = EntryHeader::decode(&bytes).expect("the vector decodes");
    assert_eq!(back, header);
    assert_eq!(back.kind, EntryKind::Head);
    assert_eq!(back.blob, BlobId::of(&record));
}

/// A pack as a store writes it: the header, the sealed chunk of `sealed_chunk.hex`, a head entry
/// holding the signed head of `signed_head.hex`, then a tombstone that removes the chunk again.
#[test]
fn pack() {
    let store = StoreId::from_bytes(fixtures::STORE);
    let blob = seal::seal(&fixtures::keys(), ObjectKind::Chunk, fixtures::CHUNK_PLAINTEXT);
    let mut pack = PackHeader { store, seq: 0 }.encode().to_vec();
    pack.extend_from_slice(&EntryHeader::blob(blob.id(), blob.as_bytes().len()).encode());
    pack.extend_from_slice(blob.as_bytes());
    let head_at = pack.len();
    let head = fixtures::signed_head().encode();
    pack.extend_from_slice(&EntryHeader::head(&head).encode());
    pack.extend_from_slice(&head);
    let tombstone_at = pack.len();
    pack.extend_from_slice(&EntryHeader::tombstone(blob.id()).encode());
    let comments = vec![
        "pack file packs/00000000.pack (pack version 2) of store [0x5e; 16]:".to_owned(),
        format!(
            "header at 0, blob entry at 32 (the {} bytes of sealed_chunk.hex at 80),",
            blob.as_bytes().len()
        ),
        format!(
            "head entry at {head_at} (the record of signed_head.hex), tombstone at {tombstone_at}"
        ),
        format!("blob {}", blob.id()),
    ];
    let bytes = hex_vector("pack.hex", &comments, &pack);

    // Walk the pack from the file as a reader would, and write it again.
    let header = PackHeader::decode(&bytes[..PackHeader::LEN]).expect("pack header");
    assert_eq!(header, PackHeader { store, seq: 0 });
    let mut rewritten = header.encode().to_vec();
    let mut live: Vec<BlobId> = Vec::new();
    let mut heads = 0;
    let mut at = PackHeader::LEN;
    while at < bytes.len() {
        let entry = EntryHeader::decode(&bytes[at..at + EntryHeader::LEN]).expect("entry header");
        let body = &bytes[at + EntryHeader::LEN..][..entry.len as usize];
        rewritten.extend_from_slice(&entry.encode());
        match entry.kind {
            EntryKind::Blob => {
                let blob = SealedBlob::verify(entry.blob, body.to_vec()).expect("address matches");
                rewritten.extend_from_slice(blob.as_bytes());
                live.push(entry.blob);
            }
            EntryKind::Tombstone => live.retain(|id| *id != entry.blob),
            EntryKind::Head => {
                assert_eq!(BlobId::of(body), entry.blob, "a head entry's id is its record's hash");
                let head = triad_core::head::SignedHead::decode(body, fixtures::vault())
                    .expect("the head verifies");
                assert_eq!(head, fixtures::signed_head());
                rewritten.extend_from_slice(body);
                heads += 1;
            }
        }
        at += usize::try_from(entry.entry_len()).expect("small");
    }
    assert_eq!(at, bytes.len(), "the last entry ends at the end of the pack");
    assert!(live.is_empty(), "the tombstone removes the blob");
    assert_eq!(heads, 1);
    assert_eq!(rewritten, bytes);
}
