//! The metadata cache: which file entry a file had when it was last backed up.
//!
//! Keyed by the path inside the folder, it records size, mtime, ctime, inode and mode. A file
//! whose stat matches is not read again: its file entry blob is reused, provided every
//! target store still holds it (checked by the caller). The cache is only a shortcut: losing
//! or damaging it costs a re-read, never data. It is written after the snapshot is committed,
//! so it never names a blob that is not durable.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use triad_core::codec;
use triad_core::{BlobId, Timestamp};

use crate::scan::FileStat;

const CACHE_VERSION: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    size: u64,
    mtime: Timestamp,
    ctime: Timestamp,
    inode: u64,
    mode: u32,
    entry: BlobId,
}

/// The cache of one folder.
#[derive(Debug, Clone, Default)]
pub struct MetadataCache {
    entries: HashMap<Vec<u8>, Entry>,
}

impl MetadataCache {
    /// Loads the cache at `path`. A missing or damaged cache is an empty one.
    pub fn load(path: &Path) -> Self {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Self::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "metadata cache unreadable; every file will be read");
                return Self::default();
            }
        };
        match Self::decode(&bytes) {
            Ok(cache) => cache,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "metadata cache damaged; every file will be read");
                Self::default()
            }
        }
    }

    /// Decodes a cache file.
    pub fn decode(bytes: &[u8]) -> Result<Self, codec::DecodeError> {
        let list: Vec<(Vec<u8>, Entry)> = codec::decode("metadata cache", CACHE_VERSION, bytes)?;
        Ok(Self { entries: list.into_iter().collect() })
    }

    /// Encodes the cache file, its entries sorted by path.
    pub fn encode(&self) -> Vec<u8> {
        let mut list: Vec<(&Vec<u8>, &Entry)> = self.entries.iter().collect();
        list.sort_by(|a, b| a.0.cmp(b.0));
        codec::encode(CACHE_VERSION, &list)
    }

    /// Writes the cache to `path` atomically.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        crate::home::write_atomic(path, &self.encode(), 0o600)
    }

    /// The file entry recorded for `rel` if its stat is unchanged.
    pub fn lookup(&self, rel: &Path, stat: &FileStat) -> Option<BlobId> {
        let e = self.entries.get(rel.as_os_str().as_bytes())?;
        let same = e.size == stat.size
            && e.mtime == stat.mtime
            && e.ctime == stat.ctime
            && e.inode == stat.inode
            && e.mode == stat.mode;
        same.then_some(e.entry)
    }

    /// The file entry last recorded for `rel`, whatever its stat.
    pub fn previous(&self, rel: &Path) -> Option<BlobId> {
        self.entries.get(rel.as_os_str().as_bytes()).map(|e| e.entry)
    }

    /// Records that `rel`, with `stat`, is described by `entry`.
    pub fn insert(&mut self, rel: &Path, stat: &FileStat, entry: BlobId) {
        let value = Entry {
            size: stat.size,
            mtime: stat.mtime,
            ctime: stat.ctime,
            inode: stat.inode,
            mode: stat.mode,
            entry,
        };
        self.entries.insert(rel.as_os_str().as_bytes().to_vec(), value);
    }

    /// Number of files recorded.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no file is recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_change_detection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stat = FileStat {
            size: 10,
            mtime: Timestamp::new(5, 0),
            ctime: Timestamp::new(5, 0),
            inode: 7,
            mode: 0o644,
        };
        let mut cache = MetadataCache::default();
        cache.insert(Path::new("a/b.cr3"), &stat, BlobId::of(b"e"));
        let path = dir.path().join("cache");
        cache.save(&path).expect("save");
        let back = MetadataCache::load(&path);
        assert_eq!(back.lookup(Path::new("a/b.cr3"), &stat), Some(BlobId::of(b"e")));
        let touched = FileStat { mtime: Timestamp::new(6, 0), ..stat };
        assert_eq!(back.lookup(Path::new("a/b.cr3"), &touched), None);
        assert_eq!(back.previous(Path::new("a/b.cr3")), Some(BlobId::of(b"e")));
        fs::write(&path, b"garbage").expect("write");
        assert!(MetadataCache::load(&path).is_empty());
    }
}
