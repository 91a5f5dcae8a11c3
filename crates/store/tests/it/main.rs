//! Integration tests of triad-store: real files, a real redb index, temporary directories.

mod common;
mod corruption;
mod crash;
mod crash_fs;
mod heads;
mod model;
mod mounts;
mod open_errors;
mod rebuild;
mod round_trip;
