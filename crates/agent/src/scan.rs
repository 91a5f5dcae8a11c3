//! Walking a source folder: what is there, with its metadata, before any file is read.
//!
//! The walk never follows symbolic links (they are recorded as links), skips what the
//! exclude patterns name, and turns every problem with one entry into a [`Skipped`] note
//! instead of failing the whole backup. Names are raw bytes, sorted bytewise, so trees are
//! canonical and identical folders seal to identical trees.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use triad_core::Timestamp;
use triad_core::snapshot::check_name;

/// The metadata of a file that decides whether it changed since the last backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    /// Length in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: Timestamp,
    /// Status change time.
    pub ctime: Timestamp,
    /// Inode number.
    pub inode: u64,
    /// Permission bits.
    pub mode: u32,
}

impl FileStat {
    /// The stat of `meta`.
    pub fn of(meta: &fs::Metadata) -> Self {
        Self {
            size: meta.len(),
            mtime: Timestamp::new(meta.mtime(), u32::try_from(meta.mtime_nsec()).unwrap_or(0)),
            ctime: Timestamp::new(meta.ctime(), u32::try_from(meta.ctime_nsec()).unwrap_or(0)),
            inode: meta.ino(),
            mode: meta.mode() & 0o7777,
        }
    }
}

/// A regular file found by the walk.
#[derive(Debug, Clone)]
pub struct FileRecord {
    /// Path relative to the folder.
    pub rel: PathBuf,
    /// Its stat when the walk saw it.
    pub stat: FileStat,
}

/// One entry of a directory.
#[derive(Debug, Clone)]
pub enum Child {
    /// A regular file: an index into [`Scan::files`].
    File(usize),
    /// A sub-directory.
    Dir(DirNode),
    /// A symbolic link.
    Symlink {
        /// Its name.
        name: Vec<u8>,
        /// Its target bytes.
        target: Vec<u8>,
        /// Its modification time.
        mtime: Timestamp,
    },
}

/// A directory and its entries, sorted by name.
#[derive(Debug, Clone)]
pub struct DirNode {
    /// Its name (empty for the folder itself).
    pub name: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: Timestamp,
    /// Entries, sorted by name.
    pub children: Vec<Child>,
}

/// Something the walk passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Path relative to the folder.
    pub rel: PathBuf,
    /// Why.
    pub reason: String,
}

/// The result of a walk.
#[derive(Debug, Clone)]
pub struct Scan {
    /// The folder's own directory node.
    pub root: DirNode,
    /// Every regular file, in walk order.
    pub files: Vec<FileRecord>,
    /// Directories, the root included.
    pub dirs: u64,
    /// Entries passed over.
    pub skipped: Vec<Skipped>,
}

/// The walk could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// The folder does not exist.
    #[error(
        "folder {path} does not exist: is its disk mounted? (remove it with `triad folder remove` if it is gone for good)"
    )]
    Missing {
        /// The folder.
        path: PathBuf,
    },
    /// The folder is not a directory.
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The folder could not be read.
    #[error("cannot read folder {path}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An exclude pattern is not valid glob syntax.
    #[error("invalid exclude pattern {pattern:?}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// The cause.
        #[source]
        source: globset::Error,
    },
}

/// Exclude patterns, matched against each entry's name and its path inside the folder.
#[derive(Debug, Clone)]
pub struct Excludes(GlobSet);

impl Excludes {
    /// Builds the matcher. Patterns use glob syntax (`*.tmp`, `cache/**`).
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, ScanError> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            let glob = Glob::new(pattern)
                .map_err(|source| ScanError::Pattern { pattern: pattern.to_owned(), source })?;
            builder.add(glob);
        }
        let set = builder
            .build()
            .map_err(|source| ScanError::Pattern { pattern: "(set)".to_owned(), source })?;
        Ok(Self(set))
    }

    /// Whether the entry at `rel` (relative to the folder) is excluded.
    pub fn is_excluded(&self, rel: &Path) -> bool {
        self.0.is_match(rel) || rel.file_name().is_some_and(|name| self.0.is_match(name))
    }

    /// Whether a scan leaves `rel` out: it, or a directory it is in, is excluded.
    pub fn leaves_out(&self, rel: &Path) -> bool {
        rel.ancestors().filter(|a| !a.as_os_str().is_empty()).any(|a| self.is_excluded(a))
    }
}

/// Walks `folder`.
pub fn scan(folder: &Path, excludes: &Excludes) -> Result<Scan, ScanError> {
    let meta = match fs::metadata(folder) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ScanError::Missing { path: folder.into() });
        }
        Err(source) => return Err(ScanError::Io { path: folder.into(), source }),
    };
    if !meta.is_dir() {
        return Err(ScanError::NotADirectory { path: folder.into() });
    }
    // An unreadable root is an error, not a skipped entry: it would look like an empty folder.
    fs::read_dir(folder).map_err(|source| ScanError::Io { path: folder.into(), source })?;
    let mut walk = Walk { folder, excludes, files: Vec::new(), skipped: Vec::new(), dirs: 0 };
    let root = walk.dir(Path::new(""), Vec::new(), &meta);
    Ok(Scan { root, files: walk.files, dirs: walk.dirs, skipped: walk.skipped })
}

