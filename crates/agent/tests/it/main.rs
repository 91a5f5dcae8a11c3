//! Integration tests of the agent's engines against real stores in temporary folders.
#![allow(missing_docs)]

mod catalog;
mod daemon;
