//! How an index engine holds up at scale: fills an index through the `Index` trait with blob
//! entries in batches of 10 000 (one durable commit each), reopens it, does 1 000 000 random
//! lookups of present ids, then lets a child process commit once and die with the index open and
//! times the open that recovers from it. Prints one line per figure.
//!
//! ```text
//! cargo bench -p triad-store --bench index            # redb (the store's engine)
//! cargo bench -p triad-store --bench index -- sled    # sled (earlier builds' engine)
//! cargo bench -p triad-store --bench index -- both    # each in a process of its own
//! ```
//!
//! The engine can also be chosen with `TRIAD_BENCH_INDEX_ENGINE` (`redb`, `sled` or `both`).
//! `TRIAD_BENCH_INDEX_ENTRIES` sets the entry count for every engine; without it redb gets
//! 10 000 000 and sled 1 000 000 (sled's memory grows with its size: ~3.8 GB at 1 000 000).
//! Filling stops at `TRIAD_BENCH_INDEX_SECS` seconds (default 300) and the figures are then for
//! the entries written so far. `TRIAD_BENCH_DIR` chooses the disk. Each engine runs in a process
//! of its own, so that its peak RSS is its own.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use triad_core::{BlobId, StoreId};
use triad_store::index::Batch;
use triad_store::{Index, Location, RedbIndex, SledIndex};

const BATCH: u64 = 10_000;
const LOOKUPS: u64 = 1_000_000;
const CACHE_BYTES: u64 = 32 * 1024 * 1024;
const ENGINE_ENV: &str = "TRIAD_BENCH_INDEX_ENGINE";
/// Set in a child process that commits one batch to the index at this path and then aborts.
const CRASH_ENV: &str = "TRIAD_BENCH_INDEX_CRASH";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Redb,
    Sled,
}

impl Engine {
    fn parse(text: &str) -> Option<Vec<Engine>> {
        match text {
            "redb" => Some(vec![Engine::Redb]),
            "sled" => Some(vec![Engine::Sled]),
            "both" => Some(vec![Engine::Redb, Engine::Sled]),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Engine::Redb => "redb",
            Engine::Sled => "sled",
        }
    }

    fn default_entries(self) -> u64 {
        match self {
            Engine::Redb => 10_000_000,
            Engine::Sled => 1_000_000,
        }
    }

    fn open(self, path: &Path, create: bool) -> Box<dyn Index> {
        match self {
            Engine::Redb => {
                Box::new(RedbIndex::open(path, CACHE_BYTES, create).expect("open redb"))
            }
            Engine::Sled => {
                Box::new(SledIndex::open(path, CACHE_BYTES, create).expect("open sled"))
            }
        }
    }
}

fn id(n: u64) -> BlobId {
    BlobId::of(&n.to_le_bytes())
}

fn location(n: u64) -> Location {
    Location { pack: (n / 64) as u32, offset: (n % 64) * 1_048_624 + 80, len: 1 << 20 }
}

fn du(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read index dir") {
            let entry = entry.expect("dir entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                dirs.push(entry.path());
            }
            total += meta.blocks() * 512;
        }
    }
    total
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok())
}

fn main() {
    let arg = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let choice = arg.or_else(|| std::env::var(ENGINE_ENV).ok()).unwrap_or_else(|| "redb".into());
    let Some(engines) = Engine::parse(&choice) else {
        eprintln!("unknown engine {choice:?}: say redb, sled or both");
        std::process::exit(2);
    };
    if let [engine] = engines[..] {
        match std::env::var_os(CRASH_ENV) {
            Some(path) => commit_and_abort(engine, Path::new(&path)),
            None => run(engine),
        }
        return;
    }
    let exe = std::env::current_exe().expect("bench binary path");
    for engine in engines {
        let status = Command::new(&exe)
            .arg(engine.name())
            .env(ENGINE_ENV, engine.name())
            .status()
            .expect("run the bench for one engine");
        assert!(status.success(), "the {} bench failed", engine.name());
        println!();
    }
}

