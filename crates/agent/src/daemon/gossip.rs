//! Membership and addresses converge: every two devices that meet exchange their rosters and
//! the address records they hold, each answering with what the other lacks.
//!
//! Each device signs a record of its own addresses (see `triad_core::address`) and passes on
//! every record it holds, so a device learns where another is from any third device. The agent
//! keeps in touch with every device of the roster: at once when it starts and whenever it has
//! news (a roster change, a newer record), then every 20 s while a device answers, backing off
//! up to 5 minutes while it does not ([`triad_core::greet`] decides).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use triad_core::DeviceId;
use triad_core::address::{AddressRecord, SignedAddressRecord};
use triad_core::greet::{self, Greetings};
use triad_core::policy::State;
use triad_core::roster::{Role, Roster};
use triad_core::verdict::{FolderVerdict, SignedVerdict, Verdict};
use triad_net::{Multiaddr, PeerId};
use triad_proto::wire::{self, ADDRESS_RECORDS_MAX, Response};

use super::{REQUEST_TIMEOUT, Shared, lock, request};

/// The address records and verdicts this device holds, its own among them.
#[derive(Debug, Default)]
pub(super) struct Records {
    by_device: HashMap<DeviceId, SignedAddressRecord>,
    /// The addresses the own record was made of, and its sequence number.
    own: Option<(Vec<String>, u64)>,
    verdicts: HashMap<DeviceId, SignedVerdict>,
}

impl Records {
    /// Every record held, encoded.
    fn encoded(&self) -> Vec<Vec<u8>> {
        self.by_device.values().take(ADDRESS_RECORDS_MAX).map(SignedAddressRecord::encode).collect()
    }

    /// Every verdict held, encoded.
    fn verdicts_encoded(&self) -> Vec<Vec<u8>> {
        self.verdicts.values().take(ADDRESS_RECORDS_MAX).map(SignedVerdict::encode).collect()
    }

    /// The verdicts of other devices, as held.
    pub(super) fn verdicts_of_others(&self, me: DeviceId) -> Vec<Verdict> {
        self.verdicts
            .values()
            .filter(|v| v.verdict.device != me)
            .map(|v| v.verdict.clone())
            .collect()
    }
}

/// Milliseconds since the epoch, past `last`: a sequence number that only grows.
fn next_seq(last: Option<u64>) -> u64 {
    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX);
    last.map_or(now_ms, |last| now_ms.max(last + 1))
}

/// Signs a new verdict of this device's folders from `folders` (id and summary each) if it
/// differs from the last one, or the last one is a minute old; news to pass on if it differs.
pub(super) fn share_verdict(
    shared: &Shared,
    folders: &[(triad_core::FolderId, &crate::status::FolderSummary)],
) {
    let folders: Vec<FolderVerdict> = folders
        .iter()
        .take(triad_core::verdict::FOLDERS_MAX)
        .map(|(id, s)| FolderVerdict {
            folder: *id,
            path: s.folder.chars().take(triad_core::verdict::TEXT_MAX / 4).collect(),
            policy: s.policy.clone(),
            last_backup: s.snapshot.as_ref().map(|(_, at)| *at),
            counts: State::ALL.map(|state| s.counts.get(state.as_str()).copied().unwrap_or(0)),
            worst: State::parse(&s.worst).unwrap_or(State::Lost),
            reasons: s
                .reasons
                .iter()
                .take(triad_core::verdict::REASONS_MAX)
                .map(|(state, words, n)| {
                    let words: String =
                        words.chars().take(triad_core::verdict::TEXT_MAX / 4).collect();
                    (State::parse(state).unwrap_or(State::Lost), words, *n)
                })
                .collect(),
        })
        .collect();
    let me = shared.home.device_id();
    let now = i64::try_from(super::now_secs()).unwrap_or(i64::MAX);
    let mut records = lock(&shared.records);
    let held = records.verdicts.get(&me);
    let changed = held.is_none_or(|h| h.verdict.folders != folders);
    if !changed && held.is_some_and(|h| now - h.verdict.evaluated < 60) {
        return;
    }
    let seq = next_seq(held.map(|h| h.verdict.seq));
    let verdict = Verdict { device: me, seq, evaluated: now, folders };
    let signed = SignedVerdict::sign(shared.home.device_key(), shared.home.vault(), verdict);
    records.verdicts.insert(me, signed);
    drop(records);
    if changed {
        news_to_tell(shared);
    }
}

/// Takes the verdicts among `encoded` that verify, name a trusted device of the roster other
/// than this one, and are newer than those held. Returns whether any was news, and the
/// sequence number the sender holds for each device.
fn take_verdicts(shared: &Shared, encoded: &[Vec<u8>]) -> (bool, HashMap<DeviceId, u64>) {
    let vault = shared.home.vault();
    let me = shared.home.device_id();
    let roster = lock(&shared.roster);
    let mut records = lock(&shared.records);
    let mut theirs = HashMap::new();
    let mut news = false;
    for bytes in encoded.iter().take(ADDRESS_RECORDS_MAX) {
        let Ok(signed) = SignedVerdict::decode(bytes, vault) else {
            tracing::debug!("a verdict that does not verify was dropped");
            continue;
        };
        let device = signed.verdict.device;
        theirs.insert(device, signed.verdict.seq);
        let trusted = roster.device(device).is_some_and(|e| e.role == Role::Trusted);
        if device == me || !trusted {
            continue;
        }
        if signed.newer_than(records.verdicts.get(&device)) {
            records.verdicts.insert(device, signed);
            news = true;
        }
    }
    (news, theirs)
}

