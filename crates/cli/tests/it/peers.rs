//! Devices of one vault on one machine: real agents on loopback QUIC, real pairing, real
//! pushes, each device with its own home and store.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{
    Device, Running, WAIT, dialable, join, open_pairing, paired_nas, paired_pi, start_agent,
    start_agent_as_is, status, sync_under_way, text, wait_for_status, write_noise, wrong_guess,
};

/// `triad recover --peer ADDR` on the new device `fresh` (named laptop2), the phrase on its
/// standard input.
fn recover_from(fresh: &Device, addr: &str, phrase: &str) -> std::process::Output {
    let store = fresh.store.to_str().expect("utf-8");
    let args = ["recover", "--peer", addr, "--store", store, "--media", "ssd", "--name", "laptop2"];
    let mut child = fresh
        .command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("recover runs");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), phrase.as_bytes())
        .expect("the phrase");
    child.wait_with_output().expect("recover ends")
}

fn json(out: &str) -> Value {
    serde_json::from_str(out.lines().last().expect("a line")).expect("JSON")
}

fn files_under(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                out.push(path);
            }
        }
    }
    out
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn three_devices_pair_sync_and_a_storage_only_peer_holds_no_plaintext() {
    let laptop = Device::new();
    let content_marker = "TRIADMARKER-content-7f3a";
    let name_marker = "TRIADMARKER-name-91c2";
    let sidecar = laptop.folder.join(format!("{name_marker}.xmp"));
    fs::write(&sidecar, format!("<x:xmpmeta>{content_marker}</x:xmpmeta>")).expect("write");
    write_noise(&laptop.folder.join("IMG_0001.CR3"), 3 << 20, 1);
    laptop.backup();
    let hashes: Vec<[u8; 32]> = [&sidecar, &laptop.folder.join("IMG_0001.CR3")]
        .iter()
        .map(|p| *blake3::hash(&fs::read(p).expect("read")).as_bytes())
        .collect();
    let agent = start_agent(&laptop);

    // The studio NAS joins by the link (what the QR code carries).
    let nas = Device::bare();
    let (pairing, first) = open_pairing(&laptop, &[]);
    let out = join(&nas, first["link"].as_str().expect("link"), "nas", "studio", None);
    assert!(out.status.success(), "join by link: {}", text(&out));
    let (status, rest) = pairing.finish();
    assert!(status.success(), "pair: {rest:?}");
    assert_eq!(rest.last().expect("outcome")["role"], "trusted");

    // The parents' Pi joins by the typed code, storage-only.
    let pi = Device::bare();
    let (pairing, first) = open_pairing(&laptop, &["--storage-only"]);
    let code = first["code"].as_str().expect("code");
    let out = join(&pi, code, "pi", "parents", Some(dialable(&agent.addr)));
    assert!(out.status.success(), "join by code: {}", text(&out));
    assert!(pairing.finish().0.success());
    assert!(!pi.home.join("vault.key").exists(), "a storage-only home holds no vault secret");

    nas.ok(&["store", "add", nas.store.to_str().expect("utf-8"), "--media", "raid"]);
    pi.ok(&["store", "add", pi.store.to_str().expect("utf-8"), "--media", "usb-hdd"]);
    let nas_agent = start_agent(&nas);
    let pi_agent = start_agent(&pi);
    laptop.ok(&["devices", "addr", "nas", dialable(&nas_agent.addr)]);
    laptop.ok(&["devices", "addr", "pi", dialable(&pi_agent.addr)]);

    for device in ["nas", "pi"] {
        let done = json(&laptop.ok(&["sync", device, "--json"]));
        assert_eq!(done["done"], true, "{done}");
        assert!(done["blobs_sent"].as_u64().expect("count") > 0, "{done}");
        // A second sync finds everything there.
        let again = json(&laptop.ok(&["sync", device, "--json"]));
        assert_eq!(again["blobs_sent"], 0, "{again}");
    }

    // The NAS can verify and restore everything from its own store alone; the Pi, which
    // cannot read, re-hashes every blob it holds against its address.
    nas.ok(&["verify", "--read-data"]);
    let pi_check = json(&pi.ok(&["verify", "--read-data", "--json"]));
    assert_eq!(pi_check["ok"], true, "{pi_check}");
    assert!(pi_check["blobs_read"].as_u64().expect("count") > 0, "{pi_check}");
    let to = nas.root().join("restored");
    nas.ok(&["restore", "latest", "--to", to.to_str().expect("utf-8")]);
    let restored = to.join("shoot").join(format!("{name_marker}.xmp"));
    assert_eq!(fs::read(restored).expect("restored"), fs::read(&sidecar).expect("source"));

    // Every device knows the others, and the laptop sees both online with their stores.
    let devices = json(&laptop.ok(&["devices", "--json"]));
    let list = devices["devices"].as_array().expect("devices");
    assert_eq!(list.len(), 3, "{devices}");
    for (name, role, media) in [("nas", "trusted", "raid"), ("pi", "storage-only", "usb-hdd")] {
        let d = list.iter().find(|d| d["name"] == name).expect("listed");
        assert_eq!((d["role"].as_str(), d["online"].as_bool()), (Some(role), Some(true)), "{d}");
        assert_eq!(d["stores"][0]["media"], media, "{d}");
        assert!(d["stores"][0]["free"].as_u64().is_some_and(|f| f > 0), "{d}");
    }
    let nas_view = json(&nas.ok(&["devices", "--json"]));
    assert_eq!(nas_view["devices"].as_array().expect("devices").len(), 3, "{nas_view}");

    // Removing the Pi reaches the NAS at once; the Pi is no device of the vault any more.
    let removed = json(&laptop.ok(&["devices", "remove", "pi", "--json"]));
    assert_eq!(
        removed["told"],
        serde_json::json!(["pi", "nas"]),
        "the Pi hears it first: {removed}"
    );
    for device in [&laptop, &nas] {
        let view = json(&device.ok(&["devices", "--json"]));
        let names: Vec<&str> = view["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .filter_map(|d| d["name"].as_str())
            .collect();
        assert_eq!(names.len(), 2, "{view}");
        assert!(!names.contains(&"pi"), "{view}");
    }
    let out = laptop.run(&["sync", "pi"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // The storage-only Pi holds no plaintext: no marker from the contents or the names, in any
    // encoding, and no plain hash of any file, anywhere in its home or its store.
    drop(pi_agent);
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for marker in [content_marker, name_marker] {
        needles.push((format!("{marker} raw"), marker.as_bytes().to_vec()));
        needles.push((format!("{marker} hex"), hex::encode(marker).into_bytes()));
        needles.push((format!("{marker} utf-16"), utf16(marker)));
    }
    for hash in &hashes {
        needles.push(("a file's BLAKE3".into(), hash.to_vec()));
        needles.push(("a file's BLAKE3 in hex".into(), hex::encode(hash).into_bytes()));
    }
    let mut searched = 0;
    for file in files_under(pi.root()) {
        let bytes = fs::read(&file).expect("read");
        searched += bytes.len();
        for (what, needle) in &needles {
            assert!(!contains(&bytes, needle), "{what} found in {}", file.display());
        }
    }
    assert!(searched > 3 << 20, "the Pi holds the pushed blobs ({searched} bytes searched)");
    drop(agent);
}

#[test]
fn a_wrong_code_is_burnt_an_expired_code_fails_and_a_vault_cannot_join_twice() {
    let laptop = Device::new();
    let agent = start_agent(&laptop);
    let at = dialable(&agent.addr).to_owned();
    let newcomer = Device::bare();

    // One wrong guess burns the code.
    let (pairing, first) = open_pairing(&laptop, &[]);
    let code = first["code"].as_str().expect("code").to_owned();
    let out = join(&newcomer, &wrong_guess(&code), "nas", "studio", Some(&at));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("wrong"), "{}", text(&out));
    let (status, rest) = pairing.finish();
    assert!(!status.success());
    assert!(format!("{rest:?}").contains("burnt"), "{rest:?}");
    let out = join(&newcomer, &code, "nas", "studio", Some(&at));
    assert_eq!(out.status.code(), Some(1), "the burnt code still worked: {}", text(&out));
    assert!(!newcomer.home.join("identity").exists());

    // An expired code fails.
    let (pairing, first) = open_pairing(&laptop, &["--seconds", "1"]);
    let (status, rest) = pairing.finish();
    assert!(!status.success());
    assert!(format!("{rest:?}").contains("expired"), "{rest:?}");
    let out = join(&newcomer, first["code"].as_str().expect("code"), "nas", "studio", Some(&at));
    assert_eq!(out.status.code(), Some(1), "an expired code worked: {}", text(&out));

    // A device that already has a vault does not join another.
    let (_pairing, first) = open_pairing(&laptop, &[]);
    let other = Device::new();
    let out = join(&other, first["code"].as_str().expect("code"), "x", "y", Some(&at));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("already holds a vault"), "{}", text(&out));
}

#[test]
fn the_control_socket_refuses_another_user_by_its_credentials() {
    let laptop = Device::new();
    let _agent = start_agent(&laptop);
    // Let the other user reach the socket, so that only the credential check can refuse it.
    fs::set_permissions(laptop.root(), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(&laptop.home, fs::Permissions::from_mode(0o711)).expect("chmod");
    let socket = laptop.home.join("agent.sock");
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o666)).expect("chmod");
    let client = r#"
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"op":"devices"}\n')
except BrokenPipeError:
    pass  # refused before the request was read
