//! triad's network: libp2p over QUIC (TCP with noise and yamux where UDP is blocked), the
//! roster gate, pairing, and framed streams for control messages and blobs.
//!
//! Everything here is transport: what to send and what to do with what arrives is the
//! agent's. Key items: [`Node`], [`Admission`], [`pair::Secret`], [`frame::read`].

pub mod addr;
pub mod frame;
#[doc(hidden)]
pub mod fuzz;
pub mod gate;
pub mod node;
pub mod pair;

pub use gate::Admission;
pub use libp2p::{Multiaddr, PeerId, Stream, multiaddr};
pub use node::{NetError, Node, NodeConfig, device_id, keypair, peer_id};
