//! Fuzzing: the target body for the files of a home, and the list of every fuzz target.
//!
//! Each target is one function in the crate that owns its decoder; the cargo-fuzz targets in
//! `crates/proto/fuzz/fuzz_targets/` call them, and this module's test runs every one of them
//! over its committed corpus (`crates/proto/fuzz/corpus/<target>/`) on stable, so both run
//! the same code. `crates/proto/fuzz/run` runs the fuzzers.

use crate::cache::MetadataCache;
use crate::home::Identity;
use crate::peers::Book;
use crate::replicas::Ledger;

/// A fuzz target's body.
pub type Body = fn(&[u8]);

/// Every fuzz target: its name (the cargo-fuzz target and the corpus folder) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("wire", triad_proto::fuzz::wire),
    ("store_records", triad_proto::fuzz::store_records),
    ("frame", triad_net::fuzz::frame),
    ("pair", triad_net::fuzz::pair),
    ("object", triad_core::fuzz::object),
    ("head", triad_core::fuzz::head),
    ("roster", triad_core::fuzz::roster),
    ("audit", triad_core::fuzz::audit),
    ("pack", triad_store::fuzz::pack),
    ("home", home),
];

/// The files of a home parsed from bytes: `identity`, a folder's metadata cache, `peers.json`
/// and `replicas.json`. (`device.key` and `vault.key` are 32 raw bytes, checked by length; the
/// roster has its own target; `config.toml` is the user's own, parsed by the binary.)
pub fn home(data: &[u8]) {
    if let Ok(identity) = Identity::decode(data) {
        assert_eq!(Identity::decode(&identity.encode()).ok(), Some(identity));
    }
    if let Ok(cache) = MetadataCache::decode(data) {
        let bytes = cache.encode();
        let again = MetadataCache::decode(&bytes).expect("an encoded cache decodes");
        assert_eq!(again.encode(), bytes);
    }
    if let Some(book) = Book::decode(data) {
        let bytes = serde_json::to_vec(&book).expect("a book serializes");
        assert_eq!(Book::decode(&bytes), Some(book));
    }
    if let Some(ledger) = Ledger::decode(data) {
        assert_eq!(Ledger::decode(&ledger.encode()).map(|l| l.encode()), Some(ledger.encode()));
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::path::{Path, PathBuf};

    use super::*;

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/fuzz")
    }

    /// Every target runs over every input of its committed corpus without a panic.
    #[test]
    fn every_fuzz_target_passes_its_corpus() {
        let mut failed = Vec::new();
        for (name, body) in TARGETS {
            let dir = fuzz_dir().join("corpus").join(name);
            let inputs = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            let mut count = 0;
            for input in inputs {
                let path = input.expect("a corpus entry").path();
                let bytes = fs::read(&path).expect("a corpus file");
                if catch_unwind(AssertUnwindSafe(|| body(&bytes))).is_err() {
                    failed.push(path);
                }
                count += 1;
            }
            assert!(count > 0, "the corpus of {name} is empty");
        }
        assert!(failed.is_empty(), "inputs that panic: {failed:?}");
    }

    /// The cargo-fuzz targets, the corpus folders and [`TARGETS`] name the same targets.
    #[test]
    fn every_fuzz_target_is_listed_once() {
        let names = |dir: PathBuf, suffix: &str| -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .filter_map(|n| n.strip_suffix(suffix).map(str::to_owned))
                .collect();
            names.sort();
            names
        };
        let mut listed: Vec<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
        listed.sort();
        assert_eq!(names(fuzz_dir().join("fuzz_targets"), ".rs"), listed);
        assert_eq!(names(fuzz_dir().join("corpus"), ""), listed);
        let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("manifest");
        for name in &listed {
            assert!(manifest.contains(&format!("name = \"{name}\"")), "{name} has no [[bin]]");
        }
    }

    /// Writes the seed inputs (`seed-*`) of every corpus: valid records of every kind, which the
    /// fuzzers mutate. Run with `cargo test -p triad-agent --lib write_fuzz_seeds -- --ignored`
    /// after a format changes.
    #[test]
    #[ignore = "writes the committed seed corpus"]
    fn write_fuzz_seeds() {
        for (name, _) in TARGETS {
            let dir = fuzz_dir().join("corpus").join(name);
            fs::create_dir_all(&dir).expect("corpus folder");
            for (i, seed) in seeds::of(name).into_iter().enumerate() {
                fs::write(dir.join(format!("seed-{i:02}")), seed).expect("write a seed");
            }
        }
    }

    mod seeds {
        use std::path::Path;

        use triad_core::audit::{self, Range};
        use triad_core::head::Head;
        use triad_core::keys::DeviceKey;
        use triad_core::roster::{Entry, Role, Signer};
        use triad_core::seal::{self, ObjectKind};
        use triad_core::snapshot::{
            ChunkRef, FileEntry, Node, NodeKind, Object, Snapshot, Stats, Tree,
        };
        use triad_core::{BlobId, DeviceId, FolderId, Media, StoreId, Timestamp};
        use triad_net::pair::Secret;
        use triad_proto::store::{EntryHeader, Marker, PackHeader};
        use triad_proto::wire::{
            self, AuditRange, BlobAck, BlobFrame, Fetch, Joiner, Offer, PairMessage, PairRole,
            RecoverMessage, Request, Response, StoreInfo, Welcome,
        };

        use crate::cache::MetadataCache;
        use crate::home::Identity;
        use crate::peers::Book;
        use crate::replicas::{Ledger, PeerStore};
        use crate::scan::FileStat;

        pub(super) fn of(target: &str) -> Vec<Vec<u8>> {
            match target {
                "wire" => wire(),
                "store_records" => store_records(),
                "frame" => frame(),
                "pair" => pair(),
                "object" => objects(),
                "head" => vec![head().encode()],
                "roster" => roster(),
                "audit" => audit(),
                "pack" => pack(),
                "home" => home(),
                other => panic!("no seeds for {other}"),
            }
        }

        fn t() -> Timestamp {
            Timestamp::new(1_700_000_000, 5)
        }

        fn id(n: u8) -> BlobId {
            BlobId::of(&[n])
        }

        fn requests() -> Vec<Request> {
            vec![
                Request::Hello,
                Request::Missing { blobs: vec![id(1), id(2)] },
                Request::Roster { roster: triad_core::fuzz::roster_of_vault().encode() },
                Request::Heads { heads: vec![head().encode()] },
                Request::Inventory { after: Some(id(3)) },
                Request::ListHeads,
                Request::Audit { ranges: vec![AuditRange { blob: id(4), start: 9, len: 4096 }] },
            ]
        }

        fn responses() -> Vec<Response> {
            let store = StoreInfo { id: StoreId::from_bytes([3; 16]), media: Media::Hdd, free: 7 };
            vec![
                Response::Hello { name: "nas".into(), site: "studio".into(), stores: vec![store] },
                Response::Missing { blobs: vec![id(1)] },
                Response::Done,
                Response::Refused { code: wire::Refusal::Full, reason: "full".into() },
                Response::Inventory { blobs: vec![id(1), id(2)], more: true },
                Response::Heads { heads: vec![head().encode()] },
                Response::Audit { slices: vec![Some(vec![1, 2, 3]), None] },
            ]
        }

        fn pair_messages() -> Vec<PairMessage> {
            vec![
                PairMessage::Start { nameplate: 7, pake: vec![0x42; 33] },
                PairMessage::Reply { pake: vec![0x41; 33], confirm: [1; 32], sealed: vec![2; 40] },
                PairMessage::Accept { confirm: [3; 32], sealed: vec![4; 40] },
                PairMessage::Welcome { sealed: vec![5; 60] },
                PairMessage::Refused { reason: "declined".into() },
            ]
        }

        fn recover_messages() -> Vec<RecoverMessage> {
            let roster = triad_core::fuzz::roster_of_vault().encode();
            vec![
                RecoverMessage::Hello { vault: triad_core::fuzz::vault().0 },
                RecoverMessage::Challenge { nonce: [6; 32], roster: roster.clone() },
                RecoverMessage::Proof { signature: vec![7; 64], roster: roster.clone() },
                RecoverMessage::Welcome { roster },
                RecoverMessage::Refused { reason: "no".into() },
                RecoverMessage::ChallengeHeads { nonce: [6; 32], heads: vec![[9; 32]] },
                RecoverMessage::ProofChange { signature: vec![7; 64], change: vec![3, 0, 0] },
            ]
        }

        fn welcome() -> Welcome {
            Welcome {
                roster: triad_core::fuzz::roster_of_vault().encode(),
                vault_secret: Some([8; 32]),
                addresses: vec!["/ip4/127.0.0.1/udp/4001/quic-v1".into()],
            }
        }

        fn wire() -> Vec<Vec<u8>> {
            let mut out: Vec<Vec<u8>> = requests().iter().map(wire::encode).collect();
            out.extend(responses().iter().map(wire::encode));
            out.extend(pair_messages().iter().map(wire::encode));
            out.extend(recover_messages().iter().map(wire::encode));
            out.push(wire::encode(&BlobFrame::Blob { id: id(9), bytes: vec![9; 300] }));
            out.push(wire::encode(&BlobFrame::Commit));
            out.push(wire::encode(&BlobAck::Committed { count: 3 }));
            out.push(wire::encode(&BlobAck::Refused {
                code: wire::Refusal::Quota,
                reason: "quota".into(),
            }));
            out.push(wire::encode(&Fetch { blobs: vec![id(1)] }));
            let offer =
                Offer { name: "nas".into(), site: "studio".into(), role: PairRole::Trusted };
            out.push(wire::encode(&offer));
            out.push(wire::encode(&Joiner { name: "laptop".into(), site: "home".into() }));
            out.push(wire::encode(&welcome()));
            out
        }

        fn marker() -> Marker {
            Marker {
                store: StoreId::from_bytes([5; 16]),
                vault: triad_core::VaultId::from_bytes([6; 32]),
                media: Media::Ssd,
                created: Timestamp::new(1_700_000_000, 5),
            }
        }

        fn store_records() -> Vec<Vec<u8>> {
            let mut headers =
                PackHeader { store: StoreId::from_bytes([5; 16]), seq: 3 }.encode().to_vec();
            headers.extend_from_slice(&EntryHeader::blob(id(1), 100).encode());
            headers.extend_from_slice(&EntryHeader::tombstone(id(2)).encode());
            vec![marker().encode(), headers]
        }

        fn frame() -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            let framed = |which: u8, frames: Vec<Vec<u8>>| {
                let mut seed = vec![which];
                frames.into_iter().for_each(|f| seed.extend(f));
                seed
            };
            out.push(framed(0, requests().iter().map(wire::frame).collect()));
            out.push(framed(1, responses().iter().map(wire::frame).collect()));
            out.push(framed(2, pair_messages().iter().map(wire::frame).collect()));
            out.push(framed(3, recover_messages()[..1].iter().map(wire::frame).collect()));
            for len in [0usize, 5, 251, 1000] {
                let bytes = vec![3u8; len];
                let mut blob = wire::blob_frame_prefix(&BlobId::of(&bytes), len);
                blob.extend_from_slice(&bytes);
                out.push(framed(4, vec![blob, wire::frame(&BlobFrame::Commit)]));
            }
            out
        }

        fn pair() -> Vec<Vec<u8>> {
            let tagged = |which: u8, bytes: &[u8]| [&[which][..], bytes].concat();
            let secret = Secret::strong([3; 16], 7);
            let peer = triad_net::keypair(&[1; 32]).public().to_peer_id();
            let addr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().expect("an address");
            let start = PairMessage::Start { nameplate: 7, pake: vec![0x42; 33] };
            let accept = PairMessage::Accept { confirm: [3; 32], sealed: vec![4; 40] };
            vec![
                tagged(0, Secret::typed([1, 2, 3, 4]).code().as_bytes()),
                tagged(1, secret.link(peer, &[addr]).as_bytes()),
                tagged(2, &[wire::frame(&start), wire::frame(&accept)].concat()),
                tagged(3, &wire::encode(&welcome())),
                tagged(3, &wire::encode(&Joiner { name: "laptop".into(), site: "home".into() })),
                tagged(4, &peer.to_bytes()),
            ]
        }

        fn objects() -> Vec<Vec<u8>> {
            let entry = FileEntry {
                size: 3,
                mtime: t(),
                mode: 0o644,
                hash: [1; 32],
                chunks: vec![ChunkRef { blob: id(1), len: 3 }],
            };
            let node =
                |name: &[u8], kind| Node { name: name.to_vec(), kind, mode: 0o755, mtime: t() };
            let tree = Tree {
                nodes: vec![
                    node(b"a.jpg", NodeKind::File { entry: id(2) }),
                    node(b"raw", NodeKind::Dir { tree: id(3) }),
                    node(b"z", NodeKind::Symlink { target: b"../a.jpg".to_vec() }),
                ],
            };
            let snapshot = Snapshot {
                folder: FolderId::from_bytes([2; 16]),
                folder_name: "Pictures".into(),
                folder_path: b"/home/ana/Pictures".to_vec(),
                device: DeviceId::from_bytes([3; 32]),
                device_name: "laptop".into(),
                sequence: 4,
                time: t(),
                parent: Some(id(5)),
                root: id(6),
                stats: Stats { files: 1, dirs: 2, bytes: 3 },
            };
            let sealed = tree.seal(triad_core::fuzz::keys()).into_bytes();
            vec![entry.encode(), tree.encode(), snapshot.encode(), sealed]
        }

        fn head() -> triad_core::head::SignedHead {
            let (vault, _, device) = triad_core::fuzz::vault();
            let head = Head {
                vault,
                device: device.device_id(),
                folder: FolderId::from_bytes([2; 16]),
                sequence: 5,
                snapshot: id(7),
                time: t(),
            };
            head.sign(device)
        }

        fn roster() -> Vec<Vec<u8>> {
            let (_, recovery, device) = triad_core::fuzz::vault();
            let mut bigger = triad_core::fuzz::roster_of_vault().clone();
            let other = DeviceKey::from_bytes(&[2; 32]);
            let entry = Entry {
                device: other.device_id(),
                name: "pi".into(),
                site: "attic".into(),
                role: Role::StorageOnly,
                signer: Signer::Recovery,
            };
            bigger.admit_with_device(device, entry);
            bigger.remove_with_device(device, other.device_id());
            let _ = recovery;
            vec![triad_core::fuzz::roster_of_vault().encode(), bigger.encode()]
        }

        fn audit() -> Vec<Vec<u8>> {
            let bytes = vec![7u8; 5000];
            let range = Range { blob: BlobId::of(&bytes), start: 1024, len: audit::SLICE_LEN };
            let mut seed = range.start.to_le_bytes().to_vec();
            seed.extend_from_slice(&range.len.to_le_bytes());
            seed.extend_from_slice(range.blob.as_bytes());
            seed.extend(audit::slice(&bytes, range));
            vec![seed]
        }

        fn pack() -> Vec<Vec<u8>> {
            let keys = triad_core::fuzz::keys();
            let mut pack = triad_store::fuzz::pack_header().encode().to_vec();
            let mut index = Vec::new();
            for plain in [&b"first"[..], b"second", b"third"] {
                let blob = seal::seal(keys, ObjectKind::Chunk, plain);
                let offset = pack.len() + EntryHeader::LEN;
                pack.extend_from_slice(
                    &EntryHeader::blob(blob.id(), blob.as_bytes().len()).encode(),
                );
                pack.extend_from_slice(blob.as_bytes());
                index.extend_from_slice(blob.id().as_bytes());
                let location = triad_store::Location {
                    pack: 0,
                    offset: offset as u64,
                    len: blob.as_bytes().len() as u32,
                };
                index.extend_from_slice(&location.to_bytes());
            }
            let first = seal::seal(keys, ObjectKind::Chunk, b"first").id();
            pack.extend_from_slice(&EntryHeader::tombstone(first).encode());
            let mut damaged = pack.clone();
            damaged[100] ^= 1;
            let mut with_index = pack.clone();
            with_index.extend_from_slice(&index);
            with_index.push(3);
            vec![pack, damaged, with_index]
        }

        fn home() -> Vec<Vec<u8>> {
            let identity = Identity {
                vault: triad_core::fuzz::vault().0,
                name: "laptop".into(),
                site: "home".into(),
            };
            let mut cache = MetadataCache::default();
            let stat = FileStat { size: 3, mtime: t(), ctime: t(), inode: 9, mode: 0o644 };
            cache.insert(Path::new("a/b.jpg"), &stat, id(1));
            let mut book = Book::default();
            book.add(DeviceId::from_bytes([3; 32]), "/ip4/10.0.0.2/udp/4001/quic-v1");
            let mut ledger = Ledger::default();
            let stores = vec![PeerStore { id: StoreId::from_bytes([4; 16]), media: Media::UsbHdd }];
            let folder = FolderId::from_bytes([2; 16]);
            ledger.record(
                DeviceId::from_bytes([3; 32]),
                stores,
                &[(folder, id(5))],
                &Default::default(),
                false,
                100,
            );
            ledger.audited(DeviceId::from_bytes([3; 32]), false, 200);
            vec![
                identity.encode(),
                cache.encode(),
                serde_json::to_vec_pretty(&book).expect("a book serializes"),
                ledger.encode(),
            ]
        }
    }
}
