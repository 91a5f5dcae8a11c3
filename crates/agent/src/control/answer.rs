//! The agent's answers on the control socket, one type per answer and per event line.
//!
//! The agent serializes these and the `triad` commands deserialize the same types, so the two
//! cannot drift apart. The final line of an answer is wrapped in [`Done`] (it adds
//! `"done": true`); a request that fails ends with a [`Failure`] line instead. Events come
//! before the final line and carry their kind in `event`. Times are seconds since the epoch.
//!
//! Field names and shapes are the wire: the `--json` outputs of the commands are built from
//! them (`docs/JSON.md`), so a field is only ever added.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use triad_core::policy::State;

/// The final line of an answer: `answer`'s fields and `"done": true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done<T> {
    /// Always true: the answer is complete.
    pub done: bool,
    /// The answer.
    #[serde(flatten)]
    pub answer: T,
}

impl<T> Done<T> {
    /// `answer` as the final line.
    pub fn new(answer: T) -> Self {
        Done { done: true, answer }
    }
}

/// The line that ends a request that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What went wrong, in words.
    pub error: String,
    /// What kind of failure (absent where a request has only one kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FailureKind>,
    /// Why the other device refused (`Refusal::as_str`), when it did; present (maybe null)
    /// exactly when `kind` is.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub code: Option<Option<String>>,
}

impl Failure {
    /// A failure with only its message.
    pub fn message(error: impl Into<String>) -> Self {
        Failure { error: error.into(), kind: None, code: None }
    }
}

/// What kind of failure a [`Failure`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Anything else.
    Error,
    /// The other device did not answer: offline, not failed.
    Unreachable,
    /// The other device answered and refused.
    Refused,
}

/// What a device may do, as the answers name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Holds the vault secret.
    Trusted,
    /// Stores ciphertext only.
    StorageOnly,
}

impl Role {
    /// The role as the answers name it: `trusted` or `storage-only`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Trusted => "trusted",
            Role::StorageOnly => "storage-only",
        }
    }
}

impl From<triad_core::roster::Role> for Role {
    fn from(role: triad_core::roster::Role) -> Self {
        match role {
            triad_core::roster::Role::Trusted => Role::Trusted,
            triad_core::roster::Role::StorageOnly => Role::StorageOnly,
        }
    }
}

/// The answer to `Lease`: the stores are lent until the connection closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leased {
    /// Always true.
    pub leased: bool,
}

/// The answer to `Devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Devices {
    /// Every device of the vault.
    pub devices: Vec<Device>,
}

/// One device as `triad devices` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Its name.
    pub name: String,
    /// Its site.
    pub site: String,
    /// What it may do.
    pub role: Role,
    /// Its id, in hex.
    pub device: String,
    /// Whether it is the device that answers.
    pub this: bool,
    /// Whether it answers now; `None` when nobody asked (the agent is not running).
    pub online: Option<bool>,
    /// When it was last seen.
    pub last_seen: Option<u64>,
    /// Where it is (the connection there is, or a known address).
    pub address: Option<String>,
    /// Its stores, as it told them (none when offline).
    pub stores: Vec<DeviceStore>,
    /// How the connection to it goes now: `lan`, `direct` or `relayed`; `None` when there is
    /// none.
    #[serde(default)]
    pub path: Option<String>,
    /// When the path is `relayed`: the name of the device that relays it.
    #[serde(default)]
    pub relay: Option<String>,
    /// The round trip of its last hello, in milliseconds.
    #[serde(default)]
    pub rtt_ms: Option<u64>,
    /// Blob bytes pushed to it and acknowledged since the agent started.
    #[serde(default)]
    pub sent_bytes: u64,
    /// Blob bytes received from it since the agent started.
    #[serde(default)]
    pub received_bytes: u64,
    /// Bytes per second of the last push to it of at least 1 MiB.
    #[serde(default)]
    pub send_rate: Option<u64>,
    /// Bytes per second of the last push from it of at least 1 MiB.
    #[serde(default)]
    pub receive_rate: Option<u64>,
    /// Why the last push to it failed, if one did since the agent started.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When that was (seconds since the epoch).
    #[serde(default)]
    pub last_error_at: Option<u64>,
}

/// A store of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStore {
    /// Its id, in hex.
    pub id: String,
    /// Its media.
    pub media: String,
    /// Bytes free for blobs; `u64::MAX` when the device cannot tell.
    pub free: u64,
}

/// The answer to `RemoveDevice`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// The device removed.
    pub device: String,
    /// The devices told of the removal now, the removed one first if it heard it.
    pub told: Vec<String>,
}

/// The answer to `AddAddress`: nothing but `done`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressAdded {}

