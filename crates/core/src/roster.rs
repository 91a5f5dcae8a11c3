//! The roster: which devices belong to the vault, signed.
//!
//! The roster pins the vault id and the public half of the vault's recovery key. Each entry
//! admits one device with its name, site and role, and is signed either by the recovery key
//! (the first device, and any device that proved the phrase) or by a trusted device already
//! on the roster. Every store keeps a copy, so any one store is enough to start a recovery.

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::head::signature_bytes;
use crate::id::{DeviceId, VaultId};
use crate::keys::{self, DeviceKey, RecoveryKey};

/// Format version of rosters. Version 1 had no removals; it is still read.
pub const ROSTER_VERSION: u8 = 2;

const ENTRY_DOMAIN: &[u8] = b"triad/roster-entry/v1";
const REMOVAL_DOMAIN: &[u8] = b"triad/roster-removal/v1";
/// The record version inside the signed message of entries and removals (unchanged since v1).
const SIGNED_RECORD_VERSION: u8 = 1;

/// What a device may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Holds the vault secret and can read.
    Trusted,
    /// Holds ciphertext only.
    StorageOnly,
}

/// Who signed a roster entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signer {
    /// The vault's recovery key.
    Recovery,
    /// A trusted device already on the roster.
    Device(DeviceId),
}

/// One device admitted to the vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The device.
    pub device: DeviceId,
    /// Its name ("laptop").
    pub name: String,
    /// Its site ("home").
    pub site: String,
    /// Its role.
    pub role: Role,
    /// Who admitted it.
    pub signer: Signer,
}

/// An entry and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEntry {
    /// The entry.
    pub entry: Entry,
    /// Signature by `entry.signer`.
    #[serde(with = "signature_bytes")]
    pub signature: [u8; 64],
}

/// A device removed from the vault, for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// The device.
    pub device: DeviceId,
    /// Who removed it: the recovery key or a trusted device on the roster.
    pub signer: Signer,
}

/// A removal and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRemoval {
    /// The removal.
    pub removal: Removal,
    /// Signature by `removal.signer`.
    #[serde(with = "signature_bytes")]
    pub signature: [u8; 64],
}

/// The vault's roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// The vault id (derived from `recovery_public`).
    pub vault: VaultId,
    /// The public half of the recovery key.
    pub recovery_public: [u8; 32],
    /// The entries, in the order they were added.
    pub entries: Vec<SignedEntry>,
    /// Devices removed for good, in the order they were removed.
    pub removed: Vec<SignedRemoval>,
}

/// A roster of version 1, before removals.
#[derive(Deserialize)]
struct RosterV1 {
    vault: VaultId,
    recovery_public: [u8; 32],
    entries: Vec<SignedEntry>,
}

/// A roster could not be accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RosterError {
    /// The bytes are not a roster.
    #[error("malformed roster")]
    Decode(#[from] DecodeError),
    /// The vault id does not match the recovery key.
    #[error("roster names vault {vault} but its recovery key defines another vault")]
    VaultMismatch {
        /// The vault named.
        vault: VaultId,
    },
    /// An entry's signature does not verify, or its signer was not trusted before it.
    #[error(
        "roster entry for device {device} is not signed by the recovery key or a trusted device"
    )]
    Signature {
        /// The device the entry admits.
        device: DeviceId,
    },
}

impl Roster {
    /// A new roster for the vault of `recovery`, with no devices.
    pub fn new(recovery: &RecoveryKey) -> Self {
        Self {
            vault: recovery.vault_id(),
            recovery_public: recovery.public(),
            entries: Vec::new(),
            removed: Vec::new(),
        }
    }

    fn message(vault: VaultId, entry: &Entry) -> Vec<u8> {
        let mut msg = ENTRY_DOMAIN.to_vec();
        msg.extend_from_slice(vault.as_bytes());
        msg.extend_from_slice(&codec::encode(SIGNED_RECORD_VERSION, entry));
        msg
    }

    fn removal_message(vault: VaultId, removal: &Removal) -> Vec<u8> {
        let mut msg = REMOVAL_DOMAIN.to_vec();
        msg.extend_from_slice(vault.as_bytes());
        msg.extend_from_slice(&codec::encode(SIGNED_RECORD_VERSION, removal));
        msg
    }

    /// Removes a device for good, signed by a trusted device on the roster. Its entries stay
    /// (they are history) but it is no longer a device of the vault.
    pub fn remove_with_device(&mut self, signer: &DeviceKey, device: DeviceId) {
        let removal = Removal { device, signer: Signer::Device(signer.device_id()) };
        let signature = signer.sign(&Self::removal_message(self.vault, &removal));
        self.removed.push(SignedRemoval { removal, signature });
    }

    /// Whether `device` was removed.
    pub fn is_removed(&self, device: DeviceId) -> bool {
        self.removed.iter().any(|r| r.removal.device == device)
    }

