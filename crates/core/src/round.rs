//! What one round of the agent's own work does: the second piece of the agent's decisions as
//! a sans-IO state machine, after [`crate::schedule`] (which says when a round runs). The
//! agent and the simulations drive the same [`Round`]; neither holds a rule of its own.
//!
//! A round starts with the devices of the vault that answered this round ([`Peer`]). Then:
//! 1. each of them whose copies are due for an audit ([`policy::audit_due`]: the last proof is
//!    half an audit window old, or a mended copy waits for its verdict) is audited
//!    ([`Action::Audit`], answered by [`Event::Audited`]);
//! 2. once every audit is answered, the folders are judged ([`Action::Evaluate`], answered by
//!    [`Event::Evaluated`] with each folder's copies as the audits left them);
//! 3. per folder that is not protected, the planner ([`policy::plan`]) picks the devices that
//!    complete its policy among those that do not hold its current snapshot; each device
//!    picked for any folder gets one push, which carries every folder ([`Action::Push`],
//!    answered by [`Event::Pushed`]);
//! 4. once every push is answered, [`Action::Done`] says whether the round made every copy it
//!    could, and if not, why ([`Outcome`]): the schedule then retries sooner.
//!
//! Actions come out of [`Round::poll_action`] in that order; the caller may perform the
//! audits (or the pushes) of one step in any order or at once, and the round moves on when
//! the last one is answered. An answer about a device the round did not ask about is ignored.

use std::collections::{BTreeSet, VecDeque};

use crate::policy::{self, Candidate, Copy, Policy, Windows};
use crate::{DeviceId, Timestamp};

/// A device of the vault that answered at the start of the round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// What the planner needs of it: its site, stores, room, and whether it is on the LAN.
    pub candidate: Candidate,
    /// Its copies' oldest proof and whether they wait for an audit
    /// ([`crate::ledger::Proof::for_audit`]); `None` if it holds none.
    pub proof: Option<(Timestamp, bool)>,
}

/// A folder as judged after the audits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    /// Its policy.
    pub policy: Policy,
    /// Whether every file of it is protected now: then nothing is pushed for it.
    pub protected: bool,
    /// The copies of each file (files with the same copies may be given once).
    pub files: Vec<Vec<Copy>>,
    /// Devices that hold its current snapshot, or are taking it already, and whose copy a
    /// push would not mend ([`crate::ledger::Proof::wants_push`] is false): not pushed to for
    /// it.
    pub held_by: Vec<DeviceId>,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The audit of a device ended (passed, failed or unanswered: the ledger keeps the
    /// verdict).
    Audited {
        /// Which device.
        device: DeviceId,
        /// Whether, after it, a copy of the device still waits for an audit (it went
        /// unanswered): the round is then not complete, and the next comes soon.
        awaits_audit: bool,
    },
    /// The folders as judged after the audits, in the caller's order ([`Outcome::stuck`]
    /// names them by their index here).
    Evaluated(Vec<Folder>),
    /// A push ended.
    Pushed {
        /// To which device.
        device: DeviceId,
        /// Whether the device acknowledged every blob of it.
        acknowledged: bool,
        /// Whether, after it, a copy of the device waits for an audit (it was mended, or part
        /// of it is only the device's word): it counts only once the next round audits it.
        awaits_audit: bool,
    },
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Audit the device, then tell [`Event::Audited`].
    Audit(DeviceId),
    /// Judge every folder, then tell [`Event::Evaluated`].
    Evaluate,
    /// Push every folder to the device, then tell [`Event::Pushed`].
    Push(DeviceId),
    /// The round is over.
    Done(Outcome),
}

/// How a round ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Folders (indices in [`Event::Evaluated`]) that are not protected and that the devices
    /// that answered cannot make protected (they may bring them closer): they wait for a
    /// device that is away, or for one to be added.
    pub stuck: Vec<usize>,
    /// Devices whose push was not acknowledged (it failed, or did not finish in time).
    pub failed: Vec<DeviceId>,
    /// Devices whose copies wait for an audit: mended by their push, or their audit went
    /// unanswered.
    pub mending: Vec<DeviceId>,
}

