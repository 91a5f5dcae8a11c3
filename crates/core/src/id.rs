//! Identifier types. Each thing has one id type; none is a bare byte array.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An id string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseIdError {
    /// The text is not hexadecimal of the right length.
    #[error("{kind} must be {len} hexadecimal characters, got {got:?}")]
    Format {
        /// Which id was being parsed.
        kind: &'static str,
        /// The expected number of hex characters.
        len: usize,
        /// What was given.
        got: String,
    },
}

macro_rules! byte_id {
    ($(#[$doc:meta])* $name:ident, $len:expr, $kind:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Length of the id in bytes.
            pub const LEN: usize = $len;

            /// Wraps raw bytes. Callers must know the bytes are this kind of id.
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// The first 8 bytes as 16 hex characters, for people.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..8])
            }

            /// The whole id as lower-case hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Builds the id from a byte slice of exactly the right length.
            pub fn try_from_slice(bytes: &[u8]) -> Option<Self> {
                <[u8; $len]>::try_from(bytes).ok().map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = || ParseIdError::Format { kind: $kind, len: $len * 2, got: s.to_owned() };
                let bytes = hex::decode(s).map_err(|_| err())?;
                Self::try_from_slice(&bytes).ok_or_else(err)
            }
        }
    };
}

byte_id!(
    /// Address of a blob: BLAKE3 of its sealed bytes. Anyone can check it without a key.
    BlobId, 32, "blob id"
);
byte_id!(
    /// Identity of a plaintext object: keyed BLAKE3 of its plaintext (vault key, per kind).
    ChunkId, 32, "chunk id"
);
byte_id!(
    /// A device: its ed25519 public key.
    DeviceId, 32, "device id"
);
byte_id!(
    /// A vault's public id, derived from the public half of its recovery key.
    VaultId, 32, "vault id"
);
byte_id!(
    /// A source folder, known to peers only by this opaque random id.
    FolderId, 16, "folder id"
);
byte_id!(
    /// A blob store, chosen at random when the store is created; written in its marker.
    StoreId, 16, "store id"
);

impl BlobId {
    /// The address of `sealed` bytes.
    pub fn of(sealed: &[u8]) -> Self {
        Self(*blake3::hash(sealed).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let id = BlobId::of(b"x");
        assert_eq!(id.to_string().parse::<BlobId>(), Ok(id));
        assert!("zz".parse::<BlobId>().is_err());
        assert!(hex::encode([1u8; 31]).parse::<BlobId>().is_err());
        assert_eq!(id.short().len(), 16);
    }
}