print(s.makefile().readline().strip())
"#;
    let run_as = |uid: Option<&str>| {
        let mut cmd = match uid {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={uid}"),
                    &format!("--regid={uid}"),
                    "--clear-groups",
                    "/usr/bin/python3",
                ]);
                c
            }
            None => Command::new("/usr/bin/python3"),
        };
        let out = cmd.args(["-c", client]).arg(&socket).output().expect("python3 runs");
        assert!(out.status.success(), "client failed: {}", text(&out));
        json(&String::from_utf8_lossy(&out.stdout))
    };
    let other = run_as(Some("65534"));
    assert!(other["error"].as_str().is_some_and(|e| e.contains("refused")), "{other}");
    let owner = run_as(None);
    assert_eq!(owner["done"], true, "{owner}");
}

#[test]
fn a_receiver_killed_mid_sync_resumes_without_resending_what_it_acknowledged() {
    let laptop = Device::new();
    // Commit (and acknowledge) every MiB, so that a kill lands between acknowledgements.
    laptop.set_option("sync", "commit_bytes", "1048576");
    for i in 0..12 {
        write_noise(&laptop.folder.join(format!("IMG_{i:04}.CR3")), 4 << 20, i);
    }
    laptop.backup();
    let _agent = start_agent(&laptop);
    let (nas, nas_agent) = paired_nas(&laptop, &[]);

    let (sync, progress) = sync_under_way(&laptop, "nas");
    let acknowledged = progress["blobs"].as_u64().expect("count");
    assert!(acknowledged > 0);
    drop(nas_agent); // SIGKILL
    let (status, _) = sync.finish();
    assert_eq!(status.code(), Some(5), "the receiver went away: unreachable");

    let nas_agent = start_agent(&nas);
    laptop.ok(&["devices", "addr", "nas", dialable(&nas_agent.addr)]);
    let done = json(&laptop.ok(&["sync", "nas", "--json"]));
    assert_eq!(done["done"], true, "{done}");
    let already = done["blobs_already_there"].as_u64().expect("count");
    assert!(already >= acknowledged, "acknowledged blobs were sent again: {done}");
    nas.ok(&["verify", "--read-data"]);
}

