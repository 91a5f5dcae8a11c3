//! The roster: which devices belong to the vault, signed.
//!
//! The roster pins the vault id and the public half of the vault's recovery key. It is a
//! causal log of changes: each change admits one device (with its name, site and role) or
//! removes one for good, names the changes its signer knew of (its *parents*, by hash), and
//! is signed either by the recovery key (the first device, and any device that proved the
//! phrase) or by a device that was trusted in the changes it follows. Every store keeps a
//! copy, so any one store is enough to start a recovery.
//!
//! What a roster says is a function of its set of changes alone, so devices that hear of the
//! same changes in any order agree:
//!
//! - A change counts if its signer was trusted in the changes before it (its ancestors).
//! - A removal that counts is final: the device is out for good, everywhere.
//! - Whatever a removed device signed that the removal does not follow (it signed after, or
//!   the remover had not heard of it) has no effect, and nor has anything signed by a device
//!   that only such a change admitted.
//! - A device's latest admission decides its name, site and role; of two admissions that do
//!   not follow one another, the one with more ancestors wins, then storage-only over trusted,
//!   then the smaller hash.
//!
//! Rosters of format 1 and 2 (ordered lists of entries and removals, without parents) are
//! still read: their entries and removals become the roster's *legacy* part, checked by the
//! old rules in their order, and every change of format 3 follows all of it.

use std::collections::{BTreeSet, BinaryHeap, HashMap};

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::head::signature_bytes;
use crate::id::{DeviceId, VaultId};
use crate::keys::{self, DeviceKey, RecoveryKey};

/// Format version of rosters. Version 1 had no removals, version 2 no parents; both are
/// still read.
pub const ROSTER_VERSION: u8 = 3;

/// The most changes a roster holds. A vault of ten devices that pair, rename and remove for
/// decades stays far below; a roster above it is refused.
pub const ROSTER_CHANGES_MAX: usize = 256;

/// The most parents one change names.
pub const PARENTS_MAX: usize = 64;

const ENTRY_DOMAIN: &[u8] = b"triad/roster-entry/v1";
const REMOVAL_DOMAIN: &[u8] = b"triad/roster-removal/v1";
const CHANGE_DOMAIN: &[u8] = b"triad/roster-change/v3";
/// The record version inside a change's signed message and hash: 3, and it stays 3 if the
/// roster's own format changes, so that no change needs signing again.
const CHANGE_RECORD_VERSION: u8 = 3;
/// The record version inside the signed message of legacy entries and removals.
const SIGNED_RECORD_VERSION: u8 = 1;

/// What a device may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Holds the vault secret and can read.
    Trusted,
    /// Holds ciphertext only.
    StorageOnly,
}

/// Who signed a roster change.
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

/// A legacy (format 1 or 2) entry and its signature.
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

/// A legacy (format 2) removal and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRemoval {
    /// The removal.
    pub removal: Removal,
    /// Signature by `removal.signer`.
    #[serde(with = "signature_bytes")]
    pub signature: [u8; 64],
}

/// The hash of a signed change: how later changes name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChangeId(pub [u8; 32]);

impl ChangeId {
    /// The first bytes in hex, for logs.
    pub fn short(&self) -> String {
        self.0[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What a change does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum What {
    /// Admits a device, or enters it again with new details.
    Admit(Entry),
    /// Removes a device for good.
    Remove(Removal),
}

/// One change of the roster, before its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The changes the signer knew of and this one follows: the heads of its roster, ascending.
    pub parents: Vec<ChangeId>,
    /// What it does.
    pub what: What,
}

impl Change {
    /// Who signs it.
    pub fn signer(&self) -> Signer {
        match &self.what {
            What::Admit(entry) => entry.signer,
            What::Remove(removal) => removal.signer,
        }
    }
}

/// A change and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedChange {
    /// The change.
    pub change: Change,
    /// Signature by the change's signer over the domain "triad/roster-change/v3", the vault id
    /// and the encoded change.
    #[serde(with = "signature_bytes")]
    pub signature: [u8; 64],
}

impl SignedChange {
    /// What the signer signs: the domain, the vault and the change.
    fn message(vault: VaultId, change: &Change) -> Vec<u8> {
        codec::signed_message(CHANGE_DOMAIN, vault, CHANGE_RECORD_VERSION, change)
    }

    /// Signs `change` with the recovery key (its signer must be [`Signer::Recovery`]).
    pub fn by_recovery(recovery: &RecoveryKey, change: Change) -> Self {
        assert_eq!(change.signer(), Signer::Recovery, "a change signed by another");
        let signature = recovery.sign(&Self::message(recovery.vault_id(), &change));
        Self { change, signature }
    }

    /// Signs `change` for `vault` with a device's key (its signer must be that device).
    pub fn by_device(vault: VaultId, key: &DeviceKey, change: Change) -> Self {
        assert_eq!(change.signer(), Signer::Device(key.device_id()), "a change signed by another");
        let signature = key.sign(&Self::message(vault, &change));
        Self { change, signature }
    }

