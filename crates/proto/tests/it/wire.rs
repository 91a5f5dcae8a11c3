//! Wire messages: one framed vector per message shape, decoded back and re-encoded.

use triad_core::{BlobId, Media, StoreId};
use triad_proto::wire::{
    self, AuditRange, BlobAck, BlobFrame, Fetch, Joiner, Offer, PairMessage, PairRole, Refusal,
    Request, Response, StoreInfo, Welcome,
};

use crate::vectors::hex_vector;

fn check<T>(name: &str, what: &str, message: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let comments = vec![
        format!("{what}"),
        format!(
            "as a frame: 4-byte big-endian length, then the record (wire version {})",
            wire::WIRE_VERSION
        ),
    ];
    let bytes = hex_vector(name, &comments, &wire::frame(message));
    let len = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    assert_eq!(len, bytes.len() - 4, "{name}: the length prefix");
    let back: T = wire::decode("message", &bytes[4..]).expect("the vector decodes");
    assert_eq!(&back, message);
    assert_eq!(wire::frame(&back), bytes);
}

#[test]
fn control_requests() {
    let blobs = vec![BlobId::from_bytes([0xb1; 32]), BlobId::from_bytes([0xb2; 32])];
    check("wire_request_hello.hex", "control request Hello", &Request::Hello);
    check(
        "wire_request_missing.hex",
        "control request Missing with blobs [0xb1; 32] and [0xb2; 32]",
        &Request::Missing { blobs: blobs.clone() },
    );
    check(
        "wire_request_heads.hex",
        "control request Heads with two (short, fake) encoded heads [1, 2] and [3]",
        &Request::Heads { heads: vec![vec![1, 2], vec![3]] },
    );
    check(
        "wire_request_inventory.hex",
        "control request Inventory after blob [0xb1; 32]",
        &Request::Inventory { after: Some(blobs[0]) },
    );
    check("wire_request_list_heads.hex", "control request ListHeads", &Request::ListHeads);
    check(
        "wire_request_audit.hex",
        "control request Audit of blob [0xb1; 32], 4096 bytes from 8192",
        &Request::Audit { ranges: vec![AuditRange { blob: blobs[0], start: 8192, len: 4096 }] },
    );
    check(
        "wire_request_gossip.hex",
        "control request Gossip: a (short, fake) roster [1, 2], address records [3] and [4], verdict [8]",
        &Request::Gossip {
            roster: vec![1, 2],
            addresses: vec![vec![3], vec![4]],
            verdicts: vec![vec![8]],
        },
    );
    check(
        "wire_fetch.hex",
        "fetch batch asking for blobs [0xb1; 32] and [0xb2; 32]",
        &Fetch { blobs: blobs.clone() },
    );
}

#[test]
fn control_responses() {
    let store =
        StoreInfo { id: StoreId::from_bytes([0x5e; 16]), media: Media::UsbHdd, free: 1 << 40 };
    check(
        "wire_response_hello.hex",
        "control response Hello: name pi, site parents, one usb-hdd store with 1 TiB free",
        &Response::Hello { name: "pi".into(), site: "parents".into(), stores: vec![store] },
    );
    check(
        "wire_response_missing.hex",
        "control response Missing with blob [0xb2; 32]",
        &Response::Missing { blobs: vec![BlobId::from_bytes([0xb2; 32])] },
    );
    check(
        "wire_response_inventory.hex",
        "control response Inventory: blob [0xb2; 32], more to come",
        &Response::Inventory { blobs: vec![BlobId::from_bytes([0xb2; 32])], more: true },
    );
    check(
        "wire_response_heads.hex",
        "control response Heads with one (short, fake) encoded head [9, 9]",
        &Response::Heads { heads: vec![vec![9, 9]] },
    );
    check(
        "wire_response_audit.hex",
        "control response Audit: a (short, fake) slice [1, 2, 3], then a blob not held",
        &Response::Audit { slices: vec![Some(vec![1, 2, 3]), None] },
    );
    check(
        "wire_response_gossip.hex",
        "control response Gossip: a (short, fake) roster [5], one address record [6, 7], no verdict",
        &Response::Gossip { roster: Some(vec![5]), addresses: vec![vec![6, 7]], verdicts: vec![] },
    );
    check(
        "wire_response_refused.hex",
        "control response Refused: code Full, \"the store is full\"",
        &Response::Refused { code: Refusal::Full, reason: "the store is full".into() },
    );
    check(
        "wire_response_refused_not_trusted.hex",
        "control response Refused: code NotTrusted, \"trusted devices only\"",
        &Response::Refused { code: Refusal::NotTrusted, reason: "trusted devices only".into() },
    );
    check(
        "wire_response_refused_no_store.hex",
        "control response Refused: code NoStore, \"no store\"",
        &Response::Refused { code: Refusal::NoStore, reason: "no store".into() },
    );
}

