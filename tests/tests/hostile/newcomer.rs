//! What a newcomer meets first: the words on the screen, the pairing screen on an 80×24
//! terminal, output piped into other tools, logs written to a file, and commands that do not
//! fit the device they are typed on.

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

use triad_e2e::{Device, open_pairing, paired_pi, start_agent, write_noise};

#[test]
fn status_piped_into_head_ends_quietly() {
    let d = Device::new();
    // Far more than a pipe holds, so that `status` is still writing when the reader goes.
    for i in 0..3000 {
        fs::write(d.folder.join(format!("IMG_{i:04}_with_a_longer_name.xmp")), i.to_string())
            .expect("write");
    }
    d.ok(&["backup"]);
    let _agent = start_agent(&d);
    let mut args = vec!["status"];
    for state in ["PROTECTED", "PENDING-OFFSITE", "DEGRADED", "AT-RISK", "LOST"] {
        args.extend(["--files", state]);
    }
    let mut child = d
        .command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("status runs");
    let mut reader = BufReader::new(child.stdout.take().expect("piped"));
    let mut first = String::new();
    reader.read_line(&mut first).expect("a first line");
    drop(reader);
    let out = child.wait_with_output().expect("status ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!first.is_empty());
    assert!(!stderr.contains("panicked"), "{stderr}");
    // A closed pipe is no failure of triad's: it exits as it would have, never as a panic.
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    assert!(out.status.code().is_some(), "killed by a signal: {:?}", out.status);
}

#[test]
fn a_log_written_to_a_file_holds_no_colour_codes() {
    let d = Device::new();
    write_noise(&d.folder.join("IMG_0001.CR3"), 100_000, 1);
    let out = d.command(&["backup"]).env("TRIAD_LOG", "debug").output().expect("backup runs");
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("DEBUG"), "the log says something at debug: {log}");
    assert!(!log.contains('\u{1b}'), "escape codes in a log file: {log:?}");
}

#[test]
fn counts_and_lengths_of_time_read_as_words() {
    let d = Device::new();
    fs::write(d.folder.join("IMG_0001.xmp"), "one").expect("write");
    let said = d.ok(&["backup"]);
    assert!(said.contains("1 file,"), "{said}");
    assert!(!said.contains("1 files"), "{said}");
    let policy = d.ok(&["policy", "show"]);
    let line = policy.lines().find(|l| l.contains("proven at least every")).expect("the window");
    // "every 7 days", never humantime's "every 7days".
    let after = line.split("every ").nth(2).expect("a length of time");
    let (number, unit) = after.split_once(' ').expect("a number, a space and a unit");
    assert!(number.parse::<u64>().is_ok(), "{line}");
    assert!(["s", "min", "h", "days"].iter().any(|u| unit.starts_with(u)), "{line}");
}

#[test]
fn the_pairing_screen_fits_80_by_24_and_says_how_long_it_is_valid() {
    let laptop = Device::new();
    let _agent = start_agent(&laptop);
    let pairing = triad_e2e::Running::spawn(
        laptop.command(&["pair", "--minutes", "1"]),
        &laptop.root().join("pair.log"),
    );
    let mut qr = Vec::new();
    let valid = loop {
        let line = pairing.text_line();
        if line.starts_with("The new device will be") {
            break line;
        }
        if line.chars().any(|c| "▀▄█".contains(c)) {
            qr.push(line);
        }
    };
    assert!(!qr.is_empty(), "no QR code drawn");
    assert!(qr.len() <= 21, "the QR code takes {} lines of 24", qr.len());
    assert!(qr.iter().all(|l| l.chars().count() <= 80));
    assert!(valid.contains("Valid for 60 s"), "{valid}");
    // The same code as the JSON form's link, which `join` accepts in either form.
    let (_json_pairing, first) = open_pairing(&laptop, &[]);
    assert!(first["link"].as_str().is_some_and(|l| l.starts_with("triad://pair?")));
}

#[test]
fn verify_on_a_laptop_without_a_store_says_what_it_checked_and_where_the_copies_are() {
    let d = Device::storeless();
    write_noise(&d.folder.join("IMG_0001.CR3"), 300_000, 1);
    d.ok(&["backup"]);
    let said = d.ok(&["verify", "--read-data"]);
    assert!(!said.contains("Everything is intact"), "{said}");
    assert!(said.contains("catalog is intact"), "{said}");
    assert!(said.contains("audit --now"), "{said}");
}

#[test]
fn a_storage_only_device_refuses_a_folder_of_its_own() {
    let laptop = Device::new();
    let _agent = start_agent(&laptop);
    let (pi, _pi_agent) = paired_pi(&laptop);
    let folder = pi.root().join("photos");
    fs::create_dir_all(&folder).expect("mkdir");
    let said = pi.code(&["folder", "add", folder.to_str().expect("utf-8"), "--media", "hdd"], 1);
    assert!(said.contains("storage-only"), "{said}");
    assert!(!fs::read_to_string(pi.home.join("config.toml")).expect("config").contains("photos"));
}

#[test]
fn the_demo_says_what_it_does() {
    let out = std::process::Command::new(triad_e2e::triad_bin())
        .args(["demo", "--help"])
        .output()
        .expect("runs");
    let help =
        String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(help.contains("storage-only Pi") && help.contains("recovery phrase"), "{help}");
}