    /// The change's hash, for `vault`.
    pub fn id(&self, vault: VaultId) -> ChangeId {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&Self::message(vault, &self.change));
        hasher.update(&self.signature);
        ChangeId(*hasher.finalize().as_bytes())
    }

    /// Encodes the change alone (as a recovering device sends it).
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(CHANGE_RECORD_VERSION, self)
    }

    /// Decodes a change alone; its signature is checked when a roster takes it.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode("roster change", CHANGE_RECORD_VERSION, bytes)
    }
}

/// What the roster held before format 3, checked by the old rules in its order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Legacy {
    /// The entries, in the order they were added.
    pub entries: Vec<SignedEntry>,
    /// Devices removed for good, in the order they were removed.
    pub removed: Vec<SignedRemoval>,
}

/// The vault's roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// The vault id (derived from `recovery_public`).
    pub vault: VaultId,
    /// The public half of the recovery key.
    pub recovery_public: [u8; 32],
    /// What was added before format 3; every change follows it.
    pub legacy: Legacy,
    /// The changes, parents before children (in one canonical order: of the changes whose
    /// parents are all listed, the smallest hash first).
    pub changes: Vec<SignedChange>,
    /// What the changes say, worked out when the roster was checked.
    #[serde(skip)]
    state: State,
}

/// What a checked roster says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    /// The latest entry of every device on the roster, in the order they were first added.
    devices: Vec<Entry>,
    /// Devices removed for good.
    removed: Vec<DeviceId>,
    /// The changes that no other change follows, ascending.
    heads: Vec<ChangeId>,
}

/// A roster of version 1, before removals.
#[derive(Deserialize)]
struct RosterV1 {
    vault: VaultId,
    recovery_public: [u8; 32],
    entries: Vec<SignedEntry>,
}

/// A roster of version 2, before parents.
#[derive(Deserialize)]
struct RosterV2 {
    vault: VaultId,
    recovery_public: [u8; 32],
    entries: Vec<SignedEntry>,
    removed: Vec<SignedRemoval>,
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
    /// A change's signature does not verify, or its signer was not trusted before it.
    #[error(
        "roster entry for device {device} is not signed by the recovery key or a trusted device"
    )]
    Signature {
        /// The device the change admits or removes.
        device: DeviceId,
    },
    /// A change follows one the roster does not hold, names its parents out of order, or
    /// comes twice.
    #[error("roster change {change} follows changes that are not in the roster")]
    Parents {
        /// The change, by the first bytes of its hash.
        change: String,
    },
    /// Format 2 entries or removals that this roster, already grown by changes, does not
    /// hold: they come from a device that has not moved to format 3, and could be signed by
    /// a device a change removed.
    #[error(
        "the other roster has format 2 entries this one lacks; every device of the vault must run format 3"
    )]
    LegacyClosed,
    /// More changes than [`ROSTER_CHANGES_MAX`].
    #[error("roster of {changes} changes is larger than the limit of {ROSTER_CHANGES_MAX}")]
    TooLarge {
        /// How many changes.
        changes: usize,
    },
}

/// A set of changes, by their place in a roster's list.
#[derive(Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Self(vec![0; len.div_ceil(64)])
    }
    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn union(&mut self, other: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
    fn len(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }
}

/// The legacy part of a roster, checked by the old rules.
struct LegacyState {
    /// Devices trusted once every legacy entry is read.
    trusted: Vec<DeviceId>,
    /// The latest legacy entry of every device, in the order they were first added.
    latest: Vec<Entry>,
    /// Devices the legacy part removed.
    removed: Vec<DeviceId>,
}

impl Roster {
    /// A new roster for the vault of `recovery`, with no devices.
    pub fn new(recovery: &RecoveryKey) -> Self {
        Self {
            vault: recovery.vault_id(),
            recovery_public: recovery.public(),
            legacy: Legacy::default(),
            changes: Vec::new(),
            state: State::default(),
        }
    }

    fn entry_message(vault: VaultId, entry: &Entry) -> Vec<u8> {
        codec::signed_message(ENTRY_DOMAIN, vault, SIGNED_RECORD_VERSION, entry)
    }

    fn removal_message(vault: VaultId, removal: &Removal) -> Vec<u8> {
        codec::signed_message(REMOVAL_DOMAIN, vault, SIGNED_RECORD_VERSION, removal)
    }

    /// The changes that no other change follows: what a new change names as its parents.
    pub fn heads(&self) -> &[ChangeId] {
        &self.state.heads
    }

    /// Appends a change this roster's holder made: it follows every head, so the list stays
    /// in its canonical order.
    fn push(&mut self, signed: SignedChange) {
        self.changes.push(signed);
        // A change by a signer that is not trusted here leaves the roster invalid, as
        // `verify` then says; what it says stays what it was.
        if let Ok(state) = self.evaluate() {
            self.state = state;
        }
    }

