//! Audits, both sides. The auditor draws ranges of blobs a peer should hold from the snapshots
//! the peer acknowledged, asks for them, and checks each slice against the blob's address
//! (`triad_core::audit`); a pass proves every copy the peer holds again, a wrong or missing
//! answer from a peer that is connected makes them count for nothing until a push repairs
//! them. A peer that cannot be reached, or says it is busy, is offline, not failed. The
//! audited side answers from its stores; a blob it finds rotten is dropped from the index of
//! the store that holds it, and after answering it re-hashes every blob it holds (a scrub) and
//! drops each rotten one, so that the next push sends them all again. A blob that merely
//! cannot be read now (a disk gone, an I/O error) is answered `None` and dropped nowhere.

use std::collections::HashSet;
use std::sync::Arc;
use triad_core::audit::{self, Range};
use triad_core::snapshot::FileEntry;
use triad_core::{BlobId, DeviceId};
use triad_proto::wire::{self, AuditRange, Response};

use triad_store::{Problem, ReadError};

use super::{Shared, SyncFailure, error_chain, lock, now_secs, open_stores, request};
use crate::catalog::Catalog;
use crate::control::answer;

/// Ranges asked for in one audit.
const RANGES: usize = 64;
/// File versions sampled per audit, one chunk of each (and their metadata).
const FILES_SAMPLED: usize = 64;

/// Whether a problem means the bytes on disk are bad or gone (and not that they could not be
/// read just now: an unplugged disk, too many open files). A pack file that is missing while
/// the store's own directory is there was deleted; with the directory gone, the disk is.
fn rotten(problem: &Problem, store: &triad_store::Store) -> bool {
    match problem {
        Problem::Mismatch | Problem::Short | Problem::Header | Problem::Length => true,
        Problem::PackMissing => store.path().join("packs").is_dir(),
        _ => false,
    }
}

/// The audited side: a slice for each range, `None` for a blob that is not here or cannot be
/// read. A blob found rotten is dropped from the index of the store that holds it, so that the
/// next push sends it again; returns whether any was, so that the caller scrubs the rest.
pub(super) fn answer(work: &open_stores::Work, ranges: &[AuditRange]) -> (Response, bool) {
    let mut rotten_here: Vec<(usize, BlobId)> = Vec::new();
    let slices = {
        let Some(stores) = open_stores::read_within(work, std::time::Duration::from_secs(10))
        else {
            return (super::refuse(wire::Refusal::Busy, super::BUSY), false);
        };
        ranges
            .iter()
            .map(|r| {
                let range =
                    Range { blob: r.blob, start: r.start, len: r.len.min(audit::SLICE_LEN) };
                let mut found = None;
                for (i, store) in stores.iter().enumerate() {
                    match store.get(r.blob) {
                        Ok(blob) => {
                            found = Some(audit::slice(blob.as_bytes(), range));
                            break;
                        }
                        Err(ReadError::Corrupt { problem, .. }) if rotten(&problem, store) => {
                            tracing::warn!(blob = %r.blob, store = %store.path().display(),
                                %problem, "a blob is damaged here");
                            rotten_here.push((i, r.blob));
                        }
                        Err(_) => {}
                    }
                }
                found
            })
            .collect()
    };
    let found = !rotten_here.is_empty();
    drop_rotten(work, &rotten_here);
    (Response::Audit { slices }, found)
}

/// Drops rotten blobs from the index of the store that holds each (a tombstone, and listed as
/// forgotten: the next push, or the next backup of a file that uses one, puts them again).
fn drop_rotten(work: &open_stores::Work, rotten: &[(usize, BlobId)]) {
    if rotten.is_empty() {
        return;
    }
    let mut stores = open_stores::write(work);
    for (i, store) in stores.iter_mut().enumerate() {
        let ids: Vec<BlobId> =
            rotten.iter().filter(|(at, _)| *at == i).map(|(_, id)| *id).collect();
        if ids.is_empty() {
            continue;
        }
        if let Err(e) = store.forget_damaged(&ids) {
            tracing::warn!(store = %store.path().display(), error = %e,
                "cannot drop damaged blobs; they will not be repaired in place");
        }
    }
    tracing::warn!(
        blobs = rotten.len(),
        "damaged blobs dropped from the index, to be pushed again"
    );
}

/// Where one blob rotted, others may have: re-hashes every blob of every store (a scrub) and
/// drops each rotten one, so that the repair that follows sends back all of them. Runs after
/// the audit was answered.
pub(super) async fn scrub_and_drop(shared: Arc<Shared>) {
    scrub_and_drop_now(&shared).await;
    shared.scrubbing.store(false, std::sync::atomic::Ordering::SeqCst);
}

