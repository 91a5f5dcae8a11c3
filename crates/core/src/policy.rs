//! The protection policy and the state of one file version under it.
//!
//! A *copy* of a file version is a store that holds every blob of it with a snapshot that
//! names it, or the unchanged source file in its folder. Each copy has a media class, a site
//! and the time it was last proven to hold the bytes (a durable acknowledgement is the first
//! proof; audits and re-hashes renew it). [`evaluate`] turns the copies, the policy and the
//! time into a [`State`] and the reasons for it. Nothing here does I/O: the time is passed in.
//!
//! How old a proof may be:
//! - within the *audit window*: the copy is verified and counts fully;
//! - older, but within the *grace period*: the copy still counts towards the rules (its holder
//!   may only be offline), and the file is at best [`State::Degraded`];
//! - older than the grace period, or proven bad: the copy is gone and counts for nothing.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{DeviceId, FolderId, Media, StoreId, Timestamp};

/// What every file version must have: at least `copies` copies, on at least `media` kinds of
/// media, with at least `offsite` of them at a site other than the owner's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Copies, the source file included.
    pub copies: u8,
    /// Distinct media classes among the copies.
    pub media: u8,
    /// Copies at a site other than the owning device's.
    pub offsite: u8,
}

impl Default for Policy {
    /// Three copies, two kinds of media, one elsewhere: the 3-2-1 rule.
    fn default() -> Self {
        Self { copies: 3, media: 2, offsite: 1 }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "copies={} media={} offsite={}", self.copies, self.media, self.offsite)
    }
}

/// How long proofs last, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Windows {
    /// A copy proven within this long is verified.
    pub audit_secs: u64,
    /// A copy not proven for this long is gone (its holder is lost, not just offline).
    pub grace_secs: u64,
}

impl Default for Windows {
    /// A week to prove each copy again; a month offline before a copy is given up.
    fn default() -> Self {
        Self { audit_secs: 7 * 24 * 3600, grace_secs: 30 * 24 * 3600 }
    }
}

/// The state of a file version, from best to worst. The order is the severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum State {
    /// The policy holds on verified copies.
    Protected,
    /// Copies and media hold; the offsite copy is still missing.
    PendingOffsite,
    /// A rule fails, or a copy's last proof is older than the audit window.
    Degraded,
    /// Only one copy.
    AtRisk,
    /// No copy at all.
    Lost,
}

impl State {
    /// Every state, best first.
    pub const ALL: [State; 5] =
        [State::Protected, State::PendingOffsite, State::Degraded, State::AtRisk, State::Lost];

    /// The one spelling used everywhere (`PROTECTED`, `PENDING-OFFSITE`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Protected => "PROTECTED",
            State::PendingOffsite => "PENDING-OFFSITE",
            State::Degraded => "DEGRADED",
            State::AtRisk => "AT-RISK",
            State::Lost => "LOST",
        }
    }

    /// Parses a state name in any letter case, with `-` or `_`.
    pub fn parse(s: &str) -> Option<State> {
        let wanted = s.trim().to_ascii_uppercase().replace('_', "-");
        State::ALL.into_iter().find(|state| state.as_str() == wanted)
    }

    /// The exit code of `triad status` and `triad check` when this is the worst state.
    pub fn exit_code(self) -> i32 {
        match self {
            State::Protected => 0,
            State::PendingOffsite | State::Degraded => 1,
            State::AtRisk | State::Lost => 2,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a copy is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Holder {
    /// A store of a device.
    Store {
        /// The device.
        device: DeviceId,
        /// Its store.
        store: StoreId,
    },
    /// The source file in a device's folder.
    Source {
        /// The device.
        device: DeviceId,
        /// The folder.
        folder: FolderId,
    },
}

impl Holder {
    /// The device that keeps the copy.
    pub fn device(&self) -> DeviceId {
        match *self {
            Holder::Store { device, .. } | Holder::Source { device, .. } => device,
        }
    }
}

/// One copy of a file version, as far as the evaluating device knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy {
    /// Where it is.
    pub holder: Holder,
    /// The media it is on.
    pub media: Media,
    /// The site of the device that keeps it.
    pub site: String,
    /// When it was last proven; `None` if a proof failed (the copy is bad).
    pub proven: Option<Timestamp>,
}

/// How one copy stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Standing {
    /// Proven within the audit window.
    Verified,
    /// Proven before the audit window, within the grace period: it counts, unverified.
    Unverified {
        /// When it was last proven.
        since: Timestamp,
    },
    /// Not proven for longer than the grace period: given up.
    Gone {
        /// When it was last proven.
        since: Timestamp,
    },
    /// A proof failed.
    Bad,
}

