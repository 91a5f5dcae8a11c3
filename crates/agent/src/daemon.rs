//! The agent: the long-running process of a device. It listens for the vault's other devices
//! (libp2p over QUIC, TCP as the fallback), serves their control requests and blob pushes,
//! runs pairing windows, pushes to peers on request, and answers the `triad` commands on its
//! control socket.
//!
//! The stores are opened once and shared by every transfer (see [`crate::open_stores`]); a
//! `triad` command that needs them borrows them between transfers.
//!
//! This file holds the shared state and `run`; one concern a submodule: `serve` (the peer
//! protocols), `pairing` (the inviter), `push` (sync, the pusher), `fetch` (blobs for a
//! restore), `socket` (the `triad` commands), `view` (status, check, audits as shown),
//! `pace` (bandwidth limits), `gossip`, `audit` and `protect` (the agent's own work).

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use triad_core::DeviceId;
use triad_core::roster::{Entry, Role, Roster};
use triad_net::pair::Secret;
use triad_net::{Admission, Multiaddr, Node, NodeConfig, PeerId};
use triad_proto::wire::{
    BLOBS_PROTOCOL, CONTROL_PROTOCOL, FETCH_PROTOCOL, Joiner, PAIR_PROTOCOL, PairRole,
    RECOVER_PROTOCOL, Refusal,
};

use crate::config::Config;
use crate::control::{ADDRS, SOCKET};
use crate::home::Home;
use crate::open_stores::{self, OpenStores};
use crate::peers::Book;
use crate::replicas::Ledger;

mod audit;
mod fetch;
mod gossip;
mod pace;
mod pairing;
mod protect;
mod push;
mod serve;
mod socket;
mod view;

use pace::Pace;

// What `run` starts.
use pairing::on_pairing;
use serve::{on_blobs, on_control, on_fetch, on_recovery, serve};
use socket::serve_socket;

// Reached as `super::…` by `audit`, `gossip` and `protect`.
use push::{request, sync};
use serve::{BUSY, refuse};
use socket::SyncFailure;
use view::evaluate_folders;

/// How long a control request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping agent waits for the stores' current write to end.
const STOP_WAIT: Duration = Duration::from_secs(20);

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Whether to find and announce devices on the LAN by mDNS.
    pub mdns: bool,
    /// Whether to relay connections between roster devices that cannot reach each other.
    pub relay: bool,
    /// Whether to ask the home router for a port mapping (UPnP).
    pub upnp: bool,
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
    /// What the agent does between rounds: watching the folders, or (when the system gives
    /// no watcher) waiting for the periodic rescan, and why.
    idle: Mutex<String>,
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
    /// What went to and came from each device since the agent started (`triad devices`).
    traffic: Mutex<std::collections::HashMap<DeviceId, Traffic>>,
}

/// What went to and came from one device since the agent started.
#[derive(Debug, Clone, Default)]
struct Traffic {
    /// Blob bytes pushed to it and acknowledged.
    sent: u64,
    /// Blob bytes received from it.
    received: u64,
    /// Bytes per second of the last push to it that moved at least [`RATE_MIN_BYTES`].
    send_rate: Option<u64>,
    /// Likewise for the last push from it.
    receive_rate: Option<u64>,
    /// The round trip of the last hello it answered, in milliseconds.
    rtt_ms: Option<u64>,
    /// The last push to it that failed: why, and when (seconds since the epoch).
    last_error: Option<(String, u64)>,
}

/// Transfers smaller than this say too little about a link's speed to report it.
const RATE_MIN_BYTES: u64 = 1 << 20;

impl Traffic {
    /// The rate of `bytes` moved in `took`, if they were enough to tell.
    fn rate(bytes: u64, took: Duration) -> Option<u64> {
        (bytes >= RATE_MIN_BYTES)
            .then(|| (bytes as f64 / took.as_secs_f64().max(1e-3)).round() as u64)
    }
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
    /// Changes what is known of the traffic with `device`.
    fn traffic(&self, device: DeviceId, change: impl FnOnce(&mut Traffic)) {
        change(lock(&self.traffic).entry(device).or_default());
    }

    /// The settings as they are now.
    fn config(&self) -> Config {
        lock(&self.settings).clone()
    }

    /// Reads `config.toml` again and works by it from now on: the stores of the new settings
    /// are opened once no work holds the old ones, the folders are watched, and a round
    /// starts. Answers what the agent now does.
    async fn reload(self: &Arc<Self>) -> Result<crate::control::answer::Reloaded, String> {
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
        Ok(crate::control::answer::Reloaded {
            folders: config.folders.iter().map(|f| f.path.display().to_string()).collect(),
            stores: config
                .stores
                .iter()
                .filter(|s| !s.catalog)
                .map(|s| s.path.display().to_string())
                .collect(),
            backs_up: protects && !config.folders.is_empty(),
        })
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
        // A relayed connection shows the relay's circuit, not where the device is: its own
        // record says which circuits reach it.
        if let Some(addr) = addr.filter(|a| !triad_net::addr::is_relayed(a)) {
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
    let node = Node::start(
        keypair,
        NodeConfig {
            listen: options.listen,
            mdns: options.mdns,
            relay: options.relay,
            upnp: options.upnp,
        },
    )
    .await?;
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
        idle: Mutex::new("watching the folders".to_owned()),
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
        traffic: Mutex::new(std::collections::HashMap::new()),
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
    crate::notify::notify("READY=1\nSTATUS=protecting the folders, serving the other devices");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("agent stopping");
    crate::notify::notify("STOPPING=1");
    // Every put and commit (of a backup, a push being received, a scrub) holds the stores'
    // inner lock: once this holds it, the one under way has ended, and none begins after (the
    // lock is kept until the process ends). The store's write order makes a commit cut short
    // safe too, so this waits only so long. Closed stores are left closed.
    if let Some(work) = shared.stores.try_work() {
        let quiet = tokio::task::spawn_blocking(move || {
            let held = open_stores::write(&work);
            std::mem::forget(held);
            std::mem::forget(work);
        });
        if tokio::time::timeout(STOP_WAIT, quiet).await.is_err() {
            tracing::warn!(
                "the stores stayed busy; stopping anyway (nothing acknowledged is lost)"
            );
        }
    }
    let _ = std::fs::remove_file(&socket_path);
    let _ = std::fs::remove_file(home_path.join(ADDRS));
    tracing::info!("agent stopped");
    Ok(())
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

/// Bytes free for blobs in the store at `path`: what its file system has for unprivileged
/// writers, capped by the store's quota. Unknown (`u64::MAX`) if the file system says nothing.
fn free_bytes(path: &Path, quota: Option<u64>) -> u64 {
    let disk =
        rustix::fs::statvfs(path).map_or(u64::MAX, |s| s.f_bavail.saturating_mul(s.f_frsize));
    disk.min(quota.unwrap_or(u64::MAX))
}

pub(crate) use triad_net::addr::is_lan;
