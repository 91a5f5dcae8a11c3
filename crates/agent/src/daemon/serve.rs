//! Serving the vault's other devices, one protocol each: their control requests, blob
//! pushes, fetches, and recovery proofs.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncWriteExt, StreamExt};
use triad_core::head::SignedHead;
use triad_core::roster::{Roster, SignedChange, Signer, What};
use triad_core::seal::SealedBlob;
use triad_net::frame::{self, FrameError};
use triad_net::{Admission, PeerId};
use triad_proto::wire::{
    self, BlobAck, BlobFrame, CONTROL_FRAME_MAX, MISSING_BATCH_MAX, RecoverMessage, Refusal,
    Response, StoreInfo,
};
use triad_store::{Store, WriteError};

use super::{
    REQUEST_TIMEOUT, Shared, Traffic, audit, error_chain, free_bytes, gossip, lock, now_secs,
    open_stores, protect,
};
use crate::config::Config;

/// How long a blob stream may stay silent before the receiver drops it.
const IDLE_PUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// The stores are lent or held by long work: the peer hears "busy" rather than waiting until
/// its request times out (an auditor takes "busy" for offline, not for a failed audit).
pub(super) const BUSY: &str = "busy: the stores are in use; ask again later";

/// What a device without a store (only its catalog) answers to a push.
const NO_STORE: &str = "this device has no store to hold copies";

/// Accepts the streams of `protocol` and hands those of peers `admitted` lets in to `handle`,
/// each on its own task; the others are dropped unread.
pub(super) fn serve<A, H, F>(shared: &Arc<Shared>, protocol: &'static str, admitted: A, handle: H)
where
    A: Fn(&Admission, &PeerId) -> bool + Send + 'static,
    H: Fn(Arc<Shared>, PeerId, triad_net::Stream) -> F + Send + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let mut incoming = shared.node.accept(protocol);
    let shared = shared.clone();
    tokio::spawn(async move {
        while let Some((peer, stream)) = incoming.next().await {
            if !admitted(shared.node.admission(), &peer) {
                tracing::debug!(%peer, protocol, "stream from a peer not allowed this protocol dropped");
                continue;
            }
            tokio::spawn(handle(shared.clone(), peer, stream));
        }
    });
}

// ---- Peers: control requests ----------------------------------------------------------------

/// Serves one control request.
pub(super) async fn on_control(shared: Arc<Shared>, peer: PeerId, stream: triad_net::Stream) {
    if let Err(e) = answer_control(&shared, peer, stream).await {
        tracing::info!(%peer, error = %error_chain(&e), "control request failed");
    }
}

