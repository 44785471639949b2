//! veil-sim as a library: the discrete-event simulator, so that tests and
//! benchmarks can run scenarios directly.

pub mod position;
pub mod sim;
