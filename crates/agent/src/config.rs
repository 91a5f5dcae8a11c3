//! The agent's settings: plain data, kept in `config.toml` in the home.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use triad_core::policy::{Policy, Windows};
use triad_core::{FolderId, Media, StoreId};

/// Everything the agent needs to know that is not a secret.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The blob stores on this device.
    #[serde(rename = "store")]
    pub stores: Vec<StoreConfig>,
    /// The folders this device protects.
    #[serde(rename = "folder")]
    pub folders: Vec<FolderConfig>,
    /// How backups run.
    pub backup: BackupConfig,
    /// How stores are opened.
    #[serde(rename = "store_engine")]
    pub store: triad_store::Config,
    /// How this device trades blobs with the others.
    pub sync: SyncConfig,
    /// What every file must have, and how long proofs last.
    pub policy: PolicyConfig,
    /// How the agent protects the folders by itself.
    pub protect: ProtectConfig,
}

/// The agent's own work: backing folders up as they change and pushing to the devices that
/// complete the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtectConfig {
    /// Whether the agent does it at all (off: only `triad backup` and `triad sync` do).
    pub auto: bool,
    /// Watch the folders for changes (besides the periodic rescan).
    pub watch: bool,
    /// After a change, wait until the folder has been quiet this long (milliseconds).
    pub settle_ms: u64,
    /// Rescan every folder this often, changes seen or not (seconds).
    pub rescan_secs: u64,
    /// When a device that is needed could not be reached, try again after this long (seconds).
    pub retry_secs: u64,
    /// Give up one push after this long (seconds); it resumes at the next try.
    pub push_timeout_secs: u64,
    /// Re-hash the source files (to keep them proven as copies) at most this fast, in bytes
    /// per second, so that the check stays in the background; 0: no limit.
    pub rehash_bytes_per_sec: u64,
}

impl Default for ProtectConfig {
    fn default() -> Self {
        Self {
            auto: true,
            watch: true,
            settle_ms: 2000,
            rescan_secs: 15 * 60,
            retry_secs: 60,
            push_timeout_secs: 6 * 3600,
            rehash_bytes_per_sec: 64 * 1024 * 1024,
        }
    }
}

/// The protection policy of the device's folders (a folder may have its own) and the windows
/// of its proofs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Copies of every file, the source file included.
    pub copies: u8,
    /// Kinds of media among them.
    pub media: u8,
    /// Copies at a site other than this device's.
    pub offsite: u8,
    /// A copy proven within this many seconds is verified; older, it makes its files DEGRADED.
    pub audit_window_secs: u64,
    /// A copy not proven for this many seconds (its device offline that long) no longer counts.
    pub grace_secs: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let (policy, windows) = (Policy::default(), Windows::default());
        Self {
            copies: policy.copies,
            media: policy.media,
            offsite: policy.offsite,
            audit_window_secs: windows.audit_secs,
            grace_secs: windows.grace_secs,
        }
    }
}

impl PolicyConfig {
    /// The device-wide policy.
    pub fn policy(&self) -> Policy {
        Policy { copies: self.copies, media: self.media, offsite: self.offsite }
    }

    /// The proof windows.
    pub fn windows(&self) -> Windows {
        Windows { audit_secs: self.audit_window_secs, grace_secs: self.grace_secs }
    }
}

/// Sync settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// A push asks the receiver to commit (and acknowledge) after this many bytes.
    pub commit_bytes: u64,
    /// The most bytes per second sent to one device that is not on this network, all pushes
    /// to it together (a parent's uplink stays usable); 0: no limit.
    pub limit_bytes_per_sec: u64,
    /// Whether the limit applies to devices on this network too.
    pub limit_lan: bool,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self { commit_bytes: 64 * 1024 * 1024, limit_bytes_per_sec: 0, limit_lan: false }
    }
}

/// One blob store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The id written in the store's marker; a different disk at the same path is refused.
    #[serde(with = "hex_id")]
    pub id: StoreId,
    /// Where the store lives.
    pub path: PathBuf,
    /// What it is stored on.
    pub media: Media,
    /// The most bytes of packs this store may hold; pushes from other devices beyond it are
    /// refused, saying so. `None`: the disk's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<u64>,
    /// The home's catalog: it holds the metadata of this device's snapshots (file entries,
    /// trees, snapshots, heads, the roster) and no file data. A device whose only store is its
    /// catalog (a laptop) reads its files again and re-seals them when it pushes. A catalog
    /// is never a copy, never offered to peers, and takes no pushes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub catalog: bool,
}

