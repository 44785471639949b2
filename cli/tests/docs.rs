//! `veil completions SHELL` and `veil man` from the real binary: every
//! subcommand `veil --help` lists is completed and documented, bash accepts
//! the script, the man page is roff, and neither needs a daemon.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn veil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        // A data dir with no daemon: neither command may look for one.
        .env("VEIL_DATA_DIR", "/nonexistent/veil-docs-test")
        .stdin(Stdio::null())
        .output()
        .expect("run veil")
}

fn ok_stdout(args: &[&str]) -> String {
    let out = veil(args);
    assert!(
        out.status.success(),
        "veil {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The subcommands `veil --help` lists (without `help` itself).
fn subcommands() -> Vec<String> {
    let help = ok_stdout(&["--help"]);
    let subs: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect();
    for want in ["hash", "status", "search", "get", "completions", "man"] {
        assert!(subs.iter().any(|s| s == want), "{want} not in {subs:?}");
    }
    subs
}

#[test]
fn bash_completion_names_every_subcommand_and_parses() {
    let script = ok_stdout(&["completions", "bash"]);
    // The words offered after `veil`, and a case for each subcommand.
    let offered = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("opts=\"-h -V "))
        .expect("the top-level word list");
    let words: Vec<&str> = offered.trim_end_matches('"').split(' ').collect();
    for sub in subcommands() {
        assert!(
            words.contains(&sub.as_str()),
            "{sub} not offered: {offered}"
        );
        assert!(
            script.contains(&format!("veil,{sub})")),
            "the bash script has no case for {sub}"
        );
    }
    // bash's own syntax check.
    let mut bash = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bash");
    bash.stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("feed bash");
    let checked = bash.wait_with_output().expect("bash -n");
    assert!(
        checked.status.success(),
        "bash -n rejects the script: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn every_shell_gets_a_script() {
    let subs = subcommands();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = ok_stdout(&["completions", shell]);
        assert!(script.contains("veil"), "{shell}: {script}");
        for sub in &subs {
            assert!(script.contains(sub.as_str()), "{shell}: no {sub}");
        }
    }
    let out = veil(&["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_page_is_roff_naming_every_subcommand() {
    let page = ok_stdout(&["man"]);
    assert!(page.starts_with(".TH veil 1"), "{page}");
    assert!(page.contains(".SH NAME"), "{page}");
    assert!(page.contains(".SH SYNOPSIS"), "{page}");
    for sub in subcommands() {
        // roff escapes the hyphen.
        assert!(page.contains(&format!("veil\\-{sub}(1)")), "no {sub}");
    }
    assert!(!page.contains("veil\\-help"), "lists the help subcommand");
}

#[test]
fn man_dir_writes_a_page_per_subcommand() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("man1");
    let dir_str = dir.to_str().expect("UTF-8 temp path");
    assert!(ok_stdout(&["man", "--dir", dir_str]).is_empty());
    let top = std::fs::read_to_string(dir.join("veil.1")).expect("veil.1");
    assert!(top.starts_with(".TH veil 1"), "{top}");
    for sub in subcommands() {
        let page = std::fs::read_to_string(dir.join(format!("veil-{sub}.1")))
            .unwrap_or_else(|e| panic!("veil-{sub}.1: {e}"));
        assert!(page.starts_with(&format!(".TH veil-{sub} 1")), "{page}");
    }
    assert!(!dir.join("veil-help.1").exists());
}

#[test]
fn json_is_refused_rather_than_broken() {
    for args in [
        &["completions", "bash", "--json"][..],
        &["man", "--jsonl"][..],
    ] {
        let out = veil(args);
        assert_eq!(out.status.code(), Some(2), "veil {args:?}");
        assert!(out.stdout.is_empty(), "veil {args:?} printed to stdout");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("do not apply"),
            "veil {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
