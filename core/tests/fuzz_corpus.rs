//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the
//! same harness code the cargo-fuzz targets run (`fuzz/src/lib.rs`, compiled
//! in here), so CI checks every decoder against every stored input without
//! a fuzzer or a nightly toolchain. See docs/fuzzing.md.

// This test reads the committed corpus files; core itself never touches the
// filesystem (core/clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "../../fuzz/src/lib.rs"]
mod harness;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fuzz")
        .join("corpus")
        .join(target)
}

#[test]
fn corpus_replays_without_panics() {
    for &(target, run) in harness::TARGETS {
        let dir = corpus_dir(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no corpus in {}", dir.display());
        let mut accepted = 0;
        for path in &files {
            let data =
                std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            match catch_unwind(AssertUnwindSafe(|| run(&data))) {
                Ok(true) => accepted += 1,
                Ok(false) => {}
                Err(_) => panic!("{target}: {} panicked", path.display()),
            }
        }
        assert!(
            accepted > 0,
            "{target}: none of {} corpus inputs was accepted",
            files.len()
        );
    }
}

#[test]
fn seeds_are_accepted() {
    let seeds = harness::seeds();
    for &(target, _) in harness::TARGETS {
        assert!(
            seeds.iter().any(|(t, ..)| *t == target),
            "no seed for {target}"
        );
    }
    for (target, name, bytes) in seeds {
        let (_, run) = harness::TARGETS
            .iter()
            .find(|(t, _)| *t == target)
            .expect("known target");
        assert!(run(&bytes), "seed {target}/{name} is refused");
    }
}

#[test]
fn malformed_inputs_are_refused() {
    for (target, name, bytes) in harness::malformed() {
        let (_, run) = harness::TARGETS
            .iter()
            .find(|(t, _)| *t == target)
            .expect("known target");
        assert!(!run(&bytes), "malformed input {target}/{name} is accepted");
    }
}
