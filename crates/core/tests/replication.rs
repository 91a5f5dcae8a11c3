//! The agent's rounds ([`triad_core::round::Round`], the engine the agent runs) driven by a
//! virtual clock and a fake network: the engine says whom to audit and whom to push to, the
//! test performs it and feeds the results back, as the agent does. Months pass in
//! milliseconds; devices go offline, disappear, or start lying in audits. What the laptop
//! knows of each peer's copy changes by the ledger's own rules ([`triad_core::ledger::Proof`]),
//! the ones the agent keeps.

use triad_core::ledger::Proof;
use triad_core::policy::{self, Candidate, Copy, Holder, Policy, State, Windows};
use triad_core::round::{self, Action, Round};
use triad_core::{DeviceId, FolderId, Media, StoreId, Timestamp};

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

/// A peer as the fake network has it.
struct Peer {
    name: &'static str,
    device: DeviceId,
    store: StoreId,
    media: Media,
    site: &'static str,
    lan: bool,
    /// Whether it answers at a given time (seconds).
    online: Box<dyn Fn(i64) -> bool>,
    /// From when it answers audits wrongly (its disk rots, or it lies).
    lies_from: Option<i64>,
    /// What the laptop's ledger says of its copy, if it acknowledged one.
    copy: Option<Proof>,
}