impl Standing {
    /// Whether the copy counts towards the rules.
    pub fn counts(self) -> bool {
        matches!(self, Standing::Verified | Standing::Unverified { .. })
    }
}

/// How `copy` stands at `now`.
pub fn standing(copy: &Copy, windows: Windows, now: Timestamp) -> Standing {
    let Some(proven) = copy.proven else { return Standing::Bad };
    let age = u64::try_from(now.secs.saturating_sub(proven.secs)).unwrap_or(0);
    if age <= windows.audit_secs {
        Standing::Verified
    } else if age <= windows.grace_secs {
        Standing::Unverified { since: proven }
    } else {
        Standing::Gone { since: proven }
    }
}

/// Why a file version is not protected: one entry per rule that fails or copy that is short
/// of verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// Fewer copies than the policy asks for.
    Copies {
        /// Copies that count.
        have: u8,
        /// The policy's number.
        need: u8,
    },
    /// Fewer kinds of media.
    Media {
        /// Distinct media among the copies that count.
        have: u8,
        /// The policy's number.
        need: u8,
    },
    /// Fewer copies away from the owner's site.
    Offsite {
        /// Copies that count, away from the owner's site.
        have: u8,
        /// The policy's number.
        need: u8,
    },
    /// A copy counts but its last proof is older than the audit window.
    Unverified {
        /// The copy.
        holder: Holder,
        /// When it was last proven.
        since: Timestamp,
    },
    /// A copy is no longer counted: unproven past the grace period.
    Gone {
        /// The copy.
        holder: Holder,
        /// When it was last proven.
        since: Timestamp,
    },
    /// A copy is no longer counted: it failed a proof.
    Bad {
        /// The copy.
        holder: Holder,
    },
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The state.
    pub state: State,
    /// Why it is not better (empty when protected).
    pub reasons: Vec<Reason>,
    /// Whether a copy that counts would remain after losing any one site entirely.
    pub survives_site_loss: bool,
}

/// Evaluates one file version: `copies` as far as known, owned by a device at `home_site`.
/// The same holder listed twice counts once.
pub fn evaluate(
    policy: Policy,
    windows: Windows,
    home_site: &str,
    copies: &[Copy],
    now: Timestamp,
) -> Evaluation {
    let mut reasons = Vec::new();
    let mut counted: Vec<&Copy> = Vec::new();
    let mut all_verified = true;
    for copy in copies {
        if counted.iter().any(|c| c.holder == copy.holder) {
            continue;
        }
        match standing(copy, windows, now) {
            Standing::Verified => counted.push(copy),
            Standing::Unverified { since } => {
                all_verified = false;
                reasons.push(Reason::Unverified { holder: copy.holder, since });
                counted.push(copy);
            }
            Standing::Gone { since } => reasons.push(Reason::Gone { holder: copy.holder, since }),
            Standing::Bad => reasons.push(Reason::Bad { holder: copy.holder }),
        }
    }
    let have = clamp(counted.len());
    let mut media: Vec<Media> = counted.iter().map(|c| c.media).collect();
    media.sort_unstable_by_key(|m| m.as_str());
    media.dedup();
    let media = clamp(media.len());
    let offsite = clamp(counted.iter().filter(|c| c.site != home_site).count());

    let copies_hold = have >= policy.copies;
    let media_hold = media >= policy.media;
    let offsite_holds = offsite >= policy.offsite;
    if !copies_hold {
        reasons.insert(0, Reason::Copies { have, need: policy.copies });
    }
    if !media_hold {
        reasons
            .insert(usize::from(!copies_hold), Reason::Media { have: media, need: policy.media });
    }
    if !offsite_holds {
        let at = usize::from(!copies_hold) + usize::from(!media_hold);
        reasons.insert(at, Reason::Offsite { have: offsite, need: policy.offsite });
    }

    let state = if have == 0 {
        State::Lost
    } else if have == 1 && policy.copies > 1 {
        State::AtRisk
    } else if copies_hold && media_hold && offsite_holds {
        if all_verified { State::Protected } else { State::Degraded }
    } else if copies_hold && media_hold && all_verified {
        State::PendingOffsite
    } else {
        State::Degraded
    };
    if state == State::Protected {
        // Copies given up or proven bad do not stop a file that has enough others.
        reasons.clear();
    }

    let mut sites: Vec<&str> = counted.iter().map(|c| c.site.as_str()).collect();
    sites.sort_unstable();
    sites.dedup();
    let survives_site_loss = sites.len() >= 2;
    Evaluation { state, reasons, survives_site_loss }
}

