//! The daemon's library through the real CLI: share, find, library, unshare,
//! restarts, kills, bad paths and hostile query text.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use veil_tests::{Daemon, stderr, stdout};

fn write(dir: &std::path::Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&p, data).unwrap();
    p
}

#[test]
fn share_find_library_survive_restart() {
    let mut d = Daemon::start();
    let files = tempfile::tempdir().unwrap();
    let zebra: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    write(files.path(), "zebra_song.txt", &zebra);
    write(files.path(), "sub/Lion King.mp3", b"roar");
    write(files.path(), "empty.bin", b"");

    let report = d.veil_json(&["share", files.path().to_str().unwrap()]);
    assert_eq!(report["added"].as_array().unwrap().len(), 3, "{report}");
    assert!(report["failed"].as_array().unwrap().is_empty(), "{report}");

    let hits = d.veil_json(&["find", "zebra"]);
    let hits = hits.as_array().unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["name"], "zebra_song.txt");
    let want = blake3::hash(&zebra).to_hex().to_string();
    assert_eq!(hits[0]["id"], want.as_str());

    let lib = d.veil_json(&["library"]);
    let ids: Vec<&str> = lib
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&want.as_str()));
    assert!(ids.contains(&blake3::hash(b"").to_hex().as_str()));
    for id in &ids {
        assert_eq!(id.len(), 64);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    // Human output finds it too.
    let out = d.veil(&["find", "ZEBRA"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("zebra_song.txt"));

    // Sharing again skips unchanged files.
    let again = d.veil_json(&["share", files.path().to_str().unwrap()]);
    assert_eq!(again["unchanged"], 3, "{again}");
    assert!(again["added"].as_array().unwrap().is_empty());

    // Restart: everything is still there.
    d.stop();
    d.restart();
    let hits = d.veil_json(&["find", "lion"]);
    assert_eq!(hits.as_array().unwrap().len(), 1);
    assert_eq!(d.veil_json(&["library"]).as_array().unwrap().len(), 3);

    // A changed file is re-hashed and updated.
    write(files.path(), "zebra_song.txt", b"different stripes");
    let upd = d.veil_json(&["share", files.path().to_str().unwrap()]);
    assert_eq!(upd["updated"].as_array().unwrap().len(), 1, "{upd}");
    let hits = d.veil_json(&["find", "zebra"]);
    assert_eq!(
        hits[0]["id"],
        blake3::hash(b"different stripes").to_hex().as_str()
    );

    // Unshare a subtree.
    let sub = files.path().join("sub");
    let un = d.veil_json(&["unshare", sub.to_str().unwrap()]);
    assert_eq!(un["removed"], 1);
    assert!(
        d.veil_json(&["find", "lion"])
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn hostile_find_text_is_harmless() {
    let d = Daemon::start();
    let files = tempfile::tempdir().unwrap();
    write(files.path(), "zebra_song.txt", b"z");
    d.veil_json(&["share", files.path().to_str().unwrap()]);
    for q in [
        "\"",
        "*",
        "NEAR(",
        "OR",
        "AND",
        "NOT",
        "zebra OR",
        "\"zebra",
        "zebra*",
        "(",
        ")",
        "name:zebra",
        "'; DROP TABLE files; --",
        "NEAR(zebra song, 1)",
        "-zebra",
        "^",
    ] {
        let out = d.veil(&["find", "--json", "--", q]);
        assert!(out.status.success(), "find {q:?}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v.is_array(), "find {q:?}: {v}");
    }
    // The library survived all of it.
    assert_eq!(d.veil_json(&["find", "zebra"]).as_array().unwrap().len(), 1);
    assert_eq!(
        d.veil_json(&["find", "zebra OR"]).as_array().unwrap().len(),
        0,
        "OR is a word here, not an operator"
    );
}

#[test]
fn bad_paths_give_clear_errors() {
    let d = Daemon::start();
    let out = d.veil(&["share", "/definitely/not/here"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("/definitely/not/here"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let out = d.veil(&["unshare", "/definitely/not/here"]);
    assert_eq!(out.status.code(), Some(1));

    // Usage errors exit 2.
    let out = d.veil(&["share"]);
    assert_eq!(out.status.code(), Some(2));
    let out = d.veil(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));

    // The daemon keeps serving.
    d.veil_json(&["status"]);
}

#[test]
fn unreadable_file_is_reported_and_others_are_shared() {
    let d = Daemon::start();
    let files = tempfile::tempdir().unwrap();
    write(files.path(), "good.txt", b"good");
    let bad = write(files.path(), "secret.txt", b"secret");
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o000)).unwrap();
    // root can read anything; only check the failure path when it applies.
    let readable = fs::File::open(&bad).is_ok();
    let out = d.veil(&["share", "--json", files.path().to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    if readable {
        assert!(out.status.success());
        assert_eq!(v["added"].as_array().unwrap().len(), 2);
    } else {
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(v["added"].as_array().unwrap().len(), 1);
        assert_eq!(v["failed"].as_array().unwrap().len(), 1);
        assert!(stderr(&out).contains("secret.txt"));
    }
}

#[test]
fn data_dir_is_private() {
    let d = Daemon::start();
    let mode = fs::metadata(&d.data_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    for entry in fs::read_dir(&d.data_dir).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o077,
            0,
            "{} is readable by others ({mode:o})",
            entry.path().display()
        );
    }
    // Keys never reach the log.
    let key = fs::read(d.data_dir.join("node.key")).unwrap();
    let log = d.log_text();
    assert!(!log.contains(&hex::encode(&key)));
}
