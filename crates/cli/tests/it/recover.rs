//! A new device regains the vault from the phrase and one store.

use std::io::Write;
use std::process::Stdio;

use crate::support::{Device, assert_same_tree, make_shoot};

fn recover(new: &Device, store: &std::path::Path, phrase: &str) -> std::process::Output {
    let mut child = new
        .command(&["recover", "--store", store.to_str().expect("utf-8"), "--name", "new-laptop"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(phrase.as_bytes()).expect("write phrase");
    child.wait_with_output().expect("wait")
}

#[test]
fn phrase_and_store_restore_everything_on_a_new_device() {
    let old = Device::new();
    make_shoot(&old.folder, 2);
    old.backup();

    let new = Device::bare();
    let out = recover(&new, &old.store, &format!("{}\n", old.phrase));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("shoot from laptop"), "{text}");
    // The phrase never reaches the command line or the output.
    assert!(!text.contains(&old.phrase));

    let to = new.root().join("restored");
    new.ok(&["restore", "latest", "--to", to.to_str().expect("utf-8")]);
    assert_eq!(assert_same_tree(&old.folder, &to.join("shoot")), 6);
    new.code(&["verify", "--read-data"], 0);
}

#[test]
fn a_typo_is_named_and_a_wrong_phrase_is_refused() {
    let old = Device::new();
    make_shoot(&old.folder, 1);
    old.backup();
    let new = Device::bare();

    let mut words: Vec<String> = old.phrase.split_whitespace().map(str::to_owned).collect();
    let original = words[4].clone();
    words[4] = format!("{original}x");
    let out = recover(&new, &old.store, &words.join(" "));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("word 5"), "{err}");
    assert!(err.contains(&original), "suggests the right word: {err}");
    assert!(!triad_agent_home_exists(&new), "nothing was created");

    // A valid phrase of another vault.
    let other = Device::new();
    let out = recover(&new, &old.store, &other.phrase);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vault"), "{err}");
    assert!(!triad_agent_home_exists(&new), "nothing was created");
}

fn triad_agent_home_exists(d: &Device) -> bool {
    d.home.join("identity").exists()
}
