//! Damaged packs, garbage and missing indexes: named clearly, nothing else lost.

use std::fs;
use std::io::{Seek, SeekFrom, Write};

use serde_json::Value;

use crate::support::{Device, assert_same_tree, make_shoot, packs};

fn flip_byte(path: &std::path::Path, at: u64) {
    let mut f = fs::OpenOptions::new().read(true).write(true).open(path).expect("open pack");
    let mut byte = [0u8; 1];
    use std::io::Read;
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.read_exact(&mut byte).expect("read");
    byte[0] ^= 0x40;
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.write_all(&byte).expect("write");
    f.sync_all().expect("sync");
}

#[test]
fn a_flipped_byte_is_named_with_every_file_that_uses_it() {
    let d = Device::new();
    make_shoot(&d.folder, 3);
    d.backup();
    d.code(&["verify", "--read-data"], 0);

    // Flip a byte in the middle of the first pack: inside some chunk of some file.
    let pack = &packs(&d.store)[0];
    let len = fs::metadata(pack).expect("stat").len();
    flip_byte(pack, len / 2);

    // The structure check cannot see it (the index is fine); reading the data does.
    let out = d.run(&["verify", "--read-data", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let problems = report["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{report}");
    let used_by = problems[0]["used_by"].as_array().expect("used_by");
    assert_eq!(used_by.len(), 1, "one chunk of one file: {report}");
    let damaged_path = used_by[0]["path"].as_str().expect("path").to_owned();
    let human = d.code(&["verify", "--read-data"], 3);
    assert!(human.contains(problems[0]["blob"].as_str().expect("blob")), "{human}");
    assert!(human.contains(&damaged_path), "{human}");

    // Restoring the damaged file fails loudly and leaves nothing; the others restore fine.
    let to = d.root().join("restored");
    let to_s = to.to_str().expect("utf-8");
    let text = d.code(&["restore", "latest", &damaged_path, "--to", to_s], 3);
    assert!(text.contains("could NOT be restored"), "{text}");
    assert!(!to.join("shoot").join(&damaged_path).exists());
    let text = d.code(&["restore", "latest", "--to", to_s], 3);
    assert!(text.contains(&damaged_path), "{text}");
    // Everything but the damaged file is identical.
    fs::remove_file(d.folder.join(&damaged_path)).expect("set the damaged original aside");
    assert_eq!(assert_same_tree(&d.folder, &to.join("shoot")), 8);
}

#[test]
fn garbage_index_gives_a_clear_error_and_rebuild_loses_nothing() {
    let d = Device::new();
    make_shoot(&d.folder, 2);
    d.backup();
    let index = d.store.join("index");
    for entry in fs::read_dir(&index).expect("index dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            fs::write(&path, vec![0xA5; 4096]).expect("garbage");
        }
    }
    let text = d.code(&["backup"], 1);
    assert!(text.contains("rebuild-index"), "the error says what to do: {text}");
    d.ok(&["store", "rebuild-index"]);
    assert_eq!(d.intact_and_restores(), 6);
}

#[test]
fn a_deleted_index_is_rebuilt_from_the_packs_alone() {
    let d = Device::new();
    make_shoot(&d.folder, 2);
    d.backup();
    fs::remove_dir_all(d.store.join("index")).expect("delete index");
    let out = d.ok(&["store", "rebuild-index"]);
    assert!(out.contains("Rebuilt the index"), "{out}");
    d.code(&["verify", "--read-data"], 0);
    // And backups go on incrementally.
    let s = d.backup();
    assert_eq!(s["new_blobs"], 0, "{s}");
}

#[test]
fn a_missing_store_or_an_empty_mount_point_is_refused_and_never_initialised() {
    let d = Device::new();
    make_shoot(&d.folder, 1);
    d.backup();
    let aside = d.root().join("unplugged");
    fs::rename(&d.store, &aside).expect("unplug");

    let text = d.code(&["backup"], 1);
    assert!(text.contains("is missing") && text.contains("plugged in"), "{text}");
    assert!(!d.store.exists(), "a missing store is not created");

    fs::create_dir(&d.store).expect("an empty mount point");
    let text = d.code(&["backup"], 1);
    assert!(text.contains("empty") && text.contains("mount"), "{text}");
    assert_eq!(fs::read_dir(&d.store).expect("list").count(), 0, "never initialised");

    // Another vault's store at the same place is refused too.
    fs::remove_dir(&d.store).expect("rmdir");
    let other = Device::new();
    make_shoot(&other.folder, 1);
    other.backup();
    fs::rename(&other.store, &d.store).expect("plug in the wrong disk");
    let text = d.code(&["backup"], 1);
    assert!(text.contains(&d.store.display().to_string()), "{text}");

    fs::remove_dir_all(&d.store).expect("unplug");
    fs::rename(&aside, &d.store).expect("plug back in");
    d.ok(&["backup"]);
    d.code(&["verify", "--read-data"], 0);
}
