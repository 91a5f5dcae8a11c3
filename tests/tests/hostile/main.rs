//! What a hostile snapshot, a damaged disk, a misbehaving peer or an unlucky user can do, and
//! what triad does about it: one module per class of defect, each test driving real `triad`
//! processes over real stores and sockets.
#![allow(missing_docs)]

mod disk;
mod names;
mod newcomer;
mod peers;