async fn scrub_and_drop_now(shared: &Shared) {
    let Ok(work) = shared.stores.work().await else { return };
    tokio::task::block_in_place(|| {
        let mut rotten_blobs = Vec::new();
        let count = open_stores::read(&work).len();
        for i in 0..count {
            let Some(scrubbed) = open_stores::scrub(&work, i) else { continue };
            let stores = open_stores::read(&work);
            let store = &stores[i];
            match scrubbed {
                Ok(report) => rotten_blobs.extend(
                    report
                        .damaged
                        .iter()
                        .filter(|d| rotten(&d.problem, store))
                        .filter_map(|d| Some((i, d.blob?))),
                ),
                Err(e) => {
                    tracing::warn!(store = %store.path().display(), error = %e, "cannot scrub")
                }
            }
        }
        drop_rotten(&work, &rotten_blobs);
    });
}

/// How an audit went.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Every range proven, and a file read back whole.
    Passed {
        /// Ranges proven.
        ranges: usize,
        /// The file read back from the device (a test restore), its size.
        restored: Option<(String, u64)>,
    },
    /// A wrong or missing answer: the copies are bad.
    Failed {
        /// Why.
        reason: String,
    },
    /// The peer could not be reached: offline, not failed.
    Unreachable,
    /// Nothing to ask: the peer holds no acknowledged copy.
    Nothing,
}

impl Outcome {
    pub(super) fn to_answer(&self) -> answer::AuditOutcome {
        match self {
            Outcome::Passed { ranges, restored } => answer::AuditOutcome::Passed {
                ranges: *ranges as u64,
                restored: restored
                    .as_ref()
                    .map(|(path, bytes)| answer::Restored { path: path.clone(), bytes: *bytes }),
            },
            Outcome::Failed { reason } => answer::AuditOutcome::Failed { reason: reason.clone() },
            Outcome::Unreachable => answer::AuditOutcome::Unreachable,
            Outcome::Nothing => answer::AuditOutcome::Nothing,
        }
    }
}

/// Blobs `device` acknowledged, sampled: for some file versions of each acknowledged snapshot,
/// the file entry and one chunk, and the snapshot itself.
async fn sample(shared: &Shared, device: DeviceId, seed: [u8; 32]) -> Result<Vec<BlobId>, String> {
    let ledger = lock(&shared.ledger).clone();
    let settings = lock(&shared.settings).clone();
    let snapshots: Vec<(BlobId, Vec<BlobId>)> = settings
        .folders
        .iter()
        .filter_map(|f| ledger.get(device, f.id).map(|(_, a)| (a.snapshot, a.lacking.clone())))
        .collect();
    if snapshots.is_empty() {
        return Ok(Vec::new());
    }
    let keys = shared.home.keys().map_err(|e| e.to_string())?;
    let work = shared.stores.work().await?;
    tokio::task::block_in_place(|| {
        let stores = open_stores::read(&work);
        let catalog = Catalog::new(keys, &stores);
        let mut out = Vec::new();
        for (snapshot, lacking) in snapshots {
            out.push(snapshot);
            let entries =
                crate::status::versions(&catalog, snapshot).map_err(|e| error_chain(&e))?;
            // Not the versions it was never sent.
            let mut entries: Vec<BlobId> =
                entries.into_iter().filter(|e| !lacking.contains(e)).collect();
            entries.sort_unstable();
            // The sample is drawn with the audit's seed: the peer cannot know it in advance.
            let picks: HashSet<BlobId> = audit::challenge(seed, &entries, FILES_SAMPLED)
                .into_iter()
                .map(|r| r.blob)
                .collect();
            for entry in picks {
                out.push(entry);
                let file: FileEntry = catalog.load(entry).map_err(|e| error_chain(&e))?;
                let pick = (seed[0] as usize + out.len()) % file.chunks.len().max(1);
                if let Some(chunk) = file.chunks.get(pick) {
                    out.push(chunk.blob);
                }
            }
        }
        Ok(out)
    })
}

