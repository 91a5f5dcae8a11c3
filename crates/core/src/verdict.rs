//! Verdicts: what a device found when it last judged its own folders, signed by it, so that
//! every trusted device of the vault can show the whole vault.
//!
//! A verdict holds folder paths and reasons in words: it is passed to trusted devices only
//! (the transport is encrypted), never to a storage-only device. The highest sequence number
//! of a device wins, and a verdict whose signature does not verify changes nothing.

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::head::signature_bytes;
use crate::id::{DeviceId, FolderId, VaultId};
use crate::keys::{self, DeviceKey};
use crate::policy::State;

/// Format version of verdicts.
pub const VERDICT_VERSION: u8 = 1;
/// The most folders one verdict carries.
pub const FOLDERS_MAX: usize = 256;
/// The most reasons per folder.
pub const REASONS_MAX: usize = 16;
/// The longest text (a path, a policy, a reason).
pub const TEXT_MAX: usize = 1024;

const DOMAIN: &[u8] = b"triad/verdict/v1";

/// One folder as its device last judged it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderVerdict {
    /// The folder.
    pub folder: FolderId,
    /// Its path on its device.
    pub path: String,
    /// Its policy, in words.
    pub policy: String,
    /// When it was last backed up (seconds since the epoch), if ever.
    pub last_backup: Option<i64>,
    /// Files per state, from `Protected` to `Lost`.
    pub counts: [u64; 5],
    /// The worst state of its files.
    pub worst: State,
    /// Why files are not protected: (state, reason in words, how many files).
    pub reasons: Vec<(State, String, u64)>,
}

/// What a device found when it last judged its folders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The device.
    pub device: DeviceId,
    /// Grows with each new verdict of the device: the highest wins.
    pub seq: u64,
    /// When it judged (seconds since the epoch).
    pub evaluated: i64,
    /// Its folders.
    pub folders: Vec<FolderVerdict>,
}

/// A verdict and its signature by the device it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedVerdict {
    /// The verdict.
    pub verdict: Verdict,
    /// Signature by `verdict.device`.
    #[serde(with = "signature_bytes")]
    pub signature: [u8; 64],
}

/// A verdict was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerdictError {
    /// The bytes are not a verdict.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The signature is not the device's.
    #[error("the verdict of device {0} is not signed by it")]
    Signature(DeviceId),
    /// Too many folders or reasons, or a text too long.
    #[error("the verdict of device {0} is too large")]
    TooLarge(DeviceId),
}

impl Verdict {
    /// The worst state of every folder (`Protected` with no folder).
    pub fn worst(&self) -> State {
        self.folders.iter().map(|f| f.worst).max().unwrap_or(State::Protected)
    }

    fn too_large(&self) -> bool {
        self.folders.len() > FOLDERS_MAX
            || self.folders.iter().any(|f| {
                f.reasons.len() > REASONS_MAX
                    || f.path.len() > TEXT_MAX
                    || f.policy.len() > TEXT_MAX
                    || f.reasons.iter().any(|(_, r, _)| r.len() > TEXT_MAX)
            })
    }
}

impl SignedVerdict {
    fn message(vault: VaultId, verdict: &Verdict) -> Vec<u8> {
        codec::signed_message(DOMAIN, vault, VERDICT_VERSION, verdict)
    }

    /// Signs `verdict` with the key of the device it names, for the vault `vault`.
    ///
    /// # Panics
    /// If `key` is not the key of `verdict.device`.
    pub fn sign(key: &DeviceKey, vault: VaultId, verdict: Verdict) -> Self {
        assert_eq!(key.device_id(), verdict.device, "a device signs its own verdict only");
        let signature = key.sign(&Self::message(vault, &verdict));
        Self { verdict, signature }
    }

    /// The verdict as bytes.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(VERDICT_VERSION, self)
    }

    /// Decodes a verdict of the vault `vault` and checks its signature and size.
    pub fn decode(bytes: &[u8], vault: VaultId) -> Result<Self, VerdictError> {
        let signed: SignedVerdict = codec::decode("verdict", VERDICT_VERSION, bytes)?;
        let device = signed.verdict.device;
        if signed.verdict.too_large() {
            return Err(VerdictError::TooLarge(device));
        }
        let msg = Self::message(vault, &signed.verdict);
        if !keys::verify_signature(device.as_bytes(), &msg, &signed.signature) {
            return Err(VerdictError::Signature(device));
        }
        Ok(signed)
    }

    /// Whether this verdict should replace `held` (the one held for the same device, if any).
    pub fn newer_than(&self, held: Option<&SignedVerdict>) -> bool {
        held.is_none_or(|h| self.verdict.seq > h.verdict.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(device: DeviceId, seq: u64) -> Verdict {
        Verdict {
            device,
            seq,
            evaluated: 1_767_225_600,
            folders: vec![FolderVerdict {
                folder: FolderId::from_bytes([9; 16]),
                path: "/home/ana/Pictures/2026".into(),
                policy: "copies=3 media=2 offsite=1".into(),
                last_backup: Some(1_767_225_000),
                counts: [10, 2, 0, 1, 0],
                worst: State::AtRisk,
                reasons: vec![(State::AtRisk, "not backed up yet".into(), 1)],
            }],
        }
    }

    #[test]
    fn a_verdict_verifies_for_its_vault_and_device_only() {
        let vault = VaultId::from_bytes([1; 32]);
        let key = DeviceKey::from_bytes(&[7; 32]);
        let signed = SignedVerdict::sign(&key, vault, verdict(key.device_id(), 3));
        let back = SignedVerdict::decode(&signed.encode(), vault).expect("valid");
        assert_eq!(back, signed);
        assert_eq!(back.verdict.worst(), State::AtRisk);
        assert!(SignedVerdict::decode(&signed.encode(), VaultId::from_bytes([2; 32])).is_err());
        let mut kinder = signed.clone();
        kinder.verdict.folders[0].worst = State::Protected;
        assert!(matches!(
            SignedVerdict::decode(&kinder.encode(), vault),
            Err(VerdictError::Signature(_))
        ));
        let newer = SignedVerdict::sign(&key, vault, verdict(key.device_id(), 4));
        assert!(newer.newer_than(Some(&signed)) && !signed.newer_than(Some(&newer)));
    }
}