fn clamp(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

/// Whether a device's copies are due for an audit: their last proof is at least half an
/// audit window old (so that an audit renews them before they stop being verified), or they
/// failed the last one and were mended since (only a passing audit makes them count again).
/// `proof` is the last proof and whether the copies wait for that verdict; `None` if the
/// device holds none.
pub fn audit_due(windows: Windows, proof: Option<(Timestamp, bool)>, now: Timestamp) -> bool {
    let half = i64::try_from(windows.audit_secs / 2).unwrap_or(i64::MAX);
    proof.is_some_and(|(at, mended)| mended || now.secs.saturating_sub(at.secs) >= half)
}

/// A device that could take a copy of a folder's current snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The device.
    pub device: DeviceId,
    /// Its site.
    pub site: String,
    /// Its stores, each a copy once it acknowledges.
    pub stores: Vec<(StoreId, Media)>,
    /// Whether it is on the same network (cheaper than across the internet).
    pub lan: bool,
    /// Whether its stores have room for what would be sent.
    pub has_room: bool,
}

/// Which devices to push a folder's current snapshot to so that its files meet `policy`:
/// `files` are the copies of each file today, `candidates` the devices that do not hold the
/// current snapshot yet. Picks, one at a time, the device that improves the worst file most
/// (ties: a LAN device first, then the one listed first), and stops when every file is
/// protected or no device helps. A device without room is never picked.
pub fn plan(
    policy: Policy,
    windows: Windows,
    home_site: &str,
    files: &[Vec<Copy>],
    candidates: &[Candidate],
    now: Timestamp,
) -> Vec<DeviceId> {
    plan_and_judge(policy, windows, home_site, files, candidates, now).0
}

