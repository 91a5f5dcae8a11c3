//! When the agent's own work runs: the first piece of the agent's decisions as a sans-IO state
//! machine. The agent tells it what happens ([`Schedule::handle`]) and when it is
//! ([`Schedule::poll_action`] with the time, [`Schedule::poll_timeout`] for when to ask again),
//! and runs a round when it says so; tests and simulations drive it in virtual time.
//!
//! A round (back up what changed, audit, judge, push) runs at start; then after the rescan
//! interval if it made every copy, or after the retry interval if it could not. A change (a
//! file, the settings, a device that joined, a push by hand) starts one sooner: once nothing
//! has changed for the settle time, so that a card being copied is read once, whole. A device
//! of the vault that connects starts one at once if the last round waited for a copy (it may be
//! the device it waited for), and changes nothing otherwise. With its own work off, no round
//! runs until the settings turn it on again.

/// Milliseconds on a clock that only goes forward (the agent's `Instant`, or virtual time).
pub type Millis = u64;

/// How often rounds run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Whether the agent works by itself at all.
    pub auto: bool,
    /// Between rounds that made every copy.
    pub rescan_ms: Millis,
    /// After a round that could not.
    pub retry_ms: Millis,
    /// Quiet time after a change before the round that takes it.
    pub settle_ms: Millis,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Something the next round should take: a file changed, the settings changed, a device
    /// joined, a push by hand.
    Changed,
    /// A device of the vault connected.
    DeviceConnected,
    /// The round asked for ended; `complete` if every copy it wanted was made.
    RoundDone {
        /// Whether every copy was made.
        complete: bool,
    },
    /// The settings were read again.
    Paced(Pace),
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Run a round, then tell [`Event::RoundDone`].
    Round,
}

/// The schedule of the agent's own work.
#[derive(Debug, Clone)]
pub struct Schedule {
    pace: Pace,
    /// When the next round is due; `None` while one runs or while the work is off.
    due: Option<Millis>,
    /// A round is running.
    running: bool,
    /// Something changed while a round ran: the next comes after the settle time.
    changed_while_running: bool,
    /// The last round could not make every copy.
    incomplete: bool,
    /// A device connected while a round ran: if that round could not make every copy, it may
    /// be the device it lacked.
    arrived_while_running: bool,
    /// When the first change not yet taken by a round came: however often the folder keeps
    /// changing, its round comes at the latest a rescan interval after that.
    first_change: Option<Millis>,
}

impl Schedule {
    /// A schedule whose first round is due at `now`.
    pub fn new(pace: Pace, now: Millis) -> Self {
        Self {
            pace,
            due: pace.auto.then_some(now),
            running: false,
            changed_while_running: false,
            incomplete: false,
            arrived_while_running: false,
            first_change: None,
        }
    }

    /// Takes in what happened at `now`.
    pub fn handle(&mut self, now: Millis, event: Event) {
        match event {
            Event::Changed => self.soon(now),
            Event::DeviceConnected => {
                if self.running {
                    self.arrived_while_running = true;
                } else if self.incomplete {
                    self.soon(now);
                }
            }
            Event::RoundDone { complete } => {
                self.running = false;
                self.incomplete = !complete;
                let wait = if complete { self.pace.rescan_ms } else { self.pace.retry_ms };
                let next = now.saturating_add(wait.max(1));
                let arrived = std::mem::take(&mut self.arrived_while_running);
                let changed =
                    std::mem::take(&mut self.changed_while_running) || (arrived && !complete);
                self.due = if !self.pace.auto {
                    None
                } else if changed {
                    self.first_change = Some(now);
                    Some(next.min(now.saturating_add(self.pace.settle_ms)))
                } else {
                    Some(next)
                };
            }
            Event::Paced(pace) => {
                self.pace = pace;
                if pace.auto {
                    // New settings (or the work turned on): a round soon takes them.
                    self.soon(now);
                } else {
                    self.due = None;
                }
            }
        }
    }

    /// A round after the settle time from `now`, if that is sooner than the one due (a change
    /// during the settle time pushes it back: the folder is still being written).
    fn soon(&mut self, now: Millis) {
        if !self.pace.auto {
            return;
        }
        if self.running {
            self.changed_while_running = true;
            return;
        }
        let first = *self.first_change.get_or_insert(now);
        let latest = first.saturating_add(self.pace.rescan_ms);
        let settled = now.saturating_add(self.pace.settle_ms).min(latest.max(now));
        self.due = Some(match self.due {
            // Within a settle window already: wait for quiet again (up to `latest`).
            Some(due) if due > now && due <= now.saturating_add(self.pace.settle_ms) => {
                settled.max(due.min(latest))
            }
            Some(due) => due.min(settled),
            None => settled,
        });
    }

    /// What to do at `now`: a round, if one is due.
    pub fn poll_action(&mut self, now: Millis) -> Option<Action> {
        match self.due {
            Some(due) if !self.running && due <= now => {
                self.due = None;
                self.running = true;
                self.first_change = None;
                Some(Action::Round)
            }
            _ => None,
        }
    }

