//! The wire protocol between agents: protocol names, frames, messages and their limits.
//!
//! Every protocol runs on its own libp2p stream. A stream carries frames: a 4-byte big-endian
//! length, then that many bytes, which are one record of the one codec (a version byte, then
//! the message). A frame over its protocol's limit, a truncated frame or a message that does
//! not decode is an error that closes the stream; nothing of it is kept.
//!
//! - `/triad/control/1`: one [`Request`], one [`Response`], then the stream closes.
//! - `/triad/blobs/1`: the sender writes [`BlobFrame`]s; after each [`BlobFrame::Commit`]
//!   the receiver makes every blob since the last commit durable and answers one
//!   [`BlobAck`]. Blobs are acknowledged only by that answer.
//! - `/triad/pair/1`: the pairing exchange, [`PairMessage`]s in a fixed order (see the
//!   `proto/README.md`).
//! - `/triad/recover/1`: the recovery proof, [`RecoverMessage`]s in a fixed order.
//! - `/triad/fetch/1`: a trusted device (one recovering, above all) asks for blobs: it writes
//!   a [`Fetch`], the holder answers with a [`BlobFrame::Blob`] for each blob asked, in order,
//!   then a [`BlobFrame::Commit`] that ends the batch; then the next [`Fetch`], until the
//!   asker closes. Storage-only devices never fetch.

use serde::{Deserialize, Serialize};
use triad_core::codec::{self, DecodeError};
use triad_core::{BlobId, Media, StoreId};

use crate::limits::BLOB_LEN_MAX;

/// Format version of every wire message. Version 2 gave refusals a [`Refusal`] code; a
/// version-1 peer cannot read version-2 records (and the other way round): each side reports
/// the other's version and closes the stream.
pub const WIRE_VERSION: u8 = 2;

/// Control messages: request and response.
pub const CONTROL_PROTOCOL: &str = "/triad/control/1";
/// Blob pushes.
pub const BLOBS_PROTOCOL: &str = "/triad/blobs/1";
/// Fetching blobs from a device that holds them.
pub const FETCH_PROTOCOL: &str = "/triad/fetch/1";
/// Pairing a new device.
pub const PAIR_PROTOCOL: &str = "/triad/pair/1";
/// A device that holds the recovery phrase proves it (the only protocol an unknown peer may
/// run outside a pairing window).
pub const RECOVER_PROTOCOL: &str = "/triad/recover/1";

/// The longest control or pairing frame.
pub const CONTROL_FRAME_MAX: usize = 4 * 1024 * 1024;
/// The longest blob frame: a blob and its framing.
pub const BLOB_FRAME_MAX: usize = BLOB_LEN_MAX + 64;
/// The most blob ids in one [`Request::Missing`].
pub const MISSING_BATCH_MAX: usize = 65_536;
/// The length of a frame's length prefix.
pub const FRAME_HEADER_LEN: usize = 4;

/// A control request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Who are you, and what do you hold?
    Hello,
    /// Which of these blobs do you lack? At most [`MISSING_BATCH_MAX`].
    Missing {
        /// The blobs asked about.
        blobs: Vec<BlobId>,
    },
    /// The sender's roster (an encoded `Roster`): take the entries you can verify.
    Roster {
        /// The encoded roster.
        roster: Vec<u8>,
    },
    /// Signed heads (each an encoded `SignedHead`) whose blobs the receiver already holds.
    Heads {
        /// The encoded heads.
        heads: Vec<Vec<u8>>,
    },
    /// Which blobs do you hold? The ids after `after` (all, if `None`) in ascending order, at
    /// most [`MISSING_BATCH_MAX`]. Trusted devices only.
    Inventory {
        /// The last id of the previous answer.
        after: Option<BlobId>,
    },
    /// Every signed head you hold. Trusted devices only.
    ListHeads,
    /// Prove that you hold these ranges of these blobs. At most [`AUDIT_RANGES_MAX`].
    Audit {
        /// The ranges.
        ranges: Vec<AuditRange>,
    },
    /// What the sender knows of the vault: its roster (an encoded `Roster`) and every address
    /// record it holds (each an encoded `SignedAddressRecord`), at most
    /// [`ADDRESS_RECORDS_MAX`]. The receiver takes what it can verify and answers with what
    /// the sender lacks.
    Gossip {
        /// The encoded roster.
        roster: Vec<u8>,
        /// The encoded address records.
        addresses: Vec<Vec<u8>>,
        /// The encoded verdicts (each a `SignedVerdict`) the sender holds, if the receiver is
        /// a trusted device; none to a storage-only one.
        verdicts: Vec<Vec<u8>>,
    },
}