/// Two network namespaces joined by a veth pair: a small LAN where mDNS really runs (libp2p's
/// mDNS ignores loopback). Removed when dropped.
struct Lan {
    names: [String; 2],
}

impl Lan {
    fn new() -> Option<Lan> {
        let id = std::process::id() % 100_000;
        let names = [format!("triad-a-{id}"), format!("triad-b-{id}")];
        let (va, vb) = (format!("tva{id}"), format!("tvb{id}"));
        let lan = Lan { names };
        let [a, b] = &lan.names;
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", a],
            vec!["netns", "add", b],
            vec!["link", "add", &va, "type", "veth", "peer", "name", &vb],
            vec!["link", "set", &va, "netns", a],
            vec!["link", "set", &vb, "netns", b],
            vec!["-n", a, "addr", "add", "10.77.0.1/24", "dev", &va],
            vec!["-n", b, "addr", "add", "10.77.0.2/24", "dev", &vb],
            vec!["-n", a, "link", "set", &va, "up", "multicast", "on"],
            vec!["-n", b, "link", "set", &vb, "up", "multicast", "on"],
            vec!["-n", a, "link", "set", "lo", "up"],
            vec!["-n", b, "link", "set", "lo", "up"],
        ];
        for step in steps {
            let ok = Command::new("ip")
                .args(&step)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("skipped: this test needs root and iproute2 to make network namespaces");
                return None;
            }
        }
        Some(lan)
    }

    /// `triad ARGS` for `d`, run inside namespace `i`.
    fn command(&self, i: usize, d: &Device, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.names[i], crate::support::triad_bin()])
            .args(args)
            .env("TRIAD_HOME", &d.home)
            .env_remove("TRIAD_LOG")
            .stdin(Stdio::null());
        cmd
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "delete", name]).status();
        }
    }
}

#[test]
fn a_typed_code_finds_the_inviter_on_the_lan_by_mdns() {
    let Some(lan) = Lan::new() else { return };
    let laptop = Device::new();
    write_noise(&laptop.folder.join("IMG_0001.CR3"), 1 << 20, 3);
    laptop.backup();
    laptop.set_option("protect", "auto", "false");
    let cmd =
        lan.command(0, &laptop, &["agent", "--listen", "/ip4/10.77.0.1/udp/0/quic-v1", "--json"]);
    let agent = Running::spawn(cmd, &laptop.root().join("agent.log"));
    assert_eq!(agent.line()["event"], "listening");

    let (pairing, first) = open_pairing(&laptop, &[]);
    let code = first["code"].as_str().expect("code");
    let nas = Device::bare();
    // No --peer: the joiner must find the inviter by mDNS on the veth LAN.
    let out = lan
        .command(
            1,
            &nas,
            &["join", code, "--name", "nas", "--site", "studio", "--yes", "--wait", "30s"],
        )
        .output()
        .expect("join runs");
    assert!(out.status.success(), "join by mDNS: {}", text(&out));
    assert!(pairing.finish().0.success());

    nas.ok(&["store", "add", nas.store.to_str().expect("utf-8"), "--media", "raid"]);
    nas.set_option("protect", "auto", "false");
    let cmd =
        lan.command(1, &nas, &["agent", "--listen", "/ip4/10.77.0.2/udp/0/quic-v1", "--json"]);
    let nas_agent = Running::spawn(cmd, &nas.root().join("agent.log"));
    assert_eq!(nas_agent.line()["event"], "listening");
    // The pairing taught each side the other's address: no `devices addr` needed.
    let done = json(&laptop.ok(&["sync", "nas", "--json"]));
    assert_eq!(done["done"], true, "{done}");
    nas.ok(&["verify", "--read-data"]);
}