/// The verdicts held that are newer than `theirs` says the other device holds.
fn verdicts_they_lack(shared: &Shared, theirs: &HashMap<DeviceId, u64>) -> Vec<Vec<u8>> {
    lock(&shared.records)
        .verdicts
        .values()
        .filter(|v| theirs.get(&v.verdict.device).is_none_or(|seq| *seq < v.verdict.seq))
        .take(ADDRESS_RECORDS_MAX)
        .map(SignedVerdict::encode)
        .collect()
}

/// Signs a new record of this device's addresses if they changed since the last one.
fn refresh_own(shared: &Shared) {
    let mut addrs: Vec<String> = triad_net::addr::for_others(shared.node.listen_addrs())
        .into_iter()
        .map(|a| a.to_string())
        .collect();
    addrs.truncate(triad_core::address::ADDRESSES_MAX);
    let mut records = lock(&shared.records);
    if records.own.as_ref().is_some_and(|(held, _)| *held == addrs) {
        return;
    }
    let seq = next_seq(records.own.as_ref().map(|(_, last)| *last));
    let me = shared.home.device_id();
    let record = AddressRecord { device: me, seq, addrs: addrs.clone() };
    let signed = SignedAddressRecord::sign(shared.home.device_key(), shared.home.vault(), record);
    records.by_device.insert(me, signed);
    records.own = Some((addrs, seq));
}

/// Takes the records among `encoded` that verify, name a device of the roster other than this
/// one, and are newer than those held; their addresses go to the address book and the network.
/// Returns whether any was news, and the sequence number the sender holds for each device.
async fn take_records(shared: &Shared, encoded: &[Vec<u8>]) -> (bool, HashMap<DeviceId, u64>) {
    let vault = shared.home.vault();
    let me = shared.home.device_id();
    let mut theirs = HashMap::new();
    let mut learnt: Vec<SignedAddressRecord> = Vec::new();
    {
        let roster = lock(&shared.roster);
        let mut records = lock(&shared.records);
        for bytes in encoded.iter().take(ADDRESS_RECORDS_MAX) {
            let Ok(signed) = SignedAddressRecord::decode(bytes, vault) else {
                tracing::debug!("an address record that does not verify was dropped");
                continue;
            };
            let device = signed.record.device;
            theirs.insert(device, signed.record.seq);
            if device == me || roster.device(device).is_none() {
                continue;
            }
            if signed.newer_than(records.by_device.get(&device)) {
                records.by_device.insert(device, signed.clone());
                learnt.push(signed);
            }
        }
    }
    if !learnt.is_empty() {
        let mut book = lock(&shared.book);
        for signed in &learnt {
            // The best address ends first.
            for addr in signed.record.addrs.iter().rev() {
                book.add(signed.record.device, addr);
            }
        }
        if let Err(e) = book.save(&shared.home_path) {
            tracing::warn!(error = %e, "cannot save the address book");
        }
    }
    for signed in &learnt {
        let device = signed.record.device;
        let peer = triad_net::peer_id(device);
        for addr in &signed.record.addrs {
            if let Ok(addr) = addr.parse::<Multiaddr>() {
                let _ = shared.node.add_address(peer, addr).await;
            }
        }
        tracing::info!(%device, addrs = ?signed.record.addrs, "learnt where a device is");
    }
    (!learnt.is_empty(), theirs)
}

/// The records held that are newer than `theirs` says the other device holds.
fn records_they_lack(shared: &Shared, theirs: &HashMap<DeviceId, u64>) -> Vec<Vec<u8>> {
    lock(&shared.records)
        .by_device
        .values()
        .filter(|r| theirs.get(&r.record.device).is_none_or(|seq| *seq < r.record.seq))
        .take(ADDRESS_RECORDS_MAX)
        .map(SignedAddressRecord::encode)
        .collect()
}

/// Whether `theirs` lacks anything of `ours`.
fn lacks(theirs: &Roster, ours: &Roster) -> bool {
    let mut merged = theirs.clone();
    merged.merge(ours).unwrap_or(false)
}

