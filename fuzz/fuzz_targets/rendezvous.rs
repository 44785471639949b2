#![no_main]
//! Fuzz target `rendezvous`: see `veil_fuzz::rendezvous` (fuzz/src/lib.rs) for what it
//! decodes and which invariants it asserts.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = veil_fuzz::rendezvous(data);
});