#[test]
fn a_receiving_store_refuses_what_would_take_it_past_its_quota() {
    let laptop = Device::new();
    for i in 0..4 {
        write_noise(&laptop.folder.join(format!("IMG_{i:04}.CR3")), 2 << 20, i);
    }
    laptop.backup();
    let _agent = start_agent(&laptop);
    let (nas, _nas_agent) = paired_nas(&laptop, &["--quota", "3M"]);
    let out = laptop.run(&["sync", "nas"]);
    assert_eq!(out.status.code(), Some(6), "refused: {}", text(&out));
    assert!(text(&out).contains("quota"), "{}", text(&out));
    // What it acknowledged before the quota is intact.
    nas.ok(&["verify", "--read-data"]);
}

#[test]
fn a_command_on_the_stores_waits_for_the_agent_to_lend_them() {
    let laptop = Device::new();
    // Commit (and acknowledge) every MiB, so that the push is caught in the middle.
    laptop.set_option("sync", "commit_bytes", "1048576");
    for i in 0..8 {
        write_noise(&laptop.folder.join(format!("IMG_{i:04}.CR3")), 3 << 20, i);
    }
    laptop.backup();
    let _laptop_agent = start_agent(&laptop);
    let (nas, _nas_agent) = paired_nas(&laptop, &[]);

    // While the NAS's agent is receiving, a command on the NAS's stores asks the agent for
    // them: it waits for the push to end instead of finding the store locked, then runs.
    let (sync, _) = sync_under_way(&laptop, "nas");
    nas.ok(&["verify", "--read-data"]);
    let (status, rest) = sync.finish();
    assert!(status.success(), "{rest:?}");
    assert_eq!(rest.last().expect("outcome")["done"], true, "{rest:?}");
    nas.ok(&["verify", "--read-data"]);
}

#[test]
fn two_devices_push_to_each_other_at_the_same_moment() {
    let laptop = Device::new();
    // Commit (and acknowledge) every MiB, so that both pushes are long and overlap.
    laptop.set_option("sync", "commit_bytes", "1048576");
    for i in 0..16 {
        write_noise(&laptop.folder.join(format!("IMG_{i:04}.CR3")), 4 << 20, i);
    }
    laptop.backup();
    let laptop_agent = start_agent(&laptop);
    let (nas, _nas_agent) = paired_nas(&laptop, &[]);
    // The NAS is a trusted device with a folder of its own.
    nas.ok(&["folder", "add", nas.folder.to_str().expect("utf-8"), "--media", "raid"]);
    for i in 0..16 {
        write_noise(&nas.folder.join(format!("DSC_{i:04}.NEF")), 4 << 20, 100 + i);
    }
    nas.backup();
    nas.set_option("sync", "commit_bytes", "1048576");
    nas.ok(&["devices", "addr", "laptop", dialable(&laptop_agent.addr)]);

    let push = |from: &Device, to: &str| {
        let args = ["sync", to, "--json", "--timeout", "50s"];
        Running::spawn(from.command(&args), &from.root().join("sync.log"))
    };
    let (to_nas, to_laptop) = (push(&laptop, "nas"), push(&nas, "laptop"));
    // Both are under way before either ends: neither waits for the other to finish.
    assert_eq!(to_nas.line()["event"], "progress", "the push to the NAS is under way");
    assert_eq!(to_laptop.line()["event"], "progress", "the push to the laptop is under way");
    for (sync, to) in [(to_nas, "nas"), (to_laptop, "laptop")] {
        let (status, rest) = sync.finish();
        assert!(status.success(), "the push to {to} failed: {rest:?}");
        assert_eq!(rest.last().expect("outcome")["done"], true, "{rest:?}");
    }
    // Each store now holds both devices' snapshots (one each), every byte sound.
    for d in [&laptop, &nas] {
        let report = json(&d.ok(&["verify", "--read-data", "--json"]));
        assert_eq!(report["ok"], true, "{report}");
        assert_eq!(report["snapshots"], 2, "{report}");
        assert_eq!(report["files"], 32, "{report}");
    }
}

fn count(answer: &Value, state: &str) -> u64 {
    answer["folders"][0]["counts"][state].as_u64().expect("a count")
}

