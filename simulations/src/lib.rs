//! Seeded runs of triad's decisions over years of virtual time.
//!
//! A vault of 3 to 10 devices (a laptop that owns the photos, a NAS beside it, a Pi at the
//! parents', friends' disks further away) lives through disk failures, bit rot, a stolen
//! laptop, a site lost whole, outages of hours to weeks, sites cut off from the internet and a
//! 20 Mbit/s uplink. What the laptop decides is what the agent decides, with the same engine:
//! [`Schedule`] says when its rounds run and [`Round`] what each does (whom to audit, when to
//! judge, whom to push to, whether to retry soon), [`Greetings`] whom each device meets to
//! merge rosters, [`policy::evaluate`] judges each file from
//! what the laptop knows, [`Proof`] is what a push and an audit prove, and [`Roster`] who
//! belongs to the vault (merged between devices that meet). The simulation only performs the
//! actions and feeds their results back, as the agent does. The
//! simulation keeps the truth beside it (which copy is intact where) and checks at every step
//! that the decisions never claim more than the truth:
//!
//! - a file is PROTECTED only with copies that were intact when they were last proven;
//! - a file is lost only when no intact copy of it is left anywhere, and never comes back;
//! - every device's roster is the same once every device is up and no site is cut off;
//! - a device removed from the roster is never sent anything.
//!
//! Everything is deterministic from the seed, single-threaded, and never sleeps.

pub mod plot;

use std::collections::HashMap;

use triad_core::greet::{Action as GreetAction, Event as GreetEvent, Greetings};
use triad_core::keys::{DeviceKey, Phrase, RecoveryKey};
use triad_core::ledger::Proof;
use triad_core::policy::{self, Candidate, Copy, Holder, Policy, State, Windows};
use triad_core::roster::{Entry, Role, Roster, Signer};
use triad_core::round::{
    Action as RoundAction, Event as RoundEvent, Folder as RoundFolder, Peer, Round,
};
use triad_core::schedule::{Action as ScheduleAction, Event as ScheduleEvent, Pace, Schedule};
use triad_core::{DeviceId, FolderId, Media, StoreId, Timestamp};

/// One hour, the simulation's step, in seconds.
pub const HOUR: i64 = 3600;
/// One day.
pub const DAY: i64 = 24 * HOUR;
/// One year (365 days).
pub const YEAR: i64 = 365 * DAY;
const STEPS_PER_YEAR: f64 = 8760.0;

/// Seconds of virtual time as the engine's milliseconds.
fn ms(secs: i64) -> u64 {
    u64::try_from(secs).unwrap_or(0).saturating_mul(1000)
}

/// A small deterministic generator (SplitMix64): the same seed gives the same run on every
/// machine and with every version of every crate.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Log-uniform between `lo` and `hi` seconds: as many short outages as long ones.
    pub fn log_between(&mut self, lo: i64, hi: i64) -> i64 {
        let (lo, hi) = ((lo as f64).ln(), (hi as f64).ln());
        (lo + (hi - lo) * self.unit()).exp() as i64
    }
}

/// The world the vault lives in. Rates are per year.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Years of virtual time.
    pub years: u32,
    /// Devices in the vault, the laptop included (3 to 10).
    pub devices: usize,
    /// Failures per disk and year (a failed disk is replaced, empty).
    pub disk_failures: f64,
    /// Rotten copies per copy and year (found by the next audit or local check).
    pub rot: f64,
    /// Thefts of the laptop per year (with the USB disk in its bag).
    pub theft: f64,
    /// Fires, floods and burglaries per site and year: every device there is lost.
    pub site_loss: f64,
    /// Outages per device and year, each 2 hours to 3 weeks.
    pub outages: f64,
    /// Times per site and year it is cut off from the internet, each 1 hour to 3 days.
    pub partitions: f64,
    /// Times per year a storage device is replaced by a new one (the old one is removed).
    pub replacements: f64,
    /// The home's uplink, shared by every push off the LAN, in bytes per second.
    pub uplink: f64,
    /// A push on the LAN, in bytes per second.
    pub lan: f64,
    /// Bytes of one shoot.
    pub shoot_bytes: f64,
    /// Days between shoots.
    pub shoot_every_days: i64,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            years: 10,
            devices: 4,
            disk_failures: 0.02,
            rot: 0.002,
            theft: 0.02,
            site_loss: 0.005,
            outages: 6.0,
            partitions: 2.0,
            replacements: 0.1,
            uplink: 20e6 / 8.0,
            lan: 100e6,
            shoot_bytes: 20e9,
            shoot_every_days: 7,
        }
    }
}

