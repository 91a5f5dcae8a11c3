//! Backup → restore is byte-identical; deduplication and incremental backups store only what changed.

use std::fs::{self, File, FileTimes};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::support::{Device, assert_same_tree, make_shoot, sidecar, write_noise};

#[test]
fn restore_is_byte_identical_with_modes_and_mtimes() {
    let d = Device::new();
    make_shoot(&d.folder, 4);
    // Unusual metadata: an old mtime with nanoseconds, odd modes, an empty file, a link,
    // a name that is not UTF-8.
    let odd = d.folder.join("day1/notes.txt");
    fs::write(&odd, b"call the couple back").expect("write");
    fs::set_permissions(&odd, fs::Permissions::from_mode(0o640)).expect("chmod");
    let old = SystemTime::UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789);
    File::options()
        .write(true)
        .open(&odd)
        .expect("open")
        .set_times(FileTimes::new().set_modified(old))
        .expect("set mtime");
    let script = d.folder.join("export.sh");
    fs::write(&script, b"#!/bin/sh\necho export\n").expect("write");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::write(d.folder.join("empty.txt"), b"").expect("write");
    std::os::unix::fs::symlink("day1/notes.txt", d.folder.join("latest-notes")).expect("symlink");
    let latin1 = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"caf\xe9.jpg");
    fs::write(d.folder.join(latin1), b"bytes").expect("write");

    let first = d.backup();
    assert_eq!(first["files"], 4 * 3 + 4);
    assert!(
        first["new_data_blobs"].as_u64().expect("count") > 12,
        "raw files span several chunks: {first}"
    );

    let to = d.root().join("restored");
    d.ok(&["restore", "latest", "--to", to.to_str().expect("utf-8")]);
    let count = assert_same_tree(&d.folder, &to.join("shoot"));
    assert_eq!(count, 16);

    // The listing shows what is there, with the content hash `b3sum` would print.
    let ls: Value = serde_json::from_str(&d.ok(&["ls", "latest", "day1", "--json"])).expect("json");
    let notes = ls["entries"]
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["path"] == "day1/notes.txt")
        .expect("listed");
    assert_eq!(notes["blake3"], blake3::hash(b"call the couple back").to_hex().as_str());
    assert_eq!(notes["size"], 20);
}

#[test]
fn unchanged_renamed_and_edited_backups_store_only_what_changed() {
    let d = Device::new();
    make_shoot(&d.folder, 4);
    let first = d.backup();
    assert_eq!(first["sequence"], 1);

    // Nothing changed: no file is read, no blob is written, no new snapshot.
    let second = d.backup();
    assert_eq!(second["files_read"], 0, "{second}");
    assert_eq!(second["new_blobs"], 0, "{second}");
    assert_eq!(second["unchanged"], true);

    // Renaming a folder re-reads its files but stores no data blob.
    fs::rename(d.folder.join("day2"), d.folder.join("2026-11-02-reception")).expect("rename");
    let renamed = d.backup();
    assert_eq!(renamed["new_data_blobs"], 0, "{renamed}");
    assert!(renamed["files_read"].as_u64().expect("count") > 0);
    assert_eq!(renamed["sequence"], 2);

    // Editing one sidecar stores exactly that file's one chunk, and reads only that file.
    fs::write(d.folder.join("day1/raw/IMG_0000.xmp"), sidecar(0, 5)).expect("edit");
    let edited = d.backup();
    assert_eq!(edited["files_read"], 1, "{edited}");
    assert_eq!(edited["new_data_blobs"], 1, "{edited}");
    assert_eq!(edited["sequence"], 3);

    // Every version is still there.
    let snapshots: Value = serde_json::from_str(&d.ok(&["snapshots", "--json"])).expect("json");
    let snapshots = snapshots["snapshots"].as_array().expect("array");
    assert_eq!(snapshots.len(), 3);
    let oldest = snapshots.iter().find(|s| s["sequence"] == 1).expect("first");
    let to = d.root().join("first");
    let id = oldest["short_id"].as_str().expect("id");
    d.ok(&["restore", id, "day1/raw/IMG_0000.xmp", "--to", to.to_str().expect("utf-8")]);
    assert_eq!(
        fs::read_to_string(to.join("shoot/day1/raw/IMG_0000.xmp")).expect("restored"),
        sidecar(0, 3)
    );
}

#[test]
fn a_moved_copy_of_the_folder_deduplicates_against_the_first() {
    let d = Device::new();
    make_shoot(&d.folder, 2);
    d.backup();
    // The same shoot, copied into a second protected folder, adds no data.
    let copy = d.root().join("Pictures").join("copy-of-shoot");
    fs::create_dir_all(&copy).expect("mkdir");
    for entry in walk(&d.folder) {
        let target = copy.join(entry.strip_prefix(&d.folder).expect("inside"));
        fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        fs::copy(&entry, &target).expect("copy");
    }
    d.ok(&["folder", "add", copy.to_str().expect("utf-8")]);
    let out = d.ok(&["backup", "--json", "--folder", "copy-of-shoot"]);
    let s = crate::support::summary(&out);
    assert_eq!(s["new_data_blobs"], 0, "{s}");
    assert_eq!(s["files"], 6);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("list") {
        let p = e.expect("entry").path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn restore_refuses_to_overwrite_unless_asked() {
    let d = Device::new();
    write_noise(&d.folder.join("a.CR3"), 700_000, 1);
    d.backup();
    let to = d.root().join("out");
    let to_s = to.to_str().expect("utf-8");
    d.ok(&["restore", "latest", "a.CR3", "--to", to_s]);
    fs::write(to.join("shoot/a.CR3"), b"someone else's edit").expect("write");
    let text = d.code(&["restore", "latest", "a.CR3", "--to", to_s], 3);
    assert!(text.contains("already exists (use --overwrite)"), "{text}");
    assert_eq!(fs::read(to.join("shoot/a.CR3")).expect("read"), b"someone else's edit");
    d.ok(&["restore", "latest", "a.CR3", "--to", to_s, "--overwrite"]);
    assert_eq!(
        fs::read(to.join("shoot/a.CR3")).expect("read"),
        fs::read(d.folder.join("a.CR3")).expect("read")
    );
    // No temporary file is left behind.
    let leftovers: Vec<_> = fs::read_dir(to.join("shoot"))
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}
