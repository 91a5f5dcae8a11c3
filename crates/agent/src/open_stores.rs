//! The device's stores as the agent holds them: opened once, shared by every task that works
//! on them, and closed while a `triad` command borrows them.
//!
//! Work on the stores comes from several places at once: a push this device sends reads them,
//! a push a peer sends writes them, a peer's `Missing` request looks into them. Each piece of
//! work holds a [`Work`] for its whole length; a [`Work`] is shared, so two devices can push to
//! each other at the same moment. Inside, the stores sit behind one read-write lock taken for
//! each blob (reads share it, a put or a commit has it alone), so a long push never starves
//! another.
//!
//! A lease (a command such as `triad verify` run while the agent runs) waits until every
//! [`Work`] has ended, closes the stores, and keeps new work waiting until it is returned.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::{OwnedRwLockReadGuard, RwLock as AsyncRwLock, RwLockWriteGuard as AsyncWrite};
use triad_core::VaultId;
use triad_store::{Access, ReadError, ScrubReport, Store};

use crate::config::Config;

type Slot = Option<RwLock<Vec<Store>>>;

/// The stores of the device, opened on first use.
#[derive(Debug)]
pub struct OpenStores {
    vault: VaultId,
    /// The settings the stores are opened with; changed only while they are closed.
    config: std::sync::Mutex<Config>,
    slot: Arc<AsyncRwLock<Slot>>,
}

/// A piece of work on the stores; the stores stay open (and unlent) while it lives.
pub type Work = OwnedRwLockReadGuard<Slot, RwLock<Vec<Store>>>;

/// The stores lent to a command; they are opened again when this is dropped and work asks.
#[derive(Debug)]
pub struct Lease<'a> {
    _slot: AsyncWrite<'a, Slot>,
}

impl OpenStores {
    /// The stores of `config`, for the vault `vault`; none is opened yet.
    pub fn new(vault: VaultId, config: Config) -> Self {
        Self {
            vault,
            config: std::sync::Mutex::new(config),
            slot: Arc::new(AsyncRwLock::new(None)),
        }
    }

    /// Starts a piece of work, opening the stores if they are closed. Waits while they are
    /// lent.
    pub async fn work(&self) -> Result<Work, String> {
        loop {
            let slot = self.slot.clone().read_owned().await;
            match OwnedRwLockReadGuard::try_map(slot, Option::as_ref) {
                Ok(work) => return Ok(work),
                Err(closed) => drop(closed),
            }
            let mut slot = self.slot.write().await;
            if slot.is_none() {
                let stores = tokio::task::block_in_place(|| self.open())?;
                *slot = Some(RwLock::new(stores));
            }
        }
    }

    /// Waits until no work is under way, closes the stores and keeps them closed until the
    /// lease is dropped.
    pub async fn lend(&self) -> Lease<'_> {
        let mut slot = self.slot.write().await;
        // Dropping a store with uncommitted puts drops them; every piece of work commits (or
        // gives up) before its `Work` ends, so there are none here.
        *slot = None;
        Lease { _slot: slot }
    }

    /// Takes the stores of `config` from now on: waits until no work is under way, closes the
    /// stores, and lets the next piece of work open those of `config`.
    pub async fn reconfigure(&self, config: Config) {
        let mut slot = self.slot.write().await;
        *slot = None;
        *self.config.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = config;
    }

    /// The stores if they are open and no one borrows them, without waiting.
    pub fn try_work(&self) -> Option<Work> {
        let slot = self.slot.clone().try_read_owned().ok()?;
        OwnedRwLockReadGuard::try_map(slot, Option::as_ref).ok()
    }

    fn open(&self) -> Result<Vec<Store>, String> {
        let config = self.config.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        config
            .stores
            .iter()
            .map(|s| {
                Store::open(&s.path, Some(s.id), self.vault, Access::ReadWrite, &config.store)
                    .map_err(|e| format!("cannot open store {}: {e}", s.path.display()))
            })
            .collect()
    }
}

/// Reads the stores of a piece of work (for one blob, or one short look).
pub fn read(work: &Work) -> RwLockReadGuard<'_, Vec<Store>> {
    work.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads the stores of a piece of work if they can be had within `wait` (a backup holds them
/// for a whole folder): `None` if not, so that a peer hears "busy" instead of timing out.
pub fn read_within(
    work: &Work,
    wait: std::time::Duration,
) -> Option<RwLockReadGuard<'_, Vec<Store>>> {
    let until = std::time::Instant::now() + wait;
    loop {
        match work.try_read() {
            Ok(guard) => return Some(guard),
            Err(std::sync::TryLockError::Poisoned(e)) => return Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::sync::TryLockError::WouldBlock) => return None,
        }
    }
}

/// Writes the stores of a piece of work (one put, or one commit).
pub fn write(work: &Work) -> RwLockWriteGuard<'_, Vec<Store>> {
    work.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Bytes a scrub checks under one hold of the read lock.
const SCRUB_PIECE: u64 = 16 * 1024 * 1024;

/// Scrubs the store at `index` a piece at a time, holding the read lock for one piece only, so
/// that puts, commits and answers to peers go on in between. `None` if there is no such store.
pub fn scrub(work: &Work, index: usize) -> Option<Result<ScrubReport, ReadError>> {
    let mut scrubbing = match read(work).get(index)?.start_scrub() {
        Ok(scrubbing) => scrubbing,
        Err(e) => return Some(Err(e)),
    };
    loop {
        let stores = read(work);
        if stores.get(index)?.scrub_some(&mut scrubbing, SCRUB_PIECE) {
            return Some(Ok(scrubbing.finish()));
        }
    }
}
