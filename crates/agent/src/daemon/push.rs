//! Sync, the pusher's side: control requests to a peer, and pushing it what it lacks of this
//! device's snapshots.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::AsyncWriteExt;
use tokio::sync::mpsc;
use triad_core::BlobId;
use triad_core::head::SignedHead;
use triad_net::PeerId;
use triad_net::frame::{self, FrameError};
use triad_proto::wire::{
    self, BLOBS_PROTOCOL, BlobAck, BlobFrame, CONTROL_FRAME_MAX, CONTROL_PROTOCOL,
    MISSING_BATCH_MAX, Refusal, Response,
};
use triad_store::Store;

use super::pace::Pace;
use super::socket::{Failure, Session, SyncFailure};
use super::{REQUEST_TIMEOUT, Shared, Traffic, error_chain, is_lan, lock, now_secs, open_stores};
use crate::catalog::Catalog;
use crate::control::answer;
use crate::replicas::PeerStore;
use crate::storeless::Origins;

/// One control request to `peer`.
pub(super) async fn request(
    shared: &Shared,
    peer: PeerId,
    req: &wire::Request,
) -> Result<Response, SyncFailure> {
    let mut again = true;
    let answer = loop {
        let mut stream = shared
            .node
            .open(peer, CONTROL_PROTOCOL)
            .await
            .map_err(|e| SyncFailure::Unreachable(e.to_string()))?;
        let exchange = async {
            frame::write(&mut stream, req).await?;
            frame::read::<Response, _>(&mut stream, "control response", CONTROL_FRAME_MAX).await
        };
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await;
        // The connection ended under the request (the peer restarted, or closed a connection
        // it does not admit as soon as it was made): once more, on a new connection, which
        // says why if the peer refuses it. Every control request may be asked twice.
        if matches!(answer, Ok(Err(_))) && again && shared.node.connected(&peer).is_none() {
            again = false;
            continue;
        }
        break answer;
    };
    match answer {
        // Busy is not a refusal: the peer is there but cannot take the request now.
        Ok(Ok(Response::Refused { code: Refusal::Busy, reason })) => {
            Err(SyncFailure::Unreachable(format!("the peer is {reason}")))
        }
        Ok(Ok(Response::Refused { code, reason })) => Err(SyncFailure::Refused(code, reason)),
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(SyncFailure::Unreachable(error_chain(&e))),
        Err(_) => Err(SyncFailure::Unreachable("the peer did not answer".into())),
    }
}

/// Says how far the agent's own push to `name` is (`status` shows it), keeping when it began.
fn pushing(shared: &Shared, name: &str, acked: u64, of: usize, bytes: u64) {
    let mut doing = lock(&shared.doing);
    doing.2 = false;
    doing.0 = format!(
        "pushing to {name}: {acked} of {of} blobs acknowledged, {} MiB sent",
        bytes / (1 << 20)
    );
}

/// Tells the command that asked for a push how far it is, if a command asked.
async fn say_progress(s: &mut Option<&mut Session>, blobs: u64, bytes: u64, of: usize) {
    if let Some(s) = s.as_deref_mut() {
        let _ = s.say(&answer::SyncEvent::Progress { blobs, bytes, of: of as u64 }).await;
    }
}

/// Remembers that a push to the device `name` failed: `devices` shows the last failure.
pub(super) fn note_failure(shared: &Shared, name: &str, message: &str) {
    if let Ok(entry) = shared.device_named(name) {
        shared.traffic(entry.device, |t| t.last_error = Some((message.to_owned(), now_secs())));
    }
}

