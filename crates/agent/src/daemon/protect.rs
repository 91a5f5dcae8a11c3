//! The agent's own work: it backs the folders up when they change (a file watcher, and a
//! periodic rescan because watchers miss changes on network mounts and run out of watches),
//! evaluates every file against the policy, and pushes to the devices the planner picks
//! (`triad_core::policy::plan`) until every file is protected. A device that is needed but
//! cannot be reached is tried again after a while; offline is not lost.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;
use triad_core::policy::{Candidate, State};
use triad_core::round::{Action, Event as RoundEvent, Folder as RoundFolder, Peer, Round};
use triad_core::schedule::{Event, Pace, Schedule};
use triad_core::{DeviceId, Timestamp};
use triad_proto::wire::{self, Response};

use super::{Shared, lock, open_stores, request, sync};
use crate::backup;
use crate::catalog::Catalog;
use std::os::unix::ffi::OsStrExt;
use triad_core::snapshot::FileEntry;

/// What wakes the agent's own work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// A folder changed, the settings changed, a device joined, a push by hand.
    Changed,
    /// A device of the vault connected.
    DeviceConnected,
}

/// Runs until the agent stops. [`triad_core::schedule`] says when a round runs; each round
/// takes the settings as they are then: folders added, removed or re-pointed are watched from
/// the next round, and turning `auto` off (or on) takes effect at once.
pub(super) async fn run(shared: Arc<Shared>, mut wakes: mpsc::Receiver<Wake>) {
    let start = Instant::now();
    let ms = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let pace = |p: &crate::config::ProtectConfig| Pace {
        auto: p.auto,
        rescan_ms: p.rescan_secs.saturating_mul(1000),
        retry_ms: p.retry_secs.saturating_mul(1000),
        settle_ms: p.settle_ms,
    };
    let mut schedule = Schedule::new(pace(&lock(&shared.settings).protect), ms());
    let mut epoch = None;
    // Held for as long as it watches.
    let mut _watcher = None;
    loop {
        // A hand edit of config.toml is noticed here.
        shared.reload_if_changed().await;
        let settings = lock(&shared.settings).protect.clone();
        let now_epoch = shared.settings_epoch.load(std::sync::atomic::Ordering::SeqCst);
        if epoch != Some(now_epoch) {
            if epoch.is_some() {
                schedule.handle(ms(), Event::Paced(pace(&settings)));
            } else if !settings.auto {
                tracing::info!(
                    "the agent's own backups and pushes are off ([protect] auto = false)"
                );
            }
            epoch = Some(now_epoch);
            // The old watcher goes first: a folder removed is no longer watched.
            drop(_watcher.take());
            _watcher = if settings.auto && settings.watch {
                watch(&shared, settings.rescan_secs)
            } else {
                None
            };
        }
        if let Some(triad_core::schedule::Action::Round) = schedule.poll_action(ms()) {
            shared.next_round.store(0, std::sync::atomic::Ordering::Relaxed);
            let complete = round(&shared).await;
            schedule.handle(ms(), Event::RoundDone { complete });
            if complete {
                doing(&shared, lock(&shared.idle).clone());
            }
            continue;
        }
        if !settings.auto {
            doing(&shared, "not backing up or pushing by itself ([protect] auto = false)".into());
        }
        // When the next round starts, as a time: `status` counts down to it.
        let due = schedule.poll_timeout();
        let at = due.map_or(0, |due| super::now_secs() + due.saturating_sub(ms()).div_ceil(1000));
        shared.next_round.store(at, std::sync::atomic::Ordering::Relaxed);
        let wake = match due {
            Some(due) => {
                let until = start + Duration::from_millis(due);
                tokio::select! {
                    () = tokio::time::sleep_until(until) => continue,
                    wake = wakes.recv() => wake,
                }
            }
            None => wakes.recv().await,
        };
        let Some(wake) = wake else { return };
        let event = match wake {
            Wake::Changed => Event::Changed,
            Wake::DeviceConnected => Event::DeviceConnected,
        };
        schedule.handle(ms(), event);
    }
}

