//! The control socket: the `triad` commands of the home's owner, one request a connection,
//! and the small answers (devices, removing a device, adding an address).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use triad_core::roster::Entry;
use triad_net::Multiaddr;
use triad_proto::wire::{self, Refusal, Response};

use super::fetch::fetch_into;
use super::gossip::{TELL_TIMEOUT, gossip};
use super::pairing::pair_session;
use super::push::{request, sync};
use super::view::{audit_devices, check, status};
use super::{Shared, free_bytes, lock, protect};
use crate::control::{self, answer};

pub(super) async fn serve_socket(shared: Arc<Shared>, listener: UnixListener, owner: u32) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        if uid != Some(owner) {
            tracing::warn!(?uid, "control connection from another user refused");
            let mut stream = stream;
            let refused = answer::Failure::message(
                "refused: only the owner of this home may control its agent",
            );
            let mut line = serde_json::to_vec(&refused).expect("answers serialize");
            line.push(b'\n');
            let _ = stream.write_all(&line).await;
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = session(&shared, stream).await {
                tracing::debug!(error = %e, "control session ended");
            }
        });
    }
}

pub(super) struct Session {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    out: tokio::net::unix::OwnedWriteHalf,
}

impl Session {
    /// Sends one line: an answer of [`answer`], an event, or a failure.
    pub(super) async fn say(&mut self, line: &impl Serialize) -> io::Result<()> {
        let mut line = serde_json::to_vec(line).expect("answers serialize");
        line.push(b'\n');
        self.out.write_all(&line).await
    }

