//! veil-daemon: `veild`, the node daemon, and the control API shared with the
//! `veil` CLI.
//!
//! The daemon owns everything with side effects: the data dir and its keys,
//! the SQLite store, files on disk, the control socket and the QUIC endpoint
//! that drives `veil-core`'s node ([`driver`], [`net`]).

pub mod admission;
pub mod api;
pub mod client;
pub mod config;
pub mod datadir;
pub mod download;
pub mod driver;
pub mod keys;
pub mod library;
pub mod net;
pub mod readiness;
pub mod running;
pub mod server;
pub mod store;
