//! The one codec. Every record triad writes to disk or sends goes through here.
//!
//! A record is one format-version byte followed by the bincode 2 encoding of the value
//! (standard configuration: little-endian, variable-length integers). bincode is pinned to
//! 2.0.1 and used nowhere else, so a move to another encoding touches only this module.
//! The exact byte layout is specified in `proto/README.md` and pinned by golden vectors.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The most bytes one record may take, whatever its kind. Peer and disk input larger than
/// this is refused before decoding.
pub const RECORD_LEN_MAX: usize = 32 * 1024 * 1024;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<RECORD_LEN_MAX>,
>;

const CONFIG: Config = bincode::config::standard().with_limit::<RECORD_LEN_MAX>();

/// A record could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input was empty: not even a version byte.
    #[error("empty record")]
    Empty,
    /// The record was written by a format version this build does not read.
    #[error("unsupported {what} format version {found} (this build reads version {expected})")]
    Version {
        /// What kind of record.
        what: &'static str,
        /// The version byte found.
        found: u8,
        /// The version this build reads.
        expected: u8,
    },
    /// The record is larger than [`RECORD_LEN_MAX`].
    #[error("record of {len} bytes is larger than the limit of {RECORD_LEN_MAX}")]
    TooLarge {
        /// The record's length.
        len: usize,
    },
    /// The bytes after the version byte are not a valid encoding.
    #[error("malformed {what} record")]
    Malformed {
        /// What kind of record.
        what: &'static str,
        /// The decoder's own complaint.
        #[source]
        source: bincode::error::DecodeError,
    },
    /// The value ended before the input did.
    #[error("{extra} trailing bytes after a {what} record")]
    Trailing {
        /// What kind of record.
        what: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
}

/// Encodes `value` as a record: the version byte, then the value.
pub fn encode<T: Serialize>(version: u8, value: &T) -> Vec<u8> {
    let mut out = vec![version];
    bincode::serde::encode_into_std_write(value, &mut out, CONFIG)
        .expect("serde types in triad always encode and a Vec never fails to grow");
    out
}

/// What a key signs for a record of a vault: a domain string that names the kind, the vault
/// id, then the record (version byte and value), so that a signature proves nothing about
/// another kind, another vault or another version.
pub fn signed_message<T: Serialize>(
    domain: &[u8],
    vault: crate::VaultId,
    version: u8,
    value: &T,
) -> Vec<u8> {
    let mut msg = domain.to_vec();
    msg.extend_from_slice(vault.as_bytes());
    msg.extend_from_slice(&encode(version, value));
    msg
}

/// Decodes a record of kind `what` written with format `version`. Never panics on input.
pub fn decode<T: DeserializeOwned>(
    what: &'static str,
    version: u8,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    let (&found, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if bytes.len() > RECORD_LEN_MAX {
        return Err(DecodeError::TooLarge { len: bytes.len() });
    }
    if found != version {
        return Err(DecodeError::Version { what, found, expected: version });
    }
    let (value, used) = bincode::serde::decode_from_slice(body, CONFIG)
        .map_err(|source| DecodeError::Malformed { what, source })?;
    if used != body.len() {
        return Err(DecodeError::Trailing { what, extra: body.len() - used });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        a: u64,
        b: Vec<u8>,
        c: Option<String>,
    }

    proptest! {
        #[test]
        fn round_trip(a: u64, b: Vec<u8>, c: Option<String>) {
            let value = Sample { a, b, c };
            let bytes = encode(3, &value);
            prop_assert_eq!(bytes[0], 3);
            let back: Sample = decode("sample", 3, &bytes).expect("round trip");
            prop_assert_eq!(back, value);
        }

        #[test]
        fn garbage_never_panics(bytes: Vec<u8>) {
            let _ = decode::<Sample>("sample", 1, &bytes);
        }
    }

    #[test]
    fn rejects_wrong_version_and_trailing_bytes() {
        let mut bytes = encode(1, &Sample { a: 1, b: vec![2], c: None });
        assert!(matches!(
            decode::<Sample>("sample", 2, &bytes),
            Err(DecodeError::Version { found: 1, expected: 2, .. })
        ));
        bytes.push(0);
        assert!(matches!(
            decode::<Sample>("sample", 1, &bytes),
            Err(DecodeError::Trailing { extra: 1, .. })
        ));
        assert!(matches!(decode::<Sample>("sample", 1, &[]), Err(DecodeError::Empty)));
    }

    #[test]
    fn huge_length_prefix_is_refused_without_allocating() {
        // version 1, then a varint length of u64::MAX for the Vec field after `a`.
        let bytes = [1u8, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(decode::<Sample>("sample", 1, &bytes).is_err());
    }
}