/// What one run found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Files made over the run.
    pub files: usize,
    /// Files lost: no intact copy left anywhere.
    pub lost: usize,
    /// File-years lived (each file from its making to the end of the run).
    pub file_years: f64,
    /// Repair windows, in hours: from an event that broke the policy (in truth) for a file
    /// that met it, to the file meeting it again.
    pub repairs: Vec<f64>,
    /// File-hours the laptop said PROTECTED.
    pub protected_hours: u64,
    /// Of those, file-hours the truth did not meet the policy (a copy lost since its proof,
    /// not yet audited).
    pub stale_hours: u64,
    /// Pushes made, and bytes they moved.
    pub pushes: u64,
    /// Bytes moved by pushes.
    pub bytes: f64,
    /// Broken invariants, with the hour each broke at; empty in a good run.
    pub violations: Vec<String>,
    /// Events the engine ([`Schedule`] and [`Round`]) handled.
    pub events: u64,
}

/// One storage place: the laptop's folder, its USB store, or a peer's store.
#[derive(Debug, Clone)]
struct Holding {
    holder: Holder,
    media: Media,
    site: usize,
    /// Per file: intact here now.
    intact: Vec<bool>,
    /// Per file: listed in the index here (a rotten copy stays listed until a scrub).
    indexed: Vec<bool>,
    /// Per file: when `intact` last changed.
    changed: Vec<i64>,
}

/// A device key, kept as its seed (a `DeviceKey` is never cloned).
#[derive(Debug, Clone)]
struct Key {
    seed: [u8; 32],
    id: DeviceId,
}

impl Key {
    fn new(seed: [u8; 32]) -> Self {
        Self { seed, id: DeviceKey::from_bytes(&seed).device_id() }
    }

    fn key(&self) -> DeviceKey {
        DeviceKey::from_bytes(&self.seed)
    }

    fn device_id(&self) -> DeviceId {
        self.id
    }
}

/// A device of the vault (besides the laptop: a peer with one store).
#[derive(Debug, Clone)]
struct Device {
    key: Key,
    name: String,
    site: usize,
    /// Down until then (an outage, or lost until replaced).
    down_until: i64,
    roster: Roster,
}

/// What the laptop knows of one peer (its ledger row).
#[derive(Debug, Clone, Default)]
struct Known {
    proof: Option<Proof>,
    /// Files in the snapshot it acknowledged.
    acked: usize,
    /// A push in progress: the files it sends and the bytes still to go.
    push: Option<(usize, f64)>,
    /// When that push was started (pushes go one at a time, oldest first).
    since: i64,
    /// Files of the acknowledged snapshot it does not hold: this laptop had lost them when it
    /// pushed.
    lacking: Vec<usize>,
}

struct Sim<'a> {
    policy: Policy,
    windows: Windows,
    s: &'a Scenario,
    rng: Rng,
    now: i64,
    recovery: RecoveryKey,
    sites: Vec<String>,
    /// Cut off from the internet until then, per site.
    cut_until: Vec<i64>,
    /// Device 0 is the laptop; the others hold one store each.
    devices: Vec<Device>,
    /// Holding 0 is the laptop's folder, 1 its USB store, 1 + d the store of device d.
    holdings: Vec<Holding>,
    /// The laptop's ledger, per device (index 0 unused).
    known: Vec<Known>,
    /// Per device, whom its agent meets when.
    greetings: Vec<Greetings>,
    /// The laptop's own checks, per file: when its folder's copy and its store's copy were
    /// last found intact (`None`: found damaged or gone).
    local: [Vec<Option<i64>>; 2],
    sizes: Vec<f64>,
    made: Vec<i64>,
    lost: Vec<bool>,
    /// Per file: since when the truth breaks a policy it met before.
    broken_since: Vec<Option<i64>>,
    met_once: Vec<bool>,
    keys_made: u8,
    /// When a new laptop recovers, if the old one is gone.
    recover_at: Option<i64>,
    /// Something changed: the laptop's next round runs now rather than at its rescan.
    dirty: bool,
    /// When the laptop last judged its files, and what it found (per file).
    judged: Vec<State>,
    last_measure: i64,
    /// When the laptop last checked its own copies (daily, at its first round of the day).
    last_local_check: i64,
    out: Outcome,
}

