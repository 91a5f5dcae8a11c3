//! When the agent meets each device of the roster: the third piece of the agent's decisions as
//! a sans-IO state machine, beside [`crate::schedule`] and [`crate::round`]. A meeting is one
//! exchange of rosters, address records and verdicts (the agent's gossip); this machine only
//! says whom to meet when.
//!
//! Every device of the roster is met at once when it joins the machine (the agent starts, or
//! the device joins the vault); then again [`Pace::touch_ms`] after a meeting it answered, or,
//! while it does not answer, after a wait that starts at [`Pace::backoff_first_ms`] and doubles
//! up to [`Pace::backoff_max_ms`]. News (a roster change, a newer address record or verdict)
//! makes every device due at once (one being met, as soon as that meeting ends: the news may
//! have come too late for it, as an address learnt while a dial to the old one fails); a
//! device that does not answer keeps its backoff for after that try. Each device is met on its own: one that takes its timeout to fail holds up no
//! other, and a device is never met twice at the same time.

use std::collections::{BTreeMap, BTreeSet};

use crate::DeviceId;
use crate::schedule::Millis;

/// How often devices are met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// After a meeting the device answered.
    pub touch_ms: Millis,
    /// After the first meeting it did not answer.
    pub backoff_first_ms: Millis,
    /// The longest wait while it does not answer.
    pub backoff_max_ms: Millis,
}

