//! Fetching blobs from the other devices into a new store, for a restore on this device.

use std::path::Path;
use std::time::Duration;

use triad_core::BlobId;
use triad_core::roster::Entry;
use triad_proto::wire::FETCH_PROTOCOL;
use triad_store::{Store, WriteError};

use super::socket::{Failure, Session};
use super::{Shared, error_chain, lock, now_secs};
use crate::control::answer;

/// Blobs asked for at a time while fetching for a restore.
const FETCH_FOR_RESTORE_BATCH: usize = 64;

/// How long a device may stay silent while fetching for a restore before the fetch goes on
/// from the next device that holds copies.
const FETCH_ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// Fetches `blobs` from the other devices (those that acknowledged copies first) into a new
/// store at `into`, for a restore on this device. Verified on arrival, committed after every
/// batch. A device that stops answering, or does not hold a blob, is left for the next one
/// for what is still missing; the command hears how far it is as it goes.
pub(super) async fn fetch_into(
    shared: &Shared,
    blobs: &[String],
    into: &Path,
    s: &mut Session,
) -> Result<answer::Fetched, Failure> {
    let mut remaining: Vec<BlobId> = blobs
        .iter()
        .map(|b| b.parse().map_err(|_| format!("{b:?} is not a blob id")))
        .collect::<Result<_, _>>()?;
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| format!("no randomness for a store id: {e}"))?;
    let now = triad_core::Timestamp::new(now_secs() as i64, 0);
    let mut store = tokio::task::block_in_place(|| {
        Store::create(
            into,
            shared.home.vault(),
            triad_core::Media::Ssd,
            triad_core::StoreId::from_bytes(id),
            now,
            &shared.config().store,
        )
    })
    .map_err(|e| error_chain(&e))?;
    // The devices that acknowledged copies of this device's folders first, then the others.
    let me = shared.home.device_id();
    let mut devices: Vec<Entry> =
        lock(&shared.roster).devices().into_iter().filter(|e| e.device != me).cloned().collect();
    {
        let ledger = lock(&shared.ledger);
        devices.sort_by_key(|e| !ledger.peers.contains_key(&e.device.to_hex()));
    }
    let total = remaining.len();
    let mut fetched = 0usize;
    let mut from = Vec::new();
    let mut failed: Vec<answer::FetchFailed> = Vec::new();
    for device in devices {
        if remaining.is_empty() {
            break;
        }
        let peer = triad_net::peer_id(device.device);
        let _ = s
            .say(&answer::FetchEvent::Fetching {
                from: device.name.clone(),
                fetched: fetched as u64,
                of: total as u64,
            })
            .await;
        let opened =
            tokio::time::timeout(FETCH_ANSWER_TIMEOUT, shared.node.open(peer, FETCH_PROTOCOL))
                .await;
        let mut stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                failed.push(answer::FetchFailed {
                    device: device.name.clone(),
                    reason: e.to_string(),
                });
                continue;
            }
            Err(_) => {
                let reason = format!("no answer for {} s", FETCH_ANSWER_TIMEOUT.as_secs());
                failed.push(answer::FetchFailed { device: device.name.clone(), reason });
                continue;
            }
        };
        let mut queue: std::collections::VecDeque<BlobId> = remaining.drain(..).collect();
        // What this device does not hold, for the next one.
        let mut not_here = Vec::new();
        let mut got = 0usize;
        while !queue.is_empty() {
            let batch: Vec<BlobId> =
                queue.drain(..queue.len().min(FETCH_FOR_RESTORE_BATCH)).collect();
            let answer = crate::fetch::fetch_batch(&mut stream, &batch, FETCH_ANSWER_TIMEOUT).await;
            let came = answer.blobs.len();
            tokio::task::block_in_place(|| -> Result<(), WriteError> {
                for blob in &answer.blobs {
                    store.put(blob)?;
                }
                store.commit()
            })
            .map_err(|e| error_chain(&e))?;
            got += came;
            fetched += came;
            if came > 0 {
                let _ = s
                    .say(&answer::FetchEvent::Progress {
                        from: device.name.clone(),
                        fetched: fetched as u64,
                        of: total as u64,
                    })
                    .await;
            }
            match answer.end {
                crate::fetch::BatchEnd::Whole => {}
                crate::fetch::BatchEnd::NotHeld => {
                    not_here.push(batch[came]);
                    for id in batch[came + 1..].iter().rev() {
                        queue.push_front(*id);
                    }
                }
                crate::fetch::BatchEnd::Broken(reason) => {
                    tracing::info!(device = %device.name, %reason, "the fetch from this device broke off");
                    let _ = s
                        .say(&answer::FetchEvent::Gone {
                            device: device.name.clone(),
                            reason: reason.clone(),
                        })
                        .await;
                    failed.push(answer::FetchFailed { device: device.name.clone(), reason });
                    not_here.extend_from_slice(&batch[came..]);
                    not_here.extend(queue.drain(..));
                }
            }
        }
        let _ = futures::AsyncWriteExt::close(&mut stream).await;
        if got > 0 && !from.contains(&device.name) {
            from.push(device.name.clone());
        }
        remaining = not_here;
    }
    Ok(answer::Fetched { fetched: fetched as u64, missing: remaining.len() as u64, from, failed })
}
