//! `veil demo`, the README's main job, run as a user runs it: a file goes
//! across a local network of real daemons and comes out identical, the
//! summary is one JSON document, and no daemon or work dir is left behind,
//! also when the demo is interrupted with Ctrl-C in the middle.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use veil_tests::bin;

/// Bound on one demo run (its own `--timeout` is lower).
const DEADLINE: Duration = Duration::from_secs(300);

/// A running `veil demo` whose stderr lines arrive on a channel; killed
/// on drop if it still runs.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        Demo::start_with_timeout(args, 240)
    }

    /// `veil demo ARGS --timeout SECS`.
    fn start_with_timeout(args: &[&str], secs: u32) -> Demo {
        let mut child = Command::new(bin("veil"))
            .arg("demo")
            .args(args)
            .args(["--timeout", &secs.to_string()])
            .env_remove("VEIL_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn veil demo");
        let err = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut out = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = std::io::Read::read_to_end(&mut out, &mut buf);
            buf
        });
        Demo {
            child,
            lines,
            seen: Vec::new(),
            stdout: Some(stdout),
        }
    }

    /// Read stderr until a line satisfies `pred` (or the demo ends).
    fn wait_for(&mut self, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + DEADLINE;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// The work dir the demo announced on stderr.
    fn work_dir(&mut self) -> PathBuf {
        let line = self
            .wait_for(|l| l.starts_with("==> work dir "))
            .unwrap_or_else(|| panic!("no work dir line; stderr:\n{}", self.seen.join("\n")));
        PathBuf::from(line.trim_start_matches("==> work dir "))
    }

    /// Wait for the exit; returns the status, stdout and all of stderr.
    fn finish(mut self) -> (std::process::ExitStatus, Vec<u8>, String) {
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "veil demo did not end; stderr:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        let out = self
            .stdout
            .take()
            .map(|h| h.join().expect("stdout reader"))
            .unwrap_or_default();
        (status, out, self.seen.join("\n"))
    }
}

impl Drop for Demo {
    /// A demo still running (a failed assertion) is interrupted, so that
    /// it stops its daemons, and killed if it does not end.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = rustix::process::Pid::from_child(&self.child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Processes whose command line mentions `needle` (the demo's daemons
/// all name their data dirs inside the work dir).
fn processes_mentioning(needle: &Path) -> Vec<String> {
    let needle = needle.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) {
                found.push(format!("{name}: {cmdline}"));
            }
        }
    }
    found
}

/// A five-daemon demo of a generated 1 MiB file into `out`, with `extra`
/// arguments and its own `--timeout`.
fn small_demo(out: &Path, extra: &[&str], timeout_s: u32) -> Demo {
    let out = out.to_str().expect("UTF-8 temp path");
    let mut args = vec!["--nodes", "5", "--size-mib", "1", "--out", out];
    args.extend_from_slice(extra);
    Demo::start_with_timeout(&args, timeout_s)
}

/// No daemon of the demo runs, and its work dir is gone.
fn assert_nothing_left(work: &Path) {
    assert!(!work.exists(), "{} is left behind", work.display());
    let left = processes_mentioning(work);
    assert!(left.is_empty(), "daemons left running: {left:?}");
}

fn body(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_246_822_519).rotate_left(7) >> 11) as u8)
        .collect()
}

