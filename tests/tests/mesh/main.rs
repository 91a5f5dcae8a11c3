//! The vault as people set it up: devices paired in any order find each other, and settings
//! changed while the agent runs take effect at once.

mod pairing;
mod settings;