impl Outcome {
    /// Whether the round made every copy it could: nothing stuck, failed or waiting.
    pub fn complete(&self) -> bool {
        self.stuck.is_empty() && self.failed.is_empty() && self.mending.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Auditing,
    Evaluating,
    Pushing,
    Over,
}

/// One round of the agent's own work.
#[derive(Debug, Clone)]
pub struct Round {
    windows: Windows,
    home_site: String,
    peers: Vec<Peer>,
    step: Step,
    /// Actions of the current step not yet handed out.
    ready: VecDeque<Action>,
    /// Devices asked about in the current step and not yet answered.
    asked: BTreeSet<DeviceId>,
    outcome: Outcome,
}

impl Round {
    /// A round at `now` over the devices that answered, for a device at `home_site` whose
    /// policies use `windows`.
    pub fn new(windows: Windows, home_site: &str, peers: Vec<Peer>, now: Timestamp) -> Self {
        let mut round = Self {
            windows,
            home_site: home_site.to_owned(),
            peers,
            step: Step::Auditing,
            ready: VecDeque::new(),
            asked: BTreeSet::new(),
            outcome: Outcome::default(),
        };
        for peer in &round.peers {
            let device = peer.candidate.device;
            if policy::audit_due(windows, peer.proof, now) && round.asked.insert(device) {
                round.ready.push_back(Action::Audit(device));
            }
        }
        round
    }

    /// Takes in what happened at `now`.
    pub fn handle(&mut self, now: Timestamp, event: Event) {
        match event {
            Event::Audited { device, awaits_audit } => {
                if self.step == Step::Auditing && self.asked.remove(&device) && awaits_audit {
                    self.outcome.mending.push(device);
                }
            }
            Event::Evaluated(folders) => {
                if self.step == Step::Evaluating {
                    self.plan(&folders, now);
                }
            }
            Event::Pushed { device, acknowledged, awaits_audit } => {
                if self.step == Step::Pushing && self.asked.remove(&device) {
                    if !acknowledged {
                        self.outcome.failed.push(device);
                    }
                    if awaits_audit {
                        self.outcome.mending.push(device);
                    }
                }
            }
        }
    }

    /// Per folder that is not protected, the devices that complete its policy; one push
    /// each, in the order of the peers the round was made with.
    fn plan(&mut self, folders: &[Folder], now: Timestamp) {
        let mut picked = BTreeSet::new();
        for (i, folder) in folders.iter().enumerate() {
            if folder.protected {
                continue;
            }
            let open: Vec<Candidate> = self
                .peers
                .iter()
                .map(|p| &p.candidate)
                .filter(|c| !folder.held_by.contains(&c.device))
                .cloned()
                .collect();
            let (chosen, completes) = policy::plan_and_judge(
                folder.policy,
                self.windows,
                &self.home_site,
                &folder.files,
                &open,
                now,
            );
            // The devices that answer cannot make it protected (they may bring it closer):
            // the round waits for another.
            if !completes {
                self.outcome.stuck.push(i);
            }
            picked.extend(chosen);
        }
        for peer in &self.peers {
            let device = peer.candidate.device;
            if picked.contains(&device) && self.asked.insert(device) {
                self.ready.push_back(Action::Push(device));
            }
        }
        self.step = Step::Pushing;
    }

