//! The snapshots a device can see: heads in its stores, and the metadata chains behind them.
//!
//! Every blob is read from the first store that holds an intact copy: a blob that is damaged
//! in one store is read from another, and only when no store has it does reading fail.

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path};

use triad_core::head::SignedHead;
use triad_core::keys::VaultKeys;
use triad_core::seal::SealedBlob;
use triad_core::snapshot::{self, FileEntry, Node, NodeKind, Object, Snapshot, Tree};
use triad_core::{BlobId, DeviceId, FolderId};
use triad_store::{ReadError, Store};

/// A snapshot and its address.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    /// The snapshot blob.
    pub id: BlobId,
    /// The snapshot.
    pub snapshot: Snapshot,
}

/// Something in the catalog could not be found or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// No store holds an intact copy of a blob.
    #[error("no store holds an intact copy of {kind} {blob}")]
    Unreadable {
        /// What the blob should hold.
        kind: &'static str,
        /// The blob.
        blob: BlobId,
        /// The last store error.
        #[source]
        source: Box<ReadError>,
    },
    /// A blob did not open or decode.
    #[error("cannot read {kind} {blob}")]
    Object {
        /// What the blob should hold.
        kind: &'static str,
        /// The blob.
        blob: BlobId,
        /// The cause.
        #[source]
        source: Box<snapshot::ReadError>,
    },
    /// A blob is intact (its bytes match its address) but does not open with this device's
    /// vault key: the key is not this vault's.
    #[error(
        "{kind} {blob} is intact but does not open with this device's vault key: the vault.key in this device's home does not belong to this vault (put back the right one from a copy of the home, or set the device up again with `triad recover`)"
    )]
    WrongKey {
        /// What the blob should hold.
        kind: &'static str,
        /// The blob.
        blob: BlobId,
    },
    /// A store's heads could not be listed.
    #[error("cannot read the heads of store {path}")]
    Heads {
        /// The store.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: Box<ReadError>,
    },
    /// There are no snapshots yet.
    #[error("there are no snapshots yet: run `triad backup`")]
    Empty,
    /// No snapshot matches the selector.
    #[error("no snapshot matches {selector:?} (see `triad snapshots`)")]
    NoMatch {
        /// What was asked for.
        selector: String,
    },
    /// More than one snapshot matches a prefix.
    #[error("{selector:?} matches several snapshots; give more characters")]
    Ambiguous {
        /// What was asked for.
        selector: String,
    },
    /// No folder matches the name.
    #[error("no folder named {name:?} has snapshots (see `triad snapshots`)")]
    NoFolder {
        /// The name asked for.
        name: String,
    },
    /// The path does not exist in the snapshot.
    #[error("{path} is not in snapshot {snapshot}")]
    NoPath {
        /// The path asked for.
        path: String,
        /// The snapshot.
        snapshot: String,
    },
}

/// Read access to the snapshots in a set of stores.
pub struct Catalog<'a> {
    keys: &'a VaultKeys,
    stores: &'a [Store],
}

impl<'a> Catalog<'a> {
    /// A catalog over `stores`.
    pub fn new(keys: &'a VaultKeys, stores: &'a [Store]) -> Self {
        Self { keys, stores }
    }

