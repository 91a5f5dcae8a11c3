//! Integration tests of triad-proto: the golden vectors in the top-level `proto/vectors/`.
//!
//! Each test builds a value from fixed inputs, encodes it and compares the bytes with its
//! vector file, then decodes the file and encodes it again, byte for byte. With
//! `TRIAD_UPDATE_VECTORS=1` the tests write the files instead of comparing (see
//! `proto/README.md`: a changed vector is a format change).

mod chunking;
mod fixtures;
mod independent;
mod keys;
mod records;
mod sealed;
mod store;
mod vectors;
mod versions;
mod wire;
