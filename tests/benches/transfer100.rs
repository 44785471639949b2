//! 100 MB over a 3+3 rendezvous between real daemons on loopback, next to
//! a direct quinn stream on the same machine, in the same run.
//!
//! ```sh
//! cargo bench -p veil-tests --bench transfer100
//! VEIL_BENCH_BYTES=20000000 cargo bench -p veil-tests --bench transfer100
//! ```
//!
//! 1. **Direct quinn**: two endpoints made by the daemon's own
//!    `veil_daemon::net::endpoint` (same quinn, rustls and transport
//!    configuration as a peer link) on 127.101.0.1 and 127.102.0.1; the
//!    client sends the bytes over one bidirectional stream, as 64 KiB
//!    writes and again as 4 KiB writes (one per cell, as a link writer
//!    does), timed from the first write to the last byte received; the
//!    median of three runs of each.
//! 2. **veil**: six relays (127.1.0.1 … 127.6.0.1) and two client-only
//!    daemons, a sharer (127.21.0.1) and a downloader (127.22.0.1), so that
//!    neither end relays for anyone and every hop is a separate process.
//!    The sharer shares the file; once an exact-id search from the
//!    downloader finds it, `veil get ID -o PATH --jsonl` runs on the
//!    downloader (retried until a provider is reachable) and is timed
//!    from its start and from its first verified piece. The bytes are
//!    compared with the original.
//! 3. A table: path, bytes, seconds, MB/s (10^6 B/s), ratio to the direct
//!    quinn stream; then the session's path as seen in `veil circuits`
//!    and the CPU time each daemon spent during the transfer.
//!
//! Not a test: `cargo test` does not build benches, and run without
//! `--bench` (as `cargo test --benches` would) it does nothing. The daemon
//! and CLI binaries are built first by `cargo build --profile bench`.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use veil_tests::{Daemon, bin, free_udp_addr, logs, start_network, stderr};

/// Default size: 100 MB of random bytes.
const DEFAULT_BYTES: usize = 100_000_000;
/// Relays in the network (besides the two client-only ends).
const RELAYS: u8 = 6;
/// Bound on everything before the timed download (circuits, publication).
const SETUP_DEADLINE: Duration = Duration::from_secs(300);
/// Bound on one `veil get` attempt without a new piece.
const GET_TIMEOUT_S: &str = "60";
/// How often every daemon's CPU time is sampled during the download.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Repetitions of each direct quinn measurement (the median is shown).
const QUINN_RUNS: usize = 3;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "transfer100: a benchmark; run it with `cargo bench -p veil-tests --bench transfer100`"
        );
        return;
    }
    let size = std::env::var("VEIL_BENCH_BYTES")
        .ok()
        .map(|s| s.parse::<usize>().expect("VEIL_BENCH_BYTES: a byte count"))
        .unwrap_or(DEFAULT_BYTES);
    build_binaries();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id();
    let data = random_bytes(size, seed);
    eprintln!(
        "transfer100: {size} bytes, {} logical CPUs, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    let mut rows = Vec::new();
    for write in [64 * 1024, 4096] {
        let mut runs: Vec<f64> = (0..QUINN_RUNS)
            .map(|_| direct_quinn(&data, write))
            .collect();
        runs.sort_by(f64::total_cmp);
        eprintln!("direct quinn, {write} B writes: {runs:.3?} s");
        rows.push(Row {
            path: format!("direct quinn, 1 stream, {} KiB writes", write / 1024),
            bytes: size,
            seconds: runs[QUINN_RUNS / 2],
        });
    }
    let veil = rendezvous(&data);
    rows.push(Row {
        path: "veil get, 3+3 rendezvous (from the command's start)".into(),
        bytes: size,
        seconds: veil.total,
    });
    rows.push(Row {
        path: "veil get, 3+3 rendezvous (from the first piece)".into(),
        bytes: size - veil.first_piece_bytes,
        seconds: veil.from_first,
    });

    let base = rows[0].seconds / rows[0].bytes as f64;
    println!();
    println!("| path | bytes | seconds | MB/s | ratio to direct quinn (64 KiB) |");
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        let per_byte = r.seconds / r.bytes as f64;
        println!(
            "| {} | {} | {:.3} | {:.1} | {:.4} |",
            r.path,
            r.bytes,
            r.seconds,
            r.bytes as f64 / 1e6 / r.seconds,
            base / per_byte
        );
    }
    println!();
    println!(
        "veil get: {:.2} s to the first verified piece (search, introduction, rendezvous), \
         the daemon's own report {:.2} s; {} pieces; the bytes equal the original",
        veil.to_first, veil.reported, veil.pieces
    );
    println!(
        "the sharer was last busy {:.2} s after the get started (its last piece sent), \
         the get ended at {:.2} s",
        veil.sharer_quiet, veil.total
    );
    println!("{}", veil.path);
    println!();
    println!("| process | CPU s during the download | share of one core |");
    println!("|---|---:|---:|");
    for (who, cpu) in &veil.cpu {
        println!("| {who} | {cpu:.2} | {:.0} % |", 100.0 * cpu / veil.total);
    }
    println!(
        "| whole machine (all processes, {} cores) | {:.2} | {:.0} % |",
        veil.machine.1,
        veil.machine.0,
        100.0 * veil.machine.0 / veil.total
    );
}