/// Runs the vault under `policy` through `scenario`, from `seed`.
///
/// The laptop's agent runs as the agent does: [`Schedule`] says when a round runs (a change
/// starts one at once, a device of the vault that comes back starts one if copies wait, a
/// round that could not make every copy is retried after an hour, one that did after six),
/// and [`Round`] decides what it does.
pub fn run(policy: Policy, scenario: &Scenario, seed: u64) -> Outcome {
    let mut sim = Sim::new(policy, scenario, seed);
    let end = i64::from(scenario.years) * YEAR;
    let mut next_shoot = 0;
    let pace = Pace { auto: true, rescan_ms: ms(6 * HOUR), retry_ms: ms(HOUR), settle_ms: 0 };
    let mut schedule = Schedule::new(pace, 0);
    let mut reached = vec![false; sim.devices.len()];
    while sim.now < end {
        // A shoot comes onto the laptop: while it is gone (stolen, burnt, not yet replaced)
        // the photographer keeps the cards until it is back.
        if sim.now >= next_shoot && sim.up(0) {
            sim.shoot();
            next_shoot = sim.now + scenario.shoot_every_days * DAY;
        }
        sim.events();
        sim.gossip();
        sim.transfers();
        let now = ms(sim.now);
        if std::mem::take(&mut sim.dirty) {
            schedule.handle(now, ScheduleEvent::Changed);
            sim.out.events += 1;
        }
        for (d, before) in reached.iter_mut().enumerate().skip(1) {
            let reaches = sim.reaches(d);
            if reaches && !*before {
                schedule.handle(now, ScheduleEvent::DeviceConnected);
                sim.out.events += 1;
            }
            *before = reaches;
        }
        if let Some(ScheduleAction::Round) = schedule.poll_action(now) {
            let complete = sim.round();
            schedule.handle(now, ScheduleEvent::RoundDone { complete });
            sim.out.events += 1;
            sim.measure();
        }
        sim.now += HOUR;
    }
    sim.out.files = sim.made.len();
    sim.out.lost = sim.lost.iter().filter(|l| **l).count();
    sim.out.file_years = sim.made.iter().map(|m| (end - m) as f64 / YEAR as f64).sum();
    sim.out
}

impl<'a> Sim<'a> {
    fn new(policy: Policy, s: &'a Scenario, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut entropy = [0u8; 32];
        for chunk in entropy.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let recovery = Phrase::from_entropy(entropy).recovery_key();
        let n = s.devices.clamp(3, 10);
        let mut sites = vec!["home".to_owned(), "parents".to_owned()];
        let mut sim = Sim {
            policy,
            windows: Windows::default(),
            s,
            rng,
            now: 0,
            recovery,
            sites: Vec::new(),
            cut_until: Vec::new(),
            devices: Vec::new(),
            holdings: Vec::new(),
            known: vec![Known::default(); n],
            greetings: vec![Greetings::new(triad_core::greet::Pace::default()); n],
            local: [Vec::new(), Vec::new()],
            sizes: Vec::new(),
            made: Vec::new(),
            lost: Vec::new(),
            broken_since: Vec::new(),
            met_once: Vec::new(),
            keys_made: 0,
            recover_at: None,
            dirty: true,
            judged: Vec::new(),
            last_measure: 0,
            last_local_check: -DAY,
            out: Outcome::default(),
        };
        // The laptop and its two copies at home; the NAS at home; the Pi at the parents';
        // friends' disks each at a site of their own.
        let laptop = sim.new_key();
        let mut roster = Roster::new(&sim.recovery);
        roster.admit_with_recovery(&sim.recovery, entry(&laptop, "laptop", Role::Trusted));
        let folder = FolderId::from_bytes([1; 16]);
        sim.holdings.push(holding(
            Holder::Source { device: laptop.device_id(), folder },
            Media::Ssd,
            0,
        ));
        let store = StoreId::from_bytes([1; 16]);
        sim.holdings.push(holding(
            Holder::Store { device: laptop.device_id(), store },
            Media::UsbSsd,
            0,
        ));
        sim.devices.push(Device {
            key: laptop,
            name: "laptop".into(),
            site: 0,
            down_until: 0,
            roster,
        });
        for d in 1..n {
            let (name, site, media) = match d {
                1 => ("nas".to_owned(), 0, Media::Raid),
                2 => ("pi".to_owned(), 1, Media::UsbHdd),
                _ => {
                    sites.push(format!("friend-{d}"));
                    (format!("friend-{d}"), sites.len() - 1, Media::Hdd)
                }
            };
            let key = sim.new_key();
            sim.admit(&key, &name);
            let store = StoreId::from_bytes([d as u8 + 1; 16]);
            sim.holdings.push(holding(
                Holder::Store { device: key.device_id(), store },
                media,
                site,
            ));
            let roster = sim.devices[0].roster.clone();
            sim.devices.push(Device { key, name, site, down_until: 0, roster });
        }
        sim.cut_until = vec![0; sites.len()];
        sim.sites = sites;
        sim
    }

