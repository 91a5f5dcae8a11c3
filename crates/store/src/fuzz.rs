//! Fuzz target body for what this crate reads from a disk (see `triad_core::fuzz`): a pack
//! file walked entry by entry, the index a read-only open builds from it, and index locations
//! from a damaged index. Everything runs over a file layer in memory.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use triad_core::{BlobId, Media, StoreId, Timestamp, VaultId};
use triad_proto::store::{EntryHeader, EntryKind, Marker, PackHeader};

use crate::fs::{File, Fs, Kind, LockGuard};
use crate::index::{Batch, Index, Location, MemIndex};
use crate::store::{Access, Config, Store};
use crate::{pack, store};

const STORE: StoreId = StoreId::from_bytes([5; 16]);
const VAULT: VaultId = VaultId::from_bytes([6; 32]);

/// The store and pack the fuzz target reads.
pub fn pack_header() -> PackHeader {
    PackHeader { store: STORE, seq: 0 }
}

/// A pack file: `data` is the whole file of pack 0 of a store. It is walked (with and without
/// checking the bodies), the store is opened read-only (its index built from the pack), and
/// every blob found is read and scrubbed. The last byte says how many index locations (blob id
/// and location, 48 bytes each) before it are also read, as a damaged index would give them.
pub fn pack(data: &[u8]) {
    let file = MemFile(Arc::new(data.to_vec()));
    let len = data.len() as u64;
    let mut entries = Vec::new();
    let walked = pack::walk(&file, len, pack_header(), true, &mut |found| {
        if let pack::Found::Entry { header, offset, problem } = found {
            assert!(offset + header.entry_len() <= len, "an entry past the end of the pack");
            entries.push((header, offset, problem.is_none()));
        }
    })
    .expect("memory reads do not fail");
    assert!(walked.end <= len);
    let mut headers_only = 0;
    let walked_again = pack::walk(&file, len, pack_header(), false, &mut |found| {
        if let pack::Found::Entry { .. } = found {
            headers_only += 1;
        }
    })
    .expect("memory reads do not fail");
    assert_eq!((walked_again, headers_only), (walked, entries.len()), "bodies change no walk");
    for &(header, offset, sound) in &entries {
        if header.kind == EntryKind::Blob {
            let location =
                Location { pack: 0, offset: offset + EntryHeader::LEN as u64, len: header.len };
            let problem = store::check_entry(&file, header.blob, location, &mut Vec::new());
            assert_eq!(problem.is_none(), sound, "a walk and a check agree on {location:?}");
        }
    }

    let fs: Arc<dyn Fs> = Arc::new(MemFs::new(data));
    let config = Config::default();
    let root = Path::new(ROOT);
    if let Ok(store) = Store::open_scanned(fs.clone(), root, VAULT, &config) {
        read_everything(&store);
    }

    let Some((&count, rest)) = data.split_last() else {
        return;
    };
    let count = usize::from(count % 8).min(rest.len() / 48);
    let mut batch = Batch { pack_lengths: vec![(0, len)], ..Batch::default() };
    for record in rest[rest.len() - count * 48..].chunks_exact(48) {
        let id = BlobId::try_from_slice(&record[..32]).expect("32 bytes");
        let location = Location::from_bytes(&record[32..]).expect("16 bytes");
        assert_eq!(Location::from_bytes(&location.to_bytes()), Some(location));
        let _ = location.end();
        batch.puts.push((id, location));
    }
    let mut index = MemIndex::new();
    index.init(STORE).expect("a memory index does not fail");
    index.commit(&batch).expect("a memory index does not fail");
    if let Ok(store) =
        Store::open_with(fs, Box::new(index), root, None, VAULT, Access::ReadOnly, &config)
    {
        read_everything(&store);
    }
}

fn read_everything(store: &Store) {
    let blobs = store.blobs().expect("a memory index does not fail");
    for info in &blobs {
        if let Ok(blob) = store.get(info.id) {
            assert_eq!(blob.id(), info.id, "a blob read is the blob asked for");
        }
        let _ = store.contains(info.id);
    }
    let _ = store.scrub(&mut |_| {}).expect("a memory index does not fail");
    let _ = store.stats();
    let _ = store.heads();
    let _ = store.roster();
}

const ROOT: &str = "/fuzz-store";

/// A read-only file layer in memory: a store whose marker is valid and whose only pack is the
/// fuzzed bytes.
#[derive(Debug)]
struct MemFs {
    files: BTreeMap<PathBuf, Arc<Vec<u8>>>,
    dirs: BTreeMap<PathBuf, Vec<OsString>>,
}

impl MemFs {
    fn new(pack: &[u8]) -> Self {
        let root = PathBuf::from(ROOT);
        let marker =
            Marker { store: STORE, vault: VAULT, media: Media::Ssd, created: Timestamp::EPOCH };
        let files = BTreeMap::from([
            (root.join("triad-store"), Arc::new(marker.encode())),
            (root.join("packs").join(pack::file_name(0)), Arc::new(pack.to_vec())),
        ]);
        let dirs = BTreeMap::from([
            (root.clone(), vec!["triad-store".into(), "packs".into(), "heads".into()]),
            (root.join("packs"), vec![pack::file_name(0).into()]),
            (root.join("heads"), Vec::new()),
        ]);
        Self { files, dirs }
    }
}

fn read_only() -> io::Error {
    io::Error::from(io::ErrorKind::ReadOnlyFilesystem)
}

impl Fs for MemFs {
    fn kind(&self, path: &Path) -> io::Result<Option<Kind>> {
        Ok(if self.dirs.contains_key(path) {
            Some(Kind::Dir)
        } else {
            self.files.contains_key(path).then_some(Kind::File)
        })
    }

    fn create_dir(&self, _: &Path) -> io::Result<()> {
        Err(read_only())
    }

    fn create_dir_all(&self, _: &Path) -> io::Result<()> {
        Err(read_only())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        self.dirs.get(path).cloned().ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn open(&self, path: &Path, write: bool) -> io::Result<Box<dyn File>> {
        if write {
            return Err(read_only());
        }
        let bytes = self.files.get(path).ok_or(io::ErrorKind::NotFound)?;
        Ok(Box::new(MemFile(bytes.clone())))
    }

    fn create_new(&self, _: &Path) -> io::Result<Box<dyn File>> {
        Err(read_only())
    }

    fn create(&self, _: &Path) -> io::Result<Box<dyn File>> {
        Err(read_only())
    }

    fn rename(&self, _: &Path, _: &Path) -> io::Result<()> {
        Err(read_only())
    }

    fn remove_file(&self, _: &Path) -> io::Result<()> {
        Err(read_only())
    }

    fn sync_dir(&self, _: &Path) -> io::Result<()> {
        Err(read_only())
    }

    fn try_lock(&self, _: &Path, _: bool, _: bool) -> io::Result<Option<LockGuard>> {
        Ok(Some(Box::new(())))
    }
}

#[derive(Debug)]
struct MemFile(Arc<Vec<u8>>);

impl File for MemFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start.checked_add(buf.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
        let bytes = self.0.get(start..end).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(bytes);
        Ok(())
    }

    fn write_all_at(&self, _: &[u8], _: u64) -> io::Result<()> {
        Err(read_only())
    }

    fn sync(&self) -> io::Result<()> {
        Err(read_only())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }

    fn set_len(&self, _: u64) -> io::Result<()> {
        Err(read_only())
    }
}
