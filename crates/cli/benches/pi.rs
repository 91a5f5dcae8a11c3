//! A Raspberry Pi's budget, measured on this machine under Pi-like limits: the storage-only
//! device's agent runs in a control group with one CPU's worth of quota and a memory limit
//! (256 MiB; no swap), which the bench makes where the machine lets it (cgroup v2 or v1, as
//! root). Where it cannot, it says so and measures without the limits.
//!
//! 1. Idle: the Pi's store holds a million blobs (written straight into the store before its
//!    agent starts); the agent's resident memory once started, the highest seen over 10 s.
//! 2. Receiving: the laptop pushes N GiB (default 10) to the Pi; the Pi agent's peak resident
//!    memory (VmHWM) and whether the kernel killed it for memory.
//!
//! Targets: idle at most 64 MiB, receiving at most 120 MiB, no kill.
//!
//! `cargo bench -p triad-cli --bench pi`; `TRIAD_BENCH_GIB`, `TRIAD_BENCH_BLOBS` and
//! `TRIAD_BENCH_MEMORY_MIB` change the sizes, `TRIAD_BENCH_DIR` where the data goes (it needs
//! about three times N GiB).
#![allow(missing_docs)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Agent, agent, manual, noise, ok, pair_with, status_kib};
use triad_core::BlobId;
use triad_core::seal::SealedBlob;
use triad_store::{Access, Store};

