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

mod adversary;
mod metrics;
pub mod position;
pub mod scenario;
pub mod search;
pub mod sim;
