//! The file layer: every file and directory operation of the store goes through [`Fs`].
//!
//! The store relies on exactly these durability rules, which is what a POSIX file system on
//! Linux gives and what a test double can model:
//!
//! - bytes written to a file survive a crash only after [`File::sync`] returned;
//! - a file or directory created, renamed or removed in a directory survives a crash only after
//!   [`Fs::sync_dir`] of that directory returned.
//!
//! [`RealFs`] is `std::fs`. Tests use a double that keeps a durable and a volatile view of every
//! file and directory and, at a simulated crash, keeps only what was synced.

use std::any::Any;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// An open file. Reads and writes are positioned; there is no cursor.
pub trait File: Send + Sync + fmt::Debug {
    /// Fills `buf` from `offset`. Fails with [`io::ErrorKind::UnexpectedEof`] if the file ends
    /// first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, growing the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data durable (fsync).
    fn sync(&self) -> io::Result<()>;
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates (or extends) the file to `len`; durable after [`File::sync`].
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// What is at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// Something else (a socket, a device, ...).
    Other,
}

/// A held lock on a store; released when dropped.
pub type LockGuard = Box<dyn Any + Send + Sync>;

/// The alignment of offsets, lengths and memory of writes through [`Fs::open_direct`]: a
/// multiple of the logical block size of every disk in use.
pub const DIRECT_ALIGN: usize = 4096;
/// The mode of every directory a store makes: only its owner may enter it.
const PRIVATE_DIR: u32 = 0o700;
/// The mode of every file a store makes.
const PRIVATE_FILE: u32 = 0o600;

/// The file operations the store needs. Object-safe, so tests can pass a double.
pub trait Fs: Send + Sync + fmt::Debug {
    /// What is at `path`, or `None` if nothing is (symbolic links are followed).
    fn kind(&self, path: &Path) -> io::Result<Option<Kind>>;
    /// Creates a directory; its parent must exist. Durable after `sync_dir` of the parent.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Creates a directory and any missing parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names in a directory, in no particular order.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>>;
    /// Opens an existing file, for reading, or for reading and writing.
    fn open(&self, path: &Path, write: bool) -> io::Result<Box<dyn File>>;
    /// Opens an existing file for writes that bypass the page cache (`O_DIRECT`), or returns
    /// `Ok(None)` where the file system cannot. Such writes must start at a multiple of
    /// [`DIRECT_ALIGN`], be a multiple of it long, and come from memory aligned to it; a write
    /// that breaks these rules fails with [`io::ErrorKind::InvalidInput`].
    fn open_direct(&self, path: &Path) -> io::Result<Option<Box<dyn File>>> {
        let _ = path;
        Ok(None)
    }
    /// Creates a file that must not exist yet, open for reading and writing.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn File>>;
    /// Creates a file, or truncates it if it exists, open for reading and writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn File>>;
    /// Renames a file, replacing `to` if it exists. Durable after `sync_dir` of the parent.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file. Durable after `sync_dir` of the parent.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Reads a whole small file, refusing files longer than `limit` with
    /// [`io::ErrorKind::FileTooLarge`].
    fn read(&self, path: &Path, limit: u64) -> io::Result<Vec<u8>> {
        let file = self.open(path, false)?;
        let len = file.len()?;
        if len > limit {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "file over its size limit"));
        }
        let mut buf = vec![0; usize::try_from(len).expect("limit fits in memory")];
        file.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
    /// Takes an advisory lock on the file at `path` without waiting: exclusive, or shared.
    /// `create` makes the file if it is missing. Returns `Ok(None)` if another holder
    /// conflicts.
    fn try_lock(&self, path: &Path, exclusive: bool, create: bool)
    -> io::Result<Option<LockGuard>>;
}

/// The real file system, through `std::fs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

impl File for fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        fs::File::set_len(self, len)
    }
}

impl Fs for RealFs {
    fn kind(&self, path: &Path) -> io::Result<Option<Kind>> {
        match fs::metadata(path) {
            Ok(meta) if meta.is_file() => Ok(Some(Kind::File)),
            Ok(meta) if meta.is_dir() => Ok(Some(Kind::Dir)),
            Ok(_) => Ok(Some(Kind::Other)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    // A store is private whatever the umask: its directories are 0700 and its files 0600.
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::DirBuilder::new().mode(PRIVATE_DIR).create(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::DirBuilder::new().recursive(true).mode(PRIVATE_DIR).create(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        fs::read_dir(path)?.map(|entry| entry.map(|e| e.file_name())).collect()
    }

    fn open(&self, path: &Path, write: bool) -> io::Result<Box<dyn File>> {
        let file = OpenOptions::new().read(true).write(write).open(path)?;
        Ok(Box::new(file))
    }

    fn open_direct(&self, path: &Path) -> io::Result<Option<Box<dyn File>>> {
        match OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path) {
            Ok(file) => Ok(Some(Box::new(file))),
            // The file system has no direct I/O (some FUSE and network file systems).
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn File>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(PRIVATE_FILE)
            .open(path)?;
        Ok(Box::new(file))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn File>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(PRIVATE_FILE)
            .open(path)?;
        Ok(Box::new(file))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        fs::File::open(path)?.sync_all()
    }

    fn try_lock(
        &self,
        path: &Path,
        exclusive: bool,
        create: bool,
    ) -> io::Result<Option<LockGuard>> {
        // flock(2) through std: LOCK_EX|LOCK_NB or LOCK_SH|LOCK_NB. The lock belongs to this
        // open file description, so a second open in the same process conflicts too.
        let file = OpenOptions::new()
            .read(true)
            .write(create)
            .create(create)
            .mode(PRIVATE_FILE)
            .open(path)?;
        let locked = if exclusive { file.try_lock() } else { file.try_lock_shared() };
        match locked {
            Ok(()) => Ok(Some(Box::new(file))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(err)) => Err(err),
        }
    }
}
