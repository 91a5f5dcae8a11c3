//! Verification: can every snapshot in the stores be restored?
//!
//! The structure check opens every snapshot, tree and file entry reachable from the heads
//! (each read is checked against its address and authenticated) and checks that every store
//! holds every chunk they reference. With `read_data`, each store also re-reads and
//! re-hashes every blob it holds. Every problem names the blob, the store, and every file
//! (folder, path, snapshots) that uses it, so a person knows what is at risk.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;

use triad_core::snapshot::{FileEntry, NodeKind, Snapshot, Tree};
use triad_core::{BlobId, StoreId};
use triad_store::Store;

use crate::catalog::{Catalog, CatalogError};
use crate::restore::DisplayChain;

/// Options of one verification.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Re-read and re-hash every blob in every store.
    pub read_data: bool,
    /// Stores that hold metadata only (the home's catalog): no chunk is looked for there.
    pub catalogs: Vec<StoreId>,
}

/// What verification reports while it works.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// Bytes re-hashed so far in one store.
    DataRead {
        /// The store.
        store: PathBuf,
        /// Bytes read.
        bytes: u64,
    },
}

/// One blob that is missing or damaged in one or more stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The blob.
    pub blob: BlobId,
    /// What it should hold ("chunk", "tree", ...), if known.
    pub kind: &'static str,
    /// Per store: what is wrong there.
    pub stores: Vec<(PathBuf, String)>,
    /// Files that use it: (folder name, path inside the folder, snapshot short ids).
    pub used_by: Vec<(String, String, Vec<String>)>,
}

/// The result of a verification.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Snapshots checked.
    pub snapshots: u64,
    /// Distinct trees checked.
    pub trees: u64,
    /// Distinct file entries checked.
    pub files: u64,
    /// Distinct chunks referenced.
    pub chunks: u64,
    /// Bytes re-hashed (with `read_data`).
    pub bytes_read: u64,
    /// Blobs re-hashed (with `read_data`).
    pub blobs_read: u64,
    /// Problems found.
    pub problems: Vec<Problem>,
    /// Damage in a store that cannot be tied to a blob (a damaged entry or pack header).
    pub unattributed: Vec<(PathBuf, String)>,
    /// Per store: head files that were missing, damaged or behind the packs, and blobs lost
    /// with a pack's end (found when the store was opened).
    pub store_repairs: Vec<(PathBuf, String)>,
    /// Blobs the scrub (`read_data`) found damaged, per store: to be dropped from its index so
    /// that they are stored again.
    pub damaged: Vec<(PathBuf, BlobId)>,
    /// Per store that holds any: how many blobs, of how many bytes, no snapshot reaches (a
    /// backup stopped before its snapshot, a file that changed while it was read, history
    /// lost with a damaged pack). They take space; nothing depends on them.
    pub unused: Vec<Unused>,
}

/// Blobs of one store that no snapshot reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unused {
    /// The store.
    pub store: PathBuf,
    /// How many.
    pub blobs: u64,
    /// Their bytes, as stored.
    pub bytes: u64,
}

impl Report {
    /// Whether everything checked out.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.unattributed.is_empty() && self.store_repairs.is_empty()
    }
}

/// Verification could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A store could not be read at all.
    #[error("cannot read store {path}")]
    Store {
        /// The store.
        path: PathBuf,
        /// The cause.
        #[source]
        source: triad_store::ReadError,
    },
    /// The heads could not be listed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Verifies every snapshot reachable from the heads in `catalog`'s stores.
