//! Heads: signed records "folder F of device D is at snapshot S (sequence n)".
//!
//! A head is signed by the device key over a domain-separated message (`triad/head/v1`, the
//! vault id, the folder id, then the encoded head), so that a storage-only peer, which cannot
//! open snapshots, can still check who wrote a head and keep the highest sequence it has seen.

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::id::{BlobId, DeviceId, FolderId, VaultId};
use crate::keys::{self, DeviceKey};
use crate::time::Timestamp;

/// Format version of signed heads.
pub const HEAD_VERSION: u8 = 1;

const DOMAIN: &[u8] = b"triad/head/v1";

/// The content of a head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The vault.
    pub vault: VaultId,
    /// The device that owns the folder and signs the head.
    pub device: DeviceId,
    /// The folder.
    pub folder: FolderId,
    /// The snapshot's position in the folder's history; only ever grows.
    pub sequence: u64,
    /// The snapshot blob.
    pub snapshot: BlobId,
    /// When the snapshot was taken.
    pub time: Timestamp,
}

/// A head and its device signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHead {
    /// The head.
    pub head: Head,
    /// ed25519 signature by `head.device` over the domain-separated head.
    #[serde(with = "signature_bytes")]
    pub signature: [u8; 64],
}

/// A signed head could not be accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// The bytes are not a head.
    #[error("malformed head")]
    Decode(#[from] DecodeError),
    /// The signature does not verify under the device key the head names.
    #[error("head for folder {folder} claims device {device} but its signature does not verify")]
    Signature {
        /// The folder.
        folder: FolderId,
        /// The claimed device.
        device: DeviceId,
    },
    /// The head belongs to another vault.
    #[error("head belongs to vault {found}, not {expected}")]
    Vault {
        /// The vault named in the head.
        found: VaultId,
        /// The vault expected.
        expected: VaultId,
    },
}

impl Head {
    fn message(&self) -> Vec<u8> {
        let mut msg = Vec::with_capacity(128);
        msg.extend_from_slice(DOMAIN);
        msg.extend_from_slice(self.vault.as_bytes());
        msg.extend_from_slice(self.folder.as_bytes());
        msg.extend_from_slice(&codec::encode(HEAD_VERSION, self));
        msg
    }

    /// Signs the head with the device key.
    ///
    /// # Panics
    /// If `key` is not the key of `self.device`: signing another device's head is a bug.
    pub fn sign(self, key: &DeviceKey) -> SignedHead {
        assert_eq!(key.device_id(), self.device, "a device signs only its own heads");
        let signature = key.sign(&self.message());
        SignedHead { head: self, signature }
    }
}

impl SignedHead {
    /// Checks the signature against the device the head names, and the vault.
    pub fn verify(&self, vault: VaultId) -> Result<(), HeadError> {
        if self.head.vault != vault {
            return Err(HeadError::Vault { found: self.head.vault, expected: vault });
        }
        if !keys::verify_signature(
            self.head.device.as_bytes(),
            &self.head.message(),
            &self.signature,
        ) {
            return Err(HeadError::Signature {
                folder: self.head.folder,
                device: self.head.device,
            });
        }
        Ok(())
    }

    /// Encodes the signed head as a record.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(HEAD_VERSION, self)
    }

    /// Decodes a signed head and verifies it for `vault`.
    pub fn decode(bytes: &[u8], vault: VaultId) -> Result<Self, HeadError> {
        let head: SignedHead = codec::decode("head", HEAD_VERSION, bytes)?;
        head.verify(vault)?;
        Ok(head)
    }
}

/// Serde for 64-byte signatures (serde derives arrays only up to 32).
pub(crate) mod signature_bytes {
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(sig)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let bytes: Vec<u8> = serde_bytes_vec(d)?;
        <[u8; 64]>::try_from(bytes.as_slice())
            .map_err(|_| serde::de::Error::invalid_length(bytes.len(), &"64 signature bytes"))
    }

    fn serde_bytes_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(key: &DeviceKey) -> Head {
        Head {
            vault: VaultId::from_bytes([1; 32]),
            device: key.device_id(),
            folder: FolderId::from_bytes([2; 16]),
            sequence: 5,
            snapshot: BlobId::of(b"snap"),
            time: Timestamp::new(1_700_000_000, 0),
        }
    }

    #[test]
    fn sign_encode_decode_verify() {
        let key = DeviceKey::from_bytes(&[3; 32]);
        let signed = head(&key).sign(&key);
        let bytes = signed.encode();
        let back = SignedHead::decode(&bytes, VaultId::from_bytes([1; 32])).expect("valid");
        assert_eq!(back, signed);
        assert!(matches!(
            SignedHead::decode(&bytes, VaultId::from_bytes([9; 32])),
            Err(HeadError::Vault { .. })
        ));
    }

    #[test]
    fn tampered_head_is_refused() {
        let key = DeviceKey::from_bytes(&[3; 32]);
        let mut signed = head(&key).sign(&key);
        signed.head.sequence += 1;
        assert!(matches!(
            signed.verify(VaultId::from_bytes([1; 32])),
            Err(HeadError::Signature { .. })
        ));
    }
}
