//! What the benches share: generated data, running `triad` for a home, agents as processes,
//! and pairing one home into another's vault.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// The number in the environment variable `name` (a bench's size), or `default`.
pub(crate) fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `len` incompressible, deterministic bytes.
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let key = blake3::hash(&seed.to_le_bytes());
    blake3::Hasher::new_keyed(key.as_bytes()).finalize_xof().fill(&mut out);
    out
}

/// Runs `triad ARGS` for `home`.
pub(crate) fn triad(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_triad"))
        .args(args)
        .env("TRIAD_HOME", home)
        .env_remove("TRIAD_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("triad runs")
}

/// Runs `triad ARGS` for `home`, insisting on success; returns its standard output.
pub(crate) fn ok(home: &Path, args: &[&str]) -> String {
    let out = triad(home, args);
    assert!(out.status.success(), "triad {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A running agent, killed when dropped.
pub(crate) struct Agent {
    pub(crate) child: Child,
    /// Its first address, without `/p2p/…` (for `devices addr`).
    pub(crate) addr: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the agent of `home` on loopback.
pub(crate) fn agent(home: &Path) -> Agent {
    let mut child = Command::new(env!("CARGO_BIN_EXE_triad"))
        .args(["agent", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--no-mdns", "--json"])
        .env("TRIAD_HOME", home)
        .env_remove("TRIAD_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("line");
    let ready: serde_json::Value = serde_json::from_str(&line).expect("json");
    let addr = ready["addrs"][0].as_str().expect("addr").split("/p2p/").next().expect("addr");
    Agent { child, addr: addr.to_owned() }
}

/// Turns the agent's own backups and pushes off: the bench says what moves.
pub(crate) fn manual(home: &Path) {
    let path = home.join("config.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    let text = text.replace("[protect]\nauto = true", "[protect]\nauto = false");
    assert!(text.contains("auto = false"), "the config has a [protect] section");
    std::fs::write(&path, text).expect("config");
}

/// Pairs `joiner` (no vault yet) into the vault of `inviter`, whose agent runs, by the link.
pub(crate) fn pair(inviter: &Path, joiner: &Path, name: &str, site: &str) {
    pair_with(inviter, joiner, name, site, &[]);
}

/// [`pair`], with `extra` arguments to `triad pair` (`--storage-only`).
pub(crate) fn pair_with(inviter: &Path, joiner: &Path, name: &str, site: &str, extra: &[&str]) {
    let mut pairing = Command::new(env!("CARGO_BIN_EXE_triad"))
        .args(["pair", "--json", "--yes"])
        .args(extra)
        .env("TRIAD_HOME", inviter)
        .stdout(Stdio::piped())
        .spawn()
        .expect("pair");
    let mut line = String::new();
    BufReader::new(pairing.stdout.take().expect("stdout")).read_line(&mut line).expect("line");
    let first: serde_json::Value = serde_json::from_str(&line).expect("json");
    let link = first["link"].as_str().expect("link");
    ok(joiner, &["join", link, "--name", name, "--site", site, "--yes"]);
    assert!(pairing.wait().expect("pair").success());
}

/// A `/proc/PID/status` figure in KiB (`VmRSS:`, `VmHWM:`); 0 once the process is gone.
pub(crate) fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
