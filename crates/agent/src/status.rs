//! Where this device's files stand: the copies of the current version of every file in its
//! folders, evaluated against the policy (`triad_core::policy`).
//!
//! The copies of a file version, as this device knows them:
//! - the source file, while it is unchanged on disk since the snapshot that recorded it (same
//!   modification time), proven when that snapshot was taken;
//! - each local store that holds the folder's latest snapshot (a backup writes every store),
//!   proven when the snapshot was committed; never the home's catalog, which holds no data;
//! - each store of a peer on the roster that acknowledged a snapshot of the folder naming the
//!   same file version (the replica ledger), proven when it acknowledged it, unless the push
//!   could not send that version (its source changed first: see `crate::storeless`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use triad_core::policy::{self, Copy, Evaluation, Holder, Policy, Reason, State};
use triad_core::roster::Roster;
use triad_core::snapshot::{FileEntry, NodeKind, Snapshot, Tree};
use triad_core::{BlobId, DeviceId, FolderId, Media, StoreId, Timestamp};

use crate::catalog::{Catalog, CatalogError};
use crate::config::Config;
use crate::replicas::Ledger;

/// One file's current version and where it stands.
#[derive(Debug, Clone)]
pub struct FileState {
    /// Its path in the folder.
    pub path: String,
    /// The version (its file entry blob).
    pub entry: BlobId,
    /// Its content's BLAKE3 hash, when asked for.
    pub hash: Option<[u8; 32]>,
    /// The copies counted.
    pub copies: Vec<Copy>,
    /// The outcome.
    pub evaluation: Evaluation,
}

/// One folder.
#[derive(Debug, Clone)]
pub struct FolderState {
    /// The folder.
    pub id: FolderId,
    /// Where it is.
    pub path: String,
    /// Its policy.
    pub policy: Policy,
    /// Its latest snapshot and when it was taken; `None` if it was never backed up.
    pub snapshot: Option<(BlobId, Timestamp)>,
    /// Every file of the latest snapshot.
    pub files: Vec<FileState>,
    /// Earlier versions (in earlier snapshots, no longer current), each with the copies it
    /// has: history, reported but not replicated further.
    pub history: Vec<Evaluation>,
    /// Files on disk that are new or changed since the latest snapshot (seen by the file
    /// watcher): their only copy is the source file until the next backup.
    pub unsaved: Vec<String>,
}

/// What the evaluation needs to know beyond the stores.
pub struct Inputs<'a> {
    /// The device's settings.
    pub config: &'a Config,
    /// The vault's roster (sites, removed devices).
    pub roster: &'a Roster,
    /// This device.
    pub me: DeviceId,
    /// What peers acknowledged.
    pub ledger: &'a Ledger,
    /// Now.
    pub now: Timestamp,
    /// Whether to read every file entry for its content hash (for `triad check`).
    pub hashes: bool,
    /// Per folder, paths (relative) seen to change since its last backup began.
    pub unsaved: &'a HashMap<FolderId, HashSet<PathBuf>>,
}

