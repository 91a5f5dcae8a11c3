//! The helpers the end-to-end tests share, from the `triad-e2e` package.

pub(crate) use triad_e2e::*;
