//! Harness for veil's integration tests: start real `veild` processes on
//! temp data dirs, run the real `veil` CLI against them, and clean up.
//!
//! The binaries are found next to the test executable's directory
//! (`target/<profile>/`); `cargo test --workspace` builds them because the
//! daemon and CLI crates have integration tests of their own.
//!
//! Daemons log at their default level: the harness removes `VEIL_LOG`
//! (and `VEIL_DATA_DIR`) from their environment; a test that wants more
//! passes `--log`.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a daemon may take to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Path of a workspace binary (`veild`, `veil`, `veil-sim`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built; run `cargo build --workspace` (or `cargo test --workspace`) first",
        path.display()
    );
    path
}

/// A running `veild` on its own temp data dir, killed and cleaned up on drop.
#[derive(Debug)]
pub struct Daemon {
    pub child: Option<Child>,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    log: PathBuf,
    args: Vec<String>,
}

impl Daemon {
    /// Start a testnet daemon on a fresh temp data dir and wait until it
    /// answers `veil status`. Its peer links listen on an ephemeral port of
    /// 127.0.0.1 and it joins no network.
    pub fn start() -> Daemon {
        Daemon::start_with(&["--listen", "127.0.0.1:0"])
    }

    /// Like [`Daemon::start`] with these extra `veild` arguments (e.g.
    /// `--listen`, `--bootstrap`) instead of the default `--listen`.
    pub fn start_with(args: &[&str]) -> Daemon {
        let mut d = Daemon::prepare(args);
        d.restart();
        d
    }