    /// When to ask [`Schedule::poll_action`] again, if nothing happens before; `None` while a
    /// round runs or while the work is off.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.due.filter(|_| !self.running)
    }

    /// Whether the last round could not make every copy.
    pub fn waiting_for_copies(&self) -> bool {
        self.incomplete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACE: Pace = Pace { auto: true, rescan_ms: 900_000, retry_ms: 60_000, settle_ms: 2_000 };

    /// Runs the schedule until `until`, each round taking `took` and ending as `complete` says;
    /// returns when each round started.
    fn drive(
        s: &mut Schedule,
        mut now: Millis,
        until: Millis,
        events: &[(Millis, Event)],
        complete: &dyn Fn(Millis) -> bool,
    ) -> Vec<Millis> {
        let mut rounds = Vec::new();
        let mut pending = events.to_vec();
        pending.sort_by_key(|(at, _)| *at);
        let mut pending = pending.into_iter().peekable();
        while now <= until {
            if let Some(Action::Round) = s.poll_action(now) {
                rounds.push(now);
                now += 500;
                s.handle(now, Event::RoundDone { complete: complete(now) });
                continue;
            }
            let next_event = pending.peek().map(|(at, _)| *at);
            let next = match (s.poll_timeout(), next_event) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            now = next.max(now);
            while let Some((at, event)) = pending.peek().copied() {
                if at > now {
                    break;
                }
                s.handle(at, event);
                pending.next();
            }
        }
        rounds
    }

    #[test]
    fn rounds_come_at_start_then_at_the_rescan_or_the_retry() {
        let mut s = Schedule::new(PACE, 0);
        assert_eq!(drive(&mut s, 0, 2_000_000, &[], &|_| true), vec![0, 900_500, 1_801_000]);
        let mut s = Schedule::new(PACE, 0);
        let rounds = drive(&mut s, 0, 200_000, &[], &|_| false);
        assert_eq!(rounds, vec![0, 60_500, 121_000, 181_500]);
        assert!(s.waiting_for_copies());
    }

    #[test]
    fn a_change_starts_a_round_once_the_folder_is_quiet() {
        let mut s = Schedule::new(PACE, 0);
        // A card copied in four bursts, a second apart: one round, two seconds after the last.
        let burst: Vec<_> = (0..4).map(|i| (10_000 + i * 1_000, Event::Changed)).collect();
        let rounds = drive(&mut s, 0, 100_000, &burst, &|_| true);
        assert_eq!(rounds, vec![0, 15_000]);
    }

    #[test]
    fn a_folder_that_never_stops_changing_still_gets_its_round() {
        // A log file written every second from 10 s on, for an hour.
        let mut s = Schedule::new(PACE, 0);
        let ticks: Vec<_> = (0..3_600).map(|i| (10_000 + i * 1_000, Event::Changed)).collect();
        let rounds = drive(&mut s, 0, 2_000_000, &ticks, &|_| true);
        // A round a rescan interval after the first change, then at most a rescan interval (a
        // settle time and the round itself) after the one before: never put off for good.
        assert_eq!(rounds[..2], [0, 910_000], "{rounds:?}");
        assert!(rounds.len() >= 3, "{rounds:?}");
        assert!(rounds[1..].windows(2).all(|w| w[1] - w[0] <= 903_000), "{rounds:?}");
    }

    #[test]
    fn a_device_that_connects_during_a_round_that_lacked_it_brings_the_next_soon() {
        let mut s = Schedule::new(Pace { retry_ms: 3_600_000, ..PACE }, 0);
        assert_eq!(s.poll_action(0), Some(Action::Round));
        s.handle(100, Event::DeviceConnected);
        s.handle(200, Event::RoundDone { complete: false });
        let due = s.poll_timeout().expect("a round is due");
        assert!(due <= 200 + PACE.settle_ms, "due at {due}, not after the retry interval");
        // A round that made every copy takes no notice.
        let mut s = Schedule::new(PACE, 0);
        assert_eq!(s.poll_action(0), Some(Action::Round));
        s.handle(100, Event::DeviceConnected);
        s.handle(200, Event::RoundDone { complete: true });
        assert_eq!(s.poll_timeout(), Some(200 + PACE.rescan_ms));
    }

    #[test]
    fn a_device_that_connects_starts_a_round_only_when_copies_wait() {
        let arrives = [(30_000, Event::DeviceConnected)];
        let mut waiting = Schedule::new(Pace { retry_ms: 3_600_000, ..PACE }, 0);
        let rounds = drive(&mut waiting, 0, 100_000, &arrives, &|_| false);
        assert_eq!(rounds, vec![0, 32_000]);
        let mut done = Schedule::new(PACE, 0);
        assert_eq!(drive(&mut done, 0, 100_000, &arrives, &|_| true), vec![0]);
    }

    #[test]
    fn a_change_during_a_round_is_taken_by_the_next_and_off_means_off() {
        let mut s = Schedule::new(PACE, 0);
        assert_eq!(s.poll_action(0), Some(Action::Round));
        s.handle(100, Event::Changed);
        assert_eq!(s.poll_timeout(), None, "nothing while a round runs");
        s.handle(500, Event::RoundDone { complete: true });
        assert_eq!(s.poll_timeout(), Some(2_500));

        let off = Pace { auto: false, ..PACE };
        s.handle(600, Event::Paced(off));
        assert_eq!(s.poll_timeout(), None);
        s.handle(700, Event::Changed);
        assert_eq!(s.poll_action(10_000_000), None);
        s.handle(800, Event::Paced(PACE));
        assert_eq!(s.poll_timeout(), Some(2_800), "turned on: a round soon");
    }
}
