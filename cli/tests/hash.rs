//! `veil hash` agrees with the BLAKE3 reference, in b3sum's format, and keeps
//! going past bad paths.

use std::process::Command;

fn veil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_veil"))
}

#[test]
fn hash_matches_blake3_at_edge_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let sizes = [
        0usize,
        1,
        1023,
        1024,
        1025,
        16383,
        16384,
        16385,
        (3 << 20) + 7,
    ];
    let mut paths = Vec::new();
    let mut want = String::new();
    for (i, &n) in sizes.iter().enumerate() {
        let data: Vec<u8> = (0..n).map(|j| (j * 13 + i) as u8).collect();
        let p = tmp.path().join(format!("f{n}"));
        std::fs::write(&p, &data).unwrap();
        want.push_str(&format!(
            "{}  {}\n",
            blake3::hash(&data).to_hex(),
            p.display()
        ));
        paths.push(p);
    }
    let out = veil().arg("hash").args(&paths).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
    assert!(out.stderr.is_empty());
}

#[test]
fn missing_path_is_reported_and_the_rest_hashed() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    std::fs::write(&good, b"abc").unwrap();
    let out = veil()
        .arg("hash")
        .arg(tmp.path().join("missing"))
        .arg(&good)
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout,
        format!(
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85  {}\n",
            good.display()
        )
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("missing"), "{stderr}");
    assert!(stderr.contains("directory"), "{stderr}");
}

#[test]
fn relative_paths_are_printed_as_given() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("x.txt"), b"").unwrap();
    let out = veil()
        .current_dir(tmp.path())
        .args(["hash", "./x.txt"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262  ./x.txt\n"
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = veil().arg("hash").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = veil().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
