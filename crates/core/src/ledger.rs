//! The rules of the replica ledger: what a device knows of a peer's copy of one folder's
//! snapshot, and how a push and an audit change it.
//!
//! A peer's copy counts from its acknowledgement, and each audit it passes proves it again. A
//! copy that fails an audit counts for nothing at once; the next push mends it (sends what the
//! peer says it lacks) but does not make it good: only a passed audit does. A copy is mended
//! once per failed audit, and not at all after [`REPAIRS_MAX`] failures in a row, so that
//! another device takes the copy. The agent keeps one [`Proof`] per peer and folder in its
//! ledger; the tests and simulations drive the same rules.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// Audits failed in a row at which a copy is no longer mended: after the first failure it is
/// mended once; after this many the device is not sent the copy again (another device takes
/// it) until it passes an audit.
pub const REPAIRS_MAX: u32 = 2;

/// What is proven of one peer's copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// When it was last proven (seconds since the Unix epoch): its acknowledgement, then each
    /// audit it passed. A later push does not renew it, whatever it sends: the device checks
    /// what it receives, but of what it already held it only says that it has it (a copy
    /// that rotted there since is still listed), and that is a claim, not a proof.
    pub at: i64,
    /// It failed its last audit: its copy counts for nothing until an audit passes again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bad: bool,
    /// Audits failed in a row.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// A push mended it since it failed (what it lacked was sent again); the next audit says
    /// whether that worked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repaired: bool,
    /// It was first acknowledged with part of it already there (this device's ledger was new,
    /// or the peer's stores changed): that part is the peer's word, so it is audited at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub claimed: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Proof {
    /// A copy the peer acknowledged at `now`: durable there and checked against its address.
    pub fn acknowledged(now: i64) -> Self {
        Self { at: now, ..Self::default() }
    }

    /// A copy the peer acknowledged at `now` while it held part of it already: it counts, and
    /// is audited at once.
    pub fn claimed(now: i64) -> Self {
        Self { at: now, claimed: true, ..Self::default() }
    }

    /// A push to the peer ended acknowledged. A bad copy is mended (and stays bad until an
    /// audit passes); a good one stays proven from its last proof, so that the audits keep
    /// their pace however often new snapshots are pushed.
    pub fn pushed(&mut self) {
        if self.bad {
            self.repaired = true;
        }
    }

    /// The peer answered an audit at `now`: `passed` if every slice checked.
    pub fn audited(&mut self, passed: bool, now: i64) {
        if passed {
            self.at = self.at.max(now);
            self.bad = false;
            self.failures = 0;
        } else {
            self.bad = true;
            self.failures = self.failures.saturating_add(1);
        }
        self.repaired = false;
        self.claimed = false;
    }

    /// Whether a push would make or mend the copy: the peer lacks the snapshot (`same` is
    /// false), or its copy failed an audit and was not mended yet (nor failed too often).
    pub fn wants_push(&self, same: bool) -> bool {
        !same || (self.bad && !self.repaired && self.failures < REPAIRS_MAX)
    }

    /// Whether the copy waits for an audit now: it was mended since it failed, or part of it
    /// is only the peer's word.
    pub fn awaits_audit(&self) -> bool {
        (self.bad && self.repaired) || self.claimed
    }

    /// When the copy was last proven, if it counts now.
    pub fn counts_since(&self) -> Option<Timestamp> {
        (!self.bad).then(|| Timestamp::new(self.at, 0))
    }

    /// What [`crate::policy::audit_due`] takes: the last proof and whether it awaits an audit.
    pub fn for_audit(&self) -> (Timestamp, bool) {
        (Timestamp::new(self.at, 0), self.awaits_audit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_copy_is_mended_once_per_failure_and_counts_again_only_after_an_audit() {
        let mut proof = Proof::acknowledged(100);
        proof.pushed();
        assert_eq!(proof, Proof::acknowledged(100), "a push proves nothing of what was there");
        assert!(!proof.wants_push(true) && proof.wants_push(false));
        proof.audited(true, 350);
        assert_eq!(proof.counts_since(), Some(Timestamp::new(350, 0)));
        proof.audited(false, 360);
        assert_eq!(proof.counts_since(), None);
        assert!(proof.wants_push(true), "a bad copy is mended");
        proof.pushed();
        assert!(proof.awaits_audit() && proof.counts_since().is_none());
        assert!(!proof.wants_push(true), "mended once per failure");
        proof.audited(false, 380);
        assert!(!proof.wants_push(true), "failed twice: another device takes the copy");
        proof.audited(true, 390);
        assert_eq!(proof, Proof::acknowledged(390));
        // What the peer held already is audited at once; it counts meanwhile.
        let mut claimed = Proof::claimed(400);
        assert!(claimed.awaits_audit() && claimed.counts_since().is_some());
        claimed.audited(true, 410);
        assert_eq!(claimed, Proof::acknowledged(410));
    }
}
