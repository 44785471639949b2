//! veil-core: the veil protocol, sans-IO.
//!
//! Nothing in this crate opens a socket or a file, reads a clock or asks the
//! operating system for randomness: callers pass `now` (seconds since the Unix
//! epoch) and a seeded RNG. The daemon (`veild`) and the simulator
//! (`veil-sim`) are two drivers of the same code.
#![forbid(unsafe_code)]

pub mod cell;
pub mod circuit;
pub mod content;
pub mod descriptor;
pub mod identity;
pub mod link;
pub mod node;
pub mod onion;
pub mod path;
pub mod pow;
pub mod provider;
pub mod rating;
pub mod record;
pub mod rendezvous;
pub mod sampling;
pub mod search;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transfer;
pub mod wire;
