//! Address records: where a device says it can be reached, signed by its device key.
//!
//! Each device signs the addresses it listens on (and those others observed for it) with a
//! sequence number that only grows. Devices pass every record they hold to every device they
//! meet, so a device learns another's address from any third device. A record is taken only
//! if its signature verifies against the device it names and its sequence number is newer than
//! the one held: an unsigned, forged or stale record changes nothing.

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::head::signature_bytes;
use crate::id::{DeviceId, VaultId};
use crate::keys::{self, DeviceKey};

/// Format version of address records.
pub const ADDRESS_VERSION: u8 = 1;
/// The most addresses one record carries.
pub const ADDRESSES_MAX: usize = 16;
/// The longest address (a multiaddress as text).
pub const ADDRESS_LEN_MAX: usize = 256;

const DOMAIN: &[u8] = b"triad/address-record/v1";

/// Where one device can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressRecord {
    /// The device.
    pub device: DeviceId,
    /// Grows with each new record of the device: the highest wins.
    pub seq: u64,
    /// Its addresses (multiaddresses as text), the best first.
    pub addrs: Vec<String>,
}

/// An address record and its signature by the device it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedAddressRecord {
    /// The record.
    pub record: AddressRecord,
    /// Signature by `record.device`.
    #[serde(with = "signature_bytes")]
    pub signature: [u8; 64],
}

/// An address record was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The bytes are not a record.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The signature is not the device's.
    #[error("the address record of device {0} is not signed by it")]
    Signature(DeviceId),
    /// Too many addresses, or one too long.
    #[error("the address record of device {0} has too many or too long addresses")]
    TooLarge(DeviceId),
}

impl SignedAddressRecord {
    fn message(vault: VaultId, record: &AddressRecord) -> Vec<u8> {
        codec::signed_message(DOMAIN, vault, ADDRESS_VERSION, record)
    }

    /// Signs `record` with the key of the device it names, for the vault `vault`.
    ///
    /// # Panics
    /// If `key` is not the key of `record.device`.
    pub fn sign(key: &DeviceKey, vault: VaultId, record: AddressRecord) -> Self {
        assert_eq!(key.device_id(), record.device, "a device signs its own addresses only");
        let signature = key.sign(&Self::message(vault, &record));
        Self { record, signature }
    }

    /// The record as bytes.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(ADDRESS_VERSION, self)
    }

    /// Decodes a record of the vault `vault` and checks its signature and size.
    pub fn decode(bytes: &[u8], vault: VaultId) -> Result<Self, AddressError> {
        let signed: SignedAddressRecord = codec::decode("address record", ADDRESS_VERSION, bytes)?;
        let device = signed.record.device;
        if signed.record.addrs.len() > ADDRESSES_MAX
            || signed.record.addrs.iter().any(|a| a.len() > ADDRESS_LEN_MAX)
        {
            return Err(AddressError::TooLarge(device));
        }
        let msg = Self::message(vault, &signed.record);
        if !keys::verify_signature(device.as_bytes(), &msg, &signed.signature) {
            return Err(AddressError::Signature(device));
        }
        Ok(signed)
    }

    /// Whether this record should replace `held` (the one held for the same device, if any).
    pub fn newer_than(&self, held: Option<&SignedAddressRecord>) -> bool {
        held.is_none_or(|h| self.record.seq > h.record.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> DeviceKey {
        DeviceKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_record_verifies_for_its_vault_and_device_only() {
        let vault = VaultId::from_bytes([1; 32]);
        let k = key(7);
        let record =
            AddressRecord { device: k.device_id(), seq: 5, addrs: vec!["/ip4/1.2.3.4".into()] };
        let signed = SignedAddressRecord::sign(&k, vault, record.clone());
        let bytes = signed.encode();
        assert_eq!(SignedAddressRecord::decode(&bytes, vault).expect("valid"), signed);
        let other_vault = VaultId::from_bytes([2; 32]);
        assert!(matches!(
            SignedAddressRecord::decode(&bytes, other_vault),
            Err(AddressError::Signature(_))
        ));
        // Another device's name on it: not signed by that device.
        let mut forged = signed.clone();
        forged.record.device = key(8).device_id();
        assert!(matches!(
            SignedAddressRecord::decode(&forged.encode(), vault),
            Err(AddressError::Signature(_))
        ));
        // A changed address breaks the signature.
        let mut moved = signed.clone();
        moved.record.addrs[0] = "/ip4/6.6.6.6".into();
        assert!(SignedAddressRecord::decode(&moved.encode(), vault).is_err());
    }

    #[test]
    fn the_highest_sequence_wins() {
        let vault = VaultId::from_bytes([1; 32]);
        let k = key(7);
        let at = |seq| {
            SignedAddressRecord::sign(
                &k,
                vault,
                AddressRecord { device: k.device_id(), seq, addrs: Vec::new() },
            )
        };
        assert!(at(2).newer_than(None));
        assert!(at(2).newer_than(Some(&at(1))));
        assert!(!at(2).newer_than(Some(&at(2))));
        assert!(!at(1).newer_than(Some(&at(2))));
    }

    #[test]
    fn oversized_records_are_refused() {
        let vault = VaultId::from_bytes([1; 32]);
        let k = key(7);
        let record = AddressRecord {
            device: k.device_id(),
            seq: 1,
            addrs: vec!["/ip4/1.2.3.4".into(); ADDRESSES_MAX + 1],
        };
        let signed = SignedAddressRecord::sign(&k, vault, record);
        assert!(matches!(
            SignedAddressRecord::decode(&signed.encode(), vault),
            Err(AddressError::TooLarge(_))
        ));
    }
}