/// The first line of a pairing: the window is open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairWindow {
    /// The short code to type.
    pub code: String,
    /// The link to scan or paste.
    pub link: String,
    /// Whole seconds the window stays open.
    pub expires_in_secs: u64,
    /// The role the joiner will get.
    pub role: Role,
}

/// An event of a pairing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PairEvent {
    /// A device wants to join; the command answers with `PairDecision`.
    Confirm {
        /// Its name.
        name: String,
        /// Its site.
        site: String,
    },
}

/// The end of a pairing that succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paired {
    /// The new device's name.
    pub name: String,
    /// Its site.
    pub site: String,
    /// Its role.
    pub role: Role,
}

/// An event of a `Sync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SyncEvent {
    /// How far the push is.
    Progress {
        /// Blobs acknowledged so far.
        blobs: u64,
        /// Bytes sent so far.
        bytes: u64,
        /// Blobs to acknowledge in all.
        of: u64,
    },
}

/// The answer to `Sync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Synced {
    /// Earlier file versions the device lacks (their files changed before any device held
    /// them).
    pub versions_lacking: u64,
    /// The device pushed to.
    pub device: String,
    /// Blobs sent.
    pub blobs_sent: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Blobs the device already had.
    pub blobs_already_there: u64,
    /// File versions that could not be sent.
    pub versions_not_sent: u64,
}

/// The answer to `Status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// This device's name.
    pub device: String,
    /// Its site.
    pub site: String,
    /// Whether it cannot read the vault.
    pub storage_only: bool,
    /// The worst file of the vault as this device knows it.
    #[serde(with = "state_name")]
    pub worst: State,
    /// The exit code of that state.
    pub exit: i32,
    /// The worst of this device's own folders.
    #[serde(with = "state_name")]
    pub own_worst: State,
    /// Whether every file keeps a copy if any one site is lost.
    pub survives_site_loss: bool,
    /// What the agent's own work is doing.
    pub doing: Doing,
    /// Devices that refuse this device's copies.
    pub refusing: Vec<Refusing>,
    /// This device's folders.
    pub folders: Vec<crate::status::FolderSummary>,
    /// The other devices' folders, as each last judged them.
    pub vault: Vec<VaultDevice>,
    /// What this device holds for the vault.
    pub holds: Holds,
}

/// What the agent's own work is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doing {
    /// In words.
    pub what: String,
    /// Since when.
    pub since: u64,
    /// When the next round starts (`None` while one runs).
    pub next: Option<u64>,
}

/// A device that refuses this device's copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusing {
    /// Its name.
    pub device: String,
    /// Why (`Refusal::as_str`).
    pub code: String,
    /// Why, in words.
    pub reason: String,
    /// Since when.
    pub since: u64,
}

/// Another device's folders, from its last signed verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultDevice {
    /// Its name.
    pub device: String,
    /// Its site.
    pub site: String,
    /// Whether it is connected now.
    pub reachable: bool,
    /// When it judged.
    pub evaluated: i64,
    /// The worst of its folders.
    #[serde(with = "state_name")]
    pub worst: State,
    /// Its folders.
    pub folders: Vec<VaultFolder>,
}

/// A folder of another device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultFolder {
    /// Its path on its device.
    pub folder: String,
    /// Its policy, in words.
    pub policy: String,
    /// When it was last backed up, if ever.
    pub last_backup: Option<i64>,
    /// Files per state (every state listed).
    pub counts: BTreeMap<String, u64>,
    /// The worst state of its files.
    #[serde(with = "state_name")]
    pub worst: State,
    /// Why files are not protected: (state, reason in words, how many files).
    pub reasons: Vec<(String, String, u64)>,
}

/// What this device's stores hold for the vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holds {
    /// Blobs.
    pub blobs: u64,
    /// Bytes.
    pub bytes: u64,
    /// When a device of the vault last audited them, if ever.
    pub last_audited: Option<u64>,
}

/// The answer to `Check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checked {
    /// One per hash asked, in order.
    pub files: Vec<CheckedFile>,
}

/// The state of the file versions with one content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckedFile {
    /// The hash asked.
    pub hash: String,
    /// The best state of a current version with it; `None`: no such version.
    #[serde(with = "state_name::option")]
    pub state: Option<State>,
    /// The vault path of that version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_path: Option<String>,
}

/// The answer to `Audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audits {
    /// Every other device.
    pub devices: Vec<AuditRow>,
}

/// One device's audits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    /// Its name.
    pub device: String,
    /// Its site.
    pub site: String,
    /// When its copies were last all proven, if ever.
    pub last_proven: Option<i64>,
    /// Whether its copies failed the last audit.
    pub bad: bool,
    /// The audit just run (with `now`).
    pub audit: Option<AuditOutcome>,
}

