//! The vault as people set it up: settings changed while the agent runs take effect at once,
//! in any order.

mod settings;
