//! Daemon robustness: the instance lock, the control token, an unreachable
//! daemon, kills at any moment, and control clients that hang or are too
//! many.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use veil_tests::{Daemon, bin, stderr};

#[test]
fn second_instance_is_refused() {
    let d = Daemon::start();
    let out = std::process::Command::new(bin("veild"))
        .args(["--testnet", "--data-dir"])
        .arg(&d.data_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("already running"), "{err}");
    // The first one is unharmed.
    d.veil_json(&["status"]);
}

fn raw_request(d: &Daemon, line: &str) -> serde_json::Value {
    let mut s = UnixStream::connect(d.data_dir.join("control.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).unwrap();
    serde_json::from_str(&reply).unwrap()
}

#[test]
fn missing_or_wrong_token_is_refused() {
    let d = Daemon::start();
    let wrong = raw_request(&d, "{\"token\":\"00\",\"command\":{\"cmd\":\"library\"}}\n");
    assert_eq!(wrong["reply"], "error");
    assert_eq!(wrong["error"]["kind"], "unauthorized");
    let missing = raw_request(&d, "{\"command\":{\"cmd\":\"library\"}}\n");
    assert_eq!(missing["reply"], "error");
    let garbage = raw_request(&d, "\u{1}\u{2}not json\n");
    assert_eq!(garbage["error"]["kind"], "bad_request");
    // The right token works.
    let token = std::fs::read_to_string(d.data_dir.join("control.token")).unwrap();
    let ok = raw_request(
        &d,
        &format!(
            "{{\"token\":\"{}\",\"command\":{{\"cmd\":\"library\"}}}}\n",
            token.trim()
        ),
    );
    assert_eq!(ok["reply"], "ok");
}

#[test]
fn unreachable_daemon_says_how_to_start_it() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["status"][..],
        &["library", "--json"],
        &["find", "x"],
        &["id"],
    ] {
        let out = std::process::Command::new(bin("veil"))
            .arg("--data-dir")
            .arg(tmp.path().join("nothing"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("not reachable") && err.contains("veild"),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
    // The CLI never creates the data dir.
    assert!(!tmp.path().join("nothing").exists());
}

#[test]
fn sigkill_during_share_never_corrupts_the_store() {
    let mut d = Daemon::start();
    let files = tempfile::tempdir().unwrap();
    for i in 0..60 {
        let data: Vec<u8> = (0..1_000_000u32)
            .map(|j| ((i * 31 + j) % 253) as u8)
            .collect();
        std::fs::write(files.path().join(format!("file{i:02}.bin")), data).unwrap();
    }
    let dir = files.path().to_str().unwrap().to_owned();
    for round in 0..4u64 {
        // Start a share and kill the daemon while it runs.
        let mut share = std::process::Command::new(bin("veil"))
            .arg("--data-dir")
            .arg(&d.data_dir)
            .args(["share", "--json", &dir])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(30 + round * 40));
        d.kill();
        let _ = share.wait();
        // A new daemon starts straight away on the same dir.
        d.restart();
        let db = rusqlite::Connection::open(d.data_dir.join("veil.db")).unwrap();
        let check: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        // Every indexed row matches its file's hash.
        let lib = d.veil_json(&["library"]);
        for e in lib.as_array().unwrap() {
            let data = std::fs::read(e["path"].as_str().unwrap()).unwrap();
            assert_eq!(e["id"], blake3::hash(&data).to_hex().as_str());
        }
    }
    let report = d.veil_json(&["share", &dir]);
    let total = report["added"].as_array().unwrap().len() as u64
        + report["unchanged"].as_u64().unwrap()
        + report["updated"].as_array().unwrap().len() as u64;
    assert_eq!(total, 60);
    assert_eq!(d.veil_json(&["library"]).as_array().unwrap().len(), 60);
}

/// A daemon on loopback reading `toml` as its config file (the returned
/// temp dir holds the file; keep it alive).
fn with_config(toml: &str) -> (tempfile::TempDir, Daemon) {
    let cfg = tempfile::tempdir().unwrap();
    let path = cfg.path().join("veild.toml");
    std::fs::write(&path, toml).unwrap();
    let d = Daemon::start_with(&[
        "--listen",
        "127.0.0.1:0",
        "--config",
        path.to_str().unwrap(),
    ]);
    (cfg, d)
}

/// Control clients that send nothing, or half a request line, are dropped
/// after `[control] timeout_s` (here 2 s), told why; others are served
/// meanwhile and afterwards.
#[test]
fn a_silent_control_client_is_dropped_and_others_are_served() {
    let (_cfg, d) = with_config("[control]\ntimeout_s = 2\n");
    let socket = d.data_dir.join("control.sock");
    let silent = UnixStream::connect(&socket).unwrap();
    let mut partial = UnixStream::connect(&socket).unwrap();
    partial.write_all(b"{\"token\":\"").unwrap();
    let opened = std::time::Instant::now();
    // Served while the two hang.
    for _ in 0..3 {
        d.veil_json(&["status"]);
    }
    for (what, s) in [("silent", silent), ("partial", partial)] {
        // Generous bound: a dropped client sees its reply and EOF long
        // before this.
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut lines = BufReader::new(s).lines();
        let reply: serde_json::Value = serde_json::from_str(
            &lines
                .next()
                .unwrap_or_else(|| panic!("{what}: closed without a reply"))
                .unwrap_or_else(|e| panic!("{what}: not dropped: {e}")),
        )
        .unwrap();
        assert_eq!(reply["error"]["kind"], "bad_request", "{what}: {reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no complete request"),
            "{what}: {reply}"
        );
        assert!(lines.next().is_none(), "{what}: not closed");
    }
    assert!(opened.elapsed() < Duration::from_secs(25));
    d.veil_json(&["status"]);
}

/// At most `[control] max_connections` (here 2) control connections are
/// served at once: one more, and `veil status` too, is answered with a
/// `busy` error line and closed while two are held; once they are closed,
/// `veil status` works again.
#[test]
fn control_connections_over_the_cap_are_refused_until_others_close() {
    let (_cfg, d) = with_config("[control]\nmax_connections = 2\ntimeout_s = 60\n");
    let socket = d.data_dir.join("control.sock");
    // A connection that sends nothing holds its slot (for `timeout_s`).
    // One that is answered at once was refused because an earlier one
    // (the readiness check's) had not let go of its slot yet: try again.
    let hold = || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let s = UnixStream::connect(&socket).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut line = String::new();
            match BufReader::new(&s).read_line(&mut line) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return s,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return s,
                other => {
                    assert!(std::time::Instant::now() < deadline, "{other:?}: {line}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    };
    let held = [hold(), hold()];

    // Over the cap: a busy line, then the end of the connection.
    for _ in 0..3 {
        let s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut lines = BufReader::new(s).lines();
        let reply: serde_json::Value =
            serde_json::from_str(&lines.next().expect("a reply line").unwrap()).unwrap();
        assert_eq!(reply["reply"], "error", "{reply}");
        assert_eq!(reply["error"]["kind"], "busy", "{reply}");
        assert!(lines.next().is_none(), "not closed");
    }
    let out = d.veil(&["status"]);
    assert!(!out.status.success(), "veil status served over the cap");
    let err = stderr(&out);
    assert!(err.contains("too many control connections"), "{err}");

    // Closing the held ones frees their slots.
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = d.veil(&["status", "--json"]);
        if out.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "veil status still refused: {}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d.veil_json(&["status"]);
}
