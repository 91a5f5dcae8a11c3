//! The vault as people set it up: devices paired in any order find each other, settings
//! changed while the agent runs take effect at once, any trusted device shows the whole
//! vault, and `devices` says how each device is reached.

mod events;
mod pairing;
mod path;
mod removal;
mod settings;
mod vault;
