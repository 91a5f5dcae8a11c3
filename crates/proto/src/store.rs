//! Framing records of a blob store on disk: the store marker, pack headers and pack entries.
//!
//! A store directory holds a marker file (`triad-store`) that says which store and vault it is,
//! and pack files that are self-describing: a [`PackHeader`], then entries, each an
//! [`EntryHeader`] followed by the blob's bytes (none for a tombstone). The index is only a
//! cache of what the packs say, so it can always be rebuilt from them.
//!
//! Pack headers and entry headers have a fixed size and a fixed little-endian layout, so a
//! reader can walk a pack without decoding anything else. Every length read from a disk is
//! checked against [`BLOB_LEN_MAX`] before anything is allocated, and an entry header carries
//! a checksum so that a damaged length field is caught instead of followed.
//!
//! ```text
//! marker       "TRIADSTO" | codec record (version MARKER_VERSION) of Marker
//! pack header  "TRIADPAK" (8) | version (1) | zero (3) | store id (16) | seq u32 LE (4)  = 32
//! entry header "TRBE" (4) | kind (1) | zero (3) | len u32 LE (4) | blob id (32) | check (4) = 48
//!              check = the first 4 bytes of BLAKE3 over the 44 bytes before it
//! ```
//!
//! Pack version 2 adds head entries (kind 3): the signed head record of a folder, appended each
//! time a store takes a head, so that the packs alone say which snapshot each folder is at and
//! the `heads/` files can be rebuilt from them. Version 1 packs hold no head entries and are
//! still read.

use serde::{Deserialize, Serialize};
use triad_core::codec::{self, DecodeError};
use triad_core::seal::BLOB_LEN_MAX;
use triad_core::{BlobId, Media, StoreId, Timestamp, VaultId};

/// The first bytes of a store marker file.
pub const MARKER_MAGIC: [u8; 8] = *b"TRIADSTO";
/// Format version of the store marker record.
pub const MARKER_VERSION: u8 = 1;
/// The first bytes of a pack file.
pub const PACK_MAGIC: [u8; 8] = *b"TRIADPAK";
/// Format version of pack files (headers and entries) that this build writes.
pub const PACK_VERSION: u8 = 2;
/// The oldest pack version this build reads (version 1 has no head entries).
pub const PACK_VERSION_MIN: u8 = 1;
/// The longest head entry body: a signed head record (as the `heads/` files).
pub const HEAD_ENTRY_LEN_MAX: u32 = 64 * 1024;
/// The first bytes of every pack entry.
pub const ENTRY_MAGIC: [u8; 4] = *b"TRBE";
/// The largest marker file a reader accepts.
pub const MARKER_LEN_MAX: usize = 4096;

/// A framing record could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The record does not start with the magic bytes of its kind.
    #[error("{what} does not start with the expected magic bytes")]
    Magic {
        /// What kind of record.
        what: &'static str,
    },
    /// The record was written by a format version this build does not read.
    #[error("unsupported {what} format version {found} (this build reads version {expected})")]
    Version {
        /// What kind of record.
        what: &'static str,
        /// The version found.
        found: u8,
        /// The version this build reads.
        expected: u8,
    },
    /// The record is shorter than its fixed size, or longer than its limit.
    #[error("{what} of {len} bytes has the wrong size")]
    Size {
        /// What kind of record.
        what: &'static str,
        /// The length found.
        len: usize,
    },
    /// An entry header's checksum does not match its fields.
    #[error("entry header checksum does not match")]
    Checksum,
    /// An entry header names a kind this build does not know.
    #[error("unknown entry kind {found}")]
    Kind {
        /// The kind byte found.
        found: u8,
    },
    /// An entry header names a length over the limit for its kind.
    #[error("entry length {len} is over the limit for its kind")]
    Length {
        /// The length found.
        len: u32,
    },
    /// Reserved bytes are not zero.
    #[error("reserved bytes of a {what} are not zero")]
    Reserved {
        /// What kind of record.
        what: &'static str,
    },
    /// The marker record after the magic bytes could not be decoded.
    #[error("malformed store marker")]
    Marker(#[source] DecodeError),
}

/// What the marker file of a store says: which store this is, in which vault, on what media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The store, chosen at random when it was created.
    pub store: StoreId,
    /// The vault the store belongs to.
    pub vault: VaultId,
    /// The media the store lives on.
    pub media: Media,
    /// When the store was created.
    pub created: Timestamp,
}

impl Marker {
    /// Encodes the marker file: magic bytes, then the codec record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MARKER_MAGIC.to_vec();
        out.extend_from_slice(&codec::encode(MARKER_VERSION, self));
        out
    }

    /// Decodes a marker file. Never panics on input.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        if bytes.len() > MARKER_LEN_MAX {
            return Err(FrameError::Size { what: "store marker", len: bytes.len() });
        }
        let body =
            bytes.strip_prefix(&MARKER_MAGIC).ok_or(FrameError::Magic { what: "store marker" })?;
        codec::decode("store marker", MARKER_VERSION, body).map_err(FrameError::Marker)
    }
}