/// Answers a [`wire::Request::Gossip`] of `peer`, a device of the roster.
pub(super) async fn answer(
    shared: &Arc<Shared>,
    peer: PeerId,
    roster: &[u8],
    addresses: &[Vec<u8>],
    verdicts: &[Vec<u8>],
) -> Response {
    let theirs = match Roster::decode(roster) {
        Ok(r) => r,
        Err(e) => {
            return Response::Refused {
                code: wire::Refusal::Other,
                reason: format!("roster refused: {e}"),
            };
        }
    };
    let changed = match shared.merge_roster(&theirs) {
        Ok(changed) => changed,
        Err(reason) => return Response::Refused { code: wire::Refusal::Other, reason },
    };
    let (news, theirs_seq) = take_records(shared, addresses).await;
    let trusted = shared.is_trusted(&peer);
    let (verdict_news, their_verdicts) =
        if trusted { take_verdicts(shared, verdicts) } else { (false, HashMap::new()) };
    if changed || news || verdict_news {
        news_to_tell(shared);
    }
    refresh_own(shared);
    let ours = lock(&shared.roster).clone();
    let roster = lacks(&theirs, &ours).then(|| ours.encode());
    Response::Gossip {
        roster,
        addresses: records_they_lack(shared, &theirs_seq),
        // Folder paths and reasons: for trusted devices only.
        verdicts: if trusted { verdicts_they_lack(shared, &their_verdicts) } else { Vec::new() },
    }
}

/// Exchanges rosters and address records with `peer`; returns whether it answered.
pub(super) async fn exchange(shared: &Arc<Shared>, peer: PeerId) -> bool {
    refresh_own(shared);
    let roster = lock(&shared.roster).encode();
    let trusted = shared.is_trusted(&peer);
    let (addresses, verdicts) = {
        let records = lock(&shared.records);
        // Folder paths and reasons: for trusted devices only.
        (records.encoded(), if trusted { records.verdicts_encoded() } else { Vec::new() })
    };
    let asked = wire::Request::Gossip { roster: roster.clone(), addresses, verdicts };
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, request(shared, peer, &asked)).await;
    let (theirs, addresses, verdicts) = match answer {
        Ok(Ok(Response::Gossip { roster, addresses, verdicts })) => (roster, addresses, verdicts),
        // An agent that predates gossip: at least it gets the roster.
        Ok(Err(super::SyncFailure::Unreachable(_))) | Err(_) => return false,
        Ok(_) => {
            let pushed = request(shared, peer, &wire::Request::Roster { roster }).await;
            return pushed.is_ok();
        }
    };
    let mut news = false;
    if let Some(bytes) = theirs {
        match Roster::decode(&bytes) {
            Ok(theirs) => match shared.merge_roster(&theirs) {
                Ok(changed) => news |= changed,
                Err(e) => tracing::warn!(%peer, error = %e, "a peer's roster was refused"),
            },
            Err(e) => tracing::warn!(%peer, error = %e, "a peer's roster was refused"),
        }
    }
    news |= take_records(shared, &addresses).await.0;
    if trusted {
        news |= take_verdicts(shared, &verdicts).0;
    }
    if let Some(device) = triad_net::device_id(&peer) {
        shared.remember(device, shared.node.connected(&peer).as_ref());
    }
    if news {
        news_to_tell(shared);
    }
    true
}

/// Something new to pass on: every device is met again now.
pub(super) fn news_to_tell(shared: &Shared) {
    shared.gossip_now.notify_one();
}

/// Keeps in touch with every device of the roster until the agent stops; whom to meet when is
/// decided by [`triad_core::greet::Greetings`]. Each device is met on its own: one that does
/// not answer (and takes its timeout to say so) holds up no other.
pub(super) async fn run(shared: Arc<Shared>) {
    use futures::stream::{FuturesUnordered, StreamExt};
    let start = Instant::now();
    let ms = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let pace = greet::Pace::default();
    let mut greetings = Greetings::new(pace);
    let mut exchanges = FuturesUnordered::new();
    let mut addresses = shared.node.listen_addrs_changes();
    addresses.mark_unchanged();
    loop {
        let me = shared.home.device_id();
        let devices: Vec<DeviceId> = lock(&shared.roster)
            .devices()
            .into_iter()
            .map(|e| e.device)
            .filter(|d| *d != me)
            .collect();
        greetings.handle(ms(), greet::Event::Devices(devices));
        while let Some(greet::Action::Meet(device)) = greetings.poll_action(ms()) {
            let shared = shared.clone();
            exchanges
                .push(async move { (device, exchange(&shared, triad_net::peer_id(device)).await) });
        }
        // The roster is read again at least this often: a device that joined is met.
        let wake = greetings.poll_timeout().unwrap_or(ms().saturating_add(pace.touch_ms));
        let wake = start + Duration::from_millis(wake);
        tokio::select! {
            Some((device, answered)) = exchanges.next(), if !exchanges.is_empty() => {
                greetings.handle(ms(), greet::Event::Met { device, answered });
            }
            () = tokio::time::sleep_until(wake) => {}
            () = shared.gossip_now.notified() => greetings.handle(ms(), greet::Event::News),
            // Reachable elsewhere now (a slot at a relay, an address found reachable): the
            // new record is news.
            Ok(()) = addresses.changed() => greetings.handle(ms(), greet::Event::News),
        }
    }
}

/// How long telling one device of a roster change may take.
pub(super) const TELL_TIMEOUT: Duration = Duration::from_secs(5);

/// Pushes the roster to every other device that can be reached now; returns their names.
pub(super) async fn gossip(shared: &Arc<Shared>) -> Vec<String> {
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
