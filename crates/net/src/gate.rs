//! Who may connect: devices on the roster; and a few unknown peers a minute, for 30 seconds,
//! for the recovery proof alone, or, while a pairing window is open, the pairing (the first to
//! name the window claims it). Every other connection is denied as it is established. The
//! protocols check [`Admission::is_member`] (and the pairing and recovery handlers their own
//! condition), so an admitted unknown peer gets nothing else.
//!
//! libp2p's pre-shared-key private networks do not work over QUIC, so this is an allow-list
//! checked by a behaviour of its own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// How long an unknown peer may stay connected to run the recovery proof.
pub const PROBATION: Duration = Duration::from_secs(30);
/// How many unknown peers may be admitted on probation per [`RATE_WINDOW`].
pub const PROBATION_RATE: usize = 10;
/// The window of the probation rate limit.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// The allow-list, shared by the gate and the protocols.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    members: HashSet<PeerId>,
    /// Until when a pairing window is open.
    window: Option<Instant>,
    /// Whether this device may connect out to peers not on the roster (while it joins).
    joining: bool,
    /// Devices removed from the vault: never admitted again, not even for a proof.
    banned: HashSet<PeerId>,
    /// Unknown peers admitted for the recovery proof alone, until when.
    probation: HashMap<PeerId, Instant>,
    /// When unknown peers were last admitted on probation (the rate limit).
    recent: VecDeque<Instant>,
    /// Peers to disconnect (removed from the roster).
    evict: VecDeque<PeerId>,
    waker: Option<Waker>,
}

/// Why a connection was denied.
#[derive(Debug, thiserror::Error)]
#[error("peer {0} is not a device of this vault")]
pub struct NotAMember(pub PeerId);

impl Admission {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the members; connected peers that are no longer members are disconnected.
    pub fn set_members(&self, members: impl IntoIterator<Item = PeerId>) {
        let mut inner = self.lock();
        let members: HashSet<PeerId> = members.into_iter().collect();
        let gone: Vec<PeerId> = inner.members.difference(&members).copied().collect();
        inner.evict.extend(gone);
        inner.members = members;
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
    }

    /// Sets the devices removed from the vault; their connections are dropped.
    pub fn set_banned(&self, banned: impl IntoIterator<Item = PeerId>) {
        let mut inner = self.lock();
        inner.banned = banned.into_iter().collect();
        let drop: Vec<PeerId> = inner.banned.iter().copied().collect();
        inner.evict.extend(drop);
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
    }

    /// Whether `peer` is a device of the vault.
    pub fn is_member(&self, peer: &PeerId) -> bool {
        self.lock().members.contains(peer)
    }

    /// Whether `peer` is an unknown peer admitted to run the recovery proof, still in time.
    pub fn on_probation(&self, peer: &PeerId) -> bool {
        self.lock().probation.get(peer).is_some_and(|until| Instant::now() < *until)
    }

    /// Ends a peer's probation now and disconnects it (a failed recovery proof).
    pub fn reject(&self, peer: PeerId) {
        let mut inner = self.lock();
        inner.probation.remove(&peer);
        if !inner.members.contains(&peer) {
            inner.evict.push_back(peer);
        }
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
    }

    /// Disconnects unknown peers whose probation ran out; call now and then.
    pub fn expire_probation(&self) {
        let mut inner = self.lock();
        let now = Instant::now();
        let expired: Vec<PeerId> =
            inner.probation.iter().filter(|(_, until)| **until <= now).map(|(p, _)| *p).collect();
        for peer in expired {
            inner.probation.remove(&peer);
            if !inner.members.contains(&peer) {
                inner.evict.push_back(peer);
            }
        }
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
    }

    /// Opens a pairing window until `until`: unknown peers on probation may run the pairing.
    pub fn open_window(&self, until: Instant) {
        self.lock().window = Some(until);
    }

    /// Closes the pairing window.
    pub fn close_window(&self) {
        self.lock().window = None;
    }