    /// Removes a device for good, signed by a trusted device on the roster. Its entries stay
    /// (they are history) but it is no longer a device of the vault.
    pub fn remove_with_device(&mut self, signer: &DeviceKey, device: DeviceId) {
        let removal = Removal { device, signer: Signer::Device(signer.device_id()) };
        let change = Change { parents: self.heads().to_vec(), what: What::Remove(removal) };
        self.push(SignedChange::by_device(self.vault, signer, change));
    }

    /// Admits a device, signed by the recovery key. Replaces nothing: an entry for a device
    /// already present is added again with the new details (the latest entry wins).
    pub fn admit_with_recovery(&mut self, recovery: &RecoveryKey, entry: Entry) {
        assert_eq!(recovery.vault_id(), self.vault, "recovery key of another vault");
        let change = Self::recovery_admission(recovery, self.heads().to_vec(), entry);
        self.push(change);
    }

    /// A change admitting `entry` by the recovery key, following `heads`: what a device that
    /// proves the phrase to another signs, knowing only the other's heads.
    pub fn recovery_admission(
        recovery: &RecoveryKey,
        mut heads: Vec<ChangeId>,
        mut entry: Entry,
    ) -> SignedChange {
        entry.signer = Signer::Recovery;
        heads.sort_unstable();
        heads.dedup();
        SignedChange::by_recovery(recovery, Change { parents: heads, what: What::Admit(entry) })
    }

    /// Admits a device, signed by a trusted device already on the roster.
    pub fn admit_with_device(&mut self, signer: &DeviceKey, mut entry: Entry) {
        entry.signer = Signer::Device(signer.device_id());
        let change = Change { parents: self.heads().to_vec(), what: What::Admit(entry) };
        self.push(SignedChange::by_device(self.vault, signer, change));
    }

    /// Whether `device` was removed.
    pub fn is_removed(&self, device: DeviceId) -> bool {
        self.state.removed.contains(&device)
    }

    /// The devices removed for good.
    pub fn removed(&self) -> &[DeviceId] {
        &self.state.removed
    }

    /// The latest entry for `device`, if it is on the roster (and was not removed).
    pub fn device(&self, device: DeviceId) -> Option<&Entry> {
        self.state.devices.iter().find(|e| e.device == device)
    }

    /// The latest entry `device` had, also if it was removed since (to name it in history).
    pub fn ever(&self, device: DeviceId) -> Option<&Entry> {
        self.device(device)
            .or_else(|| {
                self.changes.iter().rev().find_map(|c| match &c.change.what {
                    What::Admit(entry) if entry.device == device => Some(entry),
                    _ => None,
                })
            })
            .or_else(|| {
                self.legacy.entries.iter().rev().map(|e| &e.entry).find(|e| e.device == device)
            })
    }

    /// The latest entry of every device, in the order they were first added.
    pub fn devices(&self) -> Vec<&Entry> {
        self.state.devices.iter().collect()
    }

    /// Checks the vault id, every signature and every change's place.
    pub fn verify(&self) -> Result<(), RosterError> {
        self.evaluate().map(drop)
    }

    /// Checks the legacy part by the old rules, in its order.
    fn evaluate_legacy(&self) -> Result<LegacyState, RosterError> {
        let vault = self.vault;
        let held = self.legacy.entries.len().max(self.legacy.removed.len());
        if held > ROSTER_CHANGES_MAX {
            return Err(RosterError::TooLarge { changes: held });
        }
        let mut trusted: Vec<DeviceId> = Vec::new();
        let mut latest: Vec<Entry> = Vec::new();
        for signed in &self.legacy.entries {
            let entry = &signed.entry;
            let msg = Self::entry_message(vault, entry);
            if !self.legacy_signed_by(entry.signer, &trusted, &msg, &signed.signature) {
                return Err(RosterError::Signature { device: entry.device });
            }
            // The latest entry decides: a device entered again as storage-only signs no more.
            if entry.role == Role::Trusted {
                if !trusted.contains(&entry.device) {
                    trusted.push(entry.device);
                }
            } else {
                trusted.retain(|d| *d != entry.device);
            }
            match latest.iter_mut().find(|e| e.device == entry.device) {
                Some(e) => *e = entry.clone(),
                None => latest.push(entry.clone()),
            }
        }
        let mut removed = Vec::new();
        for signed in &self.legacy.removed {
            let removal = &signed.removal;
            let msg = Self::removal_message(vault, removal);
            if !self.legacy_signed_by(removal.signer, &trusted, &msg, &signed.signature) {
                return Err(RosterError::Signature { device: removal.device });
            }
            if !removed.contains(&removal.device) {
                removed.push(removal.device);
            }
        }
        Ok(LegacyState { trusted, latest, removed })
    }