#[test]
fn status_says_where_files_stand_and_check_says_whether_a_card_is_safe() {
    let laptop = Device::new();
    for i in 0..6 {
        write_noise(&laptop.folder.join(format!("IMG_{i:04}.CR3")), 256 << 10, i);
    }
    let out = laptop.run(&["status"]);
    assert_eq!(out.status.code(), Some(3), "no agent: {}", text(&out));
    assert!(text(&out).contains("not running"), "{}", text(&out));

    laptop.backup();
    let _agent = start_agent(&laptop);
    // The source (ssd) and one store (usb-ssd), both at home: two copies of three.
    let (code, answer) = status(&laptop, &[]);
    assert_eq!(code, 1, "{answer}");
    assert_eq!(count(&answer, "DEGRADED"), 6, "{answer}");
    assert_eq!(answer["survives_site_loss"], false, "{answer}");
    let reasons = answer["folders"][0]["reasons"].to_string();
    assert!(reasons.contains("2 of 3 copies"), "{reasons}");
    assert!(reasons.contains("no copy away from home"), "{reasons}");

    // Two copies are enough under a relaxed policy, but the offsite one is still missing.
    laptop.ok(&["policy", "set", "copies=2"]);
    let (code, answer) = status(&laptop, &[]);
    assert_eq!((code, count(&answer, "PENDING-OFFSITE")), (1, 6), "{answer}");
    laptop.ok(&["policy", "set", "copies=3"]);

    // A push to the NAS at the studio completes the policy.
    let (nas, _nas_agent) = paired_nas(&laptop, &[]);
    laptop.ok(&["sync", "nas"]);
    let (code, answer) = status(&laptop, &[]);
    assert_eq!((code, count(&answer, "PROTECTED")), (0, 6), "{answer}");
    assert_eq!(answer["survives_site_loss"], true, "{answer}");
    let human = laptop.ok(&["status"]);
    assert!(
        human.contains("PROTECTED") && human.contains("survives the loss of any one site: yes")
    );

    // A card with two of those files is safe to format; with a file never backed up it is not,
    // and that file is named.
    let card = laptop.root().join("card").join("DCIM");
    fs::create_dir_all(&card).expect("mkdir");
    for name in ["IMG_0001.CR3", "IMG_0004.CR3"] {
        fs::copy(laptop.folder.join(name), card.join(name)).expect("copy");
    }
    let card_root = card.parent().expect("card").to_str().expect("utf-8").to_owned();
    let out = laptop.run(&["check", &card_root]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("safe to format"), "{}", text(&out));
    write_noise(&card.join("IMG_9999.CR3"), 100 << 10, 9999);
    let out = laptop.run(&["check", &card_root]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("IMG_9999.CR3"), "{}", text(&out));
    assert!(!text(&out).contains("IMG_0001.CR3"), "{}", text(&out));

    // An edited file: its recorded version no longer has the source as a copy.
    write_noise(&laptop.folder.join("IMG_0002.CR3"), 256 << 10, 42);
    let (code, answer) = status(&laptop, &["--files", "degraded"]);
    assert_eq!(code, 1, "{answer}");
    let listed = &answer["folders"][0]["files"];
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{answer}");
    assert_eq!(listed[0]["path"], "IMG_0002.CR3", "{answer}");

    // A removed device stops counting: the edited file's recorded version is left in one
    // store alone.
    laptop.ok(&["devices", "remove", "nas"]);
    let (code, answer) = status(&laptop, &[]);
    assert_eq!(code, 2, "{answer}");
    assert_eq!((count(&answer, "DEGRADED"), count(&answer, "AT-RISK")), (5, 1), "{answer}");
    drop(nas);
}

#[test]
fn new_files_become_protected_without_any_command() {
    let laptop = Device::new();
    laptop.set_option("protect", "settle_ms", "200");
    laptop.set_option("protect", "retry_secs", "1");
    let _agent = start_agent_as_is(&laptop);
    let (nas, _nas_agent) = paired_nas(&laptop, &[]);

    // Files land in the folder; nobody types `backup` or `sync`.
    for i in 0..5 {
        write_noise(&laptop.folder.join(format!("IMG_{i:04}.CR3")), 512 << 10, i);
    }
    let protected =
        |n: u64| move |a: &Value| a["worst"] == "PROTECTED" && count(a, "PROTECTED") == n;
    let answer = wait_for_status(&laptop, "five new files protected", protected(5));
    assert_eq!(answer["survives_site_loss"], true, "{answer}");
    let report = json(&nas.ok(&["verify", "--read-data", "--json"]));
    assert_eq!((report["ok"].clone(), report["files"].clone()), (Value::Bool(true), 5.into()));

    // One more, later: the watcher sees it too.
    write_noise(&laptop.folder.join("IMG_0005.CR3"), 512 << 10, 5);
    wait_for_status(&laptop, "the sixth file protected", protected(6));
    // And it says what it is doing about it.
    let said = wait_for_status(&laptop, "idle", |a| {
        a["doing"]["what"].as_str().is_some_and(|w| w.starts_with("watching the folders"))
    });
    assert!(laptop.ok(&["status"]).contains("triad is watching the folders"), "{said}");

    // An edit: the new version is protected like the others; the old one is history, kept
    // with the copies it has (a store here and the NAS), reported, and not the exit code.
    write_noise(&laptop.folder.join("IMG_0000.CR3"), 512 << 10, 99);
    let answer = wait_for_status(&laptop, "the edit protected, the old version history", |a| {
        protected(6)(a) && a["folders"][0]["history"]["DEGRADED"] == 1
    });
    let history = &answer["folders"][0]["history"];
    assert_eq!(
        history.as_object().map(|h| h.values().filter_map(Value::as_u64).sum::<u64>()),
        Some(1)
    );
    assert!(laptop.ok(&["status"]).contains("earlier versions"), "{answer}");
}

