//! How a sled index holds up at scale: fills a `SledIndex` through the `Index` trait with
//! `TRIAD_BENCH_INDEX_ENTRIES` blob entries (default 10 000 000) in batches of 10 000, then
//! does 1 000 000 random lookups, and prints one line per figure.
//!
//! `cargo bench -p triad-store --bench index` (set `TRIAD_BENCH_DIR` to choose the disk).

use std::path::Path;
use std::time::Instant;

use triad_core::{BlobId, StoreId};
use triad_store::index::Batch;
use triad_store::{Index, Location, SledIndex};

const BATCH: u64 = 10_000;
const LOOKUPS: u64 = 1_000_000;

fn id(n: u64) -> BlobId {
    BlobId::of(&n.to_le_bytes())
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

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let entries: u64 = std::env::var("TRIAD_BENCH_INDEX_ENTRIES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(10_000_000);
    let base = std::env::var_os("TRIAD_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let path = dir.path().join("index");
    let cache = 32 * 1024 * 1024;
    let mut index = SledIndex::open(&path, cache, true).expect("open sled");
    index.init(StoreId::from_bytes([1; 16])).expect("init");

    let started = Instant::now();
    let mut n = 0u64;
    while n < entries {
        let end = (n + BATCH).min(entries);
        let mut batch = Batch::default();
        for i in n..end {
            let location =
                Location { pack: (i / 64) as u32, offset: (i % 64) * 1_048_624 + 80, len: 1 << 20 };
            batch.puts.push((id(i), location));
        }
        batch.pack_lengths.push(((end / 64) as u32, (end % 64) * 1_048_624 + 32));
        index.commit(&batch).expect("commit");
        n = end;
    }
    let insert_secs = started.elapsed().as_secs_f64();

    // Random lookups of present ids (an xorshift over the entry numbers).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let ids: Vec<BlobId> = (0..LOOKUPS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            id(x % entries)
        })
        .collect();
    let started = Instant::now();
    let mut found = 0u64;
    for blob in &ids {
        found += u64::from(index.get(blob).expect("get").is_some());
    }
    let lookup_secs = started.elapsed().as_secs_f64();
    assert_eq!(found, LOOKUPS, "every looked-up id is present");
    drop(index);

    let on_disk = du(&path);
    let logical = entries * (32 + 16);
    println!("entries: {entries} (batches of {BATCH}, cache {} MiB)", cache >> 20);
    println!("insert: {:.0} entries/s ({insert_secs:.1} s)", entries as f64 / insert_secs);
    println!(
        "lookup: {:.0} lookups/s ({LOOKUPS} random, {lookup_secs:.1} s)",
        LOOKUPS as f64 / lookup_secs
    );
    println!("size on disk: {} MiB (du of the index dir)", on_disk >> 20);
    println!("logical size: {} MiB (entries x 48 bytes)", logical >> 20);
    println!("space amplification: {:.1}x", on_disk as f64 / logical as f64);
    println!("peak RSS: {} MiB (VmHWM)", peak_rss_kib() >> 10);
}