/// The most address records, and the most verdicts, in one [`Request::Gossip`] or
/// [`Response::Gossip`].
pub const ADDRESS_RECORDS_MAX: usize = 1024;

/// The most ranges in one [`Request::Audit`].
pub const AUDIT_RANGES_MAX: usize = 256;

/// A range of a blob to prove (see `triad_core::audit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRange {
    /// The blob.
    pub blob: BlobId,
    /// The first byte.
    pub start: u64,
    /// How many bytes.
    pub len: u32,
}

/// A batch of blobs asked for on a `/triad/fetch/1` stream. At most [`MISSING_BATCH_MAX`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetch {
    /// The blobs, answered in this order.
    pub blobs: Vec<BlobId>,
}

/// A store as a peer describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreInfo {
    /// The store.
    pub id: StoreId,
    /// Its media.
    pub media: Media,
    /// Bytes free for blobs (the smaller of the disk's free space and the quota's rest).
    pub free: u64,
}

/// A control response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The answer to [`Request::Hello`].
    Hello {
        /// The device's name.
        name: String,
        /// Its site.
        site: String,
        /// Its stores.
        stores: Vec<StoreInfo>,
    },
    /// The blobs of a [`Request::Missing`] that the peer lacks, in the order asked.
    Missing {
        /// The blobs lacking.
        blobs: Vec<BlobId>,
    },
    /// Done as asked.
    Done,
    /// Refused, and why.
    Refused {
        /// Why, for a program.
        code: Refusal,
        /// Why, for a person.
        reason: String,
    },
    // Added later in wire version 1: new variants go last, so that older messages keep their
    // encoding.
    /// The answer to [`Request::Inventory`].
    Inventory {
        /// Held blob ids, ascending.
        blobs: Vec<BlobId>,
        /// Whether more follow (ask again after the last one).
        more: bool,
    },
    /// The answer to [`Request::ListHeads`]: encoded `SignedHead`s.
    Heads {
        /// The encoded heads.
        heads: Vec<Vec<u8>>,
    },
    /// The answer to [`Request::Audit`]: for each range, in order, its verified slice, or
    /// `None` if the blob is not here (or is damaged here).
    Audit {
        /// The slices.
        slices: Vec<Option<Vec<u8>>>,
    },
    /// The answer to [`Request::Gossip`]: the receiver's roster if the sender's lacked any of
    /// it, and the address records newer than the sender's (or that it had none of).
    Gossip {
        /// The receiver's encoded roster, if the sender's lacked something.
        roster: Option<Vec<u8>>,
        /// The encoded address records the sender lacks.
        addresses: Vec<Vec<u8>>,
        /// The encoded verdicts the sender lacks (to a trusted sender only).
        verdicts: Vec<Vec<u8>>,
    },
}

/// A frame on a blob stream, from the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobFrame {
    /// A sealed blob; its address must be the BLAKE3 of `bytes`.
    Blob {
        /// The blob's address.
        id: BlobId,
        /// The sealed bytes.
        #[serde(with = "serde_bytes_vec")]
        bytes: Vec<u8>,
    },
    /// Make every blob since the last commit durable, then answer with a [`BlobAck`].
    Commit,
}

/// The receiver's answer to a [`BlobFrame::Commit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobAck {
    /// Every blob since the last commit is durable.
    Committed {
        /// How many blobs that was.
        count: u32,
    },
    /// Nothing since the last commit was kept, and why (a full store, a quota).
    Refused {
        /// Why, for a program.
        code: Refusal,
        /// Why, for a person.
        reason: String,
    },
}

/// Why a device refused a request or a push: what the asker does next depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// Anything else; the reason says what.
    Other,
    /// A store of the device has no room left on its disk.
    Full,
    /// A store of the device holds as much of this vault as its quota allows.
    Quota,
    /// The asker was removed from the vault.
    Removed,
    /// The device cannot take the request now; ask again later.
    Busy,
    // Added later in wire version 2: new codes go last, so that older messages keep their
    // encoding; an agent that predates them fails to decode them and closes the stream.
    /// The request is for trusted devices only, and the asker is storage-only.
    NotTrusted,
    /// The device has no store to hold copies.
    NoStore,
}