    /// What to do now; `None` while answers are awaited, or once the round is over.
    pub fn poll_action(&mut self) -> Option<Action> {
        if let Some(action) = self.ready.pop_front() {
            return Some(action);
        }
        if !self.asked.is_empty() {
            return None;
        }
        match self.step {
            Step::Auditing => {
                self.step = Step::Evaluating;
                Some(Action::Evaluate)
            }
            Step::Evaluating | Step::Over => None,
            Step::Pushing => {
                self.step = Step::Over;
                Some(Action::Done(std::mem::take(&mut self.outcome)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Holder;
    use crate::{FolderId, Media, StoreId};

    const DAY: i64 = 86_400;

    fn device(n: u8) -> DeviceId {
        DeviceId::from_bytes([n; 32])
    }

    fn peer(n: u8, site: &str, media: Media, proof: Option<i64>) -> Peer {
        Peer {
            candidate: Candidate {
                device: device(n),
                site: site.into(),
                stores: vec![(StoreId::from_bytes([n; 16]), media)],
                lan: site == "home",
                has_room: true,
            },
            proof: proof.map(|at| (Timestamp::new(at, 0), false)),
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::new(secs, 0)
    }

    /// One file with only its source on the laptop.
    fn lone_file(held_by: Vec<DeviceId>) -> Folder {
        let source = Copy {
            holder: Holder::Source { device: device(0), folder: FolderId::from_bytes([0; 16]) },
            media: Media::Ssd,
            site: "home".into(),
            proven: Some(at(100 * DAY)),
        };
        Folder { policy: Policy::default(), protected: false, files: vec![vec![source]], held_by }
    }

    /// Drives a round to its end: audits and pushes answered as `acked` says.
    fn drive(round: &mut Round, folders: Vec<Folder>, acked: &dyn Fn(DeviceId) -> bool) -> Log {
        let mut log = Log::default();
        let now = at(100 * DAY);
        let mut folders = Some(folders);
        loop {
            match round.poll_action() {
                Some(Action::Audit(d)) => {
                    log.audited.push(d);
                    round.handle(now, Event::Audited { device: d, awaits_audit: false });
                }
                Some(Action::Evaluate) => {
                    let f = folders.take().expect("judged once");
                    round.handle(now, Event::Evaluated(f));
                }
                Some(Action::Push(d)) => {
                    log.pushed.push(d);
                    let acknowledged = acked(d);
                    round.handle(
                        now,
                        Event::Pushed { device: d, acknowledged, awaits_audit: false },
                    );
                }
                Some(Action::Done(outcome)) => {
                    log.outcome = Some(outcome);
                    return log;
                }
                None => panic!("the round waits for nothing it asked"),
            }
        }
    }

    #[derive(Default, Debug)]
    struct Log {
        audited: Vec<DeviceId>,
        pushed: Vec<DeviceId>,
        outcome: Option<Outcome>,
    }

    #[test]
    fn audits_come_first_and_only_for_devices_due() {
        let now = at(100 * DAY);
        let windows = Windows::default();
        let half = i64::try_from(windows.audit_secs / 2).unwrap();
        let peers = vec![
            peer(1, "home", Media::Raid, Some(now.secs - half)),
            peer(2, "parents", Media::UsbHdd, Some(now.secs - 60)),
            peer(3, "friend", Media::Hdd, None),
        ];
        let mut round = Round::new(windows, "home", peers, now);
        let log = drive(&mut round, vec![], &|_| true);
        assert_eq!(log.audited, vec![device(1)], "only the proof half a window old");
        assert!(log.pushed.is_empty());
        assert!(log.outcome.unwrap().complete());
        assert_eq!(round.poll_action(), None, "a round ends once");
    }

    #[test]
    fn a_mended_copy_is_audited_at_once() {
        let now = at(100 * DAY);
        let mut mended = peer(1, "home", Media::Raid, Some(now.secs - 60));
        mended.proof = Some((at(now.secs - 60), true));
        let mut round = Round::new(Windows::default(), "home", vec![mended], now);
        assert_eq!(round.poll_action(), Some(Action::Audit(device(1))));
    }

    #[test]
    fn nothing_is_judged_before_every_audit_is_answered() {
        let now = at(100 * DAY);
        let peers = vec![peer(1, "home", Media::Raid, Some(0)), peer(2, "x", Media::Hdd, Some(0))];
        let mut round = Round::new(Windows::default(), "home", peers, now);
        assert_eq!(round.poll_action(), Some(Action::Audit(device(1))));
        assert_eq!(round.poll_action(), Some(Action::Audit(device(2))));
        assert_eq!(round.poll_action(), None);
        round.handle(now, Event::Audited { device: device(2), awaits_audit: false });
        round.handle(now, Event::Audited { device: device(9), awaits_audit: true }); // not asked
        assert_eq!(round.poll_action(), None, "device 1 has not answered");
        round.handle(now, Event::Audited { device: device(1), awaits_audit: true });
        assert_eq!(round.poll_action(), Some(Action::Evaluate));
        assert_eq!(round.poll_action(), None, "waits for the verdicts");
        round.handle(now, Event::Evaluated(vec![]));
        let Some(Action::Done(outcome)) = round.poll_action() else { panic!("over") };
        assert_eq!(outcome.mending, vec![device(1)], "its mended copy still waits for an audit");
        assert!(!outcome.complete());
    }

    #[test]
    fn the_planner_picks_the_devices_that_complete_3_2_1_and_a_failed_push_is_retried() {
        let now = at(100 * DAY);
        let peers = vec![
            peer(1, "home", Media::Raid, None),
            peer(2, "parents", Media::UsbHdd, None),
            peer(3, "home", Media::Hdd, None),
        ];
        let mut round = Round::new(Windows::default(), "home", peers, now);
        let log = drive(&mut round, vec![lone_file(vec![])], &|d| d != device(2));
        // Two more copies, one of them offsite: the NAS (LAN, first listed) and the Pi.
        assert_eq!(log.pushed, vec![device(1), device(2)]);
        let outcome = log.outcome.unwrap();
        assert_eq!(outcome.failed, vec![device(2)]);
        assert!(!outcome.complete(), "the offsite push failed: retry soon");
    }

    #[test]
    fn a_device_that_holds_the_snapshot_is_not_pushed_to_and_a_folder_no_one_helps_is_stuck() {
        let now = at(100 * DAY);
        let peers = vec![peer(1, "home", Media::Raid, None)];
        let mut round = Round::new(Windows::default(), "home", peers, now);
        let protected = Folder { protected: true, ..lone_file(vec![]) };
        let log = drive(&mut round, vec![protected, lone_file(vec![device(1)])], &|_| true);
        assert!(log.pushed.is_empty());
        let outcome = log.outcome.unwrap();
        assert_eq!(outcome.stuck, vec![1], "the second folder waits for a device");
        assert!(!outcome.complete());
    }

    #[test]
    fn a_device_picked_for_two_folders_gets_one_push_and_a_mended_copy_keeps_the_round_open() {
        let now = at(100 * DAY);
        let peers = vec![peer(1, "home", Media::Raid, None), peer(2, "away", Media::Hdd, None)];
        let mut round = Round::new(Windows::default(), "home", peers, now);
        assert_eq!(round.poll_action(), Some(Action::Evaluate));
        round.handle(now, Event::Evaluated(vec![lone_file(vec![]), lone_file(vec![])]));
        assert_eq!(round.poll_action(), Some(Action::Push(device(1))));
        assert_eq!(round.poll_action(), Some(Action::Push(device(2))));
        assert_eq!(round.poll_action(), None);
        round.handle(
            now,
            Event::Pushed { device: device(1), acknowledged: true, awaits_audit: true },
        );
        round.handle(
            now,
            Event::Pushed { device: device(1), acknowledged: false, awaits_audit: false },
        );
        assert_eq!(round.poll_action(), None, "the second push has not ended");
        round.handle(
            now,
            Event::Pushed { device: device(2), acknowledged: true, awaits_audit: false },
        );
        let Some(Action::Done(outcome)) = round.poll_action() else { panic!("over") };
        assert_eq!(outcome.mending, vec![device(1)]);
        assert!(outcome.failed.is_empty(), "an answer after the first is ignored");
        assert!(!outcome.complete());
    }
}
