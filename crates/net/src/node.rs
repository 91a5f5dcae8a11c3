//! The libp2p node: QUIC first, TCP with noise and yamux where UDP is blocked, the roster gate,
//! raw streams for every triad protocol, identify, ping and (optionally) mDNS.
//!
//! The swarm runs on its own task; [`Node`] is the handle the agent uses: it dials, learns
//! addresses, and opens and accepts streams through [`libp2p_stream::Control`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::identity::Keypair;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, autonat, dcutr, identify, mdns, noise, ping, relay, tcp,
    upnp, yamux,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use libp2p::multiaddr::Protocol;
use triad_core::DeviceId;

use crate::gate::{Admission, Gate};

/// How long opening a stream on an existing connection may take before the connection is
/// replaced.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long QUIC keeps a connection whose peer says nothing (libp2p-quic's default idle
/// timeout; keep-alives every 3 s keep a live one open).
const QUIC_IDLE: Duration = Duration::from_secs(10);
/// Arrivals a slow receiver may fall behind by before it is told it lagged.
const ARRIVALS_QUEUED: usize = 64;

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Addresses to listen on (`/ip4/0.0.0.0/udp/0/quic-v1` picks a free port).
    pub listen: Vec<Multiaddr>,
    /// Whether to find peers on the LAN by mDNS.
    pub mdns: bool,
    /// Whether to relay connections between devices that cannot reach each other (circuit
    /// relay v2). The gate admits only roster devices, so only they can use it.
    pub relay: bool,
    /// Whether to ask the home router for a port mapping (UPnP IGD).
    pub upnp: bool,
}

impl NodeConfig {
    /// A node listening on `listen`, with mDNS as given, serving no relay and mapping no port:
    /// a short-lived process (joining, fetching) needs neither.
    pub fn new(listen: Vec<Multiaddr>, mdns: bool) -> NodeConfig {
        NodeConfig { listen, mdns, relay: false, upnp: false }
    }
}

/// How long a relayed circuit may last: as long as libp2p allows, so that a relay carries a
/// whole transfer when no direct path can be had.
const CIRCUIT_DURATION: Duration = Duration::from_secs(u32::MAX as u64);
/// How often the slots at relays are checked, and one lost asked for again.
const SLOTS_CHECK: Duration = Duration::from_secs(15);

/// The node could not start, or an operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The transport could not be built or could not listen.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A dial failed.
    #[error("cannot reach {target}: {reason}")]
    Dial {
        /// The address or peer.
        target: String,
        /// Why.
        reason: String,
    },
    /// The peer closed the connection as soon as it was made: it does not admit this device
    /// (not on its roster, removed from it, or no pairing window open there).
    #[error(
        "{target} closed the connection at once: it does not admit this device (this device \
         was removed from the vault, or is not paired with it)"
    )]
    Closed {
        /// The peer.
        target: String,
    },
    /// The peer is there but does not serve the protocol (a `triad` command that holds a
    /// device's identity, such as `join`, rather than its agent; or another version).
    #[error("{target} does not serve {protocol} (not its agent, or another version of triad)")]
    Unsupported {
        /// The peer.
        target: String,
        /// The protocol.
        protocol: String,
    },
    /// The node's task has stopped.
    #[error("the network node has stopped")]
    Stopped,
    /// The transport could not be built.
    #[error("cannot start the network: {0}")]
    Setup(String),
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    gate: Gate,
    stream: libp2p_stream::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    relay_client: relay::client::Behaviour,
    relay: Toggle<relay::Behaviour>,
    dcutr: dcutr::Behaviour,
    autonat_client: autonat::v2::client::Behaviour,
    autonat_server: autonat::v2::server::Behaviour,
    upnp: Toggle<upnp::tokio::Behaviour>,
}

/// The relay service's limits: any roster device may hold a reservation, and a circuit carries
/// a whole transfer (no byte cap, the longest duration libp2p allows), because it is used only
/// between devices that have no direct path.
fn relay_config() -> relay::Config {
    relay::Config {
        max_reservations: 256,
        max_reservations_per_peer: 4,
        reservation_duration: Duration::from_secs(60 * 60),
        max_circuits: 64,
        max_circuits_per_peer: 16,
        max_circuit_duration: CIRCUIT_DURATION,
        max_circuit_bytes: 0,
        ..relay::Config::default()
    }
}