/// Pushes to the device `name` what it lacks of this device's snapshots. A device that refuses
/// because it is full, over its quota, or no longer takes this device is remembered as such
/// (`status` names it) until a push to it succeeds.
pub(super) async fn sync(
    shared: &Shared,
    name: &str,
    s: Option<&mut Session>,
) -> Result<answer::Synced, Failure> {
    let started = std::time::Instant::now();
    let result = push(shared, name, s).await;
    let Ok(entry) = shared.device_named(name) else { return result };
    shared.traffic(entry.device, |t| match &result {
        Ok(synced) => {
            t.last_error = None;
            t.sent = t.sent.saturating_add(synced.bytes_sent);
            t.send_rate = Traffic::rate(synced.bytes_sent, started.elapsed()).or(t.send_rate);
        }
        Err(failure) => t.last_error = Some((failure.message.clone(), now_secs())),
    });
    let mut refusals = lock(&shared.refusals);
    match &result {
        Ok(_) => {
            refusals.remove(&entry.device);
        }
        Err(Failure { code: Some(code), message, .. }) => {
            let code = *code;
            if matches!(code, Refusal::Full | Refusal::Quota | Refusal::Removed | Refusal::NoStore)
            {
                refusals.insert(entry.device, (code, message.clone(), now_secs()));
            }
            drop(refusals);
            let said = match code {
                Refusal::Full => format!(
                    "{name} is full and took nothing more: {message}. Free space on its disk, \
                     or give it a larger one (`triad store add` there)"
                ),
                Refusal::Quota => format!(
                    "{name} is full for this vault and took nothing more: {message}. Raise its \
                     quota there, or free space in it"
                ),
                Refusal::Removed => {
                    format!("{name} no longer takes copies from this device: {message}")
                }
                Refusal::NoStore => format!(
                    "{name} has no store to hold copies: {message}. Add one there (`triad store \
                     add`)"
                ),
                Refusal::Other | Refusal::Busy | Refusal::NotTrusted => {
                    format!("{name} refused: {message}")
                }
            };
            return Err(Failure {
                kind: answer::FailureKind::Refused,
                message: said,
                code: Some(code),
            });
        }
        Err(_) => {}
    }
    result
}

