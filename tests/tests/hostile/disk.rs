//! A damaged or unlucky disk: head files damaged or gone, packs cut short, flipped bytes, a
//! damaged pack header, a vault key from elsewhere, a careless umask. Each is noticed, named,
//! and mended from what the store still holds; nothing restarts history or hides other folders.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use triad_e2e::{Device, make_shoot, packs, summary, triad_bin, write_noise};

/// Flips one bit of the byte at `at`.
fn flip_byte(path: &Path, at: u64) {
    let mut f = fs::OpenOptions::new().read(true).write(true).open(path).expect("open");
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.read_exact(&mut byte).expect("read");
    byte[0] ^= 0x40;
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.write_all(&byte).expect("write");
    f.sync_all().expect("sync");
}

/// Every head file of a store.
fn head_files(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for device in fs::read_dir(store.join("heads")).expect("heads dir") {
        for file in fs::read_dir(device.expect("entry").path()).expect("device dir") {
            let path = file.expect("entry").path();
            if !path.file_name().expect("name").to_string_lossy().starts_with('.') {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The latest sequence of each folder, by folder name, from `snapshots --json`.
fn latest_sequences(d: &Device) -> Vec<(String, u64)> {
    let out = d.ok(&["snapshots", "--json"]);
    let list: Value = serde_json::from_str(out.trim()).expect("json");
    let mut best: Vec<(String, u64)> = Vec::new();
    for s in list["snapshots"].as_array().expect("array") {
        let name = s["folder"].as_str().expect("folder").to_owned();
        let seq = s["sequence"].as_u64().expect("sequence");
        match best.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = entry.1.max(seq),
            None => best.push((name, seq)),
        }
    }
    best.sort();
    best
}

/// A device with two protected folders, each backed up twice.
fn two_folders() -> (Device, PathBuf) {
    let d = Device::new();
    let other = d.root().join("Pictures").join("other");
    fs::create_dir_all(&other).expect("mkdir");
    d.ok(&["folder", "add", other.to_str().expect("utf-8"), "--media", "ssd"]);
    make_shoot(&d.folder, 2);
    write_noise(&other.join("a.CR3"), 400_000, 7);
    d.ok(&["backup"]);
    write_noise(&d.folder.join("second.CR3"), 300_000, 8);
    write_noise(&other.join("b.CR3"), 300_000, 9);
    d.ok(&["backup"]);
    (d, other)
}

#[test]
fn a_damaged_head_is_reported_restored_and_hides_no_other_folder() {
    let (d, other) = two_folders();
    assert_eq!(latest_sequences(&d), vec![("other".to_owned(), 2), ("shoot".to_owned(), 2)]);
    let heads = head_files(&d.store);
    assert_eq!(heads.len(), 2);
    fs::write(&heads[0], b"not a head at all").expect("damage a head file");

    // The store still works for every command, and verify names the damage.
    let text = d.code(&["verify"], 3);
    assert!(text.contains("head file") && text.contains("damaged"), "{text}");
    assert!(text.contains("restored #2 from the packs"), "{text}");
    assert_eq!(latest_sequences(&d), vec![("other".to_owned(), 2), ("shoot".to_owned(), 2)]);
    // Put back: the next verify is clean, and both folders go on at #3.
    d.code(&["verify"], 0);
    write_noise(&d.folder.join("third.CR3"), 200_000, 10);
    write_noise(&other.join("c.CR3"), 200_000, 11);
    d.ok(&["backup"]);
    assert_eq!(latest_sequences(&d), vec![("other".to_owned(), 3), ("shoot".to_owned(), 3)]);
}

#[test]
fn a_missing_heads_folder_is_noticed_and_rebuilt_from_the_packs() {
    let (d, _other) = two_folders();
    fs::remove_dir_all(d.store.join("heads")).expect("lose the heads folder");

    // verify notices (and the open puts the head files back from the packs).
    let text = d.code(&["verify"], 3);
    assert!(text.contains("missing"), "{text}");
    assert_eq!(latest_sequences(&d), vec![("other".to_owned(), 2), ("shoot".to_owned(), 2)]);

    // Lost again, with the index too: `store rebuild-index` finds the heads in the packs, and
    // the next backup goes on at #3, never at #1.
    fs::remove_dir_all(d.store.join("heads")).expect("lose the heads folder");
    fs::remove_dir_all(d.store.join("index")).expect("lose the index");
    d.ok(&["store", "rebuild-index"]);
    write_noise(&d.folder.join("third.CR3"), 200_000, 10);
    let out = d.ok(&["backup", "--json"]);
    let shoot = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "summary" && v["folder"] == "shoot")
        .expect("a summary of shoot");
    assert_eq!(shoot["sequence"], 3, "{out}");
    assert_eq!(latest_sequences(&d), vec![("other".to_owned(), 2), ("shoot".to_owned(), 3)]);
}

#[test]
fn a_pack_that_lost_its_tail_does_not_block_the_folder() {
    let d = Device::new();
    make_shoot(&d.folder, 2);
    d.backup();
    write_noise(&d.folder.join("later.CR3"), 600_000, 42);
    assert_eq!(d.backup()["sequence"], 2);

    // The disk loses the end of the newest pack: the second snapshot, its head and some of
    // the new file's bytes.
    let pack = packs(&d.store).pop().expect("a pack");
    let len = fs::metadata(&pack).expect("stat").len();
    fs::OpenOptions::new().write(true).open(&pack).expect("open").set_len(len - 4000).expect("cut");

    // The next backup goes on from the newest snapshot it can read, says what was lost, and
    // stores again what the cut took.
    let out = d.run(&["backup", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let lost = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "history_lost")
        .unwrap_or_else(|| panic!("the backup says what was lost: {text}"));
    assert_eq!(lost["lost"], serde_json::json!([2]), "{lost}");
    assert_eq!(lost["from"], 1, "{lost}");
    assert_eq!(summary(&text)["sequence"], 3, "history goes on after the lost snapshot");

    assert_eq!(d.intact_and_restores(), 7);
}

#[test]
fn flipped_bytes_in_a_blob_are_stored_again_by_the_next_backup() {
    let d = Device::new();
    make_shoot(&d.folder, 2);
    d.backup();
    let pack = &packs(&d.store)[0];
    let len = fs::metadata(pack).expect("stat").len();
    flip_byte(pack, len / 2);

    // verify finds it and marks it; the next backup, with nothing changed in the folder, reads
    // the file that uses it again and stores the chunk again.
    let text = d.code(&["verify", "--read-data"], 3);
    assert!(text.contains("next `triad backup` stores them again"), "{text}");
    d.backup();
    assert_eq!(d.intact_and_restores(), 6);
}

#[test]
fn store_scrub_finds_damage_drops_it_and_backup_puts_it_back() {
    let d = Device::new();
    make_shoot(&d.folder, 2);
    d.backup();
    let clean = d.code(&["store", "scrub", "--json"], 0);
    let clean: Value = serde_json::from_str(clean.trim()).expect("json");
    assert_eq!(clean["ok"], true, "{clean}");

    let pack = &packs(&d.store)[0];
    let len = fs::metadata(pack).expect("stat").len();
    flip_byte(pack, len / 3);
    let out = d.run(&["store", "scrub", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["stores"][0]["dropped"], 1, "{report}");
    let human = d.code(&["store", "scrub"], 0);
    assert!(human.contains("Every blob matches"), "dropped blobs are no longer read: {human}");

    d.backup();
    d.code(&["verify", "--read-data"], 0);
}

#[test]
fn a_damaged_pack_header_is_named_as_such() {
    let d = Device::new();
    make_shoot(&d.folder, 1);
    d.backup();
    let pack = &packs(&d.store)[0];
    flip_byte(pack, 2);
    let text = d.code(&["verify", "--read-data"], 3);
    assert!(!text.contains("0 blobs are MISSING"), "{text}");
    assert!(text.contains("header of pack"), "{text}");
    let text = d.code(&["store", "scrub"], 3);
    assert!(text.contains("header of pack"), "{text}");
}

#[test]
fn a_vault_key_from_elsewhere_is_named_not_called_damage() {
    let d = Device::new();
    make_shoot(&d.folder, 1);
    d.backup();
    fs::write(d.home.join("vault.key"), [0x5au8; 32]).expect("another key");
    let text = d.code(&["verify"], 1);
    assert!(text.contains("vault.key") && text.contains("does not belong to this vault"), "{text}");
    assert!(!text.contains("DAMAGED"), "{text}");
    write_noise(&d.folder.join("new.CR3"), 100_000, 3);
    let text = d.code(&["backup"], 1);
    assert!(text.contains("does not belong to this vault"), "{text}");
}

#[test]
fn a_store_is_private_whatever_the_umask() {
    let d = Device::bare();
    let init = "umask 000 && exec \"$0\" \"$@\"";
    let run = |args: &[&str]| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(init)
            .arg(triad_bin())
            .args(args)
            .env("TRIAD_HOME", &d.home)
            .output()
            .expect("sh runs");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["init", "--name", "laptop", "--site", "home"]);
    run(&["store", "add", d.store.to_str().expect("utf-8"), "--media", "usb-ssd"]);
    run(&["folder", "add", d.folder.to_str().expect("utf-8")]);
    make_shoot(&d.folder, 1);
    run(&["backup"]);
    let mut open = Vec::new();
    let mut stack = vec![d.store.clone()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).expect("stat");
        if meta.permissions().mode() & 0o077 != 0 {
            open.push(format!("{} {:o}", path.display(), meta.permissions().mode() & 0o777));
        }
        if meta.is_dir() {
            stack.extend(fs::read_dir(&path).expect("list").map(|e| e.expect("entry").path()));
        }
    }
    assert_eq!(fs::metadata(&d.store).expect("stat").permissions().mode() & 0o777, 0o700);
    assert!(open.is_empty(), "others may read or write: {open:?}");
}

#[test]
fn a_file_still_being_copied_leaves_no_blob_that_no_snapshot_uses() {
    let d = Device::new();
    make_shoot(&d.folder, 1);
    let growing = d.folder.join("A001_C002.MOV");
    write_noise(&growing, 24 << 20, 1);
    // The card reader goes on appending while the backup reads.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let copier = {
        let (stop, growing) = (stop.clone(), growing.clone());
        std::thread::spawn(move || {
            let key = blake3::hash(b"the rest of the clip");
            let mut noise = blake3::Hasher::new_keyed(key.as_bytes()).finalize_xof();
            let mut f = fs::OpenOptions::new().append(true).open(&growing).expect("open");
            let mut piece = vec![0u8; 16 << 10];
            for _ in 0..4096 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                noise.fill(&mut piece);
                f.write_all(&piece).expect("append");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    let out = d.run(&["backup", "--json"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    copier.join().expect("copier");
    let first = summary(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(4), "skipped while it grew: {first}");
    assert_eq!(first["skipped"][0]["path"], "A001_C002.MOV", "{first}");

    // Once the copy is finished the clip is backed up, and every blob stored for it on the
    // way is one its snapshot uses.
    let second = d.backup();
    assert_eq!(second["skipped"].as_array().map(Vec::len).unwrap_or(0), 0, "{second}");
    let report: Value = serde_json::from_str(&d.ok(&["verify", "--json"])).expect("JSON");
    assert_eq!(report["unused"], Value::Array(Vec::new()), "{report}");
    assert!(!d.ok(&["verify"]).contains("no snapshot uses"));

    // Blobs that no snapshot uses are counted, and are no damage: here the chunks of a clip
    // whose snapshot a damaged pack lost, and which was deleted before the next backup.
    let clip = d.folder.join("A001_C003.MOV");
    write_noise(&clip, 6 << 20, 3);
    d.backup();
    let pack = packs(&d.store).pop().expect("a pack");
    let len = fs::metadata(&pack).expect("stat").len();
    fs::OpenOptions::new().write(true).open(&pack).expect("open").set_len(len - 4000).expect("cut");
    fs::remove_file(&clip).expect("delete the clip");
    d.backup();
    let report: Value = serde_json::from_str(&d.ok(&["verify", "--json"])).expect("JSON");
    let unused = &report["unused"][0];
    assert!(unused["blobs"].as_u64().is_some_and(|n| n > 0), "{report}");
    assert!(unused["bytes"].as_u64().is_some_and(|n| n > 1 << 20), "{report}");
    let said = d.ok(&["verify"]);
    assert!(said.contains("that no snapshot uses") && said.contains("nothing depends on them"));
}