impl Refusal {
    /// The code as one lower-case word (`full`, `quota`, `removed`, `busy`, `not_trusted`,
    /// `no_store`, `other`).
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Other => "other",
            Refusal::Full => "full",
            Refusal::Quota => "quota",
            Refusal::Removed => "removed",
            Refusal::Busy => "busy",
            Refusal::NotTrusted => "not_trusted",
            Refusal::NoStore => "no_store",
        }
    }
}

/// The role a pairing gives the new device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PairRole {
    /// Receives the vault secret.
    Trusted,
    /// Stores ciphertext for the vault and never holds its secret.
    StorageOnly,
}

/// Pairing messages, in their order: `Start` (joiner), `Reply` (inviter), `Accept`
/// (joiner), `Welcome` (inviter). Either side may send `Refused` instead of its next message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PairMessage {
    /// The joiner names the window (its nameplate) and sends its SPAKE2 message.
    Start {
        /// The window's number.
        nameplate: u32,
        /// The SPAKE2 message (side B).
        pake: Vec<u8>,
    },
    /// The inviter's SPAKE2 message, its key confirmation, and its [`Offer`] sealed under
    /// the shared key.
    Reply {
        /// The SPAKE2 message (side A).
        pake: Vec<u8>,
        /// Proof that the inviter holds the shared key.
        confirm: [u8; 32],
        /// The sealed [`Offer`].
        sealed: Vec<u8>,
    },
    /// The joiner's key confirmation and its [`Joiner`] sealed under the shared key.
    Accept {
        /// Proof that the joiner holds the shared key.
        confirm: [u8; 32],
        /// The sealed [`Joiner`].
        sealed: Vec<u8>,
    },
    /// The sealed [`Welcome`].
    Welcome {
        /// The sealed [`Welcome`].
        sealed: Vec<u8>,
    },
    /// The exchange ends here.
    Refused {
        /// Why, for a person.
        reason: String,
    },
}

/// What the inviter offers, sealed in [`PairMessage::Reply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The inviter's name.
    pub name: String,
    /// The inviter's site.
    pub site: String,
    /// The role the new device will have.
    pub role: PairRole,
}

/// Who the joiner is, sealed in [`PairMessage::Accept`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joiner {
    /// The joiner's name.
    pub name: String,
    /// The joiner's site.
    pub site: String,
}

/// What the new device receives, sealed in [`PairMessage::Welcome`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The roster with the new device on it (an encoded `Roster`).
    pub roster: Vec<u8>,
    /// The vault secret: for a trusted device only.
    pub vault_secret: Option<[u8; 32]>,
    /// Addresses where the inviter listens.
    pub addresses: Vec<String>,
}

/// The recovery proof: `Hello` (the prover), `ChallengeHeads` (the verifier), `ProofChange`
/// (the prover), then `Welcome` or `Refused` (the verifier). `Challenge` and `Proof`, which
/// showed the verifier's whole roster before any proof, are still decoded but refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecoverMessage {
    /// The vault the prover claims.
    Hello {
        /// The vault id.
        vault: triad_core::VaultId,
    },
    /// A fresh random challenge, and the verifier's roster (encoded) for the prover to sign
    /// itself onto.
    Challenge {
        /// 32 random bytes.
        nonce: [u8; 32],
        /// The encoded roster.
        roster: Vec<u8>,
    },
    /// The recovery key's signature over [`recovery_proof_message`], and the verifier's
    /// roster with the prover admitted by the recovery key (an encoded `Roster`).
    Proof {
        /// The 64-byte signature.
        signature: Vec<u8>,
        /// The encoded roster.
        roster: Vec<u8>,
    },
    /// Admitted: the roster as the verifier now keeps it.
    Welcome {
        /// The encoded roster.
        roster: Vec<u8>,
    },
    /// Refused, and why.
    Refused {
        /// Why, for a person.
        reason: String,
    },
    // Added later in wire version 1, with roster format 3: the verifier shows its roster to no
    // one before the proof, and the prover sends only the change that admits it.
    /// A fresh random challenge, and the hashes of the verifier's roster heads for the
    /// prover's admission to follow.
    ChallengeHeads {
        /// 32 random bytes.
        nonce: [u8; 32],
        /// The heads of the verifier's roster (`ChangeId`s), ascending.
        heads: Vec<[u8; 32]>,
    },
    /// The recovery key's signature over [`recovery_proof_message`], and the change that
    /// admits the prover, signed by the recovery key (an encoded `SignedChange`).
    ProofChange {
        /// The 64-byte signature.
        signature: Vec<u8>,
        /// The encoded change.
        change: Vec<u8>,
    },
}

