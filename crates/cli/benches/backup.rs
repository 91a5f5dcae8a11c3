//! Throughput and memory of the single-device job, measured on this machine.
//!
//! 1. The ceiling: chunk + hash + seal in memory (no I/O), on one core and on every core.
//! 2. `triad backup` of a generated incompressible set (default 2 GiB: RAW-sized files and
//!    one large video), end to end through the real binary: wall time, throughput, and the
//!    process's peak RSS (VmHWM, sampled until it exits).
//! 3. `triad restore` of the same set (its packs, like the sources before, in the page cache).
//! 4. A re-scan of an unchanged tree of 10 000 files.
//!
//! `cargo bench -p triad-cli --bench backup`; `TRIAD_BENCH_GIB=N` changes the set's size.
#![allow(missing_docs)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use triad_core::chunk::Chunker;
use triad_core::keys::{VaultKeys, VaultSecret};
use triad_core::seal::{self, ObjectKind};

use common::noise;

/// What backup does to every byte, without I/O: cut, hash the file, seal each chunk.
fn pipeline(keys: &VaultKeys, data: &[u8]) -> usize {
    let chunker = Chunker::DEFAULT;
    let mut file_hash = blake3::Hasher::new();
    let mut at = 0;
    let mut blobs = 0;
    while let Some(len) = chunker.cut(&data[at..], true) {
        let chunk = &data[at..at + len];
        file_hash.update(chunk);
        let blob = seal::seal(keys, ObjectKind::Chunk, chunk);
        blobs += blob.as_bytes().len();
        at += len;
    }
    std::hint::black_box(file_hash.finalize());
    blobs
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn ceiling() -> f64 {
    let keys = VaultKeys::from_secret(&VaultSecret::from_bytes([7; 32]));
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let part = 256 << 20;
    let parts: Vec<Vec<u8>> = (0..threads).map(|i| noise(part, i as u64)).collect();
    // Warm up, then one core.
    pipeline(&keys, &parts[0][..32 << 20]);
    let t = Instant::now();
    pipeline(&keys, &parts[0]);
    let one = mb_per_s(part as u64, t.elapsed());
    let t = Instant::now();
    std::thread::scope(|s| {
        for p in &parts {
            let keys = &keys;
            s.spawn(move || pipeline(keys, p));
        }
    });
    let all = mb_per_s((part * threads) as u64, t.elapsed());
    println!(
        "ceiling    chunk+hash+seal in memory: {one:.0} MB/s on 1 core, {all:.0} MB/s on {threads} cores"
    );
    all
}

struct Run {
    elapsed: Duration,
    peak_rss_kib: u64,
}

/// Runs the binary, sampling its peak RSS until it exits.
fn run(home: &Path, args: &[&str]) -> Run {
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_triad"))
        .args(args)
        .env("TRIAD_HOME", home)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn triad");
    let status_path = PathBuf::from(format!("/proc/{}/status", child.id()));
    let mut peak = 0;
    loop {
        let hwm = fs::read_to_string(&status_path).ok().and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        });
        peak = peak.max(hwm.unwrap_or(0));
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "triad {args:?} failed");
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Run { elapsed: t.elapsed(), peak_rss_kib: peak }
}

fn setup(root: &Path, folder: &Path) -> PathBuf {
    let home = root.join("home");
    let store = root.join("store");
    let ok = |args: &[&str]| {
        let s = Command::new(env!("CARGO_BIN_EXE_triad"))
            .args(args)
            .env("TRIAD_HOME", &home)
            .stdout(Stdio::null())
            .status()
            .expect("triad");
        assert!(s.success(), "{args:?}");
    };
    ok(&["init", "--name", "bench", "--site", "here", "--json"]);
    ok(&["store", "add", store.to_str().expect("utf-8"), "--media", "ssd"]);
    ok(&["folder", "add", folder.to_str().expect("utf-8")]);
    home
}

fn main() {
    let gib: u64 = common::env_number("TRIAD_BENCH_GIB", 2);
    let ceiling = ceiling();

    let base = std::env::var_os("TRIAD_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let tmp = tempfile::Builder::new().prefix("triad-bench-").tempdir_in(base).expect("tempdir");
    let root = tmp.path();
    let folder = root.join("shoot");
    // One large video (a quarter of the set), the rest RAW-sized files of 24-26 MiB.
    let total = gib << 30;
    let video = total / 4;
    fs::create_dir_all(folder.join("raw")).expect("mkdir");
    let mut written = 0u64;
    let mut block = noise(64 << 20, 1_000_000);
    {
        use std::io::Write;
        let mut f = fs::File::create(folder.join("clip.MOV")).expect("create");
        let mut n = 0u64;
        while n < video {
            block[0] = block[0].wrapping_add(1); // every block differs
            let take = (video - n).min(block.len() as u64) as usize;
            f.write_all(&block[..take]).expect("write");
            n += take as u64;
        }
        written += n;
    }
    let mut i = 0u64;
    while written < total {
        let len = (24 << 20) + (i % 3) * (1 << 20);
        fs::write(folder.join(format!("raw/IMG_{i:05}.CR3")), noise(len as usize, i))
            .expect("write");
        written += len;
        i += 1;
    }
    println!(
        "dataset    {} in {} files ({} MB video + {i} raw files), in the page cache",
        written,
        i + 1,
        video >> 20
    );

    let home = setup(root, &folder);
    let b = run(&home, &["backup"]);
    let backup = mb_per_s(written, b.elapsed);
    println!(
        "backup     {:.1} s, {backup:.0} MB/s = {:.0} % of the {}-core ceiling; peak RSS {} MiB",
        b.elapsed.as_secs_f64(),
        100.0 * backup / ceiling,
        std::thread::available_parallelism().map_or(2, usize::from),
        b.peak_rss_kib / 1024
    );

    // The packs were written past the page cache; read them once so that restore, like backup,
    // starts with its input in the page cache.
    for entry in fs::read_dir(root.join("store/packs")).expect("packs") {
        let path = entry.expect("entry").path();
        std::hint::black_box(fs::read(&path).expect("read pack").len());
    }
    let to = root.join("restored");
    let r = run(&home, &["restore", "latest", "--to", to.to_str().expect("utf-8")]);
    let restore = mb_per_s(written, r.elapsed);
    println!(
        "restore    {:.1} s, {restore:.0} MB/s ({:.2}x backup); peak RSS {} MiB",
        r.elapsed.as_secs_f64(),
        restore / backup,
        r.peak_rss_kib / 1024
    );
    fs::remove_dir_all(&to).expect("rm restored");
    fs::remove_dir_all(&folder).expect("rm set");

    // Re-scan of an unchanged tree of 10 000 small files.
    let small_root = root.join("small");
    fs::create_dir_all(&small_root).expect("mkdir");
    let small = small_root.join("catalog");
    for d in 0..100 {
        let dir = small.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..100 {
            fs::write(dir.join(format!("f{f:03}.xmp")), format!("<xmp n={d}-{f}/>"))
                .expect("write");
        }
    }
    let home = setup(&small_root, &small);
    let first = run(&home, &["backup"]);
    let again = run(&home, &["backup"]);
    println!(
        "rescan     10 000 files: first backup {:.2} s, unchanged re-scan {:.3} s (whole command)",
        first.elapsed.as_secs_f64(),
        again.elapsed.as_secs_f64()
    );
}