/// How an audit of a device went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AuditOutcome {
    /// Every range was proven.
    Passed {
        /// The ranges proven.
        ranges: u64,
        /// A file read back whole, if one was.
        restored: Option<Restored>,
    },
    /// A proof was wrong or missing.
    Failed {
        /// Why.
        reason: String,
    },
    /// The device could not be reached.
    Unreachable,
    /// The device holds no acknowledged copy.
    #[serde(rename = "nothing to audit")]
    Nothing,
}

/// A file an audit read back whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// Its vault path.
    pub path: String,
    /// Its size.
    pub bytes: u64,
}

/// The answer to `Reload`: what the agent now does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// The folders it protects.
    pub folders: Vec<String>,
    /// The stores it keeps copies in.
    pub stores: Vec<String>,
    /// Whether it backs the folders up on its own.
    pub backs_up: bool,
}

/// An event of a `Fetch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FetchEvent {
    /// The fetch asks a device next.
    Fetching {
        /// The device.
        from: String,
        /// Blobs fetched so far.
        fetched: u64,
        /// Blobs asked for.
        of: u64,
    },
    /// Blobs came.
    Progress {
        /// The device.
        from: String,
        /// Blobs fetched so far.
        fetched: u64,
        /// Blobs asked for.
        of: u64,
    },
    /// A device stopped answering.
    Gone {
        /// The device.
        device: String,
        /// Why.
        reason: String,
    },
}

/// The answer to `Fetch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetched {
    /// Blobs fetched.
    pub fetched: u64,
    /// Blobs no device gave.
    pub missing: u64,
    /// The devices that gave some.
    pub from: Vec<String>,
    /// The devices that failed.
    pub failed: Vec<FetchFailed>,
}

/// A device a fetch failed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchFailed {
    /// The device.
    pub device: String,
    /// Why.
    pub reason: String,
}