/// What the recovery key signs in a [`RecoverMessage::ProofChange`]: bound to the vault, both peer
/// ids and the verifier's fresh challenge, so it proves nothing anywhere else.
pub fn recovery_proof_message(
    vault: &triad_core::VaultId,
    verifier: &[u8],
    prover: &[u8],
    nonce: &[u8; 32],
) -> Vec<u8> {
    let mut msg = b"triad/recovery-proof/v1".to_vec();
    msg.extend_from_slice(vault.as_bytes());
    for peer in [verifier, prover] {
        msg.extend_from_slice(&u16::try_from(peer.len()).unwrap_or(u16::MAX).to_be_bytes());
        msg.extend_from_slice(peer);
    }
    msg.extend_from_slice(nonce);
    msg
}

/// Encodes a wire message as a record (without the frame's length prefix).
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    codec::encode(WIRE_VERSION, message)
}

/// Decodes a wire message of kind `what` from a record.
pub fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    record: &[u8],
) -> Result<T, DecodeError> {
    codec::decode(what, WIRE_VERSION, record)
}

/// Encodes a message as a whole frame: length prefix and record.
pub fn frame<T: Serialize>(message: &T) -> Vec<u8> {
    let record = encode(message);
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + record.len());
    out.extend_from_slice(&u32::try_from(record.len()).expect("records are small").to_be_bytes());
    out.extend_from_slice(&record);
    out
}

/// The bytes of `frame(&BlobFrame::Blob { id, bytes })` that come before `bytes`, so that a
/// sender can write a blob's frame without copying the blob into it.
pub fn blob_frame_prefix(id: &BlobId, len: usize) -> Vec<u8> {
    let mut record = vec![WIRE_VERSION, 0]; // version, variant 0 (Blob)
    record.extend_from_slice(id.as_bytes());
    push_varint(&mut record, len as u64);
    let total = record.len() + len;
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + record.len());
    out.extend_from_slice(&u32::try_from(total).expect("blob frames are small").to_be_bytes());
    out.extend_from_slice(&record);
    out
}

/// The codec's varint (see `proto/README.md`).
fn push_varint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=250 => out.push(v as u8),
        251..=0xffff => {
            out.push(0xfb);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xfc);
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        _ => {
            out.push(0xfd);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Blob bytes as one length-prefixed byte string, read in one piece (not byte by byte).
mod serde_bytes_vec {
    use std::fmt;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_its_length_then_its_record() {
        let message = Request::Missing { blobs: vec![BlobId::of(b"x")] };
        let framed = frame(&message);
        let len = u32::from_be_bytes(framed[..4].try_into().expect("4 bytes")) as usize;
        assert_eq!(len, framed.len() - 4);
        assert_eq!(decode::<Request>("request", &framed[4..]).expect("decodes"), message);
    }

    #[test]
    fn the_blob_frame_prefix_is_the_frame_before_the_bytes() {
        for len in [0usize, 1, 250, 251, 65_535, 65_536, 1 << 20] {
            let bytes = vec![3u8; len];
            let id = BlobId::of(&bytes);
            let mut written = blob_frame_prefix(&id, len);
            written.extend_from_slice(&bytes);
            assert_eq!(written, frame(&BlobFrame::Blob { id, bytes }), "len {len}");
        }
    }

    #[test]
    fn a_blob_frame_round_trips() {
        let bytes = vec![7u8; 1000];
        let message = BlobFrame::Blob { id: BlobId::of(&bytes), bytes };
        assert_eq!(decode::<BlobFrame>("blob frame", &encode(&message)).expect("decodes"), message);
    }

    #[test]
    fn another_version_is_refused() {
        let mut record = encode(&Response::Done);
        record[0] = WIRE_VERSION + 1;
        assert!(matches!(
            decode::<Response>("response", &record),
            Err(DecodeError::Version { found, .. }) if found == WIRE_VERSION + 1
        ));
    }
}