    fn new_key(&mut self) -> Key {
        self.keys_made = self.keys_made.wrapping_add(1);
        let mut seed = [self.keys_made; 32];
        seed[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        Key::new(seed)
    }

    /// The laptop admits a storage device (as `triad pair --storage-only` does).
    fn admit(&mut self, key: &Key, name: &str) {
        let laptop = self.devices[0].key.key();
        self.devices[0].roster.admit_with_device(&laptop, entry(key, name, Role::StorageOnly));
    }

    fn up(&self, d: usize) -> bool {
        self.devices[d].down_until <= self.now
    }

    /// Whether the laptop reaches device `d` now.
    fn reaches(&self, d: usize) -> bool {
        let (a, b) = (self.devices[0].site, self.devices[d].site);
        self.up(0)
            && self.up(d)
            && (a == b || (self.cut_until[a] <= self.now && self.cut_until[b] <= self.now))
    }

    fn t(&self) -> Timestamp {
        Timestamp::new(self.now, 0)
    }

    fn violation(&mut self, what: String) {
        if self.out.violations.len() < 20 {
            let at = self.now / HOUR;
            self.out.violations.push(format!("hour {at}: {what}"));
        }
    }

    fn set(&mut self, h: usize, f: usize, intact: bool) {
        let holding = &mut self.holdings[h];
        if intact {
            holding.indexed[f] = true;
        }
        if holding.intact[f] != intact {
            holding.intact[f] = intact;
            holding.changed[f] = self.now;
        }
    }

    /// A new shoot, copied to the laptop and backed up to its USB store at once.
    fn shoot(&mut self) {
        let f = self.made.len();
        self.made.push(self.now);
        self.sizes.push(self.s.shoot_bytes * (0.5 + self.rng.unit()));
        self.lost.push(false);
        self.broken_since.push(None);
        self.met_once.push(false);
        for holding in &mut self.holdings {
            holding.intact.push(false);
            holding.indexed.push(false);
            holding.changed.push(self.now);
        }
        self.dirty = true; // The folder changed: the watcher starts a round.
        for h in 0..2 {
            self.set(h, f, true);
            self.local[h].push(Some(self.now));
        }
    }

    fn events(&mut self) {
        let per_step = |rate: f64| rate / STEPS_PER_YEAR;
        // Disks fail and are replaced, empty.
        for h in 0..self.holdings.len() {
            if self.rng.chance(per_step(self.s.disk_failures)) {
                self.wipe(h);
                if h == 0 {
                    // The laptop's own disk: its folder comes back from the backups.
                    self.restore_folder();
                }
            }
            // Bit rot: one copy of the many here.
            let intact = self.holdings[h].intact.iter().filter(|i| **i).count();
            if intact > 0 && self.rng.chance(per_step(self.s.rot) * intact as f64) {
                let nth = self.rng.below(intact);
                let f = (0..self.made.len()).filter(|&f| self.holdings[h].intact[f]).nth(nth);
                if let Some(f) = f {
                    self.set(h, f, false);
                }
            }
        }
        if self.up(0) && self.rng.chance(per_step(self.s.theft)) {
            self.lose_laptop(14 * DAY);
        }
        for site in 0..self.sites.len() {
            if self.rng.chance(per_step(self.s.site_loss)) {
                let back = 30 * DAY;
                for d in 1..self.devices.len() {
                    if self.devices[d].site == site {
                        self.wipe(1 + d);
                        self.devices[d].down_until = self.now + back;
                    }
                }
                if self.devices[0].site == site && self.up(0) {
                    self.lose_laptop(back);
                }
            }
            if self.rng.chance(per_step(self.s.partitions)) {
                self.cut_until[site] = self.now + self.rng.log_between(HOUR, 3 * DAY);
            }
        }
        for d in 1..self.devices.len() {
            if self.up(d) && self.rng.chance(per_step(self.s.outages)) {
                self.devices[d].down_until = self.now + self.rng.log_between(2 * HOUR, 21 * DAY);
            }
            if self.up(d) && self.rng.chance(per_step(self.s.replacements)) {
                self.replace(d);
            }
        }
        self.losses();
    }

    /// A disk is replaced: nothing of it is left, in its index either.
    fn wipe(&mut self, h: usize) {
        for f in 0..self.made.len() {
            self.set(h, f, false);
            self.holdings[h].indexed[f] = false;
        }
    }

    /// The laptop is gone (stolen, or burnt with the house) with its USB disk; a new one
    /// recovers with the phrase after `after`, restores the folder from the other devices, and
    /// removes the old one from the roster.
    fn lose_laptop(&mut self, after: i64) {
        self.wipe(0);
        self.wipe(1);
        self.devices[0].down_until = self.now + after;
        for k in &mut self.known {
            k.push = None;
        }
        self.recover_at = Some(self.now + after);
    }

    /// A new laptop proves the phrase to a device that is up, admits itself by the recovery
    /// key, removes the old laptop, restores the folder and starts with an empty ledger.
    fn recover_laptop(&mut self) {
        let Some(through) = (1..self.devices.len()).find(|&d| self.up(d)) else {
            self.recover_at = Some(self.now + DAY); // Nobody to recover from yet.
            return;
        };
        self.recover_at = None;
        let old = self.devices[0].key.device_id();
        let key = self.new_key();
        let mut roster = self.devices[through].roster.clone();
        let change = Roster::recovery_admission(
            &self.recovery,
            roster.heads().to_vec(),
            entry(&key, "laptop", Role::Trusted),
        );
        if let Err(e) = roster.insert(change) {
            self.violation(format!("a recovery admission was refused: {e}"));
        }
        roster.remove_with_device(&key.key(), old);
        self.devices[through].roster = roster.clone();
        let laptop = &mut self.devices[0];
        laptop.key = key.clone();
        laptop.roster = roster;
        laptop.down_until = self.now;
        let folder = FolderId::from_bytes([1; 16]);
        self.holdings[0].holder = Holder::Source { device: key.device_id(), folder };
        let store = StoreId::from_bytes([1; 16]);
        self.holdings[1].holder = Holder::Store { device: key.device_id(), store };
        for k in &mut self.known {
            *k = Known::default();
        }
        self.restore_folder();
    }

    /// Every file missing from the laptop's folder that a device that is up still holds
    /// intact is restored, and backed up again to its store.
    fn restore_folder(&mut self) {
        for f in 0..self.made.len() {
            if self.holdings[0].intact[f] {
                continue;
            }
            let elsewhere = (1..self.holdings.len())
                .any(|h| self.holdings[h].intact[f] && (h == 1 || self.up(h - 1)));
            if elsewhere {
                self.set(0, f, true);
                self.set(1, f, true);
            }
        }
        self.dirty = true;
    }

    /// A storage device is replaced by a new one: the laptop pairs the new one and removes
    /// the old; the new disk starts empty.
    fn replace(&mut self, d: usize) {
        if !self.up(0) {
            return;
        }
        let old = self.devices[d].key.device_id();
        let key = self.new_key();
        let name = self.devices[d].name.clone();
        self.admit(&key, &name);
        let laptop = self.devices[0].key.key();
        self.devices[0].roster.remove_with_device(&laptop, old);
        self.devices[d].key = key.clone();
        self.devices[d].roster = self.devices[0].roster.clone();
        let store = StoreId::from_bytes([d as u8 + 1; 16]);
        self.holdings[1 + d].holder = Holder::Store { device: key.device_id(), store };
        self.wipe(1 + d);
        self.known[d] = Known::default();
        self.dirty = true;
    }

    /// Files with no intact copy left are lost, for good.
    fn losses(&mut self) {
        for f in 0..self.made.len() {
            let anywhere = self.holdings.iter().any(|h| h.intact[f]);
            if self.lost[f] && anywhere {
                self.violation(format!("file {f} came back after it was lost"));
            }
            if !anywhere && !self.lost[f] {
                self.lost[f] = true;
                self.dirty = true;
            }
        }
    }

    /// Devices that reach each other reconcile their rosters; once every device is up and no
    /// site is cut off, they must all hold the same one.
    fn gossip(&mut self) {
        if self.recover_at.is_some_and(|at| self.now >= at) {
            self.recover_laptop();
        }
        let n = self.devices.len();
        let meet = |sim: &Sim<'_>, a: usize, b: usize| {
            let (sa, sb) = (sim.devices[a].site, sim.devices[b].site);
            sim.up(a)
                && sim.up(b)
                && (sa == sb || (sim.cut_until[sa] <= sim.now && sim.cut_until[sb] <= sim.now))
        };
        // Each device meets the devices of its roster as the agent's greetings say; a meeting
        // merges both ways, and a device that learnt something meets every device again.
        let now = ms(self.now);
        for a in 0..n {
            let me = self.devices[a].key.device_id();
            let ids: Vec<DeviceId> = self.devices[a]
                .roster
                .devices()
                .into_iter()
                .map(|e| e.device)
                .filter(|d| *d != me)
                .collect();
            self.greetings[a].handle(now, GreetEvent::Devices(ids));
            self.out.events += 1;
        }
        loop {
            let mut met = false;
            for a in 0..n {
                if !self.up(a) {
                    continue;
                }
                while let Some(GreetAction::Meet(id)) = self.greetings[a].poll_action(now) {
                    met = true;
                    let b = (0..n).find(|&b| b != a && self.devices[b].key.device_id() == id);
                    let answered = b.is_some_and(|b| meet(self, a, b));
                    if let Some(b) = b.filter(|_| answered) {
                        for (to, from) in [(a, b), (b, a)] {
                            if self.devices[to].roster.heads() == self.devices[from].roster.heads()
                            {
                                continue;
                            }
                            let theirs = self.devices[from].roster.clone();
                            match self.devices[to].roster.merge(&theirs) {
                                Ok(true) => {
                                    self.greetings[to].handle(now, GreetEvent::News);
                                    self.out.events += 1;
                                }
                                Ok(false) => {}
                                Err(e) => self.violation(format!("a roster merge failed: {e}")),
                            }
                        }
                    }
                    self.greetings[a].handle(now, GreetEvent::Met { device: id, answered });
                    self.out.events += 1;
                }
            }
            if !met {
                break;
            }
        }
        let all_meet = (0..n).all(|a| (0..n).all(|b| meet(self, a, b)));
        if all_meet
            && (1..n).any(|d| self.devices[d].roster.heads() != self.devices[0].roster.heads())
        {
            self.violation("every device is up and reachable, and their rosters differ".into());
        }
    }

