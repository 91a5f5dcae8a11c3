//! Sealing: deterministic authenticated encryption of chunks and metadata objects.
//!
//! A sealed blob is `version (1) | kind (1) | nonce (24) | ciphertext | tag (16)`, encrypted
//! with XChaCha20-Poly1305 under the key for its object kind. Sealing is deterministic: the
//! object's identity is a keyed BLAKE3 hash of its plaintext, and the nonce is a keyed PRF
//! (its own key) over the format version, the kind and that identity. So the same plaintext
//! always seals to the same bytes (deduplication across devices, and a laptop can re-create
//! any blob from its source file), and a nonce is never reused with different inputs.
//!
//! A blob's address ([`BlobId`]) is the BLAKE3 hash of its sealed bytes, so any holder, with or
//! without keys, can check what it receives and stores.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

use crate::id::{BlobId, ChunkId};
use crate::keys::VaultKeys;

/// The sealed-blob format version written by this build.
pub const SEAL_VERSION: u8 = 1;
/// Bytes before the ciphertext: version, kind, nonce.
pub const HEADER_LEN: usize = 2 + 24;
/// Bytes of the authentication tag after the ciphertext.
pub const TAG_LEN: usize = 16;
/// The largest plaintext of any object.
pub const PLAINTEXT_LEN_MAX: usize = 16 * 1024 * 1024;
/// The largest sealed blob: the largest plaintext plus header and tag.
pub const BLOB_LEN_MAX: usize = PLAINTEXT_LEN_MAX + HEADER_LEN + TAG_LEN;

const AAD_PREFIX: &[u8] = b"triad/blob/v1";

/// What a sealed blob holds. Each kind has its own identity and sealing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ObjectKind {
    /// A content-defined piece of a file.
    Chunk = 1,
    /// A file's metadata and chunk list.
    FileEntry = 2,
    /// A directory listing.
    Tree = 3,
    /// The state of a folder at one time.
    Snapshot = 4,
}

impl ObjectKind {
    /// How many kinds there are.
    pub const COUNT: usize = 4;
    /// Every kind.
    pub const ALL: [ObjectKind; Self::COUNT] =
        [ObjectKind::Chunk, ObjectKind::FileEntry, ObjectKind::Tree, ObjectKind::Snapshot];

    /// The kind for its byte in a blob header.
    pub fn from_byte(byte: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u8 == byte)
    }

    /// A short lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Chunk => "chunk",
            ObjectKind::FileEntry => "file entry",
            ObjectKind::Tree => "tree",
            ObjectKind::Snapshot => "snapshot",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize - 1
    }

    /// The `derive_key` contexts for this kind's identity key and sealing key.
    pub(crate) fn key_contexts(self) -> (&'static str, &'static str) {
        match self {
            ObjectKind::Chunk => ("triad 2026-11 chunk id v1", "triad 2026-11 seal chunk v1"),
            ObjectKind::FileEntry => {
                ("triad 2026-11 file entry id v1", "triad 2026-11 seal file entry v1")
            }
            ObjectKind::Tree => ("triad 2026-11 tree id v1", "triad 2026-11 seal tree v1"),
            ObjectKind::Snapshot => {
                ("triad 2026-11 snapshot id v1", "triad 2026-11 seal snapshot v1")
            }
        }
    }
}

/// A blob whose address is known to match its bytes. Made only by [`seal`] or
/// [`SealedBlob::verify`], so holding one means the check was done.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedBlob {
    id: BlobId,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for SealedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedBlob({}, {} bytes)", self.id.short(), self.bytes.len())
    }
}

/// Bytes claimed to be a blob were not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The bytes do not hash to the address they were stored or sent under.
    #[error("blob {expected} does not match its address (the bytes hash to {actual})")]
    AddressMismatch {
        /// The address claimed.
        expected: BlobId,
        /// The address of the bytes.
        actual: BlobId,
    },
    /// The bytes are too short or too long to be a blob.
    #[error("a blob must be {min} to {BLOB_LEN_MAX} bytes, got {len}")]
    Length {
        /// The length found.
        len: usize,
        /// The shortest valid blob.
        min: usize,
    },
}

impl SealedBlob {
    /// Checks that `bytes` hash to `expected` and have a blob's shape.
    pub fn verify(expected: BlobId, bytes: Vec<u8>) -> Result<Self, VerifyError> {
        let min = HEADER_LEN + TAG_LEN;
        if bytes.len() < min || bytes.len() > BLOB_LEN_MAX {
            return Err(VerifyError::Length { len: bytes.len(), min });
        }
        let actual = BlobId::of(&bytes);
        if actual != expected {
            return Err(VerifyError::AddressMismatch { expected, actual });
        }
        Ok(Self { id: actual, bytes })
    }

    /// The blob's address.
    pub fn id(&self) -> BlobId {
        self.id
    }