enum Command {
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, NetError>>,
    },
    DialPeer {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<PeerId, NetError>>,
    },
    AddAddress {
        peer: PeerId,
        addr: Multiaddr,
    },
    CloseAll {
        reply: oneshot::Sender<()>,
    },
    Reconnect {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<PeerId, NetError>>,
    },
}

/// Known addresses and connection state, shared with the handle.
#[derive(Debug, Default)]
struct Book {
    /// Addresses per peer: learned by identify, mDNS, pairing or by hand.
    addresses: HashMap<PeerId, Vec<Multiaddr>>,
    /// Currently connected peers, with the remote address.
    connected: HashMap<PeerId, Multiaddr>,
}

/// A handle on a running node.
#[derive(Clone)]
pub struct Node {
    peer_id: PeerId,
    control: libp2p_stream::Control,
    admission: Admission,
    commands: mpsc::Sender<Command>,
    listening: watch::Receiver<Vec<Multiaddr>>,
    discovered: watch::Receiver<Vec<PeerId>>,
    arrivals: broadcast::Sender<PeerId>,
    book: Arc<Mutex<Book>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("peer_id", &self.peer_id).finish()
    }
}

/// The libp2p keypair of a device: its ed25519 device key.
pub fn keypair(device_secret: &[u8; 32]) -> Keypair {
    let mut bytes = *device_secret;
    Keypair::ed25519_from_bytes(&mut bytes).expect("32 bytes are an ed25519 secret key")
}

/// The peer id of a device.
pub fn peer_id(device: DeviceId) -> PeerId {
    let public = libp2p::identity::ed25519::PublicKey::try_from_bytes(device.as_bytes())
        .map(libp2p::identity::PublicKey::from);
    match public {
        Ok(public) => public.to_peer_id(),
        // Not a valid curve point: no connection can ever prove it, so no peer matches.
        Err(_) => PeerId::from_multihash(libp2p::multihash::Multihash::default())
            .unwrap_or_else(|_| PeerId::random()),
    }
}

/// The device id of a peer, if its id embeds an ed25519 key (as every triad peer's does).
pub fn device_id(peer: &PeerId) -> Option<DeviceId> {
    let multihash = peer.as_ref();
    if multihash.code() != 0 {
        return None;
    }
    let public = libp2p::identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    let ed = public.try_into_ed25519().ok()?;
    Some(DeviceId::from_bytes(ed.to_bytes()))
}

