//! Points in time, passed in by callers (core never reads a clock).

use serde::{Deserialize, Serialize};

/// Seconds and nanoseconds since the Unix epoch. File times before 1970 are negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub secs: i64,
    /// Nanoseconds within the second, below 1 000 000 000.
    pub nanos: u32,
}

impl Timestamp {
    /// The epoch itself.
    pub const EPOCH: Timestamp = Timestamp { secs: 0, nanos: 0 };

    /// A timestamp from seconds and nanoseconds; nanoseconds above a second carry over.
    pub fn new(secs: i64, nanos: u32) -> Self {
        let carry = i64::from(nanos / 1_000_000_000);
        Self { secs: secs.saturating_add(carry), nanos: nanos % 1_000_000_000 }
    }
}
