//! The replica ledger: which snapshot of each of this device's folders every peer has
//! acknowledged, in which of its stores, and since when.
//!
//! A push ends with the peer holding every blob of the pushed snapshots, durably (each commit
//! was acknowledged) and checked against its address, and with the signed heads; the sender
//! writes that down here. `triad status` counts a peer's copy of a file version from it.
//!
//! `$TRIAD_HOME/replicas.json`, written atomically. Losing it is safe in the direction that
//! matters: copies it does not list are not counted, so files look less protected than they
//! are until the next push tells again.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use triad_core::ledger::Proof;
use triad_core::{BlobId, DeviceId, FolderId, Media, StoreId};

use crate::home::{HomeError, write_atomic};

const FILE: &str = "replicas.json";
/// The ledger's format version. Version 2 added `lacking`; a version 1 ledger is read as
/// lacking nothing, which is what it meant (every push then sent everything).
const VERSION: u32 = 2;

/// One store of a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStore {
    /// The store.
    #[serde(with = "crate::config::hex_id")]
    pub id: StoreId,
    /// Its media.
    pub media: Media,
}

/// What one peer acknowledged of one folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledged {
    /// The folder's latest snapshot it holds, with everything the snapshot needs.
    #[serde(with = "crate::config::hex_id")]
    pub snapshot: BlobId,
    /// What is proven of it (`at`, `bad`, `failures`, `repaired` in the file), by the rules of
    /// [`triad_core::ledger`].
    #[serde(flatten)]
    pub proof: Proof,
    /// File versions of the snapshot's history that it does not hold: their source files
    /// changed before they could be sent (a device without a store re-seals from its files).
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "crate::config::hex_ids")]
    pub lacking: Vec<BlobId>,
}

impl Acknowledged {
    /// Whether a push to this device would make or mend its copy: it lacks the snapshot, or
    /// its copy failed an audit and was not mended yet (nor failed too often).
    pub fn wants(&self, snapshot: BlobId) -> bool {
        self.proof.wants_push(self.snapshot == snapshot)
    }
}

/// What is known of one peer's copies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// Its stores as it last described them; each holds every acknowledged blob.
    pub stores: Vec<PeerStore>,
    /// By folder (id in hex).
    pub folders: BTreeMap<String, Acknowledged>,
}

/// Every peer's copies, by device, and the checks of this device's own copies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    version: u32,
    /// The peers, by device id in hex.
    pub peers: BTreeMap<String, Replica>,
    /// This device's own copies: when each local store (`store:<hex>`) was last scrubbed
    /// without damage, and when each folder's source files (`folder:<hex>`) were last
    /// re-hashed against their snapshot.
    #[serde(default)]
    pub local: BTreeMap<String, i64>,
    /// Source files whose bytes no longer match their snapshot although their modification
    /// time does (bit rot on the source disk), by folder (hex): they are not counted as copies.
    #[serde(default)]
    pub suspect: BTreeMap<String, Vec<String>>,
    /// Local stores whose last scrub found damage (`store:<hex>`): not counted as copies until
    /// a scrub is clean again.
    #[serde(default)]
    pub damaged: std::collections::BTreeSet<String>,
}

impl Ledger {
    /// Reads the ledger in `home`; an absent, unreadable or unknown-version ledger is empty.
    pub fn load(home: &Path) -> Ledger {
        std::fs::read(home.join(FILE))
            .ok()
            .and_then(|bytes| Self::decode(&bytes))
            .unwrap_or_default()
    }

    /// Decodes a `replicas.json`; `None` if it is not one of a version this build reads.
    pub fn decode(bytes: &[u8]) -> Option<Ledger> {
        serde_json::from_slice::<Ledger>(bytes).ok().filter(|l| (1..=VERSION).contains(&l.version))
    }

    /// Encodes the ledger as `replicas.json`.
    pub fn encode(&self) -> Vec<u8> {
        let ledger = Ledger { version: VERSION, ..self.clone() };
        serde_json::to_vec_pretty(&ledger).expect("the ledger serializes")
    }