    /// Admits a device, signed by the recovery key. Replaces nothing: an entry for a device
    /// already present is added again with the new details (the latest entry wins).
    pub fn admit_with_recovery(&mut self, recovery: &RecoveryKey, mut entry: Entry) {
        assert_eq!(recovery.vault_id(), self.vault, "recovery key of another vault");
        entry.signer = Signer::Recovery;
        let signature = recovery.sign(&Self::message(self.vault, &entry));
        self.entries.push(SignedEntry { entry, signature });
    }

    /// Admits a device, signed by a trusted device already on the roster.
    pub fn admit_with_device(&mut self, signer: &DeviceKey, mut entry: Entry) {
        entry.signer = Signer::Device(signer.device_id());
        let signature = signer.sign(&Self::message(self.vault, &entry));
        self.entries.push(SignedEntry { entry, signature });
    }

    /// Checks the vault id and every signature, in order.
    pub fn verify(&self) -> Result<(), RosterError> {
        if keys::vault_id_of(&self.recovery_public) != self.vault {
            return Err(RosterError::VaultMismatch { vault: self.vault });
        }
        let mut trusted: Vec<DeviceId> = Vec::new();
        for signed in &self.entries {
            let entry = &signed.entry;
            let msg = Self::message(self.vault, entry);
            if !self.signed_by(entry.signer, &trusted, &msg, &signed.signature) {
                return Err(RosterError::Signature { device: entry.device });
            }
            // The latest entry decides: a device entered again as storage-only signs no more.
            if entry.role == Role::Trusted {
                trusted.push(entry.device);
            } else {
                trusted.retain(|d| *d != entry.device);
            }
        }
        for signed in &self.removed {
            let removal = &signed.removal;
            let msg = Self::removal_message(self.vault, removal);
            if !self.signed_by(removal.signer, &trusted, &msg, &signed.signature) {
                return Err(RosterError::Signature { device: removal.device });
            }
        }
        Ok(())
    }

    /// Whether `signature` over `msg` is by `signer`: the recovery key, or a device in
    /// `trusted`.
    fn signed_by(
        &self,
        signer: Signer,
        trusted: &[DeviceId],
        msg: &[u8],
        signature: &[u8; 64],
    ) -> bool {
        match signer {
            Signer::Recovery => keys::verify_signature(&self.recovery_public, msg, signature),
            Signer::Device(by) => {
                trusted.contains(&by) && keys::verify_signature(by.as_bytes(), msg, signature)
            }
        }
    }

    /// The latest entry for `device`, if it is on the roster (and was not removed).
    pub fn device(&self, device: DeviceId) -> Option<&Entry> {
        if self.is_removed(device) {
            return None;
        }
        self.entries.iter().rev().map(|s| &s.entry).find(|e| e.device == device)
    }

    /// The latest entry of every device, in the order they were first added.
    pub fn devices(&self) -> Vec<&Entry> {
        let mut seen: Vec<DeviceId> = Vec::new();
        for s in &self.entries {
            if !seen.contains(&s.entry.device) {
                seen.push(s.entry.device);
            }
        }
        seen.into_iter().filter_map(|d| self.device(d)).collect()
    }

    /// Takes the entries of `other` (the same vault's roster as another device keeps it) that
    /// this one lacks, in their order. Returns whether anything was added; on an error (another
    /// vault, or an entry that does not verify here) nothing changes.
    pub fn merge(&mut self, other: &Roster) -> Result<bool, RosterError> {
        if other.vault != self.vault || other.recovery_public != self.recovery_public {
            return Err(RosterError::VaultMismatch { vault: other.vault });
        }
        // What this roster already knows was removed signs nothing new here (a stolen device
        // that was removed cannot admit keys of its own to a device that knows).
        let signed_by_removed = |signer: &Signer| match signer {
            Signer::Device(by) => self.is_removed(*by),
            Signer::Recovery => false,
        };
        let mut merged = self.clone();
        for entry in &other.entries {
            if !merged.entries.contains(entry) {
                if signed_by_removed(&entry.entry.signer) {
                    return Err(RosterError::Signature { device: entry.entry.device });
                }
                merged.entries.push(entry.clone());
            }
        }
        for removal in &other.removed {
            if !merged.removed.contains(removal) {
                if signed_by_removed(&removal.removal.signer) {
                    return Err(RosterError::Signature { device: removal.removal.device });
                }
                merged.removed.push(removal.clone());
            }
        }
        if merged.entries.len() == self.entries.len() && merged.removed.len() == self.removed.len()
        {
            return Ok(false);
        }
        merged.verify()?;
        *self = merged;
        Ok(true)
    }