#[test]
fn demo_json_sends_a_file_across_the_network_verified_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("Harbour Lights field recording.wav");
    let data = body(1_300_000);
    std::fs::write(&file, &data).unwrap();
    // --out does not exist yet: the demo creates it.
    let out = tmp.path().join("out").join("here");

    let mut demo = Demo::start(&[
        "--nodes",
        "6",
        "--file",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    let work = demo.work_dir();
    let (status, stdout, stderr) = demo.finish();
    assert!(status.success(), "veil demo failed ({status}):\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}",
            String::from_utf8_lossy(&stdout)
        )
    });

    // The content id is what b3sum prints, and the bytes are the file's.
    let id = blake3::hash(&data).to_hex().to_string();
    assert_eq!(report["content_id"], id.as_str(), "{report}");
    let output = PathBuf::from(report["output_path"].as_str().expect("output_path"));
    assert_eq!(output.parent(), Some(out.as_path()), "{report}");
    assert_eq!(std::fs::read(&output).unwrap(), data, "identical bytes");
    assert_eq!(report["bytes"], data.len() as u64);
    assert!(report["seconds"].as_f64().unwrap() > 0.0);
    assert!(report["throughput_mb_s"].as_f64().unwrap() > 0.0);
    assert_eq!(report["hops"], 3);

    // Six daemons: four relays, one sharer, one downloader, each on its
    // own /16 of loopback, each with a pid.
    let nodes = report["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 6);
    let role_count = |r: &str| nodes.iter().filter(|n| n["role"] == r).count();
    assert_eq!(
        (
            role_count("relay"),
            role_count("sharer"),
            role_count("downloader")
        ),
        (4, 1, 1)
    );
    let ip = |n: &serde_json::Value| -> String {
        let a: std::net::SocketAddr = n["address"].as_str().unwrap().parse().unwrap();
        a.ip().to_string()
    };
    let mut prefixes: Vec<String> = nodes
        .iter()
        .map(|n| ip(n).split('.').take(2).collect::<Vec<_>>().join("."))
        .collect();
    prefixes.sort();
    prefixes.dedup();
    assert_eq!(prefixes.len(), 6, "one /16 each: {report}");
    assert!(nodes.iter().all(|n| n["pid"].as_u64().is_some()));

    // The two ends never linked to each other: each only to relays.
    let relay_ips: Vec<String> = nodes
        .iter()
        .filter(|n| n["role"] == "relay")
        .map(ip)
        .collect();
    for side in ["downloader_links", "sharer_links"] {
        let links = report[side].as_array().expect(side);
        assert!(!links.is_empty(), "{side}: {report}");
        for l in links {
            let a: std::net::SocketAddr = l.as_str().unwrap().parse().unwrap();
            assert!(
                relay_ips.contains(&a.ip().to_string()),
                "{side} has a link to a non-relay {a}: {report}"
            );
        }
    }

    // Nothing is left: no daemon of the demo, no work dir.
    assert_nothing_left(&work);
}

#[test]
fn ctrl_c_in_the_middle_stops_every_daemon_and_removes_the_work_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut demo = small_demo(&out, &["--json"], 240);
    let work = demo.work_dir();
    // Interrupt once every daemon is up (they are all running then).
    demo.wait_for(|l| l.starts_with("==> nodes up: 5/5"))
        .expect("the daemons came up");
    let running = processes_mentioning(&work);
    assert!(
        running.len() >= 5,
        "five daemons run before the interrupt: {running:?}"
    );
    let pid = rustix::process::Pid::from_child(&demo.child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let (status, stdout, stderr) = demo.finish();
    assert_eq!(status.code(), Some(130), "exit status {status}:\n{stderr}");
    assert!(
        stdout.is_empty(),
        "no summary after an interrupt: {stdout:?}"
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_nothing_left(&work);
}

#[test]
fn bad_arguments_are_refused_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no such file");
    let run = |args: &[&str]| {
        Command::new(bin("veil"))
            .arg("demo")
            .args(args)
            .env_remove("VEIL_DATA_DIR")
            .stdin(Stdio::null())
            .output()
            .expect("run veil demo")
    };
    let o = run(&["--file", missing.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no such file"), "{err}");
    assert!(!err.contains("work dir"), "nothing started: {err}");
    assert!(o.stdout.is_empty());

    let o = run(&["--nodes", "4", "--hops", "3"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("at least 5"), "{err}");

    let o = run(&["--file", tmp.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not a regular file"), "{err}");

    let o = run(&["--nodes", "250"]);
    assert_eq!(o.status.code(), Some(2), "usage error");
}

#[test]
fn a_demo_killed_outright_leaves_no_daemon_running() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut demo = small_demo(&out, &[], 240);
    let work = demo.work_dir();
    demo.wait_for(|l| l.starts_with("==> nodes up: 5/5"))
        .expect("the daemons came up");
    assert!(processes_mentioning(&work).len() >= 5);
    // SIGKILL: no handler runs; the kernel tells each daemon instead.
    demo.child.kill().unwrap();
    let _ = demo.child.wait();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = processes_mentioning(&work);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "daemons outlived a killed demo: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Only the work dir is left, as after any SIGKILL: ours to remove.
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn a_demo_that_fails_midway_still_stops_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // One second is too short for circuits: the demo gives up after its
    // daemons started, and must take them down with it.
    let mut demo = small_demo(&out, &["--json"], 1);
    let work = demo.work_dir();
    let (status, stdout, stderr) = demo.finish();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stdout.is_empty(), "no summary on failure");
    assert!(stderr.contains("--timeout"), "says why: {stderr}");
    assert_nothing_left(&work);
}
