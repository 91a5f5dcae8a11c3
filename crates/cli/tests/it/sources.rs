//! Source folders: an unmounted or emptied folder, a missing one, excludes, a file that
//! changes while it is read.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::support::{Device, make_shoot, summary, write_noise};

#[test]
fn an_emptied_folder_is_refused_unless_allowed() {
    let d = Device::new();
    make_shoot(&d.folder, 1);
    d.backup();
    for entry in fs::read_dir(&d.folder).expect("list") {
        fs::remove_dir_all(entry.expect("entry").path()).expect("rm");
    }
    let text = d.code(&["backup"], 1);
    assert!(text.contains("is empty but its last snapshot had 3 files"), "{text}");
    assert!(text.contains("--allow-empty"), "{text}");
    let snapshots: Value = serde_json::from_str(&d.ok(&["snapshots", "--json"])).expect("json");
    assert_eq!(
        snapshots["snapshots"].as_array().expect("array").len(),
        1,
        "no empty snapshot was made"
    );
    let s = summary(&d.ok(&["backup", "--json", "--allow-empty"]));
    assert_eq!(s["files"], 0);
}

#[test]
fn a_missing_folder_says_to_mount_its_disk() {
    let d = Device::new();
    make_shoot(&d.folder, 1);
    d.backup();
    fs::rename(&d.folder, d.root().join("elsewhere")).expect("unmount");
    let text = d.code(&["backup"], 1);
    assert!(text.contains("does not exist: is its disk mounted?"), "{text}");
}

#[test]
fn default_and_configured_excludes_are_skipped() {
    let d = Device::new();
    make_shoot(&d.folder, 1);
    fs::write(d.folder.join(".DS_Store"), b"junk").expect("write");
    fs::create_dir_all(d.folder.join("Catalog Previews.lrdata/0")).expect("mkdir");
    fs::write(d.folder.join("Catalog Previews.lrdata/0/p.jpg"), b"preview").expect("write");
    fs::write(d.folder.join("upload.part"), b"half").expect("write");
    let s = d.backup();
    assert_eq!(s["files"], 3, "{s}");
}

#[test]
fn a_file_that_keeps_changing_is_reported_not_stored_torn() {
    let d = Device::new();
    let busy = d.folder.join("recording.MOV");
    write_noise(&busy, 32 << 20, 5);
    write_noise(&d.folder.join("still.CR3"), 300_000, 6);
    // Keep touching the file's mtime while the backup runs: every read sees a change.
    let stop = Arc::new(AtomicBool::new(false));
    let toucher = {
        let stop = stop.clone();
        let busy = busy.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i);
                if let Ok(f) = fs::File::options().write(true).open(&busy) {
                    let _ = f.set_modified(t);
                }
                std::thread::yield_now();
            }
        })
    };
    let out = d.run(&["backup", "--json"]);
    stop.store(true, Ordering::Relaxed);
    toucher.join().expect("toucher");
    assert_eq!(out.status.code(), Some(4), "partial: {}", String::from_utf8_lossy(&out.stderr));
    let s = summary(&String::from_utf8_lossy(&out.stdout));
    let skipped = s["skipped"].as_array().expect("skipped");
    assert_eq!(skipped.len(), 1, "{s}");
    assert_eq!(skipped[0]["path"], "recording.MOV");
    assert!(skipped[0]["reason"].as_str().expect("reason").contains("kept changing"), "{s}");
    assert_eq!(s["files"], 1, "the still file is in the snapshot, the torn one is not: {s}");
    // Once it settles, the next backup stores it.
    let s = d.backup();
    assert_eq!(s["files"], 2, "{s}");
    d.code(&["verify", "--read-data"], 0);
}