/// The fixed header at the start of every pack file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackHeader {
    /// The store the pack belongs to.
    pub store: StoreId,
    /// The pack's sequence number, also its file name.
    pub seq: u32,
}

impl PackHeader {
    /// Bytes of an encoded pack header.
    pub const LEN: usize = 32;

    /// Encodes the header.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..8].copy_from_slice(&PACK_MAGIC);
        out[8] = PACK_VERSION;
        out[12..28].copy_from_slice(self.store.as_bytes());
        out[28..32].copy_from_slice(&self.seq.to_le_bytes());
        out
    }

    /// Decodes a header of any version this build reads. Never panics on input.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        Self::decode_versioned(bytes).map(|(header, _)| header)
    }

    /// Decodes a header and returns the pack version it names too.
    pub fn decode_versioned(bytes: &[u8]) -> Result<(Self, u8), FrameError> {
        let what = "pack header";
        let bytes: &[u8; Self::LEN] =
            bytes.try_into().map_err(|_| FrameError::Size { what, len: bytes.len() })?;
        if bytes[..8] != PACK_MAGIC {
            return Err(FrameError::Magic { what });
        }
        if !(PACK_VERSION_MIN..=PACK_VERSION).contains(&bytes[8]) {
            return Err(FrameError::Version { what, found: bytes[8], expected: PACK_VERSION });
        }
        if bytes[9..12] != [0; 3] {
            return Err(FrameError::Reserved { what });
        }
        let store = StoreId::try_from_slice(&bytes[12..28]).expect("16 bytes of a 32-byte array");
        let seq = u32::from_le_bytes(bytes[28..32].try_into().expect("4 bytes"));
        Ok((Self { store, seq }, bytes[8]))
    }
}

/// What a pack entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryKind {
    /// A blob's bytes follow the header.
    Blob = 1,
    /// The blob was removed: an earlier entry of the same id no longer counts. No bytes follow.
    Tombstone = 2,
    /// A signed head record follows (pack version 2); the id field is the BLAKE3 of that record,
    /// a checksum, not a blob of the store.
    Head = 3,
}

/// The fixed header in front of every pack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader {
    /// What the entry records.
    pub kind: EntryKind,
    /// Bytes following the header: the blob's length, 0 for a tombstone, the record's length
    /// for a head.
    pub len: u32,
    /// The blob (for a head entry: the BLAKE3 of the head record).
    pub blob: BlobId,
}

impl EntryHeader {
    /// Bytes of an encoded entry header.
    pub const LEN: usize = 48;

    /// A header for a blob of `len` bytes.
    ///
    /// # Panics
    /// If `len` is over [`BLOB_LEN_MAX`]: a sealed blob never is, so that is a bug.
    pub fn blob(blob: BlobId, len: usize) -> Self {
        assert!(len <= BLOB_LEN_MAX, "blob {blob} of {len} bytes is over the limit");
        let len = u32::try_from(len).expect("BLOB_LEN_MAX fits in u32");
        Self { kind: EntryKind::Blob, len, blob }
    }

    /// A tombstone for `blob`.
    pub fn tombstone(blob: BlobId) -> Self {
        Self { kind: EntryKind::Tombstone, len: 0, blob }
    }

    /// A header for the signed head record `record`.
    ///
    /// # Panics
    /// If `record` is over [`HEAD_ENTRY_LEN_MAX`]: a signed head never is, so that is a bug.
    pub fn head(record: &[u8]) -> Self {
        let len = u32::try_from(record.len()).ok().filter(|len| *len <= HEAD_ENTRY_LEN_MAX);
        let len = len.expect("a signed head record is under HEAD_ENTRY_LEN_MAX");
        Self { kind: EntryKind::Head, len, blob: BlobId::of(record) }
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..4].copy_from_slice(&ENTRY_MAGIC);
        out[4] = self.kind as u8;
        out[8..12].copy_from_slice(&self.len.to_le_bytes());
        out[12..44].copy_from_slice(self.blob.as_bytes());
        let check = checksum(&out[..44]);
        out[44..].copy_from_slice(&check);
        out
    }

    /// Decodes a header. Never panics on input; a length over [`BLOB_LEN_MAX`] is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let what = "entry header";
        let bytes: &[u8; Self::LEN] =
            bytes.try_into().map_err(|_| FrameError::Size { what, len: bytes.len() })?;
        if bytes[..4] != ENTRY_MAGIC {
            return Err(FrameError::Magic { what });
        }
        if checksum(&bytes[..44]) != bytes[44..] {
            return Err(FrameError::Checksum);
        }
        if bytes[5..8] != [0; 3] {
            return Err(FrameError::Reserved { what });
        }
        let kind = match bytes[4] {
            1 => EntryKind::Blob,
            2 => EntryKind::Tombstone,
            3 => EntryKind::Head,
            found => return Err(FrameError::Kind { found }),
        };
        let len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let len_ok = match kind {
            EntryKind::Blob => usize::try_from(len).is_ok_and(|len| len <= BLOB_LEN_MAX),
            EntryKind::Tombstone => len == 0,
            EntryKind::Head => len <= HEAD_ENTRY_LEN_MAX,
        };
        if !len_ok {
            return Err(FrameError::Length { len });
        }
        let blob = BlobId::try_from_slice(&bytes[12..44]).expect("32 bytes of a 48-byte array");
        Ok(Self { kind, len, blob })
    }

    /// Bytes of the whole entry: header and body.
    pub fn entry_len(&self) -> u64 {
        Self::LEN as u64 + u64::from(self.len)
    }
}

