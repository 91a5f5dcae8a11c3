//! What `triad status`, `triad check` and `triad audit` show: this device's folders against
//! the policy, the other devices' verdicts, what this device holds, and the audits.

use std::path::Path;

use triad_core::policy::State;
use triad_core::roster::{Entry, Roster};

use super::socket::Failure;
use super::{Shared, audit, error_chain, gossip, lock, now_secs, open_stores, protect};
use crate::catalog::Catalog;
use crate::control::answer;
use crate::status::{self, Names};

/// Evaluates this device's folders under the stores' read lock.
pub(super) fn evaluate_folders(
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

pub(super) async fn status(shared: &Shared, files: &[String]) -> Result<answer::Status, Failure> {
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
        summaries.iter().filter_map(|s| State::parse(&s.worst)).max().unwrap_or(State::Protected);
    let (vault, vault_worst) = vault_view(shared, &roster);
    let holds = holdings(shared).await;
    let survives = summaries.iter().all(|s| s.survives_site_loss);
    // What the last round waited for is past once every file is protected (a `sync` by hand,
    // or a device that answered since): the next round, kicked now, says what it does.
    let (doing, since) = {
        let doing = lock(&shared.doing);
        if doing.2 && worst == State::Protected {
            let _ = shared.kick.try_send(protect::Wake::Changed);
            (lock(&shared.idle).clone(), doing.1)
        } else {
            (doing.0.clone(), doing.1)
        }
    };
    // Devices that refuse copies: a full device is not an offline one.
    let refusing: Vec<answer::Refusing> = lock(&shared.refusals)
        .iter()
        .filter_map(|(device, (code, reason, since))| {
            Some(answer::Refusing {
                device: roster.device(*device)?.name.clone(),
                code: code.as_str().to_owned(),
                reason: reason.clone(),
                since: *since,
            })
        })
        .collect();
    Ok(answer::Status {
        device: identity.name.clone(),
        site: identity.site.clone(),
        storage_only: shared.home.keys().is_err(),
        worst: worst.max(vault_worst),
        exit: worst.max(vault_worst).exit_code(),
        own_worst: worst,
        survives_site_loss: survives,
        doing: answer::Doing {
            what: doing,
            since,
            next: Some(shared.next_round.load(std::sync::atomic::Ordering::Relaxed))
                .filter(|at| *at > 0),
        },
        refusing,
        folders: summaries,
        vault,
        holds,
    })
}

/// The other devices' folders as their owners last judged them (from their signed verdicts),
/// and the worst state among them.
fn vault_view(shared: &Shared, roster: &Roster) -> (Vec<answer::VaultDevice>, State) {
    let me = shared.home.device_id();
    let mut verdicts = lock(&shared.records).verdicts_of_others(me);
    verdicts.sort_by_key(|v| v.device);
    let mut worst = State::Protected;
    let mut out = Vec::new();
    for v in verdicts {
        let Some(entry) = roster.device(v.device) else { continue };
        worst = worst.max(v.worst());
        let reachable = shared.node.connected(&triad_net::peer_id(v.device)).is_some();
        let folders: Vec<answer::VaultFolder> = v
            .folders
            .iter()
            .map(|f| answer::VaultFolder {
                folder: f.path.clone(),
                policy: f.policy.clone(),
                last_backup: f.last_backup,
                counts: State::ALL.iter().map(|s| s.as_str().to_owned()).zip(f.counts).collect(),
                worst: f.worst,
                reasons: f
                    .reasons
                    .iter()
                    .map(|(s, w, n)| (s.as_str().to_owned(), w.clone(), *n))
                    .collect(),
            })
            .collect();
        out.push(answer::VaultDevice {
            device: entry.name.clone(),
            site: entry.site.clone(),
            reachable,
            evaluated: v.evaluated,
            worst: v.worst(),
            folders,
        });
    }
    (out, worst)
}

/// What this device's stores hold for the vault (blobs and bytes, no names), and when a
/// device of the vault last audited it.
async fn holdings(shared: &Shared) -> answer::Holds {
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
    answer::Holds { blobs, bytes, last_audited: Some(audited).filter(|a| *a > 0) }
}

pub(super) async fn check(
    shared: &Shared,
    hashes: &[String],
    card: Option<&Path>,
) -> Result<answer::Checked, Failure> {
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
    let files: Vec<answer::CheckedFile> = hashes
        .iter()
        .map(|hex| {
            let found = parse_hash(hex).and_then(|h| best.get(&h));
            answer::CheckedFile {
                hash: hex.clone(),
                state: found.map(|(state, _)| *state),
                vault_path: found.map(|(_, path)| path.clone()),
            }
        })
        .collect();
    Ok(answer::Checked { files })
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

pub(super) async fn audit_devices(shared: &Shared, now: bool) -> Result<answer::Audits, Failure> {
    let me = shared.home.device_id();
    let others: Vec<Entry> =
        lock(&shared.roster).devices().into_iter().filter(|e| e.device != me).cloned().collect();
    let mut rows = Vec::new();
    for entry in others {
        let outcome = if now { Some(audit::audit(shared, entry.device).await) } else { None };
        let proof = lock(&shared.ledger).proof_of(entry.device);
        rows.push(answer::AuditRow {
            device: entry.name,
            site: entry.site,
            last_proven: proof.map(|(at, _)| at),
            bad: proof.is_some_and(|(_, bad)| bad),
            audit: outcome.map(|o| o.to_answer()),
        });
    }
    if rows.iter().any(|r| matches!(r.audit, Some(answer::AuditOutcome::Failed { .. }))) {
        // Repair now rather than at the next round.
        let _ = shared.kick.try_send(protect::Wake::Changed);
    }
    Ok(answer::Audits { devices: rows })
}