/// [`plan`], and whether every file is protected once the devices picked hold it: `false`
/// when the devices at hand can only bring the files closer (a device the policy needs is
/// away).
pub fn plan_and_judge(
    policy: Policy,
    windows: Windows,
    home_site: &str,
    files: &[Vec<Copy>],
    candidates: &[Candidate],
    now: Timestamp,
) -> (Vec<DeviceId>, bool) {
    // How far the files are from the policy with `extra` holding them too: the worst state,
    // how many files are at it, and how many copies, media and offsite copies are missing in
    // all. The last counts progress that no single device shows in the state (a policy of two
    // offsite copies needs two devices before any file changes state).
    let worst = |extra: &[&Candidate]| -> (State, usize, u32) {
        let mut worst = State::Protected;
        let mut at_worst = 0;
        let mut missing = 0u32;
        for copies in files {
            let mut copies = copies.clone();
            for c in extra {
                copies.retain(|copy| copy.holder.device() != c.device);
                copies.extend(c.stores.iter().map(|&(store, media)| Copy {
                    holder: Holder::Store { device: c.device, store },
                    media,
                    site: c.site.clone(),
                    proven: Some(now),
                }));
            }
            let evaluation = evaluate(policy, windows, home_site, &copies, now);
            for reason in &evaluation.reasons {
                if let Reason::Copies { have, need }
                | Reason::Media { have, need }
                | Reason::Offsite { have, need } = reason
                {
                    missing += u32::from(need.saturating_sub(*have));
                }
            }
            let state = evaluation.state;
            match state.cmp(&worst) {
                std::cmp::Ordering::Greater => (worst, at_worst) = (state, 1),
                std::cmp::Ordering::Equal => at_worst += 1,
                std::cmp::Ordering::Less => {}
            }
        }
        (worst, at_worst, missing)
    };
    let mut chosen: Vec<&Candidate> = Vec::new();
    let mut now_at = worst(&chosen);
    while now_at.0 != State::Protected {
        let mut best: Option<(&Candidate, (State, usize, u32))> = None;
        for c in candidates {
            if !c.has_room || c.stores.is_empty() || chosen.iter().any(|d| d.device == c.device) {
                continue;
            }
            let mut with = chosen.clone();
            with.push(c);
            let outcome = worst(&with);
            let better = match &best {
                None => true,
                Some((b, o)) => outcome < *o || (outcome == *o && c.lan && !b.lan),
            };
            if better {
                best = Some((c, outcome));
            }
        }
        match best {
            Some((c, outcome)) if outcome < now_at => {
                chosen.push(c);
                now_at = outcome;
            }
            _ => break,
        }
    }
    let protected = now_at.0 == State::Protected;
    (chosen.into_iter().map(|c| c.device).collect(), protected)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NOW: Timestamp = Timestamp { secs: 100 * 24 * 3600, nanos: 0 };
    const DAY: i64 = 24 * 3600;

    fn device(n: u8) -> DeviceId {
        DeviceId::from_bytes([n; 32])
    }

    /// A copy in store `n` of device `dev`, proven `age_days` ago.
    fn store(dev: u8, n: u8, media: Media, site: &str, age_days: i64) -> Copy {
        Copy {
            holder: Holder::Store { device: device(dev), store: StoreId::from_bytes([n; 16]) },
            media,
            site: site.into(),
            proven: Some(Timestamp::new(NOW.secs - age_days * DAY, 0)),
        }
    }

    fn source(dev: u8, media: Media, site: &str) -> Copy {
        Copy {
            holder: Holder::Source { device: device(dev), folder: FolderId::from_bytes([dev; 16]) },
            media,
            site: site.into(),
            proven: Some(NOW),
        }
    }

    fn state(policy: Policy, copies: &[Copy]) -> State {
        evaluate(policy, Windows::default(), "home", copies, NOW).state
    }

    #[test]
    fn table() {
        use Media::*;
        let p = Policy::default();
        let laptop = source(1, Ssd, "home");
        let nas = store(2, 2, Raid, "studio", 0);
        let pi = store(3, 3, UsbHdd, "parents", 0);
        let home_usb = store(1, 4, UsbHdd, "home", 0);
        let home_usb2 = store(1, 5, UsbSsd, "home", 0);
        let cases: &[(&str, Vec<Copy>, State)] = &[
            ("nothing anywhere", vec![], State::Lost),
            ("only the source", vec![laptop.clone()], State::AtRisk),
            ("source and the NAS", vec![laptop.clone(), nas.clone()], State::Degraded),
            (
                "three copies on three media at three sites",
                vec![laptop.clone(), nas.clone(), pi.clone()],
                State::Protected,
            ),
            (
                "three copies, two in the same house, one elsewhere",
                vec![laptop.clone(), home_usb.clone(), nas.clone()],
                State::Protected,
            ),
            (
                "three copies all at home: the offsite copy is missing",
                vec![laptop.clone(), home_usb.clone(), home_usb2.clone()],
                State::PendingOffsite,
            ),
            (
                "two stores on one device count as two copies",
                vec![laptop.clone(), home_usb.clone(), store(1, 6, UsbHdd, "studio", 0)],
                State::Protected,
            ),
            (
                "three copies on one kind of media",
                vec![
                    store(1, 7, Hdd, "home", 0),
                    store(2, 8, Hdd, "studio", 0),
                    store(3, 9, Hdd, "parents", 0),
                ],
                State::Degraded,
            ),
            (
                "the same copy listed twice counts once",
                vec![laptop.clone(), nas.clone(), nas.clone()],
                State::Degraded,
            ),
            (
                "the Pi offline for ten days: within grace, unverified",
                vec![laptop.clone(), nas.clone(), store(3, 3, UsbHdd, "parents", 10)],
                State::Degraded,
            ),
            (
                "the Pi unseen for two months: given up",
                vec![laptop.clone(), nas.clone(), store(3, 3, UsbHdd, "parents", 60)],
                State::Degraded,
            ),
            (
                "a bad copy and one good one",
                vec![Copy { proven: None, ..nas.clone() }, laptop.clone()],
                State::AtRisk,
            ),
            (
                "every copy gone",
                vec![store(2, 2, Raid, "studio", 90), store(3, 3, UsbHdd, "parents", 45)],
                State::Lost,
            ),
        ];
        for (what, copies, expected) in cases {
            assert_eq!(state(p, copies), *expected, "{what}");
        }
        let relaxed = Policy { copies: 2, media: 1, offsite: 0 };
        assert_eq!(state(relaxed, &[laptop.clone(), home_usb.clone()]), State::Protected);
        let single = Policy { copies: 1, media: 1, offsite: 0 };
        assert_eq!(state(single, &[laptop]), State::Protected);
    }

    #[test]
    fn reasons_say_what_is_missing() {
        let laptop = source(1, Media::Ssd, "home");
        let usb = store(1, 4, Media::Ssd, "home", 0);
        let old = store(2, 2, Media::Raid, "studio", 10);
        let e = evaluate(Policy::default(), Windows::default(), "home", &[laptop, usb, old], NOW);
        assert_eq!(e.state, State::Degraded);
        assert_eq!(
            e.reasons,
            vec![Reason::Unverified {
                holder: Holder::Store { device: device(2), store: StoreId::from_bytes([2; 16]) },
                since: Timestamp::new(NOW.secs - 10 * DAY, 0),
            }]
        );
        let e = evaluate(
            Policy::default(),
            Windows::default(),
            "home",
            &[source(1, Media::Ssd, "home")],
            NOW,
        );
        assert_eq!(
            e.reasons,
            vec![
                Reason::Copies { have: 1, need: 3 },
                Reason::Media { have: 1, need: 2 },
                Reason::Offsite { have: 0, need: 1 },
            ]
        );
        assert!(!e.survives_site_loss);
    }

    fn candidate(dev: u8, media: Media, site: &str, lan: bool) -> Candidate {
        Candidate {
            device: device(dev),
            site: site.into(),
            stores: vec![(StoreId::from_bytes([dev; 16]), media)],
            lan,
            has_room: true,
        }
    }

    #[test]
    fn the_plan_takes_the_cheapest_devices_that_complete_the_policy() {
        let p = Policy::default();
        let w = Windows::default();
        let files =
            vec![vec![source(1, Media::Ssd, "home"), store(1, 4, Media::UsbSsd, "home", 0)]];
        let nas = candidate(2, Media::Raid, "studio", true);
        let pi = candidate(3, Media::UsbHdd, "parents", false);
        let home_hdd = candidate(5, Media::Hdd, "home", true);
        // One more copy elsewhere is all it needs; the LAN device is cheaper.
        let picked = plan(p, w, "home", &files, &[pi.clone(), nas.clone()], NOW);
        assert_eq!(picked, vec![device(2)]);
        // A device at home adds a copy but not the offsite one: an offsite device is needed.
        let picked = plan(p, w, "home", &files, &[home_hdd.clone(), pi.clone()], NOW);
        assert_eq!(picked, vec![device(3)]);
        // Only the source: two devices, and one of them must be elsewhere.
        let only_source = vec![vec![source(1, Media::Ssd, "home")]];
        let picked = plan(p, w, "home", &only_source, &[home_hdd.clone(), nas.clone()], NOW);
        assert_eq!(picked.len(), 2);
        // No room, no pick; protected already, no push.
        let full = Candidate { has_room: false, ..nas.clone() };
        assert!(plan(p, w, "home", &files, &[full], NOW).is_empty());
        let done = vec![vec![
            source(1, Media::Ssd, "home"),
            store(1, 4, Media::UsbSsd, "home", 0),
            store(2, 2, Media::Raid, "studio", 0),
        ]];
        assert!(plan(p, w, "home", &done, &[pi, nas, home_hdd], NOW).is_empty());
    }

    #[test]
    fn a_policy_that_two_devices_meet_together_gets_both() {
        // Two offsite copies: neither the Pi nor the friend's disk alone changes the state (it
        // stays PENDING-OFFSITE), together they make it PROTECTED.
        let p = Policy { copies: 3, media: 2, offsite: 2 };
        let w = Windows::default();
        let files =
            vec![vec![source(1, Media::Ssd, "home"), store(1, 4, Media::UsbSsd, "home", 0)]];
        let nas = candidate(2, Media::Raid, "home", true);
        let pi = candidate(3, Media::UsbHdd, "parents", false);
        let friend = candidate(4, Media::Hdd, "friend", false);
        let mut picked = plan(p, w, "home", &files, &[nas, pi, friend], NOW);
        picked.sort();
        assert_eq!(picked, vec![device(3), device(4)]);
    }

    #[test]
    fn state_names_parse_in_any_case() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
            assert_eq!(State::parse(&s.as_str().to_lowercase()), Some(s));
            assert_eq!(State::parse(&s.as_str().replace('-', "_")), Some(s));
        }
        assert_eq!(State::parse("at-risk"), Some(State::AtRisk));
        assert_eq!(State::parse("safe"), None);
    }

    fn arb_copy() -> impl Strategy<Value = Copy> {
        let media = prop::sample::select(Media::ALL.to_vec());
        let site = prop::sample::select(vec!["home", "studio", "parents"]);
        (1u8..4, 1u8..4, media, site, prop::option::weighted(0.9, 0i64..60), any::<bool>())
            .prop_map(|(dev, n, media, site, age, is_source)| {
                let mut c = if is_source {
                    source(dev, media, site)
                } else {
                    store(dev, n, media, site, 0)
                };
                c.proven = age.map(|days| Timestamp::new(NOW.secs - days * DAY, 0));
                c
            })
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (1u8..5, 1u8..4, 0u8..3).prop_map(|(copies, media, offsite)| Policy {
            copies,
            media,
            offsite,
        })
    }

    proptest! {
        #[test]
        fn a_plan_protects_every_file_whenever_the_devices_that_answer_can(
            policy in arb_policy(),
            files in prop::collection::vec(prop::collection::vec(arb_copy(), 0..4), 1..4),
            offered in prop::collection::vec(
                (prop::sample::select(vec!["home", "studio", "parents"]), 0usize..8, any::<bool>()),
                0..5,
            ),
        ) {
            let candidates: Vec<Candidate> = offered
                .iter()
                .enumerate()
                .map(|(i, (site, media, room))| Candidate {
                    has_room: *room,
                    ..candidate(10 + i as u8, Media::ALL[*media], site, i % 2 == 0)
                })
                .collect();
            let picked = plan(policy, Windows::default(), "home", &files, &candidates, NOW);
            // The worst state of the files once `devices` hold a fresh copy each, and the
            // copies, media and offsite copies still missing in all, judged by `evaluate` alone.
            let judge = |devices: &[DeviceId]| -> (State, u32) {
                let mut worst = State::Protected;
                let mut missing = 0;
                for copies in &files {
                    let mut copies = copies.clone();
                    for c in candidates.iter().filter(|c| devices.contains(&c.device)) {
                        copies.extend(c.stores.iter().map(|&(store, media)| Copy {
                            holder: Holder::Store { device: c.device, store },
                            media,
                            site: c.site.clone(),
                            proven: Some(NOW),
                        }));
                    }
                    let e = evaluate(policy, Windows::default(), "home", &copies, NOW);
                    worst = worst.max(e.state);
                    for r in &e.reasons {
                        if let Reason::Copies { have, need }
                        | Reason::Media { have, need }
                        | Reason::Offsite { have, need } = r
                        {
                            missing += u32::from(need.saturating_sub(*have));
                        }
                    }
                }
                (worst, missing)
            };
            let worst_with = |devices: &[DeviceId]| judge(devices).0;
            let before = worst_with(&[]);
            if before == State::Protected {
                prop_assert!(picked.is_empty(), "nothing to do, yet it picked {picked:?}");
            }
            // Only devices with room, each once.
            for d in &picked {
                prop_assert!(candidates.iter().any(|c| c.device == *d && c.has_room));
            }
            let mut unique = picked.clone();
            unique.sort_unstable();
            unique.dedup();
            prop_assert_eq!(unique.len(), picked.len());
            // Never worse than before, and protected whenever every device with room would
            // make it so.
            let after = worst_with(&picked);
            prop_assert!(after <= before);
            let all: Vec<DeviceId> =
                candidates.iter().filter(|c| c.has_room).map(|c| c.device).collect();
            if worst_with(&all) == State::Protected {
                prop_assert_eq!(after, State::Protected, "picked {:?} of {:?}", picked, all);
            }
            // No more devices than the fewest that leave as little missing (found by trying
            // every subset): a copy is not pushed where the policy does not need it.
            let reached = judge(&picked);
            let fewest = (0u32..1 << all.len())
                .filter_map(|mask| {
                    let subset: Vec<DeviceId> = (0..all.len())
                        .filter(|i| mask & (1 << i) != 0)
                        .map(|i| all[i])
                        .collect();
                    let (worst, missing) = judge(&subset);
                    (worst <= reached.0 && missing <= reached.1).then_some(subset.len())
                })
                .min()
                .unwrap_or(0);
            prop_assert!(
                picked.len() <= fewest,
                "picked {:?} where {} would do", picked, fewest
            );
        }

        #[test]
        fn a_copy_more_never_makes_it_worse(
            policy in arb_policy(),
            copies in prop::collection::vec(arb_copy(), 0..6),
            extra in arb_copy(),
        ) {
            let before = state(policy, &copies);
            let mut more = copies.clone();
            more.push(Copy { proven: Some(NOW), ..extra });
            prop_assert!(state(policy, &more) <= before);
        }

        #[test]
        fn protected_means_every_rule_holds_on_verified_copies(
            policy in arb_policy(),
            copies in prop::collection::vec(arb_copy(), 0..6),
        ) {
            // One entry per holder, as callers give them (a repeated holder counts once, the
            // first entry deciding).
            let mut copies = copies;
            let mut seen = Vec::new();
            copies.retain(|c| if seen.contains(&c.holder) { false } else { seen.push(c.holder); true });
            let e = evaluate(policy, Windows::default(), "home", &copies, NOW);
            let verified: Vec<&Copy> = copies
                .iter()
                .filter(|c| standing(c, Windows::default(), NOW) == Standing::Verified)
                .collect();
            let counting = copies
                .iter()
                .filter(|c| standing(c, Windows::default(), NOW).counts())
                .count();
            if e.state == State::Protected {
                prop_assert!(e.reasons.is_empty());
                let mut holders: Vec<Holder> = verified.iter().map(|c| c.holder).collect();
                holders.sort_unstable();
                holders.dedup();
                prop_assert!(holders.len() >= usize::from(policy.copies));
                prop_assert!(verified.iter().filter(|c| c.site != "home").count()
                    >= usize::from(policy.offsite));
                let unverified = copies.iter().any(|c| {
                    matches!(standing(c, Windows::default(), NOW), Standing::Unverified { .. })
                });
                prop_assert!(!unverified);
            }
            prop_assert_eq!(e.state == State::Lost, counting == 0);
            if e.state != State::Protected {
                prop_assert!(!e.reasons.is_empty());
            }
        }
    }
}
