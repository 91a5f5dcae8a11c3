//! The agent: the long-running process of a device. It listens for the vault's other devices
//! (libp2p over QUIC, TCP as the fallback), serves their control requests and blob pushes,
//! runs pairing windows, pushes to peers on request, and answers the `triad` commands on its
//! control socket.
//!
//! The stores are opened once and shared by every transfer (see [`crate::open_stores`]); a
//! `triad` command that needs them borrows them between transfers.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use futures::{AsyncWriteExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use triad_core::head::SignedHead;
use triad_core::policy::State;
use triad_core::roster::{Entry, Role, Roster, SignedChange, Signer, What};
use triad_core::seal::SealedBlob;
use triad_core::{BlobId, DeviceId};
use triad_net::frame::{self, FrameError};
use triad_net::pair::{self, Secret};
use triad_net::{Admission, Multiaddr, Node, NodeConfig, PeerId};
use triad_proto::wire::{
    self, BLOBS_PROTOCOL, BlobAck, BlobFrame, CONTROL_FRAME_MAX, CONTROL_PROTOCOL, FETCH_PROTOCOL,
    Joiner, MISSING_BATCH_MAX, Offer, PAIR_PROTOCOL, PairRole, RECOVER_PROTOCOL, RecoverMessage,
    Refusal, Response, StoreInfo, Welcome,
};
use triad_store::{Store, WriteError};

use crate::catalog::Catalog;
use crate::config::Config;
use crate::control::{self, ADDRS, SOCKET};
use crate::home::Home;
use crate::open_stores::{self, OpenStores};
use crate::peers::Book;
use crate::replicas::{Ledger, PeerStore};
use crate::status::{self, Names};
use crate::storeless::Origins;

mod audit;
mod gossip;
mod protect;

/// How long a control request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a blob stream may stay silent before the receiver drops it.
const IDLE_PUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Whether to find and announce devices on the LAN by mDNS.
    pub mdns: bool,
}