    /// The push in progress moves as much as its link allows this hour. The agent pushes to
    /// one device at a time, in the order its round picked them: the first that can be
    /// reached goes on, the others wait (one that cannot be reached is paused, and resumes
    /// where it stopped).
    fn transfers(&mut self) {
        let next = (1..self.devices.len())
            .filter(|&d| self.known[d].push.is_some() && self.reaches(d))
            .min_by_key(|&d| self.known[d].since);
        let Some(d) = next else { return };
        let Some((upto, left)) = self.known[d].push else { return };
        let wan = self.devices[d].site != self.devices[0].site;
        let rate = if wan { self.s.uplink } else { self.s.lan };
        let left = left - rate * HOUR as f64;
        if left > 0.0 {
            self.known[d].push = Some((upto, left));
        } else {
            self.acknowledge(d, upto);
        }
    }

    /// Device `d` acknowledged the snapshot of the first `upto` files: durable there and
    /// checked. What the laptop no longer had could not be sent: the ledger says it lacks it.
    fn acknowledge(&mut self, d: usize, upto: usize) {
        // The peer is sent what its index lacks; a copy that rotted there since is not.
        let claimed = (0..upto).any(|f| self.holdings[1 + d].indexed[f]);
        let mut bytes = 0.0;
        let mut lacking = Vec::new();
        for f in 0..upto {
            let sendable = self.holdings[0].intact[f] || self.holdings[1].intact[f];
            if self.holdings[1 + d].indexed[f] {
                continue;
            }
            if sendable {
                bytes += self.sizes[f];
                self.set(1 + d, f, true);
            } else {
                lacking.push(f);
            }
        }
        let known = &mut self.known[d];
        known.push = None;
        known.lacking = lacking;
        match known.proof.as_mut() {
            Some(proof) => proof.pushed(),
            None if claimed => known.proof = Some(Proof::claimed(self.now)),
            None => known.proof = Some(Proof::acknowledged(self.now)),
        }
        known.acked = upto;
        self.out.pushes += 1;
        self.out.bytes += bytes;
        self.dirty = true;
    }

