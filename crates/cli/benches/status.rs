//! How fast `triad status` answers for a vault of many files, through the real binary and a
//! running agent: a folder of 100 000 small files (in 1 000 directories) is backed up into one
//! store, the agent is started, and `triad status --json` is timed, whole command, several
//! times.
//!
//! `cargo bench -p triad-cli --bench status`; `TRIAD_BENCH_FILES=N` changes the count.
#![allow(missing_docs)]

mod common;

use std::fs;
use std::time::Instant;

use common::{agent, manual, ok, triad};

fn main() {
    let files: usize = common::env_number("TRIAD_BENCH_FILES", 100_000);
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
    ok(&home, &["init", "--name", "laptop", "--site", "home", "--json"]);
    ok(&home, &["store", "add", store.to_str().expect("utf-8"), "--media", "usb-ssd"]);
    ok(&home, &["folder", "add", folder.to_str().expect("utf-8"), "--media", "ssd"]);
    let t = Instant::now();
    ok(&home, &["backup", "--json"]);
    println!("backup of {files} files: {:.1} s", t.elapsed().as_secs_f64());

    manual(&home);
    let _agent = agent(&home);

    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        // Exit 0 to 2 is a state (one store and the source: DEGRADED); 3 would be an error.
        let out = triad(&home, &["status", "--json"]);
        assert!(out.status.code().is_some_and(|c| c <= 2), "status failed");
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
