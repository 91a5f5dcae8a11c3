//! Limits on everything read from a disk or a peer. Input over a limit is refused, never
//! allocated.

pub use triad_core::codec::RECORD_LEN_MAX;
pub use triad_core::seal::{BLOB_LEN_MAX, PLAINTEXT_LEN_MAX};

/// The size at which a pack file is closed and a new one started.
pub const PACK_LEN_TARGET: u64 = 64 * 1024 * 1024;