    /// What the laptop knows of file `f`'s copies.
    fn copies_of(&self, f: usize) -> Vec<Copy> {
        let home = &self.sites[self.devices[0].site];
        let mut copies = Vec::new();
        for (h, media) in [(0, Media::Ssd), (1, Media::UsbSsd)] {
            copies.push(Copy {
                holder: self.holdings[h].holder,
                media,
                site: home.clone(),
                proven: self.local[h][f].map(|at| Timestamp::new(at, 0)),
            });
        }
        for d in 1..self.devices.len() {
            let known = &self.known[d];
            if let Some(proof) = known.proof
                && f < known.acked
                && !known.lacking.contains(&f)
                && self.devices[0].roster.device(self.devices[d].key.device_id()).is_some()
            {
                copies.push(Copy {
                    holder: self.holdings[1 + d].holder,
                    media: self.holdings[1 + d].media,
                    site: self.sites[self.devices[d].site].clone(),
                    proven: proof.counts_since(),
                });
            }
        }
        copies
    }

    /// One round of the laptop's agent, as [`Round`] decides it: the audits due, a verdict on
    /// every file, and the pushes the planner picks. Returns whether it made every copy it
    /// could; a push still under way counts as not made (the agent's round gives up waiting
    /// for it and resumes it at the next).
    fn round(&mut self) -> bool {
        if !self.up(0) {
            return true;
        }
        let now = self.t();
        let nfiles = self.made.len();
        if self.now - self.last_local_check >= DAY {
            self.last_local_check = self.now;
            for h in 0..2 {
                for f in 0..nfiles {
                    self.local[h][f] = self.holdings[h].intact[f].then_some(self.now);
                }
            }
        }
        // The devices of the roster that answer.
        let laptop_site = self.devices[0].site;
        let peers: Vec<Peer> = (1..self.devices.len())
            .filter(|&d| self.reaches(d))
            .filter(|&d| self.devices[0].roster.device(self.devices[d].key.device_id()).is_some())
            .map(|d| Peer {
                candidate: Candidate {
                    device: self.devices[d].key.device_id(),
                    site: self.sites[self.devices[d].site].clone(),
                    stores: vec![(
                        store_of(&self.holdings[1 + d].holder),
                        self.holdings[1 + d].media,
                    )],
                    lan: self.devices[d].site == laptop_site,
                    has_room: true,
                },
                proof: self.known[d].proof.map(|p| p.for_audit()),
            })
            .collect();
        let home = self.sites[laptop_site].clone();
        let mut round = Round::new(self.windows, &home, peers, now);
        loop {
            let action = round.poll_action();
            let event = match action {
                Some(RoundAction::Audit(device)) => {
                    self.audit(device);
                    let awaits_audit = self
                        .index_of(device)
                        .and_then(|d| self.known[d].proof)
                        .is_some_and(|p| p.awaits_audit());
                    RoundEvent::Audited { device, awaits_audit }
                }
                Some(RoundAction::Evaluate) => RoundEvent::Evaluated(vec![self.evaluate()]),
                Some(RoundAction::Push(device)) => self.push(device),
                Some(RoundAction::Done(outcome)) => return outcome.complete(),
                None => {
                    self.violation("a round waits for an answer it was given".into());
                    return false;
                }
            };
            round.handle(now, event);
            self.out.events += 1;
        }
    }