    /// Whether `signature` over `msg` is by `signer`: the recovery key, or a device in
    /// `trusted`.
    fn legacy_signed_by(
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

    /// Works out what the roster says, checking everything on the way.
    fn evaluate(&self) -> Result<State, RosterError> {
        if keys::vault_id_of(&self.recovery_public) != self.vault {
            return Err(RosterError::VaultMismatch { vault: self.vault });
        }
        let n = self.changes.len();
        if n > ROSTER_CHANGES_MAX {
            return Err(RosterError::TooLarge { changes: n });
        }
        let legacy = self.evaluate_legacy()?;

        // Each change's hash, place, parents and signature.
        let ids: Vec<ChangeId> = self.changes.iter().map(|c| c.id(self.vault)).collect();
        let mut place: HashMap<ChangeId, usize> = HashMap::with_capacity(n);
        let mut ancestors: Vec<Bits> = Vec::with_capacity(n);
        let mut followed = vec![false; n];
        for (i, signed) in self.changes.iter().enumerate() {
            let change = &signed.change;
            let out_of_place = || RosterError::Parents { change: ids[i].short() };
            if change.parents.len() > PARENTS_MAX || change.parents.windows(2).any(|w| w[0] >= w[1])
            {
                return Err(out_of_place());
            }
            let mut mine = Bits::new(n);
            for parent in &change.parents {
                let &p = place.get(parent).ok_or_else(out_of_place)?;
                mine.union(&ancestors[p]);
                mine.insert(p);
                followed[p] = true;
            }
            ancestors.push(mine);
            if place.insert(ids[i], i).is_some() {
                return Err(out_of_place());
            }
            let msg = SignedChange::message(self.vault, change);
            let key = match change.signer() {
                Signer::Recovery => self.recovery_public,
                Signer::Device(by) => *by.as_bytes(),
            };
            if !keys::verify_signature(&key, &msg, &signed.signature) {
                return Err(RosterError::Signature { device: target(change) });
            }
        }
        let weight: Vec<u32> = ancestors.iter().map(Bits::len).collect();
        let mut admissions: HashMap<DeviceId, Vec<usize>> = HashMap::new();
        let mut removals: HashMap<DeviceId, Vec<usize>> = HashMap::new();
        for (i, signed) in self.changes.iter().enumerate() {
            match &signed.change.what {
                What::Admit(entry) => admissions.entry(entry.device).or_default().push(i),
                What::Remove(removal) => removals.entry(removal.device).or_default().push(i),
            }
        }
        // Of a device's admissions that `take` lets through, the latest: the one with the most
        // ancestors, then a storage-only one, then the smaller hash.
        let latest = |device: DeviceId, take: &dyn Fn(usize) -> bool| -> Option<usize> {
            let trusted = |j: usize| matches!(&self.changes[j].change.what, What::Admit(e) if e.role == Role::Trusted);
            admissions.get(&device)?.iter().copied().filter(|&j| take(j)).min_by(|&a, &b| {
                weight[b]
                    .cmp(&weight[a])
                    .then(trusted(a).cmp(&trusted(b)))
                    .then(ids[a].cmp(&ids[b]))
            })
        };
        // Whether `device` was trusted in the changes before change `i`, counting the
        // admissions `take` lets through (every removal before `i` counts: one that did not
        // was refused already).
        let trusted_before = |i: usize, device: DeviceId, take: &dyn Fn(usize) -> bool| {
            let before = &ancestors[i];
            if legacy.removed.contains(&device)
                || removals.get(&device).is_some_and(|rs| rs.iter().any(|&r| before.contains(r)))
            {
                return false;
            }
            match latest(device, &|j| before.contains(j) && take(j)) {
                Some(j) => matches!(&self.changes[j].change.what,
                    What::Admit(e) if e.role == Role::Trusted),
                None => legacy.trusted.contains(&device),
            }
        };
        // The admissions among the first `limit` changes, of those `within` lets through (a set
        // that holds the ancestors of each of its changes), that take effect there: not void (a
        // removal of their signer within the set does not follow them), and signed by the
        // recovery key or by a device that admissions taking effect made trusted.
        let effective_within = |within: &dyn Fn(usize) -> bool, limit: usize| -> Vec<bool> {
            let mut effective = vec![false; limit];
            for j in (0..limit).filter(|&j| within(j)) {
                let change = &self.changes[j].change;
                let takes = match (&change.what, change.signer()) {
                    (What::Remove(_), _) | (What::Admit(_), Signer::Recovery) => true,
                    (What::Admit(_), Signer::Device(by)) => {
                        let void = removals.get(&by).is_some_and(|rs| {
                            rs.iter().any(|&r| r < limit && within(r) && !ancestors[r].contains(j))
                        });
                        !void && trusted_before(j, by, &|x| effective[x])
                    }
                };
                effective[j] = takes;
            }
            effective
        };

        // A change counts if its signer was trusted in what it follows, by admissions that
        // take effect there: a device admitted by one that was removed before signs nothing.
        for (i, signed) in self.changes.iter().enumerate() {
            let change = &signed.change;
            let counts = match change.signer() {
                Signer::Recovery => true,
                Signer::Device(by) => {
                    let before = &ancestors[i];
                    let effective = effective_within(&|j| before.contains(j), i);
                    trusted_before(i, by, &|x| effective[x])
                }
            };
            if !counts {
                return Err(RosterError::Signature { device: target(change) });
            }
        }
        // In the whole roster, whatever a removed device signed that its removal does not
        // follow is void, and so is what only such a change let in.
        let effective = effective_within(&|_| true, n);

        let mut removed = legacy.removed.clone();
        for signed in &self.changes {
            if let What::Remove(removal) = &signed.change.what
                && !removed.contains(&removal.device)
            {
                removed.push(removal.device);
            }
        }
        let mut order: Vec<DeviceId> = legacy.latest.iter().map(|e| e.device).collect();
        for (i, signed) in self.changes.iter().enumerate() {
            if let What::Admit(entry) = &signed.change.what
                && effective[i]
                && !order.contains(&entry.device)
            {
                order.push(entry.device);
            }
        }
        let devices = order
            .into_iter()
            .filter(|d| !removed.contains(d))
            .filter_map(|d| match latest(d, &|j| effective[j]) {
                Some(j) => match &self.changes[j].change.what {
                    What::Admit(entry) => Some(entry.clone()),
                    What::Remove(_) => None,
                },
                None => legacy.latest.iter().find(|e| e.device == d).cloned(),
            })
            .collect();
        let heads: BTreeSet<ChangeId> =
            ids.iter().zip(&followed).filter(|(_, f)| !**f).map(|(id, _)| *id).collect();
        Ok(State { devices, removed, heads: heads.into_iter().collect() })
    }

    /// Puts the changes in their canonical order (of those whose parents are all placed, the
    /// smallest hash first) and drops repeats. Fails if a change follows one that is missing.
    fn canonicalize(&mut self) -> Result<(), RosterError> {
        let vault = self.vault;
        let mut changes: Vec<(ChangeId, SignedChange)> = Vec::with_capacity(self.changes.len());
        let mut seen: HashMap<ChangeId, usize> = HashMap::new();
        for signed in self.changes.drain(..) {
            let id = signed.id(vault);
            if seen.insert(id, changes.len()).is_none() {
                changes.push((id, signed));
            }
        }
        let n = changes.len();
        let mut waiting = vec![0usize; n];
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, (id, signed)) in changes.iter().enumerate() {
            for parent in &signed.change.parents {
                let &p = seen.get(parent).ok_or(RosterError::Parents { change: id.short() })?;
                waiting[i] += 1;
                children[p].push(i);
            }
        }
        let mut ready: BinaryHeap<std::cmp::Reverse<(ChangeId, usize)>> = (0..n)
            .filter(|&i| waiting[i] == 0)
            .map(|i| std::cmp::Reverse((changes[i].0, i)))
            .collect();
        let mut order = Vec::with_capacity(n);
        while let Some(std::cmp::Reverse((_, i))) = ready.pop() {
            order.push(i);
            for &c in &children[i] {
                waiting[c] -= 1;
                if waiting[c] == 0 {
                    ready.push(std::cmp::Reverse((changes[c].0, c)));
                }
            }
        }
        if order.len() != n {
            let stuck = (0..n).find(|i| !order.contains(i)).unwrap_or(0);
            return Err(RosterError::Parents { change: changes[stuck].0.short() });
        }
        let mut slots: Vec<Option<SignedChange>> =
            changes.into_iter().map(|(_, c)| Some(c)).collect();
        self.changes = order.into_iter().filter_map(|i| slots[i].take()).collect();
        Ok(())
    }