impl Peer {
    fn new(n: u8, name: &'static str, media: Media, site: &'static str, lan: bool) -> Peer {
        Peer {
            name,
            device: DeviceId::from_bytes([n; 32]),
            store: StoreId::from_bytes([n; 16]),
            media,
            site,
            lan,
            online: Box::new(|_| true),
            lies_from: None,
            copy: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Push { at: i64, to: &'static str },
    AuditFailed { at: i64, of: &'static str },
}

/// The laptop (its source file on its SSD and a store on a USB SSD, at home) and its peers.
struct World {
    policy: Policy,
    windows: Windows,
    peers: Vec<Peer>,
    events: Vec<Event>,
    states: Vec<(i64, State)>,
}

impl World {
    fn new(peers: Vec<Peer>) -> World {
        World {
            policy: Policy::default(),
            windows: Windows::default(),
            peers,
            events: Vec::new(),
            states: Vec::new(),
        }
    }

    fn copies(&self, now: i64) -> Vec<Copy> {
        let me = DeviceId::from_bytes([1; 32]);
        // The agent re-proves its own copies every half window; here, every round.
        let mut copies = vec![
            Copy {
                holder: Holder::Source { device: me, folder: FolderId::from_bytes([1; 16]) },
                media: Media::Ssd,
                site: "home".into(),
                proven: Some(Timestamp::new(now, 0)),
            },
            Copy {
                holder: Holder::Store { device: me, store: StoreId::from_bytes([1; 16]) },
                media: Media::UsbSsd,
                site: "home".into(),
                proven: Some(Timestamp::new(now, 0)),
            },
        ];
        for p in &self.peers {
            if let Some(proof) = p.copy {
                copies.push(Copy {
                    holder: Holder::Store { device: p.device, store: p.store },
                    media: p.media,
                    site: p.site.into(),
                    proven: proof.counts_since(),
                });
            }
        }
        copies
    }

    /// One round of the agent at `now`, as the engine decides it.
    fn round(&mut self, now: i64) {
        let t = Timestamp::new(now, 0);
        let answering: Vec<round::Peer> = self
            .peers
            .iter()
            .filter(|p| (p.online)(now))
            .map(|p| round::Peer {
                candidate: Candidate {
                    device: p.device,
                    site: p.site.into(),
                    stores: vec![(p.store, p.media)],
                    lan: p.lan,
                    has_room: true,
                },
                proof: p.copy.as_ref().map(Proof::for_audit),
            })
            .collect();
        let mut engine = Round::new(self.windows, "home", answering, t);
        loop {
            let event = match engine.poll_action() {
                Some(Action::Audit(device)) => {
                    let p = self.peers.iter_mut().find(|p| p.device == device).expect("a peer");
                    let lies = p.lies_from.is_some_and(|from| now >= from);
                    p.copy.as_mut().expect("audited only with a copy").audited(!lies, now);
                    if lies {
                        self.events.push(Event::AuditFailed { at: now, of: p.name });
                    }
                    round::Event::Audited { device, awaits_audit: false }
                }
                Some(Action::Evaluate) => {
                    // One snapshot: a peer that acknowledged one holds it, and is pushed to
                    // again only to mend it.
                    let copies = self.copies(now);
                    let state =
                        policy::evaluate(self.policy, self.windows, "home", &copies, t).state;
                    let held_by = self
                        .peers
                        .iter()
                        .filter(|p| p.copy.is_some_and(|c| !c.wants_push(true)))
                        .map(|p| p.device)
                        .collect();
                    round::Event::Evaluated(vec![round::Folder {
                        policy: self.policy,
                        protected: state == State::Protected,
                        files: vec![copies],
                        held_by,
                    }])
                }
                Some(Action::Push(device)) => {
                    let p = self.peers.iter_mut().find(|p| p.device == device).expect("a peer");
                    // The push is acknowledged: durable and checked there.
                    match p.copy.as_mut() {
                        Some(copy) => copy.pushed(),
                        None => p.copy = Some(Proof::acknowledged(now)),
                    }
                    let awaits_audit = p.copy.is_some_and(|c| c.awaits_audit());
                    self.events.push(Event::Push { at: now, to: p.name });
                    round::Event::Pushed { device, acknowledged: true, awaits_audit }
                }
                Some(Action::Done(_)) | None => break,
            };
            engine.handle(t, event);
        }
        let state = policy::evaluate(self.policy, self.windows, "home", &self.copies(now), t).state;
        self.states.push((now, state));
    }

    fn run(&mut self, days: i64) {
        for hour in 0..days * 24 {
            self.round(hour * HOUR);
        }
    }

    fn state_at(&self, at: i64) -> State {
        self.states.iter().rev().find(|(t, _)| *t <= at).expect("a round").1
    }

    fn pushes_to(&self, name: &str) -> Vec<i64> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Push { at, to } if *to == name => Some(*at),
                _ => None,
            })
            .collect()
    }
}

fn nas() -> Peer {
    Peer::new(2, "nas", Media::Raid, "studio", true)
}

fn pi() -> Peer {
    Peer::new(3, "pi", Media::UsbHdd, "parents", false)
}

#[test]
fn reaches_protected_with_the_cheapest_device_and_stays_there() {
    let mut world = World::new(vec![pi(), nas()]);
    world.run(90);
    assert_eq!(world.state_at(0), State::Protected, "protected in the first round");
    assert_eq!(world.pushes_to("nas"), vec![0], "one push, to the LAN device");
    assert!(world.pushes_to("pi").is_empty(), "nothing more than the policy asks");
    assert!(world.states.iter().all(|(_, s)| *s == State::Protected), "audits keep it verified");
}

#[test]
fn a_device_offline_within_its_grace_period_triggers_no_re_replication() {
    let mut nas = nas();
    // Away for twenty days from day 10 (a holiday, a dead router).
    nas.online = Box::new(|t| !(10 * DAY..30 * DAY).contains(&t));
    let mut world = World::new(vec![nas, pi()]);
    world.run(60);
    assert!(world.pushes_to("pi").is_empty(), "no copy elsewhere while the NAS is only away");
    // Its copy ages: verified, then unverified (DEGRADED), then verified again on return.
    assert_eq!(world.state_at(12 * DAY), State::Protected);
    assert_eq!(world.state_at(25 * DAY), State::Degraded);
    assert_eq!(world.state_at(31 * DAY), State::Protected);
}

#[test]
fn a_device_gone_past_its_grace_period_is_replaced() {
    let mut nas = nas();
    nas.online = Box::new(|t| t < 10 * DAY);
    let mut world = World::new(vec![nas, pi()]);
    world.run(60);
    let to_pi = world.pushes_to("pi");
    assert_eq!(to_pi.len(), 1, "{:?}", world.events);
    // The NAS's last proof was at most half a window before it left; the Pi takes over once
    // the grace period from that proof has passed, not before.
    let last_proof = 10 * DAY - Windows::default().audit_secs as i64 / 2;
    let grace = Windows::default().grace_secs as i64;
    assert!(to_pi[0] > last_proof + grace - DAY && to_pi[0] <= 10 * DAY + grace, "{to_pi:?}");
    assert_eq!(world.state_at(to_pi[0]), State::Protected);
    assert_eq!(world.state_at(to_pi[0] - HOUR), State::Degraded);
}

#[test]
fn a_device_that_starts_lying_is_caught_within_one_audit_window_and_replaced() {
    let mut nas = nas();
    nas.lies_from = Some(20 * DAY);
    let mut world = World::new(vec![nas, pi()]);
    world.run(40);
    let caught = world
        .events
        .iter()
        .find_map(|e| match e {
            Event::AuditFailed { at, of: "nas" } => Some(*at),
            _ => None,
        })
        .expect("the lie is caught");
    let window = Windows::default().audit_secs as i64;
    assert!(caught >= 20 * DAY && caught - 20 * DAY <= window, "caught at {caught}");
    // The failed copy stops counting at once; the NAS is sent what it lacks in the same round,
    // is audited again in the next, fails again, and the Pi takes the copy.
    assert_eq!(world.pushes_to("nas"), vec![0, caught], "{:?}", world.events);
    assert_ne!(world.state_at(caught), State::Protected);
    let to_pi = world.pushes_to("pi");
    assert_eq!(to_pi, vec![caught + HOUR], "{:?}", world.events);
    assert!(
        world
            .states
            .iter()
            .filter(|(t, _)| *t > caught + HOUR)
            .all(|(_, s)| *s == State::Protected)
    );
}
