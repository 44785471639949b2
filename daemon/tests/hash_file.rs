//! A file that changes while it is being hashed is detected: no record is
//! ever signed for bytes that were not the file's contents throughout.

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};

use veil_daemon::library::{HashFileError, hash_file};

fn big_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("moving.bin");
    let data: Vec<u8> = (0..24u32 << 20).map(|i| (i % 249) as u8).collect();
    fs::write(&path, data).unwrap();
    path
}

#[test]
fn change_during_hash_is_retried_and_final_id_is_right() {
    let tmp = tempfile::tempdir().unwrap();
    let path = big_file(tmp.path());
    let mut changed = false;
    let mut on_bytes = |_done: u64| {
        if !changed {
            changed = true;
            let mut f = OpenOptions::new().write(true).open(&path).unwrap();
            f.seek(SeekFrom::Start(1)).unwrap();
            f.write_all(b"CHANGED").unwrap();
            f.sync_all().unwrap();
        }
    };
    let hashed = hash_file(&path, &mut on_bytes).unwrap();
    assert!(changed, "the hook ran during hashing");
    let now = fs::read(&path).unwrap();
    assert_eq!(
        hashed.outboard.root().as_bytes(),
        blake3::hash(&now).as_bytes(),
        "the id is that of the final contents, never a mix"
    );
}

#[test]
fn file_that_keeps_changing_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = big_file(tmp.path());
    let mut n = 0u8;
    let mut on_bytes = |_done: u64| {
        n = n.wrapping_add(1);
        let mut f = OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(&[n]).unwrap();
    };
    match hash_file(&path, &mut on_bytes) {
        Err(HashFileError::Changed) => {}
        other => panic!("expected Changed, got {other:?}"),
    }
}

#[test]
fn truncation_during_hash_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let path = big_file(tmp.path());
    let mut truncated = false;
    let mut on_bytes = |_done: u64| {
        if !truncated {
            truncated = true;
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(1000).unwrap();
        }
    };
    // The first pass sees the file shrink under it and is discarded; the
    // retry hashes what the file now is.
    let hashed = hash_file(&path, &mut on_bytes).unwrap();
    assert!(truncated);
    assert_eq!(hashed.size, 1000);
    let now = fs::read(&path).unwrap();
    assert_eq!(
        hashed.outboard.root().as_bytes(),
        blake3::hash(&now).as_bytes()
    );
}
