//! The device's home (`$TRIAD_HOME`): identity, keys, roster and caches.
//!
//! Layout: `device.key` and `vault.key` (0600), `identity` (vault id, name, site), `roster`,
//! `cache/` (per-folder metadata caches), and `config.toml`, which belongs to the binary.
//! The home directory is 0700. The recovery phrase is never written here, nor the recovery
//! key: a device keeps the vault secret, from which only data keys derive.
//!
//! Durability: every file is written to a temporary name, fsynced, renamed into place and
//! the directory fsynced, so a kill leaves either the old file or the new one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use triad_core::codec::{self, DecodeError};
use triad_core::keys::{DeviceKey, Phrase, VaultKeys, VaultSecret};
use triad_core::roster::{Entry, Role, Roster, RosterError, Signer};
use triad_core::{DeviceId, VaultId};
use zeroize::Zeroizing;

const IDENTITY_VERSION: u8 = 1;

/// The non-secret facts about this device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The vault this device belongs to.
    pub vault: VaultId,
    /// The device's name.
    pub name: String,
    /// The device's site.
    pub site: String,
}

/// An error about the home directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HomeError {
    /// The home has no vault yet.
    #[error("no vault in {path}: run `triad init` (new vault) or `triad recover` (existing vault)")]
    NoVault {
        /// The home directory.
        path: PathBuf,
    },
    /// The device stores the vault's blobs for others and holds no key to read them.
    #[error(
        "this device is storage-only: it holds the vault's blobs encrypted and cannot read them"
    )]
    StorageOnly,
    /// The home already has a vault.
    #[error(
        "{path} already holds a vault (device {name:?}); use another TRIAD_HOME for another device"
    )]
    AlreadyInitialised {
        /// The home directory.
        path: PathBuf,
        /// The existing device's name.
        name: String,
    },
    /// A file could not be read or written.
    #[error("cannot access {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A key file has the wrong length.
    #[error("key file {path} is damaged (wrong length)")]
    BadKey {
        /// The file.
        path: PathBuf,
    },
    /// A record in the home is damaged.
    #[error("{path} is damaged")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: DecodeError,
    },
    /// The roster does not verify.
    #[error("roster in {path} does not verify")]
    Roster {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: RosterError,
    },
    /// A name or site is empty or too long.
    #[error("{what} must be 1 to 64 printable characters, got {given:?}")]
    InvalidLabel {
        /// "name" or "site".
        what: &'static str,
        /// What was given.
        given: String,
    },
}

/// An opened home with a vault.
pub struct Home {
    path: PathBuf,
    identity: Identity,
    device: DeviceKey,
    /// `None` on a storage-only device.
    keys: Option<VaultKeys>,
}

impl std::fmt::Debug for Home {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Home").field("path", &self.path).field("identity", &self.identity).finish()
    }
}

/// What `init` and `recover` need from the caller: randomness is drawn at the edge.
pub struct NewDevice<'a> {
    /// The device's name.
    pub name: &'a str,
    /// The device's site.
    pub site: &'a str,
    /// 32 fresh random bytes for the device key.
    pub device_seed: [u8; 32],
}

impl Home {
    /// Creates a new vault in the home at `path` from `phrase`, with this device on its roster.
    pub fn init(
        path: &Path,
        phrase: &Phrase,
        device: NewDevice<'_>,
    ) -> Result<(Home, Roster), HomeError> {
        let recovery = phrase.recovery_key();
        let mut roster = Roster::new(&recovery);
        let home = Self::create(path, &phrase.vault_secret(), phrase.vault_id(), &device)?;
        roster.admit_with_recovery(&recovery, home.roster_entry(Role::Trusted));
        home.write_roster(&roster)?;
        Ok((home, roster))
    }

    /// Joins an existing vault from its phrase: admits this new device with the recovery key
    /// on `roster` (read from a store) and writes the home.
    pub fn recover(
        path: &Path,
        phrase: &Phrase,
        mut roster: Roster,
        device: NewDevice<'_>,
    ) -> Result<(Home, Roster), HomeError> {
        let recovery = phrase.recovery_key();
        let home = Self::create(path, &phrase.vault_secret(), phrase.vault_id(), &device)?;
        roster.admit_with_recovery(&recovery, home.roster_entry(Role::Trusted));
        home.write_roster(&roster)?;
        Ok((home, roster))
    }

    fn create(
        path: &Path,
        secret: &VaultSecret,
        vault: VaultId,
        device: &NewDevice<'_>,
    ) -> Result<Home, HomeError> {
        Self::write_new(path, vault, device, None, Some(secret))
    }