fn main() {
    let gib: u64 = common::env_number("TRIAD_BENCH_GIB", 10);
    let blobs: u64 = common::env_number("TRIAD_BENCH_BLOBS", 1_000_000);
    let memory_mib: u64 = common::env_number("TRIAD_BENCH_MEMORY_MIB", 256);
    let base = std::env::var_os("TRIAD_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let tmp = tempfile::Builder::new().prefix("triad-pi-bench-").tempdir_in(base).expect("tmp");
    let dir = tmp.path();

    let limits = match Cgroup::make(&format!("triad-pi-bench-{}", std::process::id()), memory_mib) {
        Ok(cgroup) => {
            println!("limits     {memory_mib} MiB of memory, no swap, 1 CPU ({})", cgroup.kind);
            Some(cgroup)
        }
        Err(why) => {
            println!("limits     NONE: {why}; measuring without them");
            None
        }
    };

    // The laptop with N GiB backed up, and the Pi paired as storage-only.
    let laptop = dir.join("laptop");
    let pi = dir.join("pi");
    let folder = dir.join("shoot");
    write_shoot(&folder, gib << 30);
    ok(&laptop, &["init", "--name", "laptop", "--site", "home", "--json"]);
    ok(
        &laptop,
        &["store", "add", dir.join("store-laptop").to_str().expect("utf-8"), "--media", "ssd"],
    );
    ok(&laptop, &["folder", "add", folder.to_str().expect("utf-8")]);
    let started = Instant::now();
    ok(&laptop, &["backup"]);
    println!("backup     {gib} GiB in {:.0} s", started.elapsed().as_secs_f64());
    fs::remove_dir_all(&folder).expect("rm shoot");
    manual(&laptop);
    let laptop_agent = agent(&laptop);
    pair_with(&laptop, &pi, "pi", "parents", &["--storage-only"]);
    let pi_store = dir.join("store-pi");
    ok(&pi, &["store", "add", pi_store.to_str().expect("utf-8"), "--media", "usb-hdd"]);

    // 1. Idle, with a million blobs.
    let started = Instant::now();
    fill(&pi, &pi_store, blobs);
    println!("store      {blobs} blobs written in {:.0} s", started.elapsed().as_secs_f64());
    let pi_agent = start_in(&pi, limits.as_ref());
    let mut idle = 0;
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        idle = idle.max(rss_kib(pi_agent.child.id()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let verdict = |kib: u64, max_mib: u64| if kib <= max_mib * 1024 { "ok" } else { "OVER" };
    println!(
        "idle       agent with {blobs} blobs: {} MiB resident (target 64 MiB: {})",
        idle / 1024,
        verdict(idle, 64)
    );

    // 2. Receiving N GiB.
    ok(&laptop, &["devices", "addr", "pi", &pi_agent.addr]);
    let started = Instant::now();
    let mut sync = Command::new(env!("CARGO_BIN_EXE_triad"))
        .args(["sync", "pi", "--timeout", "3h", "--json"])
        .env("TRIAD_HOME", &laptop)
        .stdout(Stdio::null())
        .spawn()
        .expect("sync");
    let mut peak = 0;
    let status = loop {
        peak = peak.max(hwm_kib(pi_agent.child.id()));
        if let Some(status) = sync.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    peak = peak.max(hwm_kib(pi_agent.child.id()));
    let kills = limits.as_ref().map_or(0, Cgroup::oom_kills);
    println!(
        "receiving  {gib} GiB pushed in {:.0} s ({:.0} MB/s): peak {} MiB resident (target 120 MiB: {}); killed for memory: {}; sync {}",
        took.as_secs_f64(),
        (gib << 30) as f64 / 1e6 / took.as_secs_f64(),
        peak / 1024,
        verdict(peak, 120),
        if kills == 0 { "no".to_owned() } else { format!("YES ({kills} times)") },
        if status.success() { "acknowledged" } else { "FAILED" }
    );
    drop(pi_agent);
    drop(laptop_agent);
}

/// Incompressible photos of 24 to 26 MiB, `total` bytes in all.
fn write_shoot(folder: &Path, total: u64) {
    fs::create_dir_all(folder).expect("mkdir");
    let (mut written, mut i) = (0u64, 0u64);
    while written < total {
        let len = (24 << 20) + (i % 3) * (1 << 20);
        fs::write(folder.join(format!("IMG_{i:05}.CR3")), noise(len as usize, i)).expect("write");
        written += len;
        i += 1;
    }
}

/// Writes `n` small blobs straight into the store at `path` of the home `home`.
fn fill(home: &Path, path: &Path, n: u64) {
    let vault = triad_agent::home::Home::open(home).expect("the Pi's home").vault();
    let config = triad_store::Config::default();
    let mut store = Store::open(path, None, vault, Access::ReadWrite, &config).expect("the store");
    for i in 0..n {
        let bytes = noise(64, i ^ 0x5eed);
        let blob = SealedBlob::verify(BlobId::of(&bytes), bytes).expect("its own address");
        store.put(&blob).expect("put");
        if i % 100_000 == 99_999 {
            store.commit().expect("commit");
        }
    }
    store.commit().expect("commit");
}

/// Starts the agent of `home` and moves it into `cgroup`.
fn start_in(home: &Path, cgroup: Option<&Cgroup>) -> Agent {
    let agent = agent(home);
    if let Some(cgroup) = cgroup {
        cgroup.add(agent.child.id());
    }
    agent
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

fn hwm_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// A control group with a memory limit (no swap) and one CPU's worth of quota, removed when
/// dropped.
struct Cgroup {
    kind: &'static str,
    /// Its directories: one for v2, the memory and cpu hierarchies' for v1.
    dirs: Vec<PathBuf>,
    /// The file that counts its kills for memory, and the key there.
    events: PathBuf,
}

impl Cgroup {
    fn make(name: &str, memory_mib: u64) -> Result<Cgroup, String> {
        let root = Path::new("/sys/fs/cgroup");
        let bytes = (memory_mib << 20).to_string();
        let write = |path: PathBuf, value: &str| {
            fs::write(&path, value).map_err(|e| format!("cannot write {}: {e}", path.display()))
        };
        if root.join("cgroup.controllers").exists() {
            let dir = root.join(name);
            fs::create_dir(&dir).map_err(|e| format!("cannot make a cgroup v2 group: {e}"))?;
            let cgroup = Cgroup {
                kind: "cgroup v2",
                dirs: vec![dir.clone()],
                events: dir.join("memory.events"),
            };
            write(dir.join("memory.max"), &bytes)?;
            let _ = write(dir.join("memory.swap.max"), "0");
            write(dir.join("cpu.max"), "100000 100000")?;
            return Ok(cgroup);
        }
        let memory = root.join("memory").join(name);
        let cpu = root.join("cpu").join(name);
        fs::create_dir(&memory)
            .map_err(|e| format!("cannot make a cgroup v1 memory group: {e}"))?;
        let mut cgroup = Cgroup {
            kind: "cgroup v1",
            dirs: vec![memory.clone()],
            events: memory.join("memory.oom_control"),
        };
        write(memory.join("memory.limit_in_bytes"), &bytes)?;
        let _ = write(memory.join("memory.memsw.limit_in_bytes"), &bytes);
        fs::create_dir(&cpu).map_err(|e| format!("cannot make a cgroup v1 cpu group: {e}"))?;
        cgroup.dirs.push(cpu.clone());
        write(cpu.join("cpu.cfs_period_us"), "100000")?;
        write(cpu.join("cpu.cfs_quota_us"), "100000")?;
        Ok(cgroup)
    }

    fn add(&self, pid: u32) {
        for dir in &self.dirs {
            fs::write(dir.join("cgroup.procs"), pid.to_string()).expect("join the cgroup");
        }
    }

    /// Processes of the group the kernel killed for memory.
    fn oom_kills(&self) -> u64 {
        fs::read_to_string(&self.events)
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = fs::remove_dir(dir);
        }
    }
}