/// The agent could not start or stopped on an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// Another agent runs for this home.
    #[error("an agent is already running for {0}")]
    AlreadyRunning(PathBuf),
    /// The home could not be read.
    #[error(transparent)]
    Home(#[from] crate::home::HomeError),
    /// The network could not start.
    #[error(transparent)]
    Net(#[from] triad_net::NetError),
    /// The control socket could not be made.
    #[error("cannot make the control socket {path}")]
    Socket {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// What the agent reports once it listens.
#[derive(Debug, Clone)]
pub struct Ready {
    /// This device's peer id.
    pub peer: PeerId,
    /// The addresses it listens on, each ending in `/p2p/<peer>`.
    pub addrs: Vec<Multiaddr>,
}

struct Window {
    /// Tells this window from a later one.
    id: u64,
    /// Whether a joiner named it: the first one claims it, the others are refused.
    claimed: bool,
    secrets: Vec<Secret>,
    until: Instant,
    role: PairRole,
    /// Asks the `triad pair` command about a joiner.
    ask: mpsc::Sender<(Joiner, oneshot::Sender<bool>)>,
    /// Told how the pairing ended.
    ended: mpsc::Sender<Result<(Joiner, PairRole), String>>,
}

struct Shared {
    home: Home,
    home_path: PathBuf,
    node: Node,
    roster: Mutex<Roster>,
    /// Held while the roster changes, so that changes apply one after the other.
    saving: Mutex<()>,
    book: Mutex<Book>,
    /// What peers acknowledged of this device's folders.
    ledger: Mutex<Ledger>,
    /// The settings as they are now: `config.toml` is read again when a command changed it,
    /// on SIGHUP, and when a round notices that the file changed.
    settings: Mutex<Config>,
    /// When `config.toml` was last read (its modification time), to notice a hand edit.
    settings_read: Mutex<Option<SystemTime>>,
    /// Held while the settings are read again.
    reloading: tokio::sync::Mutex<()>,
    /// Counts the times the settings were read again: the agent's own work watches the
    /// folders of the latest.
    settings_epoch: std::sync::atomic::AtomicU64,
    /// Wakes the agent's own work (a folder changed, a device joined, the policy changed).
    kick: mpsc::Sender<protect::Wake>,
    /// Paths (relative to their folder) the file watcher saw change since the folder's last
    /// backup began: `status` reports those not in the snapshot as not backed up yet.
    unsaved: Mutex<std::collections::HashMap<triad_core::FolderId, HashSet<PathBuf>>>,
    /// The bandwidth limit of each device off this network, shared by every push to it.
    paces: Mutex<std::collections::HashMap<DeviceId, Arc<Pace>>>,
    /// What the agent's own work is doing, in words, since when, and whether that is waiting
    /// for a copy the last round could not make.
    doing: Mutex<(String, u64, bool)>,
    /// A scrub after a failed audit is dropping rotten blobs: until it is done, `Missing` says
    /// busy, so that the repair that follows sees every blob that must come again.
    scrubbing: std::sync::atomic::AtomicBool,
    window: Mutex<Option<Window>>,
    stores: OpenStores,
    /// Held while the roster is copied into the stores, so that the latest copy is the last.
    roster_to_stores: tokio::sync::Mutex<()>,
    /// Devices whose last push was refused for good reason (full, over quota, removed): the
    /// code, the reason, and when.
    refusals: Mutex<std::collections::HashMap<DeviceId, (Refusal, String, u64)>>,
    /// When the agent's own work starts its next round (seconds since the epoch; 0 while a
    /// round runs).
    next_round: std::sync::atomic::AtomicU64,
    /// The address records this device holds (its own among them).
    records: Mutex<gossip::Records>,
    /// Wakes the gossip: there is news to pass on.
    gossip_now: tokio::sync::Notify,
    /// When a device of the vault last audited this one and every range was here (seconds
    /// since the epoch; 0: not since the agent started).
    last_audited: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// When the settings file of the home `home_path` was last changed, if it exists.
fn config_mtime(home_path: &Path) -> Option<SystemTime> {
    std::fs::metadata(home_path.join(crate::config::FILE)).and_then(|m| m.modified()).ok()
}

impl Shared {
    /// The settings as they are now.
    fn config(&self) -> Config {
        lock(&self.settings).clone()
    }

    /// Reads `config.toml` again and works by it from now on: the stores of the new settings
    /// are opened once no work holds the old ones, the folders are watched, and a round
    /// starts. Answers what the agent now does.
    async fn reload(self: &Arc<Self>) -> Result<Value, String> {
        // One at a time (SIGHUP, a command and a noticed edit may come together), so that the
        // settings applied last are the ones read last.
        let _one_at_a_time = self.reloading.lock().await;
        let mut config = Config::load(&self.home_path).map_err(|e| error_chain(&e))?;
        // A folder on a device without a store keeps its catalog in the home, as at start.
        let now = triad_core::Timestamp::new(now_secs() as i64, 0);
        if crate::storeless::ensure_catalog(&self.home, &mut config, now)? {
            config.save(&self.home_path).map_err(|e| error_chain(&e))?;
        }
        // Read after this agent's own save, which is no hand edit to notice.
        let read_at = config_mtime(&self.home_path);
        let before = self.config();
        let stores_changed = serde_json::to_value(&before.stores).ok()
            != serde_json::to_value(&config.stores).ok()
            || serde_json::to_value(&before.store).ok() != serde_json::to_value(&config.store).ok();
        if stores_changed {
            self.stores.reconfigure(config.clone()).await;
        }
        *lock(&self.settings) = config.clone();
        *lock(&self.settings_read) = read_at;
        self.settings_epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = self.kick.try_send(protect::Wake::Changed);
        tracing::info!(
            folders = config.folders.len(),
            stores = config.stores.len(),
            auto = config.protect.auto,
            "settings read again"
        );
        let protects = config.protect.auto && self.home.keys().is_ok();
        Ok(json!({
            "done": true,
            "folders": config.folders.iter().map(|f| f.path.display().to_string()).collect::<Vec<_>>(),
            "stores": config.stores.iter().filter(|s| !s.catalog).map(|s| s.path.display().to_string()).collect::<Vec<_>>(),
            "backs_up": protects && !config.folders.is_empty(),
        }))
    }

    /// Reads the settings again if `config.toml` changed since they were read (a hand edit).
    async fn reload_if_changed(self: &Arc<Self>) {
        let now = config_mtime(&self.home_path);
        if now == *lock(&self.settings_read) {
            return;
        }
        tracing::info!("config.toml changed; reading it again");
        if let Err(e) = self.reload().await {
            // Keep working by the settings as they were; say why once per change.
            *lock(&self.settings_read) = now;
            tracing::warn!(error = %e, "the changed settings cannot be used; the agent keeps the previous ones");
        }
    }

    fn members(&self) -> Vec<PeerId> {
        let me = self.home.device_id();
        lock(&self.roster)
            .devices()
            .into_iter()
            .filter(|e| e.device != me)
            .map(|e| triad_net::peer_id(e.device))
            .collect()
    }

    /// Applies the roster to the gate: its devices are admitted, its removed devices never.
    fn apply_roster(&self, roster: &Roster) {
        let admission = self.node.admission();
        admission.set_members(self.members());
        admission.set_banned(roster.removed().iter().map(|d| triad_net::peer_id(*d)));
    }

    fn device_named(&self, name: &str) -> Result<Entry, String> {
        let roster = lock(&self.roster);
        roster
            .devices()
            .into_iter()
            .find(|e| e.name == name)
            .cloned()
            .ok_or_else(|| format!("no device named {name:?} in this vault (see `triad devices`)"))
    }

    /// Takes the entries of `other` this roster lacks; persists and applies a change.
    fn merge_roster(self: &Arc<Self>, other: &Roster) -> Result<bool, String> {
        self.update_roster(|roster| roster.merge(other).map_err(|e| e.to_string()))
    }

    /// Changes the roster: one change at a time, from the roster as it is, verified, written
    /// to the home before it is used, then copied into the stores (any one store is enough to
    /// start a recovery) as soon as they are free. Returns whether anything changed.
    fn update_roster(
        self: &Arc<Self>,
        change: impl FnOnce(&mut Roster) -> Result<bool, String>,
    ) -> Result<bool, String> {
        let _one_at_a_time = lock(&self.saving);
        let mut next = lock(&self.roster).clone();
        if !change(&mut next)? {
            return Ok(false);
        }
        next.verify().map_err(|e| format!("the changed roster does not verify: {e}"))?;
        self.home.write_roster(&next).map_err(|e| e.to_string())?;
        *lock(&self.roster) = next.clone();
        self.apply_roster(&next);
        gossip::news_to_tell(self);
        let shared = self.clone();
        tokio::spawn(async move {
            let _in_order = shared.roster_to_stores.lock().await;
            let Ok(work) = shared.stores.work().await else { return };
            // The roster as it is now: a later change may have overtaken this one.
            let roster = lock(&shared.roster).clone();
            tokio::task::block_in_place(|| {
                for store in open_stores::read(&work).iter() {
                    if let Err(e) = store.write_roster(&roster) {
                        tracing::warn!(store = %store.path().display(), error = %e, "cannot store the roster");
                    }
                }
            });
        });
        Ok(true)
    }

    /// Whether `peer` is a trusted device of the roster (storage-only devices never copy
    /// blobs from others).
    fn is_trusted(&self, peer: &PeerId) -> bool {
        triad_net::device_id(peer)
            .and_then(|d| lock(&self.roster).device(d).map(|e| e.role == Role::Trusted))
            .unwrap_or(false)
    }

    /// Records that `device` was reached, at `addr` if given; returns whether that address is
    /// news (not the one the device was last known at).
    fn remember(&self, device: DeviceId, addr: Option<&Multiaddr>) -> bool {
        let mut book = lock(&self.book);
        let mut news = false;
        if let Some(addr) = addr {
            let addr = addr.to_string();
            news = book.get(device).and_then(|p| p.addrs.first()) != Some(&addr);
            book.add(device, &addr);
        }
        book.seen(device, now_secs());
        if let Err(e) = book.save(&self.home_path) {
            tracing::warn!(error = %e, "cannot save the address book");
        }
        news
    }
}

/// Runs the agent of the home at `home_path` until SIGINT or SIGTERM. `ready` is called once
/// it listens.
pub async fn run(
    home_path: &Path,
    config: Config,
    options: Options,
    ready: impl FnOnce(&Ready),
) -> Result<(), DaemonError> {
    let socket_path = home_path.join(SOCKET);
    if std::os::unix::net::UnixStream::connect(&socket_path).is_ok() {
        return Err(DaemonError::AlreadyRunning(home_path.to_path_buf()));
    }
    let home = Home::open(home_path)?;
    let roster = home.roster()?;
    let keypair = triad_net::keypair(&home.device_key().to_bytes());
    let node =
        Node::start(keypair, NodeConfig { listen: options.listen, mdns: options.mdns }).await?;
    let vault = home.vault();
    let (kick, kicked) = mpsc::channel(16);
    let shared = Arc::new(Shared {
        kick,
        unsaved: Mutex::new(std::collections::HashMap::new()),
        paces: Mutex::new(std::collections::HashMap::new()),
        book: Mutex::new(Book::load(home_path)),
        ledger: Mutex::new(Ledger::load(home_path)),
        settings: Mutex::new(config.clone()),
        settings_read: Mutex::new(config_mtime(home_path)),
        reloading: tokio::sync::Mutex::new(()),
        settings_epoch: std::sync::atomic::AtomicU64::new(0),
        doing: Mutex::new(("starting".to_owned(), now_secs(), false)),
        scrubbing: std::sync::atomic::AtomicBool::new(false),
        home,
        home_path: home_path.to_path_buf(),
        node: node.clone(),
        roster: Mutex::new(roster),
        saving: Mutex::new(()),
        window: Mutex::new(None),
        stores: OpenStores::new(vault, config.clone()),
        roster_to_stores: tokio::sync::Mutex::new(()),
        refusals: Mutex::new(std::collections::HashMap::new()),
        next_round: std::sync::atomic::AtomicU64::new(0),
        records: Mutex::new(gossip::Records::default()),
        gossip_now: tokio::sync::Notify::new(),
        last_audited: std::sync::atomic::AtomicU64::new(0),
    });
    let roster = lock(&shared.roster).clone();
    shared.apply_roster(&roster);
    let known: Vec<(PeerId, Multiaddr)> = {
        let book = lock(&shared.book);
        lock(&shared.roster)
            .devices()
            .into_iter()
            .flat_map(|e| {
                let addrs = book.get(e.device).map(|p| p.addrs.clone()).unwrap_or_default();
                addrs
                    .into_iter()
                    .filter_map(move |a| Some((triad_net::peer_id(e.device), a.parse().ok()?)))
            })
            .collect()
    };
    for (peer, addr) in known {
        node.add_address(peer, addr).await?;
    }

    // A killed agent (or command) may have left temporary files of atomic writes behind.
    crate::home::remove_stale_temps(home_path);
    crate::home::remove_stale_temps(&home_path.join("cache"));
    let _ = std::fs::remove_file(&socket_path);
    let listener = UnixListener::bind(&socket_path)
        .map_err(|source| DaemonError::Socket { path: socket_path.clone(), source })?;
    std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600))
        .map_err(|source| DaemonError::Socket { path: socket_path.clone(), source })?;
    let owner = std::fs::metadata(home_path)
        .map_err(|source| DaemonError::Socket { path: home_path.to_path_buf(), source })?
        .uid();

    let peer = node.peer_id();
    let addrs: Vec<Multiaddr> =
        node.listen_addrs().into_iter().map(|a| a.with(triad_net::node::p2p(peer))).collect();
    let listing: String = addrs.iter().map(|a| format!("{a}\n")).collect();
    let _ = crate::home::write_atomic(&home_path.join(ADDRS), listing.as_bytes(), 0o644);
    tracing::info!(%peer, addrs = ?addrs, "agent listening");
    ready(&Ready { peer, addrs });

    // Every protocol checks who may run it before anything is read, and serves each stream on
    // its own task.
    serve(&shared, CONTROL_PROTOCOL, Admission::is_member, on_control);
    serve(&shared, BLOBS_PROTOCOL, Admission::is_member, on_blobs);
    serve(&shared, FETCH_PROTOCOL, Admission::is_member, on_fetch);
    serve(&shared, PAIR_PROTOCOL, Admission::is_pairing_peer, on_pairing);
    let may_prove = |a: &Admission, p: &PeerId| a.on_probation(p) || a.is_member(p);
    serve(&shared, RECOVER_PROTOCOL, may_prove, on_recovery);
    let admission = node.admission().clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            admission.expire_probation();
        }
    });
    tokio::spawn(serve_socket(shared.clone(), listener, owner));
    tokio::spawn(gossip::run(shared.clone()));
    tokio::spawn(protect::run(shared.clone(), kicked));
    tokio::spawn(protect::on_arrivals(shared.clone()));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| DaemonError::Socket { path: socket_path.clone(), source })?;
    // SIGHUP: read the settings again (after a hand edit of config.toml).
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|source| DaemonError::Socket { path: socket_path.clone(), source })?;
    let reloading = shared.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match reloading.reload().await {
                Ok(_) => tracing::info!("settings read again on SIGHUP"),
                Err(e) => {
                    tracing::warn!(error = %e, "the settings cannot be used; the agent keeps the previous ones")
                }
            }
        }
    });
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("agent stopping");
    let _ = std::fs::remove_file(&socket_path);
    let _ = std::fs::remove_file(home_path.join(ADDRS));
    Ok(())
}