#[test]
fn a_new_device_recovers_everything_from_the_phrase_and_the_storage_only_pi_alone() {
    let laptop = Device::new();
    crate::support::make_shoot(&laptop.folder, 6);
    laptop.backup();
    let agent = start_agent(&laptop);
    let (pi, pi_agent) = paired_pi(&laptop);
    laptop.ok(&["sync", "pi"]);

    // The laptop is lost: its home, its keys and its store.
    drop(agent);
    fs::remove_dir_all(&laptop.home).expect("rm home");
    fs::remove_dir_all(&laptop.store).expect("rm store");

    // A new computer with the phrase and the Pi's address.
    let fresh = Device::bare();
    let out = recover_from(&fresh, &pi_agent.addr, &laptop.phrase);
    assert!(out.status.success(), "{}", text(&out));

    let to = fresh.root().join("restored");
    fresh.ok(&["restore", "latest", "--to", to.to_str().expect("utf-8"), "--take-over"]);
    let files = crate::support::assert_same_tree(&laptop.folder, &to.join("shoot"));
    assert!(files >= 6, "{files} files restored");
    fresh.ok(&["verify", "--read-data"]);
    // The Pi now lists the new device, signed on by the recovery key.
    let view = json(&pi.ok(&["devices", "--json"]));
    assert!(view.to_string().contains("laptop2"), "{view}");

    // The new laptop protects the lost one's folder from now on: its agent backs it up (its
    // history continues) and the Pi holds the copy again, without any data sent twice.
    let folders: Value =
        serde_json::from_str(&fresh.ok(&["folder", "list", "--json"])).expect("JSON");
    assert_eq!(folders["folders"].as_array().map(Vec::len), Some(1), "{folders}");
    fresh.set_option("protect", "retry_secs", "1");
    let _fresh_agent = start_agent_as_is(&fresh);
    fresh.ok(&["devices", "addr", "pi", dialable(&pi_agent.addr)]);
    let n = files as u64;
    let answer = wait_for_status(&fresh, "protected again", |a| {
        a["worst"] == "PROTECTED" && count(a, "PROTECTED") == n
    });
    assert_eq!(answer["survives_site_loss"], true, "{answer}");
    let history = json(&fresh.ok(&["snapshots", "--json"]));
    let snapshots = history["snapshots"].as_array();
    assert!(snapshots.is_some_and(|s| s.len() >= 2), "the history continues: {history}");
    // And the lost laptop is removed, for good, everywhere it can be told.
    let removed = json(&fresh.ok(&["devices", "remove", "laptop", "--json"]));
    assert_eq!(removed["told"], serde_json::json!(["pi"]), "{removed}");
}

#[test]
fn an_audit_catches_a_corrupted_copy_and_the_agent_repairs_it() {
    let laptop = Device::new();
    laptop.set_option("protect", "settle_ms", "200");
    laptop.set_option("protect", "retry_secs", "1");
    for i in 0..6 {
        write_noise(&laptop.folder.join(format!("IMG_{i:04}.CR3")), 300 << 10, i);
    }
    let _agent = start_agent_as_is(&laptop);
    let (nas, nas_agent) = paired_nas(&laptop, &[]);
    let protected = |a: &Value| a["worst"] == "PROTECTED" && count(a, "PROTECTED") == 6;
    wait_for_status(&laptop, "protected by the NAS", protected);
    let passed = json(&laptop.ok(&["audit", "--now", "--json"]));
    assert_eq!(passed["devices"][0]["audit"]["result"], "passed", "{passed}");
    // A file was read back whole from the NAS and matched its BLAKE3 from the backup.
    let restored = &passed["devices"][0]["audit"]["restored"];
    assert!(restored["bytes"].as_u64().is_some_and(|b| b > 0), "{passed}");
    assert!(restored["path"].as_str().is_some_and(|p| p.starts_with("IMG_")), "{passed}");

    // Bit rot on the NAS's disk: bytes flipped all through its packs.
    for pack in crate::support::packs(&nas.store) {
        let mut bytes = fs::read(&pack).expect("read pack");
        for at in (4096..bytes.len()).step_by(16 << 10) {
            bytes[at] ^= 0x5a;
        }
        fs::write(&pack, bytes).expect("write pack");
    }
    let out = laptop.run(&["audit", "--now", "--json"]);
    assert_eq!(out.status.code(), Some(3), "a failed audit is damage: {}", text(&out));
    let failed = json(&text(&out));
    assert_eq!(failed["devices"][0]["audit"]["result"], "failed", "{failed}");

    // The agent pushes the damaged blobs again; audited again, the NAS passes.
    wait_for_status(&laptop, "repaired", protected);
    let again = json(&laptop.ok(&["audit", "--now", "--json"]));
    assert_eq!(again["devices"][0]["audit"]["result"], "passed", "{again}");

    // Blobs deleted from the NAS's disk (a pack file gone) are caught and sent again too.
    drop(nas_agent);
    let packs = crate::support::packs(&nas.store);
    fs::remove_file(&packs[0]).expect("rm pack");
    let nas_agent = start_agent(&nas);
    laptop.ok(&["devices", "addr", "nas", dialable(&nas_agent.addr)]);
    let out = laptop.run(&["audit", "--now", "--json"]);
    assert_eq!(out.status.code(), Some(3), "deleted blobs fail the audit: {}", text(&out));
    wait_for_status(&laptop, "repaired after a deletion", protected);
    let last = json(&laptop.ok(&["audit", "--now", "--json"]));
    assert_eq!(last["devices"][0]["audit"]["result"], "passed", "{last}");
    nas.ok(&["verify", "--read-data"]);
}