#[derive(Debug)]
struct Row {
    path: String,
    bytes: usize,
    seconds: f64,
}

/// Builds `veild` and `veil` with the profile this bench runs in, so that
/// the daemons measured are the current code (`cargo bench` alone builds
/// only this package's targets).
fn build_binaries() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    // Not the variables cargo set for running this bench: some build
    // scripts (ring's) rerun when they change, so the binaries would be
    // rebuilt on every run and again by the next plain `cargo build`.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let set_for_us = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
            "OUT_DIR",
        ]
        .iter()
        .any(|p| key.starts_with(p));
        if set_for_us {
            build.env_remove(&*key);
        }
    }
    let status = build
        .args([
            "build",
            "--profile",
            "bench",
            "-p",
            "veil-daemon",
            "-p",
            "veil-cli",
            "--bins",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build of veild and veil failed");
    // The bench executable must find them where the test harness looks.
    bin("veild");
    bin("veil");
}

/// `len` pseudo-random bytes (BLAKE3 in XOF mode: incompressible, fast).
fn random_bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"veil transfer100 bench");
    hasher.update(&seed.to_le_bytes());
    hasher.finalize_xof().fill(&mut out);
    out
}

/// Seconds to move `data` over one quinn stream between two endpoints
/// configured as the daemon configures a peer link, writing `write` bytes
/// at a time; from the first write to the last byte received.
fn direct_quinn(data: &[u8], write: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let idle = Duration::from_secs(30);
        let server =
            veil_daemon::net::endpoint(free_udp_addr("127.101.0.1"), idle, true).expect("server");
        let client =
            veil_daemon::net::endpoint(free_udp_addr("127.102.0.1"), idle, true).expect("client");
        let to: SocketAddr = server.local_addr().expect("server address");
        let total = data.len();
        let receiver = tokio::spawn(async move {
            let conn = server
                .accept()
                .await
                .expect("an incoming connection")
                .await
                .expect("handshake");
            let (_send, mut recv) = conn.accept_bi().await.expect("a stream");
            let mut got = Vec::with_capacity(total);
            while got.len() < total {
                match recv.read_chunk(usize::MAX, true).await.expect("read") {
                    Some(chunk) => got.extend_from_slice(&chunk.bytes),
                    None => break,
                }
            }
            let end = Instant::now();
            conn.close(0u32.into(), b"done");
            server.wait_idle().await;
            (got, end)
        });
        let conn = client
            .connect(to, veil_daemon::net::server_name())
            .expect("connect")
            .await
            .expect("handshake");
        let (mut send, _recv) = conn.open_bi().await.expect("open a stream");
        let start = Instant::now();
        for chunk in data.chunks(write) {
            send.write_all(chunk).await.expect("write");
        }
        let _ = send.finish();
        let (got, end) = receiver.await.expect("receiver");
        assert!(got == data, "direct quinn: the bytes differ");
        client.close(0u32.into(), b"done");
        end.duration_since(start).as_secs_f64()
    })
}