/// Tells the schedule when a device of the vault connects: if the last round waited for a
/// copy, it may be the device it waited for (back from a trip, its router restarted), and the
/// retry could be minutes away.
pub(super) async fn on_arrivals(shared: Arc<Shared>) {
    use tokio::sync::broadcast::error::RecvError;
    let mut arrivals = shared.node.arrivals();
    loop {
        let member = match arrivals.recv().await {
            Ok(peer) => shared.node.admission().is_member(&peer),
            Err(RecvError::Lagged(_)) => true,
            Err(RecvError::Closed) => return,
        };
        if member {
            let _ = shared.kick.try_send(Wake::DeviceConnected);
        }
    }
}

/// Watches every folder; each change kicks the agent. `None` if no watcher could start (the
/// periodic rescan still runs). What `status` says between rounds tells which it is.
fn watch(shared: &Arc<Shared>, rescan_secs: u64) -> Option<notify::RecommendedWatcher> {
    let unwatched = |what: &str, reason: &dyn std::fmt::Display| {
        *lock(&shared.idle) = format!(
            "rescanning {what} every {} min: the system gives no watcher ({reason}), so new \
             files wait for the rescan",
            rescan_secs.div_ceil(60)
        );
    };
    *lock(&shared.idle) = "watching the folders".to_owned();
    let folders: Vec<_> =
        lock(&shared.settings).folders.iter().map(|f| (f.id, f.path.clone())).collect();
    let seen = shared.clone();
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        {
            let mut unsaved = lock(&seen.unsaved);
            for path in &event.paths {
                for (id, root) in &folders {
                    if let Ok(rel) = path.strip_prefix(root) {
                        unsaved.entry(*id).or_default().insert(rel.to_path_buf());
                    }
                }
            }
        }
        let _ = seen.kick.try_send(Wake::Changed);
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch folders; relying on the periodic rescan");
            unwatched("the folders", &e);
            return None;
        }
    };
    for folder in &lock(&shared.settings).folders {
        if let Err(e) = watcher.watch(&folder.path, RecursiveMode::Recursive) {
            tracing::warn!(folder = %folder.path.display(), error = %e,
                "cannot watch this folder; relying on the periodic rescan");
            unwatched(&folder.path.display().to_string(), &e);
        }
    }
    Some(watcher)
}

/// Says what the agent's own work is doing (`triad status` shows it).
fn doing(shared: &Shared, what: String) {
    *lock(&shared.doing) = (what, super::now_secs(), false);
}

/// Says what copy the agent's own work waits for: moot once every file is protected.
fn waiting(shared: &Shared, what: String) {
    *lock(&shared.doing) = (what, super::now_secs(), true);
}

fn now() -> Timestamp {
    let d = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp::new(i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_nanos())
}

