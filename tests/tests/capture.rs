//! From outside the daemons: a packet capture of the loopback interface
//! shows that no packet ever passes between a downloader's and a sharer's
//! addresses while one downloads the other's file. Five relays on their
//! own /16s; the sharer and the downloader are client-only, each on its
//! own /16 (127.165.0.1 and 127.166.0.1); `tcpdump` records every IPv4
//! packet on `lo` from before the network starts until after it stopped.
//!
//! Needs `tcpdump` and the right to capture on `lo` (root, or
//! `cap_net_raw`); without them the test fails and says so. `.ci/run`
//! installs tcpdump.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use veil_tests::{Daemon, free_udp_addr, logs, share_find_get, start_network_on};

/// Polling bound for the whole journey (not a timed assertion: each step
/// is retried until it happens or this passes).
const DEADLINE: Duration = Duration::from_secs(240);

/// How long tcpdump may take to start capturing, and to exit once told.
const TCPDUMP_TIMEOUT: Duration = Duration::from_secs(20);

const RELAYS: [&str; 5] = [
    "127.160.0.1",
    "127.161.0.1",
    "127.162.0.1",
    "127.163.0.1",
    "127.164.0.1",
];
const SHARER_IP: &str = "127.165.0.1";
const DOWNLOADER_IP: &str = "127.166.0.1";

