//! Pairing, the inviter's side: the `triad pair` command opens a window, and the first joiner
//! that names its code is asked about and admitted.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::AsyncWriteExt;

use tokio::sync::{mpsc, oneshot};
use triad_core::roster::{Entry, Role, Signer};
use triad_net::PeerId;
use triad_net::pair::{self, Secret};
use triad_proto::wire::{Joiner, Offer, PairRole, Welcome};

use super::gossip::gossip;
use super::socket::Session;
use super::{Shared, Window, error_chain, lock, protect};
use crate::control::{self, answer};

/// Serves one pairing attempt.
pub(super) async fn on_pairing(shared: Arc<Shared>, peer: PeerId, stream: triad_net::Stream) {
    invite(&shared, peer, stream).await;
}

async fn invite(shared: &Arc<Shared>, peer: PeerId, mut stream: triad_net::Stream) {
    // The first pairing stream claims the window: one try per code, whatever the try is.
    let (id, until, secrets, role, ask, ended) = {
        let mut window = lock(&shared.window);
        let Some(w) = window.as_mut().filter(|w| Instant::now() < w.until && !w.claimed) else {
            return;
        };
        w.claimed = true;
        (w.id, w.until, w.secrets.clone(), w.role, w.ask.clone(), w.ended.clone())
    };
    let identity = shared.home.identity();
    let offer = Offer { name: identity.name.clone(), site: identity.site.clone(), role };
    let me = shared.node.peer_id();
    let exchange =
        pair::invite(&mut stream, &secrets, me, peer, &offer, async |joiner: &Joiner| {
            let (tx, rx) = oneshot::channel();
            ask.send((joiner.clone(), tx)).await.ok()?;
            if !rx.await.unwrap_or(false) {
                return None;
            }
            admit(shared, peer, joiner, role).ok()
        });
    let result = match tokio::time::timeout_at(until.into(), exchange).await {
        Ok(result) => result,
        Err(_) => Err(pair::PairError::Refused("the code expired during the pairing".into())),
    };
    let _ = stream.close().await;
    if let Err(pair::PairError::WrongWindow(n)) = &result {
        // Another window's joiner (mDNS finds every inviter): nothing was revealed, so the
        // window stays open for its own joiner.
        tracing::info!(%peer, nameplate = n, "pairing attempt for another window");
        if let Some(w) = lock(&shared.window).as_mut().filter(|w| w.id == id) {
            w.claimed = false;
        }
        return;
    }
    // Single use: whatever happened, this window is spent.
    {
        let mut window = lock(&shared.window);
        if window.as_ref().is_some_and(|w| w.id == id) {
            *window = None;
            shared.node.admission().close_window();
        }
    }
    let outcome = result.map(|j| (j, role)).map_err(|e| match e {
        pair::PairError::WrongSecret => "a device tried a wrong code; the code is burnt".to_owned(),
        other => format!("{}; the code is burnt", error_chain(&other)),
    });
    let paired = outcome.is_ok();
    let _ = ended.send(outcome).await;
    if paired {
        // The other devices learn of the newcomer now if they are reachable, else at the next
        // sync (which pushes the roster first).
        let told = gossip(shared).await;
        tracing::info!(?told, "roster pushed after pairing");
    }
}

/// Puts the joiner on the roster and makes its welcome.
fn admit(
    shared: &Arc<Shared>,
    peer: PeerId,
    joiner: &Joiner,
    role: PairRole,
) -> Result<Welcome, String> {
    let device = triad_net::device_id(&peer).ok_or("the joiner's peer id is not an ed25519 key")?;
    let entry = Entry {
        device,
        name: joiner.name.clone(),
        site: joiner.site.clone(),
        role: match role {
            PairRole::Trusted => Role::Trusted,
            PairRole::StorageOnly => Role::StorageOnly,
        },
        signer: Signer::Device(shared.home.device_id()),
    };
    let vault_secret = match role {
        PairRole::Trusted => {
            Some(*shared.home.vault_secret().map_err(|e| e.to_string())?.as_bytes())
        }
        PairRole::StorageOnly => None,
    };
    shared.update_roster(|roster| {
        roster.admit_with_device(shared.home.device_key(), entry);
        Ok(true)
    })?;
    // A new device may be what the policy was waiting for.
    let _ = shared.kick.try_send(protect::Wake::Changed);
    let roster = lock(&shared.roster).clone();
    // Not its address: the joining process exits when the pairing is done, and its port with
    // it. The new device's agent tells its address when it starts (it dials this one).
    shared.remember(device, None);
    let me = shared.node.peer_id();
    let addresses = triad_net::addr::for_others(shared.node.listen_addrs())
        .into_iter()
        .map(|a| a.with(triad_net::node::p2p(me)).to_string())
        .collect();
    Ok(Welcome { roster: roster.encode(), vault_secret, addresses })
}

