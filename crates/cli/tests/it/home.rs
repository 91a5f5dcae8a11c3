//! The home: one vault per home, private files, the phrase never stored, clear errors.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

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
fn a_device_without_a_folder_is_told_how_to_add_one_and_without_a_store_keeps_a_catalog() {
    let d = Device::bare();
    d.ok(&["init", "--name", "laptop", "--site", "home", "--json"]);
    let text = d.code(&["backup"], 1);
    assert!(text.contains("triad folder add"), "{text}");
    let said = d.ok(&["folder", "add", d.folder.to_str().expect("utf-8")]);
    assert!(said.contains("no store") && said.contains("triad store add"), "{said}");
    crate::support::write_noise(&d.folder.join("IMG_0001.CR3"), 300 << 10, 1);
    // The snapshot's metadata goes into the catalog in the home; the file's data stays where
    // it is, to be sent from there.
    let summary = d.backup();
    assert_eq!((summary["files"].clone(), summary["new_data_blobs"].clone()), (1.into(), 0.into()));
    let report: Value = serde_json::from_str(&d.ok(&["verify", "--json"])).expect("JSON");
    assert_eq!((report["ok"].clone(), report["files"].clone()), (true.into(), 1.into()));
    let listed = d.ok(&["snapshots"]);
    assert!(listed.contains("shoot"), "{listed}");
}

/// Reads a child's output on a thread, so the test can wait for text with a deadline.
struct Screen {
    text: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Screen {
    fn watch(mut out: impl std::io::Read + Send + 'static) -> Screen {
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("lock").push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Screen { text }
    }

    /// Waits until the screen shows `needle` `count` times; returns the whole screen.
    fn wait_for(&self, needle: &str, count: usize) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let text = self.text.lock().expect("lock").clone();
            if text.matches(needle).count() >= count {
                return text;
            }
            assert!(std::time::Instant::now() < deadline, "never saw {needle:?} on: {text}");
            std::thread::park_timeout(std::time::Duration::from_millis(20));
        }
    }
}

/// The word shown at `position` (1-based) in the printed phrase grid.
fn shown_word(screen: &str, position: usize) -> String {
    let tokens: Vec<&str> = screen.split_whitespace().collect();
    let label = format!("{position}.");
    let at = tokens.iter().position(|t| *t == label).expect("the grid shows every position");
    tokens[at + 1].to_owned()
}

/// The position asked for in the last "Type word N" prompt.
fn asked_position(screen: &str) -> usize {
    let at = screen.rfind("Type word ").expect("a prompt") + "Type word ".len();
    screen[at..].split_whitespace().next().expect("a number").parse().expect("a position")
}

#[test]
fn on_a_terminal_init_asks_for_two_words_back() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let d = Device::bare();
    // `script` gives the command a real terminal.
    let command = format!("{} init --name laptop --site home", crate::support::triad_bin());
    let mut child = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("TRIAD_HOME", &d.home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script runs");
    let screen = Screen::watch(child.stdout.take().expect("stdout"));
    let mut keys = child.stdin.take().expect("stdin");

    let text = screen.wait_for("Type word ", 1);
    let first = asked_position(&text);
    keys.write_all(b"definitely-not-it\n").expect("type");
    let text = screen.wait_for("That is not word", 1);
    assert!(text.contains(&format!("That is not word {first}")), "{text}");
    keys.write_all(format!("{}\n", shown_word(&text, first)).as_bytes()).expect("type");
    let text = screen.wait_for("Type word ", 3);
    let second = asked_position(&text);
    assert_ne!(first, second, "two different words are asked");
    keys.write_all(format!("{}\n", shown_word(&text, second).to_uppercase()).as_bytes())
        .expect("type");
    let text = screen.wait_for("Confirmed.", 1);
    assert!(text.contains("This phrase is shown only now"), "{text}");
    drop(keys);
    assert!(child.wait().expect("exit").success());
    assert!(d.home.join("identity").exists());
}
