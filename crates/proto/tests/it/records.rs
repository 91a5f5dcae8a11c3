//! Codec records: file entry, tree, snapshot, signed head and roster, encoded and decoded.

use triad_core::address::{AddressRecord, SignedAddressRecord};
use triad_core::head::SignedHead;
use triad_core::policy::State;
use triad_core::roster::Roster;
use triad_core::snapshot::{FileEntry, Object, Snapshot, Tree};
use triad_core::verdict::{FolderVerdict, SignedVerdict, Verdict};

use crate::fixtures;
use crate::vectors::hex_vector;

fn lines(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|line| (*line).to_owned()).collect()
}

#[test]
fn file_entry() {
    let entry = fixtures::file_entry();
    let comments = lines(&[
        "FileEntry record (object version 1): the plaintext of sealed_file_entry.hex",
        "size 3000000, mtime (1767225600 s, 123456789 ns), mode 0o644, hash [0x48; 32],",
        "chunks [(blob [0xc1; 32], len 1048576), (blob [0xc2; 32], len 1951424)]",
    ]);
    let bytes = hex_vector("file_entry.hex", &comments, &entry.encode());
    let back = FileEntry::decode(&bytes).expect("the vector decodes");
    assert_eq!(back, entry);
    assert_eq!(back.encode(), bytes);
}

#[test]
fn tree() {
    let tree = fixtures::tree();
    let comments = lines(&[
        "Tree record (object version 1): the plaintext of sealed_tree.hex; three nodes by name:",
        "b\"caf\\xe9.cr3\" File { entry: [0xe1; 32] } mode 0o644 mtime (1767225600 s, 123456789 ns)",
        "b\"edits\" Dir { tree: [0xd1; 32] } mode 0o755 mtime (1767225700 s, 0 ns)",
        "b\"latest\" Symlink { target: b\"edits/caf\\xe9.jpg\" } mode 0o777 mtime (-1 s, 500000000 ns)",
    ]);
    let bytes = hex_vector("tree.hex", &comments, &tree.encode());
    let back = Tree::decode(&bytes).expect("the vector decodes");
    back.check(triad_core::BlobId::of(&bytes)).expect("names are sorted, unique and safe");
    assert_eq!(back, tree);
    assert_eq!(back.encode(), bytes);
}

#[test]
fn snapshot() {
    let snapshot = fixtures::snapshot();
    let comments = lines(&[
        "Snapshot record (object version 1): the plaintext of sealed_snapshot.hex",
        "folder [0xf0; 16], folder_name \"2026-11-wedding\",",
        "folder_path b\"/home/ana/Pictures/2026-11-wedding\", device [0xde; 32], device_name \"laptop\",",
        "sequence 7, time (1795000000 s, 0 ns), parent Some([0xa0; 32]), root [0xa1; 32],",
        "stats { files: 1200, dirs: 14, bytes: 30000000000 }",
    ]);
    let bytes = hex_vector("snapshot.hex", &comments, &snapshot.encode());
    let back = Snapshot::decode(&bytes).expect("the vector decodes");
    assert_eq!(back, snapshot);
    assert_eq!(back.encode(), bytes);
}

#[test]
fn signed_head() {
    let head = fixtures::signed_head();
    let comments = vec![
        "SignedHead record (head version 1), ed25519 signature by DeviceKey::from_bytes(&[0x03; 32])".to_owned(),
        format!("vault {} (vault id of phrase.txt)", head.head.vault),
        format!("device {}", head.head.device),
        "folder [0xf0; 16], sequence 7, snapshot [0xa2; 32], time (1795000000 s, 0 ns)".to_owned(),
    ];
    let bytes = hex_vector("signed_head.hex", &comments, &head.encode());
    let back = SignedHead::decode(&bytes, fixtures::vault()).expect("the vector verifies");
    assert_eq!(back, head);
    assert_eq!(back.encode(), bytes);
}

#[test]
fn roster() {
    let roster = fixtures::roster();
    let laptop = fixtures::laptop().device_id();
    let pi = fixtures::pi().device_id();
    let comments = vec![
        "Roster record (roster version 3) of the vault of phrase.txt: no legacy part, two"
            .to_owned(),
        "changes, each signed over \"triad/roster-change/v3\" || vault id || 03 || change:"
            .to_owned(),
        format!("recovery public key {}", hex::encode(roster.recovery_public)),
        format!("1. no parents; admit device {laptop} (DeviceKey [0x03; 32]) \"laptop\" \"home\""),
        "   Trusted, signed by the recovery key".to_owned(),
        "2. parent: change 1's hash (BLAKE3 of its signed message || signature); admit device"
            .to_owned(),
        format!(
            "   {pi} (DeviceKey [0x04; 32]) \"pi\" \"parents\" StorageOnly, signed by the laptop"
        ),
    ];
    let bytes = hex_vector("roster.hex", &comments, &roster.encode());
    let back = Roster::decode(&bytes).expect("the vector verifies");
    assert_eq!(back, roster);
    assert_eq!(back.encode(), bytes);
}