/// One round: back up, evaluate, push. Returns whether everything that could be done was
/// (false: try again soon).
async fn round(shared: &Arc<Shared>) -> bool {
    let mut complete = true;
    if shared.home.keys().is_err() {
        return true; // A storage-only device owns no folders.
    }
    let settings = lock(&shared.settings).clone();
    if settings.stores.is_empty() || settings.folders.is_empty() {
        return true;
    }

    // Back up what changed, each folder on its own.
    doing(shared, "looking for changes in the folders".into());
    let Ok(work) = shared.stores.work().await else { return false };
    let roster = lock(&shared.roster).clone();
    for folder in &settings.folders {
        // What changed before this backup began is in it (or reported by it); what changes
        // from now on is not.
        let seen = lock(&shared.unsaved).remove(&folder.id);
        let request = backup::Request { folder, now: now(), options: backup::Options::default() };
        let outcome = tokio::task::block_in_place(|| {
            // The stores are locked for each put and commit, not for the whole folder.
            backup::run(&shared.home, &settings, &roster, &work, request, &|_| {})
        });
        if let Ok(report) = &outcome
            && !report.skipped.is_empty()
        {
            // Not in the snapshot: still to be backed up.
            let mut unsaved = lock(&shared.unsaved);
            unsaved
                .entry(folder.id)
                .or_default()
                .extend(report.skipped.iter().map(|s| s.rel.clone()));
        }
        match outcome {
            Ok(report) if report.unchanged => {}
            Ok(report) => tracing::info!(folder = %folder.path.display(),
                snapshot = %report.snapshot.short(), files = report.stats.files,
                bytes_read = report.bytes_read, "folder backed up"),
            Err(e) => {
                tracing::warn!(folder = %folder.path.display(), error = %super::error_chain(&e),
                    "backup failed");
                complete = false;
                if let Some(seen) = seen {
                    lock(&shared.unsaved).entry(folder.id).or_default().extend(seen);
                }
            }
        }
    }
    drop(work);

    // The devices that could take a copy: those on the roster that answer, asked at once.
    let me = shared.home.device_id();
    let others: Vec<_> = roster.devices().into_iter().filter(|e| e.device != me).cloned().collect();
    let answers = futures::future::join_all(others.iter().map(|entry| async {
        let peer = triad_net::peer_id(entry.device);
        let hello = tokio::time::timeout(
            Duration::from_secs(10),
            request(shared, peer, &wire::Request::Hello),
        )
        .await;
        match hello {
            Ok(Ok(Response::Hello { stores, .. })) => Some((peer, stores)),
            _ => None, // Offline, or not answering: not a candidate this round.
        }
    }))
    .await;
    let mut candidates = Vec::new();
    for (entry, answer) in others.iter().zip(answers) {
        let Some((peer, stores)) = answer else { continue };
        if !stores.is_empty() {
            // A store was added there since it refused for having none.
            let mut refusals = lock(&shared.refusals);
            if refusals.get(&entry.device).is_some_and(|(code, ..)| *code == wire::Refusal::NoStore)
            {
                refusals.remove(&entry.device);
            }
        }
        let lan = shared.node.connected(&peer).as_ref().is_some_and(super::is_lan);
        candidates.push((
            entry.name.clone(),
            Candidate {
                device: entry.device,
                site: entry.site.clone(),
                has_room: stores.iter().all(|s| s.free > 0),
                stores: stores.iter().map(|s| (s.id, s.media)).collect(),
                lan,
            },
        ));
    }

    check_local(shared, &settings).await;

    // What the round does is decided by `triad_core::round`: the audits due (a failure makes
    // a device's copies count for nothing, and the plan repairs them), the verdict, and the
    // pushes that complete every folder's policy. This loop only does it.
    let windows = settings.policy.windows();
    let peers: Vec<Peer> = candidates
        .iter()
        .map(|(_, candidate)| {
            let ledger = lock(&shared.ledger);
            let mended = ledger.awaits_audit(candidate.device);
            let proof =
                ledger.proof_of(candidate.device).map(|(at, _)| (Timestamp::new(at, 0), mended));
            Peer { candidate: candidate.clone(), proof }
        })
        .collect();
    let name_of = |device: DeviceId| {
        candidates.iter().find(|(_, c)| c.device == device).map_or("?", |(n, _)| n.as_str())
    };
    let site = shared.home.identity().site.clone();
    let mut engine = Round::new(windows, &site, peers, now());
    // The folders as judged, in the order the round names them.
    let mut judged: Vec<String> = Vec::new();
    let mut last_failure = None;
    let timeout = Duration::from_secs(settings.protect.push_timeout_secs.max(1));
    loop {
        let event = match engine.poll_action() {
            Some(Action::Audit(device)) => {
                let outcome = super::audit::audit(shared, device).await;
                let outcome =
                    serde_json::to_string(&outcome.to_answer()).expect("answers serialize");
                tracing::info!(device = %name_of(device), %outcome, "audit");
                let awaits_audit = lock(&shared.ledger).awaits_audit(device);
                RoundEvent::Audited { device, awaits_audit }
            }
            Some(Action::Evaluate) => {
                let folders = {
                    let Ok(work) = shared.stores.work().await else { return false };
                    match super::evaluate_folders(shared, &work, false) {
                        Ok(f) => f,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot evaluate the folders");
                            return false;
                        }
                    }
                };
                // Every trusted device of the vault sees this verdict.
                let names = crate::status::Names { roster: &roster, home_site: &site, now: now() };
                let summaries: Vec<_> =
                    folders.iter().map(|f| crate::status::summarise(f, &names, &[])).collect();
                let own: Vec<_> = folders.iter().map(|f| f.id).zip(&summaries).collect();
                super::gossip::share_verdict(shared, &own);

                let ledger = lock(&shared.ledger).clone();
                let mut views = Vec::new();
                judged.clear();
                for folder in &folders {
                    let Some((snapshot, _)) = folder.snapshot else { continue };
                    // A device that already holds this snapshot has nothing more to take for
                    // it.
                    let held_by = candidates
                        .iter()
                        .map(|(_, c)| c.device)
                        .filter(|&d| {
                            ledger.get(d, folder.id).is_some_and(|(_, a)| !a.wants(snapshot))
                        })
                        .collect();
                    views.push(RoundFolder {
                        policy: folder.policy,
                        protected: folder
                            .files
                            .iter()
                            .all(|f| f.evaluation.state == State::Protected),
                        files: folder.files.iter().map(|f| f.copies.clone()).collect(),
                        held_by,
                    });
                    judged.push(folder.path.clone());
                }
                RoundEvent::Evaluated(views)
            }
            Some(Action::Push(device)) => {
                let name = name_of(device);
                tracing::info!(device = %name, "pushing to complete the policy");
                doing(shared, format!("pushing to {name}"));
                let acknowledged = match tokio::time::timeout(timeout, sync(shared, name, None))
                    .await
                {
                    Ok(Ok(done)) => {
                        tracing::info!(device = %name, blobs = done.blobs_sent,
                            bytes = done.bytes_sent, "push acknowledged");
                        true
                    }
                    Ok(Err(failure)) => {
                        tracing::warn!(device = %name, error = %failure.message, "push failed; will retry");
                        last_failure =
                            Some(format!("a push to {name} failed: {}", failure.message));
                        false
                    }
                    Err(_) => {
                        tracing::warn!(device = %name, "push did not finish in time; will resume");
                        let message = format!("did not finish within {} s", timeout.as_secs());
                        super::push::note_failure(shared, name, &message);
                        false
                    }
                };
                let awaits_audit = lock(&shared.ledger).awaits_audit(device);
                RoundEvent::Pushed { device, acknowledged, awaits_audit }
            }
            Some(Action::Done(outcome)) => {
                for &i in &outcome.stuck {
                    let path = judged.get(i).map_or("?", String::as_str);
                    tracing::info!(folder = %path, "not every file is protected and the devices that answer cannot complete it now");
                }
                if !outcome.mending.is_empty() {
                    // Audited at the next round, soon: until then a mended copy does not count.
                    doing(shared, "checking the copies it just mended".into());
                } else if let Some(failure) = last_failure {
                    waiting(shared, failure);
                } else if !outcome.stuck.is_empty() {
                    let away: Vec<&str> = others
                        .iter()
                        .filter(|e| !candidates.iter().any(|(_, c)| c.device == e.device))
                        .map(|e| e.name.as_str())
                        .collect();
                    waiting(
                        shared,
                        if away.is_empty() {
                            "waiting for a device that can take the missing copies (add one with `triad pair`)"
                                .to_owned()
                        } else {
                            format!("waiting for {} to answer", away.join(", "))
                        },
                    );
                }
                return complete && outcome.complete();
            }
            None => return false, // The round asked for nothing it was not told.
        };
        engine.handle(now(), event);
    }
}