impl Node {
    /// Starts a node with the device's `keypair`, listening on `config.listen`; returns once
    /// every listener is bound.
    pub async fn start(keypair: Keypair, config: NodeConfig) -> Result<Node, NetError> {
        let admission = Admission::default();
        let gate_admission = admission.clone();
        let use_mdns = config.mdns;
        let (serve_relay, use_upnp) = (config.relay, config.upnp);
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| NetError::Setup(e.to_string()))?
            .with_quic_config(|mut quic| {
                // Windows above the bandwidth-delay product of a fast link far away (1 Gbit/s
                // at 80 ms is 10 MB), and no more: what the peer may send ahead is what the
                // receiver may have to hold, and a Pi has 256 MiB for everything.
                quic.max_stream_data = 12 * 1024 * 1024;
                quic.max_connection_data = 16 * 1024 * 1024;
                // A keep-alive well inside the idle timeout (10 s, libp2p's default, so that a
                // peer that vanished is noticed soon), so that a connection waiting on a busy
                // peer does not time out.
                quic.keep_alive_interval = Duration::from_secs(3);
                quic
            })
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| NetError::Setup(e.to_string()))?
            .with_behaviour(|key, relay_client| {
                let peer = key.public().to_peer_id();
                let mdns = if use_mdns {
                    Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer)?)
                } else {
                    None
                };
                Ok(Behaviour {
                    gate: Gate::new(gate_admission),
                    stream: libp2p_stream::Behaviour::new(),
                    identify: identify::Behaviour::new(identify::Config::new(
                        "/triad/id/1".into(),
                        key.public(),
                    )),
                    ping: ping::Behaviour::default(),
                    mdns: Toggle::from(mdns),
                    relay_client,
                    relay: Toggle::from(serve_relay.then(|| {
                        let mut relay = relay::Behaviour::new(peer, relay_config());
                        // Served whether or not an address of this device is confirmed
                        // reachable: only the devices that reach it ask.
                        relay.set_status(Some(relay::Status::Enable));
                        relay
                    })),
                    dcutr: dcutr::Behaviour::new(peer),
                    autonat_client: autonat::v2::client::Behaviour::default(),
                    autonat_server: autonat::v2::server::Behaviour::default(),
                    upnp: Toggle::from(use_upnp.then(upnp::tokio::Behaviour::default)),
                })
            })
            .map_err(|e| NetError::Setup(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let peer_id = *swarm.local_peer_id();
        let mut listeners = Vec::new();
        for addr in &config.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen { addr: addr.clone(), reason: error_chain(&e) })?;
            listeners.push((id, addr.clone()));
        }
        // Wait until every listener reported an address (or failed).
        let mut bound: Vec<Multiaddr> = Vec::new();
        let mut pending: Vec<_> = listeners.iter().map(|(id, _)| *id).collect();
        while !pending.is_empty() {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { listener_id, address } => {
                    pending.retain(|id| *id != listener_id);
                    bound.push(address);
                }
                SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                    let addr = listeners
                        .iter()
                        .find(|(id, _)| *id == listener_id)
                        .map(|(_, a)| a.clone())
                        .unwrap_or_else(Multiaddr::empty);
                    let reason = match reason {
                        Ok(()) => "closed".to_owned(),
                        Err(e) => error_chain(&e),
                    };
                    return Err(NetError::Listen { addr, reason });
                }
                SwarmEvent::ListenerError { error, .. } => {
                    return Err(NetError::Setup(error_chain(&error)));
                }
                _ => {}
            }
        }
        // The addresses taken above never reach the loop below: a relay's public ones are its
        // external addresses from the start, whichever interface reported first.
        if serve_relay {
            for addr in bound.iter().filter(|a| public(a)) {
                swarm.add_external_address(addr.clone());
            }
        }
        let control = swarm.behaviour().stream.new_control();
        let (commands, rx) = mpsc::channel(64);
        let (listening_tx, listening) = watch::channel(bound);
        let (discovered_tx, discovered) = watch::channel(Vec::new());
        let book = Arc::new(Mutex::new(Book::default()));
        let (arrivals, _) = broadcast::channel(ARRIVALS_QUEUED);
        tokio::spawn(run(swarm, rx, listening_tx, discovered_tx, arrivals.clone(), book.clone()));
        Ok(Node { peer_id, control, admission, commands, listening, discovered, arrivals, book })
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The allow-list.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// A handle to open and accept streams.
    pub fn control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// Accepts inbound streams of `protocol`.
    pub fn accept(&self, protocol: &'static str) -> libp2p_stream::IncomingStreams {
        self.control
            .clone()
            .accept(StreamProtocol::new(protocol))
            .expect("each protocol is accepted once")
    }

    /// Connects to `peer` at its known addresses, unless it is connected.
    pub async fn connect(&self, peer: PeerId) -> Result<(), NetError> {
        if self.connected(&peer).is_some() {
            return Ok(());
        }
        let addrs = self.addresses(&peer);
        if addrs.is_empty() {
            return Err(NetError::Dial {
                target: peer.to_string(),
                reason: "no known address (give one with `triad devices addr`)".into(),
            });
        }
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::DialPeer { peer, addrs, reply })
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)?.map(|_| ())
    }

    /// Closes every connection and waits (up to two seconds) until the peers were told, so
    /// that they do not keep a connection to a process that is about to exit.
    pub async fn close_all(&self) {
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::CloseAll { reply }).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }

    /// Opens a stream of `protocol` to `peer`, connecting first if needed. A connection that
    /// turns out dead (the peer restarted) is replaced once.
    pub async fn open(
        &self,
        peer: PeerId,
        protocol: &'static str,
    ) -> Result<libp2p::Stream, NetError> {
        match self.open_attempt(peer, protocol).await {
            // Another task replaced the connection at the same moment, which aborts the dials
            // under way: once more, on the connection it made.
            Err(NetError::Dial { reason, .. }) if reason.contains("aborted") => {
                tracing::debug!(%peer, "dial aborted by a reconnection; opening again");
                self.open_attempt(peer, protocol).await
            }
            // The addresses known were stale (a new device's join process, an agent restarted
            // on another port), but the peer reached this node while the dial waited: once
            // more, on the connection it made.
            Err(failed @ NetError::Dial { .. }) if self.connected(&peer).is_some() => {
                tracing::debug!(%peer, error = %failed, "dial failed but the peer connected; opening again");
                self.open_attempt(peer, protocol).await
            }
            other => other,
        }
    }

    async fn open_attempt(
        &self,
        peer: PeerId,
        protocol: &'static str,
    ) -> Result<libp2p::Stream, NetError> {
        self.connect(peer).await?;
        // On a live connection a stream opens in a round trip or two; one that does not open
        // in a few seconds is on a connection the peer has left (without a word, when its
        // process exited): do not wait for the idle timeout to say so.
        let no_answer = || NetError::Dial { target: peer.to_string(), reason: "no answer".into() };
        let first = match tokio::time::timeout(OPEN_TIMEOUT, self.open_once(peer, protocol)).await {
            Ok(result) => result,
            // No answer yet: the peer has left, or its answer waits behind the data it sends
            // (a push filling a slow uplink). QUIC closes a connection whose peer has left
            // within its idle timeout; wait that long once more before cutting connections
            // that may carry a push.
            Err(_) => tokio::time::timeout(QUIC_IDLE, self.open_once(peer, protocol))
                .await
                .unwrap_or_else(|_| Err(no_answer())),
        };
        match first {
            Ok(stream) => Ok(stream),
            // A live connection to a peer without the protocol: closing it would cut whatever
            // it serves (a pairing in progress); connecting again would change nothing.
            Err(unsupported @ NetError::Unsupported { .. }) => Err(unsupported),
            Err(first) => {
                // The connection the stream tried is gone (the process that had the peer's
                // identity exited: a finished `join`, a restarted agent), but another one is
                // live: open there, and leave it and the pushes it carries alone.
                let answered =
                    !matches!(&first, NetError::Dial { reason, .. } if reason == "no answer");
                if answered && self.connected(&peer).is_some() {
                    tracing::debug!(%peer, error = %first, "stream failed; opening on another connection");
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(OPEN_TIMEOUT, self.open_once(peer, protocol)).await
                    {
                        return Ok(stream);
                    }
                }
                if self.addresses(&peer).is_empty() {
                    return Err(first);
                }
                // The connection is dead (the peer restarted, or the process that had its
                // identity exited): close it, so that the stream cannot land on it again.
                tracing::debug!(%peer, error = %first, "stream failed; connecting again");
                let (reply, rx) = oneshot::channel();
                let addrs = self.addresses(&peer);
                self.commands
                    .send(Command::Reconnect { peer, addrs, reply })
                    .await
                    .map_err(|_| NetError::Stopped)?;
                rx.await.map_err(|_| NetError::Stopped)??;
                self.open_once(peer, protocol).await
            }
        }
    }

    async fn open_once(
        &self,
        peer: PeerId,
        protocol: &'static str,
    ) -> Result<libp2p::Stream, NetError> {
        self.control.clone().open_stream(peer, StreamProtocol::new(protocol)).await.map_err(|e| {
            if let libp2p_stream::OpenStreamError::UnsupportedProtocol(_) = e {
                return NetError::Unsupported {
                    target: peer.to_string(),
                    protocol: protocol.to_owned(),
                };
            }
            // The connection ended before the stream opened (its handler is gone): the
            // peer closed it at once.
            let text = e.to_string();
            if text.contains("canceled") || text.contains("receiver is gone") {
                NetError::Closed { target: peer.to_string() }
            } else {
                NetError::Dial { target: peer.to_string(), reason: error_chain(&e) }
            }
        })
    }

    /// The addresses the node can be reached at: those it listens on, its slots at relays, and
    /// external addresses found reachable.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listening.borrow().clone()
    }

    /// [`Node::listen_addrs`] as they change (a relay slot gained or lost, an interface that
    /// came up).
    pub fn listen_addrs_changes(&self) -> watch::Receiver<Vec<Multiaddr>> {
        self.listening.clone()
    }

    /// Connects to `addr` and returns the peer there.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NetError> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Dial { addr, reply }).await.map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// Remembers an address of `peer` (from pairing, or given by hand).
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), NetError> {
        {
            let mut book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
            let list = book.addresses.entry(peer).or_default();
            if !list.contains(&addr) {
                list.push(addr.clone());
            }
        }
        self.commands.send(Command::AddAddress { peer, addr }).await.map_err(|_| NetError::Stopped)
    }

    /// Each peer that becomes connected (its first connection, dialled or accepted), as it
    /// happens. A receiver that falls behind by more than a few dozen is told it lagged.
    pub fn arrivals(&self) -> broadcast::Receiver<PeerId> {
        self.arrivals.subscribe()
    }

    /// Peers found by mDNS, as they are found.
    pub fn discovered(&self) -> watch::Receiver<Vec<PeerId>> {
        self.discovered.clone()
    }

    /// Known addresses of `peer`.
    pub fn addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
        book.addresses.get(peer).cloned().unwrap_or_default()
    }

    /// The address `peer` is connected from, if it is connected.
    pub fn connected(&self, peer: &PeerId) -> Option<Multiaddr> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner).connected.get(peer).cloned()
    }
}

