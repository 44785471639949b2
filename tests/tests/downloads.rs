//! `veil downloads`: listing, pausing, resuming and cancelling downloads.
//!
//! On one daemon without a network (downloads registered through the
//! daemon's own download code while it is stopped): what a start resumes,
//! every command on running and idle downloads, and the errors. Then on
//! five testnet daemons on their own /16s of loopback, with the sharer's
//! upload throttled so that a transfer takes a while: a running download
//! is listed, paused mid-way (the waiting `veil get` is told, the partial
//! file stays, no piece arrives while paused); meanwhile another is
//! cancelled mid-way (its `veil get` is told, the partial file and the row
//! go); the paused one is resumed to the exact bytes.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use veil_core::content::ContentId;
use veil_daemon::api::{Command, ErrorKind};
use veil_daemon::client::{self, ClientError};
use veil_daemon::datadir::{DB_FILE, DataDir};
use veil_daemon::download::PartialDownload;
use veil_daemon::store::Store;
use veil_tests::{Daemon, logs, start_network_with, stderr};

/// Polling bound for circuits, publication and transfers (not a timed
/// assertion: each step is retried until it happens or this passes).
const DEADLINE: Duration = Duration::from_secs(180);

/// Bound for a control command's effect on one daemon.
const SHORT: Duration = Duration::from_secs(20);