    /// The sealed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The sealed bytes, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The object kind named in the header, if it is one this build knows.
    pub fn kind(&self) -> Option<ObjectKind> {
        ObjectKind::from_byte(self.bytes[1])
    }
}

/// The identity of a plaintext object: keyed BLAKE3 with the key of its kind.
pub fn object_id(keys: &VaultKeys, kind: ObjectKind, plaintext: &[u8]) -> ChunkId {
    ChunkId::from_bytes(*blake3::keyed_hash(keys.id_key(kind), plaintext).as_bytes())
}

/// Seals `plaintext` of `kind`. Deterministic for the same keys, kind and plaintext.
///
/// # Panics
/// If `plaintext` is longer than [`PLAINTEXT_LEN_MAX`]; callers chunk and bound their
/// objects first, so that is a bug.
pub fn seal(keys: &VaultKeys, kind: ObjectKind, plaintext: &[u8]) -> SealedBlob {
    assert!(plaintext.len() <= PLAINTEXT_LEN_MAX, "{} plaintext over the limit", kind.as_str());
    let id = object_id(keys, kind, plaintext);
    let mut nonce_input = [0u8; 2 + 32];
    nonce_input[0] = SEAL_VERSION;
    nonce_input[1] = kind as u8;
    nonce_input[2..].copy_from_slice(id.as_bytes());
    let nonce_full = blake3::keyed_hash(keys.nonce_key(), &nonce_input);
    let nonce: [u8; 24] = nonce_full.as_bytes()[..24].try_into().expect("24 of 32 bytes");

    let mut bytes = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    bytes.push(SEAL_VERSION);
    bytes.push(kind as u8);
    bytes.extend_from_slice(&nonce);
    bytes.extend_from_slice(plaintext);
    let cipher = XChaCha20Poly1305::new(&Key::from(*keys.seal_key(kind)));
    let tag = cipher
        .encrypt_inout_detached(&XNonce::from(nonce), &aad(kind), (&mut bytes[HEADER_LEN..]).into())
        .expect("XChaCha20-Poly1305 encrypts any message under the size limit");
    bytes.extend_from_slice(&tag);
    SealedBlob { id: BlobId::of(&bytes), bytes }
}

/// A blob could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The blob was sealed by a format version this build does not read.
    #[error("blob {blob} has sealed-blob format version {found}, this build reads {SEAL_VERSION}")]
    Version {
        /// The blob.
        blob: BlobId,
        /// The version byte found.
        found: u8,
    },
    /// The blob holds another kind of object than the one expected.
    #[error("blob {blob} holds a {found} where a {expected} was expected")]
    Kind {
        /// The blob.
        blob: BlobId,
        /// What the header says, if known.
        found: &'static str,
        /// What the caller expected.
        expected: &'static str,
    },
    /// Authentication failed: the blob was sealed with other keys (another vault).
    #[error("blob {blob} does not open with this vault's keys")]
    Authentication {
        /// The blob.
        blob: BlobId,
    },
}

/// Opens a blob expected to hold an object of `kind`, returning its plaintext.
pub fn open(keys: &VaultKeys, blob: &SealedBlob, kind: ObjectKind) -> Result<Vec<u8>, OpenError> {
    let bytes = blob.as_bytes();
    let (nonce, tag) = header(blob.id(), bytes, kind)?;
    let mut plain = bytes[HEADER_LEN..bytes.len() - TAG_LEN].to_vec();
    decrypt(keys, blob.id(), kind, nonce, tag, &mut plain)?;
    Ok(plain)
}

/// The plaintext of a blob opened in place by [`open_owned`].
#[derive(Debug)]
pub struct Opened {
    bytes: Vec<u8>,
}

impl Opened {
    /// The plaintext.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..self.bytes.len() - TAG_LEN]
    }
}

/// As [`open`], decrypting in the blob's own memory instead of a copy.
pub fn open_owned(
    keys: &VaultKeys,
    blob: SealedBlob,
    kind: ObjectKind,
) -> Result<Opened, OpenError> {
    let SealedBlob { id, mut bytes } = blob;
    let (nonce, tag) = header(id, &bytes, kind)?;
    let tag_at = bytes.len() - TAG_LEN;
    decrypt(keys, id, kind, nonce, tag, &mut bytes[HEADER_LEN..tag_at])?;
    Ok(Opened { bytes })
}