/// A source file (its path in the folder) and the BLAKE3 its snapshot recorded.
type Expected = (Vec<u8>, [u8; 32]);

/// Proves this device's own copies again when their last check is half an audit window old:
/// each local store is scrubbed (every blob re-hashed), and each folder's source files that
/// look unchanged are re-hashed against their snapshot. A source file whose bytes changed
/// while its modification time did not is suspect: it is not counted as a copy, and said.
async fn check_local(shared: &Shared, settings: &crate::config::Config) {
    let due = i64::try_from(settings.policy.audit_window_secs / 2).unwrap_or(i64::MAX);
    let now_secs = now().secs;
    let is_due = |key: &str| {
        lock(&shared.ledger).checked(key).is_none_or(|at| now_secs.saturating_sub(at) >= due)
    };
    for store in settings.stores.iter() {
        let key = format!("store:{}", store.id.to_hex());
        if !is_due(&key) {
            continue;
        }
        let Ok(work) = shared.stores.work().await else { return };
        let report = tokio::task::block_in_place(|| {
            let index = open_stores::read(&work).iter().position(|s| s.id() == store.id)?;
            open_stores::scrub(&work, index)
        });
        match report {
            Some(Ok(report)) if report.damaged.is_empty() => {
                lock(&shared.ledger).check_passed(key, now_secs);
            }
            Some(Ok(report)) => {
                tracing::warn!(store = %store.path.display(), damaged = report.damaged.len(),
                    "the store has damaged blobs: its copies no longer count; run `triad verify`");
                lock(&shared.ledger).check_failed(key);
            }
            Some(Err(e)) => {
                tracing::warn!(store = %store.path.display(), error = %e, "cannot scrub")
            }
            None => {}
        }
    }
    let Ok(keys) = shared.home.keys() else { return };
    let me = shared.home.device_id();
    for folder in &settings.folders {
        let key = format!("folder:{}", folder.id.to_hex());
        if !is_due(&key) {
            continue;
        }
        // What each unchanged file should hash to, read under the stores' lock.
        let Ok(work) = shared.stores.work().await else { return };
        let expected = tokio::task::block_in_place(|| -> Result<Vec<Expected>, String> {
            let stores = open_stores::read(&work);
            let catalog = Catalog::new(keys, &stores);
            let heads = catalog.heads().map_err(|e| super::error_chain(&e))?;
            let Some(head) =
                heads.iter().find(|h| h.head.device == me && h.head.folder == folder.id)
            else {
                return Ok(Vec::new());
            };
            let files = crate::status::files_of(&catalog, head.head.snapshot)
                .map_err(|e| super::error_chain(&e))?;
            let mut out = Vec::new();
            for (path, entry, mtime) in files {
                if crate::status::source_unchanged(&folder.path, &path, mtime) {
                    let file: FileEntry =
                        catalog.load(entry).map_err(|e| super::error_chain(&e))?;
                    out.push((path, file.hash));
                }
            }
            Ok(out)
        });
        drop(work);
        let expected = match expected {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(folder = %folder.path.display(), error = %e, "cannot check the source files");
                continue;
            }
        };
        // Re-hashed without the lock, at a bounded rate.
        let root = folder.path.clone();
        let rate = settings.protect.rehash_bytes_per_sec;
        let suspect = tokio::task::spawn_blocking(move || {
            let mut suspect = Vec::new();
            let (started, mut read) = (std::time::Instant::now(), 0u64);
            let mut buf = vec![0u8; 1 << 20];
            for (rel, hash) in expected {
                let path = root.join(std::ffi::OsStr::from_bytes(&rel));
                let Ok(mut file) = std::fs::File::open(&path) else { continue };
                let mut hasher = blake3::Hasher::new();
                let whole = loop {
                    match std::io::Read::read(&mut file, &mut buf) {
                        Ok(0) => break true,
                        Ok(n) => {
                            hasher.update(&buf[..n]);
                            read += n as u64;
                            std::thread::sleep(ahead(read, rate, started.elapsed()));
                        }
                        Err(_) => break false,
                    }
                };
                if whole && *hasher.finalize().as_bytes() != hash {
                    suspect.push(String::from_utf8_lossy(&rel).into_owned());
                }
            }
            suspect
        })
        .await
        .unwrap_or_default();
        if !suspect.is_empty() {
            tracing::warn!(folder = %folder.path.display(), files = ?suspect,
                "source files changed on disk without a new modification time (bit rot?); they no longer count as copies");
        }
        let mut ledger = lock(&shared.ledger);
        ledger.check_passed(key, now_secs);
        ledger.suspect.insert(folder.id.to_hex(), suspect);
    }
    if let Err(e) = lock(&shared.ledger).save(&shared.home_path) {
        tracing::warn!(error = %e, "cannot save the replica ledger");
    }
}

/// How long to wait, after `read` bytes in `elapsed`, to keep to `rate` bytes per second
/// (0: no limit).
fn ahead(read: u64, rate: u64, elapsed: Duration) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(read as f64 / rate as f64).saturating_sub(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rehash_keeps_to_its_rate() {
        let mib = 1024 * 1024;
        assert_eq!(ahead(64 * mib, 0, Duration::ZERO), Duration::ZERO, "no limit");
        assert_eq!(ahead(64 * mib, 64 * mib, Duration::ZERO), Duration::from_secs(1));
        assert_eq!(
            ahead(64 * mib, 64 * mib, Duration::from_millis(400)),
            Duration::from_millis(600)
        );
        assert_eq!(ahead(64 * mib, 64 * mib, Duration::from_secs(2)), Duration::ZERO, "behind");
    }
}