fn run(engine: Engine) {
    let entries = env_u64("TRIAD_BENCH_INDEX_ENTRIES").unwrap_or(engine.default_entries());
    let limit = Duration::from_secs(env_u64("TRIAD_BENCH_INDEX_SECS").unwrap_or(300));
    let base = std::env::var_os("TRIAD_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let path = dir.path().join("index");
    let mut index = engine.open(&path, true);
    index.init(StoreId::from_bytes([1; 16])).expect("init");

    let started = Instant::now();
    let mut n = 0u64;
    while n < entries && started.elapsed() < limit {
        let end = (n + BATCH).min(entries);
        let mut batch = Batch::default();
        batch.puts.extend((n..end).map(|i| (id(i), location(i))));
        batch.pack_lengths.push(((end / 64) as u32, (end % 64) * 1_048_624 + 32));
        index.commit(&batch).expect("commit");
        n = end;
    }
    let insert_secs = started.elapsed().as_secs_f64();
    let written = n;
    drop(index);
    if written == 0 {
        println!("{}: no batch was written within {} s", engine.name(), limit.as_secs());
        return;
    }

    let started = Instant::now();
    let index = engine.open(&path, false);
    let reopen_secs = started.elapsed().as_secs_f64();
    assert_eq!(index.len().expect("len"), written);

    // Random lookups of present ids (an xorshift over the entry numbers), made in small chunks
    // outside the timed part, so that no list of a million ids adds to the peak RSS.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut chunk = Vec::with_capacity(BATCH as usize);
    let mut lookup = Duration::ZERO;
    let mut found = 0u64;
    for _ in 0..LOOKUPS / BATCH {
        chunk.clear();
        chunk.extend((0..BATCH).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            id(x % written)
        }));
        let started = Instant::now();
        for blob in &chunk {
            found += u64::from(index.get(blob).expect("get").is_some());
        }
        lookup += started.elapsed();
    }
    let lookup_secs = lookup.as_secs_f64();
    assert_eq!(found, LOOKUPS / BATCH * BATCH, "every looked-up id is present");
    let rss_kib = status_kib("VmRSS:");
    drop(index);

    // A process that is killed with the index open: the next open recovers.
    let status = Command::new(std::env::current_exe().expect("bench binary path"))
        .arg(engine.name())
        .env(CRASH_ENV, &path)
        .env("TRIAD_BENCH_INDEX_ENTRIES", written.to_string())
        .status()
        .expect("run the crashing child");
    assert!(!status.success(), "the child aborts");
    let started = Instant::now();
    let index = engine.open(&path, false);
    let recover_secs = started.elapsed().as_secs_f64();
    assert_eq!(index.len().expect("len"), written + 1, "the child's commit survived");
    drop(index);

    let on_disk = du(&path);
    let logical = written * (32 + 16);
    let name = engine.name();
    if written < entries {
        println!(
            "{name}: stopped after {:.0} s at {written} of {entries} entries",
            limit.as_secs()
        );
    }
    println!("{name}: entries: {written} (batches of {BATCH}, cache {} MiB)", CACHE_BYTES >> 20);
    println!("{name}: insert: {:.0} entries/s ({insert_secs:.1} s)", written as f64 / insert_secs);
    println!("{name}: reopen: {reopen_secs:.2} s (after a clean close)");
    println!("{name}: recover: {recover_secs:.2} s (open after a process died with it open)");
    println!(
        "{name}: lookup: {:.0} lookups/s ({LOOKUPS} random, {lookup_secs:.1} s)",
        LOOKUPS as f64 / lookup_secs
    );
    println!("{name}: size on disk: {} MiB (du of the index dir)", on_disk >> 20);
    println!("{name}: logical size: {} MiB (entries x 48 bytes)", logical >> 20);
    println!("{name}: space amplification: {:.1}x", on_disk as f64 / logical as f64);
    println!("{name}: RSS after lookups: {} MiB (VmRSS)", rss_kib >> 10);
    println!("{name}: peak RSS: {} MiB (VmHWM)", status_kib("VmHWM:") >> 10);
}

/// Opens the index at `path`, commits one more entry (durable on return), and aborts with the
/// index open, as a killed agent would.
fn commit_and_abort(engine: Engine, path: &Path) {
    let mut index = engine.open(path, false);
    let next = env_u64("TRIAD_BENCH_INDEX_ENTRIES").expect("entry count from the parent");
    let batch = Batch { puts: vec![(id(next), location(next))], ..Batch::default() };
    index.commit(&batch).expect("commit");
    std::process::abort();
}