    pub(super) async fn read(&mut self) -> io::Result<Option<control::Request>> {
        let Some(line) = self.lines.next_line().await? else { return Ok(None) };
        serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

async fn session(shared: &Arc<Shared>, stream: UnixStream) -> io::Result<()> {
    let (read, out) = stream.into_split();
    let mut s = Session { lines: BufReader::new(read).lines(), out };
    let Some(request) = s.read().await? else { return Ok(()) };
    match request {
        control::Request::Lease => {
            // The command works on the stores itself; the agent keeps off them until it is
            // done (it closes the connection by exiting).
            let _lease = shared.stores.lend().await;
            s.say(&answer::Leased { leased: true }).await?;
            while s.read().await.is_ok_and(|line| line.is_some()) {}
            Ok(())
        }
        control::Request::Devices => reply(&mut s, devices(shared).await).await,
        control::Request::Pair { storage_only, seconds, yes } => {
            pair_session(shared, &mut s, storage_only, seconds, yes).await
        }
        control::Request::PairDecision { .. } => {
            let failed: Result<answer::AddressAdded, Failure> =
                Err("no pairing is waiting for a decision".into());
            reply(&mut s, failed).await
        }
        control::Request::Sync { device, timeout_secs } => {
            let timeout = Duration::from_secs(timeout_secs.max(1));
            let result =
                match tokio::time::timeout(timeout, sync(shared, &device, Some(&mut s))).await {
                    Ok(result) => {
                        // What the agent's own work waits for may have come with this push.
                        if result.is_ok() {
                            let _ = shared.kick.try_send(protect::Wake::Changed);
                        }
                        result
                    }
                    Err(_) => {
                        let message = format!("{device} did not finish within {timeout_secs} s");
                        super::push::note_failure(shared, &device, &message);
                        Err(SyncFailure::Unreachable(message).into())
                    }
                };
            reply(&mut s, result).await
        }
        control::Request::AddAddress { device, addr } => {
            reply(&mut s, add_address(shared, &device, &addr).await).await
        }
        control::Request::Status { files } => reply(&mut s, status(shared, &files).await).await,
        control::Request::Audit { now } => reply(&mut s, audit_devices(shared, now).await).await,
        control::Request::Check { hashes, card } => {
            reply(&mut s, check(shared, &hashes, card.as_deref()).await).await
        }
        control::Request::Reload => {
            reply(&mut s, shared.reload().await.map_err(Failure::from)).await
        }
        control::Request::RemoveDevice { device } => {
            reply(&mut s, remove_device(shared, &device).await).await
        }
        control::Request::Fetch { blobs, into } => {
            let result = fetch_into(shared, &blobs, &into, &mut s).await;
            reply(&mut s, result).await
        }
    }
}

/// Sends the final line of an answer: the answer with `done`, or the failure.
async fn reply<T: Serialize>(s: &mut Session, result: Result<T, Failure>) -> io::Result<()> {
    match result {
        Ok(answer) => s.say(&answer::Done::new(answer)).await,
        Err(failure) => s.say(&failure.to_line()).await,
    }
}

pub(super) struct Failure {
    pub(super) kind: answer::FailureKind,
    pub(super) message: String,
    /// Why the other device refused, when it did.
    pub(super) code: Option<Refusal>,
}

impl Failure {
    /// The line that ends the request.
    fn to_line(&self) -> answer::Failure {
        answer::Failure {
            error: self.message.clone(),
            kind: Some(self.kind),
            code: Some(self.code.map(|c| c.as_str().to_owned())),
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure { kind: answer::FailureKind::Error, message, code: None }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure { kind: answer::FailureKind::Error, message: message.to_owned(), code: None }
    }
}

pub(super) enum SyncFailure {
    Unreachable(String),
    Refused(Refusal, String),
}

impl From<SyncFailure> for Failure {
    fn from(f: SyncFailure) -> Self {
        match f {
            SyncFailure::Unreachable(message) => {
                Failure { kind: answer::FailureKind::Unreachable, message, code: None }
            }
            SyncFailure::Refused(code, message) => {
                Failure { kind: answer::FailureKind::Refused, message, code: Some(code) }
            }
        }
    }
}

async fn devices(shared: &Shared) -> Result<answer::Devices, Failure> {
    let entries: Vec<Entry> = lock(&shared.roster).devices().into_iter().cloned().collect();
    // Every device is asked at once: one that is away costs its timeout once, not per device.
    let out = futures::future::join_all(entries.into_iter().map(|e| describe(shared, e))).await;
    Ok(answer::Devices { devices: out })
}

/// One device as `triad devices` shows it: online or not, its stores.
async fn describe(shared: &Shared, entry: Entry) -> answer::Device {
    let me = shared.home.device_id();
    let peer = triad_net::peer_id(entry.device);
    let this = entry.device == me;
    // The catalog holds no copies: it is not shown as a store.
    let stores: Vec<answer::DeviceStore> = shared
        .config()
        .data_stores()
        .map(|s| answer::DeviceStore {
            id: s.id.to_hex(),
            media: s.media.to_string(),
            free: free_bytes(&s.path, s.quota),
        })
        .collect();
    // Online: it answers now, at the connection there is or at a known address.
    let (connected, stores) = if this {
        (None, stores)
    } else {
        let ask = async {
            shared.node.connect(peer).await.ok()?;
            let asked = std::time::Instant::now();
            match request(shared, peer, &wire::Request::Hello).await {
                Ok(Response::Hello { stores, .. }) => {
                    let rtt = u64::try_from(asked.elapsed().as_millis()).unwrap_or(u64::MAX);
                    shared.traffic(entry.device, |t| t.rtt_ms = Some(rtt));
                    Some(stores)
                }
                _ => None,
            }
        };
        match tokio::time::timeout(Duration::from_secs(4), ask).await {
            Ok(Some(stores)) => (
                shared.node.connected(&peer),
                stores
                    .iter()
                    .map(|s| answer::DeviceStore {
                        id: s.id.to_hex(),
                        media: s.media.to_string(),
                        free: s.free,
                    })
                    .collect(),
            ),
            _ => (None, Vec::new()),
        }
    };
    let traffic = lock(&shared.traffic).get(&entry.device).cloned().unwrap_or_default();
    let relay = connected
        .as_ref()
        .and_then(triad_net::addr::relay_of)
        .and_then(|peer| triad_net::device_id(&peer))
        .map(|device| {
            lock(&shared.roster).device(device).map_or_else(|| device.to_hex(), |e| e.name.clone())
        });
    let book = lock(&shared.book);
    let known = book.get(entry.device);
    answer::Device {
        path: connected.as_ref().map(|a| triad_net::addr::path(a).to_owned()),
        relay,
        rtt_ms: traffic.rtt_ms.filter(|_| connected.is_some()),
        sent_bytes: traffic.sent,
        received_bytes: traffic.received,
        send_rate: traffic.send_rate,
        receive_rate: traffic.receive_rate,
        last_error: traffic.last_error.as_ref().map(|(e, _)| e.clone()),
        last_error_at: traffic.last_error.as_ref().map(|(_, at)| *at),
        online: Some(this || connected.is_some() || !stores.is_empty()),
        name: entry.name,
        site: entry.site,
        role: entry.role.into(),
        device: entry.device.to_hex(),
        this,
        last_seen: known.and_then(|p| p.last_seen),
        address: connected
            .map(|a| a.to_string())
            .or_else(|| known.and_then(|p| p.addrs.first().cloned())),
        stores,
    }
}

async fn remove_device(shared: &Arc<Shared>, name: &str) -> Result<answer::Removed, Failure> {
    let entry = shared.device_named(name)?;
    if entry.device == shared.home.device_id() {
        return Err("this is this device; remove it from another trusted device".into());
    }
    if shared.home.keys().is_err() {
        return Err("only a trusted device can remove devices".into());
    }
    // The removed device is told first, while it is still admitted: the gate drops its
    // connections as soon as the roster changes here, and then it could only guess why.
    let mut next = lock(&shared.roster).clone();
    next.remove_with_device(shared.home.device_key(), entry.device);
    let message = wire::Request::Roster { roster: next.encode() };
    let peer = triad_net::peer_id(entry.device);
    let told_removed = tokio::time::timeout(TELL_TIMEOUT, request(shared, peer, &message))
        .await
        .is_ok_and(|r| r.is_ok());
    // The same change the removed device was told of (the roster may have grown meanwhile).
    shared.update_roster(|roster| roster.merge(&next).map_err(|e| e.to_string()))?;
    let mut told = gossip(shared).await;
    if told_removed {
        told.insert(0, name.to_owned());
    }
    Ok(answer::Removed { device: name.to_owned(), told })
}

async fn add_address(
    shared: &Shared,
    name: &str,
    addr: &str,
) -> Result<answer::AddressAdded, Failure> {
    let entry = shared.device_named(name)?;
    let parsed: Multiaddr =
        addr.parse().map_err(|e| format!("{addr:?} is not a multiaddress: {e}"))?;
    shared
        .node
        .add_address(triad_net::peer_id(entry.device), parsed.clone())
        .await
        .map_err(|e| e.to_string())?;
    let mut book = lock(&shared.book);
    book.add(entry.device, addr);
    book.save(&shared.home_path).map_err(|e| e.to_string())?;
    Ok(answer::AddressAdded {})
}
