//! Put and commit throughput: streams `TRIAD_BENCH_PUT_MIB` MiB (default 1024) of 1 MiB blobs
//! into a store on real disk, committing every 64 MiB as the backup does, and prints MB/s.
//!
//! `cargo bench -p triad-store --bench put` (set `TRIAD_BENCH_DIR` to choose the disk).

use std::time::{Duration, Instant};

use triad_core::seal::SealedBlob;
use triad_core::{BlobId, Media, StoreId, Timestamp, VaultId};
use triad_store::{Config, Store};

const BLOB_LEN: usize = 1024 * 1024;
const COMMIT_EVERY: u64 = 64 * 1024 * 1024;

fn main() {
    let mib: u64 =
        std::env::var("TRIAD_BENCH_PUT_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let base = std::env::var_os("TRIAD_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let path = dir.path().join("store");
    let config = Config::default();
    let vault = VaultId::from_bytes([1; 32]);
    let mut store = Store::create(
        &path,
        vault,
        Media::Ssd,
        StoreId::from_bytes([2; 16]),
        Timestamp::new(0, 0),
        &config,
    )
    .expect("create");

    let mut bytes = vec![0u8; BLOB_LEN];
    let mut in_store = Duration::ZERO;
    let mut committing = Duration::ZERO;
    let mut total = 0u64;
    let mut commits = 0;
    for n in 0..mib {
        // Distinct blobs without the cost of sealing: only bytes 8..16 vary.
        bytes[8..16].copy_from_slice(&n.to_le_bytes());
        let blob = SealedBlob::verify(BlobId::of(&bytes), bytes.clone()).expect("blob shape");
        let started = Instant::now();
        assert!(store.put(&blob).expect("put"));
        in_store += started.elapsed();
        total += BLOB_LEN as u64;
        if store.pending_bytes() >= COMMIT_EVERY || n + 1 == mib {
            let started = Instant::now();
            store.commit().expect("commit");
            let took = started.elapsed();
            in_store += took;
            committing += took;
            commits += 1;
        }
    }
    let mb = total as f64 / 1e6;
    println!(
        "put+commit: {:.0} MB/s ({mb:.0} MB in {:.2} s of store time, {commits} commits)",
        mb / in_store.as_secs_f64(),
        in_store.as_secs_f64()
    );
    println!(
        "commit (write out + fsync + index): {:.2} s in total, {:.0} ms each",
        committing.as_secs_f64(),
        committing.as_secs_f64() * 1000.0 / f64::from(commits)
    );

    let started = Instant::now();
    let blobs = store.blobs().expect("blobs");
    for info in &blobs {
        store.get(info.id).expect("get");
    }
    println!(
        "get: {:.0} MB/s ({} blobs read back and verified)",
        mb / started.elapsed().as_secs_f64(),
        blobs.len()
    );
}
