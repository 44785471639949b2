//! `veil`: the command-line client. Talks to `veild` over the control API;
//! holds no protocol logic of its own. `veil hash` works without a daemon.
//!
//! Exit codes: 0 ok, 1 error (including "daemon not reachable"), 2 usage.
//! With `--json`, stdout is exactly one JSON document; progress and logs go
//! to stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;
use veil_daemon::api::{
    CircuitEntry, Command, Direction, FindHit, GetReport, IdInfo, LibraryEntry, PeerEntry,
    Progress, RateReport, SearchReport, ShareReport, StatusInfo, UnshareReport, Verdict,
};
use veil_daemon::client;
use veil_daemon::datadir::{DataDir, ENV_DATA_DIR};

mod demo;
mod docs;
mod downloads;

/// Anonymous, onion-routed file sharing: the command-line client of veild.
///
/// Talks to the veild daemon whose data dir it is given. With --json, stdout
/// is exactly one JSON document; progress and logs go to stderr. Exit
/// codes: 0 ok, 1 error (including "veild is not reachable"), 2 usage.
#[derive(Debug, Parser)]
#[command(name = "veil", version, propagate_version = true)]
struct Cli {
    /// Data dir of the daemon to talk to. Default: $XDG_DATA_HOME/veil.
    #[arg(long, env = ENV_DATA_DIR, global = true)]
    data_dir: Option<PathBuf>,
    /// Print exactly one JSON document on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Stream one JSON object per line on stdout (progress, then the result).
    #[arg(long, global = true, conflicts_with = "json")]
    jsonl: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Print the BLAKE3 content id of files, like b3sum (no daemon needed).
    Hash {
        /// Files to hash.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Share a file or a directory tree: hash, sign records, index.
    Share { path: PathBuf },
    /// Stop sharing a file or every file under a directory.
    Unshare { path: PathBuf },
    /// List the shared library.
    Library,
    /// Search the local library index.
    Find {
        /// Words to look for.
        #[arg(required = true)]
        words: Vec<String>,
        /// Most results to show.
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Search the network anonymously (through this node's circuits):
    /// results stream as they arrive, ranked by how many distinct
    /// publishers signed each and how long this node has known them.
    Search {
        /// Words to look for (every word must match), or a content id.
        #[arg(required = true)]
        words: Vec<String>,
        /// Stop after this many seconds (default 15, at most 120).
        #[arg(long)]
        timeout: Option<u32>,
        /// Most results to show.
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Download a file by its content id, anonymously: its providers are
    /// found by an exact-id search and met at rendezvous points; every
    /// piece is verified against the id before it is written; the file
    /// appears at its destination only once complete and re-hashed. Run it
    /// again to resume an interrupted download.
    Get {
        /// The content id (64 hex digits), as `veil search` shows it.
        id: String,
        /// Where to put the file: a file path, or an existing directory
        /// (the published name is used). Default: the daemon's downloads
        /// directory.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// Give up if nothing is found, or no piece comes, for this many
        /// seconds (default 120; the partial download is kept).
        #[arg(long)]
        timeout: Option<u32>,
    },
    /// List downloads (`veil downloads`), or pause, resume or cancel one.
    Downloads(downloads::Args),
    /// Rate a file a search found: `good`, or `fake` (a decoy). This node
    /// then ranks that file's publishers accordingly: the publishers of a
    /// fake weigh nothing in its later searches.
    Rate {
        /// The content id (64 hex digits).
        id: String,
        /// good or fake.
        #[arg(value_parser = ["good", "fake"])]
        verdict: String,
    },
    /// Run a local anonymous network of real daemons on loopback and send
    /// a file across it: a sharer shares it, a downloader finds it by name
    /// and downloads it through circuits and a rendezvous, verified; then
    /// everything is stopped and removed (also on Ctrl-C). Needs `veild`
    /// next to `veil`. No running daemon is used or touched.
    Demo(demo::DemoArgs),
    /// Show this node's public identities.
    Id,
    /// Show the daemon's status.
    Status,
    /// List the authenticated peers: node id, address, link age, direction.
    Peers,
    /// List this node's onion circuits: id, state, age, relays (guard first).
    Circuits,
    /// Print a shell completion script for SHELL (no daemon needed).
    ///
    /// E.g. `veil completions bash > ~/.local/share/bash-completion/completions/veil`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page veil(1) as roff (no daemon needed).
    ///
    /// E.g. `veil man > ~/.local/share/man/man1/veil.1`, or `veil man --dir
    /// ~/.local/share/man/man1` for it and a page per subcommand.
    Man {
        /// Write veil.1 and a page per subcommand (veil-share.1, ...) into
        /// this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Human,
    Json,
    Jsonl,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = if cli.json {
        Output::Json
    } else if cli.jsonl {
        Output::Jsonl
    } else {
        Output::Human
    };
    match run(cli, out) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("veil: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, out: Output) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Cmd::Hash { files } => return Ok(hash_files(files, out)),
        Cmd::Completions { shell } => {
            return docs::completions(Cli::command(), *shell, out != Output::Human);
        }
        Cmd::Man { dir } => return docs::man(Cli::command(), dir.as_deref(), out != Output::Human),
        _ => {}
    }
    if let Cmd::Demo(args) = cli.command {
        let report = demo::run(args)?;
        print_result(out, &report, print_demo);
        return Ok(ExitCode::SUCCESS);
    }
    let dir = DataDir::resolve(cli.data_dir.clone())?;
    match cli.command {
        Cmd::Hash { .. } | Cmd::Demo(_) | Cmd::Completions { .. } | Cmd::Man { .. } => {
            unreachable!("handled above")
        }
        Cmd::Share { path } => {
            let abs = absolute(&path)?;
            let bar = ShareBar::new(out == Output::Human);
            let mut on_progress = |p: Progress| {
                if out == Output::Jsonl {
                    emit_line(&serde_json::json!({ "progress": p }));
                }
                bar.update(&p);
            };
            let result = client::call(&dir, Command::Share { path: abs }, &mut on_progress);
            bar.finish();
            let report: ShareReport = decode(result?)?;
            for f in &report.failed {
                eprintln!("veil: {}: {}", f.path, f.error);
            }
            print_result(out, &report, |r| {
                println!(
                    "shared {} new, {} updated, {} unchanged, {} failed",
                    r.added.len(),
                    r.updated.len(),
                    r.unchanged,
                    r.failed.len()
                );
                for e in r.added.iter().chain(&r.updated) {
                    println!("{}  {}", e.id, e.path);
                }
            });
            Ok(if report.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Unshare { path } => {
            let abs = absolute(&path)?;
            let r: UnshareReport = simple(&dir, Command::Unshare { path: abs })?;
            print_result(out, &r, |r| println!("unshared {} file(s)", r.removed));
            Ok(if r.removed == 0 {
                eprintln!("veil: {} was not shared", path.display());
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Library => {
            let lib: Vec<LibraryEntry> = simple(&dir, Command::Library)?;
            print_result(out, &lib, |lib| {
                if lib.is_empty() {
                    eprintln!("the library is empty; add files with: veil share PATH");
                }
                for e in lib {
                    println!("{}  {:>10}  {}", e.id, human_size(e.size), e.path);
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Find { words, limit } => {
            let words = words.join(" ");
            let hits: Vec<FindHit> = simple(&dir, Command::Find { words, limit })?;
            print_result(out, &hits, |hits| {
                if hits.is_empty() {
                    eprintln!("no matches");
                }
                for h in hits {
                    println!("{}  {:>10}  {}", h.id, human_size(h.size), h.path);
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Search {
            words,
            timeout,
            limit,
        } => {
            let words = words.join(" ");
            let mut on_progress = |p: Progress| match (&p, out) {
                (_, Output::Jsonl) => emit_line(&serde_json::json!({ "progress": p })),
                (Progress::Result { hit }, Output::Human) => {
                    println!(
                        "{:>3}. {}  {:>10}  {:>3} publisher(s)  {}",
                        hit.rank,
                        hit.id,
                        human_size(hit.size),
                        hit.publishers,
                        hit.name
                    );
                }
                _ => {}
            };
            let command = Command::Search {
                words,
                timeout_s: timeout,
                limit,
            };
            let report: SearchReport = decode(client::call(&dir, command, &mut on_progress)?)?;
            print_result(out, &report, |r| {
                match (r.reason.as_deref(), &r.readiness) {
                    // The node says what it waits for, as `veil status` leads with.
                    (Some("no_peers" | "no_circuit"), Some(line)) => {
                        eprintln!("nothing found: this node is {line}")
                    }
                    (Some("no_peers"), _) => eprintln!(
                        "nothing found: this node has no peers yet (check its bootstrap seeds)"
                    ),
                    (Some("no_circuit"), _) => {
                        eprintln!(
                            "nothing found: no circuit is built yet (try again in a few seconds)"
                        )
                    }
                    (Some(_), _) => {
                        eprintln!(
                            "nothing found: nothing matched within the search's budget and time"
                        )
                    }
                    (None, _) => eprintln!(
                        "{} result(s), {} record(s), in {:.1} s",
                        r.results.len(),
                        r.records,
                        r.elapsed_ms as f64 / 1000.0
                    ),
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Get {
            id,
            output,
            timeout,
        } => {
            // The file need not exist yet: made absolute, not canonical.
            let out_path = match output {
                Some(p) => Some(
                    std::path::absolute(&p)
                        .with_context(|| format!("{}: bad path", p.display()))?
                        .into_os_string()
                        .into_string()
                        .map_err(|_| anyhow::anyhow!("the output path is not valid UTF-8"))?,
                ),
                None => None,
            };
            let mut bar = downloads::GetBar::new(out == Output::Human);
            let mut on_progress = |p: Progress| {
                if out == Output::Jsonl {
                    emit_line(&serde_json::json!({ "progress": p }));
                }
                bar.update(&p);
            };
            let command = Command::Get {
                id,
                out: out_path,
                timeout_s: timeout,
            };
            let result = client::call(&dir, command, &mut on_progress);
            bar.finish();
            let report: GetReport = decode(result?)?;
            print_result(out, &report, |r| {
                println!(
                    "{}  {}  {} in {:.1} s ({:.2} MB/s), {} of {} pieces fetched",
                    r.id,
                    r.path,
                    human_size(r.bytes),
                    r.seconds,
                    r.bytes as f64 / 1e6 / r.seconds.max(1e-3),
                    r.pieces_fetched,
                    r.pieces
                );
                if r.sources_dropped_bad > 0 {
                    eprintln!(
                        "{} source(s) served corrupt data and were dropped (nothing corrupt was kept)",
                        r.sources_dropped_bad
                    );
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Downloads(args) => downloads::run(&dir, out, args),
        Cmd::Rate { id, verdict } => {
            let verdict = if verdict == "good" {
                Verdict::Good
            } else {
                Verdict::Fake
            };
            let r: RateReport = simple(&dir, Command::Rate { id, verdict })?;
            print_result(out, &r, |r| {
                println!(
                    "rated {} {}: {} publisher(s) adjusted; {} rater(s) agreed, {} disagreed (they weigh nothing now); {}",
                    r.id,
                    if r.verdict == Verdict::Good {
                        "good"
                    } else {
                        "fake"
                    },
                    r.publishers.len(),
                    r.raters_agreed,
                    r.raters_disagreed,
                    if r.published {
                        "the rating goes out to others"
                    } else {
                        "the rating stays local (no record of it to name, or the node is busy)"
                    }
                );
            });
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Id => {
            let id: IdInfo = simple(&dir, Command::Id)?;
            print_result(out, &id, |id| {
                println!("node id:       {}", id.node_id);
                println!("publisher id:  {}", id.publisher_id);
                println!("pow bits:      {}", id.pow_difficulty_bits);
            });
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status => {
            let s: StatusInfo = simple(&dir, Command::Status)?;
            print_result(out, &s, |s| {
                if !s.readiness.is_empty() {
                    println!("{}", s.readiness);
                }
                println!(
                    "veild {} running (pid {}, up {} s){}",
                    s.version,
                    s.pid,
                    s.uptime_s,
                    if s.testnet { ", testnet" } else { "" }
                );
                println!("node id:       {}", s.node_id);
                println!("publisher id:  {}", s.publisher_id);
                println!("data dir:      {}", s.data_dir);
                println!(
                    "shared:        {} file(s), {}",
                    s.shared_files,
                    human_size(s.shared_bytes)
                );
                println!("listening on:  {} (UDP)", s.listen);
                println!("peers:         {}", s.peers);
                println!(
                    "circuits:      {} built, {} building{}",
                    s.circuits_built,
                    s.circuits_building,
                    if s.relay {
                        format!("; relaying {}", s.relay_circuits)
                    } else {
                        "; client only (relays nothing)".to_string()
                    }
                );
                if let Some(why) = &s.client_only_reason {
                    println!("client only:   {why}");
                }
                let guards: Vec<&str> = s.guards.iter().map(|g| short_id(g)).collect();
                println!(
                    "guards:        {}",
                    if guards.is_empty() {
                        "none yet".to_string()
                    } else {
                        guards.join(" ")
                    }
                );
            });
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Peers => {
            let peers: Vec<PeerEntry> = simple(&dir, Command::Peers)?;
            print_result(out, &peers, |peers| {
                if peers.is_empty() {
                    eprintln!("no peers yet");
                    return;
                }
                println!(
                    "{:<64}  {:<21}  {:>8}  DIRECTION",
                    "NODE ID", "ADDRESS", "AGE"
                );
                for p in peers {
                    let dir = match p.direction {
                        Direction::Outbound => "outbound",
                        Direction::Inbound => "inbound",
                    };
                    println!(
                        "{:<64}  {:<21}  {:>7}s  {dir}",
                        p.node_id, p.address, p.age_s
                    );
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Circuits => {
            let circuits: Vec<CircuitEntry> = simple(&dir, Command::Circuits)?;
            print_result(out, &circuits, |circuits| {
                if circuits.is_empty() {
                    eprintln!("no circuits yet");
                    return;
                }
                println!(
                    "{:>6}  {:<8}  {:>8}  {:>4}  {:>8}  PATH (guard first)",
                    "ID", "STATE", "AGE", "HOPS", "BUILD"
                );
                for c in circuits {
                    let build = c
                        .build_ms
                        .map(|ms| format!("{ms}ms"))
                        .unwrap_or_else(|| "-".into());
                    let path: Vec<&str> = c.hops.iter().map(|h| short_id(h)).collect();
                    println!(
                        "{:>6}  {:<8}  {:>7}s  {:>4}  {:>8}  {}",
                        c.id,
                        c.state.as_str(),
                        c.age_s,
                        c.hops.len(),
                        build,
                        path.join(" > ")
                    );
                }
            });
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `veil demo`'s summary for people.
fn print_demo(r: &demo::DemoReport) {
    let by_role = |role: demo::Role| -> Vec<&str> {
        r.nodes
            .iter()
            .filter(|n| n.role == role)
            .map(|n| n.address.as_str())
            .collect()
    };
    println!("downloaded  {}  {}", r.content_id, r.output_path);
    println!(
        "            {} in {:.1} s ({:.2} MB/s), every piece verified; the file re-hashes to its id",
        human_size(r.bytes),
        r.seconds,
        r.throughput_mb_s
    );
    println!(
        "found       by name in {:.1} s (result {}), through {}-hop circuits on each side of a rendezvous",
        r.search_seconds, r.search_rank, r.hops
    );
    println!(
        "sharer      {} (client-only), linked only to {}",
        by_role(demo::Role::Sharer).join(" "),
        r.sharer_links.join(" ")
    );
    println!(
        "downloader  {} (client-only), linked only to {}",
        by_role(demo::Role::Downloader).join(" "),
        r.downloader_links.join(" ")
    );
    println!(
        "network     {} relays, {} daemons in all, stopped and removed after {:.1} s",
        by_role(demo::Role::Relay).len(),
        r.nodes.len(),
        r.total_seconds
    );
}

/// The first 16 hex digits of an id, for tables (`--json` has them whole).
fn short_id(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
}

/// Call the daemon for a command without progress and decode its result.
fn simple<T: DeserializeOwned>(dir: &DataDir, command: Command) -> anyhow::Result<T> {
    decode(client::call(dir, command, &mut |_| {})?)
}

fn decode<T: DeserializeOwned>(v: serde_json::Value) -> anyhow::Result<T> {
    serde_json::from_value(v).context("the daemon sent an answer this veil does not understand")
}

fn print_result<T: serde::Serialize>(out: Output, value: &T, human: impl FnOnce(&T)) {
    match out {
        Output::Human => human(value),
        Output::Json => {
            let mut stdout = std::io::stdout().lock();
            let _ = serde_json::to_writer_pretty(&mut stdout, value);
            let _ = writeln!(stdout);
        }
        Output::Jsonl => emit_line(&serde_json::json!({ "result": value })),
    }
}

fn emit_line(v: &serde_json::Value) {
    let mut stdout = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut stdout, v);
    let _ = writeln!(stdout);
}

fn absolute(path: &Path) -> anyhow::Result<String> {
    let abs = std::path::absolute(path).with_context(|| format!("{}: bad path", path.display()))?;
    let abs = std::fs::canonicalize(&abs).with_context(|| format!("{}", path.display()))?;
    abs.into_os_string()
        .into_string()
        .map_err(|p| anyhow::anyhow!("{}: path is not valid UTF-8", Path::new(&p).display()))
}

fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A progress bar on stderr for `veil share` (hidden when not a terminal).
struct ShareBar {
    bar: Option<ProgressBar>,
}

impl ShareBar {
    fn new(enabled: bool) -> ShareBar {
        let bar = enabled.then(|| {
            let b = ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} hashing [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b
        });
        ShareBar { bar }
    }

    fn update(&self, p: &Progress) {
        let Some(b) = &self.bar else { return };
        match p {
            Progress::Scanned { bytes, .. } => b.set_length(*bytes),
            Progress::Hashing { path, done, total } => {
                b.set_length(*total);
                b.set_position(*done);
                let name = Path::new(path)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                b.set_message(name);
            }
            Progress::Result { .. } | Progress::Download { .. } | Progress::Dropped { .. } => {}
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// `veil hash`: one line per file in b3sum's format, errors on stderr, the
/// remaining files still hashed; exit 1 if any file failed.
fn hash_files(files: &[PathBuf], out: Output) -> ExitCode {
    let mut ok = true;
    let mut results = Vec::new();
    for path in files {
        match hash_one(path) {
            Ok(hash) => {
                if out == Output::Human {
                    println!("{}", b3sum_line(&hash.to_hex(), path));
                }
                results.push(serde_json::json!({ "id": hash.to_hex().to_string(), "path": path.display().to_string() }));
            }
            Err(e) => {
                ok = false;
                eprintln!("veil: {}: {e}", path.display());
                results.push(serde_json::json!({ "path": path.display().to_string(), "error": e.to_string() }));
            }
        }
    }
    match out {
        Output::Human => {}
        Output::Json => {
            let _ = serde_json::to_writer_pretty(std::io::stdout().lock(), &results);
            println!();
        }
        Output::Jsonl => {
            for r in &results {
                emit_line(r);
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Hash one file with memory mapping and all cores (rayon) for large files.
fn hash_one(path: &Path) -> std::io::Result<blake3::Hash> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "is a directory",
        ));
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap_rayon(path)?;
    Ok(hasher.finalize())
}

/// b3sum's line format: `<hash>  <path>`; a path containing `\` or a newline
/// is escaped and the line starts with `\`.
fn b3sum_line(hex: &str, path: &Path) -> String {
    let p = path.to_string_lossy();
    if p.contains('\\') || p.contains('\n') {
        let escaped = p.replace('\\', "\\\\").replace('\n', "\\n");
        format!("\\{hex}  {escaped}")
    } else {
        format!("{hex}  {p}")
    }
}