    /// Writes the home of a device that joined a vault by pairing: its key (made before the
    /// pairing, which proved it), the roster it received, and the vault secret if it is
    /// trusted. A storage-only device's home holds no secret of the vault.
    pub fn join(
        path: &Path,
        device: NewDevice<'_>,
        roster: &Roster,
        secret: Option<&VaultSecret>,
    ) -> Result<Home, HomeError> {
        Self::write_new(path, roster.vault, &device, Some(roster), secret)
    }

    /// Writes a new home: keys, the roster if given, and the identity last (its presence is
    /// what makes the home hold a vault).
    fn write_new(
        path: &Path,
        vault: VaultId,
        device: &NewDevice<'_>,
        roster: Option<&Roster>,
        secret: Option<&VaultSecret>,
    ) -> Result<Home, HomeError> {
        check_label("name", device.name)?;
        check_label("site", device.site)?;
        if let Ok(existing) = read_identity(path) {
            return Err(HomeError::AlreadyInitialised { path: path.into(), name: existing.name });
        }
        create_private_dir(path)?;
        let identity =
            Identity { vault, name: device.name.to_owned(), site: device.site.to_owned() };
        let key = DeviceKey::from_bytes(&device.device_seed);
        write_private(&path.join("device.key"), key.to_bytes().as_slice())?;
        if let Some(secret) = secret {
            write_private(&path.join("vault.key"), secret.as_bytes())?;
        }
        if let Some(roster) = roster {
            write_private(&path.join("roster"), &roster.encode())?;
        }
        write_private(&path.join("identity"), &identity.encode())?;
        Ok(Home {
            path: path.into(),
            identity,
            device: key,
            keys: secret.map(VaultKeys::from_secret),
        })
    }

    /// Opens the home at `path`.
    pub fn open(path: &Path) -> Result<Home, HomeError> {
        let identity = read_identity(path)?;
        let device_bytes = read_key(&path.join("device.key"))?;
        let device = DeviceKey::from_bytes(&device_bytes);
        let vault_key = path.join("vault.key");
        let keys = if vault_key.exists() {
            Some(VaultKeys::from_secret(&VaultSecret::from_bytes(*read_key(&vault_key)?)))
        } else {
            None
        };
        Ok(Home { path: path.into(), identity, device, keys })
    }

    /// Whether `path` holds a vault.
    pub fn exists(path: &Path) -> bool {
        path.join("identity").exists()
    }

    /// Whether `path` holds a device's home: its identity and its key (a folder that only
    /// happens to hold a file named `identity` is not one).
    pub fn is_home(path: &Path) -> bool {
        path.join("identity").is_file() && path.join("device.key").is_file()
    }

    /// The home directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The vault id.
    pub fn vault(&self) -> VaultId {
        self.identity.vault
    }

    /// The device id.
    pub fn device_id(&self) -> DeviceId {
        self.device.device_id()
    }

    /// The device key.
    pub fn device_key(&self) -> &DeviceKey {
        &self.device
    }

    /// The vault's data keys; a storage-only device has none.
    pub fn keys(&self) -> Result<&VaultKeys, HomeError> {
        self.keys.as_ref().ok_or(HomeError::StorageOnly)
    }

    /// The vault secret, for a trusted device to hand to a device it pairs.
    pub fn vault_secret(&self) -> Result<VaultSecret, HomeError> {
        if self.keys.is_none() {
            return Err(HomeError::StorageOnly);
        }
        Ok(VaultSecret::from_bytes(*read_key(&self.path.join("vault.key"))?))
    }

    /// The directory of per-folder metadata caches.
    pub fn cache_dir(&self) -> PathBuf {
        self.path.join("cache")
    }

    /// The roster kept in the home.
    pub fn roster(&self) -> Result<Roster, HomeError> {
        let path = self.path.join("roster");
        let bytes =
            fs::read(&path).map_err(|source| HomeError::Io { path: path.clone(), source })?;
        Roster::decode(&bytes).map_err(|source| HomeError::Roster { path, source })
    }

    /// Replaces the roster kept in the home.
    pub fn write_roster(&self, roster: &Roster) -> Result<(), HomeError> {
        write_private(&self.path.join("roster"), &roster.encode())
    }

    fn roster_entry(&self, role: Role) -> Entry {
        Entry {
            device: self.device_id(),
            name: self.identity.name.clone(),
            site: self.identity.site.clone(),
            role,
            signer: Signer::Recovery,
        }
    }
}

fn check_label(what: &'static str, given: &str) -> Result<(), HomeError> {
    let ok = !given.trim().is_empty()
        && given.chars().count() <= 64
        && !given.chars().any(char::is_control);
    if ok { Ok(()) } else { Err(HomeError::InvalidLabel { what, given: given.to_owned() }) }
}

