//! Names: what a name in a snapshot (forged by a trusted device turned hostile, or simply
//! unlucky) can make a restore, a take-over or a backup do to the file system.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use serde_json::Value;
use triad_agent::home::Home;
use triad_core::head::Head;
use triad_core::keys::VaultKeys;
use triad_core::snapshot::{Node, NodeKind, Object, Snapshot, Tree};
use triad_core::{BlobId, Timestamp};
use triad_e2e::{Device, Running, WAIT, assert_same_tree, make_shoot, packs, write_noise};
use triad_store::{Access, Store};

/// Seals an edited copy of the latest snapshot of `d`'s folder as the folder's next snapshot,
/// signed with `d`'s own key, as a compromised trusted device could; returns its short id.
/// `edit` may seal objects of its own into the store.
fn forge(d: &Device, edit: impl FnOnce(&mut Snapshot, &VaultKeys, &mut Store)) -> String {
    let home = Home::open(&d.home).expect("home");
    let keys = home.keys().expect("a trusted device holds the keys");
    let config = triad_store::Config::default();
    let mut store =
        Store::open(&d.store, None, home.vault(), Access::ReadWrite, &config).expect("store");
    let head = store
        .heads()
        .expect("heads")
        .into_iter()
        .find(|h| h.head.device == home.device_id())
        .expect("a head of the folder");
    let old = Snapshot::open(keys, &store.get(head.head.snapshot).expect("blob")).expect("open");
    let mut snapshot = old.clone();
    snapshot.sequence += 1;
    snapshot.parent = Some(head.head.snapshot);
    edit(&mut snapshot, keys, &mut store);
    let blob = snapshot.seal(keys);
    store.put(&blob).expect("put");
    store.commit().expect("commit");
    let forged = Head { sequence: snapshot.sequence, snapshot: blob.id(), ..head.head };
    assert!(store.write_head(&forged.sign(home.device_key())).expect("write head"));
    blob.id().short()
}

/// Seals `tree` into `store`; returns its address.
fn put_tree(tree: &Tree, keys: &VaultKeys, store: &mut Store) -> BlobId {
    let blob = tree.seal(keys);
    store.put(&blob).expect("put");
    blob.id()
}

fn link(name: &str, target: &Path) -> Node {
    Node {
        name: name.as_bytes().to_vec(),
        kind: NodeKind::Symlink { target: target.as_os_str().as_encoded_bytes().to_vec() },
        mode: 0o777,
        mtime: Timestamp::EPOCH,
    }
}

/// Every path under `dir`, sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten() {
        let path = entry.expect("entry").path();
        out.push(path.clone());
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            out.extend(walk(&path));
        }
    }
    out.sort();
    out
}

