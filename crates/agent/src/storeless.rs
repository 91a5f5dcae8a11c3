//! A device without a store (a laptop): its catalog in the home, and its file data read again
//! from the source files and re-sealed when it is pushed.
//!
//! A backup on such a device seals every chunk (sealing is what gives a chunk its address) but
//! keeps only the metadata: file entries, trees, snapshots, heads and the roster go into the
//! catalog, a store in the home marked `catalog` in the settings. When a push finds that a
//! peer lacks a chunk, the chunk is found in a file version that uses it, read from the source
//! file at its offset, sealed again (sealing is deterministic) and sent only if its address is
//! the one asked for. A version whose source file changed before any other device held it
//! cannot be re-sealed: the push goes on without it, the peer's copy is written down as lacking
//! it, and `triad status` reports it LOST.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use triad_core::keys::VaultKeys;
use triad_core::seal::{self, ObjectKind, SealedBlob};
use triad_core::snapshot::{FileEntry, NodeKind, Snapshot, Tree};
use triad_core::{BlobId, DeviceId, FolderId, Media, StoreId, Timestamp};
use triad_store::{CreateError, Store};

use crate::catalog::{Catalog, CatalogError};
use crate::config::{CATALOG_DIR, Config, StoreConfig};
use crate::home::Home;

/// Gives a trusted device with folders but no store a catalog in its home, so that it can back
/// up. Returns whether one was made (the caller saves the settings).
pub fn ensure_catalog(home: &Home, config: &mut Config, now: Timestamp) -> Result<bool, String> {
    if !config.stores.is_empty() || config.folders.is_empty() || home.keys().is_err() {
        return Ok(false);
    }
    let path = home.path().join(CATALOG_DIR);
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| format!("no randomness for a store id: {e}"))?;
    let id = StoreId::from_bytes(id);
    let media = config.folders.first().map_or(Media::Ssd, |f| f.media);
    let store = match Store::create(&path, home.vault(), media, id, now, &config.store) {
        Ok(store) => store,
        // A catalog left by an earlier start whose settings were not saved: use it.
        Err(CreateError::Exists { .. }) => {
            Store::open(&path, None, home.vault(), triad_store::Access::ReadWrite, &config.store)
                .map_err(|e| format!("cannot open the catalog {}: {e}", path.display()))?
        }
        Err(e) => return Err(format!("cannot make the catalog {}: {e}", path.display())),
    };
    if let Ok(roster) = home.roster() {
        store.write_roster(&roster).map_err(|e| format!("cannot write the roster: {e}"))?;
    }
    config.stores.push(StoreConfig {
        id: store.id(),
        path,
        media: store.media(),
        quota: None,
        catalog: true,
    });
    Ok(true)
}

/// Where one chunk can be read again: a range of a source file.
#[derive(Debug, Clone)]
pub struct Origin {
    path: PathBuf,
    offset: u64,
    len: u32,
}

/// Where the chunks a push needs can be read again, and which file versions use them.
#[derive(Debug, Default)]
pub struct Origins {
    chunks: HashMap<BlobId, Vec<Origin>>,
    /// Per folder: file versions and the wanted chunks each uses.
    versions: BTreeMap<FolderId, Vec<(BlobId, Vec<BlobId>)>>,
}

