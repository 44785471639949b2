//! The config file end to end, on real `veild` processes: it names the
//! data dir (which `VEIL_DATA_DIR` and then `--data-dir` override), makes
//! a test network with its own proof-of-work difficulty (which
//! `--pow-bits` overrides), and a lowered difficulty off a test network is
//! refused before anything is created.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use veil_tests::{START_TIMEOUT, bin, stderr};

/// `veild` with exactly these arguments (no `--testnet`, no `--data-dir`
/// unless given) and `VEIL_DATA_DIR` set to `env_dir` if given.
fn veild(args: &[&str], env_dir: Option<&Path>) -> Command {
    let mut c = Command::new(bin("veild"));
    c.args(args)
        .env_remove("VEIL_DATA_DIR")
        .env_remove("VEIL_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(dir) = env_dir {
        c.env("VEIL_DATA_DIR", dir);
    }
    c
}

fn veil_json(dir: &Path, args: &[&str]) -> Option<serde_json::Value> {
    let out = Command::new(bin("veil"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .arg("--json")
        .env_remove("VEIL_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run veil");
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// A running `veild`, killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `veild` (its stderr to a file beside `dir`) and wait until it
/// answers `veil status` through `dir`; returns its status and id.
fn start(cmd: &mut Command, dir: &Path) -> (Running, serde_json::Value, serde_json::Value) {
    let log = dir.with_extension("log");
    let file = std::fs::File::create(&log).expect("log file");
    let mut child = Running(cmd.stderr(file).spawn().expect("spawn veild"));
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = veil_json(dir, &["status"]) {
            let id = veil_json(dir, &["id"]).expect("veil id");
            return (child, status, id);
        }
        if let Ok(Some(code)) = child.0.try_wait() {
            let err = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("veild exited ({code}) instead of answering in {dir:?}: {err}");
        }
        assert!(Instant::now() < deadline, "veild did not answer in {dir:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_config_file_names_the_data_dir_and_the_test_network_and_flags_override_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (from_file, from_env, from_flag) = (
        tmp.path().join("from-file"),
        tmp.path().join("from-env"),
        tmp.path().join("from-flag"),
    );
    let config = tmp.path().join("veild.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\ntestnet = true\npow_bits = 5\nlisten = \"127.0.0.1:0\"\n",
            from_file.to_str().unwrap()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    // The file alone: its data dir, a test network of 5 bits.
    let (d, status, id) = start(&mut veild(&["--config", config], None), &from_file);
    assert_eq!(status["testnet"], true, "{status}");
    assert_eq!(status["data_dir"], from_file.to_str().unwrap());
    assert_eq!(id["pow_difficulty_bits"], 5, "{id}");
    drop(d);

    // VEIL_DATA_DIR replaces the file's data dir.
    let (d, status, _) = start(
        &mut veild(&["--config", config], Some(&from_env)),
        &from_env,
    );
    assert_eq!(status["data_dir"], from_env.to_str().unwrap());
    drop(d);

    // --data-dir replaces both, and --pow-bits the file's difficulty.
    let (d, status, id) = start(
        &mut veild(
            &[
                "--config",
                config,
                "--data-dir",
                from_flag.to_str().unwrap(),
                "--pow-bits",
                "6",
            ],
            Some(&from_env),
        ),
        &from_flag,
    );
    assert_eq!(status["data_dir"], from_flag.to_str().unwrap());
    assert_eq!(id["pow_difficulty_bits"], 6, "{id}");
    drop(d);
}

#[test]
fn a_lowered_difficulty_off_a_test_network_is_refused_before_anything_is_made() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("veild.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\npow_bits = 8\nlisten = \"127.0.0.1:0\"\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = veild(&["--config", config.to_str().unwrap()], None)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("pow_bits: the real network's proof of work is 23 bits")
            && err.contains("testnet = true"),
        "{err}"
    );
    // The file was read and refused before its data dir was made.
    assert!(!data.exists());
    // The flag is named when it is the flag.
    let out = veild(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--pow-bits",
            "12",
        ],
        None,
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("veild: --pow-bits: "),
        "{}",
        stderr(&out)
    );
    // A relative data dir in the file is refused, saying why.
    std::fs::write(&config, "data_dir = \"veil-data\"\n").unwrap();
    let out = veild(&["--config", config.to_str().unwrap()], None)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("data_dir: \"veil-data\" is not an absolute path"),
        "{}",
        stderr(&out)
    );
    assert!(!data.exists());
}