/// Checks the version and kind; returns the nonce and the tag.
fn header(
    id: BlobId,
    bytes: &[u8],
    kind: ObjectKind,
) -> Result<([u8; 24], [u8; TAG_LEN]), OpenError> {
    if bytes[0] != SEAL_VERSION {
        return Err(OpenError::Version { blob: id, found: bytes[0] });
    }
    if bytes[1] != kind as u8 {
        let found = ObjectKind::from_byte(bytes[1]).map_or("unknown object", ObjectKind::as_str);
        return Err(OpenError::Kind { blob: id, found, expected: kind.as_str() });
    }
    let nonce = bytes[2..HEADER_LEN].try_into().expect("header holds 24 nonce bytes");
    let tag = bytes[bytes.len() - TAG_LEN..].try_into().expect("blob ends with a 16-byte tag");
    Ok((nonce, tag))
}

fn decrypt(
    keys: &VaultKeys,
    id: BlobId,
    kind: ObjectKind,
    nonce: [u8; 24],
    tag: [u8; TAG_LEN],
    ciphertext: &mut [u8],
) -> Result<(), OpenError> {
    XChaCha20Poly1305::new(&Key::from(*keys.seal_key(kind)))
        .decrypt_inout_detached(&XNonce::from(nonce), &aad(kind), ciphertext.into(), &tag.into())
        .map_err(|_| OpenError::Authentication { blob: id })
}

fn aad(kind: ObjectKind) -> [u8; AAD_PREFIX.len() + 2] {
    let mut out = [0u8; AAD_PREFIX.len() + 2];
    out[..AAD_PREFIX.len()].copy_from_slice(AAD_PREFIX);
    out[AAD_PREFIX.len()] = SEAL_VERSION;
    out[AAD_PREFIX.len() + 1] = kind as u8;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Phrase, VaultSecret};
    use proptest::prelude::*;

    fn keys(seed: u8) -> VaultKeys {
        VaultKeys::from_secret(&VaultSecret::from_bytes([seed; 32]))
    }

    proptest! {
        #[test]
        fn round_trip_and_determinism(plain in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let k = keys(1);
            let a = seal(&k, ObjectKind::Chunk, &plain);
            let b = seal(&k, ObjectKind::Chunk, &plain);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.as_bytes().len(), plain.len() + HEADER_LEN + TAG_LEN);
            prop_assert_eq!(open(&k, &a, ObjectKind::Chunk).expect("opens"), plain.clone());
            let verified = SealedBlob::verify(a.id(), a.as_bytes().to_vec()).expect("verifies");
            prop_assert_eq!(verified.id(), a.id());
            // Another vault seals the same plaintext to other bytes and cannot open ours.
            let other = keys(2);
            prop_assert_ne!(seal(&other, ObjectKind::Chunk, &plain).id(), a.id());
            prop_assert!(open(&other, &a, ObjectKind::Chunk).is_err());
            // Opening in place gives the same plaintext, and refuses the same way.
            let opened = open_owned(&k, a.clone(), ObjectKind::Chunk).expect("opens in place");
            prop_assert_eq!(opened.as_bytes(), &plain[..]);
            prop_assert!(open_owned(&other, a.clone(), ObjectKind::Chunk).is_err());
            prop_assert!(open_owned(&k, a, ObjectKind::Tree).is_err());
        }

        #[test]
        fn any_flipped_byte_is_caught(plain in proptest::collection::vec(any::<u8>(), 1..512), at: prop::sample::Index, bit in 0u8..8) {
            let k = keys(1);
            let blob = seal(&k, ObjectKind::Tree, &plain);
            let mut bytes = blob.as_bytes().to_vec();
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let verify = SealedBlob::verify(blob.id(), bytes.clone());
            prop_assert!(
                matches!(verify, Err(VerifyError::AddressMismatch { .. })),
                "address check must catch it"
            );
            // Even with a fresh address, authentication catches it.
            let forged = SealedBlob::verify(BlobId::of(&bytes), bytes).expect("shape is fine");
            prop_assert!(open(&k, &forged, ObjectKind::Tree).is_err());
        }
    }

    #[test]
    fn kinds_are_separated() {
        let k = keys(3);
        let chunk = seal(&k, ObjectKind::Chunk, b"same bytes");
        let tree = seal(&k, ObjectKind::Tree, b"same bytes");
        assert_ne!(chunk.id(), tree.id());
        assert!(matches!(open(&k, &chunk, ObjectKind::Tree), Err(OpenError::Kind { .. })));
        assert_eq!(chunk.kind(), Some(ObjectKind::Chunk));
    }

    #[test]
    fn short_input_is_refused() {
        let err = SealedBlob::verify(BlobId::of(b"ab"), b"ab".to_vec()).expect_err("too short");
        assert!(matches!(err, VerifyError::Length { len: 2, .. }));
    }

    #[test]
    fn phrase_keys_seal() {
        let p = Phrase::from_entropy([5; 32]);
        let k = VaultKeys::from_secret(&p.vault_secret());
        let blob = seal(&k, ObjectKind::Snapshot, b"{}");
        assert_eq!(open(&k, &blob, ObjectKind::Snapshot).expect("opens"), b"{}");
    }
}