/// Audits `device` now and writes the outcome into the ledger.
pub(super) async fn audit(shared: &Shared, device: DeviceId) -> Outcome {
    let mut seed = [0u8; 32];
    if getrandom::fill(&mut seed).is_err() {
        return Outcome::Failed { reason: "no randomness for the challenge".into() };
    }
    let blobs = match sample(shared, device, seed).await {
        Ok(blobs) if blobs.is_empty() => return Outcome::Nothing,
        Ok(blobs) => blobs,
        Err(reason) => {
            tracing::warn!(%reason, "cannot draw an audit");
            return Outcome::Nothing;
        }
    };
    let ranges = audit::challenge(seed, &blobs, RANGES);
    let ask: Vec<AuditRange> =
        ranges.iter().map(|r| AuditRange { blob: r.blob, start: r.start, len: r.len }).collect();
    let peer = triad_net::peer_id(device);
    let outcome = match request(shared, peer, &wire::Request::Audit { ranges: ask }).await {
        Ok(Response::Audit { slices }) if slices.len() == ranges.len() => {
            let wrong = ranges
                .iter()
                .zip(&slices)
                .filter(|(r, s)| !s.as_ref().is_some_and(|s| audit::check(**r, s)))
                .count();
            if wrong == 0 {
                match test_restore(shared, device, seed).await {
                    Ok(restored) => Outcome::Passed { ranges: ranges.len(), restored },
                    Err(reason) => Outcome::Failed { reason: format!("test restore: {reason}") },
                }
            } else {
                Outcome::Failed { reason: format!("{wrong} of {} ranges not proven", ranges.len()) }
            }
        }
        Ok(_) => Outcome::Failed { reason: "an answer that is no audit".into() },
        Err(SyncFailure::Refused(wire::Refusal::Busy, _)) => Outcome::Unreachable,
        Err(SyncFailure::Refused(_, reason)) => {
            Outcome::Failed { reason: format!("denied: {reason}") }
        }
        Err(SyncFailure::Unreachable(reason)) => {
            // Connected but silent is a failure; not reachable at all is offline.
            if shared.node.connected(&peer).is_some() && reason.contains("did not answer") {
                Outcome::Failed { reason: "connected but did not answer in time".into() }
            } else {
                Outcome::Unreachable
            }
        }
    };
    let now = now_secs() as i64;
    let mut ledger = lock(&shared.ledger);
    match &outcome {
        Outcome::Passed { .. } => ledger.audited(device, true, now),
        Outcome::Failed { reason } => {
            tracing::warn!(device = %device.short(), %reason, "audit failed: its copies no longer count");
            ledger.audited(device, false, now);
        }
        Outcome::Unreachable | Outcome::Nothing => {}
    }
    if let Err(e) = ledger.save(&shared.home_path) {
        tracing::warn!(error = %e, "cannot save the replica ledger");
    }
    outcome
}

/// The largest file read back whole in one audit.
const TEST_RESTORE_MAX: u64 = 64 << 20;

/// A test restore: one file version the device holds (drawn with the audit's seed, among those
/// up to 64 MiB), read back from it chunk by chunk, opened, and checked against the BLAKE3 of
/// the whole file recorded at ingest. Storage-only devices cannot read, but this device can.
async fn test_restore(
    shared: &Shared,
    device: DeviceId,
    seed: [u8; 32],
) -> Result<Option<(String, u64)>, String> {
    let Ok(keys) = shared.home.keys() else { return Ok(None) };
    let (snapshots, lacking): (Vec<BlobId>, HashSet<BlobId>) = {
        let ledger = lock(&shared.ledger);
        let settings = lock(&shared.settings);
        let acked: Vec<_> =
            settings.folders.iter().filter_map(|f| ledger.get(device, f.id)).collect();
        (
            acked.iter().map(|(_, a)| a.snapshot).collect(),
            acked.iter().flat_map(|(_, a)| a.lacking.iter().copied()).collect(),
        )
    };
    // Pick the file under the stores' lock; read it back without it.
    let picked = {
        let work = shared.stores.work().await?;
        tokio::task::block_in_place(|| -> Result<Option<(String, FileEntry)>, String> {
            let stores = open_stores::read(&work);
            let catalog = Catalog::new(keys, &stores);
            let mut files = Vec::new();
            for snapshot in snapshots {
                let list =
                    crate::status::files_of(&catalog, snapshot).map_err(|e| error_chain(&e))?;
                files.extend(list.into_iter().map(|(path, entry, _)| (path, entry)));
            }
            files.retain(|f| !lacking.contains(&f.1));
            files.sort_unstable();
            files.dedup_by_key(|f| f.1);
            let ids: Vec<BlobId> = files.iter().map(|f| f.1).collect();
            for range in audit::challenge(seed, &ids, ids.len().min(16)) {
                let entry: FileEntry = catalog.load(range.blob).map_err(|e| error_chain(&e))?;
                if entry.size <= TEST_RESTORE_MAX {
                    let path = files
                        .iter()
                        .find(|f| f.1 == range.blob)
                        .map(|f| f.0.clone())
                        .unwrap_or_default();
                    return Ok(Some((String::from_utf8_lossy(&path).into_owned(), entry)));
                }
            }
            Ok(None)
        })?
    };
    let Some((path, entry)) = picked else { return Ok(None) };
    let ids: Vec<BlobId> = entry.chunks.iter().map(|c| c.blob).collect();
    let blobs = crate::fetch::fetch_blobs(&shared.node, triad_net::peer_id(device), &ids).await?;
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    for (blob, chunk) in blobs.into_iter().zip(&entry.chunks) {
        let opened = triad_core::seal::open_owned(keys, blob, triad_core::seal::ObjectKind::Chunk)
            .map_err(|e| format!("a chunk of {path} does not open: {e}"))?;
        let opened = opened.as_bytes();
        if opened.len() != chunk.len as usize {
            return Err(format!("a chunk of {path} has the wrong length"));
        }
        hasher.update(opened);
        size += opened.len() as u64;
    }
    if *hasher.finalize().as_bytes() != entry.hash || size != entry.size {
        return Err(format!("{path} read back does not match what was backed up"));
    }
    Ok(Some((path, size)))
}
