//! `veil completions SHELL` and `veil man`: shell completion scripts and
//! man pages generated from the clap definitions, so they never drift from
//! the real flags. Neither needs a daemon.
//!
//! Everything is rendered into memory first and then written to stdout
//! once, so a closed pipe (`veil man | head`) is an ordinary error (or a
//! quiet success), never a panic inside a generator.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap_complete::Shell;

/// The name completions are registered for (the installed binary's name).
const BIN: &str = "veil";

/// Prints the completion script for `shell` to stdout (`json`: the user
/// asked for JSON, which a script is not: a usage error, exit 2).
pub fn completions(cmd: clap::Command, shell: Shell, json: bool) -> anyhow::Result<ExitCode> {
    refuse_json(&cmd, "completions", json);
    let script = completion_script(cmd, shell);
    write_stdout(&script)
}

/// The completion script for `shell`, as bytes.
pub fn completion_script(mut cmd: clap::Command, shell: Shell) -> Vec<u8> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN, &mut buf);
    buf
}

/// Prints veil(1) to stdout, or with `dir` writes veil(1) and one page per
/// subcommand (veil-share(1), …, the pages veil(1) refers to) into `dir`
/// (`json`: as for [`completions`]).
pub fn man(cmd: clap::Command, dir: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    refuse_json(&cmd, "man", json);
    match dir {
        None => write_stdout(&man_page(cmd)?),
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let mut cmd = cmd.disable_help_subcommand(true);
            // Building names the subcommands `veil-share` and so on.
            cmd.build();
            write_pages(cmd, dir)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes the page of `cmd` and of each of its visible subcommands, as
/// `NAME.1` files in `dir`.
fn write_pages(cmd: clap::Command, dir: &Path) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), dir)?;
    }
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    let path = dir.join(format!("{name}.1"));
    let page = man_page(cmd.clone())?;
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))
}

/// The roff source of `cmd`'s man page, starting with its `.TH` line.
pub fn man_page(cmd: clap::Command) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    // Every page's footer names the program and version, not "get 0.1.0".
    let source = format!("veil {}", cmd.get_version().unwrap_or_default());
    clap_mangen::Man::new(cmd.disable_help_subcommand(true))
        .source(source)
        .render(&mut buf)
        .context("cannot render the man page")?;
    let text = String::from_utf8(buf).context("the man page is not UTF-8")?;
    Ok(title_first(&text).into_bytes())
}

/// Moves the `.TH` line to the top: the renderer puts its definition of the
/// apostrophe string (`.ie`/`.el`) first, which roff does not mind but
/// tools that identify a man page by its first line do.
fn title_first(page: &str) -> String {
    let Some(title) = page.lines().find(|l| l.starts_with(".TH ")) else {
        return page.to_string();
    };
    let mut out = format!("{title}\n");
    let mut moved = false;
    for line in page.lines() {
        if !moved && line == title {
            moved = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `--json` and `--jsonl` promise JSON on stdout; a script or a man page is
/// not, so asking for both is a usage error (exit 2), not a silent surprise.
fn refuse_json(cmd: &clap::Command, sub: &str, json: bool) {
    if json {
        let mut cmd = cmd.clone();
        cmd.error(
            clap::error::ErrorKind::ArgumentConflict,
            format!("--json and --jsonl do not apply to `veil {sub}`"),
        )
        .exit();
    }
}

/// Writes `bytes` to stdout; a reader that went away early is not an error.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn visible_subcommands() -> Vec<String> {
        crate::Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| s.get_name().to_string())
            .collect()
    }

    #[test]
    fn every_shell_gets_a_script_naming_every_subcommand() {
        let subs = visible_subcommands();
        assert!(subs.iter().any(|s| s == "completions"), "{subs:?}");
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let script = String::from_utf8(completion_script(crate::Cli::command(), shell))
                .expect("a completion script is UTF-8");
            for sub in &subs {
                assert!(script.contains(sub.as_str()), "{shell}: no {sub}");
            }
        }
    }

    #[test]
    fn man_page_is_roff_with_every_subcommand() {
        let page = String::from_utf8(man_page(crate::Cli::command()).unwrap()).unwrap();
        assert!(page.starts_with(".TH"), "{page}");
        for sub in visible_subcommands() {
            assert!(page.contains(&format!("veil\\-{sub}(1)")), "no {sub}");
        }
        assert!(
            !page.contains("veil\\-help"),
            "the help subcommand is listed"
        );
    }
}
