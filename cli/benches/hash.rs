//! Benchmark, not a test: `veil hash` on a large file against the `blake3`
//! crate's own multi-threaded hash (mmap + rayon) of the same file, measured
//! alternately in one run. Prints a table with medians and the ratio.
//!
//! Run: `cargo bench -p veil-cli --bench hash` (size with VEIL_BENCH_MIB,
//! default 1024; rounds with VEIL_BENCH_ROUNDS, default 7).

use std::io::Write;
use std::process::Command;
use std::time::Instant;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mib: u64 = std::env::var("VEIL_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let rounds: usize = std::env::var("VEIL_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("big.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        let mut block = vec![0u8; 1 << 20];
        for i in 0..mib {
            for (j, b) in block.iter_mut().enumerate() {
                *b = (j as u64 ^ (i * 2654435761)) as u8;
            }
            f.write_all(&block).expect("write");
        }
    }
    let bytes = (mib << 20) as f64;
    let veil = env!("CARGO_BIN_EXE_veil");
    let b3sum = which("b3sum");
    let mut t_veil = Vec::new();
    let mut t_lib = Vec::new();
    let mut t_b3 = Vec::new();
    // One warm-up of each, then alternate.
    for round in 0..=rounds {
        let start = Instant::now();
        let mut h = blake3::Hasher::new();
        h.update_mmap_rayon(&path).expect("hash");
        let lib_s = start.elapsed().as_secs_f64();
        let reference = h.finalize().to_hex().to_string();

        let start = Instant::now();
        let out = Command::new(veil)
            .arg("hash")
            .arg(&path)
            .output()
            .expect("veil hash");
        let veil_s = start.elapsed().as_secs_f64();
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with(&reference),
            "veil hash disagrees with blake3"
        );

        let b3_s = b3sum.as_ref().map(|b| {
            let start = Instant::now();
            let out = Command::new(b).arg(&path).output().expect("b3sum");
            let s = start.elapsed().as_secs_f64();
            assert!(
                String::from_utf8_lossy(&out.stdout).starts_with(&reference),
                "b3sum disagrees"
            );
            s
        });
        if round > 0 {
            t_lib.push(lib_s);
            t_veil.push(veil_s);
            if let Some(s) = b3_s {
                t_b3.push(s);
            }
        }
    }
    let gib = |s: f64| bytes / s / (1u64 << 30) as f64;
    let lib = median(&mut t_lib);
    let v = median(&mut t_veil);
    println!(
        "file: {mib} MiB, {rounds} rounds, medians; threads: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:<42} {:>10} {:>10} {:>8}",
        "hasher", "seconds", "GiB/s", "ratio"
    );
    println!(
        "{:<42} {:>10.3} {:>10.2} {:>8.2}",
        "blake3 crate, mmap + rayon (in process)",
        lib,
        gib(lib),
        1.0
    );
    println!(
        "{:<42} {:>10.3} {:>10.2} {:>8.2}",
        "veil hash (whole process)",
        v,
        gib(v),
        lib / v
    );
    if !t_b3.is_empty() {
        let b = median(&mut t_b3);
        println!(
            "{:<42} {:>10.3} {:>10.2} {:>8.2}",
            "b3sum (whole process)",
            b,
            gib(b),
            lib / b
        );
    }
    println!("ratio = blake3 time / tool time (>= 0.8 is the target for veil hash)");
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.exists())
}