fn read_identity(path: &Path) -> Result<Identity, HomeError> {
    let file = path.join("identity");
    let bytes = match fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(HomeError::NoVault { path: path.into() });
        }
        Err(source) => return Err(HomeError::Io { path: file, source }),
    };
    Identity::decode(&bytes).map_err(|source| HomeError::Decode { path: file, source })
}

impl Identity {
    /// Decodes the `identity` file of a home.
    pub fn decode(bytes: &[u8]) -> Result<Self, codec::DecodeError> {
        codec::decode("identity", IDENTITY_VERSION, bytes)
    }

    /// Encodes the `identity` file of a home.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(IDENTITY_VERSION, self)
    }
}

fn read_key(path: &Path) -> Result<Zeroizing<[u8; 32]>, HomeError> {
    let bytes = Zeroizing::new(
        fs::read(path).map_err(|source| HomeError::Io { path: path.into(), source })?,
    );
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(HomeError::BadKey { path: path.into() });
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// Creates `path` (and parents) with mode 0700, and tightens it if it already exists.
pub fn create_private_dir(path: &Path) -> Result<(), HomeError> {
    let io_err = |source| HomeError::Io { path: path.into(), source };
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(io_err)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io_err)
}

/// Writes `bytes` to `path` atomically with mode 0600: temporary file, fsync, rename,
/// fsync of the directory.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), HomeError> {
    write_atomic(path, bytes, 0o600).map_err(|source| HomeError::Io { path: path.into(), source })
}

/// Writes `bytes` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Unique per write: two threads writing the same file never share a temporary file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}{TEMP_MARK}{}-{n}", std::process::id()));
    let written = (|| {
        let mut file =
            OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    File::open(dir)?.sync_all()
}

/// What [`write_atomic`] puts between a file's name and the writer's process id.
const TEMP_MARK: &str = ".tmp-";

/// Removes the temporary files [`write_atomic`] left in `dir` when its process was killed
/// mid-write (those of processes still running are left alone); returns how many went.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix('.') else { continue };
        let Some((_, tail)) = rest.rsplit_once(TEMP_MARK) else { continue };
        let Some(pid) = tail.split_once('-').and_then(|(pid, _)| pid.parse::<u32>().ok()) else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists();
        if !alive && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(dir = %dir.display(), files = removed, "removed temporary files of killed processes");
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str) -> NewDevice<'_> {
        NewDevice { name, site: "home", device_seed: [3; 32] }
    }

    #[test]
    fn stale_temporary_files_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        // No process has pid 0x7fff_fff0 (above the kernel's pid limit).
        let stale = dir.path().join(".peers.json.tmp-2147483632-3");
        let live = dir.path().join(format!(".peers.json.tmp-{}-9", std::process::id()));
        let other = dir.path().join("peers.json");
        for path in [&stale, &live, &other] {
            fs::write(path, b"x").expect("write");
        }
        assert_eq!(remove_stale_temps(dir.path()), 1);
        assert!(!stale.exists() && live.exists() && other.exists());
    }

    #[test]
    fn init_open_and_refuse_second_init() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home_path = dir.path().join("home");
        let phrase = Phrase::from_entropy([1; 32]);
        let (home, roster) = Home::init(&home_path, &phrase, device("laptop")).expect("init");
        assert_eq!(roster.devices().len(), 1);
        let again = Home::open(&home_path).expect("open");
        assert_eq!(again.device_id(), home.device_id());
        assert_eq!(again.vault(), phrase.vault_id());
        assert!(matches!(
            Home::init(&home_path, &phrase, device("other")),
            Err(HomeError::AlreadyInitialised { .. })
        ));
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&home_path), 0o700);
        assert_eq!(mode(&home_path.join("vault.key")), 0o600);
        assert_eq!(mode(&home_path.join("device.key")), 0o600);
        // The phrase is never stored: no file holds the entropy or the words.
        for entry in fs::read_dir(&home_path).expect("list") {
            let bytes = fs::read(entry.expect("entry").path()).expect("read");
            assert!(!bytes.windows(32).any(|w| w == [1u8; 32]));
            let words = phrase.words().join(" ");
            assert!(!String::from_utf8_lossy(&bytes).contains(&words));
        }
    }

    #[test]
    fn labels_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let phrase = Phrase::from_entropy([1; 32]);
        assert!(matches!(
            Home::init(dir.path(), &phrase, device("  ")),
            Err(HomeError::InvalidLabel { what: "name", .. })
        ));
    }
}
