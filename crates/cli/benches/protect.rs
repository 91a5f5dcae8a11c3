//! From written to PROTECTED: two agents on loopback (a laptop with a store at home, a NAS at
//! the studio), default settings, nobody typing a command. 100 MiB of new files are written
//! into the laptop's folder and `triad status --json` is asked until every file is PROTECTED;
//! the time from the first byte written to that answer is reported, for three rounds.
//!
//! `cargo bench -p triad-cli --bench protect`; `TRIAD_BENCH_MIB=N` changes the size.
//! `TRIAD_BENCH_STORELESS=1`: the laptop has no store (it re-seals from its files when it
//! pushes), and the policy asks for two copies (the file and the NAS).
#![allow(missing_docs)]

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{agent, noise, ok, pair, triad};

fn protected(home: &Path) -> Option<u64> {
    let out = triad(home, &["status", "--json"]);
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    (answer["worst"] == "PROTECTED")
        .then(|| answer["folders"][0]["counts"]["PROTECTED"].as_u64())?
}

fn main() {
    let mib: usize = common::env_number("TRIAD_BENCH_MIB", 100);
    let dir = tempfile::tempdir().expect("tempdir");
    let (laptop, nas, folder) =
        (dir.path().join("a"), dir.path().join("b"), dir.path().join("shoot"));
    fs::create_dir_all(&folder).expect("mkdir");
    let storeless = std::env::var("TRIAD_BENCH_STORELESS").is_ok_and(|v| v == "1");
    ok(&laptop, &["init", "--name", "laptop", "--site", "home", "--json"]);
    if storeless {
        ok(&laptop, &["policy", "set", "copies=2"]);
    } else {
        let store = dir.path().join("store-a");
        ok(&laptop, &["store", "add", store.to_str().expect("utf-8"), "--media", "usb-ssd"]);
    }
    ok(&laptop, &["folder", "add", folder.to_str().expect("utf-8"), "--media", "ssd"]);
    let _laptop_agent = agent(&laptop);

    pair(&laptop, &nas, "nas", "studio");
    ok(
        &nas,
        &["store", "add", dir.path().join("store-b").to_str().expect("utf-8"), "--media", "raid"],
    );
    let nas_agent = agent(&nas);
    ok(&laptop, &["devices", "addr", "nas", &nas_agent.addr]);

    let files_per_round = 4;
    let mut total = 0u64;
    for round in 0..3u64 {
        let data: Vec<Vec<u8>> = (0..files_per_round)
            .map(|i| noise((mib << 20) / files_per_round, round * 100 + i as u64))
            .collect();
        let start = Instant::now();
        for (i, bytes) in data.iter().enumerate() {
            fs::write(folder.join(format!("R{round}_IMG_{i:04}.CR3")), bytes).expect("write");
        }
        total += files_per_round as u64;
        let deadline = start + Duration::from_secs(120);
        while protected(&laptop) != Some(total) {
            assert!(Instant::now() < deadline, "not protected within two minutes");
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "round {round}: {mib} MiB written -> PROTECTED in {:.2} s{} (default settings: 2 s settle after the last change)",
            start.elapsed().as_secs_f64(),
            if storeless { " by a laptop without a store" } else { "" }
        );
    }
}
