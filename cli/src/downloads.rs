//! `veil downloads` (list, pause, resume, cancel) and the progress bar of
//! `veil get`.

use std::process::ExitCode;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use veil_daemon::api::{CancelReport, Command, DownloadEntry, DownloadState, Progress};
use veil_daemon::datadir::DataDir;

use super::{Output, human_size, print_result, short_id, simple};

/// What `veil downloads` does; without an action, it lists them.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Stop fetching a download and keep what it holds; a `veil get`
    /// waiting on it ends. It stays paused across daemon restarts.
    Pause {
        /// The content id (64 hex digits).
        id: String,
    },
    /// Fetch a paused download again, in the background (`veil get ID`
    /// does too, and waits for it).
    Resume {
        /// The content id (64 hex digits).
        id: String,
    },
    /// Stop a download and forget it: its partial file is deleted (a
    /// finished file stays where it is).
    Cancel {
        /// The content id (64 hex digits).
        id: String,
    },
}

/// Run `veil downloads [ACTION]`.
pub fn run(dir: &DataDir, out: Output, args: Args) -> anyhow::Result<ExitCode> {
    match args.action {
        None => {
            let list: Vec<DownloadEntry> = simple(dir, Command::Downloads)?;
            print_result(out, &list, |list| print_table(list));
        }
        Some(Action::Pause { id }) => {
            let e: DownloadEntry = simple(dir, Command::PauseDownload { id })?;
            print_result(out, &e, |e| {
                println!(
                    "paused {}: {} of {} pieces kept ({})",
                    e.id, e.held, e.pieces, e.name
                );
            });
        }
        Some(Action::Resume { id }) => {
            let e: DownloadEntry = simple(dir, Command::ResumeDownload { id })?;
            print_result(out, &e, |e| {
                println!(
                    "resumed {} in the background: {} of {} pieces held ({}); `veil downloads` shows how it goes",
                    e.id, e.held, e.pieces, e.name
                );
            });
        }
        Some(Action::Cancel { id }) => {
            let r: CancelReport = simple(dir, Command::CancelDownload { id })?;
            print_result(out, &r, |r| {
                if r.finished {
                    println!(
                        "{} ({}) had finished: its file stays where it was put; the entry is forgotten",
                        r.id, r.name
                    );
                    return;
                }
                println!(
                    "cancelled {} ({}){}; {} deleted",
                    r.id,
                    r.name,
                    if r.stopped { ", which was running" } else { "" },
                    human_size(r.discarded_bytes)
                );
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(list: &[DownloadEntry]) {
    if list.is_empty() {
        eprintln!("no downloads; start one with: veil get ID");
        return;
    }
    println!(
        "{:<16}  {:<8}  {:>15}  {:>21}  DESTINATION",
        "ID", "STATE", "PIECES", "BYTES"
    );
    for e in list {
        let state = match (e.state, e.running) {
            (DownloadState::Active, true) => "running",
            (s, _) => s.as_str(),
        };
        let pieces = format!("{}/{} {:>3}%", e.held, e.pieces, percent(e.held, e.pieces));
        let bytes = format!("{} / {}", human_size(e.held_bytes), human_size(e.size));
        println!(
            "{:<16}  {state:<8}  {pieces:>15}  {bytes:>21}  {}",
            short_id(&e.id),
            e.dest
        );
    }
}

fn percent(part: u64, whole: u64) -> u64 {
    part.saturating_mul(100).checked_div(whole).unwrap_or(100)
}

/// The progress bar of `veil get` on stderr (none unless human output;
/// hidden when stderr is not a terminal): bytes held of all, the rate and
/// the time left, the pieces verified and the sources sending.
#[derive(Debug)]
pub struct GetBar {
    bar: Option<ProgressBar>,
    /// Pieces held and in all, sources, as last reported.
    counts: (u64, u64, u64),
    /// Why a source was last dropped.
    dropped: Option<String>,
    /// Whether the first report (the pieces held from before) came.
    started: bool,
}

impl GetBar {
    pub fn new(enabled: bool) -> GetBar {
        let bar = enabled.then(|| {
            // A spinner until the size is known.
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_message("finding the file and its providers");
            b.enable_steady_tick(std::time::Duration::from_millis(250));
            b
        });
        GetBar {
            bar,
            counts: (0, 0, 0),
            dropped: None,
            started: false,
        }
    }

    pub fn update(&mut self, p: &Progress) {
        let Some(b) = &self.bar else { return };
        match p {
            Progress::Download {
                held,
                pieces,
                bytes,
                held_bytes,
                sources,
            } => {
                if !self.started {
                    b.set_style(
                        ProgressStyle::with_template(
                            "{spinner} [{bar:20}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                }
                b.set_length(*bytes);
                b.set_position(*held_bytes);
                if !self.started {
                    // What was held from before is not this run's rate.
                    b.reset_eta();
                    self.started = true;
                }
                self.counts = (*held, *pieces, *sources);
            }
            Progress::Dropped { reason } => self.dropped = Some(reason.clone()),
            _ => return,
        }
        let (held, pieces, sources) = self.counts;
        let mut msg = format!(
            "{held}/{pieces} pieces verified, {sources} source{}",
            if sources == 1 { "" } else { "s" }
        );
        if let Some(why) = &self.dropped {
            msg.push_str(&format!(" (one dropped: {why})"));
        }
        b.set_message(msg);
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_rounds_down_and_handles_empty_content() {
        assert_eq!(percent(0, 23), 0);
        assert_eq!(percent(22, 23), 95);
        assert_eq!(percent(23, 23), 100);
        assert_eq!(percent(0, 0), 100);
    }

    #[test]
    fn a_hidden_bar_ignores_progress() {
        let mut bar = GetBar::new(false);
        bar.update(&Progress::Download {
            held: 1,
            pieces: 2,
            bytes: 3,
            held_bytes: 1,
            sources: 1,
        });
        assert!(!bar.started);
        bar.finish();
    }
}