/// One protected folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderConfig {
    /// The folder's opaque id.
    #[serde(with = "hex_id")]
    pub id: FolderId,
    /// Its absolute path.
    pub path: PathBuf,
    /// The media it lives on.
    pub media: Media,
    /// Extra exclude patterns for this folder (glob syntax, matched against the path
    /// relative to the folder and against the file name).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// This folder's own policy, instead of the device's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
}

/// Backup settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// Whether [`DEFAULT_EXCLUDES`] apply.
    pub default_excludes: bool,
    /// Exclude patterns for every folder.
    pub exclude: Vec<String>,
    /// Commit to the stores whenever this many bytes are pending.
    pub commit_bytes: u64,
    /// Sealing threads (0: one per core).
    pub threads: usize,
    /// How often a file that keeps changing while it is read is tried again.
    pub changed_file_retries: u32,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            default_excludes: true,
            exclude: Vec::new(),
            commit_bytes: 256 * 1024 * 1024,
            threads: 0,
            changed_file_retries: 3,
        }
    }
}

/// Caches, previews and temporary files that no photographer needs protected.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    ".DS_Store",
    "._*",
    "Thumbs.db",
    "desktop.ini",
    ".Spotlight-V100",
    ".Trashes",
    ".Trash-*",
    ".fseventsd",
    "@eaDir",
    "#recycle",
    ".thumbnails",
    ".cache",
    "*Previews.lrdata",
    "*Smart Previews.lrdata",
    "*.lrdata",
    "*.tmp",
    "*.temp",
    "*.part",
    "*.crdownload",
    "~$*",
    "*.swp",
    ".triad-restore-*",
];

/// Where the catalog of a device without a store lives, in its home.
pub const CATALOG_DIR: &str = "catalog";

impl Config {
    /// Whether the store `id` is the home's catalog (metadata only).
    pub fn is_catalog(&self, id: StoreId) -> bool {
        self.stores.iter().any(|s| s.id == id && s.catalog)
    }

    /// The stores that hold file data: every store but the catalog.
    pub fn data_stores(&self) -> impl Iterator<Item = &StoreConfig> {
        self.stores.iter().filter(|s| !s.catalog)
    }

    /// The ids of the catalogs (metadata only) among the stores.
    pub fn catalog_ids(&self) -> Vec<StoreId> {
        self.stores.iter().filter(|s| s.catalog).map(|s| s.id).collect()
    }

    /// Of the open `stores`, those that hold file data: every one but the catalog.
    pub fn holding_data<'s>(
        &self,
        stores: &'s [triad_store::Store],
    ) -> impl Iterator<Item = &'s triad_store::Store> {
        stores.iter().filter(|s| !self.is_catalog(s.id()))
    }

    /// What a backup of `folder` leaves out: the device's patterns, the folder's, and the
    /// defaults unless they are turned off.
    pub fn excludes(
        &self,
        folder: &FolderConfig,
    ) -> Result<crate::scan::Excludes, crate::scan::ScanError> {
        let mut patterns: Vec<&str> = self.backup.exclude.iter().map(String::as_str).collect();
        patterns.extend(folder.exclude.iter().map(String::as_str));
        if self.backup.default_excludes {
            patterns.extend(DEFAULT_EXCLUDES.iter().copied());
        }
        crate::scan::Excludes::new(patterns)
    }

    /// The policy of `folder`: its own, or the device's.
    pub fn policy_of(&self, folder: &FolderConfig) -> Policy {
        folder.policy.unwrap_or_else(|| self.policy.policy())
    }

    /// The folder with this id, path (absolute, or relative to the working directory, as
    /// `triad folder add` took it) or name.
    pub fn folder(&self, name_or_path: &str) -> Option<&FolderConfig> {
        let resolved = std::fs::canonicalize(name_or_path).ok();
        self.folders.iter().find(|f| {
            f.id.to_hex() == name_or_path
                || f.path.as_os_str() == name_or_path
                || resolved.as_deref() == Some(f.path.as_path())
                || f.path.file_name().is_some_and(|n| n == name_or_path)
        })
    }

    /// Checks that a folder at `path` (besides the folder `except`, which it replaces) may be
    /// protected: it must not overlap another protected folder, and no store, no home (the
    /// keys) and no catalog may be inside it, or it would back itself up in a loop.
    pub fn check_folder_place(
        &self,
        path: &Path,
        home: &Path,
        except: Option<FolderId>,
    ) -> Result<(), PlaceError> {
        let path = resolve(path);
        if let Some(other) = self
            .folders
            .iter()
            .filter(|f| Some(f.id) != except)
            .find(|f| overlaps(&path, &resolve(&f.path)))
        {
            return Err(PlaceError::Folders { path, other: other.path.clone() });
        }
        if let Some(store) = self.stores.iter().find(|s| overlaps(&path, &resolve(&s.path))) {
            return Err(PlaceError::Store { folder: path, store: store.path.clone() });
        }
        if overlaps(&path, &resolve(home)) {
            return Err(PlaceError::Home { folder: path, home: home.into() });
        }
        Ok(())
    }

    /// Checks that a store (or a home) at `path` is outside every protected folder, and
    /// holds none.
    pub fn check_store_place(&self, path: &Path) -> Result<(), PlaceError> {
        let path = resolve(path);
        match self.folders.iter().find(|f| overlaps(&path, &resolve(&f.path))) {
            Some(folder) => Err(PlaceError::Store { folder: folder.path.clone(), store: path }),
            None => Ok(()),
        }
    }
}