async fn answer_control(
    shared: &Arc<Shared>,
    peer: PeerId,
    mut stream: triad_net::Stream,
) -> Result<(), FrameError> {
    let request: wire::Request = tokio::time::timeout(
        REQUEST_TIMEOUT,
        frame::read(&mut stream, "control request", CONTROL_FRAME_MAX),
    )
    .await
    .map_err(|_| FrameError::Io(io::ErrorKind::TimedOut.into()))??;
    // A device that reaches this one is where it says it is: its agent dials from the address
    // it listens on, so a device met only at pairing (or moved) is reachable from now on.
    if let Some(device) = triad_net::device_id(&peer)
        && shared.remember(device, shared.node.connected(&peer).as_ref())
    {
        // It may be what the policy waits for.
        let _ = shared.kick.try_send(protect::Wake::Changed);
    }
    let response = match request {
        wire::Request::Hello => {
            // From the settings: opening a store to describe it is not worth its lock.
            // The catalog holds no data: not a place for anyone's copies.
            let stores = shared
                .config()
                .data_stores()
                .map(|s| StoreInfo { id: s.id, media: s.media, free: free_bytes(&s.path, s.quota) })
                .collect();
            let identity = shared.home.identity();
            Response::Hello { name: identity.name.clone(), site: identity.site.clone(), stores }
        }
        wire::Request::Missing { blobs } if blobs.len() > MISSING_BATCH_MAX => {
            refuse(Refusal::Other, format!("at most {MISSING_BATCH_MAX} blobs per request"))
        }
        wire::Request::Missing { .. }
            if shared.scrubbing.load(std::sync::atomic::Ordering::SeqCst) =>
        {
            refuse(Refusal::Busy, BUSY)
        }
        wire::Request::Missing { blobs } => match busy_or(shared.stores.work()).await {
            // The committed index only: a blob answered as present must be durable, not in a
            // put that another push has yet to commit (and may lose).
            Ok(work) => tokio::task::block_in_place(|| {
                let Some(stores) = open_stores::read_within(&work, Duration::from_secs(10)) else {
                    return refuse(Refusal::Busy, BUSY);
                };
                let config = shared.config();
                let data: Vec<&Store> = config.holding_data(&stores).collect();
                if data.is_empty() {
                    return refuse(Refusal::NoStore, NO_STORE);
                }
                let missing = blobs
                    .into_iter()
                    .filter(|id| data.iter().any(|s| !s.holds_committed(*id).unwrap_or(false)))
                    .collect();
                Response::Missing { blobs: missing }
            }),
            Err(refused) => refused,
        },
        wire::Request::Gossip { roster, addresses, verdicts } => {
            gossip::answer(shared, peer, &roster, &addresses, &verdicts).await
        }
        wire::Request::Roster { roster } => match Roster::decode(&roster) {
            Ok(roster) => match shared.merge_roster(&roster) {
                Ok(_) => Response::Done,
                Err(reason) => refuse(Refusal::Other, reason),
            },
            Err(e) => refuse(Refusal::Other, format!("roster refused: {e}")),
        },
        wire::Request::Inventory { .. } | wire::Request::ListHeads if !shared.is_trusted(&peer) => {
            refuse(Refusal::NotTrusted, "only a trusted device may copy from this one")
        }
        wire::Request::Inventory { after } => match shared.stores.work().await {
            Ok(work) => tokio::task::block_in_place(|| {
                let stores = open_stores::read(&work);
                let mut ids: Vec<triad_core::BlobId> = Vec::new();
                for store in stores.iter() {
                    match store.blobs() {
                        Ok(blobs) => ids.extend(blobs.into_iter().map(|b| b.id)),
                        Err(e) => return refuse(Refusal::Other, e.to_string()),
                    }
                }
                ids.sort_unstable();
                ids.dedup();
                let from = after.map_or(0, |a| ids.partition_point(|id| *id <= a));
                let page: Vec<_> = ids[from..].iter().take(MISSING_BATCH_MAX).copied().collect();
                let more = from + page.len() < ids.len();
                Response::Inventory { blobs: page, more }
            }),
            Err(reason) => refuse(Refusal::Other, reason),
        },
        wire::Request::ListHeads => match shared.stores.work().await {
            Ok(work) => tokio::task::block_in_place(|| {
                let stores = open_stores::read(&work);
                // The highest head of each (device, folder) in any store.
                let mut best: std::collections::BTreeMap<_, SignedHead> = Default::default();
                for store in stores.iter() {
                    match store.heads() {
                        Ok(heads) => {
                            for h in heads {
                                let key = (h.head.device, h.head.folder);
                                if best.get(&key).is_none_or(|b| b.head.sequence < h.head.sequence)
                                {
                                    best.insert(key, h);
                                }
                            }
                        }
                        Err(e) => return refuse(Refusal::Other, e.to_string()),
                    }
                }
                Response::Heads { heads: best.values().map(SignedHead::encode).collect() }
            }),
            Err(reason) => refuse(Refusal::Other, reason),
        },
        wire::Request::Audit { ranges } if ranges.len() > wire::AUDIT_RANGES_MAX => {
            refuse(Refusal::Other, format!("at most {} ranges per audit", wire::AUDIT_RANGES_MAX))
        }
        wire::Request::Audit { ranges } => match busy_or(shared.stores.work()).await {
            Ok(work) => {
                let (response, rotten) =
                    tokio::task::block_in_place(|| audit::answer(&work, &ranges));
                drop(work);
                if let Response::Audit { slices } = &response
                    && slices.iter().all(Option::is_some)
                {
                    shared.last_audited.store(now_secs(), std::sync::atomic::Ordering::Relaxed);
                }
                if rotten && !shared.scrubbing.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    tokio::spawn(audit::scrub_and_drop(shared.clone()));
                }
                response
            }
            Err(refused) => refused,
        },
        wire::Request::Heads { heads } => match shared.stores.work().await {
            Ok(work) => match tokio::task::block_in_place(|| take_heads(shared, &work, &heads)) {
                Ok(()) => Response::Done,
                Err(reason) => refuse(Refusal::Other, reason),
            },
            Err(reason) => refuse(Refusal::Other, reason),
        },
    };
    frame::write(&mut stream, &response).await?;
    stream.close().await?;
    Ok(())
}