/// Evaluates every folder of the device.
pub fn evaluate(
    catalog: &Catalog<'_>,
    inputs: &Inputs<'_>,
) -> Result<Vec<FolderState>, CatalogError> {
    let config = inputs.config;
    let windows = config.policy.windows();
    let me = inputs.roster.device(inputs.me);
    let home_site = me.map_or("", |e| e.site.as_str());
    let store_media: HashMap<StoreId, Media> =
        config.stores.iter().map(|s| (s.id, s.media)).collect();
    let heads = catalog.heads()?;
    // Which local stores hold which snapshot as a head.
    let mut held_by: HashMap<BlobId, Vec<StoreId>> = HashMap::new();
    // The catalog holds no data: never a copy.
    for store in config.holding_data(catalog.stores()) {
        for head in store.heads().unwrap_or_default() {
            held_by.entry(head.head.snapshot).or_default().push(store.id());
        }
    }
    let mut walker = Walker { catalog, trees: HashMap::new(), entries: HashMap::new() };

    let mut out = Vec::new();
    for folder in &config.folders {
        let policy = config.policy_of(folder);
        let mut state = FolderState {
            id: folder.id,
            path: folder.path.display().to_string(),
            policy,
            snapshot: None,
            files: Vec::new(),
            history: Vec::new(),
            unsaved: Vec::new(),
        };
        let unsaved = inputs.unsaved.get(&folder.id).filter(|paths| !paths.is_empty());
        let Some(head) =
            heads.iter().find(|h| h.head.device == inputs.me && h.head.folder == folder.id)
        else {
            if let Some(paths) = unsaved {
                state.unsaved = not_in(&folder.path, paths, &HashMap::new(), config, folder);
            }
            out.push(state);
            continue;
        };
        let snapshot_id = head.head.snapshot;
        let snapshot: Snapshot = catalog.load(snapshot_id)?;
        state.snapshot = Some((snapshot_id, snapshot.time));

        // The copies every file of this snapshot has in stores, local and remote.
        // A local store is proven when it took the snapshot (fsynced), and again at each
        // scrub that found no damage.
        let proven_at = |key: String| {
            let checked = inputs.ledger.checked(&key).unwrap_or(i64::MIN);
            if checked > snapshot.time.secs { Timestamp::new(checked, 0) } else { snapshot.time }
        };
        let mut local: Vec<Copy> = Vec::new();
        for store in held_by.get(&snapshot_id).into_iter().flatten() {
            local.push(Copy {
                holder: Holder::Store { device: inputs.me, store: *store },
                media: store_media.get(store).copied().unwrap_or(folder.media),
                site: home_site.to_owned(),
                proven: {
                    let key = format!("store:{}", store.to_hex());
                    (!inputs.ledger.damaged.contains(&key)).then(|| proven_at(key))
                },
            });
        }
        let source_proven = proven_at(format!("folder:{}", folder.id.to_hex()));
        let suspect: HashSet<&str> = inputs
            .ledger
            .suspect
            .get(&folder.id.to_hex())
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        let mut remote: Vec<(HashSet<BlobId>, Vec<Copy>)> = Vec::new();
        for entry in inputs.roster.devices() {
            if entry.device == inputs.me {
                continue;
            }
            let Some((stores, acked)) = inputs.ledger.get(entry.device, folder.id) else {
                continue;
            };
            // A push sends every snapshot of the history, so the peer holds every version
            // up to the one it acknowledged, but those that could not be read again.
            let mut versions = walker.history(acked.snapshot)?;
            for version in &acked.lacking {
                versions.remove(version);
            }
            let copies = stores
                .iter()
                .map(|s| Copy {
                    holder: Holder::Store { device: entry.device, store: s.id },
                    media: s.media,
                    site: entry.site.clone(),
                    proven: acked.proof.counts_since(),
                })
                .collect();
            remote.push((versions, copies));
        }

        let mut files = Vec::new();
        walker.files(snapshot.root, &mut Vec::new(), &mut files)?;
        if let Some(paths) = unsaved {
            let recorded: HashMap<&[u8], Timestamp> =
                files.iter().map(|(path, _, mtime)| (path.as_slice(), *mtime)).collect();
            state.unsaved = not_in(&folder.path, paths, &recorded, config, folder);
        }
        for (path, entry, mtime) in files {
            let mut copies = Vec::new();
            let path_text = String::from_utf8_lossy(&path);
            if source_unchanged(&folder.path, &path, mtime) && !suspect.contains(path_text.as_ref())
            {
                copies.push(Copy {
                    holder: Holder::Source { device: inputs.me, folder: folder.id },
                    media: folder.media,
                    site: home_site.to_owned(),
                    proven: Some(source_proven),
                });
            }
            copies.extend(local.iter().cloned());
            for (versions, peer_copies) in &remote {
                if versions.contains(&entry) {
                    copies.extend(peer_copies.iter().cloned());
                }
            }
            let evaluation = policy::evaluate(policy, windows, home_site, &copies, inputs.now);
            let hash =
                if inputs.hashes { Some(catalog.load::<FileEntry>(entry)?.hash) } else { None };
            state.files.push(FileState {
                path: String::from_utf8_lossy(&path).into_owned(),
                entry,
                hash,
                copies,
                evaluation,
            });
        }

        // Earlier versions: in each local store that holds the version's file entry (a backup
        // puts a file's chunks before its entry, and a store added later holds no earlier
        // history), and on each peer that acknowledged a snapshot after them; never the
        // source (it changed).
        let current: HashSet<BlobId> = state.files.iter().map(|f| f.entry).collect();
        if let Some(parent) = snapshot.parent {
            let earlier = walker.history(parent)?;
            for version in earlier.difference(&current) {
                let mut copies: Vec<Copy> = local
                    .iter()
                    .filter(|c| {
                        let Holder::Store { store, .. } = c.holder else { return false };
                        catalog.stores().iter().any(|s| {
                            s.id() == store && s.holds_committed(*version).unwrap_or(false)
                        })
                    })
                    .cloned()
                    .collect();
                for (versions, peer_copies) in &remote {
                    if versions.contains(version) {
                        copies.extend(peer_copies.iter().cloned());
                    }
                }
                state
                    .history
                    .push(policy::evaluate(policy, windows, home_site, &copies, inputs.now));
            }
        }
        out.push(state);
    }
    Ok(out)
}