/// The name of the settings file in the home.
pub const FILE: &str = "config.toml";

/// The settings file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// It could not be read or written.
    #[error("cannot {what} {path}")]
    Io {
        /// "read" or "write".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It is not valid settings.
    #[error("the settings in {path} are not valid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        reason: String,
    },
}

impl Config {
    /// Loads `config.toml` from the home `home`; no file is the default settings.
    pub fn load(home: &Path) -> Result<Config, ConfigError> {
        let path = home.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => return Err(ConfigError::Io { what: "read", path, source }),
        };
        toml::from_str(&text).map_err(|e| ConfigError::Invalid { path, reason: e.to_string() })
    }

    /// The settings as the text of `config.toml`.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        let body = toml::to_string_pretty(self).map_err(|e| ConfigError::Invalid {
            path: PathBuf::from(FILE),
            reason: e.to_string(),
        })?;
        Ok(format!("# triad settings for this device; `triad config show` prints them.\n{body}"))
    }

    /// Writes `config.toml` into the home `home` at once (a reader sees the old file or the
    /// new one).
    pub fn save(&self, home: &Path) -> Result<(), ConfigError> {
        let path = home.join(FILE);
        let text = self.to_toml()?;
        crate::home::write_atomic(&path, text.as_bytes(), 0o600).map_err(|source| ConfigError::Io {
            what: "write",
            path,
            source,
        })
    }
}

/// A folder or a store cannot go where it was asked to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlaceError {
    /// Two protected folders would overlap: one's files would be in the other's history.
    #[error("{path} overlaps the protected folder {other}")]
    Folders {
        /// The new folder.
        path: PathBuf,
        /// The folder already protected.
        other: PathBuf,
    },
    /// A store would be inside a protected folder, or hold one.
    #[error(
        "the store {store} would be inside the protected folder {folder} (or hold it), and back \
         itself up in a loop: keep stores outside protected folders"
    )]
    Store {
        /// The folder.
        folder: PathBuf,
        /// The store.
        store: PathBuf,
    },
    /// The device's home (its keys and catalog) would be inside a protected folder.
    #[error(
        "this device's home {home} (its keys and catalog) would be inside the protected folder \
         {folder} (or hold it): move the home (TRIAD_HOME) or choose another folder"
    )]
    Home {
        /// The folder.
        folder: PathBuf,
        /// The home.
        home: PathBuf,
    },
}

/// Whether one of `a` and `b` is inside the other (or they are the same).
fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// `path` made absolute with its links resolved, as far as it exists; the rest is appended
/// as given (a store may not exist yet).
pub fn resolve(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(real, |acc: PathBuf, c| acc.join(c));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return path,
        }
    }
}

/// Ids as hex strings in human-edited files (the codec stores them as bytes).
pub(crate) mod hex_id {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<T: Display, S: Serializer>(id: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub(crate) fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Lists of ids as hex strings.
pub(crate) mod hex_ids {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<T: Display, S: Serializer>(ids: &[T], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(ids.iter().map(ToString::to_string))
    }

    pub(crate) fn deserialize<'de, T, D>(d: D) -> Result<Vec<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let texts = Vec::<String>::deserialize(d)?;
        texts.iter().map(|t| t.parse().map_err(serde::de::Error::custom)).collect()
    }
}