    /// Encodes the roster as a record.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(ROSTER_VERSION, self)
    }

    /// Decodes and verifies a roster (version 2, or version 1 read as one without removals).
    pub fn decode(bytes: &[u8]) -> Result<Self, RosterError> {
        let roster: Roster = if bytes.first() == Some(&1) {
            let v1: RosterV1 = codec::decode("roster", 1, bytes)?;
            Roster {
                vault: v1.vault,
                recovery_public: v1.recovery_public,
                entries: v1.entries,
                removed: Vec::new(),
            }
        } else {
            codec::decode("roster", ROSTER_VERSION, bytes)?
        };
        roster.verify()?;
        Ok(roster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Phrase;

    fn entry(key: &DeviceKey, role: Role) -> Entry {
        Entry {
            device: key.device_id(),
            name: "laptop".into(),
            site: "home".into(),
            role,
            signer: Signer::Recovery,
        }
    }

    #[test]
    fn a_removed_device_is_gone_for_good_and_a_forged_removal_is_refused() {
        let phrase = Phrase::from_entropy([8; 32]);
        let recovery = phrase.recovery_key();
        let first = DeviceKey::from_bytes(&[1; 32]);
        let second = DeviceKey::from_bytes(&[2; 32]);
        let mut roster = Roster::new(&recovery);
        roster.admit_with_recovery(&recovery, entry(&first, Role::Trusted));
        roster.admit_with_device(&first, entry(&second, Role::StorageOnly));
        let before = roster.clone();
        roster.remove_with_device(&first, second.device_id());
        let back = Roster::decode(&roster.encode()).expect("verifies");
        assert!(back.device(second.device_id()).is_none());
        assert_eq!(back.devices().len(), 1);
        // Merging the older roster does not bring it back.
        let mut merged = back.clone();
        assert!(!merged.merge(&before).expect("merges"));
        assert!(merged.is_removed(second.device_id()));
        // A device that knows of the removal takes nothing new the removed device signed.
        let mut stolen = before.clone();
        stolen.admit_with_device(&first, entry(&DeviceKey::from_bytes(&[5; 32]), Role::Trusted));
        let mut informed = back.clone();
        informed.remove_with_device(&first, first.device_id());
        assert!(informed.merge(&stolen).is_err());
        // Entered again as storage-only, a device signs no more.
        let mut demoted = Roster::new(&recovery);
        demoted.admit_with_recovery(&recovery, entry(&first, Role::Trusted));
        demoted.admit_with_recovery(&recovery, entry(&first, Role::StorageOnly));
        demoted.admit_with_device(&first, entry(&second, Role::Trusted));
        assert!(Roster::decode(&demoted.encode()).is_err());
        // A removal signed by a device that is not trusted does not verify.
        let mut forged = before.clone();
        forged.remove_with_device(&second, first.device_id());
        assert!(Roster::decode(&forged.encode()).is_err());
    }

    #[test]
    fn merging_takes_what_is_missing_and_refuses_forgeries() {
        let phrase = Phrase::from_entropy([8; 32]);
        let recovery = phrase.recovery_key();
        let first = DeviceKey::from_bytes(&[1; 32]);
        let mut a = Roster::new(&recovery);
        a.admit_with_recovery(&recovery, entry(&first, Role::Trusted));
        let mut b = a.clone();
        b.admit_with_device(&first, entry(&DeviceKey::from_bytes(&[2; 32]), Role::StorageOnly));
        assert!(a.merge(&b).expect("merges"));
        assert_eq!(a, b);
        assert!(!a.merge(&b).expect("nothing new"));

        // An entry signed by a device that is not trusted on the roster is refused whole.
        let mut forged = b.clone();
        forged.admit_with_device(
            &DeviceKey::from_bytes(&[3; 32]),
            entry(&DeviceKey::from_bytes(&[4; 32]), Role::Trusted),
        );
        assert!(a.merge(&forged).is_err());
        assert_eq!(a, b);

        let other = Roster::new(&Phrase::from_entropy([9; 32]).recovery_key());
        assert!(a.merge(&other).is_err());
    }

    #[test]
    fn recovery_and_device_signed_entries_verify() {
        let phrase = Phrase::from_entropy([8; 32]);
        let recovery = phrase.recovery_key();
        let laptop = DeviceKey::from_bytes(&[1; 32]);
        let pi = DeviceKey::from_bytes(&[2; 32]);
        let mut roster = Roster::new(&recovery);
        roster.admit_with_recovery(&recovery, entry(&laptop, Role::Trusted));
        roster.admit_with_device(&laptop, entry(&pi, Role::StorageOnly));
        let back = Roster::decode(&roster.encode()).expect("valid roster");
        assert_eq!(back.devices().len(), 2);
        assert_eq!(back.vault, phrase.vault_id());
    }

    #[test]
    fn untrusted_signer_is_refused() {
        let recovery = Phrase::from_entropy([8; 32]).recovery_key();
        let outsider = DeviceKey::from_bytes(&[5; 32]);
        let mut roster = Roster::new(&recovery);
        roster.admit_with_device(&outsider, entry(&outsider, Role::Trusted));
        assert!(matches!(roster.verify(), Err(RosterError::Signature { .. })));
    }
}
