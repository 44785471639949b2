#![no_main]
//! Fuzz target `bitfield`: see `veil_fuzz::bitfield` (fuzz/src/lib.rs) for what it
//! decodes and which invariants it asserts.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = veil_fuzz::bitfield(data);
});