/// Of `paths` (relative to `root`), the regular files that a backup would take and that are
/// not in the snapshot as they are now (`recorded`: path to modification time), sorted.
fn not_in(
    root: &Path,
    paths: &HashSet<PathBuf>,
    recorded: &HashMap<&[u8], Timestamp>,
    config: &Config,
    folder: &crate::config::FolderConfig,
) -> Vec<String> {
    let Ok(excludes) = config.excludes(folder) else { return Vec::new() };
    let mut out: Vec<String> = paths
        .iter()
        .filter(|rel| !excludes.leaves_out(rel))
        .filter(|rel| {
            let Ok(meta) = std::fs::symlink_metadata(root.join(rel)) else { return false };
            let now = Timestamp::new(meta.mtime(), u32::try_from(meta.mtime_nsec()).unwrap_or(0));
            meta.is_file() && recorded.get(rel.as_os_str().as_bytes()) != Some(&now)
        })
        .map(|rel| rel.to_string_lossy().into_owned())
        .collect();
    out.sort_unstable();
    out
}

/// Every file of the snapshot `snapshot`: its path, version and modification time.
pub fn files_of(
    catalog: &Catalog<'_>,
    snapshot: BlobId,
) -> Result<Vec<(Vec<u8>, BlobId, Timestamp)>, CatalogError> {
    let root = catalog.load::<Snapshot>(snapshot)?.root;
    let mut out = Vec::new();
    Walker { catalog, trees: HashMap::new(), entries: HashMap::new() }.files(
        root,
        &mut Vec::new(),
        &mut out,
    )?;
    Ok(out)
}

/// Every file version (file entry blob) in the snapshot `snapshot`.
pub fn versions(catalog: &Catalog<'_>, snapshot: BlobId) -> Result<HashSet<BlobId>, CatalogError> {
    Walker { catalog, trees: HashMap::new(), entries: HashMap::new() }.versions(snapshot)
}

/// Whether the file at `rel` in `folder` still has the modification time it had when it was
/// recorded.
pub fn source_unchanged(folder: &Path, rel: &[u8], mtime: Timestamp) -> bool {
    let path = folder.join(std::ffi::OsStr::from_bytes(rel));
    std::fs::symlink_metadata(path).is_ok_and(|m| {
        m.is_file()
            && m.mtime() == mtime.secs
            && u32::try_from(m.mtime_nsec()).is_ok_and(|n| n == mtime.nanos)
    })
}

/// Reads snapshot trees once each.
pub(crate) struct Walker<'c, 'a> {
    catalog: &'c Catalog<'a>,
    trees: HashMap<BlobId, Tree>,
    /// The file versions under each snapshot already walked.
    entries: HashMap<BlobId, HashSet<BlobId>>,
}