    /// Takes the changes of `other` (the same vault's roster as another device keeps it) that
    /// this one lacks. Returns whether anything was added; on an error (another vault, or a
    /// change that does not verify here) nothing changes.
    ///
    /// A change signed by a removed device is kept (a change another device made may follow
    /// it) but has no effect.
    pub fn merge(&mut self, other: &Roster) -> Result<bool, RosterError> {
        if other.vault != self.vault || other.recovery_public != self.recovery_public {
            return Err(RosterError::VaultMismatch { vault: other.vault });
        }
        self.absorb(&other.legacy, &other.changes)
    }

    /// Takes one change (a recovering device's admission). Returns whether it was new.
    pub fn insert(&mut self, change: SignedChange) -> Result<bool, RosterError> {
        self.absorb(&Legacy::default(), std::slice::from_ref(&change))
    }

    fn absorb(&mut self, legacy: &Legacy, changes: &[SignedChange]) -> Result<bool, RosterError> {
        // What this roster already knows was removed signs nothing new in the legacy part (a
        // stolen device that was removed cannot admit keys of its own to a device that knows).
        let signed_by_removed = |signer: &Signer| match signer {
            Signer::Device(by) => self.is_removed(*by),
            Signer::Recovery => false,
        };
        let lacked = legacy.entries.iter().any(|e| !self.legacy.entries.contains(e))
            || legacy.removed.iter().any(|r| !self.legacy.removed.contains(r));
        if lacked && !self.changes.is_empty() {
            return Err(RosterError::LegacyClosed);
        }
        let mut merged = self.clone();
        let mut added = false;
        for entry in &legacy.entries {
            if !merged.legacy.entries.contains(entry) {
                if signed_by_removed(&entry.entry.signer) {
                    return Err(RosterError::Signature { device: entry.entry.device });
                }
                merged.legacy.entries.push(entry.clone());
                added = true;
            }
        }
        for removal in &legacy.removed {
            if !merged.legacy.removed.contains(removal) {
                if signed_by_removed(&removal.removal.signer) {
                    return Err(RosterError::Signature { device: removal.removal.device });
                }
                merged.legacy.removed.push(removal.clone());
                added = true;
            }
        }
        let known: std::collections::HashSet<ChangeId> =
            self.changes.iter().map(|c| c.id(self.vault)).collect();
        for change in changes {
            if !known.contains(&change.id(self.vault)) {
                merged.changes.push(change.clone());
                added = true;
            }
        }
        if !added {
            return Ok(false);
        }
        merged.canonicalize()?;
        merged.state = merged.evaluate()?;
        *self = merged;
        Ok(true)
    }

