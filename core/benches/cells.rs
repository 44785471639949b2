//! Cell-size benchmark: per-cell cost of veil's onion-layer crypto.
//!
//! Run with `cargo bench -p veil-core --bench cells`.
//!
//! For each candidate cell size this measures, on one core:
//! 1. a ChaCha20 keystream XOR over the whole cell, with a fresh cipher per
//!    cell and the cell counter as nonce (one onion layer, one hop, one
//!    direction);
//! 2. a ChaCha20-Poly1305 seal and open of the cell payload (the inner tag
//!    that only the addressed hop recognises);
//! 3. the derived CPU cost per cell of a 3+3 rendezvous path: 6 relay layer
//!    ops + 6 endpoint layer ops + 1 seal + 1 open, and the resulting
//!    single-core payload ceiling. QUIC link encryption is not included.
//!
//! Each figure is the median of 5 runs of ~0.3 s each.

// A benchmark needs a clock; core's sans-IO rule (clippy.toml) is for the
// library, not for this measurement binary.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag};

const CELL_SIZES: [usize; 6] = [512, 1024, 2048, 4096, 8192, 16384];
/// Assumed per-cell overhead (header + 16-byte Poly1305 tag); payload is the rest.
const OVERHEAD: usize = 32;
const TARGET: Duration = Duration::from_millis(300);
const REPEATS: usize = 5;
/// Keystream layer operations per cell on a 3+3 path: 6 relays + 6 at the ends.
const LAYER_OPS: f64 = 12.0;

fn nonce_for(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// Runs `op` `iters` times and returns the elapsed wall time.
fn time_iters(iters: u64, op: &mut impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        op();
    }
    start.elapsed()
}

/// Median ns per call of `op`, over `REPEATS` runs of about `TARGET` each.
fn measure(mut op: impl FnMut()) -> f64 {
    // Calibrate: grow the iteration count until a run takes >= 20 ms.
    let mut iters: u64 = 16;
    let mut elapsed = time_iters(iters, &mut op);
    while elapsed < Duration::from_millis(20) {
        iters *= 4;
        elapsed = time_iters(iters, &mut op);
    }
    let per_iter = elapsed.as_secs_f64() / iters as f64;
    let iters = ((TARGET.as_secs_f64() / per_iter) as u64).max(1);

    let mut samples: Vec<f64> = (0..REPEATS)
        .map(|_| time_iters(iters, &mut op).as_secs_f64() * 1e9 / iters as f64)
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[REPEATS / 2]
}

fn bench_keystream(cell: usize) -> f64 {
    let key = [0x42u8; 32];
    let mut buf = vec![0xa5u8; cell];
    let mut counter: u64 = 0;
    measure(|| {
        let nonce = nonce_for(counter);
        counter = counter.wrapping_add(1);
        let mut c = ChaCha20::new(black_box(&key).into(), &nonce.into());
        c.apply_keystream(black_box(&mut buf[..]));
        black_box(&buf);
    })
}

fn bench_seal(payload: usize) -> f64 {
    let aead = ChaCha20Poly1305::new(&[0x17u8; 32].into());
    let mut buf = vec![0x5au8; payload];
    let mut counter: u64 = 0;
    measure(|| {
        let nonce = nonce_for(counter);
        counter = counter.wrapping_add(1);
        let tag = aead
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &[], black_box(&mut buf[..]))
            .expect("seal");
        black_box(tag);
        black_box(&buf);
    })
}

fn bench_open(payload: usize) -> f64 {
    let aead = ChaCha20Poly1305::new(&[0x17u8; 32].into());
    let nonce = nonce_for(7);
    let nonce = Nonce::from_slice(&nonce);
    // Every open must verify a genuine tag. Since ChaCha20 is an XOR, opening
    // `c` yields `p`, and `p` read as ciphertext under the same nonce opens to
    // `c` again: precompute both tags and alternate, with no copy in the loop.
    let p = vec![0x5au8; payload];
    let mut c = p.clone();
    let tag_c: Tag = aead
        .encrypt_in_place_detached(nonce, &[], &mut c)
        .expect("seal");
    let mut tmp = c.clone();
    let tag_p: Tag = aead
        .encrypt_in_place_detached(nonce, &[], &mut tmp)
        .expect("seal");
    assert_eq!(tmp, p);

    let mut buf = c;
    let mut holds_c = true;
    measure(|| {
        let tag = if holds_c { &tag_c } else { &tag_p };
        let ok = aead
            .decrypt_in_place_detached(nonce, &[], black_box(&mut buf[..]), tag)
            .is_ok();
        assert!(ok, "open failed");
        holds_c = !holds_c;
        black_box(&buf);
    })
}

fn main() {
    println!("veil cell-size benchmark (one core, median of {REPEATS} runs x ~0.3 s)");
    println!(
        "assumption: payload = cell size - {OVERHEAD} B (header + 16 B Poly1305 tag); \
         keystream over the whole cell, seal/open over the payload"
    );
    println!(
        "3+3 path per cell = {LAYER_OPS} keystream layers (6 relays + 6 endpoint) + 1 seal + 1 open; \
         QUIC link crypto (7 links) not included"
    );
    println!();
    println!(
        "{:>6} | {:>9} {:>6} | {:>9} {:>6} | {:>9} {:>6} | {:>10} {:>12} | {:>8}",
        "cell",
        "ks ns",
        "GB/s",
        "seal ns",
        "GB/s",
        "open ns",
        "GB/s",
        "path ns",
        "ceil MB/s",
        "eff 200B"
    );
    for &cell in &CELL_SIZES {
        let payload = cell - OVERHEAD;
        let ks = bench_keystream(cell);
        let seal = bench_seal(payload);
        let open = bench_open(payload);
        let path = LAYER_OPS * ks + seal + open;
        // bytes per ns * 1e3 = MB/s (10^6 bytes)
        let ceiling = payload as f64 / path * 1e3;
        let eff = 200.0 / cell as f64;
        println!(
            "{:>6} | {:>9.0} {:>6.2} | {:>9.0} {:>6.2} | {:>9.0} {:>6.2} | {:>10.0} {:>12.1} | {:>7.1}%",
            cell,
            ks,
            cell as f64 / ks,
            seal,
            payload as f64 / seal,
            open,
            payload as f64 / open,
            path,
            ceiling,
            eff * 100.0
        );
    }
}