/// A running `tcpdump -i lo`, writing every IPv4 packet's headers to a
/// file. Stopped (SIGINT, then SIGKILL if it lingers) and waited for on
/// drop too, so a failing test leaves no capture running.
struct Capture {
    child: Option<Child>,
    file: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

/// What tcpdump said when it stopped.
struct Stopped {
    /// Packets the kernel dropped before tcpdump read them.
    dropped: u64,
}

impl Capture {
    /// Start capturing and wait until tcpdump says it listens.
    fn start() -> Capture {
        let dir = tempfile::Builder::new()
            .prefix("veil-capture-")
            .tempdir()
            .expect("tempdir");
        let file = dir.path().join("lo.pcap");
        let stderr = dir.path().join("tcpdump.stderr");
        let err = std::fs::File::create(&stderr).expect("tcpdump's stderr file");
        // -U --immediate-mode: every packet reaches the file as it is
        // seen, so the file is whole when tcpdump stops. -s 128: headers
        // are all we read.
        let spawned = Command::new("tcpdump")
            .args(["-i", "lo", "-n", "-U", "--immediate-mode", "-s", "128"])
            .arg("-w")
            .arg(&file)
            .arg("ip")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "tcpdump is not installed, and this test needs it to watch the loopback \
                 interface: install it (Debian/Ubuntu: `sudo apt-get install -y tcpdump`; \
                 .ci/run does so) and run the test again"
            ),
            Err(e) => panic!("cannot run tcpdump: {e}"),
        };
        let mut capture = Capture {
            child: Some(child),
            file,
            stderr,
            _dir: dir,
        };
        let deadline = Instant::now() + TCPDUMP_TIMEOUT;
        loop {
            if capture.stderr_text().contains("listening on lo") {
                return capture;
            }
            let exited = capture
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                capture.child = None;
                panic!(
                    "tcpdump exited ({status}) before capturing: {}\nIt needs the right to \
                     capture on lo: run the tests as root, or give tcpdump the capability \
                     (`sudo setcap cap_net_raw,cap_net_admin=eip $(command -v tcpdump)`)",
                    capture.stderr_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "tcpdump did not start capturing within {TCPDUMP_TIMEOUT:?}: {}",
                capture.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Stop with SIGINT (tcpdump then flushes and prints its counts) and
    /// wait; SIGKILL if it does not exit in time.
    fn halt(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let pid = rustix::process::Pid::from_child(&child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        let deadline = Instant::now() + TCPDUMP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Stop capturing; the file is then complete.
    fn stop(&mut self) -> Stopped {
        assert!(
            self.halt(),
            "tcpdump did not stop on SIGINT: {}",
            self.stderr_text()
        );
        let text = self.stderr_text();
        let dropped = text
            .lines()
            .find_map(|l| l.strip_suffix(" packets dropped by kernel"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("tcpdump gave no drop count: {text}"));
        Stopped { dropped }
    }

    /// Every captured packet, as `tcpdump -r FILE -n -t` prints it.
    fn lines(&self) -> Vec<String> {
        read_capture(&self.file)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.halt();
    }
}

fn read_capture(file: &Path) -> Vec<String> {
    let out = Command::new("tcpdump")
        .args(["-n", "-t", "-r"])
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .expect("run tcpdump -r");
    assert!(
        out.status.success(),
        "tcpdump -r failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// One IPv4 packet: `IP SRC[.PORT] > DST[.PORT]: ...`.
#[derive(Debug)]
struct Packet {
    src: SocketEnd,
    dst: SocketEnd,
    udp: bool,
}

/// An address as tcpdump prints it: the IP, and the port if it has one.
#[derive(Debug, PartialEq)]
struct SocketEnd {
    ip: String,
    port: Option<u16>,
}

fn end(s: &str) -> Option<SocketEnd> {
    let parts: Vec<&str> = s.split('.').collect();
    let ip = parts.get(..4)?.join(".");
    ip.parse::<std::net::Ipv4Addr>().ok()?;
    let port = match parts.get(4..)? {
        [] => None,
        [p] => Some(p.parse().ok()?),
        _ => return None,
    };
    Some(SocketEnd { ip, port })
}

fn parse(line: &str) -> Option<Packet> {
    let mut t = line.split_whitespace();
    if t.next()? != "IP" {
        return None;
    }
    let src = end(t.next()?)?;
    if t.next()? != ">" {
        return None;
    }
    let dst = end(t.next()?.strip_suffix(':')?)?;
    let udp = t.next() == Some("UDP,");
    Some(Packet { src, dst, udp })
}

/// Whether `line` names the address `ip` (not one that merely starts
/// with it, like 127.165.0.10).
fn mentions(line: &str, ip: &str) -> bool {
    line.match_indices(ip).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + ip.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit() || c == '.')
            && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

#[test]
fn mentions_matches_whole_addresses_only() {
    assert!(mentions("IP 127.1.0.1.5 > 127.2.0.1.6: UDP", "127.1.0.1"));
    assert!(mentions("IP 127.1.0.1 > 127.2.0.1: ICMP", "127.2.0.1"));
    assert!(!mentions("IP 127.1.0.10.5 > 127.2.0.1.6: UDP", "127.1.0.1"));
    assert!(!mentions("IP 227.1.0.1.5 > 127.2.0.1.6: UDP", "27.1.0.1"));
    let p = parse("IP 127.165.0.1.40000 > 127.160.0.1.7171: UDP, length 1200").unwrap();
    assert_eq!(
        p.src,
        SocketEnd {
            ip: "127.165.0.1".into(),
            port: Some(40000)
        }
    );
    assert_eq!(p.dst.port, Some(7171));
    assert!(p.udp);
    let icmp = parse("IP 127.1.0.1 > 127.2.0.1: ICMP 127.1.0.1 udp port 9 unreachable").unwrap();
    assert_eq!(icmp.dst.port, None);
    assert!(!icmp.udp);
    assert!(parse("IP6 ::1.5 > ::1.6: UDP, length 3").is_none());
}

/// The node ids a daemon calls its guards, as relay addresses.
fn guard_addrs(d: &Daemon, relay_ids: &[String], relay_addrs: &[SocketAddr]) -> Vec<SocketEnd> {
    let status = d.veil_json(&["status"]);
    let guards = status["guards"].as_array().expect("guards").clone();
    guards
        .iter()
        .filter_map(|g| relay_ids.iter().position(|id| g == id.as_str()))
        .map(|i| SocketEnd {
            ip: relay_addrs[i].ip().to_string(),
            port: Some(relay_addrs[i].port()),
        })
        .collect()
}

#[test]
fn no_packet_passes_between_the_downloader_and_the_sharer() {
    let mut capture = Capture::start();
    let ips: Vec<String> = RELAYS.iter().map(|s| s.to_string()).collect();
    let (mut daemons, relay_addrs, relay_ids) = start_network_on(&ips);
    let seed = relay_addrs[0].to_string();
    for ip in [SHARER_IP, DOWNLOADER_IP] {
        let listen = free_udp_addr(ip).to_string();
        let mut d = Daemon::prepare(&["--listen", &listen, "--bootstrap", &seed, "--client-only"]);
        d.launch();
        d.wait_ready();
        daemons.push(d);
    }
    let (sharer, downloader) = (RELAYS.len(), RELAYS.len() + 1);
    let data: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    share_find_get(
        &daemons,
        sharer,
        downloader,
        "Ocelot Field Recordings.flac",
        &data,
        &["ocelot", "recordings"],
        Instant::now() + DEADLINE,
    );
    let sharer_guards = guard_addrs(&daemons[sharer], &relay_ids, &relay_addrs);
    let downloader_guards = guard_addrs(&daemons[downloader], &relay_ids, &relay_addrs);
    assert!(
        !sharer_guards.is_empty() && !downloader_guards.is_empty(),
        "no guards\n{}",
        logs(&daemons)
    );
    for d in daemons.iter_mut().rev() {
        d.stop();
    }
    // Every daemon has exited; give the capture a moment to read the
    // last of their packets before it stops (not a timed assertion).
    std::thread::sleep(Duration::from_millis(500));
    let stopped = capture.stop();
    assert_eq!(
        stopped.dropped, 0,
        "the kernel dropped packets before tcpdump read them: the capture is not whole"
    );

    let lines = capture.lines();
    let relay_ips: Vec<String> = relay_addrs.iter().map(|a| a.ip().to_string()).collect();
    let mut pair = Vec::new();
    let mut unparsed = Vec::new();
    let (mut from_sharer, mut from_downloader) = (0usize, 0usize);
    let (mut sharer_to_guards, mut downloader_to_guards) = (0usize, 0usize);
    let mut strangers = Vec::new();
    for line in &lines {
        let (s, d) = (mentions(line, SHARER_IP), mentions(line, DOWNLOADER_IP));
        if s && d {
            pair.push(line.clone());
        }
        if !(s || d) {
            continue;
        }
        let Some(p) = parse(line) else {
            unparsed.push(line.clone());
            continue;
        };
        // The other end of every packet of theirs is a relay, or the
        // client itself (a client-only endpoint spends its one stateless
        // reset on itself at start, from a throwaway socket of its IP).
        for (client, other) in [(&p.src, &p.dst), (&p.dst, &p.src)] {
            if [SHARER_IP, DOWNLOADER_IP].contains(&client.ip.as_str())
                && !relay_ips.contains(&other.ip)
                && other.ip != client.ip
            {
                strangers.push(line.clone());
            }
        }
        if p.src.ip == SHARER_IP {
            from_sharer += 1;
            if p.udp && sharer_guards.contains(&p.dst) {
                sharer_to_guards += 1;
            }
        }
        if p.src.ip == DOWNLOADER_IP {
            from_downloader += 1;
            if p.udp && downloader_guards.contains(&p.dst) {
                downloader_to_guards += 1;
            }
        }
    }
    eprintln!(
        "capture: {} IPv4 packets on lo; sharer sent {from_sharer} ({sharer_to_guards} to its \
         guards), downloader sent {from_downloader} ({downloader_to_guards} to its guards); \
         between the two: {}",
        lines.len(),
        pair.len()
    );
    // (a) The capture saw the journey: both clients talked to their guards.
    assert!(
        sharer_to_guards > 0,
        "no packet from the sharer to its guards in the capture"
    );
    assert!(
        downloader_to_guards > 0,
        "no packet from the downloader to its guards in the capture"
    );
    assert!(unparsed.is_empty(), "unread packet lines: {unparsed:?}");
    // (b) Not one packet between the two, either way.
    assert!(
        pair.is_empty(),
        "{} packets between the downloader and the sharer: {:?}",
        pair.len(),
        &pair[..pair.len().min(10)]
    );
    // And neither talked to anything but relays (and itself).
    assert!(
        strangers.is_empty(),
        "packets between a client and a non-relay: {:?}",
        &strangers[..strangers.len().min(10)]
    );
}
