//! The address book: where each device of the vault was last reached, learned at pairing,
//! from connections, or given by hand (`triad devices addr`). Only hints: no peer is trusted
//! because of where it was found; the handshake authenticates.
//!
//! `$TRIAD_HOME/peers.json`, written atomically.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use triad_core::DeviceId;

use crate::home::{HomeError, write_atomic};

const FILE: &str = "peers.json";
/// Addresses kept per device.
const ADDRS_MAX: usize = 8;

/// What is known of one device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Multiaddresses, most recent first.
    pub addrs: Vec<String>,
    /// When it was last reached (seconds since the Unix epoch).
    pub last_seen: Option<u64>,
}

/// Every known device's addresses, by device id (hex).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    /// The devices.
    pub peers: BTreeMap<String, Peer>,
}

impl Book {
    /// Reads the book in `home`; an absent or unreadable book is empty (it is only hints).
    pub fn load(home: &Path) -> Book {
        std::fs::read(home.join(FILE))
            .ok()
            .and_then(|bytes| Self::decode(&bytes))
            .unwrap_or_default()
    }

    /// Decodes a `peers.json`; `None` if it is not one.
    pub fn decode(bytes: &[u8]) -> Option<Book> {
        serde_json::from_slice(bytes).ok()
    }

    /// Writes the book into `home`.
    pub fn save(&self, home: &Path) -> Result<(), HomeError> {
        let bytes = serde_json::to_vec_pretty(self).expect("the book serializes");
        let path = home.join(FILE);
        write_atomic(&path, &bytes, 0o600).map_err(|source| HomeError::Io { path, source })
    }

    /// What is known of `device`.
    pub fn get(&self, device: DeviceId) -> Option<&Peer> {
        self.peers.get(&device.to_hex())
    }

    /// Remembers `addr` for `device`, first.
    pub fn add(&mut self, device: DeviceId, addr: &str) {
        let peer = self.peers.entry(device.to_hex()).or_default();
        peer.addrs.retain(|a| a != addr);
        peer.addrs.insert(0, addr.to_owned());
        peer.addrs.truncate(ADDRS_MAX);
    }

    /// Records that `device` was reached at `now`.
    pub fn seen(&mut self, device: DeviceId, now: u64) {
        self.peers.entry(device.to_hex()).or_default().last_seen = Some(now);
    }
}
