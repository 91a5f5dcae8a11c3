//! The triad agent: a device's home, the engines that back folders up into stores, restore
//! them and verify them, and the daemon that trades blobs with the vault's other devices.
//!
//! This crate wires `triad-core` (what objects are and how they are sealed) to `triad-store`
//! (where blobs live on disk) and to the device's files. It holds no policy of its own and
//! never parses configuration files or reads environment variables: the binary builds a
//! [`Config`] and passes it in.
//!
//! Key types:
//! - [`home::Home`]: the device's identity, keys and roster in `$TRIAD_HOME`.
//! - [`backup::run`]: scans a folder, chunks, seals and stores what changed, commits a
//!   snapshot and signs its head.
//! - [`restore::restore`]: writes files back, each checked against its recorded hash.
//! - [`verify::verify`]: checks that every snapshot can be read, optionally re-hashing data.
//! - [`catalog::Catalog`]: the snapshots reachable from the heads in a device's stores.
//! - [`daemon::run`]: the agent process: peers, pairing windows, pushes, the control socket.
//! - [`join::join`]: a new device joins a vault by pairing.

pub mod backup;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod control;
pub mod daemon;
pub mod fetch;
#[doc(hidden)]
pub mod fuzz;
pub mod home;
pub mod join;
pub mod notify;
pub mod open_stores;
pub mod peers;
pub mod replicas;
pub mod restore;
pub mod scan;
pub mod status;
pub mod storeless;
pub mod verify;

pub use config::Config;