    /// The laptop audits a device: the copies it acknowledged must all be intact there.
    fn audit(&mut self, device: DeviceId) {
        let Some(d) = self.index_of(device) else { return };
        let Some(mut proof) = self.known[d].proof else { return };
        let known = &self.known[d];
        let holding = &self.holdings[1 + d];
        let passed =
            (0..known.acked).filter(|f| !known.lacking.contains(f)).all(|f| holding.intact[f]);
        proof.audited(passed, self.now);
        self.known[d].proof = Some(proof);
        if !passed {
            // The audited device scrubs and drops what is rotten from its index, so that the
            // push that mends it sends those again.
            let holding = &mut self.holdings[1 + d];
            holding.indexed.clone_from(&holding.intact);
        }
    }

    /// A verdict on every file (files with the same copies are judged once), as the folder
    /// the round plans for.
    fn evaluate(&mut self) -> RoundFolder {
        let now = self.t();
        let nfiles = self.made.len();
        // A copy as its holding's index and its proof: cheap to hash.
        type Key = Vec<(usize, i64)>;
        let holders: Vec<Holder> = self.holdings.iter().map(|h| h.holder).collect();
        let mut cache: HashMap<Key, State> = HashMap::new();
        let mut files: Vec<Vec<Copy>> = Vec::new();
        self.judged.clear();
        for f in 0..nfiles {
            let copies = self.copies_of(f);
            let key: Key = copies
                .iter()
                .map(|c| {
                    let h = holders.iter().position(|h| *h == c.holder).unwrap_or(usize::MAX);
                    (h, c.proven.map_or(i64::MIN, |t| t.secs))
                })
                .collect();
            let state = match cache.get(&key) {
                Some(state) => *state,
                None => {
                    let home = &self.sites[self.devices[0].site];
                    let state =
                        policy::evaluate(self.policy, self.windows, home, &copies, now).state;
                    cache.insert(key, state);
                    files.push(copies.clone());
                    state
                }
            };
            if state == State::Protected && !self.lost[f] {
                self.check_proofs(f, &copies);
            }
            self.judged.push(state);
        }
        // A device that holds the snapshot with nothing to mend is not pushed to again; one
        // whose push is under way may be picked again, and its push goes on.
        let held_by = (1..self.devices.len())
            .filter(|&d| {
                let known = &self.known[d];
                known.push.is_none()
                    && known.proof.is_some_and(|p| !p.wants_push(known.acked == nfiles))
            })
            .map(|d| self.devices[d].key.device_id())
            .collect();
        RoundFolder {
            policy: self.policy,
            protected: self.judged.iter().all(|s| *s == State::Protected),
            files,
            held_by,
        }
    }

    /// The laptop starts a push to a device; it is acknowledged once its bytes have moved.
    fn push(&mut self, device: DeviceId) -> RoundEvent {
        let unanswered = RoundEvent::Pushed { device, acknowledged: false, awaits_audit: false };
        let Some(d) = self.index_of(device) else { return unanswered };
        if self.devices[0].roster.is_removed(device) {
            self.violation(format!("a push to {}, which was removed", self.devices[d].name));
        }
        let nfiles = self.made.len();
        // A push under way resumes where it is, with the files made since added.
        if self.known[d].push.is_none() {
            self.known[d].since = self.now;
        }
        let (from, left) = self.known[d].push.unwrap_or((0, 0.0));
        let bytes: f64 = left
            + (from..nfiles)
                .filter(|&f| !self.holdings[1 + d].indexed[f])
                .filter(|&f| self.holdings[0].intact[f] || self.holdings[1].intact[f])
                .map(|f| self.sizes[f])
                .sum::<f64>();
        self.known[d].push = Some((nfiles, bytes));
        if bytes > 0.0 {
            return unanswered; // Under way: it ends in a later hour.
        }
        self.acknowledge(d, nfiles);
        let awaits_audit = self.known[d].proof.is_some_and(|p| p.awaits_audit());
        RoundEvent::Pushed { device, acknowledged: true, awaits_audit }
    }

    fn index_of(&self, device: DeviceId) -> Option<usize> {
        (1..self.devices.len()).find(|&d| self.devices[d].key.device_id() == device)
    }

    /// A file judged PROTECTED counts only copies that were intact when last proven.
    fn check_proofs(&mut self, f: usize, copies: &[Copy]) {
        for copy in copies {
            let Some(proven) = copy.proven else { continue };
            let Some(h) = self.holdings.iter().position(|h| h.holder == copy.holder) else {
                continue;
            };
            let holding = &self.holdings[h];
            if !holding.intact[f] && holding.changed[f] <= proven.secs {
                self.violation(format!(
                    "file {f} is PROTECTED counting a copy ({:?}) lost before its proof",
                    copy.media
                ));
            }
        }
    }

