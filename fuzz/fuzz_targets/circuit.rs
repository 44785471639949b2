#![no_main]
//! Fuzz target `circuit`: see `veil_fuzz::circuit` (fuzz/src/lib.rs) for what it
//! decodes and which invariants it asserts.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = veil_fuzz::circuit(data);
});
