//! The home: one vault per home, private files, the phrase never stored, clear errors.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::Device;

#[test]
fn init_makes_a_private_home_and_never_stores_the_phrase() {
    let d = Device::new();
    let mode = |p: &std::path::Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&d.home), 0o700);
    assert_eq!(mode(&d.home.join("vault.key")), 0o600);
    assert_eq!(mode(&d.home.join("device.key")), 0o600);
    let words: Vec<&str> = d.phrase.split_whitespace().collect();
    assert_eq!(words.len(), 24);
    for entry in fs::read_dir(&d.home).expect("list") {
        let bytes = fs::read(entry.expect("entry").path()).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&d.phrase), "the phrase is stored in the home");
        assert!(!text.contains(&words[..4].join(" ")), "part of the phrase is stored");
    }
}

#[test]
fn a_second_init_is_refused() {
    let d = Device::new();
    let text = d.code(&["init", "--name", "other", "--site", "home"], 1);
    assert!(text.contains("already holds a vault"), "{text}");
}

#[test]
fn commands_without_a_vault_say_what_to_do() {
    let d = Device::bare();
    let text = d.code(&["backup"], 1);
    assert_eq!(
        text.trim(),
        format!(
            "error: no vault in {}: run `triad init` (new vault) or `triad recover` (existing vault)",
            d.home.display()
        )
    );
    let text = d.code(&["frobnicate"], 2);
    assert!(text.contains("unrecognized subcommand"), "{text}");
}

#[test]
fn a_device_without_a_store_or_folder_is_told_how_to_add_one() {
    let d = Device::bare();
    d.ok(&["init", "--name", "laptop", "--site", "home", "--json"]);
    let text = d.code(&["backup"], 1);
    assert!(text.contains("triad folder add"), "{text}");
    d.ok(&["folder", "add", d.folder.to_str().expect("utf-8")]);
    let text = d.code(&["backup"], 1);
    assert!(text.contains("triad store add"), "{text}");
}