/// Accepts the streams of `protocol` and hands those of peers `admitted` lets in to `handle`,
/// each on its own task; the others are dropped unread.
fn serve<A, H, F>(shared: &Arc<Shared>, protocol: &'static str, admitted: A, handle: H)
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
async fn on_control(shared: Arc<Shared>, peer: PeerId, stream: triad_net::Stream) {
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
            refuse(format!("at most {MISSING_BATCH_MAX} blobs per request"))
        }
        wire::Request::Missing { .. }
            if shared.scrubbing.load(std::sync::atomic::Ordering::SeqCst) =>
        {
            refuse(BUSY.into())
        }
        wire::Request::Missing { blobs } => match busy_or(shared.stores.work()).await {
            // The committed index only: a blob answered as present must be durable, not in a
            // put that another push has yet to commit (and may lose).
            Ok(work) => tokio::task::block_in_place(|| {
                let Some(stores) = open_stores::read_within(&work, Duration::from_secs(10)) else {
                    return refuse(BUSY.into());
                };
                let config = shared.config();
                let data: Vec<&Store> = config.holding_data(&stores).collect();
                if data.is_empty() {
                    return refuse(NO_STORE.into());
                }
                let missing = blobs
                    .into_iter()
                    .filter(|id| data.iter().any(|s| !s.holds_committed(*id).unwrap_or(false)))
                    .collect();
                Response::Missing { blobs: missing }
            }),
            Err(reason) => refuse(reason),
        },
        wire::Request::Gossip { roster, addresses, verdicts } => {
            gossip::answer(shared, peer, &roster, &addresses, &verdicts).await
        }
        wire::Request::Roster { roster } => match Roster::decode(&roster) {
            Ok(roster) => match shared.merge_roster(&roster) {
                Ok(_) => Response::Done,
                Err(reason) => refuse(reason),
            },
            Err(e) => refuse(format!("roster refused: {e}")),
        },
        wire::Request::Inventory { .. } | wire::Request::ListHeads if !shared.is_trusted(&peer) => {
            refuse("only a trusted device may copy from this one".into())
        }
        wire::Request::Inventory { after } => match shared.stores.work().await {
            Ok(work) => tokio::task::block_in_place(|| {
                let stores = open_stores::read(&work);
                let mut ids: Vec<triad_core::BlobId> = Vec::new();
                for store in stores.iter() {
                    match store.blobs() {
                        Ok(blobs) => ids.extend(blobs.into_iter().map(|b| b.id)),
                        Err(e) => return refuse(e.to_string()),
                    }
                }
                ids.sort_unstable();
                ids.dedup();
                let from = after.map_or(0, |a| ids.partition_point(|id| *id <= a));
                let page: Vec<_> = ids[from..].iter().take(MISSING_BATCH_MAX).copied().collect();
                let more = from + page.len() < ids.len();
                Response::Inventory { blobs: page, more }
            }),
            Err(reason) => refuse(reason),
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
                        Err(e) => return refuse(e.to_string()),
                    }
                }
                Response::Heads { heads: best.values().map(SignedHead::encode).collect() }
            }),
            Err(reason) => refuse(reason),
        },
        wire::Request::Audit { ranges } if ranges.len() > wire::AUDIT_RANGES_MAX => {
            refuse(format!("at most {} ranges per audit", wire::AUDIT_RANGES_MAX))
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
            Err(reason) => refuse(reason),
        },
        wire::Request::Heads { heads } => match shared.stores.work().await {
            Ok(work) => match tokio::task::block_in_place(|| take_heads(shared, &work, &heads)) {
                Ok(()) => Response::Done,
                Err(reason) => refuse(reason),
            },
            Err(reason) => refuse(reason),
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

/// Bytes free for blobs in the store at `path`: what its file system has for unprivileged
/// writers, capped by the store's quota. Unknown (`u64::MAX`) if the file system says nothing.
fn free_bytes(path: &Path, quota: Option<u64>) -> u64 {
    let disk =
        rustix::fs::statvfs(path).map_or(u64::MAX, |s| s.f_bavail.saturating_mul(s.f_frsize));
    disk.min(quota.unwrap_or(u64::MAX))
}

// ---- Peers: blob pushes ---------------------------------------------------------------------

/// Serves one blob push.
async fn on_blobs(shared: Arc<Shared>, peer: PeerId, stream: triad_net::Stream) {
    match receive_blobs(&shared, stream).await {
        Ok(n) => tracing::info!(%peer, blobs = n, "blobs received"),
        Err(e) => tracing::info!(%peer, error = %e, "blob stream closed on an error"),
    }
}

/// Receives blobs until the sender closes the stream; returns how many were acknowledged.
async fn receive_blobs(shared: &Shared, mut stream: triad_net::Stream) -> Result<u64, String> {
    let work = shared.stores.work().await?;
    let config = shared.config();
    if config.holding_data(&open_stores::read(&work)).next().is_none() {
        let refused = BlobAck::Refused { code: Refusal::Other, reason: NO_STORE.into() };
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
            BlobFrame::Blob { id, bytes } => {
                let blob =
                    SealedBlob::verify(id, bytes).map_err(|e| format!("blob refused: {e}"))?;
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
fn refuse(reason: String) -> Response {
    let code = if reason == BUSY { Refusal::Busy } else { Refusal::Other };
    Response::Refused { code, reason }
}

/// Serves the blobs a trusted device asks for.
async fn on_fetch(shared: Arc<Shared>, peer: PeerId, stream: triad_net::Stream) {
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
async fn on_recovery(shared: Arc<Shared>, peer: PeerId, stream: triad_net::Stream) {
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

// ---- Pairing (inviter) ----------------------------------------------------------------------

/// Serves one pairing attempt.
async fn on_pairing(shared: Arc<Shared>, peer: PeerId, stream: triad_net::Stream) {
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
    let addresses = shared
        .node
        .listen_addrs()
        .into_iter()
        .map(|a| a.with(triad_net::node::p2p(me)).to_string())
        .collect();
    Ok(Welcome { roster: roster.encode(), vault_secret, addresses })
}

// ---- The control socket ---------------------------------------------------------------------

async fn serve_socket(shared: Arc<Shared>, listener: UnixListener, owner: u32) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        if uid != Some(owner) {
            tracing::warn!(?uid, "control connection from another user refused");
            let mut stream = stream;
            let _ = stream
                .write_all(
                    b"{\"error\":\"refused: only the owner of this home may control its agent\"}\n",
                )
                .await;
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

struct Session {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    out: tokio::net::unix::OwnedWriteHalf,
}

impl Session {
    async fn say(&mut self, value: Value) -> io::Result<()> {
        let mut line = serde_json::to_vec(&value).expect("json values serialize");
        line.push(b'\n');
        self.out.write_all(&line).await
    }

    async fn read(&mut self) -> io::Result<Option<control::Request>> {
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
    let result = match request {
        control::Request::Lease => {
            // The command works on the stores itself; the agent keeps off them until it is
            // done (it closes the connection by exiting).
            let _lease = shared.stores.lend().await;
            s.say(json!({ "leased": true })).await?;
            while s.read().await.is_ok_and(|line| line.is_some()) {}
            return Ok(());
        }
        control::Request::Devices => devices(shared).await,
        control::Request::Pair { storage_only, seconds, yes } => {
            return pair_session(shared, &mut s, storage_only, seconds, yes).await;
        }
        control::Request::PairDecision { .. } => Err("no pairing is waiting for a decision".into()),
        control::Request::Sync { device, timeout_secs } => {
            let timeout = Duration::from_secs(timeout_secs.max(1));
            match tokio::time::timeout(timeout, sync(shared, &device, Some(&mut s))).await {
                Ok(result) => {
                    // What the agent's own work waits for may have come with this push.
                    if result.is_ok() {
                        let _ = shared.kick.try_send(protect::Wake::Changed);
                    }
                    result
                }
                Err(_) => Err(SyncFailure::Unreachable(format!(
                    "{device} did not finish within {timeout_secs} s"
                ))
                .into()),
            }
        }
        control::Request::AddAddress { device, addr } => add_address(shared, &device, &addr).await,
        control::Request::Status { files } => status(shared, &files).await,
        control::Request::Audit { now } => audit_devices(shared, now).await,
        control::Request::Check { hashes, card } => check(shared, &hashes, card.as_deref()).await,
        control::Request::Reload => shared.reload().await.map_err(Failure::from),
        control::Request::RemoveDevice { device } => remove_device(shared, &device).await,
        control::Request::Fetch { blobs, into } => fetch_into(shared, &blobs, &into, &mut s).await,
    };
    match result {
        Ok(value) => s.say(value).await,
        Err(failure) => {
            let code = failure.code.map(Refusal::as_str);
            s.say(json!({ "error": failure.message, "kind": failure.kind, "code": code })).await
        }
    }
}

struct Failure {
    kind: &'static str,
    message: String,
    /// Why the other device refused, when it did.
    code: Option<Refusal>,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure { kind: "error", message, code: None }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure { kind: "error", message: message.to_owned(), code: None }
    }
}

enum SyncFailure {
    Unreachable(String),
    Refused(Refusal, String),
}

impl From<SyncFailure> for Failure {
    fn from(f: SyncFailure) -> Self {
        match f {
            SyncFailure::Unreachable(message) => {
                Failure { kind: "unreachable", message, code: None }
            }
            SyncFailure::Refused(code, message) => {
                Failure { kind: "refused", message, code: Some(code) }
            }
        }
    }
}

async fn devices(shared: &Shared) -> Result<Value, Failure> {
    let entries: Vec<Entry> = lock(&shared.roster).devices().into_iter().cloned().collect();
    // Every device is asked at once: one that is away costs its timeout once, not per device.
    let out = futures::future::join_all(entries.into_iter().map(|e| describe(shared, e))).await;
    Ok(json!({ "done": true, "devices": out }))
}

/// One device as `triad devices` shows it: online or not, its stores.
async fn describe(shared: &Shared, entry: Entry) -> Value {
    let me = shared.home.device_id();
    let peer = triad_net::peer_id(entry.device);
    let this = entry.device == me;
    // The catalog holds no copies: it is not shown as a store.
    let stores: Vec<Value> = shared
        .config()
        .data_stores()
        .map(|s| {
            let free = free_bytes(&s.path, s.quota);
            json!({"id": s.id.to_hex(), "media": s.media.to_string(), "free": free})
        })
        .collect();
    // Online: it answers now, at the connection there is or at a known address.
    let (connected, stores) = if this {
        (None, stores)
    } else {
        let ask = async {
            shared.node.connect(peer).await.ok()?;
            match request(shared, peer, &wire::Request::Hello).await {
                Ok(Response::Hello { stores, .. }) => Some(stores),
                _ => None,
            }
        };
        match tokio::time::timeout(Duration::from_secs(4), ask).await {
            Ok(Some(stores)) => (
                shared.node.connected(&peer),
                stores
                    .iter()
                    .map(|s| json!({"id": s.id.to_hex(), "media": s.media.to_string(), "free": s.free}))
                    .collect(),
            ),
            _ => (None, Vec::new()),
        }
    };
    let book = lock(&shared.book);
    let known = book.get(entry.device);
    json!({
        "name": entry.name,
        "site": entry.site,
        "role": match entry.role { Role::Trusted => "trusted", Role::StorageOnly => "storage-only" },
        "device": entry.device.to_hex(),
        "this": this,
        "online": this || connected.is_some() || !stores.is_empty(),
        "last_seen": known.and_then(|p| p.last_seen),
        "address": connected.map(|a| a.to_string()).or_else(|| known.and_then(|p| p.addrs.first().cloned())),
        "stores": stores,
    })
}

async fn remove_device(shared: &Arc<Shared>, name: &str) -> Result<Value, Failure> {
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
    Ok(json!({ "done": true, "device": name, "told": told }))
}

/// How long telling one device of a roster change may take.
const TELL_TIMEOUT: Duration = Duration::from_secs(5);

/// Pushes the roster to every other device that can be reached now; returns their names.
async fn gossip(shared: &Arc<Shared>) -> Vec<String> {
    let roster = lock(&shared.roster).clone();
    let me = shared.home.device_id();
    let bytes = roster.encode();
    let mut tasks = Vec::new();
    for entry in roster.devices().into_iter().filter(|e| e.device != me) {
        let (shared, bytes, name) = (shared.clone(), bytes.clone(), entry.name.clone());
        let peer = triad_net::peer_id(entry.device);
        tasks.push(tokio::spawn(async move {
            let message = wire::Request::Roster { roster: bytes };
            let push = request(&shared, peer, &message);
            match tokio::time::timeout(TELL_TIMEOUT, push).await {
                Ok(Ok(_)) => Some(name),
                _ => None,
            }
        }));
    }
    let mut told = Vec::new();
    for task in tasks {
        if let Ok(Some(name)) = task.await {
            told.push(name);
        }
    }
    told
}

async fn add_address(shared: &Shared, name: &str, addr: &str) -> Result<Value, Failure> {
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
    Ok(json!({ "done": true }))
}

async fn pair_session(
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
        return s.say(json!({ "error": error })).await;
    }
    let mut random = [0u8; 24];
    if getrandom::fill(&mut random).is_err() {
        return s.say(json!({"error": "no randomness from the system"})).await;
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
    let addrs = shared.node.listen_addrs();
    s.say(json!({
        "code": typed.code(),
        "link": strong.link(me, &addrs),
        "expires_in_secs": until.saturating_duration_since(Instant::now()).as_secs(),
        "role": if storage_only { "storage-only" } else { "trusted" },
    }))
    .await?;
    let outcome = loop {
        tokio::select! {
            Some((joiner, reply)) = ask_rx.recv() => {
                let accept = if yes {
                    true
                } else {
                    s.say(json!({"event": "confirm", "name": joiner.name, "site": joiner.site})).await?;
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
                PairRole::Trusted => "trusted",
                PairRole::StorageOnly => "storage-only",
            };
            s.say(json!({"done": true, "name": joiner.name, "site": joiner.site, "role": role}))
                .await
        }
        Err(message) => s.say(json!({"error": message})).await,
    }
}

// ---- Sync (pusher) --------------------------------------------------------------------------

/// One control request to `peer`.
async fn request(
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
        let _ = s.say(json!({"event": "progress", "blobs": blobs, "bytes": bytes, "of": of})).await;
    }
}

/// Pushes to the device `name` what it lacks of this device's snapshots. A device that refuses
/// because it is full, over its quota, or no longer takes this device is remembered as such
/// (`status` names it) until a push to it succeeds.
async fn sync(shared: &Shared, name: &str, s: Option<&mut Session>) -> Result<Value, Failure> {
    let result = push(shared, name, s).await;
    let Ok(entry) = shared.device_named(name) else { return result };
    let mut refusals = lock(&shared.refusals);
    match &result {
        Ok(_) => {
            refusals.remove(&entry.device);
        }
        Err(Failure { code: Some(code), message, .. }) => {
            let code = *code;
            if matches!(code, Refusal::Full | Refusal::Quota | Refusal::Removed) {
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
                Refusal::Other | Refusal::Busy => format!("{name} refused: {message}"),
            };
            return Err(Failure { kind: "refused", message: said, code: Some(code) });
        }
        Err(_) => {}
    }
    result
}

async fn push(shared: &Shared, name: &str, mut s: Option<&mut Session>) -> Result<Value, Failure> {
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
    Ok(json!({
        "done": true,
        "versions_lacking": lacking_total,
        "device": name,
        "blobs_sent": sent,
        "bytes_sent": bytes,
        "blobs_already_there": already,
        "versions_not_sent": lost,
    }))
}

/// Blobs asked for at a time while fetching for a restore.
const FETCH_FOR_RESTORE_BATCH: usize = 64;

/// How long a device may stay silent while fetching for a restore before the fetch goes on
/// from the next device that holds copies.
const FETCH_ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// Fetches `blobs` from the other devices (those that acknowledged copies first) into a new
/// store at `into`, for a restore on this device. Verified on arrival, committed after every
/// batch. A device that stops answering, or does not hold a blob, is left for the next one
/// for what is still missing; the command hears how far it is as it goes.
async fn fetch_into(
    shared: &Shared,
    blobs: &[String],
    into: &Path,
    s: &mut Session,
) -> Result<Value, Failure> {
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
    let mut failed: Vec<Value> = Vec::new();
    for device in devices {
        if remaining.is_empty() {
            break;
        }
        let peer = triad_net::peer_id(device.device);
        let _ = s
            .say(json!({"event": "fetching", "from": device.name, "fetched": fetched, "of": total}))
            .await;
        let opened =
            tokio::time::timeout(FETCH_ANSWER_TIMEOUT, shared.node.open(peer, FETCH_PROTOCOL))
                .await;
        let mut stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                failed.push(json!({"device": device.name, "reason": e.to_string()}));
                continue;
            }
            Err(_) => {
                let reason = format!("no answer for {} s", FETCH_ANSWER_TIMEOUT.as_secs());
                failed.push(json!({"device": device.name, "reason": reason}));
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
                    .say(json!({"event": "progress", "from": device.name, "fetched": fetched, "of": total}))
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
                        .say(json!({"event": "gone", "device": device.name, "reason": reason}))
                        .await;
                    failed.push(json!({"device": device.name, "reason": reason}));
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
    Ok(json!({
        "done": true,
        "fetched": fetched,
        "missing": remaining.len(),
        "from": from,
        "failed": failed,
    }))
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

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

// ---- Status ----------------------------------------------------------------------------------

/// Evaluates this device's folders under the stores' read lock.
fn evaluate_folders(
    shared: &Shared,
    work: &open_stores::Work,
    hashes: bool,
) -> Result<Vec<status::FolderState>, String> {
    let Ok(keys) = shared.home.keys() else { return Ok(Vec::new()) };
    let roster = lock(&shared.roster).clone();
    let ledger = lock(&shared.ledger).clone();
    let settings = lock(&shared.settings).clone();
    let stores = open_stores::read(work);
    let catalog = Catalog::new(keys, &stores);
    let unsaved = lock(&shared.unsaved).clone();
    let inputs = status::Inputs {
        unsaved: &unsaved,
        config: &settings,
        roster: &roster,
        me: shared.home.device_id(),
        ledger: &ledger,
        now: triad_core::Timestamp::new(now_secs() as i64, 0),
        hashes,
    };
    tokio::task::block_in_place(|| status::evaluate(&catalog, &inputs)).map_err(|e| error_chain(&e))
}

async fn status(shared: &Shared, files: &[String]) -> Result<Value, Failure> {
    let mut list = Vec::new();
    for name in files {
        list.push(State::parse(name).ok_or_else(|| {
            format!("{name:?} is not a state (PROTECTED, PENDING-OFFSITE, DEGRADED, AT-RISK, LOST)")
        })?);
    }
    let work = shared.stores.work().await?;
    let folders = evaluate_folders(shared, &work, false)?;
    drop(work);
    let roster = lock(&shared.roster).clone();
    let identity = shared.home.identity();
    let now = triad_core::Timestamp::new(now_secs() as i64, 0);
    let names = Names { roster: &roster, home_site: &identity.site, now };
    let summaries: Vec<status::FolderSummary> =
        folders.iter().map(|f| status::summarise(f, &names, &list)).collect();
    if shared.home.keys().is_ok() {
        let own: Vec<_> = folders.iter().map(|f| f.id).zip(&summaries).collect();
        gossip::share_verdict(shared, &own);
    }
    let worst =
        summaries.iter().filter_map(|s| State::parse(s.worst)).max().unwrap_or(State::Protected);
    let (vault, vault_worst) = vault_view(shared, &roster);
    let holds = holdings(shared).await;
    let survives = summaries.iter().all(|s| s.survives_site_loss);
    // What the last round waited for is past once every file is protected (a `sync` by hand,
    // or a device that answered since): the next round, kicked now, says what it does.
    let (doing, since) = {
        let doing = lock(&shared.doing);
        if doing.2 && worst == State::Protected {
            let _ = shared.kick.try_send(protect::Wake::Changed);
            ("watching the folders".to_owned(), doing.1)
        } else {
            (doing.0.clone(), doing.1)
        }
    };
    // Devices that refuse copies: a full device is not an offline one.
    let refusing: Vec<Value> = lock(&shared.refusals)
        .iter()
        .filter_map(|(device, (code, reason, since))| {
            let name = roster.device(*device)?.name.clone();
            Some(json!({"device": name, "code": code.as_str(), "reason": reason, "since": since}))
        })
        .collect();
    Ok(json!({
        "done": true,
        "device": identity.name,
        "site": identity.site,
        "storage_only": shared.home.keys().is_err(),
        "worst": worst.max(vault_worst).as_str(),
        "exit": worst.max(vault_worst).exit_code(),
        "own_worst": worst.as_str(),
        "survives_site_loss": survives,
        "doing": {
            "what": doing,
            "since": since,
            "next": Some(shared.next_round.load(std::sync::atomic::Ordering::Relaxed))
                .filter(|at| *at > 0),
        },
        "refusing": refusing,
        "folders": summaries,
        "vault": vault,
        "holds": holds,
    }))
}

/// The other devices' folders as their owners last judged them (from their signed verdicts),
/// and the worst state among them.
fn vault_view(shared: &Shared, roster: &Roster) -> (Vec<Value>, State) {
    let me = shared.home.device_id();
    let mut verdicts = lock(&shared.records).verdicts_of_others(me);
    verdicts.sort_by_key(|v| v.device);
    let mut worst = State::Protected;
    let mut out = Vec::new();
    for v in verdicts {
        let Some(entry) = roster.device(v.device) else { continue };
        worst = worst.max(v.worst());
        let reachable = shared.node.connected(&triad_net::peer_id(v.device)).is_some();
        let folders: Vec<Value> = v
            .folders
            .iter()
            .map(|f| {
                let counts: serde_json::Map<String, Value> = State::ALL
                    .iter()
                    .zip(f.counts)
                    .map(|(s, n)| (s.as_str().to_owned(), json!(n)))
                    .collect();
                json!({
                    "folder": f.path, "policy": f.policy, "last_backup": f.last_backup,
                    "counts": counts, "worst": f.worst.as_str(),
                    "reasons": f.reasons.iter().map(|(s, w, n)| json!([s.as_str(), w, n])).collect::<Vec<_>>(),
                })
            })
            .collect();
        out.push(json!({
            "device": entry.name, "site": entry.site, "reachable": reachable,
            "evaluated": v.evaluated, "worst": v.worst().as_str(), "folders": folders,
        }));
    }
    (out, worst)
}

/// What this device's stores hold for the vault (blobs and bytes, no names), and when a
/// device of the vault last audited it.
async fn holdings(shared: &Shared) -> Value {
    let config = shared.config();
    let (mut blobs, mut bytes) = (0u64, 0u64);
    if config.data_stores().next().is_some()
        && let Some(work) = shared.stores.try_work()
    {
        let stores = open_stores::read(&work);
        for store in config.holding_data(&stores) {
            if let Ok(stats) = store.stats() {
                blobs += stats.blobs;
                bytes += stats.bytes;
            }
        }
    }
    let audited = shared.last_audited.load(std::sync::atomic::Ordering::Relaxed);
    json!({"blobs": blobs, "bytes": bytes, "last_audited": Some(audited).filter(|a| *a > 0)})
}

async fn check(shared: &Shared, hashes: &[String], card: Option<&Path>) -> Result<Value, Failure> {
    let work = shared.stores.work().await?;
    let mut folders = evaluate_folders(shared, &work, true)?;
    drop(work);
    // The card never counts as a copy of itself: a folder on it loses its source copies.
    if let Some(card) = card {
        let settings = lock(&shared.settings).clone();
        let site = shared.home.identity().site.clone();
        let now = triad_core::Timestamp::new(now_secs() as i64, 0);
        for folder in &mut folders {
            let path = Path::new(&folder.path);
            if !(path.starts_with(card) || card.starts_with(path)) {
                continue;
            }
            for file in &mut folder.files {
                file.copies
                    .retain(|c| !matches!(c.holder, triad_core::policy::Holder::Source { .. }));
                file.evaluation = triad_core::policy::evaluate(
                    folder.policy,
                    settings.policy.windows(),
                    &site,
                    &file.copies,
                    now,
                );
            }
        }
    }
    // The best state of any current version with each content hash.
    let mut best: std::collections::HashMap<[u8; 32], (State, String)> =
        std::collections::HashMap::new();
    for folder in &folders {
        for file in &folder.files {
            let Some(hash) = file.hash else { continue };
            let state = file.evaluation.state;
            let better = best.get(&hash).is_none_or(|(s, _)| state < *s);
            if better {
                best.insert(hash, (state, format!("{}/{}", folder.path, file.path)));
            }
        }
    }
    let answers: Vec<Value> = hashes
        .iter()
        .map(|hex| {
            let found = parse_hash(hex).and_then(|h| best.get(&h));
            match found {
                Some((state, path)) => {
                    json!({"hash": hex, "state": state.as_str(), "vault_path": path})
                }
                None => json!({"hash": hex, "state": null}),
            }
        })
        .collect();
    Ok(json!({ "done": true, "files": answers }))
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

async fn audit_devices(shared: &Shared, now: bool) -> Result<Value, Failure> {
    let me = shared.home.device_id();
    let others: Vec<Entry> =
        lock(&shared.roster).devices().into_iter().filter(|e| e.device != me).cloned().collect();
    let mut rows = Vec::new();
    for entry in others {
        let outcome = if now { Some(audit::audit(shared, entry.device).await) } else { None };
        let proof = lock(&shared.ledger).proof_of(entry.device);
        rows.push(json!({
            "device": entry.name,
            "site": entry.site,
            "last_proven": proof.map(|(at, _)| at),
            "bad": proof.is_some_and(|(_, bad)| bad),
            "audit": outcome.map(|o| o.to_json()),
        }));
    }
    if rows.iter().any(|r| r["audit"]["result"] == "failed") {
        // Repair now rather than at the next round.
        let _ = shared.kick.try_send(protect::Wake::Changed);
    }
    Ok(json!({ "done": true, "devices": rows }))
}

/// Whether a connection's address is on this network (private, link-local or loopback).
pub(crate) fn is_lan(addr: &Multiaddr) -> bool {
    use std::net::IpAddr;
    use triad_net::multiaddr::Protocol;
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_private() || ip.is_loopback() || ip.is_link_local(),
        Protocol::Ip6(ip) => {
            let first = ip.segments()[0];
            IpAddr::V6(ip).is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
        _ => false,
    })
}

/// The pace of every push to one device: together they send at most `bytes_per_sec`. Each
/// blob sent books the link for as long as its bytes take at that rate, after whatever was
/// booked before; the sender waits until its booking ends. Time the link was idle is not
/// saved up for a burst later.
struct Pace {
    bytes_per_sec: u64,
    free_at: Mutex<tokio::time::Instant>,
}

impl Pace {
    fn new(bytes_per_sec: u64) -> Pace {
        Pace {
            bytes_per_sec: bytes_per_sec.max(1),
            free_at: Mutex::new(tokio::time::Instant::now()),
        }
    }

    async fn sent(&self, bytes: u64) {
        let until = {
            let mut free_at = lock(&self.free_at);
            let start = (*free_at).max(tokio::time::Instant::now());
            *free_at = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
            *free_at
        };
        tokio::time::sleep_until(until).await;
    }
}

/// The stores are lent or held by long work: the peer hears "busy" rather than waiting until
/// its request times out (an auditor takes "busy" for offline, not for a failed audit).
pub(crate) const BUSY: &str = "busy: the stores are in use; ask again later";

/// What a device without a store (only its catalog) answers to a push.
const NO_STORE: &str = "this device has no store to hold copies";

async fn busy_or(
    work: impl std::future::Future<Output = Result<open_stores::Work, String>>,
) -> Result<open_stores::Work, String> {
    tokio::time::timeout(Duration::from_secs(10), work).await.unwrap_or_else(|_| Err(BUSY.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_paced_push_takes_as_long_as_its_limit_says() {
        let start = tokio::time::Instant::now();
        let pace = Pace::new(1_000_000);
        for _ in 0..50 {
            pace.sent(100_000).await;
        }
        // 5 MB at 1 MB/s: five seconds of (virtual) time, not less.
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        // Idle time is not saved up: after a pause, the next blob still takes its time.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let again = tokio::time::Instant::now();
        pace.sent(500_000).await;
        assert_eq!(again.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn two_pushes_to_one_device_share_its_limit() {
        let start = tokio::time::Instant::now();
        let pace = Arc::new(Pace::new(1_000_000));
        let push = |pace: Arc<Pace>| async move {
            for _ in 0..25 {
                pace.sent(100_000).await;
            }
        };
        let (a, b) = (tokio::spawn(push(pace.clone())), tokio::spawn(push(pace.clone())));
        a.await.expect("push a");
        b.await.expect("push b");
        // 2 × 2.5 MB at 1 MB/s together: five seconds, as one push of 5 MB.
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[test]
    fn lan_addresses_are_told_from_the_internet() {
        for (addr, lan) in [
            ("/ip4/192.168.1.7/udp/41641/quic-v1", true),
            ("/ip4/10.0.0.2/tcp/41641", true),
            ("/ip4/127.0.0.1/udp/5/quic-v1", true),
            ("/ip4/203.0.113.9/udp/41641/quic-v1", false),
            ("/ip6/fe80::1/udp/41641/quic-v1", true),
            ("/ip6/2001:db8::1/udp/41641/quic-v1", false),
        ] {
            assert_eq!(is_lan(&addr.parse().unwrap()), lan, "{addr}");
        }
    }
}