#[test]
fn own_copies_are_proven_again_by_the_agent_and_age_without_it() {
    let laptop = Device::new();
    for i in 0..3 {
        write_noise(&laptop.folder.join(format!("IMG_{i:04}.CR3")), 200 << 10, i);
    }
    // Two copies on this device are enough here; proofs last two seconds.
    laptop.ok(&["policy", "set", "copies=2", "media=1", "offsite=0", "audit-window=2s"]);
    laptop.set_option("protect", "rescan_secs", "1");
    let agent = start_agent_as_is(&laptop);
    let protected = |a: &Value| a["worst"] == "PROTECTED" && count(a, "PROTECTED") == 3;
    wait_for_status(&laptop, "protected on this device", protected);
    // The agent scrubs its store and re-hashes the sources again and again: the proofs stay
    // fresh long past the window.
    let ledger = || -> Value {
        serde_json::from_slice(&fs::read(laptop.home.join("replicas.json")).unwrap_or_default())
            .unwrap_or(Value::Null)
    };
    let first = ledger()["local"].clone();
    let until = std::time::Instant::now() + WAIT;
    while ledger()["local"] == first || ledger()["local"].is_null() {
        assert!(std::time::Instant::now() < until, "no check renewed: {}", ledger());
        std::thread::sleep(Duration::from_millis(200));
    }
    let renewed = ledger()["local"].clone();
    while ledger()["local"] == renewed {
        assert!(std::time::Instant::now() < until, "no second renewal: {}", ledger());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(protected(&status(&laptop, &[]).1));
    // Without the agent's checks the same copies age past the window.
    drop(agent);
    laptop.set_option("protect", "auto", "false");
    let _agent = start_agent_as_is(&laptop);
    let answer = wait_for_status(&laptop, "proofs aged", |a| count(a, "DEGRADED") == 3);
    assert!(answer["folders"][0]["reasons"].to_string().contains("last proven"), "{answer}");
}

#[test]
fn a_recovery_goes_on_past_a_blob_the_peer_cannot_read() {
    let laptop = Device::new();
    for i in 0..4 {
        write_noise(&laptop.folder.join(format!("IMG_{i:04}.CR3")), 1 << 20, i);
    }
    laptop.backup();
    let agent = start_agent(&laptop);
    let (pi, pi_agent) = paired_pi(&laptop);
    laptop.ok(&["sync", "pi"]);
    drop(agent);

    // One byte rots in the middle of the Pi's pack: inside a chunk (data comes first).
    drop(pi_agent);
    let pack = crate::support::packs(&pi.store).remove(0);
    let mut bytes = fs::read(&pack).expect("pack");
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    fs::write(&pack, bytes).expect("pack");
    let pi_agent = start_agent(&pi);

    let fresh = Device::bare();
    let out = recover_from(&fresh, &pi_agent.addr, &laptop.phrase);
    assert_eq!(out.status.code(), Some(3), "damage, said: {}", text(&out));
    assert!(text(&out).contains("could not be read"), "{}", text(&out));

    // Everything else is there: three of the four files restore, byte for byte.
    let to = fresh.root().join("restored");
    let out = fresh.run(&["restore", "latest", "--to", to.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(3), "one file cannot be restored: {}", text(&out));
    let mut same = 0;
    for i in 0..4 {
        let name = format!("IMG_{i:04}.CR3");
        if fs::read(to.join("shoot").join(&name)).ok() == fs::read(laptop.folder.join(&name)).ok() {
            same += 1;
        }
    }
    assert_eq!(same, 3, "{}", text(&out));
}

#[test]
fn a_laptop_without_a_store_sends_from_its_files_and_a_version_changed_first_is_lost() {
    let laptop = Device::storeless();
    laptop.set_option("protect", "settle_ms", "200");
    laptop.set_option("protect", "retry_secs", "1");
    let agent = start_agent_as_is(&laptop);
    let (nas, nas_agent) = paired_nas(&laptop, &[]);
    let (pi, pi_agent) = paired_pi(&laptop);

    // The source files on the laptop, the NAS at the studio and the Pi at the parents': three
    // copies on three kinds of media, one away from home, with no store on the laptop.
    for i in 0..5 {
        write_noise(&laptop.folder.join(format!("IMG_{i:04}.CR3")), 700 << 10, i);
    }
    let protected =
        |n: u64| move |a: &Value| a["worst"] == "PROTECTED" && count(a, "PROTECTED") == n;
    let answer = wait_for_status(&laptop, "five files protected", protected(5));
    assert_eq!(answer["survives_site_loss"], true, "{answer}");
    for peer in [&nas, &pi] {
        let report = json(&peer.ok(&["verify", "--read-data", "--json"]));
        assert_eq!(report["ok"], true, "{report}");
    }
    let report = json(&nas.ok(&["verify", "--json"]));
    assert_eq!(report["files"], 5, "{report}");
    // The laptop's catalog holds metadata only: a small fraction of the files' bytes.
    let stores = json(&laptop.ok(&["store", "list", "--json"]));
    assert_eq!(stores["stores"].as_array().map(Vec::len), Some(1), "{stores}");
    assert_eq!(stores["stores"][0]["catalog"], true, "{stores}");
    let held = stores["stores"][0]["status"]["bytes"].as_u64().expect("bytes");
    assert!(held < 64 << 10, "the catalog holds {held} bytes");
    drop(agent);

    // A new file is backed up, then edited before any other device had it: that version
    // exists nowhere any more, and status says so.
    let agent = start_agent(&laptop);
    let edited = laptop.folder.join("IMG_0005.CR3");
    write_noise(&edited, 700 << 10, 5);
    laptop.backup();
    write_noise(&edited, 800 << 10, 55);
    let (code, answer) = status(&laptop, &["--files", "lost"]);
    assert_eq!((code, count(&answer, "LOST")), (2, 1), "{answer}");
    assert_eq!(answer["folders"][0]["files"][0]["path"], "IMG_0005.CR3", "{answer}");
    let out = laptop.run(&["sync", "nas", "--json"]);
    assert_eq!(out.status.code(), Some(4), "a partial push: {}", text(&out));
    let pushed = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(pushed["versions_not_sent"], 1, "{pushed}");

    // The edit is backed up and sent: every current file is protected again; the version
    // that was lost is reported with the history, LOST.
    // The NAS heard of it already; the Pi hears of it now.
    laptop.backup();
    laptop.ok(&["sync", "nas"]);
    assert_eq!(laptop.run(&["sync", "pi"]).status.code(), Some(4));
    laptop.ok(&["sync", "pi"]);
    let (code, answer) = status(&laptop, &[]);
    assert_eq!((code, count(&answer, "PROTECTED")), (0, 6), "{answer}");
    assert_eq!(answer["folders"][0]["history"]["LOST"], 1, "{answer}");
    assert!(laptop.ok(&["status"]).contains("1 LOST"), "{answer}");
    // An audit of the NAS does not ask for what it was never sent.
    let audit = json(&laptop.ok(&["audit", "--now", "--json"]));
    assert!(!audit.to_string().contains("failed"), "{audit}");

    // A photo deleted by mistake comes back from the other devices: the laptop holds none of
    // its data.
    let kept = laptop.root().join("IMG_0003.kept");
    fs::rename(laptop.folder.join("IMG_0003.CR3"), &kept).expect("out of the folder");
    let to = laptop.root().join("back");
    let out =
        laptop.run(&["restore", "latest", "IMG_0003.CR3", "--to", to.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Fetched"), "{}", text(&out));
    let back = fs::read(to.join("shoot").join("IMG_0003.CR3")).expect("restored");
    assert!(back == fs::read(&kept).expect("kept"), "the restored photo differs");
    // Nothing fetched is left behind in the home.
    let left: Vec<_> = fs::read_dir(&laptop.home)
        .expect("home")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("restore-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // The laptop and the NAS are lost. A recovery from the Pi says which file cannot come back
    // (the version that was never sent); every current file does, byte for byte.
    drop((agent, nas_agent));
    fs::rename(&kept, laptop.folder.join("IMG_0003.CR3")).expect("put back");
    let fresh = Device::bare();
    let out = recover_from(&fresh, &pi_agent.addr, &laptop.phrase);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("1 file (") && text(&out).contains("IMG_0005.CR3"),
        "{}",
        text(&out)
    );
    let to = fresh.root().join("restored");
    fresh.ok(&["restore", "latest", "--to", to.to_str().expect("utf-8")]);
    crate::support::assert_same_tree(&laptop.folder, &to.join("shoot"));
    drop(pi_agent);
}

#[test]
fn a_file_not_backed_up_yet_is_at_risk_until_it_is() {
    let laptop = Device::new();
    // The agent watches, but waits long for the folder to settle: nothing is backed up by it.
    laptop.set_option("protect", "settle_ms", "600000");
    let _agent = start_agent_as_is(&laptop);
    wait_for_status(&laptop, "the first round done", |a| {
        a["doing"]["what"].as_str().is_some_and(|w| w.starts_with("watching the folders"))
    });

    write_noise(&laptop.folder.join("IMG_0001.CR3"), 200 << 10, 1);
    write_noise(&laptop.folder.join("IMG_0001.CR3.tmp"), 10 << 10, 2);
    let answer = wait_for_status(&laptop, "the new file seen", |a| count(a, "AT-RISK") == 1);
    assert_eq!(answer["worst"], "AT-RISK", "{answer}");
    assert!(answer.to_string().contains("not backed up yet"), "{answer}");
    let (code, listed) = status(&laptop, &["--files", "at-risk"]);
    assert_eq!(code, 2, "{listed}");
    assert_eq!(listed["folders"][0]["files"][0]["path"], "IMG_0001.CR3", "{listed}");
    assert_eq!(listed["folders"][0]["files"].as_array().map(Vec::len), Some(1), "{listed}");

    // Backed up by hand: the file is in the snapshot as it is on disk; two copies at home.
    laptop.backup();
    let (_, answer) = status(&laptop, &[]);
    assert_eq!((count(&answer, "AT-RISK"), count(&answer, "DEGRADED")), (0, 1), "{answer}");
}