fn body(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

fn partial(d: &Daemon, id: &str) -> PathBuf {
    d.data_dir.join("downloads").join(format!("{id}.part"))
}

/// The entry of `id` in `veil downloads --json`, if listed.
fn listed(d: &Daemon, id: &str) -> Option<Value> {
    let list = d.veil_json(&["downloads"]);
    let list = list.as_array().expect("one JSON array");
    list.iter().find(|e| e["id"] == id).cloned()
}

/// Polls `veil downloads` until the entry of `id` satisfies `ok`.
fn wait_listed(d: &Daemon, id: &str, bound: Duration, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + bound;
    loop {
        let e = listed(d, id);
        if let Some(e) = e.as_ref().filter(|e| ok(e)) {
            return e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "download {id} never got there: {e:?}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The kind of error the daemon answers `command` with.
fn error_kind(d: &Daemon, command: Command) -> ErrorKind {
    let dir = DataDir::resolve(Some(d.data_dir.clone())).unwrap();
    match client::call(&dir, command, &mut |_| {}) {
        Err(ClientError::Api(e)) => e.kind,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn downloads_on_one_daemon_are_listed_paused_resumed_and_cancelled() {
    let mut d = Daemon::start();
    assert_eq!(d.veil_json(&["downloads"]), serde_json::json!([]));
    let empty = d.veil(&["downloads"]);
    assert!(empty.status.success());
    assert!(
        stderr(&empty).contains("no downloads"),
        "{}",
        stderr(&empty)
    );

    // Two downloads registered while the daemon is stopped: one active,
    // one paused. Nobody provides them (this daemon has no network), so
    // a fetch of either waits for providers until it is stopped.
    d.stop();
    let out = tempfile::tempdir().unwrap();
    let active = ContentId::from_bytes(*blake3::hash(b"active").as_bytes());
    let paused = ContentId::from_bytes(*blake3::hash(b"paused").as_bytes());
    {
        let dir = DataDir::resolve(Some(d.data_dir.clone())).unwrap();
        let store = Arc::new(Mutex::new(Store::open(&dir.file(DB_FILE)).unwrap()));
        let dest = |n: &str| out.path().join(n);
        PartialDownload::create(&store, &dir, active, 1_000_000, "a.bin", &dest("a.bin")).unwrap();
        let mut p = PartialDownload::create(&store, &dir, paused, 300_000, "p.bin", &dest("p.bin"))
            .unwrap();
        p.pause().unwrap();
    }
    let (active, paused) = (active.to_hex(), paused.to_hex());
    d.restart();

    // A start resumes the active download only.
    let a = wait_listed(&d, &active, SHORT, |e| e["running"] == true);
    assert_eq!(a["state"], "active");
    assert_eq!(a["name"], "a.bin");
    assert_eq!(a["size"], 1_000_000);
    assert_eq!(a["pieces"], 16);
    assert_eq!(a["held"], 0);
    assert_eq!(a["held_bytes"], 0);
    assert_eq!(a["dest"], out.path().join("a.bin").to_str().unwrap());
    let p = listed(&d, &paused).expect("the paused download is listed");
    assert_eq!(
        (&p["state"], &p["running"]),
        (&"paused".into(), &false.into())
    );
    let deadline = Instant::now() + SHORT;
    while !d.log_text().contains("resuming a download") {
        assert!(
            Instant::now() < deadline,
            "no resume logged\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.log_text().matches("resuming a download").count(), 1);
    let table = veil_tests::stdout(&d.veil(&["downloads"]));
    assert!(
        table.contains(&active[..16]) && table.contains("running"),
        "{table}"
    );
    assert!(
        table.contains(&paused[..16]) && table.contains("paused"),
        "{table}"
    );

    // Errors: a malformed id, an id nobody downloads, a usage error.
    let unknown = "ab".repeat(32);
    for bad in ["", "xyz", &"g".repeat(64), &active[..63]] {
        let id = bad.to_string();
        assert_eq!(
            error_kind(&d, Command::PauseDownload { id: id.clone() }),
            ErrorKind::BadRequest
        );
        assert_eq!(
            error_kind(&d, Command::ResumeDownload { id: id.clone() }),
            ErrorKind::BadRequest
        );
        assert_eq!(
            error_kind(&d, Command::CancelDownload { id }),
            ErrorKind::BadRequest
        );
    }
    for command in [
        Command::PauseDownload {
            id: unknown.clone(),
        },
        Command::ResumeDownload {
            id: unknown.clone(),
        },
        Command::CancelDownload {
            id: unknown.clone(),
        },
    ] {
        assert_eq!(error_kind(&d, command), ErrorKind::NotFound);
    }
    let bad = d.veil(&["downloads", "pause", "xyz"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("not a content id"),
        "{}",
        stderr(&bad)
    );
    let bad = d.veil(&["downloads", "cancel", &unknown, "--json"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(bad.stdout.is_empty());
    assert!(stderr(&bad).contains("no download of"), "{}", stderr(&bad));
    assert_eq!(d.veil(&["downloads", "frobnicate"]).status.code(), Some(2));

    // Pausing twice is no error; resuming a running download leaves it
    // running.
    let p = d.veil_json(&["downloads", "pause", &paused]);
    assert_eq!(
        (&p["state"], &p["running"]),
        (&"paused".into(), &false.into())
    );
    let a = d.veil_json(&["downloads", "resume", &active]);
    assert_eq!(
        (&a["state"], &a["running"]),
        (&"active".into(), &true.into())
    );

    // Pause a running download: it stops; its partial file stays.
    let a = d.veil_json(&["downloads", "pause", &active]);
    assert_eq!(
        (&a["state"], &a["running"]),
        (&"paused".into(), &false.into())
    );
    let a = listed(&d, &active).unwrap();
    assert_eq!(
        (&a["state"], &a["running"]),
        (&"paused".into(), &false.into())
    );
    assert!(partial(&d, &active).exists());

    // Resume it: active and running again.
    let a = d.veil_json(&["downloads", "resume", &active]);
    assert_eq!(
        (&a["state"], &a["running"]),
        (&"active".into(), &true.into())
    );
    wait_listed(&d, &active, SHORT, |e| {
        e["state"] == "active" && e["running"] == true
    });

    // Cancel it while it runs, and the paused one: partial files and rows
    // go; a second cancel finds nothing.
    let c = d.veil_json(&["downloads", "cancel", &active]);
    assert_eq!(c["id"], active.as_str());
    assert_eq!(c["stopped"], true);
    assert_eq!(c["discarded_bytes"], 0);
    assert_eq!(c["finished"], false);
    assert!(!partial(&d, &active).exists());
    let c = d.veil_json(&["downloads", "cancel", &paused]);
    assert_eq!(c["stopped"], false);
    assert!(!partial(&d, &paused).exists());
    assert_eq!(d.veil_json(&["downloads"]), serde_json::json!([]));
    assert_eq!(
        error_kind(&d, Command::CancelDownload { id: paused }),
        ErrorKind::NotFound
    );
    assert!(!out.path().join("a.bin").exists());
}

/// A `veil get --jsonl` running in the background: its progress lines
/// come on a channel; killed on drop.
struct BackgroundGet {
    child: Child,
    lines: Receiver<Value>,
    stderr: Option<JoinHandle<String>>,
}

impl BackgroundGet {
    fn start(d: &Daemon, id: &str, dest: &Path) -> BackgroundGet {
        let mut child = std::process::Command::new(veil_tests::bin("veil"))
            .arg("--data-dir")
            .arg(&d.data_dir)
            .args(["get", "--jsonl", "--timeout", "20", id, "-o"])
            .arg(dest)
            .env_remove("VEIL_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run veil");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line).expect("one object per line");
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        });
        BackgroundGet {
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    /// Waits until at least `want` pieces are held; false if the get ended
    /// before (its stderr says why).
    fn until_held(&mut self, want: u64, deadline: Instant) -> bool {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if v["progress"]["held"].as_u64().unwrap_or(0) >= want => return true,
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => return false,
                Err(RecvTimeoutError::Timeout) => panic!("the get neither progressed nor ended"),
            }
        }
    }

    /// Waits for the get to end: whether it succeeded, and its stderr.
    fn end(mut self, bound: Duration) -> (bool, String) {
        let deadline = Instant::now() + bound;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for veil") {
                break status;
            }
            assert!(Instant::now() < deadline, "the get did not end");
            std::thread::sleep(Duration::from_millis(50));
        };
        let err = self.stderr.take().map(|h| h.join().unwrap_or_default());
        (status.success(), err.unwrap_or_default())
    }
}

impl Drop for BackgroundGet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `veil get` for `id` until it is fetching (some pieces held),
/// retrying while the records and providers are still spreading.
fn get_under_way(d: &Daemon, id: &str, dest: &Path, deadline: Instant) -> BackgroundGet {
    loop {
        assert!(Instant::now() < deadline, "the download never started");
        let mut get = BackgroundGet::start(d, id, dest);
        if get.until_held(2, deadline) {
            return get;
        }
        let (_, why) = get.end(SHORT);
        eprintln!("get not yet: {why}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn a_transfer_is_paused_another_cancelled_and_the_first_resumed_to_the_exact_bytes() {
    // The sharer writes at most 512 KiB/s to its links: a transfer of a
    // few MB takes long enough to act on mid-way.
    let conf = tempfile::tempdir().unwrap();
    let slow = conf.path().join("slow.toml");
    std::fs::write(&slow, "[links]\nupload_limit_kib_s = 512\n").unwrap();
    let slow_arg = slow.to_str().unwrap().to_string();
    let (daemons, _, _) = start_network_with(5, |i| {
        if i == 0 {
            vec!["--config".into(), slow_arg.clone()]
        } else {
            Vec::new()
        }
    });
    let deadline = Instant::now() + DEADLINE;
    while !(daemons[0].has_built_circuit() && daemons[3].has_built_circuit()) {
        assert!(Instant::now() < deadline, "no circuits\n{}", logs(&daemons));
        std::thread::sleep(Duration::from_millis(500));
    }
    let files = tempfile::tempdir().unwrap();
    let first = body(2_000_000, 21);
    let second = body(1_000_000, 22);
    std::fs::write(files.path().join("Delta Soundings.dat"), &first).unwrap();
    std::fs::write(files.path().join("Reef Census.dat"), &second).unwrap();
    let report = daemons[0].veil_json(&["share", files.path().to_str().unwrap()]);
    assert_eq!(report["added"].as_array().unwrap().len(), 2, "{report}");
    let first_id = blake3::hash(&first).to_hex().to_string();
    let second_id = blake3::hash(&second).to_hex().to_string();
    let dl = &daemons[3];
    let out = tempfile::tempdir().unwrap();
    let first_dest = out.path().join("delta.dat");
    let second_dest = out.path().join("reef.dat");

    // Running: listed as such, with its progress.
    let get = get_under_way(dl, &first_id, &first_dest, deadline);
    let e = listed(dl, &first_id).expect("listed while running");
    assert_eq!(
        (&e["state"], &e["running"]),
        (&"active".into(), &true.into())
    );
    assert_eq!(e["pieces"], 31);
    assert_eq!(e["size"], first.len() as u64);
    assert!(e["held"].as_u64().unwrap() >= 2, "{e}");

    // Paused: the waiting get is told, the partial file stays, and no
    // piece arrives while paused.
    let p = dl.veil_json(&["downloads", "pause", &first_id]);
    assert_eq!(
        (&p["state"], &p["running"]),
        (&"paused".into(), &false.into())
    );
    let (ok, why) = get.end(SHORT);
    assert!(!ok, "the get was paused, not finished");
    assert!(why.contains("paused"), "{why}");
    assert!(partial(dl, &first_id).exists());
    assert!(!first_dest.exists());
    let held = listed(dl, &first_id).unwrap()["held"].as_u64().unwrap();
    assert!(held < 31, "paused mid-way: {held}");
    let still = |e: &Value| {
        assert_eq!(e["held"], held, "no piece while paused: {e}");
        assert_eq!(
            (&e["state"], &e["running"]),
            (&"paused".into(), &false.into())
        );
    };
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        still(&listed(dl, &first_id).unwrap());
    }

    // Meanwhile another one is cancelled while it runs: its get is told,
    // the partial file and the row go, nothing reaches the destination.
    let get = get_under_way(dl, &second_id, &second_dest, deadline);
    let c = dl.veil_json(&["downloads", "cancel", &second_id]);
    assert_eq!(c["stopped"], true, "{c}");
    assert!(c["discarded_bytes"].as_u64().unwrap() > 0, "{c}");
    let (ok, why) = get.end(SHORT);
    assert!(!ok);
    assert!(why.contains("cancelled"), "{why}");
    assert!(!partial(dl, &second_id).exists());
    assert!(listed(dl, &second_id).is_none());
    assert!(!second_dest.exists());
    // The paused one took nothing all that while.
    still(&listed(dl, &first_id).unwrap());

    // Resumed in the background, to the exact bytes.
    let r = dl.veil_json(&["downloads", "resume", &first_id]);
    assert_eq!(
        (&r["state"], &r["running"]),
        (&"active".into(), &true.into())
    );
    wait_listed(dl, &first_id, DEADLINE, |e| e["state"] == "done");
    assert_eq!(
        std::fs::read(&first_dest).unwrap(),
        first,
        "the file's bytes"
    );
    assert!(!partial(dl, &first_id).exists());
    let done = dl.veil(&["downloads", "pause", &first_id]);
    assert_eq!(done.status.code(), Some(1));
    assert!(stderr(&done).contains("done"), "{}", stderr(&done));
    // Cancelling a finished download says so and keeps its file.
    let c = dl.veil_json(&["downloads", "cancel", &first_id]);
    assert_eq!(
        (&c["finished"], &c["discarded_bytes"]),
        (&true.into(), &0.into()),
        "{c}"
    );
    assert_eq!(std::fs::read(&first_dest).unwrap(), first, "the file stays");
}

/// A local user with many stalled downloads: at start only
/// `MAX_BACKGROUND_FETCHES` are fetched at once (the rest wait without a
/// thread), the control API keeps answering, a waiting one can be paused
/// at once, a `resume` beyond the limit is refused as busy, and a freed
/// slot goes to one that waits.
#[test]
fn background_fetches_run_a_bounded_number_at_once_and_control_still_answers() {
    use veil_daemon::server::MAX_BACKGROUND_FETCHES;
    let mut d = Daemon::start();
    d.stop();
    let out = tempfile::tempdir().unwrap();
    let n = MAX_BACKGROUND_FETCHES + 4;
    let ids: Vec<String> = {
        let dir = DataDir::resolve(Some(d.data_dir.clone())).unwrap();
        let store = Arc::new(Mutex::new(Store::open(&dir.file(DB_FILE)).unwrap()));
        (0..n)
            .map(|i| {
                let id = ContentId::from_bytes(*blake3::hash(&[i as u8]).as_bytes());
                let name = format!("f{i}.bin");
                PartialDownload::create(&store, &dir, id, 70_000, &name, &out.path().join(&name))
                    .unwrap();
                id.to_hex()
            })
            .collect()
    };
    d.restart();
    let running = |d: &Daemon| -> Vec<String> {
        let list = d.veil_json(&["downloads"]);
        list.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["running"] == true)
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    let deadline = Instant::now() + SHORT;
    while running(&d).len() < MAX_BACKGROUND_FETCHES {
        assert!(Instant::now() < deadline, "{:?}", running(&d));
        std::thread::sleep(Duration::from_millis(100));
    }
    // A while later still no more than the limit, and the API answers.
    std::thread::sleep(Duration::from_millis(1500));
    let now = running(&d);
    assert_eq!(now.len(), MAX_BACKGROUND_FETCHES, "{now:?}");
    assert!(d.veil(&["status"]).status.success());
    let waiting: Vec<&String> = ids.iter().filter(|i| !now.contains(i)).collect();
    assert_eq!(waiting.len(), 4);
    // A waiting one: resume is refused as busy; pause works at once.
    assert_eq!(
        error_kind(
            &d,
            Command::ResumeDownload {
                id: waiting[0].clone()
            }
        ),
        ErrorKind::Busy
    );
    let p = d.veil_json(&["downloads", "pause", waiting[0]]);
    assert_eq!(p["state"], "paused", "{p}");
    // Pausing a running one frees its slot for one that waits.
    d.veil_json(&["downloads", "pause", &now[0]]);
    let deadline = Instant::now() + SHORT;
    loop {
        let r = running(&d);
        if r.len() == MAX_BACKGROUND_FETCHES && !r.contains(&now[0]) {
            assert!(!r.contains(waiting[0]), "the paused one stays paused");
            break;
        }
        assert!(Instant::now() < deadline, "{r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
