//! End-to-end tests of the `triad` binary: real processes, real files, real stores.
#![allow(missing_docs)]

mod backup_restore;
mod crash;
mod damage;
mod demo;
mod home;
mod json;
mod mounts;
mod peers;
mod recover;
mod sources;
mod support;