    /// A daemon with a fresh temp data dir and these extra `veild`
    /// arguments, not started yet: see [`Daemon::launch`] and
    /// [`Daemon::wait_ready`] to start several at once.
    pub fn prepare(args: &[&str]) -> Daemon {
        let tmp = tempfile::Builder::new()
            .prefix("veil-it-")
            .tempdir()
            .expect("tempdir");
        let data_dir = tmp.path().join("data");
        Daemon {
            child: None,
            log: tmp.path().join("veild.log"),
            data_dir,
            _tmp: Some(tmp),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Replace the extra `veild` arguments used by the next start (the data
    /// dir stays).
    pub fn set_args(&mut self, args: &[&str]) {
        self.args = args.iter().map(|a| a.to_string()).collect();
    }

    /// Spawn `veild` without waiting; returns the child.
    pub fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        Command::new(bin("veild"))
            .arg("--testnet")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .env_remove("VEIL_DATA_DIR")
            .env_remove("VEIL_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn veild")
    }

    /// (Re)start the daemon after a stop or kill and wait until it is ready.
    pub fn restart(&mut self) {
        self.launch();
        self.wait_ready();
    }

    /// Spawn the daemon without waiting for it.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "daemon still running");
        self.child = Some(self.spawn());
    }

    /// Wait until the launched daemon answers `veil status`.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let out = self.veil(&["status", "--json"]);
            if out.status.success() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "veild exited early with {status}; log:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "veild did not become ready; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Run `veil` against this daemon.
    pub fn veil(&self, args: &[&str]) -> Output {
        Command::new(bin("veil"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .env_remove("VEIL_DATA_DIR")
            .stdin(Stdio::null())
            .output()
            .expect("run veil")
    }

    /// Run `veil ... --json` and parse stdout, asserting success.
    pub fn veil_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--json");
        let out = self.veil(&all);
        assert!(
            out.status.success(),
            "veil {all:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "veil {all:?}: stdout is not one JSON document ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Stop with SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kill with SIGKILL and wait.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the daemon has at least one built circuit of its own.
    pub fn has_built_circuit(&self) -> bool {
        self.veil_json(&["circuits"])
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["state"] == "built"))
    }

    /// What the daemon logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Text of a process's stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Text of a process's stdout.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A free UDP address on the loopback address `ip` (one per /16 in tests:
/// 127.N.0.1).
pub fn free_udp_addr(ip: &str) -> SocketAddr {
    UdpSocket::bind((ip, 0))
        .and_then(|s| s.local_addr())
        .expect("bind a loopback UDP socket")
}

/// A local network of `n` testnet daemons on 127.1.0.1 … 127.n.0.1, all
/// bootstrapped from the first and launched at once (nobody waits for the
/// seed to be up). Returns the daemons, their listen addresses and their
/// node ids.
pub fn start_network(n: u8) -> (Vec<Daemon>, Vec<SocketAddr>, Vec<String>) {
    start_network_with(n, |_| Vec::new())
}

/// [`start_network`] with `extra(i)` added to the arguments of daemon `i`
/// (0-based), e.g. a `--config` file for one of them.
pub fn start_network_with(
    n: u8,
    extra: impl Fn(usize) -> Vec<String>,
) -> (Vec<Daemon>, Vec<SocketAddr>, Vec<String>) {
    let ips: Vec<String> = (1..=n).map(|i| format!("127.{i}.0.1")).collect();
    start_network_on_with(&ips, extra)
}

/// Like [`start_network`] with one daemon on each of these loopback IPs
/// (one per /16, e.g. `127.160.0.1`), the first the seed: for tests that
/// must not share addresses with others.
pub fn start_network_on(ips: &[String]) -> (Vec<Daemon>, Vec<SocketAddr>, Vec<String>) {
    start_network_on_with(ips, |_| Vec::new())
}

/// [`start_network_on`] with `extra(i)` added to daemon `i`'s arguments.
pub fn start_network_on_with(
    ips: &[String],
    extra: impl Fn(usize) -> Vec<String>,
) -> (Vec<Daemon>, Vec<SocketAddr>, Vec<String>) {
    let addrs: Vec<SocketAddr> = ips.iter().map(|ip| free_udp_addr(ip)).collect();
    let seed = addrs[0].to_string();
    let mut daemons: Vec<Daemon> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mut args = vec!["--listen".to_string(), a.to_string(), "--bootstrap".into()];
            args.push(seed.clone());
            args.extend(extra(i));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Daemon::prepare(&args)
        })
        .collect();
    for d in &mut daemons {
        d.launch();
    }
    for d in &mut daemons {
        d.wait_ready();
    }
    let ids = daemons
        .iter()
        .map(|d| {
            d.veil_json(&["id"])["node_id"]
                .as_str()
                .expect("node_id")
                .to_string()
        })
        .collect();
    (daemons, addrs, ids)
}

/// Every daemon's log, each under a header, for failure messages.
pub fn logs(daemons: &[Daemon]) -> String {
    daemons
        .iter()
        .enumerate()
        .map(|(i, d)| format!("---- daemon {i}\n{}", d.log_text()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether the daemon has built a circuit of its own yet.
fn built(d: &Daemon) -> bool {
    d.has_built_circuit()
}

/// The whole user journey between two daemons of `daemons`: wait until
/// both have a built circuit, `sharer` shares a file named `name` holding
/// `data`, `downloader` finds it with `veil search WORDS` and downloads
/// it with `veil get`, and the bytes are checked. Every step is retried
/// until it happens or `deadline` passes (then it panics with every
/// log). Returns the content id (hex).
pub fn share_find_get(
    daemons: &[Daemon],
    sharer: usize,
    downloader: usize,
    name: &str,
    data: &[u8],
    words: &[&str],
    deadline: Instant,
) -> String {
    let (s, d) = (&daemons[sharer], &daemons[downloader]);
    while !(built(s) && built(d)) {
        assert!(Instant::now() < deadline, "no circuits\n{}", logs(daemons));
        std::thread::sleep(Duration::from_millis(500));
    }
    let files = tempfile::tempdir().expect("tempdir");
    std::fs::write(files.path().join(name), data).expect("write the shared file");
    let report = s.veil_json(&["share", files.path().to_str().expect("UTF-8 temp path")]);
    assert_eq!(
        report["added"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    let id = blake3::hash(data).to_hex().to_string();
    let mut search = vec!["search", "--timeout", "8"];
    search.extend_from_slice(words);
    loop {
        assert!(Instant::now() < deadline, "never found\n{}", logs(daemons));
        let v = d.veil_json(&search);
        let hits = v["results"].as_array().cloned().unwrap_or_default();
        if hits.iter().any(|h| h["id"] == id.as_str()) {
            break;
        }
    }
    let out_dir = tempfile::tempdir().expect("tempdir");
    let dest = out_dir.path().join("got");
    let dest_str = dest.to_str().expect("UTF-8 temp path");
    loop {
        assert!(
            Instant::now() < deadline,
            "never downloaded\n{}",
            logs(daemons)
        );
        let out = d.veil(&["get", "--json", "--timeout", "20", &id, "-o", dest_str]);
        if out.status.success() {
            break;
        }
        // Not yet: no provider record replicated yet. Say why, retry.
        eprintln!("get not yet: {}", stderr(&out));
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(
        std::fs::read(&dest).expect("the downloaded file") == data,
        "the downloaded bytes are not the file's"
    );
    id
}