async fn run(
    mut swarm: libp2p::Swarm<Behaviour>,
    mut commands: mpsc::Receiver<Command>,
    listening: watch::Sender<Vec<Multiaddr>>,
    discovered: watch::Sender<Vec<PeerId>>,
    arrivals: broadcast::Sender<PeerId>,
    book: Arc<Mutex<Book>>,
) {
    let mut dials: Dials = HashMap::new();
    let mut closing: Option<oneshot::Sender<()>> = None;
    // Every open connection of each peer: where it goes, and whether through a relay.
    let mut conns: HashMap<PeerId, Vec<(ConnectionId, Multiaddr, bool)>> = HashMap::new();
    // Relays on the internet (they say they listen at the address this node reached them at),
    // and the slot this node holds (or asked for) at each.
    let mut relays: HashMap<PeerId, Multiaddr> = HashMap::new();
    let mut reservations: HashMap<PeerId, libp2p::core::transport::ListenerId> = HashMap::new();
    let serving_relay = swarm.behaviour().relay.is_enabled();
    // A slot lost (the relay restarted, the connection dropped) is asked for again.
    let mut slots_check = tokio::time::interval(SLOTS_CHECK);
    slots_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let remember = |peer: PeerId, addr: Multiaddr| {
        let mut book = book.lock().unwrap_or_else(PoisonError::into_inner);
        let list = book.addresses.entry(peer).or_default();
        if !list.contains(&addr) {
            list.push(addr);
        }
    };
    // The connection `book.connected` shows for `peer`: a direct one over a relayed one.
    let show = |peer: PeerId, list: Option<&Vec<(ConnectionId, Multiaddr, bool)>>| {
        let best = list.and_then(|list| list.iter().find(|c| !c.2).or(list.first()));
        let mut book = book.lock().unwrap_or_else(PoisonError::into_inner);
        match best {
            Some((_, addr, _)) => book.connected.insert(peer, addr.clone()),
            None => book.connected.remove(&peer),
        };
    };
    let drop_listening = |gone: &dyn Fn(&Multiaddr) -> bool| {
        listening.send_if_modified(|list| {
            let before = list.len();
            list.retain(|a| !gone(a));
            list.len() != before
        });
    };
    let add_listening = |address: Multiaddr| {
        listening.send_if_modified(|list| {
            let new = !list.contains(&address);
            if new {
                list.push(address);
            }
            new
        });
    };
    loop {
        tokio::select! {
            _ = slots_check.tick() => {
                for (relay, at) in &relays {
                    let direct = conns.get(relay).is_some_and(|list| list.iter().any(|c| !c.2));
                    if direct && !reservations.contains_key(relay) {
                        reserve(&mut swarm, &mut reservations, *relay, at);
                    }
                }
            }
            command = commands.recv() => match command {
                None => return,
                Some(Command::Dial { addr, reply }) => {
                    let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
                    dial(&mut swarm, &mut dials, opts, addr.to_string(), reply);
                }
                Some(Command::DialPeer { peer, addrs, reply }) => {
                    let opts = DialOpts::peer_id(peer)
                        .addresses(addrs)
                        .condition(libp2p::swarm::dial_opts::PeerCondition::Always)
                        .build();
                    dial(&mut swarm, &mut dials, opts, peer.to_string(), reply);
                }
                Some(Command::Reconnect { peer, addrs, reply }) => {
                    let _ = swarm.disconnect_peer_id(peer);
                    book.lock().unwrap_or_else(PoisonError::into_inner).connected.remove(&peer);
                    let opts = DialOpts::peer_id(peer)
                        .addresses(addrs)
                        .condition(libp2p::swarm::dial_opts::PeerCondition::Always)
                        .build();
                    dial(&mut swarm, &mut dials, opts, peer.to_string(), reply);
                }
                Some(Command::CloseAll { reply }) => {
                    let peers: Vec<PeerId> = swarm.connected_peers().copied().collect();
                    if peers.is_empty() {
                        let _ = reply.send(());
                    } else {
                        for peer in peers {
                            let _ = swarm.disconnect_peer_id(peer);
                        }
                        closing = Some(reply);
                    }
                }
                Some(Command::AddAddress { peer, addr }) => {
                    swarm.add_peer_address(peer, addr.clone());
                    remember(peer, addr);
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    if crate::addr::is_relayed(&address) {
                        // A slot's address is worth telling only through a relay on the
                        // internet (a relay also lists its LAN addresses and circuits).
                        if !crate::addr::worth_advertising(&address) {
                            continue;
                        }
                        tracing::info!(%address, "reachable through a relay");
                    } else if serving_relay && public(&address) {
                        // A relay tells the devices that take a slot where it is.
                        swarm.add_external_address(address.clone());
                    }
                    add_listening(address);
                }
                SwarmEvent::ExpiredListenAddr { address, .. } => {
                    swarm.remove_external_address(&address);
                    drop_listening(&|a| *a == address);
                }
                SwarmEvent::ListenerClosed { listener_id, addresses, reason } => {
                    drop_listening(&|a| addresses.contains(a));
                    reservations.retain(|relay, id| {
                        let closed = *id == listener_id;
                        if closed {
                            tracing::info!(%relay, ?reason, "the slot at a relay is gone");
                        }
                        !closed
                    });
                }
                SwarmEvent::ExternalAddrConfirmed { address }
                    if !crate::addr::is_relayed(&address) && public(&address) =>
                {
                    // Found reachable (by an AutoNAT test, or a router's port mapping):
                    // others are told of it in the address record.
                    tracing::info!(%address, "reachable at an external address");
                    add_listening(address);
                }
                SwarmEvent::ExternalAddrExpired { address }
                    if !swarm.listeners().any(|a| *a == address) =>
                {
                    drop_listening(&|a| *a == address);
                }
                SwarmEvent::ConnectionEstablished {
                    peer_id, connection_id, endpoint, num_established, ..
                } => {
                    let relayed = endpoint.is_relayed();
                    let remote = match &endpoint {
                        ConnectedPoint::Dialer { address, .. } => address.clone(),
                        // A connection through a relay shows only the peer as where it came
                        // from; the circuit it came in by is this node's slot at the relay.
                        ConnectedPoint::Listener { local_addr, .. } if relayed => {
                            without_peer(local_addr).with(Protocol::P2p(peer_id))
                        }
                        ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
                    };
                    tracing::debug!(peer = %peer_id, %remote, relayed, "connected");
                    let list = conns.entry(peer_id).or_default();
                    // Once a direct path exists, data moves there: a relayed connection would
                    // take half the streams (libp2p picks a connection at random).
                    if relayed {
                        if list.iter().any(|c| !c.2) {
                            swarm.close_connection(connection_id);
                        }
                    } else {
                        for (id, _, was_relayed) in list.iter() {
                            if *was_relayed {
                                tracing::info!(peer = %peer_id, %remote, "a direct path replaces the relayed one");
                                swarm.close_connection(*id);
                            }
                        }
                    }
                    list.push((connection_id, remote, relayed));
                    show(peer_id, conns.get(&peer_id));
                    if num_established.get() == 1 {
                        // Nobody listening is fine: arrivals are news, not a duty.
                        let _ = arrivals.send(peer_id);
                    }
                    if let Some(reply) = dials.remove(&connection_id) {
                        let _ = reply.send(Ok(peer_id));
                    }
                }
                SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established, .. } => {
                    if let Some(list) = conns.get_mut(&peer_id) {
                        list.retain(|c| c.0 != connection_id);
                        if list.is_empty() {
                            conns.remove(&peer_id);
                        }
                    }
                    show(peer_id, conns.get(&peer_id));
                    if num_established == 0
                        && swarm.connected_peers().next().is_none()
                        && let Some(reply) = closing.take()
                    {
                        let _ = reply.send(());
                    }
                }
                SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                    tracing::debug!(peer = ?peer_id, %error, "dial failed");
                    if let Some(reply) = dials.remove(&connection_id) {
                        let target = peer_id.map_or_else(|| "peer".to_owned(), |p| p.to_string());
                        let _ = reply.send(Err(NetError::Dial { target, reason: error.to_string() }));
                    }
                }
                SwarmEvent::IncomingConnectionError { send_back_addr, error, .. } => {
                    tracing::debug!(remote = %send_back_addr, %error, "incoming connection refused");
                }
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                    // Only listen addresses a peer reports about itself; kept as hints.
                    for addr in &info.listen_addrs {
                        if is_dialable(addr) {
                            swarm.add_peer_address(peer_id, addr.clone());
                            remember(peer_id, addr.clone());
                        }
                    }
                    // A relay on the internet (it says it is reachable at the address this node
                    // reached it at, which a device behind a NAT cannot say): hold a slot there,
                    // so that devices that cannot reach this one directly reach it through it.
                    if info.protocols.contains(&relay::HOP_PROTOCOL_NAME) {
                        let theirs: Vec<Multiaddr> = info.listen_addrs.iter().map(without_peer).collect();
                        let at = conns.get(&peer_id).and_then(|list| {
                            list.iter()
                                .filter(|c| !c.2)
                                .map(|c| without_peer(&c.1))
                                .find(|a| public(a) && theirs.contains(a))
                        });
                        if let Some(at) = at {
                            relays.insert(peer_id, at.clone());
                            if !reservations.contains_key(&peer_id) {
                                reserve(&mut swarm, &mut reservations, peer_id, &at);
                            }
                        }
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                    for (peer, addr) in found {
                        tracing::debug!(%peer, %addr, "found on the LAN");
                        swarm.add_peer_address(peer, addr.clone());
                        remember(peer, addr);
                        discovered.send_if_modified(|list| {
                            let new = !list.contains(&peer);
                            if new {
                                list.push(peer);
                            }
                            new
                        });
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::RelayClient(event)) => {
                    tracing::debug!(?event, "relay client");
                }
                SwarmEvent::Behaviour(BehaviourEvent::Relay(event)) => {
                    tracing::debug!(?event, "relay service");
                }
                SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event { remote_peer_id, result })) => {
                    match result {
                        Ok(_) => tracing::info!(peer = %remote_peer_id, "hole punched: a direct path"),
                        Err(e) => tracing::info!(peer = %remote_peer_id, error = %e, "no hole punched: the relay carries the data"),
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::AutonatClient(event)) => {
                    tracing::debug!(addr = %event.tested_addr, server = %event.server, ok = event.result.is_ok(), "reachability tested");
                }
                SwarmEvent::Behaviour(BehaviourEvent::Upnp(event)) => {
                    tracing::info!(?event, "router port mapping");
                }
                _ => {}
            }
        }
    }
}