    /// Writes the ledger into `home`.
    pub fn save(&self, home: &Path) -> Result<(), HomeError> {
        let bytes = self.encode();
        let path = home.join(FILE);
        write_atomic(&path, &bytes, 0o600).map_err(|source| HomeError::Io { path, source })
    }

    /// Writes down that `device`, with `stores`, acknowledged `snapshots` (folder, snapshot)
    /// at `now`, with every file version of their history but those in `lacking` (by folder).
    /// `claimed`: the push found part of them there already (a copy new to this ledger is then
    /// audited at once).
    pub fn record(
        &mut self,
        device: DeviceId,
        stores: Vec<PeerStore>,
        snapshots: &[(FolderId, BlobId)],
        lacking: &BTreeMap<FolderId, Vec<BlobId>>,
        claimed: bool,
        now: i64,
    ) {
        let replica = self.peers.entry(device.to_hex()).or_default();
        if replica.stores != stores {
            // Another set of stores: what the old ones held is not known to be in the new.
            replica.folders.clear();
            replica.stores = stores;
        }
        for &(folder, snapshot) in snapshots {
            let key = folder.to_hex();
            // What it lacks now: the push asked it what it misses of the whole history.
            let lacks = lacking.get(&folder).cloned().unwrap_or_default();
            match replica.folders.get_mut(&key) {
                // A copy that failed an audit stays bad after the push that mends it, until
                // an audit passes: the push sent only what the device said it lacked.
                Some(a) => {
                    a.proof.pushed();
                    a.snapshot = snapshot;
                    a.lacking = lacks;
                }
                None => {
                    let proof =
                        if claimed { Proof::claimed(now) } else { Proof::acknowledged(now) };
                    replica.folders.insert(key, Acknowledged { snapshot, proof, lacking: lacks });
                }
            }
        }
    }

    /// Writes down an audit of `device`: passed (every copy it holds is proven again at `now`)
    /// or failed (its copies count for nothing until a push repairs them).
    pub fn audited(&mut self, device: DeviceId, passed: bool, now: i64) {
        let Some(replica) = self.peers.get_mut(&device.to_hex()) else { return };
        for ack in replica.folders.values_mut() {
            ack.proof.audited(passed, now);
        }
    }

    /// When `device` was last proven to hold anything, and whether a copy is bad.
    pub fn proof_of(&self, device: DeviceId) -> Option<(i64, bool)> {
        let replica = self.peers.get(&device.to_hex())?;
        let oldest = replica.folders.values().map(|a| a.proof.at).min()?;
        Some((oldest, replica.folders.values().any(|a| a.proof.bad)))
    }

    /// When the check named `key` (`store:<hex>` or `folder:<hex>`) last passed.
    pub fn checked(&self, key: &str) -> Option<i64> {
        self.local.get(key).copied()
    }

    /// Writes down that the check named `key` passed at `now`.
    pub fn check_passed(&mut self, key: String, now: i64) {
        self.damaged.remove(&key);
        self.local.insert(key, now);
    }

    /// Writes down that the check named `key` found damage.
    pub fn check_failed(&mut self, key: String) {
        self.damaged.insert(key);
    }

    /// Whether a copy of `device` that failed an audit was mended since, and waits for the
    /// audit that says whether it holds again.
    pub fn awaits_audit(&self, device: DeviceId) -> bool {
        self.peers
            .get(&device.to_hex())
            .is_some_and(|r| r.folders.values().any(|a| a.proof.awaits_audit()))
    }

    /// Forgets a peer (it was removed from the vault).
    pub fn forget(&mut self, device: DeviceId) {
        self.peers.remove(&device.to_hex());
    }