/// What the rendezvous download measured.
#[derive(Debug)]
struct VeilRun {
    /// Seconds from the successful `veil get`'s start to its result.
    total: f64,
    /// Seconds from its start to its first verified piece.
    to_first: f64,
    /// Seconds from the first verified piece to the result.
    from_first: f64,
    /// Bytes of the first piece (not counted in `from_first`).
    first_piece_bytes: usize,
    /// The daemon's `seconds` in the get report.
    reported: f64,
    /// Seconds from the get's start to the sharer's last busy sample (its
    /// last piece sent).
    sharer_quiet: f64,
    pieces: u64,
    /// The session's path as seen in `veil circuits`.
    path: String,
    /// CPU seconds each daemon used during the download.
    cpu: Vec<(String, f64)>,
    /// CPU seconds the whole machine used, and its core count.
    machine: (f64, usize),
}

/// Kills the `veil get` process if the bench fails while it runs.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rendezvous(data: &[u8]) -> VeilRun {
    let (mut daemons, addrs, ids) = start_network(RELAYS);
    let seed = addrs[0].to_string();
    let client_args = |ip: &str| -> Vec<String> {
        vec![
            "--listen".into(),
            free_udp_addr(ip).to_string(),
            "--bootstrap".into(),
            seed.clone(),
            "--client-only".into(),
        ]
    };
    for ip in ["127.21.0.1", "127.22.0.1"] {
        let args = client_args(ip);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut d = Daemon::prepare(&args);
        d.launch();
        daemons.push(d);
    }
    for d in &mut daemons[RELAYS as usize..] {
        d.wait_ready();
    }
    let (s, g) = (RELAYS as usize, RELAYS as usize + 1);
    let deadline = Instant::now() + SETUP_DEADLINE;
    let setup = Instant::now();
    while !(daemons[s].has_built_circuit() && daemons[g].has_built_circuit()) {
        assert!(Instant::now() < deadline, "no circuits\n{}", logs(&daemons));
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "circuits built on both ends after {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let files = tempfile::Builder::new()
        .prefix("veil-bench-")
        .tempdir()
        .expect("tempdir");
    std::fs::write(files.path().join("bench100.bin"), data).expect("write the file");
    let t = Instant::now();
    let report = daemons[s].veil_json(&["share", files.path().to_str().unwrap()]);
    assert_eq!(
        report["added"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    eprintln!("shared (hashed) in {:.2} s", t.elapsed().as_secs_f64());
    let id = blake3::hash(data).to_hex().to_string();

    // Findable: an exact-id search from the downloader returns it.
    loop {
        assert!(Instant::now() < deadline, "never found\n{}", logs(&daemons));
        let out = daemons[g].veil(&["search", "--json", "--timeout", "8", &id]);
        let found = out.status.success()
            && serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .ok()
                .and_then(|v| v["results"].as_array().cloned())
                .is_some_and(|r| r.iter().any(|h| h["id"] == id.as_str()));
        if found {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!(
        "findable after {:.1} s from the circuits",
        setup.elapsed().as_secs_f64()
    );

    let out_dir = tempfile::Builder::new()
        .prefix("veil-bench-out-")
        .tempdir()
        .expect("tempdir");
    let dest = out_dir.path().join("got.bin");
    let pids: Vec<u32> = daemons.iter().map(|d| d.pid().expect("running")).collect();
    let (result, times, path, cpu_before, cpu_after, machine) = loop {
        assert!(
            Instant::now() < deadline + Duration::from_secs(600),
            "never downloaded\n{}",
            logs(&daemons)
        );
        let cpu_before = cpu_seconds(&pids);
        let machine_before = machine_cpu_seconds();
        let start = Instant::now();
        let child = Command::new(bin("veil"))
            .arg("--data-dir")
            .arg(&daemons[g].data_dir)
            .args(["get", "--jsonl", "--timeout", GET_TIMEOUT_S, &id, "-o"])
            .arg(&dest)
            .env_remove("VEIL_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run veil get");
        let mut child = ChildGuard(child);
        // The circuits are looked at from another thread a few seconds
        // into the transfer, so that reading progress never stalls.
        let (look_tx, look_rx) = mpsc::channel::<()>();
        let dirs = (daemons[s].data_dir.clone(), daemons[g].data_dir.clone());
        let looker = std::thread::spawn(move || {
            look_rx.recv().ok()?;
            std::thread::sleep(Duration::from_secs(1));
            // Circuits built since the get started (the session's).
            let young = start.elapsed().as_secs() + 1;
            Some((circuits_of(&dirs.0, young), circuits_of(&dirs.1, young)))
        });
        // Every process's CPU time a few times a second: when the sharer
        // goes quiet, it has sent its last piece.
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (stop, pids) = (stop.clone(), pids.clone());
            std::thread::spawn(move || {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    samples.push((start.elapsed().as_secs_f64(), cpu_seconds(&pids)));
                    std::thread::sleep(SAMPLE_EVERY);
                }
                samples
            })
        };
        let mut first = None;
        let mut result = None;
        let lines = std::io::BufReader::new(child.0.stdout.take().expect("stdout")).lines();
        for line in lines.map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).expect("one object per line");
            if first.is_none() && v["progress"]["held"].as_u64().unwrap_or(0) >= 1 {
                first = Some(start.elapsed());
                let _ = look_tx.send(());
            }
            if !v["result"].is_null() {
                result = Some(v["result"].clone());
            }
        }
        let end = start.elapsed();
        let cpu_after = cpu_seconds(&pids);
        let machine_after = machine_cpu_seconds();
        let status = child.0.wait().expect("wait for veil get");
        stop.store(true, Ordering::Relaxed);
        let samples = sampler.join().expect("sampler");
        drop(look_tx);
        let path = looker.join().ok().flatten();
        match (status.success(), result, first) {
            (true, Some(r), Some(f)) => {
                break (
                    r,
                    (end, f, last_busy(&samples, s)),
                    path,
                    cpu_before,
                    cpu_after,
                    (machine_after.0 - machine_before.0, machine_after.1),
                );
            }
            _ => {
                let mut err = String::new();
                if let Some(mut e) = child.0.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                eprintln!("get not yet ({status}): {}", err.trim());
                let _ = std::fs::remove_file(&dest);
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    };
    let got = std::fs::read(&dest).expect("the downloaded file");
    assert!(
        got == data,
        "the downloaded bytes differ from the shared file"
    );
    assert_eq!(result["id"], id.as_str());
    let pieces = result["pieces"].as_u64().unwrap_or(0);
    let (end, first, sharer_quiet) = times;

    // Name each daemon by its part in the session.
    let mut names: Vec<String> = (0..RELAYS as usize)
        .map(|i| format!("relay {} ({})", i + 1, &ids[i][..8]))
        .collect();
    names.push("sharer (client-only)".into());
    names.push("downloader (client-only)".into());
    let path = match path {
        Some((sharer, downloader)) => describe_path(&sharer, &downloader, &ids, &mut names),
        None => "session path: not seen".into(),
    };
    let cpu = names
        .into_iter()
        .zip(cpu_before.iter().zip(&cpu_after))
        .map(|(n, (b, a))| (n, a - b))
        .collect();
    let first_piece_bytes = data.len().min(64 * 1024);
    // Stop the daemons before their temp dirs go (their Drop kills them
    // anyway, also on a panic above).
    for d in &mut daemons {
        d.kill();
    }
    VeilRun {
        total: end.as_secs_f64(),
        to_first: first.as_secs_f64(),
        from_first: (end - first).as_secs_f64(),
        first_piece_bytes,
        reported: result["seconds"].as_f64().unwrap_or(0.0),
        sharer_quiet,
        pieces,
        path,
        cpu,
        machine,
    }
}

/// `veil circuits --json` of the daemon on `dir`: the hops (node ids,
/// guard first) of each built circuit at most `max_age_s` old.
fn circuits_of(dir: &Path, max_age_s: u64) -> Vec<Vec<String>> {
    let out = Command::new(bin("veil"))
        .arg("--data-dir")
        .arg(dir)
        .args(["circuits", "--json"])
        .env_remove("VEIL_DATA_DIR")
        .output()
        .expect("run veil circuits");
    if !out.status.success() {
        eprintln!("veil circuits failed: {}", stderr(&out));
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["state"] == "built" && c["age_s"].as_u64().is_some_and(|a| a <= max_age_s))
        .map(|c| {
            c["hops"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| h.as_str().map(str::to_string))
                .collect()
        })
        .collect()
}

/// The session's path: a downloader circuit (its own path, ending at the
/// rendezvous point) and a sharer circuit one hop longer (its own path,
/// then the point) that end at the same relay; marks the daemons' roles
/// in `names`.
fn describe_path(
    sharer: &[Vec<String>],
    downloader: &[Vec<String>],
    ids: &[String],
    names: &mut [String],
) -> String {
    let short = |id: &str| {
        ids.iter()
            .position(|i| i == id)
            .map_or_else(|| id[..8].to_string(), |i| format!("R{}", i + 1))
    };
    let mut pairs = Vec::new();
    for d in downloader {
        for s in sharer {
            if d.last().is_some() && d.last() == s.last() && s.len() == d.len() + 1 {
                pairs.push((d, s));
            }
        }
    }
    let Some((d, s)) = pairs.first() else {
        return format!(
            "session path: no downloader and sharer circuits share a last hop (downloader {:?}, sharer {:?})",
            downloader.iter().map(Vec::len).collect::<Vec<_>>(),
            sharer.iter().map(Vec::len).collect::<Vec<_>>()
        );
    };
    let mut hops: Vec<String> = d.iter().map(|h| short(h)).collect();
    let back: Vec<String> = s.iter().rev().skip(1).map(|h| short(h)).collect();
    hops.extend(back);
    for (i, id) in ids.iter().enumerate() {
        let mut roles = Vec::new();
        if d.iter().any(|h| h == id) && d.last() != Some(id) {
            roles.push("downloader's circuit");
        }
        if d.last() == Some(id) {
            roles.push("rendezvous point");
        }
        if s[..s.len() - 1].iter().any(|h| h == id) {
            roles.push("sharer's circuit");
        }
        if !roles.is_empty() {
            names[i] = format!("{}: {}", names[i], roles.join(", "));
        }
    }
    format!(
        "session path: downloader > {} > sharer ({} relays on the downloader's circuit, rendezvous point included; {} on the sharer's; {} relay positions, {} links end to end{})",
        hops.join(" > "),
        d.len(),
        s.len(),
        d.len() + s.len() - 1,
        d.len() + s.len(),
        if pairs.len() > 1 {
            format!("; {} candidate pairs, the first shown", pairs.len())
        } else {
            String::new()
        }
    )
}

/// The time of the last sample after which process `who` still used more
/// than a tenth of a core.
fn last_busy(samples: &[(f64, Vec<f64>)], who: usize) -> f64 {
    samples
        .windows(2)
        .rev()
        .find(|w| {
            let dt = w[1].0 - w[0].0;
            w[1].1[who] - w[0].1[who] > 0.1 * dt
        })
        .map_or(0.0, |w| w[1].0)
}

/// User + system CPU seconds of each process so far (/proc/PID/stat).
fn cpu_seconds(pids: &[u32]) -> Vec<f64> {
    let tick = clock_ticks();
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after the ")" that closes the command name: state is
            // field 3, utime 14, stime 15.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<u64> = rest
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|x| x.parse().ok())
                .collect();
            f.iter().sum::<u64>() as f64 / tick
        })
        .collect()
}

/// CPU seconds the whole machine spent busy so far (/proc/stat), and its
/// CPU count.
fn machine_cpu_seconds() -> (f64, usize) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    let busy = stat
        .lines()
        .next()
        .map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal ...: busy is
            // all but idle and iowait.
            f.iter().sum::<u64>() - f.get(3).copied().unwrap_or(0) - f.get(4).copied().unwrap_or(0)
        })
        .unwrap_or(0);
    (busy as f64 / clock_ticks(), cpus)
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}