/// Asks `relay`, reached at `at`, for a slot.
fn reserve(
    swarm: &mut libp2p::Swarm<Behaviour>,
    reservations: &mut HashMap<PeerId, libp2p::core::transport::ListenerId>,
    relay: PeerId,
    at: &Multiaddr,
) {
    let circuit = without_peer(at).with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
    match swarm.listen_on(circuit.clone()) {
        Ok(id) => {
            tracing::debug!(%relay, %circuit, "asking a relay for a slot");
            reservations.insert(relay, id);
        }
        Err(e) => tracing::debug!(%relay, error = %e, "cannot ask a relay for a slot"),
    }
}

/// Whether `addr` is on the internet: not a LAN, loopback or unspecified address.
fn public(addr: &Multiaddr) -> bool {
    !crate::addr::is_lan(addr) && !crate::addr::is_unspecified(addr)
}

/// `addr` without a trailing `/p2p/<peer>`.
fn without_peer(addr: &Multiaddr) -> Multiaddr {
    let mut addr = addr.clone();
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    addr
}

type Dials = HashMap<libp2p::swarm::ConnectionId, oneshot::Sender<Result<PeerId, NetError>>>;

/// Starts a dial; `reply` is answered when its connection is established or fails.
fn dial(
    swarm: &mut libp2p::Swarm<Behaviour>,
    dials: &mut Dials,
    opts: DialOpts,
    target: String,
    reply: oneshot::Sender<Result<PeerId, NetError>>,
) {
    let id = opts.connection_id();
    match swarm.dial(opts) {
        Ok(()) => {
            dials.insert(id, reply);
        }
        Err(e) => {
            let _ = reply.send(Err(NetError::Dial { target, reason: e.to_string() }));
        }
    }
}