    /// Encodes the roster as a record.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(ROSTER_VERSION, self)
    }

    /// Decodes and verifies a roster (version 3, or version 1 or 2 read as its legacy part).
    pub fn decode(bytes: &[u8]) -> Result<Self, RosterError> {
        let mut roster: Roster = match bytes.first() {
            Some(&1) => {
                let v1: RosterV1 = codec::decode("roster", 1, bytes)?;
                Roster {
                    vault: v1.vault,
                    recovery_public: v1.recovery_public,
                    legacy: Legacy { entries: v1.entries, removed: Vec::new() },
                    changes: Vec::new(),
                    state: State::default(),
                }
            }
            Some(&2) => {
                let v2: RosterV2 = codec::decode("roster", 2, bytes)?;
                Roster {
                    vault: v2.vault,
                    recovery_public: v2.recovery_public,
                    legacy: Legacy { entries: v2.entries, removed: v2.removed },
                    changes: Vec::new(),
                    state: State::default(),
                }
            }
            _ => codec::decode("roster", ROSTER_VERSION, bytes)?,
        };
        if roster.changes.len() > ROSTER_CHANGES_MAX {
            return Err(RosterError::TooLarge { changes: roster.changes.len() });
        }
        roster.canonicalize()?;
        roster.state = roster.evaluate()?;
        Ok(roster)
    }
}