struct Walk<'a> {
    folder: &'a Path,
    excludes: &'a Excludes,
    files: Vec<FileRecord>,
    skipped: Vec<Skipped>,
    dirs: u64,
}

impl Walk<'_> {
    fn skip(&mut self, rel: &Path, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::debug!(path = %rel.display(), %reason, "skipped");
        self.skipped.push(Skipped { rel: rel.into(), reason });
    }

    fn dir(&mut self, rel: &Path, name: Vec<u8>, meta: &fs::Metadata) -> DirNode {
        self.dirs += 1;
        let mut node = DirNode {
            name,
            mode: meta.mode() & 0o7777,
            mtime: FileStat::of(meta).mtime,
            children: Vec::new(),
        };
        let abs = self.folder.join(rel);
        let entries = match fs::read_dir(&abs) {
            Ok(entries) => entries,
            Err(e) => {
                self.skip(rel, format!("cannot list directory: {e}"));
                return node;
            }
        };
        let mut names: Vec<std::ffi::OsString> = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => names.push(entry.file_name()),
                Err(e) => self.skip(rel, format!("cannot list directory: {e}")),
            }
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let child_rel = rel.join(&name);
            if self.excludes.is_excluded(&child_rel) {
                continue;
            }
            if let Some(child) = self.entry(&child_rel, &name) {
                node.children.push(child);
            }
        }
        node
    }

    fn entry(&mut self, rel: &Path, name: &OsStr) -> Option<Child> {
        let bytes = name.as_bytes().to_vec();
        if let Err(e) = check_name(&bytes) {
            self.skip(rel, format!("name cannot be stored: {e}"));
            return None;
        }
        let abs = self.folder.join(rel);
        let meta = match fs::symlink_metadata(&abs) {
            Ok(meta) => meta,
            Err(e) => {
                self.skip(rel, format!("cannot read metadata: {e}"));
                return None;
            }
        };
        let kind = meta.file_type();
        if kind.is_dir() && triad_store::Store::exists(&abs) {
            self.skip(rel, "a triad store: never backed up (it would back itself up); move it out of the folder");
            None
        } else if kind.is_dir() && crate::home::Home::is_home(&abs) {
            self.skip(rel, "a triad home (device keys and catalog): never backed up; move it out of the folder");
            None
        } else if kind.is_dir() {
            Some(Child::Dir(self.dir(rel, bytes, &meta)))
        } else if kind.is_file() {
            self.files.push(FileRecord { rel: rel.into(), stat: FileStat::of(&meta) });
            Some(Child::File(self.files.len() - 1))
        } else if kind.is_symlink() {
            match fs::read_link(&abs) {
                Ok(target) => Some(Child::Symlink {
                    name: bytes,
                    target: target.as_os_str().as_bytes().to_vec(),
                    mtime: FileStat::of(&meta).mtime,
                }),
                Err(e) => {
                    self.skip(rel, format!("cannot read link: {e}"));
                    None
                }
            }
        } else {
            self.skip(rel, "not a regular file, directory or link");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_sorted_skips_excluded_and_records_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("b/sub")).expect("mkdir");
        fs::write(root.join("a.cr3"), b"raw").expect("write");
        fs::write(root.join("b/sub/c.xmp"), b"xmp").expect("write");
        fs::write(root.join("b/.DS_Store"), b"junk").expect("write");
        fs::create_dir_all(root.join("Cat Previews.lrdata")).expect("mkdir");
        fs::write(root.join("Cat Previews.lrdata/p.jpg"), b"preview").expect("write");
        std::os::unix::fs::symlink("a.cr3", root.join("link")).expect("symlink");
        let excludes =
            Excludes::new(crate::config::DEFAULT_EXCLUDES.iter().copied()).expect("globs");
        let scan = scan(root, &excludes).expect("scan");
        let rels: Vec<_> =
            scan.files.iter().map(|f| f.rel.to_string_lossy().into_owned()).collect();
        assert_eq!(rels, ["a.cr3", "b/sub/c.xmp"]);
        assert_eq!(scan.dirs, 3);
        assert!(
            scan.root
                .children
                .iter()
                .any(|c| matches!(c, Child::Symlink { target, .. } if target == b"a.cr3"))
        );
    }

    #[test]
    fn missing_folder_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let excludes = Excludes::new([]).expect("globs");
        assert!(matches!(
            scan(&dir.path().join("gone"), &excludes),
            Err(ScanError::Missing { .. })
        ));
    }
}