/// Stores heads whose device is on the roster and whose snapshot every store holds.
fn take_heads(shared: &Shared, work: &open_stores::Work, heads: &[Vec<u8>]) -> Result<(), String> {
    let vault = shared.home.vault();
    let config = shared.config();
    // Taking a head appends it to the store's packs: the stores are written.
    let mut stores = open_stores::write(work);
    for bytes in heads {
        let head = SignedHead::decode(bytes, vault).map_err(|e| format!("head refused: {e}"))?;
        if lock(&shared.roster).device(head.head.device).is_none() {
            return Err(format!("head of device {} which is not on the roster", head.head.device));
        }
        // Not into the catalog: a push puts nothing there.
        for store in stores.iter_mut().filter(|s| !config.is_catalog(s.id())) {
            if !store.holds_committed(head.head.snapshot).map_err(|e| e.to_string())? {
                return Err(format!(
                    "head names snapshot {} which is not here",
                    head.head.snapshot
                ));
            }
            store.write_head(&head).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// The stores, or the refusal to answer with: busy if they are not free within 10 s.
async fn busy_or(
    work: impl std::future::Future<Output = Result<open_stores::Work, String>>,
) -> Result<open_stores::Work, Response> {
    match tokio::time::timeout(Duration::from_secs(10), work).await {
        Ok(Ok(work)) => Ok(work),
        Ok(Err(reason)) => Err(refuse(Refusal::Other, reason)),
        Err(_) => Err(refuse(Refusal::Busy, BUSY)),
    }
}

// ---- Peers: blob pushes ---------------------------------------------------------------------

/// Serves one blob push.
pub(super) async fn on_blobs(shared: Arc<Shared>, peer: PeerId, stream: triad_net::Stream) {
    let started = std::time::Instant::now();
    let mut bytes = 0;
    match receive_blobs(&shared, stream, &mut bytes).await {
        Ok(n) => tracing::info!(%peer, blobs = n, "blobs received"),
        Err(e) => tracing::info!(%peer, error = %e, "blob stream closed on an error"),
    }
    if let Some(device) = triad_net::device_id(&peer) {
        shared.traffic(device, |t| {
            t.received = t.received.saturating_add(bytes);
            t.receive_rate = Traffic::rate(bytes, started.elapsed()).or(t.receive_rate);
        });
    }
}

/// Receives blobs until the sender closes the stream, adding their bytes to `bytes`; returns
/// how many were acknowledged.
async fn receive_blobs(
    shared: &Shared,
    mut stream: triad_net::Stream,
    bytes: &mut u64,
) -> Result<u64, String> {
    let work = shared.stores.work().await?;
    let config = shared.config();
    if config.holding_data(&open_stores::read(&work)).next().is_none() {
        let refused = BlobAck::Refused { code: Refusal::NoStore, reason: NO_STORE.into() };
        let _ = frame::write(&mut stream, &refused).await;
        let _ = stream.close().await;
        return Err("no store".into());
    }
    // The blobs of this push since its last commit.
    let mut pending: Vec<triad_core::BlobId> = Vec::new();
    let mut acknowledged = 0u64;
    loop {
        // A sender that goes quiet gives up its hold on the stores.
        let next = tokio::time::timeout(IDLE_PUSH_TIMEOUT, frame::read_blob(&mut stream)).await;
        let Ok(next) = next else {
            return Err(format!(
                "no frame for {} s; uncommitted blobs dropped",
                IDLE_PUSH_TIMEOUT.as_secs()
            ));
        };
        let frame = match next {
            Ok(frame) => frame,
            // The sender is done (anything since its last commit is dropped, never indexed).
            Err(FrameError::Closed { .. }) => return Ok(acknowledged),
            Err(e) => return Err(error_chain(&e)),
        };
        match frame {
            BlobFrame::Blob { id, bytes: sealed } => {
                *bytes = bytes.saturating_add(sealed.len() as u64);
                let blob =
                    SealedBlob::verify(id, sealed).map_err(|e| format!("blob refused: {e}"))?;
                let over = over_quota(&config, &open_stores::read(&work), blob.as_bytes().len());
                if let Some(reason) = over {
                    return Err(refuse_push(&mut stream, Refusal::Quota, reason).await);
                }
                let put = tokio::task::block_in_place(|| -> Result<(), WriteError> {
                    for store in open_stores::write(&work).iter_mut() {
                        if !config.is_catalog(store.id()) {
                            store.put(&blob)?;
                        }
                    }
                    Ok(())
                });
                if let Err(e) = put {
                    return Err(refuse_push(&mut stream, refusal_of(&e), error_chain(&e)).await);
                }
                pending.push(blob.id());
            }
            BlobFrame::Commit => {
                // Commits every push's puts so far, not only this one's: all are whole,
                // verified blobs, and the sender of each is answered at its own commit.
                let committed = tokio::task::block_in_place(|| -> Result<(), (Refusal, String)> {
                    let mut stores = open_stores::write(&work);
                    for store in stores.iter_mut() {
                        store.commit().map_err(|e| (refusal_of(&e), error_chain(&e)))?;
                    }
                    // A commit that failed for another push dropped every uncommitted put,
                    // this push's too: acknowledge only what is durably here.
                    for store in config.holding_data(&stores) {
                        for id in &pending {
                            let held = store
                                .holds_committed(*id)
                                .map_err(|e| (Refusal::Other, e.to_string()))?;
                            if !held {
                                return Err((
                                    Refusal::Busy,
                                    format!("blob {id} was lost in a failed commit; send it again"),
                                ));
                            }
                        }
                    }
                    Ok(())
                });
                let count = u32::try_from(pending.len()).unwrap_or(u32::MAX);
                match committed {
                    Ok(()) => frame::write(&mut stream, &BlobAck::Committed { count })
                        .await
                        .map_err(|e| e.to_string())?,
                    Err((code, reason)) => return Err(refuse_push(&mut stream, code, reason).await),
                }
                acknowledged += u64::from(count);
                pending.clear();
            }
        }
    }
}

/// Answers a push with a refusal, and ends the stream so that the refusal reaches the sender
/// before it learns that nothing more is read. Returns the reason.
async fn refuse_push(stream: &mut triad_net::Stream, code: Refusal, reason: String) -> String {
    let _ = frame::write(stream, &BlobAck::Refused { code, reason: reason.clone() }).await;
    let _ = stream.close().await;
    reason
}

/// The code of a refusal to store: a full disk is said as such, so that the sender tells its
/// user which device is full (not that it went away).
fn refusal_of(e: &WriteError) -> Refusal {
    match e {
        WriteError::Full { .. } => Refusal::Full,
        WriteError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull => {
            Refusal::Full
        }
        _ => Refusal::Other,
    }
}

/// A control request refused for `reason`; the stores being busy is said as such.
pub(super) fn refuse(code: Refusal, reason: impl Into<String>) -> Response {
    Response::Refused { code, reason: reason.into() }
}

/// Serves the blobs a trusted device asks for.
pub(super) async fn on_fetch(shared: Arc<Shared>, peer: PeerId, stream: triad_net::Stream) {
    if !shared.is_trusted(&peer) {
        tracing::info!(%peer, "a device that is not trusted asked for blobs; refused");
        return;
    }
    match serve_fetch(&shared, stream).await {
        Ok(n) => tracing::info!(%peer, blobs = n, "blobs sent on request"),
        Err(e) => tracing::info!(%peer, error = %e, "fetch stream closed on an error"),
    }
}

/// Answers [`wire::Fetch`] batches until the asker closes the stream; returns the blobs sent.
async fn serve_fetch(shared: &Shared, mut stream: triad_net::Stream) -> Result<u64, String> {
    let mut sent = 0u64;
    loop {
        let next = tokio::time::timeout(
            IDLE_PUSH_TIMEOUT,
            frame::read::<wire::Fetch, _>(&mut stream, "fetch batch", CONTROL_FRAME_MAX),
        )
        .await
        .map_err(|_| "the asker went quiet".to_owned())?;
        let batch = match next {
            Ok(batch) => batch,
            Err(FrameError::Closed { .. }) => return Ok(sent),
            Err(e) => return Err(error_chain(&e)),
        };
        if batch.blobs.len() > MISSING_BATCH_MAX {
            return Err(format!("at most {MISSING_BATCH_MAX} blobs per batch"));
        }
        for id in batch.blobs {
            // Read under the stores' lock, sent without it.
            let blob = {
                let work = shared.stores.work().await?;
                tokio::task::block_in_place(|| {
                    open_stores::read(&work).iter().find_map(|s| s.get(id).ok())
                })
            };
            let Some(blob) = blob else {
                // Not here (or damaged): the batch ends short and the asker says so.
                break;
            };
            frame::write_blob(&mut stream, &blob.id(), blob.as_bytes())
                .await
                .map_err(|e| error_chain(&e))?;
            sent += 1;
        }
        frame::write(&mut stream, &BlobFrame::Commit).await.map_err(|e| error_chain(&e))?;
    }
}

/// Why putting `len` more bytes would take a store past its quota, if it would.
fn over_quota(config: &Config, stores: &[Store], len: usize) -> Option<String> {
    stores.iter().find_map(|store| {
        let quota = config.stores.iter().find(|s| s.id == store.id())?.quota?;
        let held = store.bytes_held();
        (held + len as u64 > quota).then(|| {
            format!(
                "store {} is full for this vault: it holds {held} bytes of its quota of {quota}",
                store.path().display()
            )
        })
    })
}

// ---- The recovery proof (verifier) ----------------------------------------------------------

/// Serves one recovery proof; a failed one disconnects the peer.
pub(super) async fn on_recovery(shared: Arc<Shared>, peer: PeerId, stream: triad_net::Stream) {
    match verify_recovery(&shared, peer, stream).await {
        Ok(()) => tracing::info!(%peer, "a device proved the recovery phrase and was admitted"),
        Err(reason) => {
            tracing::warn!(%peer, %reason, "recovery proof refused");
            shared.node.admission().reject(peer);
        }
    }
}

async fn verify_recovery(
    shared: &Arc<Shared>,
    peer: PeerId,
    mut stream: triad_net::Stream,
) -> Result<(), String> {
    let read = async |stream: &mut triad_net::Stream| {
        frame::read::<RecoverMessage, _>(stream, "recovery message", CONTROL_FRAME_MAX)
            .await
            .map_err(|e| error_chain(&e))
    };
    let refuse = async |stream: &mut triad_net::Stream, reason: &str| {
        let _ = frame::write(stream, &RecoverMessage::Refused { reason: reason.to_owned() }).await;
        reason.to_owned()
    };
    let vault = shared.home.vault();
    let RecoverMessage::Hello { vault: claimed } = read(&mut stream).await? else {
        return Err(refuse(&mut stream, "unexpected message").await);
    };
    if claimed != vault {
        return Err(refuse(&mut stream, "this device is not of that vault").await);
    }
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
    // Only the heads' hashes before the proof: the roster (names, sites, keys) is for those
    // who hold the phrase.
    let (recovery_public, heads) = {
        let roster = lock(&shared.roster);
        (roster.recovery_public, roster.heads().iter().map(|h| h.0).collect())
    };
    let challenge = RecoverMessage::ChallengeHeads { nonce, heads };
    frame::write(&mut stream, &challenge).await.map_err(|e| e.to_string())?;
    let (signature, change) = match read(&mut stream).await? {
        RecoverMessage::ProofChange { signature, change } => (signature, change),
        RecoverMessage::Proof { .. } => {
            return Err(refuse(
                &mut stream,
                "the recovering device runs an older triad; update it and try again",
            )
            .await);
        }
        _ => return Err(refuse(&mut stream, "unexpected message").await),
    };
    let me = shared.node.peer_id();
    let msg = wire::recovery_proof_message(&vault, &me.to_bytes(), &peer.to_bytes(), &nonce);
    let valid = <[u8; 64]>::try_from(signature.as_slice())
        .is_ok_and(|sig| triad_core::keys::verify_signature(&recovery_public, &msg, &sig));
    if !valid {
        return Err(refuse(&mut stream, "the recovery proof does not verify").await);
    }
    let change = match SignedChange::decode(&change) {
        Ok(change) => change,
        Err(e) => return Err(refuse(&mut stream, &format!("admission refused: {e}")).await),
    };
    let device = triad_net::device_id(&peer).ok_or("not an ed25519 peer id")?;
    let admits_prover = matches!(&change.change.what,
        What::Admit(entry) if entry.device == device && entry.signer == Signer::Recovery);
    if !admits_prover {
        return Err(refuse(
            &mut stream,
            "the change does not admit the prover by the recovery key",
        )
        .await);
    }
    let admitted = shared.update_roster(|roster| {
        roster.insert(change).map_err(|e| format!("admission refused: {e}"))?;
        Ok(true)
    });
    if let Err(e) = admitted {
        return Err(refuse(&mut stream, &e).await);
    }
    shared.remember(device, shared.node.connected(&peer).as_ref());
    let welcome = RecoverMessage::Welcome { roster: lock(&shared.roster).encode() };
    frame::write(&mut stream, &welcome).await.map_err(|e| e.to_string())?;
    let _ = stream.close().await;
    Ok(())
}