#[test]
fn roster_with_a_removal() {
    let mut roster = fixtures::roster();
    roster.remove_with_device(&fixtures::laptop(), fixtures::pi().device_id());
    let comments = vec![
        "Roster record (roster version 3): roster.hex, then a third change following the"
            .to_owned(),
        "second: the pi removed by the laptop".to_owned(),
    ];
    let bytes = hex_vector("roster_removal.hex", &comments, &roster.encode());
    let back = Roster::decode(&bytes).expect("the vector verifies");
    assert_eq!(back, roster);
    assert!(back.device(fixtures::pi().device_id()).is_none());
    assert!(back.is_removed(fixtures::pi().device_id()));
}

/// Rosters as versions 1 and 2 wrote them (ordered entries and removals, no parents) are
/// still read, as the legacy part of a version 3 roster.
#[test]
fn version_1_and_2_rosters_are_still_read() {
    let read = |name: &str| {
        let text = std::fs::read_to_string(crate::vectors::dir().join(name)).expect("vector");
        crate::vectors::parse_hex(&text)
    };
    let names = |roster: &Roster| -> Vec<(String, String)> {
        roster.devices().iter().map(|e| (e.name.clone(), e.site.clone())).collect()
    };
    let expected = vec![("laptop".to_owned(), "home".to_owned()), ("pi".into(), "parents".into())];
    for (name, version) in [("roster_v1.hex", 1), ("roster_v2.hex", 2)] {
        let bytes = read(name);
        assert_eq!(bytes[0], version);
        let mut roster = Roster::decode(&bytes).expect("an old roster verifies");
        assert_eq!(names(&roster), expected, "{name}");
        assert_eq!(roster.legacy.entries.len(), 2);
        assert_eq!(roster.encode()[0], 3, "it is written back as version 3");
        // It grows by changes that follow all of it.
        roster.remove_with_device(&fixtures::laptop(), fixtures::pi().device_id());
        let back = Roster::decode(&roster.encode()).expect("upgraded and grown");
        assert_eq!(names(&back), expected[..1]);
    }
    let removed = Roster::decode(&read("roster_v2_removal.hex")).expect("verifies");
    assert!(removed.is_removed(fixtures::pi().device_id()));
    assert_eq!(names(&removed), expected[..1]);
}

#[test]
fn address_record() {
    let laptop = fixtures::laptop();
    let vault = fixtures::roster().vault;
    let record = AddressRecord {
        device: laptop.device_id(),
        seq: 1_767_225_600_000,
        addrs: vec!["/ip4/192.168.1.20/udp/41641/quic-v1".into()],
    };
    let signed = SignedAddressRecord::sign(&laptop, vault, record);
    let comments = lines(&[
        "SignedAddressRecord (address version 1) of the laptop (DeviceKey [0x03; 32]) in the",
        "vault of phrase.txt: seq 1767225600000, one address /ip4/192.168.1.20/udp/41641/quic-v1,",
        "signed over \"triad/address-record/v1\" || vault id || 01 || record",
    ]);
    let bytes = hex_vector("address_record.hex", &comments, &signed.encode());
    let back = SignedAddressRecord::decode(&bytes, vault).expect("the vector verifies");
    assert_eq!(back, signed);
    assert_eq!(back.encode(), bytes);
}

#[test]
fn verdict() {
    let laptop = fixtures::laptop();
    let vault = fixtures::roster().vault;
    let verdict = Verdict {
        device: laptop.device_id(),
        seq: 1_767_225_600_000,
        evaluated: 1_767_225_600,
        folders: vec![FolderVerdict {
            folder: triad_core::FolderId::from_bytes([0xf0; 16]),
            path: "/home/ana/Pictures/2026".into(),
            policy: "copies=3 media=2 offsite=1".into(),
            last_backup: Some(1_767_225_000),
            counts: [10, 2, 0, 1, 0],
            worst: State::AtRisk,
            reasons: vec![(State::AtRisk, "not backed up yet".into(), 1)],
        }],
    };
    let signed = SignedVerdict::sign(&laptop, vault, verdict);
    let comments = lines(&[
        "SignedVerdict (verdict version 1) of the laptop (DeviceKey [0x03; 32]) in the vault of",
        "phrase.txt: seq 1767225600000, evaluated 1767225600, one folder [0xf0; 16] at",
        "/home/ana/Pictures/2026, policy copies=3 media=2 offsite=1, last backup 1767225000,",
        "counts [10, 2, 0, 1, 0], worst AtRisk, reason (AtRisk, \"not backed up yet\", 1),",
        "signed over \"triad/verdict/v1\" || vault id || 01 || verdict",
    ]);
    let bytes = hex_vector("verdict.hex", &comments, &signed.encode());
    let back = SignedVerdict::decode(&bytes, vault).expect("the vector verifies");
    assert_eq!(back, signed);
    assert_eq!(back.encode(), bytes);
}
