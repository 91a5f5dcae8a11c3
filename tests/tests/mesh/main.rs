//! The vault as people set it up: devices paired in any order find each other, settings
//! changed while the agent runs take effect at once, and any trusted device shows the whole
//! vault.

mod events;
mod pairing;
mod removal;
mod settings;
mod vault;