impl Walker<'_, '_> {
    fn tree(&mut self, id: BlobId) -> Result<&Tree, CatalogError> {
        if !self.trees.contains_key(&id) {
            let tree: Tree = self.catalog.load(id)?;
            self.trees.insert(id, tree);
        }
        Ok(&self.trees[&id])
    }

    /// Every file version in the snapshot `id` and in every snapshot before it.
    /// Each distinct tree is read once: snapshots share every directory that did not change.
    fn history(&mut self, id: BlobId) -> Result<HashSet<BlobId>, CatalogError> {
        let mut all = HashSet::new();
        let mut seen: HashSet<BlobId> = HashSet::new();
        let mut next = Some(id);
        while let Some(id) = next {
            let snapshot: Snapshot = self.catalog.load(id)?;
            let mut trees = vec![snapshot.root];
            while let Some(tree) = trees.pop() {
                if !seen.insert(tree) {
                    continue;
                }
                for node in &self.tree(tree)?.nodes {
                    match node.kind {
                        NodeKind::File { entry } => {
                            all.insert(entry);
                        }
                        NodeKind::Dir { tree } => trees.push(tree),
                        NodeKind::Symlink { .. } => {}
                    }
                }
            }
            next = snapshot.parent;
        }
        Ok(all)
    }

    /// Every file version (file entry blob) in the snapshot `id`.
    fn versions(&mut self, id: BlobId) -> Result<HashSet<BlobId>, CatalogError> {
        if let Some(set) = self.entries.get(&id) {
            return Ok(set.clone());
        }
        let snapshot: Snapshot = self.catalog.load(id)?;
        let mut files = Vec::new();
        self.files(snapshot.root, &mut Vec::new(), &mut files)?;
        let set: HashSet<BlobId> = files.into_iter().map(|(_, entry, _)| entry).collect();
        self.entries.insert(id, set.clone());
        Ok(set)
    }

    /// Every file under the tree `id`: its path (under `prefix`), version and mtime.
    pub(crate) fn files(
        &mut self,
        id: BlobId,
        prefix: &mut Vec<u8>,
        out: &mut Vec<(Vec<u8>, BlobId, Timestamp)>,
    ) -> Result<(), CatalogError> {
        let nodes = self.tree(id)?.nodes.clone();
        for node in nodes {
            let len = prefix.len();
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(&node.name);
            match node.kind {
                NodeKind::File { entry } => out.push((prefix.clone(), entry, node.mtime)),
                NodeKind::Dir { tree } => self.files(tree, prefix, out)?,
                NodeKind::Symlink { .. } => {}
            }
            prefix.truncate(len);
        }
        Ok(())
    }
}

/// A length of time in words a person reads at a glance: "40 s", "12 min", "5 h", "3 days".
pub fn span(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

/// Names for the words of a reason.
pub struct Names<'a> {
    /// The roster, for device names.
    pub roster: &'a Roster,
    /// This device's site.
    pub home_site: &'a str,
    /// Now, for "ago".
    pub now: Timestamp,
}

impl Names<'_> {
    fn device(&self, device: DeviceId) -> String {
        self.roster.ever(device).map_or_else(|| device.short(), |e| e.name.clone())
    }

    fn holder(&self, holder: &Holder) -> String {
        match holder {
            Holder::Store { device, .. } => format!("the copy on {}", self.device(*device)),
            Holder::Source { .. } => "the source file".to_owned(),
        }
    }

    fn ago(&self, since: Timestamp) -> String {
        span(u64::try_from(self.now.secs.saturating_sub(since.secs)).unwrap_or(0))
    }

    /// One reason in plain words.
    pub fn reason(&self, reason: &Reason) -> String {
        match reason {
            Reason::Copies { have, need } => format!("{have} of {need} copies"),
            Reason::Media { have, need } => format!("{have} of {need} kinds of media"),
            Reason::Offsite { have: 0, need: _ } => {
                format!("no copy away from {}", self.home_site)
            }
            Reason::Offsite { have, need } => {
                format!("{have} of {need} copies away from {}", self.home_site)
            }
            Reason::Unverified { holder, since } => format!(
                "{} was last proven {} ago (offline?)",
                self.holder(holder),
                self.ago(*since)
            ),
            Reason::Gone { holder, since } => format!(
                "{} has not been proven for {}: no longer counted",
                self.holder(holder),
                self.ago(*since)
            ),
            Reason::Bad { holder } => format!("{} failed a check", self.holder(holder)),
        }
    }
}