async fn push(
    shared: &Shared,
    name: &str,
    mut s: Option<&mut Session>,
) -> Result<answer::Synced, Failure> {
    let entry = shared.device_named(name)?;
    let me = shared.home.device_id();
    if entry.device == me {
        return Err("that is this device".into());
    }
    if lock(&shared.roster).is_removed(me) {
        return Err(SyncFailure::Refused(
            Refusal::Removed,
            "this device was removed from the vault: the other devices take nothing from it \
             any more"
                .into(),
        )
        .into());
    }
    let peer = triad_net::peer_id(entry.device);
    let keys = shared.home.keys().map_err(|e| e.to_string())?;
    // The local stores are held only while they are read, never across a request to the peer
    // (which may be pushing to this device at the same moment, and need them).
    let (needed, heads) = {
        let work = shared.stores.work().await?;
        let stores = open_stores::read(&work);
        if stores.is_empty() {
            return Err("this device has no store to send from".into());
        }
        what_to_send(shared, keys, &stores)?
    };

    // Its stores first (what it acknowledges is in every one of them), then the roster, so
    // that the peer knows every device whose heads it will hold.
    let Response::Hello { stores, .. } = request(shared, peer, &wire::Request::Hello).await? else {
        return Err(SyncFailure::Refused(Refusal::Other, "unexpected answer".into()).into());
    };
    let roster = lock(&shared.roster).encode();
    request(shared, peer, &wire::Request::Roster { roster }).await?;
    shared.remember(entry.device, shared.node.connected(&peer).as_ref());

    let mut missing = Vec::new();
    for batch in needed.chunks(MISSING_BATCH_MAX) {
        match request(shared, peer, &wire::Request::Missing { blobs: batch.to_vec() }).await? {
            // Only what was asked about: a peer cannot make this device send anything else.
            Response::Missing { blobs } => {
                let asked: std::collections::HashSet<_> = batch.iter().collect();
                missing.extend(blobs.into_iter().filter(|id| asked.contains(id)));
            }
            _ => {
                return Err(SyncFailure::Refused(Refusal::Other, "unexpected answer".into()).into());
            }
        }
    }
    missing.dedup();
    let already = needed.len().saturating_sub(missing.len());
    let (mut sent, mut bytes, mut acked) = (0u64, 0u64, 0u64);
    // Chunks no data store here holds (this device may have none) are read again from the
    // source files; those whose source changed cannot be, and what uses them is written down
    // as lacking.
    let mut unavailable = HashSet::new();
    let mut origins = Arc::new(Origins::default());
    if !missing.is_empty() {
        let work = shared.stores.work().await?;
        let found = tokio::task::block_in_place(|| {
            let stores = open_stores::read(&work);
            let settings = shared.config();
            let wanted: HashSet<BlobId> = missing
                .iter()
                .copied()
                .filter(|id| {
                    !settings.holding_data(&stores).any(|s| s.contains(*id).unwrap_or(false))
                })
                .collect();
            let catalog = Catalog::new(keys, &stores);
            Origins::find(&catalog, &settings, shared.home.device_id(), &wanted)
        });
        origins = Arc::new(found.map_err(|e| error_chain(&e))?);
        let keys = Arc::new(keys.clone());
        let stream = shared
            .node
            .open(peer, BLOBS_PROTOCOL)
            .await
            .map_err(|e| SyncFailure::Unreachable(e.to_string()))?;
        let (reader, mut writer) = futures::AsyncReadExt::split(stream);
        // Blobs are read from the stores ahead of the network, by a few blocking threads so that
        // the disk has several reads in flight; they are sent in the order they are read.
        let (blob_tx, mut blobs) = mpsc::channel(16);
        let ids = missing.clone();
        let from_sources = origins.clone();
        let reading = tokio::task::spawn_blocking(move || {
            const READERS: usize = 3;
            let (work, origins, keys) = (&work, &from_sources, &keys);
            std::thread::scope(|scope| {
                for k in 0..READERS {
                    let (ids, blob_tx) = (&ids, blob_tx.clone());
                    scope.spawn(move || {
                        for id in ids.iter().skip(k).step_by(READERS) {
                            let stored = open_stores::read(work).iter().find_map(|s| s.get(*id).ok());
                            let blob = match stored {
                                Some(blob) => Ok((*id, Some(blob))),
                                None if origins.knows(*id) => Ok((*id, origins.reseal(keys, *id))),
                                None => Err(format!(
                                    "blob {id} is not readable in any store here; run `triad verify`"
                                )),
                            };
                            if blob_tx.blocking_send(blob).is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        });
        // Acknowledgements are read as they come, so that the sender never waits for a commit.
        let (ack_tx, mut acks) = mpsc::channel(64);
        tokio::spawn(read_acks(reader, ack_tx));
        let mut since_commit = 0u64;
        let sync = shared.config().sync;
        let limited = sync.limit_bytes_per_sec > 0
            && (sync.limit_lan || !shared.node.connected(&peer).as_ref().is_some_and(is_lan));
        let pace = limited.then(|| {
            let limit = sync.limit_bytes_per_sec;
            lock(&shared.paces)
                .entry(entry.device)
                .or_insert_with(|| Arc::new(Pace::new(limit)))
                .clone()
        });
        let mut uncommitted = 0u64;
        for _ in 0..missing.len() {
            let (id, blob) =
                blobs.recv().await.ok_or_else(|| "reading the stores stopped".to_owned())??;
            let Some(blob) = blob else {
                unavailable.insert(id);
                continue;
            };
            let len = blob.as_bytes().len() as u64;
            if let Err(e) = frame::write_blob(&mut writer, &blob.id(), blob.as_bytes()).await {
                return Err(why_stopped(&mut acks, e).await.into());
            }
            sent += 1;
            bytes += len;
            since_commit += len;
            uncommitted += 1;
            if let Some(pace) = &pace {
                pace.sent(len).await;
            }
            if since_commit >= sync.commit_bytes {
                if let Err(e) = frame::write(&mut writer, &BlobFrame::Commit).await {
                    return Err(why_stopped(&mut acks, e).await.into());
                }
                since_commit = 0;
                uncommitted = 0;
            }
            while let Ok(ack) = acks.try_recv() {
                acked += ack?;
                say_progress(&mut s, acked, bytes, missing.len()).await;
                if s.is_none() {
                    pushing(shared, name, acked, missing.len(), bytes);
                }
            }
        }
        let _ = reading.await;
        if uncommitted > 0
            && let Err(e) = frame::write(&mut writer, &BlobFrame::Commit).await
        {
            return Err(why_stopped(&mut acks, e).await.into());
        }
        // Every commit is answered once; wait for the answers still to come.
        while acked < sent {
            let Some(ack) = acks.recv().await else { break };
            acked += ack?;
            say_progress(&mut s, acked, bytes, missing.len()).await;
            if s.is_none() {
                pushing(shared, name, acked, missing.len(), bytes);
            }
        }
        let _ = writer.close().await;
    }
    if acked != sent {
        return Err(SyncFailure::Refused(
            Refusal::Other,
            format!("{name} acknowledged {acked} of {sent} blobs"),
        )
        .into());
    }
    let acknowledged: Vec<(triad_core::FolderId, triad_core::BlobId)> = heads
        .iter()
        .filter_map(|bytes| SignedHead::decode(bytes, shared.home.vault()).ok())
        .map(|h| (h.head.folder, h.head.snapshot))
        .collect();
    request(shared, peer, &wire::Request::Heads { heads }).await?;
    // Every blob of these snapshots is durable there, but for the file versions that could not
    // be read again, and each head is stored: a copy.
    let lacking = origins.lacking(&unavailable);
    let stores: Vec<PeerStore> =
        stores.iter().map(|s| PeerStore { id: s.id, media: s.media }).collect();
    let lost = {
        let mut ledger = lock(&shared.ledger);
        // Said once: a version already known to be lacking there is not news.
        let lost: usize = lacking
            .iter()
            .map(|(folder, versions)| {
                let before = ledger
                    .get(entry.device, *folder)
                    .filter(|(known, _)| *known == stores.as_slice())
                    .map(|(_, a)| a.lacking.clone())
                    .unwrap_or_default();
                versions.iter().filter(|v| !before.contains(v)).count()
            })
            .sum();
        if lost > 0 {
            tracing::warn!(device = %name, versions = lost,
                "file versions could not be sent: their files changed before any other device held them");
        }
        let claimed = already > 0;
        ledger.record(entry.device, stores, &acknowledged, &lacking, claimed, now_secs() as i64);
        if let Err(e) = ledger.save(&shared.home_path) {
            tracing::warn!(error = %e, "cannot save the replica ledger");
        }
        lost
    };
    let lacking_total: usize = lacking.values().map(Vec::len).sum();
    Ok(answer::Synced {
        versions_lacking: lacking_total as u64,
        device: name.to_owned(),
        blobs_sent: sent,
        bytes_sent: bytes,
        blobs_already_there: already as u64,
        versions_not_sent: lost as u64,
    })
}

/// Every blob this device's snapshots need, data first, and this device's signed heads.
fn what_to_send(
    shared: &Shared,
    keys: &triad_core::keys::VaultKeys,
    stores: &[Store],
) -> Result<(Vec<triad_core::BlobId>, Vec<Vec<u8>>), String> {
    tokio::task::block_in_place(|| {
        let catalog = Catalog::new(keys, stores);
        let me = shared.home.device_id();
        let needed = catalog.reachable(me).map_err(|e| error_chain(&e))?;
        let heads = catalog
            .heads()
            .map_err(|e| error_chain(&e))?
            .into_iter()
            .filter(|h| h.head.device == me)
            .map(|h| h.encode())
            .collect();
        Ok((needed, heads))
    })
}

/// Why a push stopped when writing to the receiver failed: the refusal it sent first, if it
/// sent one (it refuses, then stops reading), else the write error.
async fn why_stopped(
    acks: &mut mpsc::Receiver<Result<u64, SyncFailure>>,
    error: io::Error,
) -> SyncFailure {
    let wait = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(ack)) = tokio::time::timeout_at(wait, acks.recv()).await {
        if let Err(failure) = ack {
            return failure;
        }
    }
    SyncFailure::Unreachable(format!("the device stopped taking blobs: {error}"))
}

/// Reads acknowledgements until the stream ends; each is handed on, an error last.
async fn read_acks(
    mut reader: futures::io::ReadHalf<triad_net::Stream>,
    acks: mpsc::Sender<Result<u64, SyncFailure>>,
) {
    loop {
        let ack =
            match frame::read::<BlobAck, _>(&mut reader, "blob acknowledgement", CONTROL_FRAME_MAX)
                .await
            {
                Ok(BlobAck::Committed { count }) => Ok(u64::from(count)),
                Ok(BlobAck::Refused { code, reason }) => Err(SyncFailure::Refused(code, reason)),
                Err(FrameError::Closed { .. }) => return,
                Err(e) => Err(SyncFailure::Unreachable(error_chain(&e))),
            };
        let stop = ack.is_err();
        if acks.send(ack).await.is_err() || stop {
            return;
        }
    }
}