    /// Whether the truth meets the policy for file `f`.
    fn truly_met(&self, f: usize) -> bool {
        let home = self.devices[0].site;
        let mut copies = 0u8;
        let mut media: Vec<Media> = Vec::new();
        let mut offsite = 0u8;
        for h in self.holdings.iter().filter(|h| h.intact[f]) {
            copies += 1;
            if !media.contains(&h.media) {
                media.push(h.media);
            }
            if h.site != home {
                offsite += 1;
            }
        }
        copies >= self.policy.copies
            && media.len() >= usize::from(self.policy.media)
            && offsite >= self.policy.offsite
    }

    /// Hours PROTECTED (and stale), and the repair windows, since the last measure.
    fn measure(&mut self) {
        let hours = ((self.now - self.last_measure) / HOUR).max(1) as u64;
        self.last_measure = self.now;
        for f in 0..self.made.len() {
            if self.lost[f] {
                continue;
            }
            let met = self.truly_met(f);
            if self.judged.get(f) == Some(&State::Protected) {
                self.out.protected_hours += hours;
                if !met {
                    self.out.stale_hours += hours;
                }
            }
            match (met, self.broken_since[f]) {
                (true, Some(since)) => {
                    self.out.repairs.push((self.now - since) as f64 / HOUR as f64);
                    self.broken_since[f] = None;
                }
                (true, None) => self.met_once[f] = true,
                (false, None) if self.met_once[f] => self.broken_since[f] = Some(self.now),
                _ => {}
            }
        }
    }
}

fn entry(key: &Key, name: &str, role: Role) -> Entry {
    Entry {
        device: key.device_id(),
        name: name.to_owned(),
        site: String::new(),
        role,
        signer: Signer::Recovery,
    }
}

fn holding(holder: Holder, media: Media, site: usize) -> Holding {
    Holding { holder, media, site, intact: Vec::new(), indexed: Vec::new(), changed: Vec::new() }
}

fn store_of(holder: &Holder) -> StoreId {
    match holder {
        Holder::Store { store, .. } => *store,
        Holder::Source { .. } => StoreId::from_bytes([0; 16]),
    }
}

/// Parses a policy written as `3-2-1` (copies, media, offsite).
pub fn parse_policy(text: &str) -> Option<Policy> {
    let mut parts = text.split('-').map(str::parse::<u8>);
    let policy = Policy {
        copies: parts.next()?.ok()?,
        media: parts.next()?.ok()?,
        offsite: parts.next()?.ok()?,
    };
    parts.next().is_none().then_some(policy)
}

/// The figures of many runs of one policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The policy.
    pub policy: Policy,
    /// Runs.
    pub runs: usize,
    /// Files lost over all runs.
    pub lost: usize,
    /// File-years over all runs.
    pub file_years: f64,
    /// The yearly probability that a given file is lost.
    pub yearly_loss: f64,
    /// Repair windows in hours, sorted.
    pub repairs: Vec<f64>,
    /// The share of PROTECTED file-hours in which a copy was already lost but not yet audited.
    pub stale_share: f64,
    /// Violations, with the seed of the run.
    pub violations: Vec<(u64, String)>,
    /// Events the engine handled over all runs.
    pub events: u64,
}

impl Summary {
    /// The `q` quantile (0 to 1) of the repair windows, in hours.
    pub fn repair_quantile(&self, q: f64) -> Option<f64> {
        let n = self.repairs.len();
        (n > 0).then(|| self.repairs[((n - 1) as f64 * q).round() as usize])
    }
}

/// Runs `runs` seeds from `first_seed` of `policy`.
pub fn summarise(policy: Policy, scenario: &Scenario, first_seed: u64, runs: usize) -> Summary {
    let mut summary = Summary {
        policy,
        runs,
        lost: 0,
        file_years: 0.0,
        yearly_loss: 0.0,
        repairs: Vec::new(),
        stale_share: 0.0,
        violations: Vec::new(),
        events: 0,
    };
    let (mut protected, mut stale) = (0u64, 0u64);
    for seed in first_seed..first_seed + runs as u64 {
        let out = run(policy, scenario, seed);
        summary.lost += out.lost;
        summary.file_years += out.file_years;
        summary.repairs.extend(out.repairs);
        protected += out.protected_hours;
        stale += out.stale_hours;
        summary.events += out.events;
        summary.violations.extend(out.violations.into_iter().map(|v| (seed, v)));
    }
    summary.repairs.sort_by(f64::total_cmp);
    summary.yearly_loss = summary.lost as f64 / summary.file_years.max(f64::MIN_POSITIVE);
    summary.stale_share = stale as f64 / (protected.max(1)) as f64;
    summary
}