pub fn verify(
    catalog: &Catalog<'_>,
    options: &Options,
    progress: &(dyn Fn(&Event) + Sync),
) -> Result<Report, VerifyError> {
    let stores = catalog.stores();
    let mut report = Report::default();
    // A key that is not the vault's makes every object unreadable: say that, not "damaged".
    if let Some(head) = catalog.heads()?.first()
        && let Err(err @ CatalogError::WrongKey { .. }) =
            catalog.load::<Snapshot>(head.head.snapshot)
    {
        return Err(err.into());
    }
    // Per blob: per store, what is wrong.
    let mut bad: Findings = BTreeMap::new();

    for store in stores {
        let path = store.path().to_path_buf();
        let repairs = store.repairs();
        for head in &repairs.heads {
            report.store_repairs.push((path.clone(), head.to_string()));
        }
        for lost in &repairs.lost {
            report.store_repairs.push((
                path.clone(),
                format!(
                    "{} blobs of {} were lost ({}) and are to be stored again",
                    lost.blobs,
                    lost.pack.display(),
                    lost.problem
                ),
            ));
        }
    }

    if options.read_data {
        for store in stores {
            let path = store.path().to_path_buf();
            let mut on_progress = |bytes| progress(&Event::DataRead { store: path.clone(), bytes });
            let scrub = store
                .scrub(&mut on_progress)
                .map_err(|source| VerifyError::Store { path: store.path().into(), source })?;
            report.bytes_read += scrub.bytes;
            report.blobs_read += scrub.blobs;
            for damage in scrub.damaged {
                let what = format!(
                    "damaged in {} at offset {}: {}",
                    damage
                        .pack
                        .file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                    damage.offset,
                    damage.problem
                );
                match damage.blob {
                    Some(blob) => {
                        report.damaged.push((path.clone(), blob));
                        bad.entry(blob).or_insert(("blob", Vec::new())).1.push((path.clone(), what))
                    }
                    None if damage.problem == triad_store::Problem::PackHeader => {
                        report.unattributed.push((
                            path.clone(),
                            format!(
                                "the header of pack {} is damaged: its blobs are still read entry \
                                 by entry, but the disk may be failing",
                                damage.pack.display()
                            ),
                        ))
                    }
                    None => report.unattributed.push((path.clone(), what)),
                }
            }
        }
    }

    let mut walker = Walker {
        catalog,
        stores,
        catalogs: &options.catalogs,
        trees: HashSet::new(),
        entries: HashSet::new(),
        chunks: HashSet::new(),
        bad: &mut bad,
    };
    let mut snapshots = HashSet::new();
    for head in catalog.heads()? {
        let mut next = Some(head.head.snapshot);
        while let Some(id) = next {
            if !snapshots.insert(id) {
                break; // Its history is walked already (two heads share it).
            }
            let snapshot: Snapshot = match catalog.load(id) {
                Ok(s) => s,
                Err(e) => {
                    walker.unreadable(id, "snapshot", &e);
                    break;
                }
            };
            report.snapshots += 1;
            walker.tree(snapshot.root);
            next = snapshot.parent;
        }
    }
    for store in stores {
        let blobs = store
            .blobs()
            .map_err(|source| VerifyError::Store { path: store.path().into(), source })?;
        let (mut count, mut bytes) = (0, 0);
        for blob in blobs {
            let id = &blob.id;
            if !(walker.chunks.contains(id)
                || walker.entries.contains(id)
                || walker.trees.contains(id)
                || snapshots.contains(id))
            {
                count += 1;
                bytes += u64::from(blob.len);
            }
        }
        if count > 0 {
            report.unused.push(Unused { store: store.path().to_path_buf(), blobs: count, bytes });
        }
    }
    report.trees = walker.trees.len() as u64;
    report.files = walker.entries.len() as u64;
    report.chunks = walker.chunks.len() as u64;

    if !bad.is_empty() {
        let users = usages(catalog, &bad.keys().copied().collect())?;
        for (blob, (kind, stores)) in bad {
            let used_by = users
                .iter()
                .filter(|(b, _)| *b == blob)
                .map(|(_, u)| u.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .fold(
                    BTreeMap::<(String, String), Vec<String>>::new(),
                    |mut acc, (folder, path, snap)| {
                        acc.entry((folder, path)).or_default().push(snap);
                        acc
                    },
                )
                .into_iter()
                .map(|((folder, path), snaps)| (folder, path, snaps))
                .collect();
            report.problems.push(Problem { blob, kind, stores, used_by });
        }
    }
    Ok(report)
}

/// Per blob: what it should hold, and per store what is wrong there.
type Findings = BTreeMap<BlobId, (&'static str, Vec<(PathBuf, String)>)>;

struct Walker<'a, 'b> {
    catalog: &'a Catalog<'a>,
    stores: &'a [Store],
    catalogs: &'a [StoreId],
    trees: HashSet<BlobId>,
    entries: HashSet<BlobId>,
    chunks: HashSet<BlobId>,
    bad: &'b mut Findings,
}

impl Walker<'_, '_> {
    fn unreadable(&mut self, blob: BlobId, kind: &'static str, e: &CatalogError) {
        let slot = self.bad.entry(blob).or_insert((kind, Vec::new()));
        slot.0 = kind;
        slot.1.push((PathBuf::from("(every store)"), DisplayChain(e).to_string()));
    }

    /// Checks that every store holds `blob`.
    fn present(&mut self, blob: BlobId, kind: &'static str) {
        for store in self.stores {
            if kind == "chunk" && self.catalogs.contains(&store.id()) {
                continue;
            }
            let problem = match store.contains(blob) {
                Ok(true) => None,
                Ok(false) => Some("missing".to_owned()),
                Err(e) => Some(DisplayChain(&e).to_string()),
            };
            if let Some(problem) = problem {
                let slot = self.bad.entry(blob).or_insert((kind, Vec::new()));
                slot.0 = kind;
                slot.1.push((store.path().into(), problem));
            }
        }
        // The scrub found damage without knowing what the blob holds: now we know.
        if let Some(slot) = self.bad.get_mut(&blob) {
            slot.0 = kind;
        }
    }

    fn tree(&mut self, id: BlobId) {
        if !self.trees.insert(id) {
            return;
        }
        self.present(id, "tree");
        let tree: Tree = match self.catalog.load(id) {
            Ok(t) => t,
            Err(e) => return self.unreadable(id, "tree", &e),
        };
        for node in tree.nodes {
            match node.kind {
                NodeKind::Dir { tree } => self.tree(tree),
                NodeKind::File { entry } => self.entry(entry),
                NodeKind::Symlink { .. } => {}
            }
        }
    }

    fn entry(&mut self, id: BlobId) {
        if !self.entries.insert(id) {
            return;
        }
        self.present(id, "file entry");
        let entry: FileEntry = match self.catalog.load(id) {
            Ok(e) => e,
            Err(e) => return self.unreadable(id, "file entry", &e),
        };
        for chunk in entry.chunks {
            if self.chunks.insert(chunk.blob) {
                self.present(chunk.blob, "chunk");
            }
        }
    }
}

type Usage = (String, String, String);

/// Every (blob, (folder, path, snapshot)) where a file or directory uses one of `bad`.
/// Walks every snapshot in full: only run when something is wrong.
fn usages(
    catalog: &Catalog<'_>,
    bad: &HashSet<BlobId>,
) -> Result<Vec<(BlobId, Usage)>, VerifyError> {
    let mut out = Vec::new();
    for info in catalog.snapshots().unwrap_or_default() {
        let snap = info.id.short();
        let folder = info.snapshot.folder_name.clone();
        if bad.contains(&info.id) {
            out.push((info.id, (folder.clone(), "(whole snapshot)".to_owned(), snap.clone())));
        }
        let mut stack = vec![(info.snapshot.root, String::new())];
        while let Some((tree_id, prefix)) = stack.pop() {
            let here = if prefix.is_empty() { "(folder root)".to_owned() } else { prefix.clone() };
            if bad.contains(&tree_id) {
                out.push((tree_id, (folder.clone(), here.clone(), snap.clone())));
            }
            let Ok(tree) = catalog.load::<Tree>(tree_id) else { continue };
            for node in tree.nodes {
                let path = if prefix.is_empty() {
                    String::from_utf8_lossy(&node.name).into_owned()
                } else {
                    format!("{prefix}/{}", String::from_utf8_lossy(&node.name))
                };
                match node.kind {
                    NodeKind::Dir { tree } => stack.push((tree, path)),
                    NodeKind::File { entry } => {
                        if bad.contains(&entry) {
                            out.push((entry, (folder.clone(), path.clone(), snap.clone())));
                        }
                        let Ok(entry) = catalog.load::<FileEntry>(entry) else { continue };
                        for chunk in entry.chunks {
                            if bad.contains(&chunk.blob) {
                                out.push((
                                    chunk.blob,
                                    (folder.clone(), path.clone(), snap.clone()),
                                ));
                            }
                        }
                    }
                    NodeKind::Symlink { .. } => {}
                }
            }
        }
    }
    Ok(out)
}