#[test]
fn blob_stream() {
    let bytes = vec![0xab; 40];
    check(
        "wire_blob_frame.hex",
        "blob frame Blob: id BLAKE3 of 40 bytes 0xab, then the 40 bytes",
        &BlobFrame::Blob { id: BlobId::of(&bytes), bytes },
    );
    check("wire_blob_commit.hex", "blob frame Commit", &BlobFrame::Commit);
    check(
        "wire_blob_ack.hex",
        "blob acknowledgement Committed, count 300",
        &BlobAck::Committed { count: 300 },
    );
    check(
        "wire_blob_refused.hex",
        "blob acknowledgement Refused: code Quota, \"over the quota\"",
        &BlobAck::Refused { code: Refusal::Quota, reason: "over the quota".into() },
    );
}

#[test]
fn pairing() {
    check(
        "wire_pair_start.hex",
        "pairing Start: nameplate 7, a 33-byte SPAKE2 message of 0x42",
        &PairMessage::Start { nameplate: 7, pake: vec![0x42; 33] },
    );
    check(
        "wire_pair_reply.hex",
        "pairing Reply: SPAKE2 message 33 x 0x43, confirm [0xc0; 32], sealed 4 x 0x5e",
        &PairMessage::Reply { pake: vec![0x43; 33], confirm: [0xc0; 32], sealed: vec![0x5e; 4] },
    );
    check(
        "wire_pair_offer.hex",
        "the Offer sealed in a Reply: name nas, site studio, role storage-only",
        &Offer { name: "nas".into(), site: "studio".into(), role: PairRole::StorageOnly },
    );
    check(
        "wire_pair_joiner.hex",
        "the Joiner sealed in an Accept: name pi, site parents",
        &Joiner { name: "pi".into(), site: "parents".into() },
    );
    check(
        "wire_pair_welcome.hex",
        "the Welcome sealed in a Welcome message: roster bytes [1, 2, 3], no vault secret, one address",
        &Welcome {
            roster: vec![1, 2, 3],
            vault_secret: None,
            addresses: vec!["/ip4/192.0.2.7/udp/41641/quic-v1".into()],
        },
    );
}

#[test]
fn recovery_proof() {
    use triad_proto::wire::RecoverMessage;
    check(
        "wire_recover_challenge.hex",
        "recovery Challenge: nonce [0x6e; 32], roster bytes [1, 2, 3]",
        &RecoverMessage::Challenge { nonce: [0x6e; 32], roster: vec![1, 2, 3] },
    );
    check(
        "wire_recover_proof.hex",
        "recovery Proof: signature 64 x 0x51, roster bytes [4, 5]",
        &RecoverMessage::Proof { signature: vec![0x51; 64], roster: vec![4, 5] },
    );
    check(
        "wire_recover_challenge_heads.hex",
        "recovery ChallengeHeads: nonce [0x6e; 32], heads [[0xa1; 32], [0xa2; 32]]",
        &RecoverMessage::ChallengeHeads { nonce: [0x6e; 32], heads: vec![[0xa1; 32], [0xa2; 32]] },
    );
    check(
        "wire_recover_proof_change.hex",
        "recovery ProofChange: signature 64 x 0x51, change bytes [6, 7]",
        &RecoverMessage::ProofChange { signature: vec![0x51; 64], change: vec![6, 7] },
    );
    let message = wire::recovery_proof_message(
        &crate::fixtures::vault(),
        b"verifier",
        b"prover",
        &[0x6e; 32],
    );
    let comments = vec![
        "what the recovery key signs: \"triad/recovery-proof/v1\" || vault id (of phrase.txt) ||"
            .to_owned(),
        "u16 BE length || verifier peer id bytes (here \"verifier\") || u16 BE length || prover"
            .to_owned(),
        "peer id bytes (here \"prover\") || nonce [0x6e; 32]".to_owned(),
    ];
    hex_vector("wire_recover_signed.hex", &comments, &message);
}

#[test]
fn another_wire_version_is_refused() {
    // Version 1 (before refusal codes) and the next one are both refused, never guessed at.
    for version in [1, wire::WIRE_VERSION + 1] {
        let mut record = wire::encode(&Request::Hello);
        record[0] = version;
        assert!(wire::decode::<Request>("request", &record).is_err(), "version {version}");
    }
}