impl Default for Pace {
    /// 20 s while a device answers; 2 s after its first silence, doubling up to 5 minutes.
    fn default() -> Self {
        Self { touch_ms: 20_000, backoff_first_ms: 2_000, backoff_max_ms: 300_000 }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The devices to keep in touch with now (the roster, less this device and the removed).
    Devices(Vec<DeviceId>),
    /// A meeting ended.
    Met {
        /// With whom.
        device: DeviceId,
        /// Whether the device answered.
        answered: bool,
    },
    /// Something new to pass on: meet every device now.
    News,
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Meet the device, then tell [`Event::Met`].
    Meet(DeviceId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    at: Millis,
    /// The wait after the next silence.
    backoff: Millis,
    meeting: bool,
    /// News came while it was being met, perhaps too late for that meeting: it is met again
    /// at once when that meeting ends.
    news: bool,
}

/// The greetings of one agent.
#[derive(Debug, Clone)]
pub struct Greetings {
    pace: Pace,
    devices: BTreeMap<DeviceId, Due>,
}

impl Greetings {
    /// Greetings at this pace, with no device yet.
    pub fn new(pace: Pace) -> Self {
        Self { pace, devices: BTreeMap::new() }
    }

    /// Takes in what happened at `now`.
    pub fn handle(&mut self, now: Millis, event: Event) {
        match event {
            Event::Devices(devices) => {
                let keep: BTreeSet<DeviceId> = devices.into_iter().collect();
                self.devices.retain(|d, _| keep.contains(d));
                for device in keep {
                    self.devices.entry(device).or_insert(Due {
                        at: now,
                        backoff: self.pace.backoff_first_ms,
                        meeting: false,
                        news: false,
                    });
                }
            }
            Event::Met { device, answered } => {
                let pace = self.pace;
                let Some(due) = self.devices.get_mut(&device) else { return };
                due.meeting = false;
                if answered {
                    due.at = now.saturating_add(pace.touch_ms);
                    due.backoff = pace.backoff_first_ms;
                } else {
                    due.at = now.saturating_add(due.backoff);
                    due.backoff = due.backoff.saturating_mul(2).min(pace.backoff_max_ms);
                }
                if std::mem::take(&mut due.news) {
                    due.at = now;
                }
            }
            Event::News => {
                for due in self.devices.values_mut() {
                    due.at = due.at.min(now);
                    due.news |= due.meeting;
                }
            }
        }
    }

    /// The next device to meet at `now`, if one is due and not being met.
    pub fn poll_action(&mut self, now: Millis) -> Option<Action> {
        let (device, due) = self.devices.iter_mut().find(|(_, d)| !d.meeting && d.at <= now)?;
        due.meeting = true;
        Some(Action::Meet(*device))
    }

    /// When to ask [`Greetings::poll_action`] again, if nothing happens before; `None` if no
    /// device waits (none at all, or every one is being met).
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.devices.values().filter(|d| !d.meeting).map(|d| d.at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(n: u8) -> DeviceId {
        DeviceId::from_bytes([n; 32])
    }

    /// Every action due at `now`, in order.
    fn due(g: &mut Greetings, now: Millis) -> Vec<DeviceId> {
        std::iter::from_fn(|| g.poll_action(now)).map(|Action::Meet(d)| d).collect()
    }

    #[test]
    fn a_device_that_answers_is_met_every_touch_interval() {
        let mut g = Greetings::new(Pace::default());
        g.handle(0, Event::Devices(vec![device(1), device(2)]));
        assert_eq!(due(&mut g, 0), vec![device(1), device(2)], "met at once");
        assert_eq!(due(&mut g, 0), vec![], "not twice at the same time");
        assert_eq!(g.poll_timeout(), None, "both are being met");
        g.handle(300, Event::Met { device: device(1), answered: true });
        assert_eq!(g.poll_timeout(), Some(20_300));
        assert_eq!(due(&mut g, 20_299), vec![]);
        assert_eq!(due(&mut g, 20_300), vec![device(1)]);
    }

    #[test]
    fn a_silent_device_backs_off_to_five_minutes_and_news_does_not_reset_its_backoff() {
        let mut g = Greetings::new(Pace::default());
        g.handle(0, Event::Devices(vec![device(1)]));
        let mut now = 0;
        let mut waits = Vec::new();
        for _ in 0..10 {
            assert_eq!(due(&mut g, now), vec![device(1)]);
            g.handle(now, Event::Met { device: device(1), answered: false });
            let next = g.poll_timeout().expect("due again");
            waits.push(next - now);
            now = next;
        }
        let s = 1000;
        assert_eq!(waits[..8], [2 * s, 4 * s, 8 * s, 16 * s, 32 * s, 64 * s, 128 * s, 256 * s]);
        assert_eq!(waits[8..], [300 * s, 300 * s]);
        // News: met at once, and still five minutes after this silence too.
        g.handle(now - 100_000, Event::News);
        assert_eq!(due(&mut g, now - 100_000), vec![device(1)]);
        g.handle(now - 100_000, Event::Met { device: device(1), answered: false });
        assert_eq!(g.poll_timeout(), Some(now + 200_000));
        // An answer starts the backoff over.
        assert_eq!(due(&mut g, now + 200_000), vec![device(1)]);
        g.handle(now + 200_000, Event::Met { device: device(1), answered: true });
        assert_eq!(due(&mut g, now + 220_000), vec![device(1)]);
        g.handle(now + 220_000, Event::Met { device: device(1), answered: false });
        assert_eq!(g.poll_timeout(), Some(now + 222_000));
    }

    #[test]
    fn news_during_a_meeting_is_taken_by_another_meeting_at_once() {
        let mut g = Greetings::new(Pace::default());
        g.handle(0, Event::Devices(vec![device(1), device(2)]));
        assert_eq!(due(&mut g, 0), vec![device(1), device(2)]);
        g.handle(100, Event::Met { device: device(2), answered: true });
        // Device 1's address arrives while a dial to its old one is failing.
        g.handle(500, Event::News);
        assert_eq!(due(&mut g, 500), vec![device(2)], "device 1 is still being met");
        g.handle(900, Event::Met { device: device(1), answered: false });
        assert_eq!(due(&mut g, 900), vec![device(1)], "met again at once, not after its backoff");
        g.handle(1_000, Event::Met { device: device(1), answered: false });
        assert_eq!(g.poll_timeout(), Some(1_000 + 4_000), "then its backoff goes on");
    }

    #[test]
    fn a_device_that_joins_is_met_at_once_and_one_removed_is_met_no_more() {
        let mut g = Greetings::new(Pace::default());
        g.handle(0, Event::Devices(vec![device(1)]));
        assert_eq!(due(&mut g, 0), vec![device(1)]);
        g.handle(10, Event::Met { device: device(1), answered: true });
        g.handle(500, Event::Devices(vec![device(1), device(2)]));
        assert_eq!(due(&mut g, 500), vec![device(2)], "the new device, not the one just met");
        g.handle(600, Event::Devices(vec![device(2)]));
        g.handle(700, Event::Met { device: device(1), answered: true }); // late: ignored
        assert_eq!(due(&mut g, 1_000_000), vec![], "device 2 is being met; 1 was removed");
        g.handle(1_000_000, Event::Met { device: device(2), answered: true });
        assert_eq!(due(&mut g, 1_020_000), vec![device(2)]);
    }
}
