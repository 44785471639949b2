//! `veild --man` prints its man page from the flag definitions, and starts
//! nothing (no data dir is touched).

use std::process::{Command, Stdio};

#[test]
fn man_page_documents_every_flag_and_starts_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_veild"))
        .arg("--man")
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::null())
        .output()
        .expect("run veild --man");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(page.contains(".TH veild 1"), "{page}");
    for flag in [
        "data\\-dir",
        "testnet",
        "listen",
        "advertise",
        "bootstrap",
        "hops",
        "client\\-only",
        "config",
        "log",
    ] {
        assert!(
            page.contains(&format!("\\fB\\-\\-{flag}\\fR")),
            "no --{flag}"
        );
    }
    assert!(!data.exists(), "--man created the data dir");
}