/// The device a change admits or removes.
fn target(change: &Change) -> DeviceId {
    match &change.what {
        What::Admit(entry) => entry.device,
        What::Remove(removal) => removal.device,
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

    fn key(n: u8) -> DeviceKey {
        DeviceKey::from_bytes(&[n; 32])
    }

    fn recovery() -> RecoveryKey {
        Phrase::from_entropy([8; 32]).recovery_key()
    }

    /// A roster with `first` trusted (by the recovery key) and `second` trusted (by `first`).
    fn two_trusted() -> Roster {
        let recovery = recovery();
        let mut roster = Roster::new(&recovery);
        roster.admit_with_recovery(&recovery, entry(&key(1), Role::Trusted));
        roster.admit_with_device(&key(1), entry(&key(2), Role::Trusted));
        roster
    }

    fn names(roster: &Roster) -> Vec<DeviceId> {
        roster.devices().into_iter().map(|e| e.device).collect()
    }

    #[test]
    fn a_removed_device_is_gone_for_good_and_a_forged_removal_is_refused() {
        let recovery = recovery();
        let (first, second) = (key(1), key(2));
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
        // Entered again as storage-only, a device signs no more.
        let mut demoted = Roster::new(&recovery);
        demoted.admit_with_recovery(&recovery, entry(&first, Role::Trusted));
        demoted.admit_with_recovery(&recovery, entry(&first, Role::StorageOnly));
        demoted.admit_with_device(&first, entry(&second, Role::Trusted));
        assert!(Roster::decode(&demoted.encode()).is_err());
        // A removal signed by a device that is not trusted does not verify.
        let mut forged = before.clone();
        forged.remove_with_device(&second, first.device_id());
        assert!(matches!(Roster::decode(&forged.encode()), Err(RosterError::Signature { .. })));
        // Nor does anything a removed device signs after hearing of its removal.
        let mut after = back.clone();
        after.admit_with_device(&second, entry(&key(7), Role::Trusted));
        assert!(Roster::decode(&after.encode()).is_err());
    }

    #[test]
    fn a_removal_is_final_in_whatever_order_it_is_heard_of() {
        // The laptop (key 2) is stolen: the thief admits a device of its own while the NAS
        // (key 1), not knowing, removes the laptop.
        let base = two_trusted();
        let (nas, laptop, thief) = (key(1), key(2), key(9));
        let mut stolen = base.clone();
        stolen.admit_with_device(&laptop, entry(&thief, Role::Trusted));
        // The thief's device admits one more of its own: void too, as its admitter is.
        stolen.admit_with_device(&thief, entry(&key(10), Role::Trusted));
        let mut removal = base.clone();
        removal.remove_with_device(&nas, laptop.device_id());

        let mut removal_first = removal.clone();
        assert!(removal_first.merge(&stolen).expect("kept, without effect"));
        let mut stolen_first = stolen.clone();
        assert!(stolen_first.merge(&removal).expect("merges"));
        for roster in [&removal_first, &stolen_first] {
            assert_eq!(names(roster), vec![nas.device_id()]);
            assert!(roster.device(thief.device_id()).is_none());
            assert!(roster.is_removed(laptop.device_id()));
        }
        assert_eq!(removal_first.encode(), stolen_first.encode(), "one roster, one encoding");
        assert_eq!(Roster::decode(&removal_first.encode()).expect("valid"), removal_first);
    }

    #[test]
    fn a_device_let_in_by_a_removed_one_signs_nothing_once_it_knows() {
        // The thief's laptop (key 2) lets in a device of its own (key 9) while the NAS (key 1)
        // removes the laptop. Key 9, once it hears of that, tries to remove the NAS.
        let base = two_trusted();
        let (nas, laptop, proxy) = (key(1), key(2), key(9));
        let mut stolen = base.clone();
        stolen.admit_with_device(&laptop, entry(&proxy, Role::Trusted));
        let mut removal = base.clone();
        removal.remove_with_device(&nas, laptop.device_id());
        let mut heard = stolen.clone();
        heard.merge(&removal).expect("merges");
        assert!(heard.device(proxy.device_id()).is_none(), "its admission is void");
        heard.remove_with_device(&proxy, nas.device_id());
        assert!(matches!(heard.verify(), Err(RosterError::Signature { .. })));
        let mut informed = removal.clone();
        assert!(informed.merge(&heard).is_err(), "refused whole");
        assert_eq!(names(&informed), vec![nas.device_id()]);
    }

    #[test]
    fn a_roster_with_changes_takes_no_format_2_entry_it_lacks() {
        let recovery = recovery();
        let mut upgraded = two_trusted();
        let mut old = Roster::new(&recovery);
        let laptop = entry(&key(2), Role::Trusted);
        let signature = recovery.sign(&Roster::entry_message(old.vault, &laptop));
        old.legacy.entries.push(SignedEntry { entry: laptop, signature });
        old.verify().expect("a valid format 2 part");
        assert!(matches!(upgraded.merge(&old), Err(RosterError::LegacyClosed)));
    }

    #[test]
    fn what_a_removed_device_signed_before_its_removal_stays() {
        let mut roster = two_trusted();
        let (nas, laptop, pi) = (key(1), key(2), key(3));
        roster.admit_with_device(&laptop, entry(&pi, Role::StorageOnly));
        roster.remove_with_device(&nas, laptop.device_id());
        assert_eq!(names(&roster), vec![nas.device_id(), pi.device_id()]);
        // The Pi, admitted by a device removed later, stays; any trusted device can remove it.
        roster.remove_with_device(&nas, pi.device_id());
        assert_eq!(names(&roster), vec![nas.device_id()]);
    }

    #[test]
    fn any_trusted_device_removes_one_that_recovered_through_a_third() {
        let recovery = recovery();
        let mut nas = two_trusted();
        // A new laptop proves the phrase to the NAS, knowing only the NAS's heads.
        let newcomer = key(5);
        let change = Roster::recovery_admission(
            &recovery,
            nas.heads().to_vec(),
            entry(&newcomer, Role::Trusted),
        );
        let change = SignedChange::decode(&change.encode()).expect("round trip");
        assert!(nas.insert(change.clone()).expect("admitted"));
        assert!(!nas.insert(change).expect("once"));
        // The other trusted device hears of it from the NAS and removes it.
        let mut laptop = two_trusted();
        laptop.merge(&nas).expect("merges");
        laptop.remove_with_device(&key(2), newcomer.device_id());
        nas.merge(&laptop).expect("merges");
        assert!(nas.is_removed(newcomer.device_id()));
        assert_eq!(names(&nas), vec![key(1).device_id(), key(2).device_id()]);
    }

    #[test]
    fn two_trusted_devices_that_remove_each_other_are_both_out() {
        let base = two_trusted();
        let (a, b) = (key(1), key(2));
        let mut one = base.clone();
        one.remove_with_device(&a, b.device_id());
        let mut two = base.clone();
        two.remove_with_device(&b, a.device_id());
        one.merge(&two).expect("merges");
        two.merge(&one).expect("merges");
        assert_eq!(one, two);
        assert!(one.devices().is_empty());
        assert!(one.is_removed(a.device_id()) && one.is_removed(b.device_id()));
    }

    #[test]
    fn concurrent_entries_for_one_device_settle_the_same_everywhere() {
        let base = two_trusted();
        let pi = key(3);
        let mut one = base.clone();
        one.admit_with_device(&key(1), entry(&pi, Role::Trusted));
        let mut two = base.clone();
        two.admit_with_device(&key(2), entry(&pi, Role::StorageOnly));
        let mut ab = one.clone();
        ab.merge(&two).expect("merges");
        let mut ba = two.clone();
        ba.merge(&one).expect("merges");
        assert_eq!(ab.encode(), ba.encode());
        assert_eq!(ab.device(pi.device_id()).map(|e| e.role), Some(Role::StorageOnly));
        // A later entry that follows both decides.
        ab.admit_with_device(&key(1), entry(&pi, Role::Trusted));
        assert_eq!(ab.device(pi.device_id()).map(|e| e.role), Some(Role::Trusted));
        assert_eq!(ab.heads().len(), 1);
    }

    #[test]
    fn a_change_whose_parents_are_missing_is_refused() {
        let recovery = recovery();
        let mut roster = two_trusted();
        let unknown = ChangeId([0x42; 32]);
        let change =
            Roster::recovery_admission(&recovery, vec![unknown], entry(&key(5), Role::Trusted));
        let before = roster.clone();
        assert!(matches!(roster.insert(change), Err(RosterError::Parents { .. })));
        assert_eq!(roster, before);
    }

    #[test]
    fn a_version_2_roster_is_read_and_grows_as_version_3() {
        #[derive(Serialize)]
        struct V2<'a> {
            vault: VaultId,
            recovery_public: [u8; 32],
            entries: &'a [SignedEntry],
            removed: &'a [SignedRemoval],
        }
        let recovery = recovery();
        let vault = recovery.vault_id();
        let sign_entry = |signer: &dyn Fn(&[u8]) -> [u8; 64], entry: Entry| {
            let signature = signer(&Roster::entry_message(vault, &entry));
            SignedEntry { entry, signature }
        };
        let mut laptop = entry(&key(1), Role::Trusted);
        laptop.signer = Signer::Recovery;
        let mut pi = entry(&key(3), Role::StorageOnly);
        pi.signer = Signer::Device(key(1).device_id());
        let mut gone = entry(&key(4), Role::StorageOnly);
        gone.signer = Signer::Device(key(1).device_id());
        let removal = Removal { device: key(4).device_id(), signer: pi.signer };
        let entries = [
            sign_entry(&|m| recovery.sign(m), laptop),
            sign_entry(&|m| key(1).sign(m), pi),
            sign_entry(&|m| key(1).sign(m), gone),
        ];
        let removed = [SignedRemoval {
            signature: key(1).sign(&Roster::removal_message(vault, &removal)),
            removal,
        }];
        let v2 = codec::encode(
            2,
            &V2 { vault, recovery_public: recovery.public(), entries: &entries, removed: &removed },
        );
        let mut roster = Roster::decode(&v2).expect("version 2 is read");
        assert_eq!(names(&roster), vec![key(1).device_id(), key(3).device_id()]);
        assert!(roster.is_removed(key(4).device_id()));
        roster.admit_with_device(&key(1), entry(&key(5), Role::Trusted));
        let v3 = roster.encode();
        assert_eq!(v3[0], ROSTER_VERSION);
        let back = Roster::decode(&v3).expect("version 3");
        assert_eq!(names(&back).len(), 3);
        assert_eq!(back, roster);
        // A version 2 entry forged by a device not trusted is refused as before.
        let mut forged_entries = entries.to_vec();
        forged_entries[1].signature[0] ^= 1;
        let forged = codec::encode(
            2,
            &V2 {
                vault,
                recovery_public: recovery.public(),
                entries: &forged_entries,
                removed: &removed,
            },
        );
        assert!(Roster::decode(&forged).is_err());
    }

    #[test]
    fn merging_takes_what_is_missing_and_refuses_forgeries() {
        let recovery = recovery();
        let first = key(1);
        let mut a = Roster::new(&recovery);
        a.admit_with_recovery(&recovery, entry(&first, Role::Trusted));
        let mut b = a.clone();
        b.admit_with_device(&first, entry(&key(2), Role::StorageOnly));
        assert!(a.merge(&b).expect("merges"));
        assert_eq!(a, b);
        assert!(!a.merge(&b).expect("nothing new"));

        // A change signed by a device that is not trusted on the roster is refused whole.
        let mut forged = b.clone();
        forged.admit_with_device(&key(3), entry(&key(4), Role::Trusted));
        assert!(a.merge(&forged).is_err());
        assert_eq!(a, b);

        let other = Roster::new(&Phrase::from_entropy([9; 32]).recovery_key());
        assert!(a.merge(&other).is_err());
    }

    #[test]
    fn recovery_and_device_signed_entries_verify() {
        let phrase = Phrase::from_entropy([8; 32]);
        let recovery = phrase.recovery_key();
        let mut roster = Roster::new(&recovery);
        roster.admit_with_recovery(&recovery, entry(&key(1), Role::Trusted));
        roster.admit_with_device(&key(1), entry(&key(2), Role::StorageOnly));
        let back = Roster::decode(&roster.encode()).expect("valid roster");
        assert_eq!(back.devices().len(), 2);
        assert_eq!(back.vault, phrase.vault_id());
    }

    #[test]
    fn untrusted_signer_is_refused() {
        let recovery = recovery();
        let outsider = key(5);
        let mut roster = Roster::new(&recovery);
        roster.admit_with_device(&outsider, entry(&outsider, Role::Trusted));
        assert!(matches!(roster.verify(), Err(RosterError::Signature { .. })));
    }
}