    /// What `device` acknowledged of `folder`, and in which stores.
    pub fn get(&self, device: DeviceId, folder: FolderId) -> Option<(&[PeerStore], &Acknowledged)> {
        let replica = self.peers.get(&device.to_hex())?;
        Some((&replica.stores, replica.folders.get(&folder.to_hex())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_ledger_is_read_as_lacking_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (peer, folder) = (DeviceId::from_bytes([1; 32]), FolderId::from_bytes([2; 16]));
        let snapshot = BlobId::of(b"one");
        let v1 = serde_json::json!({
            "version": 1,
            "peers": {peer.to_hex(): {
                "stores": [{"id": StoreId::from_bytes([3; 16]).to_hex(), "media": "raid"}],
                "folders": {folder.to_hex(): {"snapshot": snapshot.to_hex(), "at": 100}},
            }},
        });
        std::fs::write(dir.path().join(FILE), v1.to_string()).unwrap();
        let ledger = Ledger::load(dir.path());
        let (_, ack) = ledger.get(peer, folder).expect("the v1 entry is read");
        assert_eq!((ack.snapshot, ack.proof.at, ack.lacking.len()), (snapshot, 100, 0));
    }

    #[test]
    fn a_push_does_not_renew_a_proof_only_an_audit_does() {
        let (peer, folder) = (DeviceId::from_bytes([1; 32]), FolderId::from_bytes([2; 16]));
        let stores = vec![PeerStore { id: StoreId::from_bytes([3; 16]), media: Media::Raid }];
        let (s1, s2) = (BlobId::of(b"one"), BlobId::of(b"two"));
        let mut ledger = Ledger::default();
        ledger.record(peer, stores.clone(), &[(folder, s1)], &BTreeMap::new(), false, 100);
        ledger.record(peer, stores.clone(), &[(folder, s1)], &BTreeMap::new(), false, 200);
        assert_eq!(ledger.get(peer, folder).unwrap().1.proof.at, 100);
        ledger.record(peer, stores.clone(), &[(folder, s2)], &BTreeMap::new(), false, 300);
        let ack = ledger.get(peer, folder).unwrap().1.clone();
        // Nor does a push of another snapshot: what it held before is its word only.
        assert_eq!((ack.snapshot, ack.proof.at, ack.proof.bad), (s2, 100, false));
        assert!(!ack.wants(s2) && ack.wants(s1));
        // An audit renews the proof; a failed one makes the copy bad, and the push that mends
        // it does not make it good: the next audit does.
        ledger.audited(peer, true, 350);
        assert_eq!(ledger.proof_of(peer), Some((350, false)));
        ledger.audited(peer, false, 360);
        assert_eq!(ledger.proof_of(peer), Some((350, true)));
        assert!(ledger.get(peer, folder).unwrap().1.wants(s2), "a bad copy is mended");
        ledger.record(peer, stores.clone(), &[(folder, s2)], &BTreeMap::new(), false, 370);
        assert_eq!(ledger.proof_of(peer), Some((350, true)));
        assert!(!ledger.get(peer, folder).unwrap().1.wants(s2), "mended once per failure");
        ledger.audited(peer, false, 380);
        assert!(!ledger.get(peer, folder).unwrap().1.wants(s2), "failed twice: not again");
        ledger.audited(peer, true, 390);
        assert_eq!(ledger.proof_of(peer), Some((390, false)));
        // New stores: nothing is known of them until they acknowledge.
        let other = vec![PeerStore { id: StoreId::from_bytes([4; 16]), media: Media::UsbHdd }];
        ledger.record(peer, other, &[], &BTreeMap::new(), false, 400);
        assert!(ledger.get(peer, folder).is_none());

        let dir = tempfile::tempdir().unwrap();
        let lacking = BTreeMap::from([(folder, vec![BlobId::of(b"a version")])]);
        ledger.record(peer, stores, &[(folder, s1)], &lacking, true, 500);
        assert_eq!(ledger.get(peer, folder).unwrap().1.lacking, lacking[&folder]);
        ledger.save(dir.path()).unwrap();
        assert_eq!(Ledger::load(dir.path()).peers, ledger.peers);
    }
}
