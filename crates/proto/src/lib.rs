//! triad's formats: versions and limits of every record on disk and on the wire.
//!
//! The object model and the one codec live in `triad-core`; this crate names the format
//! versions and limits in one place, defines the framing records of the store (the store
//! marker, pack headers and pack entries), and checks the golden vectors in the top-level
//! `proto/` folder. It performs no I/O beyond byte slices.
//!
//! Key items: [`store::Marker`], [`store::PackHeader`], [`store::EntryHeader`], [`limits`].

#[doc(hidden)]
pub mod fuzz;
pub mod limits;
pub mod store;
pub mod wire;