    /// The stores behind the catalog.
    pub fn stores(&self) -> &'a [Store] {
        self.stores
    }

    /// The highest head of every (device, folder) found in any store.
    pub fn heads(&self) -> Result<Vec<SignedHead>, CatalogError> {
        let mut best: BTreeMap<(DeviceId, FolderId), SignedHead> = BTreeMap::new();
        for store in self.stores {
            let heads = store.heads().map_err(|source| CatalogError::Heads {
                path: store.path().into(),
                source: Box::new(source),
            })?;
            // A head counts only if its device is on the vault's roster: anyone can make a key
            // and sign a head, but nobody without the phrase or a trusted device can forge the
            // roster (it is verified when read).
            let roster = store.roster().map_err(|source| CatalogError::Heads {
                path: store.path().into(),
                source: Box::new(source),
            })?;
            for head in heads {
                if roster.as_ref().is_none_or(|r| r.device(head.head.device).is_none()) {
                    tracing::warn!(
                        store = %store.path().display(),
                        device = %head.head.device.short(),
                        "ignoring a head from a device that is not on the roster"
                    );
                    continue;
                }
                let key = (head.head.device, head.head.folder);
                let newer = best.get(&key).is_none_or(|b| b.head.sequence < head.head.sequence);
                if newer {
                    best.insert(key, head);
                }
            }
        }
        Ok(best.into_values().collect())
    }

    /// Reads a blob from the first store that holds an intact copy.
    pub fn blob(&self, id: BlobId, kind: &'static str) -> Result<SealedBlob, CatalogError> {
        let mut last = None;
        for store in self.stores {
            match store.get(id) {
                Ok(blob) => return Ok(blob),
                Err(e) => {
                    if !matches!(e, ReadError::Missing { .. }) {
                        tracing::warn!(blob = %id, store = %store.path().display(), error = %e, "blob unreadable in one store");
                    }
                    last = Some(e);
                }
            }
        }
        Err(CatalogError::Unreadable {
            kind,
            blob: id,
            source: Box::new(last.unwrap_or(ReadError::Missing { blob: id })),
        })
    }

    /// Reads and opens a metadata object.
    pub fn load<T: Object>(&self, id: BlobId) -> Result<T, CatalogError> {
        let kind = T::KIND.as_str();
        let blob = self.blob(id, kind)?;
        T::open(self.keys, &blob).map_err(|source| match source {
            // The store verified the bytes against the address: they are what was stored.
            snapshot::ReadError::Open(triad_core::seal::OpenError::Authentication { .. }) => {
                CatalogError::WrongKey { kind, blob: id }
            }
            source => CatalogError::Object { kind, blob: id, source: Box::new(source) },
        })
    }

    /// Every snapshot of every folder, newest first within a folder.
    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>, CatalogError> {
        let mut out = Vec::new();
        for head in self.heads()? {
            out.extend(self.history(head.head.snapshot)?);
        }
        Ok(out)
    }

    /// The snapshot `id` and every ancestor, newest first.
    pub fn history(&self, id: BlobId) -> Result<Vec<SnapshotInfo>, CatalogError> {
        let mut out = Vec::new();
        let mut next = Some(id);
        while let Some(id) = next {
            let snapshot: Snapshot = self.load(id)?;
            next = snapshot.parent;
            out.push(SnapshotInfo { id, snapshot });
        }
        Ok(out)
    }

    /// The latest snapshot of each folder.
    pub fn latest(&self) -> Result<Vec<SnapshotInfo>, CatalogError> {
        let mut out = Vec::new();
        for head in self.heads()? {
            let snapshot: Snapshot = self.load(head.head.snapshot)?;
            out.push(SnapshotInfo { id: head.head.snapshot, snapshot });
        }
        Ok(out)
    }

    /// Resolves `selector` (`latest`, or a prefix of a snapshot id) to snapshots, optionally
    /// only those of the folder named `folder`. `latest` gives one snapshot per folder.
    pub fn resolve(
        &self,
        selector: &str,
        folder: Option<&str>,
    ) -> Result<Vec<SnapshotInfo>, CatalogError> {
        let in_folder = |s: &SnapshotInfo| {
            folder.is_none_or(|f| {
                s.snapshot.folder_name == f
                    || s.snapshot.folder.to_hex() == f
                    || String::from_utf8_lossy(&s.snapshot.folder_path) == f
            })
        };
        let all = if selector == "latest" { self.latest()? } else { self.snapshots()? };
        if all.is_empty() {
            return Err(CatalogError::Empty);
        }
        let chosen: Vec<SnapshotInfo> = all.into_iter().filter(in_folder).collect();
        if chosen.is_empty() {
            return Err(CatalogError::NoFolder { name: folder.unwrap_or_default().to_owned() });
        }
        if selector == "latest" {
            return Ok(chosen);
        }
        let prefix = selector.to_ascii_lowercase();
        let mut matches: Vec<SnapshotInfo> =
            chosen.into_iter().filter(|s| s.id.to_hex().starts_with(&prefix)).collect();
        matches.dedup_by_key(|s| s.id);
        match matches.len() {
            0 => Err(CatalogError::NoMatch { selector: selector.to_owned() }),
            1 => Ok(matches),
            _ => Err(CatalogError::Ambiguous { selector: selector.to_owned() }),
        }
    }

    /// The node at `rel` (relative to the folder) in `snapshot`; `None` for the folder root.
    pub fn find(&self, snapshot: &SnapshotInfo, rel: &Path) -> Result<Option<Node>, CatalogError> {
        let mut tree: Tree = self.load(snapshot.snapshot.root)?;
        let mut found: Option<Node> = None;
        let not_found = || CatalogError::NoPath {
            path: rel.display().to_string(),
            snapshot: snapshot.id.short(),
        };
        for component in rel.components() {
            let name = match component {
                Component::Normal(name) => name,
                Component::CurDir => continue,
                _ => return Err(not_found()),
            };
            if let Some(node) = &found {
                let NodeKind::Dir { tree: id } = node.kind else { return Err(not_found()) };
                tree = self.load(id)?;
            }
            use std::os::unix::ffi::OsStrExt;
            let node = tree
                .nodes
                .iter()
                .find(|n| n.name == name.as_bytes())
                .cloned()
                .ok_or_else(not_found)?;
            found = Some(node);
        }
        Ok(found)
    }
}

impl Catalog<'_> {
    /// Every blob that the snapshots of `device`'s folders need (each snapshot, its history,
    /// trees, file entries and chunks), data first and each snapshot last, so that a peer
    /// that receives them in this order never holds a reference before what it names.
    pub fn reachable(&self, device: DeviceId) -> Result<Vec<BlobId>, CatalogError> {
        let mut seen = HashSet::new();
        let mut data = Vec::new();
        let mut meta = Vec::new();
        for head in self.heads()?.into_iter().filter(|h| h.head.device == device) {
            let mut snapshots = Vec::new();
            let mut next = Some(head.head.snapshot);
            while let Some(id) = next {
                if !seen.insert(id) {
                    break;
                }
                let snapshot: Snapshot = self.load(id)?;
                self.reachable_tree(snapshot.root, &mut seen, &mut data, &mut meta)?;
                snapshots.push(id);
                next = snapshot.parent;
            }
            meta.extend(snapshots.into_iter().rev());
        }
        data.extend(meta);
        Ok(data)
    }

    fn reachable_tree(
        &self,
        id: BlobId,
        seen: &mut HashSet<BlobId>,
        data: &mut Vec<BlobId>,
        meta: &mut Vec<BlobId>,
    ) -> Result<(), CatalogError> {
        if !seen.insert(id) {
            return Ok(());
        }
        let tree: Tree = self.load(id)?;
        for node in tree.nodes {
            match node.kind {
                NodeKind::Dir { tree } => self.reachable_tree(tree, seen, data, meta)?,
                NodeKind::File { entry } => {
                    if seen.insert(entry) {
                        let file: FileEntry = self.load(entry)?;
                        for chunk in file.chunks {
                            if seen.insert(chunk.blob) {
                                data.push(chunk.blob);
                            }
                        }
                        meta.push(entry);
                    }
                }
                NodeKind::Symlink { .. } => {}
            }
        }
        meta.push(id);
        Ok(())
    }
}