/// A summary of one folder for `triad status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderSummary {
    /// The folder's path.
    pub folder: String,
    /// Its policy, as `copies=3 media=2 offsite=1`.
    pub policy: String,
    /// Its latest snapshot (id, seconds since the epoch).
    pub snapshot: Option<(String, i64)>,
    /// Files per state (every state listed).
    pub counts: BTreeMap<String, u64>,
    /// Why files are not protected: (state, reason in words, how many files).
    pub reasons: Vec<(String, String, u64)>,
    /// The worst state of its files (`PROTECTED` for an empty folder).
    pub worst: String,
    /// Whether every file keeps a copy if any one site is lost.
    pub survives_site_loss: bool,
    /// The files asked for: (path, state, reasons).
    pub files: Vec<(String, String, Vec<String>)>,
    /// Earlier versions per state (every state listed); they do not count towards `worst`.
    pub history: BTreeMap<String, u64>,
}

/// Summarises `folder`; lists the files in `list` states.
pub fn summarise(folder: &FolderState, names: &Names<'_>, list: &[State]) -> FolderSummary {
    let mut counts: BTreeMap<String, u64> =
        State::ALL.iter().map(|s| (s.as_str().to_owned(), 0)).collect();
    let mut reasons: BTreeMap<(State, String), u64> = BTreeMap::new();
    let mut files = Vec::new();
    let mut worst = State::Protected;
    let mut survives = true;
    for file in &folder.files {
        let state = file.evaluation.state;
        *counts.entry(state.as_str().to_owned()).or_default() += 1;
        worst = worst.max(state);
        survives &= file.evaluation.survives_site_loss;
        let words: Vec<String> = file.evaluation.reasons.iter().map(|r| names.reason(r)).collect();
        for w in &words {
            *reasons.entry((state, w.clone())).or_default() += 1;
        }
        if list.contains(&state) {
            files.push((file.path.clone(), state.as_str().to_owned(), words));
        }
    }
    let mut reasons: Vec<(String, String, u64)> =
        reasons.into_iter().map(|((s, w), n)| (s.as_str().to_owned(), w, n)).collect();
    if !folder.unsaved.is_empty() {
        // New or changed on disk since the latest snapshot: only the source file so far.
        let n = folder.unsaved.len() as u64;
        *counts.entry(State::AtRisk.as_str().to_owned()).or_default() += n;
        worst = worst.max(State::AtRisk);
        survives = false;
        reasons.push((
            State::AtRisk.as_str().to_owned(),
            "not backed up yet: only on this device".into(),
            n,
        ));
        if list.contains(&State::AtRisk) {
            for path in &folder.unsaved {
                files.push((
                    path.clone(),
                    State::AtRisk.as_str().to_owned(),
                    vec!["not backed up yet".into()],
                ));
            }
        }
    }
    if folder.snapshot.is_none() {
        // Whatever the folder holds is only on its own disk.
        worst = State::AtRisk;
        survives = false;
        reasons.push((
            State::AtRisk.as_str().to_owned(),
            "never backed up: only the source files".into(),
            0,
        ));
    }
    FolderSummary {
        folder: folder.path.clone(),
        policy: folder.policy.to_string(),
        snapshot: folder.snapshot.map(|(id, t)| (id.to_hex(), t.secs)),
        counts,
        reasons,
        worst: worst.as_str().to_owned(),
        survives_site_loss: survives,
        files,
        history: {
            let mut history: BTreeMap<String, u64> =
                State::ALL.iter().map(|s| (s.as_str().to_owned(), 0)).collect();
            for e in &folder.history {
                *history.entry(e.state.as_str().to_owned()).or_default() += 1;
            }
            history
        },
    }
}