fn utf8(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

#[test]
fn a_forged_folder_name_never_leads_outside_the_target() {
    let d = Device::new();
    write_noise(&d.folder.join("a.CR3"), 300_000, 1);
    d.backup();
    let before = walk(d.root());
    let escape = d.root().join("escaped");
    let to = d.root().join("out").join("deep");
    for name in ["../../escaped".to_owned(), escape.to_str().expect("utf-8").to_owned()] {
        let forged = forge(&d, |s, _, _| s.folder_name = name.clone());
        let text = d.code(&["restore", "latest", "--to", utf8(&to)], 1);
        assert!(text.contains(&forged), "the error names the snapshot: {text}");
        assert!(text.contains("not a safe directory name"), "{text}");
        assert!(!escape.exists(), "{name:?} made a restore write outside its target");
        let after: Vec<PathBuf> =
            walk(d.root()).into_iter().filter(|p| !p.starts_with(&d.store)).collect();
        let before: Vec<PathBuf> =
            before.iter().filter(|p| !p.starts_with(&d.store)).cloned().collect();
        assert_eq!(after, before, "nothing was written anywhere");
        // Listing still works, and shows what the snapshot claims.
        d.ok(&["snapshots"]);
    }
}

#[test]
fn forged_entry_names_and_links_never_lead_outside_the_target() {
    let d = Device::new();
    write_noise(&d.folder.join("a").join("f.CR3"), 200_000, 2);
    d.backup();
    let honest: Value = serde_json::from_str(d.ok(&["snapshots", "--json"]).trim()).expect("json");
    let honest = honest["snapshots"][0]["id"].as_str().expect("id").to_owned();
    let to = d.root().join("out");
    let outside = d.root().join("outside");
    fs::create_dir_all(&outside).expect("mkdir");

    // A tree with a name that is a path: refused when the tree is read.
    let forged = forge(&d, |s, keys, store| {
        let tree = Tree { nodes: vec![link("..", &outside)] };
        s.root = put_tree(&tree, keys, store);
    });
    let text = d.code(&["restore", forged.as_str(), "--to", utf8(&to)], 1);
    assert!(text.contains("invalid entry name"), "{text}");

    // A snapshot where `a` is a link out of the target: restored as a link...
    let forged = forge(&d, |s, keys, store| {
        let tree = Tree { nodes: vec![link("a", &outside)] };
        s.root = put_tree(&tree, keys, store);
    });
    d.ok(&["restore", forged.as_str(), "--to", utf8(&to)]);
    assert!(fs::symlink_metadata(to.join("shoot/a")).expect("link").file_type().is_symlink());
    // ...and a later restore of `a/f.CR3` from the honest snapshot never writes through it.
    let text = d.code(&["restore", honest.as_str(), "a/f.CR3", "--to", utf8(&to)], 1);
    assert!(text.contains("symbolic link"), "{text}");
    assert_eq!(walk(&outside), Vec::<PathBuf>::new(), "a restore wrote through a link");
}

fn folder_ids(d: &Device) -> Vec<(String, PathBuf)> {
    let list: Value =
        serde_json::from_str(d.ok(&["folder", "list", "--json"]).trim()).expect("json");
    list["folders"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|f| {
            (
                f["id"].as_str().expect("id").to_owned(),
                PathBuf::from(f["path"].as_str().expect("p")),
            )
        })
        .collect()
}

/// File names (last component) in each latest snapshot made by the device named `device`.
fn names_by(d: &Device, device: &str) -> Vec<Vec<String>> {
    let list: Value = serde_json::from_str(d.ok(&["snapshots", "--json"]).trim()).expect("json");
    let mut latest: Vec<(String, u64, String)> = list["snapshots"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|s| s["device"] == device)
        .map(|s| {
            let folder = s["folder_id"].as_str().expect("folder").to_owned();
            (folder, s["sequence"].as_u64().expect("seq"), s["id"].as_str().expect("id").to_owned())
        })
        .collect();
    latest.sort();
    latest.reverse();
    latest.dedup_by(|a, b| a.0 == b.0);
    let mut out: Vec<Vec<String>> = latest
        .iter()
        .map(|(_, _, id)| {
            let rows: Value =
                serde_json::from_str(d.ok(&["ls", id, "--json"]).trim()).expect("json");
            let mut names: Vec<String> = rows["entries"]
                .as_array()
                .expect("rows")
                .iter()
                .filter(|r| r["type"] == "file")
                .map(|r| r["path"].as_str().expect("path").rsplit('/').next().expect("name").into())
                .collect();
            names.sort();
            names
        })
        .collect();
    out.sort();
    out
}

#[test]
fn folders_with_the_same_name_restore_and_are_taken_over_apart() {
    let d = Device::new();
    let work = d.root().join("Work").join("shoot");
    fs::create_dir_all(&work).expect("mkdir");
    d.ok(&["folder", "add", utf8(&work), "--media", "ssd"]);
    write_noise(&d.folder.join("home.CR3"), 300_000, 3);
    write_noise(&work.join("work.CR3"), 300_000, 4);
    d.code(&["backup"], 0);
    let folders = folder_ids(&d);
    assert_eq!(folders.len(), 2);

    let to = d.root().join("out");
    let out = d.ok(&["restore", "latest", "--to", utf8(&to), "--json"]);
    let report: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(report["files"], 2, "{report}");
    let placed = report["folders"].as_array().expect("where each folder went");
    assert_eq!(placed.len(), 2, "{report}");
    let mut dirs = Vec::new();
    for p in placed {
        let (_, source) = folders
            .iter()
            .find(|(id, _)| *id == p["folder_id"].as_str().expect("id"))
            .expect("a folder of the device");
        let dir = PathBuf::from(p["to"].as_str().expect("to"));
        assert!(dir.starts_with(&to), "{report}");
        assert_eq!(assert_same_tree(source, &dir), 1);
        dirs.push(dir);
    }
    assert_ne!(dirs[0], dirs[1], "two folders restored into one directory");
    // The human output says which went where.
    let human = d.ok(&["restore", "latest", "--to", utf8(&d.root().join("out2"))]);
    for dir in &dirs {
        assert!(human.contains(dir.file_name().expect("name").to_str().expect("utf-8")), "{human}");
    }

    // A new device takes both over: two paths, and each history keeps its own files.
    let fresh = Device::bare();
    let mut child = fresh
        .command(&["recover", "--store", utf8(&d.store), "--name", "new-laptop"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(d.phrase.as_bytes()).expect("phrase");
    assert!(child.wait_with_output().expect("wait").status.success());
    let taken = fresh.root().join("restored");
    fresh.ok(&["restore", "latest", "--to", utf8(&taken), "--take-over"]);
    let now = folder_ids(&fresh);
    assert_eq!(now.len(), 2);
    assert_ne!(now[0].1, now[1].1, "two folders share one path after a take-over");
    fresh.code(&["backup", "--allow-empty"], 0);
    let seen = names_by(&fresh, "new-laptop");
    assert_eq!(seen, vec![vec!["home.CR3".to_owned()], vec!["work.CR3".to_owned()]]);
}

#[test]
fn names_of_up_to_255_bytes_restore() {
    let d = Device::new();
    for (len, seed) in [(235, 5), (250, 6), (255, 7)] {
        let name = format!("{}.CR3", "x".repeat(len - 4));
        assert_eq!(name.len(), len);
        write_noise(&d.folder.join(&name), 100_000, seed);
    }
    let deep = d.folder.join("y".repeat(255));
    write_noise(&deep.join("z".repeat(255)), 10_000, 8);
    d.backup();
    d.code(&["verify", "--read-data"], 0);
    let to = d.root().join("out");
    d.ok(&["restore", "latest", "--to", utf8(&to)]);
    assert_eq!(assert_same_tree(&d.folder, &to.join("shoot")), 4);
}

#[test]
fn a_store_or_a_home_inside_a_protected_folder_is_refused_or_skipped() {
    let d = Device::new();
    write_noise(&d.folder.join("a.CR3"), 100_000, 9);
    // A store inside the folder, a folder around the store or around the home: refused.
    let inside = d.folder.join("triad-store");
    let text = d.code(&["store", "add", utf8(&inside), "--media", "ssd"], 1);
    assert!(text.contains("back itself up"), "{text}");
    assert!(!inside.exists());
    let text = d.code(&["folder", "add", utf8(&d.root().join("disk")), "--media", "hdd"], 1);
    assert!(text.contains("back itself up"), "{text}");
    let e = Device::bare();
    e.ok(&["init", "--name", "e", "--site", "home"]);
    let text = e.code(&["folder", "add", utf8(e.root()), "--media", "ssd"], 1);
    assert!(text.contains("home"), "{text}");

    // A home and a store that appear inside the folder later are skipped, saying so.
    let other_home = d.folder.join(".triad");
    let out = d
        .command(&["init", "--name", "other", "--site", "home", "--json"])
        .env("TRIAD_HOME", &other_home)
        .output()
        .expect("runs");
    assert!(out.status.success());
    let other = Device::new();
    other.ok(&["store", "add", utf8(&d.folder.join("nested")), "--media", "ssd"]);
    let text = d.code(&["backup"], 4);
    assert!(text.contains("triad home"), "{text}");
    assert!(text.contains("triad store"), "{text}");
    let listed = d.ok(&["ls", "latest"]);
    assert!(listed.contains("a.CR3"), "{listed}");
    assert!(!listed.contains("vault.key"), "the keys were backed up: {listed}");
    assert!(!listed.contains("nested"), "a store was backed up: {listed}");
}

#[test]
fn paths_printed_by_ls_restore() {
    let d = Device::new();
    make_shoot(&d.folder, 1);
    d.backup();
    let rows: Value = serde_json::from_str(d.ok(&["ls", "latest", "--json"]).trim()).expect("json");
    let file = rows["entries"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["type"] == "file")
        .and_then(|r| r["path"].as_str())
        .expect("a file")
        .to_owned();
    assert!(d.ok(&["ls", "latest"]).contains(&file));
    let to = d.root().join("out");
    d.ok(&["restore", "latest", &file, "--to", utf8(&to)]);
    assert_eq!(
        fs::read(to.join("shoot").join(&file)).expect("restored"),
        fs::read(d.folder.join(&file)).expect("original")
    );
}

#[test]
fn an_interrupted_restore_resumes() {
    let d = Device::new();
    make_shoot(&d.folder, 2);
    d.backup();
    let to = d.root().join("out");
    d.ok(&["restore", "latest", "--to", utf8(&to)]);
    // As if the restore had stopped part way: some files not there yet.
    fs::remove_file(to.join("shoot/day1/raw/IMG_0000.CR3")).expect("rm");
    fs::remove_dir_all(to.join("shoot/day2")).expect("rm");
    let out = d.ok(&["restore", "latest", "--to", utf8(&to)]);
    assert!(out.contains("Skipped 2 files"), "{out}");
    assert_eq!(assert_same_tree(&d.folder, &to.join("shoot")), 6);
    let out = d.ok(&["restore", "latest", "--to", utf8(&to)]);
    assert!(out.contains("Restored 0 files") && out.contains("Skipped 6 files"), "{out}");
}

#[test]
fn a_restore_killed_part_way_leaves_nothing_once_run_again() {
    let d = Device::new();
    make_shoot(&d.folder, 1);
    write_noise(&d.folder.join("day1/A001_C001.MOV"), 96 << 20, 8);
    d.backup();
    let to = d.root().join("out");
    let temporary = |dir: &Path| -> Vec<PathBuf> {
        walk(dir)
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".triad-")))
            .collect()
    };
    let restore = Running::spawn(
        d.command(&["restore", "latest", "--to", utf8(&to)]),
        &d.root().join("restore.log"),
    );
    // Killed while it writes the clip.
    let until = Instant::now() + WAIT;
    while temporary(&to).is_empty() {
        assert!(Instant::now() < until, "the restore never wrote a temporary file");
        std::thread::yield_now();
    }
    restore.signal("KILL");
    let _ = restore.finish();
    assert!(!temporary(&to).is_empty(), "a killed restore leaves its temporary file");

    let out = d.ok(&["restore", "latest", "--to", utf8(&to)]);
    assert_eq!(temporary(&to), Vec::<PathBuf>::new(), "{out}");
    assert_eq!(assert_same_tree(&d.folder, &to.join("shoot")), 4);
}

#[test]
fn restore_papercuts() {
    let d = Device::new();
    make_shoot(&d.folder, 2);
    d.backup();

    // Into a protected folder: refused, nothing written.
    let inside = d.folder.join("restored");
    let text = d.code(&["restore", "latest", "--to", utf8(&inside)], 1);
    assert!(text.contains("inside the protected folder"), "{text}");
    assert!(!inside.exists());

    // `policy set --folder` takes the relative path `folder add` took.
    let out = d
        .command(&["policy", "set", "copies=2", "--folder", "Pictures/shoot"])
        .current_dir(d.root())
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A file that cannot be restored is reported once.
    let pack = &packs(&d.store)[0];
    let mut bytes = fs::read(pack).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(pack, bytes).expect("write");
    let report: Value =
        serde_json::from_slice(&d.run(&["verify", "--read-data", "--json"]).stdout).expect("json");
    let damaged = report["problems"][0]["used_by"][0]["path"].as_str().expect("path").to_owned();
    let to = d.root().join("out");
    let text = d.code(&["restore", "latest", "--to", utf8(&to)], 3);
    assert_eq!(text.matches(damaged.as_str()).count(), 1, "{text}");
}