fn checksum(bytes: &[u8]) -> [u8; 4] {
    let hash = BlobId::of(bytes);
    hash.as_bytes()[..4].try_into().expect("4 of 32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn marker() -> Marker {
        Marker {
            store: StoreId::from_bytes([1; 16]),
            vault: VaultId::from_bytes([2; 32]),
            media: Media::UsbHdd,
            created: Timestamp::new(1_700_000_000, 5),
        }
    }

    #[test]
    fn marker_round_trip_and_golden_bytes() {
        let bytes = marker().encode();
        assert_eq!(&bytes[..8], b"TRIADSTO");
        assert_eq!(bytes[8], MARKER_VERSION);
        // store id (16), vault id (32), media variant 4 (usb-hdd), secs (zigzag varint: 0xfc then
        // u32 LE of 2 * 1_700_000_000), nanos.
        let mut golden = b"TRIADSTO\x01".to_vec();
        golden.extend_from_slice(&[1; 16]);
        golden.extend_from_slice(&[2; 32]);
        golden.push(4);
        golden.extend_from_slice(&[0xfc, 0x00, 0xe2, 0xa7, 0xca]);
        golden.push(5);
        assert_eq!(bytes, golden);
        assert_eq!(Marker::decode(&bytes).expect("round trip"), marker());
        assert!(matches!(Marker::decode(b"NOTASTORE"), Err(FrameError::Magic { .. })));
        assert!(matches!(Marker::decode(&[0; 5000]), Err(FrameError::Size { .. })));
    }

    #[test]
    fn pack_header_golden_bytes() {
        let header = PackHeader { store: StoreId::from_bytes([7; 16]), seq: 0x0102_0304 };
        let bytes = header.encode();
        let mut golden = b"TRIADPAK\x02\0\0\0".to_vec();
        golden.extend_from_slice(&[7; 16]);
        golden.extend_from_slice(&[4, 3, 2, 1]);
        assert_eq!(bytes.as_slice(), golden.as_slice());
        assert_eq!(PackHeader::decode(&bytes).expect("round trip"), header);
        let mut v1 = bytes;
        v1[8] = 1;
        assert_eq!(PackHeader::decode_versioned(&v1).expect("version 1 is read"), (header, 1));
        let mut bad = bytes;
        bad[8] = 9;
        assert!(matches!(PackHeader::decode(&bad), Err(FrameError::Version { found: 9, .. })));
        assert!(matches!(PackHeader::decode(&bytes[..31]), Err(FrameError::Size { .. })));
    }

    #[test]
    fn entry_header_refuses_huge_lengths_and_damage() {
        let id = BlobId::of(b"x");
        let header = EntryHeader::blob(id, 1000);
        let bytes = header.encode();
        assert_eq!(&bytes[..4], b"TRBE");
        assert_eq!(bytes[4], 1);
        assert_eq!(&bytes[8..12], &1000u32.to_le_bytes());
        assert_eq!(EntryHeader::decode(&bytes).expect("round trip"), header);
        assert_eq!(header.entry_len(), 1048);

        // A length over the limit with a valid checksum is still refused.
        let mut huge = [0u8; EntryHeader::LEN];
        huge[..4].copy_from_slice(b"TRBE");
        huge[4] = 1;
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let check = checksum(&huge[..44]);
        huge[44..].copy_from_slice(&check);
        assert!(matches!(EntryHeader::decode(&huge), Err(FrameError::Length { .. })));

        let tomb = EntryHeader::tombstone(id);
        assert_eq!(EntryHeader::decode(&tomb.encode()).expect("round trip"), tomb);
    }

    proptest! {
        #[test]
        fn any_flipped_bit_in_an_entry_header_is_caught(at in 0usize..48, bit in 0u8..8) {
            let header = EntryHeader::blob(BlobId::of(b"y"), 4242);
            let mut bytes = header.encode();
            bytes[at] ^= 1 << bit;
            prop_assert!(EntryHeader::decode(&bytes).is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = EntryHeader::decode(&bytes);
            let _ = PackHeader::decode(&bytes);
            let _ = Marker::decode(&bytes);
        }
    }
}
