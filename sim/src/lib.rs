//! veil-sim as a library: the discrete-event simulator, so that tests and
//! benchmarks can run scenarios directly.
//!
//! - [`scenario`]: what a run is asked to do.
//! - [`sim`]: the simulator, core's test network with a network model,
//!   adversaries and metrics added.
//! - `adversary`: flooders, forgers, tamperers, colluders, crashes.
//! - `metrics`: what the harness records and the [`sim::Outcome`].
//! - [`position`]: how well relays guess their position on a circuit.
//! - [`search`]: the search workload (files, sharers, searches,
//!   poisoners) and its figures.
//! - `content`: the real bytes of every file and decoy, once for the run.
//! - [`download`]: the download workload (services, users who search,
//!   download, check and rate; content attacks) and its figures.

mod adversary;
mod content;
pub mod download;
mod metrics;
pub mod position;
pub mod scenario;
pub mod search;
pub mod sim;