/// A field that may be null but is there: `Some(None)` for null, `None` (by default) when the
/// field is absent.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// A [`State`] by its name (`PROTECTED`, `AT-RISK`, ...), as people read it.
mod state_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use triad_core::policy::State;

    pub(super) fn serialize<S: Serializer>(state: &State, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(state.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<State, D::Error> {
        let name = String::deserialize(d)?;
        State::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("{name:?} is not a state")))
    }

    /// The same for a state that may be missing (null).
    pub(super) mod option {
        use super::*;

        pub(in super::super) fn serialize<S: Serializer>(
            state: &Option<State>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match state {
                Some(state) => s.serialize_some(state.as_str()),
                None => s.serialize_none(),
            }
        }

        pub(in super::super) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<State>, D::Error> {
            let Some(name) = Option::<String>::deserialize(d)? else { return Ok(None) };
            State::parse(&name)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("{name:?} is not a state")))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use serde_json::json;

    use super::*;

    /// `answer` serializes to `wire` and reads back as itself, also as the final line.
    fn round_trips<T>(answer: T, wire: serde_json::Value)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + Clone,
    {
        let value = serde_json::to_value(&answer).expect("serializes");
        assert_eq!(value, wire);
        let text = serde_json::to_string(&answer).expect("serializes");
        assert_eq!(serde_json::from_str::<T>(&text).expect("reads back"), answer);
        // The final line adds `done`, which the command's type reads past.
        let done = serde_json::to_string(&Done::new(answer.clone())).expect("serializes");
        assert_eq!(serde_json::from_str::<T>(&done).expect("reads back"), answer);
        let back: Done<T> = serde_json::from_str(&done).expect("reads back");
        assert_eq!(back, Done::new(answer));
    }

    #[test]
    fn failures_round_trip() {
        round_trips(Failure::message("no"), json!({"error": "no"}));
        let refused = Failure {
            error: "full".into(),
            kind: Some(FailureKind::Refused),
            code: Some(Some("full".into())),
        };
        round_trips(refused, json!({"error": "full", "kind": "refused", "code": "full"}));
        let plain = Failure { error: "x".into(), kind: Some(FailureKind::Error), code: Some(None) };
        round_trips(plain, json!({"error": "x", "kind": "error", "code": null}));
        let text = r#"{"error":"gone","kind":"unreachable","code":null}"#;
        let back: Failure = serde_json::from_str(text).expect("reads");
        assert_eq!(back.kind, Some(FailureKind::Unreachable));
        assert_eq!(back.code, Some(None));
    }

    #[test]
    fn lease_and_small_answers_round_trip() {
        round_trips(Leased { leased: true }, json!({"leased": true}));
        round_trips(AddressAdded {}, json!({}));
        assert_eq!(
            serde_json::to_value(Done::new(AddressAdded {})).expect("serializes"),
            json!({"done": true})
        );
        round_trips(
            Removed { device: "pi".into(), told: vec!["pi".into(), "nas".into()] },
            json!({"device": "pi", "told": ["pi", "nas"]}),
        );
        round_trips(
            Reloaded { folders: vec!["/a".into()], stores: vec![], backs_up: true },
            json!({"folders": ["/a"], "stores": [], "backs_up": true}),
        );
    }

    #[test]
    fn devices_round_trip() {
        let device = Device {
            name: "nas".into(),
            site: "home".into(),
            role: Role::StorageOnly,
            device: "ab".into(),
            this: false,
            online: Some(true),
            last_seen: Some(5),
            address: None,
            stores: vec![DeviceStore { id: "cd".into(), media: "hdd".into(), free: u64::MAX }],
            path: Some("lan".into()),
            relay: None,
            rtt_ms: Some(3),
            sent_bytes: 10,
            received_bytes: 0,
            send_rate: None,
            receive_rate: None,
            last_error: Some("it went away".into()),
            last_error_at: Some(7),
        };
        round_trips(
            Devices { devices: vec![device.clone()] },
            json!({"devices": [{
                "name": "nas", "site": "home", "role": "storage-only", "device": "ab",
                "this": false, "online": true, "last_seen": 5, "address": null,
                "stores": [{"id": "cd", "media": "hdd", "free": u64::MAX}],
                "path": "lan", "relay": null, "rtt_ms": 3, "sent_bytes": 10, "received_bytes": 0,
                "send_rate": null, "receive_rate": null, "last_error": "it went away",
                "last_error_at": 7,
            }]}),
        );
        // An agent that predates the path and the traffic still answers a newer command.
        let older: Devices = serde_json::from_value(json!({"devices": [{
            "name": "nas", "site": "home", "role": "storage-only", "device": "ab",
            "this": false, "online": true, "last_seen": 5, "address": null, "stores": [],
        }]}))
        .expect("an older answer");
        assert_eq!(older.devices[0].path, None);
        assert_eq!(older.devices[0].sent_bytes, 0);
    }

    #[test]
    fn pairing_lines_round_trip() {
        round_trips(
            PairWindow {
                code: "12-ab".into(),
                link: "triad://x".into(),
                expires_in_secs: 600,
                role: Role::Trusted,
            },
            json!({"code": "12-ab", "link": "triad://x", "expires_in_secs": 600, "role": "trusted"}),
        );
        round_trips(
            PairEvent::Confirm { name: "pi".into(), site: "away".into() },
            json!({"event": "confirm", "name": "pi", "site": "away"}),
        );
        round_trips(
            Paired { name: "pi".into(), site: "away".into(), role: Role::StorageOnly },
            json!({"name": "pi", "site": "away", "role": "storage-only"}),
        );
    }

    #[test]
    fn sync_lines_round_trip() {
        round_trips(
            SyncEvent::Progress { blobs: 1, bytes: 2, of: 3 },
            json!({"event": "progress", "blobs": 1, "bytes": 2, "of": 3}),
        );
        round_trips(
            Synced {
                versions_lacking: 0,
                device: "nas".into(),
                blobs_sent: 4,
                bytes_sent: 5,
                blobs_already_there: 6,
                versions_not_sent: 7,
            },
            json!({"versions_lacking": 0, "device": "nas", "blobs_sent": 4, "bytes_sent": 5,
                   "blobs_already_there": 6, "versions_not_sent": 7}),
        );
    }

    #[test]
    fn status_round_trips() {
        let counts: BTreeMap<String, u64> =
            State::ALL.iter().map(|s| (s.as_str().to_owned(), 1)).collect();
        let folder = crate::status::FolderSummary {
            folder: "/pics".into(),
            policy: "copies=3".into(),
            snapshot: Some(("ef".into(), 9)),
            counts: counts.clone(),
            reasons: vec![("AT-RISK".into(), "only here".into(), 2)],
            worst: "AT-RISK".into(),
            survives_site_loss: false,
            files: vec![("a.jpg".into(), "AT-RISK".into(), vec!["only here".into()])],
            history: counts.clone(),
        };
        let status = Status {
            device: "laptop".into(),
            site: "home".into(),
            storage_only: false,
            worst: State::AtRisk,
            exit: State::AtRisk.exit_code(),
            own_worst: State::Degraded,
            survives_site_loss: false,
            doing: Doing { what: "watching the folders".into(), since: 3, next: None },
            refusing: vec![Refusing {
                device: "nas".into(),
                code: "full".into(),
                reason: "disk full".into(),
                since: 4,
            }],
            folders: vec![folder],
            vault: vec![VaultDevice {
                device: "pi".into(),
                site: "away".into(),
                reachable: true,
                evaluated: 8,
                worst: State::Protected,
                folders: vec![VaultFolder {
                    folder: "/docs".into(),
                    policy: "copies=2".into(),
                    last_backup: None,
                    counts: counts.clone(),
                    worst: State::Protected,
                    reasons: vec![],
                }],
            }],
            holds: Holds { blobs: 1, bytes: 2, last_audited: Some(7) },
        };
        let value = serde_json::to_value(&status).expect("serializes");
        assert_eq!(value["worst"], "AT-RISK");
        assert_eq!(value["own_worst"], "DEGRADED");
        assert_eq!(value["folders"][0]["snapshot"], json!(["ef", 9]));
        assert_eq!(value["folders"][0]["reasons"][0], json!(["AT-RISK", "only here", 2]));
        assert_eq!(value["folders"][0]["files"][0], json!(["a.jpg", "AT-RISK", ["only here"]]));
        assert_eq!(value["vault"][0]["worst"], "PROTECTED");
        assert_eq!(
            value["doing"],
            json!({"what": "watching the folders", "since": 3, "next": null})
        );
        round_trips(status, value);
    }

    #[test]
    fn check_round_trips() {
        round_trips(
            Checked {
                files: vec![
                    CheckedFile {
                        hash: "aa".into(),
                        state: Some(State::PendingOffsite),
                        vault_path: Some("/pics/a.jpg".into()),
                    },
                    CheckedFile { hash: "bb".into(), state: None, vault_path: None },
                ],
            },
            json!({"files": [
                {"hash": "aa", "state": "PENDING-OFFSITE", "vault_path": "/pics/a.jpg"},
                {"hash": "bb", "state": null},
            ]}),
        );
    }

    #[test]
    fn audits_round_trip() {
        let row = |audit| AuditRow {
            device: "pi".into(),
            site: "away".into(),
            last_proven: Some(3),
            bad: false,
            audit,
        };
        round_trips(
            Audits {
                devices: vec![
                    row(Some(AuditOutcome::Passed {
                        ranges: 4,
                        restored: Some(Restored { path: "/a".into(), bytes: 5 }),
                    })),
                    row(Some(AuditOutcome::Passed { ranges: 4, restored: None })),
                    row(Some(AuditOutcome::Failed { reason: "bad proof".into() })),
                    row(Some(AuditOutcome::Unreachable)),
                    row(Some(AuditOutcome::Nothing)),
                    row(None),
                ],
            },
            json!({"devices": [
                {"device": "pi", "site": "away", "last_proven": 3, "bad": false,
                 "audit": {"result": "passed", "ranges": 4, "restored": {"path": "/a", "bytes": 5}}},
                {"device": "pi", "site": "away", "last_proven": 3, "bad": false,
                 "audit": {"result": "passed", "ranges": 4, "restored": null}},
                {"device": "pi", "site": "away", "last_proven": 3, "bad": false,
                 "audit": {"result": "failed", "reason": "bad proof"}},
                {"device": "pi", "site": "away", "last_proven": 3, "bad": false,
                 "audit": {"result": "unreachable"}},
                {"device": "pi", "site": "away", "last_proven": 3, "bad": false,
                 "audit": {"result": "nothing to audit"}},
                {"device": "pi", "site": "away", "last_proven": 3, "bad": false, "audit": null},
            ]}),
        );
    }

    #[test]
    fn fetch_lines_round_trip() {
        round_trips(
            FetchEvent::Fetching { from: "nas".into(), fetched: 0, of: 9 },
            json!({"event": "fetching", "from": "nas", "fetched": 0, "of": 9}),
        );
        round_trips(
            FetchEvent::Progress { from: "nas".into(), fetched: 3, of: 9 },
            json!({"event": "progress", "from": "nas", "fetched": 3, "of": 9}),
        );
        round_trips(
            FetchEvent::Gone { device: "nas".into(), reason: "timeout".into() },
            json!({"event": "gone", "device": "nas", "reason": "timeout"}),
        );
        round_trips(
            Fetched {
                fetched: 3,
                missing: 6,
                from: vec!["nas".into()],
                failed: vec![FetchFailed { device: "pi".into(), reason: "offline".into() }],
            },
            json!({"fetched": 3, "missing": 6, "from": ["nas"],
                   "failed": [{"device": "pi", "reason": "offline"}]}),
        );
    }
}
