//! How fast `triad status` answers for a vault of many files, through the real binary and a
//! running agent: a folder of 100 000 small files (in 1 000 directories) is backed up into one
//! store, the agent is started, and `triad status --json` is timed, whole command, several
//! times.
//!
//! `cargo bench -p triad-cli --bench status`; `TRIAD_BENCH_FILES=N` changes the count.
#![allow(missing_docs)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

fn triad(home: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_triad"))
        .args(args)
        .env("TRIAD_HOME", home)
        .env_remove("TRIAD_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("triad runs");
    assert!(
        out.status.code().is_some_and(|c| c <= 2),
        "triad {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let files: usize =
        std::env::var("TRIAD_BENCH_FILES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let (home, folder, store) =
        (dir.path().join("home"), dir.path().join("shoot"), dir.path().join("store"));
    for i in 0..files {
        let sub = folder.join(format!("day{:04}", i / 100));
        if i % 100 == 0 {
            fs::create_dir_all(&sub).expect("mkdir");
        }
        fs::write(sub.join(format!("IMG_{i:06}.xmp")), format!("<x:xmpmeta rating=\"{i}\"/>"))
            .expect("write");
    }
    triad(&home, &["init", "--name", "laptop", "--site", "home", "--json"]);
    triad(&home, &["store", "add", store.to_str().expect("utf-8"), "--media", "usb-ssd"]);
    triad(&home, &["folder", "add", folder.to_str().expect("utf-8"), "--media", "ssd"]);
    let t = Instant::now();
    triad(&home, &["backup", "--json"]);
    println!("backup of {files} files: {:.1} s", t.elapsed().as_secs_f64());

    manual(&home);
    let mut child = Command::new(env!("CARGO_BIN_EXE_triad"))
        .args(["agent", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--no-mdns", "--json"])
        .env("TRIAD_HOME", &home)
        .env_remove("TRIAD_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).expect("ready");
    let _agent = Agent(child);

    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let out = triad(&home, &["status", "--json"]);
        times.push(t.elapsed().as_secs_f64());
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let counted: u64 = answer["folders"][0]["counts"]
            .as_object()
            .expect("counts")
            .values()
            .filter_map(serde_json::Value::as_u64)
            .sum();
        assert_eq!(counted, files as u64, "every file evaluated");
    }
    times.sort_by(f64::total_cmp);
    println!(
        "status of {files} files (whole command, agent running): best {:.3} s, median {:.3} s, worst {:.3} s",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

/// Turns the agent's own backups and pushes off: the bench says what moves.
fn manual(home: &Path) {
    let path = home.join("config.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    let text = text.replace("[protect]\nauto = true", "[protect]\nauto = false");
    assert!(text.contains("auto = false"), "the config has a [protect] section");
    std::fs::write(&path, text).expect("config");
}