/// An error and its causes, joined by `: `; an empty message is left out (some transport
/// errors have none of their own and put everything in their source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut next: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    if parts.is_empty() { "no reason given by the system".to_owned() } else { parts.join(": ") }
}

/// The `/p2p/<peer>` suffix of an address.
pub fn p2p(peer: PeerId) -> libp2p::multiaddr::Protocol<'static> {
    libp2p::multiaddr::Protocol::P2p(peer)
}

fn is_dialable(addr: &Multiaddr) -> bool {
    !addr.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::P2pCircuit))
}

#[cfg(test)]
mod tests {
    use super::*;

    // One thread: the spawned open runs (and A's dial to the stale address starts) as soon as
    // the test first waits, before B's connection can reach A.
    #[tokio::test(flavor = "current_thread")]
    async fn a_dial_to_a_stale_address_uses_the_connection_the_peer_made_meanwhile() {
        let listen: Vec<Multiaddr> = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr")];
        let config = || NodeConfig::new(listen.clone(), false);
        let a = Node::start(keypair(&[1; 32]), config()).await.expect("node a");
        let b = Node::start(keypair(&[2; 32]), config()).await.expect("node b");
        a.admission().set_members([b.peer_id()]);
        b.admission().set_members([a.peer_id()]);
        let mut incoming = b.accept("/triad/test/1");
        tokio::spawn(async move { while incoming.next().await.is_some() {} });
        // A knows B only where nothing answers any more (the port of its join process).
        let stale = std::net::UdpSocket::bind("127.0.0.1:0").expect("a port");
        let port = stale.local_addr().expect("port").port();
        drop(stale);
        let stale: Multiaddr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1").parse().expect("addr");
        a.add_address(b.peer_id(), stale).await.expect("add");
        let opening = tokio::spawn({
            let (a, b) = (a.clone(), b.peer_id());
            async move { a.open(b, "/triad/test/1").await }
        });
        // Meanwhile B greets A from where it really is.
        b.dial(a.listen_addrs()[0].clone()).await.expect("b reaches a");
        let opened = tokio::time::timeout(Duration::from_secs(60), opening)
            .await
            .expect("the open ends")
            .expect("the task ends");
        assert!(opened.is_ok(), "{:?}", opened.err());
    }

    #[test]
    fn device_and_peer_ids_map_both_ways() {
        let secret = [9u8; 32];
        let device = triad_core::keys::DeviceKey::from_bytes(&secret).device_id();
        let peer = keypair(&secret).public().to_peer_id();
        assert_eq!(peer_id(device), peer);
        assert_eq!(device_id(&peer), Some(device));
    }
}