    /// Lets this device connect out to peers not on the roster: it is joining a vault.
    pub fn set_joining(&self, joining: bool) {
        self.lock().joining = joining;
    }

    fn admit_outbound(&self, peer: PeerId) -> Result<(), ConnectionDenied> {
        let inner = self.lock();
        if inner.joining || inner.members.contains(&peer) {
            return Ok(());
        }
        drop(inner);
        tracing::debug!(%peer, "outbound connection dropped: not on the roster");
        Err(ConnectionDenied::new(NotAMember(peer)))
    }

    /// Whether `peer` may run the pairing protocol: a window is open and the peer is an unknown
    /// peer admitted on probation. (Which of them pairs is decided by the pairing itself: the
    /// first one to name the window claims it.)
    pub fn is_pairing_peer(&self, peer: &PeerId) -> bool {
        let inner = self.lock();
        let now = Instant::now();
        inner.window.is_some_and(|until| now < until)
            && inner.probation.get(peer).is_some_and(|until| now < *until)
    }

    fn admit(&self, peer: PeerId) -> Result<(), ConnectionDenied> {
        let mut inner = self.lock();
        if inner.members.contains(&peer) {
            return Ok(());
        }
        if inner.banned.contains(&peer) {
            tracing::debug!(%peer, "connection denied: removed from the vault");
            return Err(ConnectionDenied::new(NotAMember(peer)));
        }
        // Otherwise an unknown peer may run the recovery proof (or, in a pairing window, the
        // pairing) alone, a few per minute, for a short while.
        let now = Instant::now();
        while inner.recent.front().is_some_and(|t| now.duration_since(*t) > RATE_WINDOW) {
            inner.recent.pop_front();
        }
        if inner.probation.get(&peer).is_some_and(|until| now < *until) {
            return Ok(());
        }
        if inner.recent.len() < PROBATION_RATE {
            inner.recent.push_back(now);
            inner.probation.insert(peer, now + PROBATION);
            tracing::debug!(%peer, "unknown peer admitted for the recovery proof only");
            return Ok(());
        }
        tracing::debug!(%peer, "connection denied: not on the roster");
        Err(ConnectionDenied::new(NotAMember(peer)))
    }
}

/// The behaviour that applies an [`Admission`] to every connection.
#[derive(Debug)]
pub struct Gate {
    admission: Admission,
}

impl Gate {
    /// A gate applying `admission`.
    pub fn new(admission: Admission) -> Self {
        Self { admission }
    }
}

impl NetworkBehaviour for Gate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admission.admit(peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admission.admit_outbound(peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        let mut inner = self.admission.lock();
        if let Some(peer) = inner.evict.pop_front() {
            return Poll::Ready(ToSwarm::CloseConnection {
                peer_id: peer,
                connection: CloseConnection::All,
            });
        }
        inner.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_pass_strangers_wait_their_turn_and_removed_devices_never_pass() {
        let admission = Admission::default();
        let (member, removed) = (PeerId::random(), PeerId::random());
        admission.set_members([member]);
        admission.set_banned([removed]);
        assert!(admission.admit(member).is_ok());
        assert!(admission.admit(removed).is_err(), "removed, even for a proof");
        admission.open_window(Instant::now() + Duration::from_secs(60));
        assert!(admission.admit(removed).is_err(), "removed, even in a pairing window");
        let pairing = PeerId::random();
        assert!(admission.admit(pairing).is_ok(), "an unknown peer, on probation");
        assert!(admission.is_pairing_peer(&pairing));
        admission.close_window();
        assert!(!admission.is_pairing_peer(&pairing), "no window, no pairing");
        // Outside a window, a few strangers a minute, on probation.
        let admitted =
            (0..PROBATION_RATE + 3).filter(|_| admission.admit(PeerId::random()).is_ok()).count();
        assert_eq!(admitted, PROBATION_RATE - 1, "the pairing peer counted too");
        assert!(!admission.is_member(&pairing));
    }
}