pub(super) async fn pair_session(
    shared: &Arc<Shared>,
    s: &mut Session,
    storage_only: bool,
    seconds: u64,
    yes: bool,
) -> io::Result<()> {
    let me_trusted = lock(&shared.roster)
        .device(shared.home.device_id())
        .is_some_and(|e| e.role == Role::Trusted);
    if !me_trusted || shared.home.keys().is_err() {
        let error = "only a trusted device can invite: this one is storage-only";
        return s.say(&answer::Failure::message(error)).await;
    }
    let mut random = [0u8; 24];
    if getrandom::fill(&mut random).is_err() {
        return s.say(&answer::Failure::message("no randomness from the system")).await;
    }
    let typed = Secret::typed(random[..4].try_into().expect("4 bytes"));
    let strong =
        Secret::strong(random[4..20].try_into().expect("16 bytes"), typed.nameplate + 1000);
    let (ask_tx, mut ask_rx) = mpsc::channel(1);
    let (ended_tx, mut ended_rx) = mpsc::channel(1);
    let role = if storage_only { PairRole::StorageOnly } else { PairRole::Trusted };
    let until = Instant::now() + Duration::from_secs(seconds.clamp(1, 3600));
    let id = u64::from_le_bytes(random[16..24].try_into().expect("8 bytes"));
    *lock(&shared.window) = Some(Window {
        id,
        claimed: false,
        secrets: vec![typed.clone(), strong.clone()],
        until,
        role,
        ask: ask_tx,
        ended: ended_tx,
    });
    shared.node.admission().open_window(until);
    let me = shared.node.peer_id();
    // Never an unspecified address, nor loopback when another host could use another one.
    let addrs = triad_net::addr::for_others(shared.node.listen_addrs());
    s.say(&answer::PairWindow {
        code: typed.code(),
        link: strong.link(me, &addrs),
        expires_in_secs: until.saturating_duration_since(Instant::now()).as_secs(),
        role: if storage_only { answer::Role::StorageOnly } else { answer::Role::Trusted },
    })
    .await?;
    let outcome = loop {
        tokio::select! {
            Some((joiner, reply)) = ask_rx.recv() => {
                let accept = if yes {
                    true
                } else {
                    let confirm = answer::PairEvent::Confirm {
                        name: joiner.name.clone(),
                        site: joiner.site.clone(),
                    };
                    s.say(&confirm).await?;
                    matches!(s.read().await, Ok(Some(control::Request::PairDecision { accept: true })))
                };
                let _ = reply.send(accept);
            }
            ended = ended_rx.recv() => {
                break ended.unwrap_or_else(|| Err("pairing ended".to_owned()));
            }
            () = tokio::time::sleep_until(until.into()) => {
                break Err("the pairing code expired".to_owned());
            }
        }
    };
    {
        let mut window = lock(&shared.window);
        if window.as_ref().is_some_and(|w| w.id == id) {
            *window = None;
            shared.node.admission().close_window();
        }
    }
    match outcome {
        Ok((joiner, role)) => {
            let role = match role {
                PairRole::Trusted => answer::Role::Trusted,
                PairRole::StorageOnly => answer::Role::StorageOnly,
            };
            s.say(&answer::Done::new(answer::Paired { name: joiner.name, site: joiner.site, role }))
                .await
        }
        Err(message) => s.say(&answer::Failure::message(message)).await,
    }
}