impl Origins {
    /// Finds, in every snapshot `me` made (of any folder, protected now or not; `config` says
    /// where each folder is), the file versions that use any chunk in `wanted`, and where in
    /// their source files those chunks were read from.
    pub fn find(
        catalog: &Catalog<'_>,
        config: &Config,
        me: DeviceId,
        wanted: &HashSet<BlobId>,
    ) -> Result<Origins, CatalogError> {
        let mut out = Origins::default();
        if wanted.is_empty() {
            return Ok(out);
        }
        let heads = catalog.heads()?;
        let mut entries: HashMap<BlobId, FileEntry> = HashMap::new();
        // Every folder this device has snapshots of, those no longer protected too (a push
        // sends their history as well): where the settings do not say, where the snapshot was
        // taken.
        for head in heads.iter().filter(|h| h.head.device == me) {
            let path = match config.folders.iter().find(|f| f.id == head.head.folder) {
                Some(f) => f.path.clone(),
                None => {
                    let latest: Snapshot = catalog.load(head.head.snapshot)?;
                    PathBuf::from(std::ffi::OsStr::from_bytes(&latest.folder_path))
                }
            };
            let mut seen_trees = HashSet::new();
            let mut seen_files: HashSet<(Vec<u8>, BlobId)> = HashSet::new();
            let mut next = Some(head.head.snapshot);
            while let Some(id) = next {
                let snapshot: Snapshot = catalog.load(id)?;
                let mut trees = vec![(snapshot.root, Vec::new())];
                while let Some((tree_id, prefix)) = trees.pop() {
                    if !seen_trees.insert((tree_id, prefix.clone())) {
                        continue;
                    }
                    let tree: Tree = catalog.load(tree_id)?;
                    for node in tree.nodes {
                        let mut rel = prefix.clone();
                        if !rel.is_empty() {
                            rel.push(b'/');
                        }
                        rel.extend_from_slice(&node.name);
                        match node.kind {
                            NodeKind::Dir { tree } => trees.push((tree, rel)),
                            NodeKind::File { entry } if seen_files.insert((rel.clone(), entry)) => {
                                let file = match entries.entry(entry) {
                                    Entry::Occupied(known) => known.into_mut(),
                                    Entry::Vacant(slot) => slot.insert(catalog.load(entry)?),
                                };
                                out.add(&path, head.head.folder, &rel, entry, file, wanted);
                            }
                            NodeKind::File { .. } | NodeKind::Symlink { .. } => {}
                        }
                    }
                }
                next = snapshot.parent;
            }
        }
        Ok(out)
    }

    fn add(
        &mut self,
        folder: &Path,
        folder_id: FolderId,
        rel: &[u8],
        entry_id: BlobId,
        entry: &FileEntry,
        wanted: &HashSet<BlobId>,
    ) {
        let path = folder.join(std::ffi::OsStr::from_bytes(rel));
        let mut offset = 0u64;
        let mut uses = Vec::new();
        for chunk in &entry.chunks {
            if wanted.contains(&chunk.blob) {
                self.chunks.entry(chunk.blob).or_default().push(Origin {
                    path: path.clone(),
                    offset,
                    len: chunk.len,
                });
                uses.push(chunk.blob);
            }
            offset += u64::from(chunk.len);
        }
        if !uses.is_empty() {
            self.versions.entry(folder_id).or_default().push((entry_id, uses));
        }
    }

    /// Whether the chunk `id` is used by a file version that was looked at (it may still not
    /// be readable again).
    pub fn knows(&self, id: BlobId) -> bool {
        self.chunks.contains_key(&id)
    }

    /// Reads the chunk `id` again from a source file and re-seals it; `None` if no source file
    /// holds it any more (changed, moved or deleted since it was backed up).
    pub fn reseal(&self, keys: &VaultKeys, id: BlobId) -> Option<SealedBlob> {
        self.chunks.get(&id)?.iter().find_map(|origin| {
            // A regular file only: never a FIFO or a device that a read would wait on.
            if !std::fs::symlink_metadata(&origin.path).ok()?.is_file() {
                return None;
            }
            let file = File::open(&origin.path).ok()?;
            let mut plain = vec![0u8; origin.len as usize];
            file.read_exact_at(&mut plain, origin.offset).ok()?;
            let blob = seal::seal(keys, ObjectKind::Chunk, &plain);
            (blob.id() == id).then_some(blob)
        })
    }

    /// Per folder, the file versions that use a chunk in `unavailable`: what a peer that was
    /// sent everything else lacks.
    pub fn lacking(&self, unavailable: &HashSet<BlobId>) -> BTreeMap<FolderId, Vec<BlobId>> {
        let mut out: BTreeMap<FolderId, Vec<BlobId>> = BTreeMap::new();
        if unavailable.is_empty() {
            return out;
        }
        for (folder, versions) in &self.versions {
            for (entry, chunks) in versions {
                if chunks.iter().any(|c| unavailable.contains(c)) {
                    out.entry(*folder).or_default().push(*entry);
                }
            }
        }
        for versions in out.values_mut() {
            versions.sort_unstable();
            versions.dedup();
        }
        out
    }
}
