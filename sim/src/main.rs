//! `veil-sim`: many veil nodes, the same protocol code as `veild`, in
//! virtual time. Prints the seed on stderr; the same seed replays the same
//! run (identical JSON apart from `wall_ms`). Debug output goes to stderr
//! through `tracing`, filtered by `RUST_LOG` (e.g. `RUST_LOG=veil_sim=debug`).

#![recursion_limit = "256"]

use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use veil_core::node::Config;
use veil_sim::download::DownloadOutcome;
use veil_sim::position::PositionGuess;
use veil_sim::scenario::{SearchMode, SearchScenario};
use veil_sim::search::SearchOutcome;
use veil_sim::sim::{PickShares, Scenario, Sim, Tamper};

/// veil-sim: run many veil nodes in virtual time.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build a network from a seed list and let peer sampling converge.
    Run {
        /// Number of nodes (attackers included).
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Seed of the run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Fraction of nodes that flood (0..1).
        #[arg(long, default_value_t = 0.0)]
        flooders: f64,
        /// Virtual seconds to run.
        #[arg(long, default_value_t = 30)]
        duration_s: u64,
        /// Hops per circuit (1 to 4).
        #[arg(long, default_value_t = 3)]
        hops: usize,
        /// Built circuits each node keeps (0: no circuits).
        #[arg(long, default_value_t = 2)]
        circuits: usize,
        /// Fraction of nodes that collude (0..1), chosen by the harness.
        #[arg(long, default_value_t = 0.0)]
        colluders: f64,
        /// Fraction of nodes that run client-only (0..1).
        #[arg(long, default_value_t = 0.0)]
        client_only: f64,
        /// Fraction of nodes that start tampering with the relay cells they
        /// send late in the run (0..1); see --tamper.
        #[arg(long, default_value_t = 0.0)]
        tamperers: f64,
        /// Fraction of nodes (never seeds) that crash just after circuit
        /// builds start (0..1).
        #[arg(long, default_value_t = 0.0)]
        crash: f64,
        /// Fraction of nodes (0..1) that forge: they answer pull requests
        /// with badly signed descriptors carrying honest relays' keys. The
        /// same seed is then also run without forgers, to compare.
        #[arg(long, default_value_t = 0.0)]
        forgers: f64,
        /// What tamperers do: corrupt, drop or replay.
        #[arg(long, default_value = "corrupt", value_parser = ["corrupt", "drop", "replay"])]
        tamper: String,
        /// Print exactly one JSON object on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        search: SearchArgs,
    },
}

/// The search workload (off unless one of these is given).
#[derive(Debug, clap::Args)]
struct SearchArgs {
    /// Files shared, each by 5 to 7 honest relays, Zipf popularity.
    #[arg(long, default_value_t = 0)]
    files: usize,
    /// Searches from random honest nodes over a 15 s window after
    /// publication (the run is extended for their timeouts).
    #[arg(long, default_value_t = 0)]
    searches: usize,
    /// How exits look: random walks, or the flood baseline.
    #[arg(long, default_value = "walk", value_parser = ["walk", "flood"])]
    search: String,
    /// The flood baseline's TTL (with --search flood).
    #[arg(long, default_value_t = 2)]
    flood_ttl: u8,
    /// Fraction of nodes (0..1) publishing decoys for the top files.
    #[arg(long, default_value_t = 0.0)]
    poisoners: f64,
    /// Fraction of nodes per virtual minute (0..1) that leave and are
    /// replaced by new nodes.
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Experiment: walks an exit starts per search (core default 4).
    #[arg(long)]
    walkers: Option<usize>,
    /// Experiment: mean query walk length (core default 32).
    #[arg(long)]
    walk_len: Option<u32>,
    /// Experiment: mean publish walk length (core default 10).
    #[arg(long)]
    publish_len: Option<u32>,
    /// Downloads by random honest nodes over a window after publication
    /// (`--download-window`): search by words, download the top-ranked
    /// result, check it, rate it (the run is extended by 4 min for them).
    /// Sharers then run services, and poisoners split into decoy
    /// publishers, false claimers and stallers.
    #[arg(long, default_value_t = 0)]
    downloads: usize,
    /// The window the downloads are spread over, in seconds (the
    /// searches then go on 90 s past it).
    #[arg(long, default_value_t = 150)]
    download_window: u64,
    /// Only this many honest nodes download (0: any honest node), so that
    /// each downloads repeatedly and its ratings act on its later picks.
    #[arg(long, default_value_t = 0)]
    downloaders: usize,
    /// Probability that a user judges a download wrongly (0..1).
    #[arg(long, default_value_t = 0.1)]
    judge_error: f64,
    /// Users keep their ratings to themselves (the feedback then acts on
    /// the rater's own later searches only).
    #[arg(long)]
    local_ratings: bool,
    /// Write one JSON object per download to this file (JSON lines): who
    /// asked, when, what its ranked results showed when it chose (the top
    /// three and the true file, decoy ratings received and published by
    /// then) and how it ended.
    #[arg(long, value_name = "PATH")]
    trace_downloads: Option<std::path::PathBuf>,
}

impl SearchArgs {
    fn scenario(&self) -> anyhow::Result<SearchScenario> {
        anyhow::ensure!(
            (0.0..1.0).contains(&self.poisoners) && (0.0..1.0).contains(&self.churn),
            "--poisoners and --churn must be in [0, 1)"
        );
        anyhow::ensure!(self.files <= 5_000, "--files must be at most 5000");
        anyhow::ensure!(
            (self.searches == 0 && self.downloads == 0) || self.files > 0,
            "--searches and --downloads need --files"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.judge_error),
            "--judge-error must be in [0, 1]"
        );
        anyhow::ensure!(
            self.walkers != Some(0) && self.walk_len != Some(0) && self.publish_len != Some(0),
            "--walkers, --walk-len and --publish-len must be positive"
        );
        anyhow::ensure!(
            (1..=3600).contains(&self.download_window),
            "--download-window must be 1 to 3600 seconds"
        );
        let d = SearchScenario {
            download_window_ms: self.download_window * 1000,
            ..SearchScenario::default()
        };
        // With downloads, the searches go on until well after the last
        // download's search, so that the last quarter of them meets the
        // users' ratings.
        let search_window_ms = if self.downloads > 0 {
            d.download_delay_ms + d.download_window_ms + 90_000 - d.search_delay_ms
        } else {
            d.search_window_ms
        };
        Ok(SearchScenario {
            search_window_ms,
            files: self.files,
            searches: self.searches,
            mode: if self.search == "flood" {
                SearchMode::Flood(self.flood_ttl)
            } else {
                SearchMode::Walk
            },
            poisoners: self.poisoners,
            churn: self.churn,
            walkers: self.walkers,
            walk_len: self.walk_len,
            publish_len: self.publish_len,
            downloads: self.downloads,
            downloaders: self.downloaders,
            judge_error: self.judge_error,
            share_ratings: !self.local_ratings,
            ..d
        })
    }
}

fn main() -> anyhow::Result<()> {
    // Debug output of the harness (`RUST_LOG=veil_sim=debug`) on stderr.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run {
            nodes,
            seed,
            flooders,
            duration_s,
            hops,
            circuits,
            colluders,
            client_only,
            tamperers,
            tamper,
            crash,
            forgers,
            json,
            search,
        } => {
            anyhow::ensure!((1..=4).contains(&hops), "--hops must be 1 to 4");
            anyhow::ensure!(
                (0.0..1.0).contains(&colluders)
                    && (0.0..1.0).contains(&client_only)
                    && (0.0..1.0).contains(&tamperers)
                    && (0.0..1.0).contains(&crash)
                    && (0.0..1.0).contains(&forgers),
                "--colluders, --client-only, --tamperers, --crash and --forgers must be in [0, 1)"
            );
            anyhow::ensure!(nodes >= 2, "--nodes must be at least 2");
            anyhow::ensure!(
                (0.0..1.0).contains(&flooders),
                "--flooders must be in [0, 1)"
            );
            let started = Instant::now();
            let mut scenario = Scenario::new(nodes, seed);
            scenario.flooders = flooders;
            scenario.duration_ms = duration_s * 1000;
            scenario.hops = hops;
            scenario.circuits_per_node = circuits;
            scenario.colluders = colluders;
            scenario.client_only = client_only;
            scenario.tamperers = tamperers;
            scenario.crash_fraction = crash;
            scenario.forgers = forgers;
            scenario.search = search.scenario()?;
            scenario.extend_for_searches(Config::testnet().search.search_timeout_ms);
            eprintln!(
                "veil-sim: seed {seed}, {nodes} nodes, flooders {flooders}, {} virtual s",
                scenario.duration_ms / 1000
            );
            scenario.tamper = match tamper.as_str() {
                "drop" => Tamper::Drop,
                "replay" => Tamper::Replay,
                _ => Tamper::Corrupt,
            };
            if tamperers > 0.0 {
                // Tampering starts once circuits are built and leaves a
                // probe timeout before the end.
                let end = duration_s * 1000;
                scenario.tamper_from_ms = end.saturating_sub(scenario.build_timeout_ms + 3_000);
            }
            let baseline_scenario = Scenario {
                forgers: 0.0,
                ..scenario.clone()
            };
            let mut sim = Sim::new(scenario, &Config::testnet());
            sim.run();
            let o = sim.outcome();
            let so = sim.search_outcome();
            let dlo = sim.download_outcome();
            if let Some(path) = &search.trace_downloads {
                let mut out = String::new();
                for line in sim.download_trace().unwrap_or_default() {
                    out.push_str(&line.to_string());
                    out.push('\n');
                }
                std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?;
            }
            let duration_s = sim.scenario().duration_ms / 1000;
            let wall_ms = started.elapsed().as_millis() as u64;
            // Flooders' place in honest nodes' picks (they are relays too).
            let flooder_picks = sim.pick_shares(&sim.flooders(), &Default::default());
            // The same seed without forgers: where the relays they targeted
            // stand when nobody forges (the same nodes counted).
            let baseline = (forgers > 0.0).then(|| {
                let mut base = Sim::new(baseline_scenario, &Config::testnet());
                base.run();
                base.pick_shares(sim.forge_targeted(), &sim.adversaries())
            });
            let attempted = o.links_up + o.handshakes_failed;
            let mut doc = serde_json::json!({
                "nodes": nodes,
                "seed": seed,
                "flooders": flooders,
                "virtual_s": duration_s,
                "links_up": o.links_up,
                "handshakes_failed": o.handshakes_failed,
                "handshake_success": if attempted == 0 { 1.0 } else { o.links_up as f64 / attempted as f64 },
                "attacker_share_of_samples": round6(o.attacker_share_of_samples),
                "attacker_population_share": round6(o.attacker_population_share),
                "honest_nodes": o.honest_nodes,
                "honest_connected": o.honest_connected,
                "mean_peers": round6(o.mean_peers),
                "mean_known": round6(o.mean_known),
                "mean_sample_size": round6(o.mean_sample_size),
                "rounds": o.rounds,
                "floods_detected": o.floods_detected,
                "peers_penalised": o.peers_penalised,
                "pushes_sent": o.pushes_sent,
                "pulls_sent": o.pulls_sent,
                "pull_replies": o.pull_replies,
                "cells_delivered": o.cells_delivered,
                "hops": hops,
                "colluders": colluders,
                "client_only": client_only,
                "circuits_attempted": o.circuits_attempted,
                "circuits_built": o.circuits_built,
                "circuits_failed": o.circuits_failed,
                "circuits_failed_via_flooder": o.circuits_failed_via_flooder,
                "flooder_shares": (flooders > 0.0).then(|| shares_json(&flooder_picks)),
                "circuits_failed_via_forger": o.circuits_failed_via_forger,
                "circuits_failed_clean": o.circuits_failed_clean,
                "circuit_success": if o.circuits_attempted == 0 { 1.0 } else { round6(o.circuits_built as f64 / o.circuits_attempted as f64) },
                "circuit_build_ms_p50": o.circuit_build_ms_p50,
                "circuit_build_ms_p95": o.circuit_build_ms_p95,
                "honest_circuits_built": o.honest_circuits_built,
                "colluder_first_last": o.colluder_first_last,
                "colluder_first_last_share": if o.honest_circuits_built == 0 { 0.0 } else { round6(o.colluder_first_last as f64 / o.honest_circuits_built as f64) },
                "colluder_guard_share": round6(o.colluder_guard_share),
                "clients_exposed": o.clients_exposed,
                "guard_max_clients": o.guard_max_clients,
                "nodes_with_circuit": o.nodes_with_circuit,
                "circuits_torn_down_bad_cell": o.circuits_torn_down_bad_cell,
                "tamperers": tamperers,
                "data_sent": o.data_sent,
                "data_delivered": o.data_delivered,
                "data_corrupted_accepted": o.data_corrupted_accepted,
                "circuits_via_tamperer": o.circuits_via_tamperer,
                "circuits_via_tamperer_torn_down": o.circuits_via_tamperer_torn_down,
                "circuits_clean_torn_down": o.circuits_clean_torn_down,
                "crash": crash,
                "crashed": o.crashed,
                "builds_failed_after_crash": o.builds_failed_after_crash,
                "builds_failed_off_guard": o.builds_failed_off_guard,
                "guards_changed": o.guards_changed,
                "survivors_without_circuit": o.survivors_without_circuit,
                "forgers": forgers,
                "forgery": forgery_json(&o, baseline.as_ref()),
                "descriptors_refused": o.descriptors_refused,
                "position_guess": position_json(&o.position_guess),
                "events": o.events,
                "wall_ms": wall_ms,
            });
            if let (Some(s), serde_json::Value::Object(map)) = (&so, &mut doc) {
                let sc = &sim.scenario().search;
                map.extend(search_json(s, sc));
                if let Some(d) = &dlo {
                    map.extend(download_json(d, sc));
                }
            }
            if json {
                println!("{doc}");
            } else if let serde_json::Value::Object(map) = &doc {
                for (k, v) in map {
                    match k.as_str() {
                        "position_guess" => {
                            println!("{k:<28} {}", position_line(&o.position_guess))
                        }
                        "forgery" if forgers > 0.0 => {
                            println!("{k:<28} {}", forgery_line(&o, baseline.as_ref()))
                        }
                        "forgery" => {}
                        k if so.is_some() && SEARCH_KEYS.contains(&k) => {}
                        k if dlo.is_some() && DOWNLOAD_KEYS.contains(&k) => {}
                        _ if v.is_null() => {}
                        _ => println!("{k:<28} {v}"),
                    }
                }
            }
            if let (false, Some(s)) = (json, &so) {
                for line in search_lines(s, &sim.scenario().search) {
                    println!("{line}");
                }
            }
            if let (false, Some(d)) = (json, &dlo) {
                for line in download_lines(d) {
                    println!("{line}");
                }
            }
            eprintln!(
                "veil-sim: {} events in {} ms ({:.0} events/s)",
                o.events,
                wall_ms,
                o.events as f64 * 1000.0 / wall_ms.max(1) as f64
            );
        }
    }
    Ok(())
}

/// What the forgers did and where the honest relays they targeted stand in
/// honest nodes' picks, against the same seed without forgers.
fn forgery_json(o: &veil_sim::sim::Outcome, baseline: Option<&PickShares>) -> serde_json::Value {
    serde_json::json!({
        "forger_nodes": o.forgers,
        "targets": o.forge_targets,
        "targeted": o.forge_targeted,
        "forgeries_sent": o.forgeries_sent,
        "forgeries_vouched": o.forgeries_vouched,
        "descriptors_refused": o.descriptors_refused,
        "peers_penalised": o.peers_penalised,
        "forger_guarded": o.forger_guarded,
        "forger_guarded_without_circuit": o.forger_guarded_without_circuit,
        "targeted_shares": shares_json(&o.targeted_picks),
        "targeted_shares_without_forgers": baseline.map(shares_json),
    })
}

/// A set of relays' share of honest nodes' picks.
fn shares_json(p: &PickShares) -> serde_json::Value {
    serde_json::json!({
        "relay_share": round6(p.relay_share),
        "guard_pool": round6(p.guard_pool),
        "vanguard_pool": round6(p.vanguard_pool),
        "first_hop": round6(p.first_hop),
        "exit": round6(p.exit),
        "guard_entries": p.guard_entries,
        "circuits": p.circuits,
    })
}

/// How well relays guessed their position from what they saw.
fn position_json(g: &PositionGuess) -> serde_json::Value {
    let by_position: Vec<serde_json::Value> = g
        .by_position
        .iter()
        .enumerate()
        .map(|(pos, &(n, ok))| {
            serde_json::json!({
                "position": pos,
                "relays": n,
                "correct": ok,
                "accuracy": if n == 0 { 0.0 } else { round6(ok as f64 / n as f64) },
            })
        })
        .collect();
    serde_json::json!({
        "accuracy": round6(g.accuracy),
        "chance": round6(g.chance),
        "by_position": by_position,
        "circuits": g.circuits,
        "unmapped": g.unmapped,
        "guesses": g.guesses,
        "guard_guessed": g.guard_guessed,
        "guard_correct": g.guard_correct,
        "guard_precision": round6(g.guard_precision()),
        "guard_recall": round6(g.guard_recall()),
    })
}

/// The human table's line for the position guesses.
fn position_line(g: &PositionGuess) -> String {
    let by: Vec<String> = g
        .by_position
        .iter()
        .map(|&(n, ok)| format!("{:.3}", if n == 0 { 0.0 } else { ok as f64 / n as f64 }))
        .collect();
    format!(
        "accuracy {:.3} (chance {:.3}) over {} circuits, by position [{}]; \
         'I am the guard' right {:.3} of the time, said by {:.3} of guards",
        g.accuracy,
        g.chance,
        g.circuits,
        by.join(", "),
        g.guard_precision(),
        g.guard_recall()
    )
}

/// The human table's line for the forgery scenario.
fn forgery_line(o: &veil_sim::sim::Outcome, baseline: Option<&PickShares>) -> String {
    let p = &o.targeted_picks;
    let (bg, bv, be) = baseline.map_or((f64::NAN, f64::NAN, f64::NAN), |b| {
        (b.guard_pool, b.vanguard_pool, b.exit)
    });
    format!(
        "{} forgeries ({} vouched) of {} relays; targeted relays' share with / without forgers: \
         guards {:.3} / {bg:.3}, vanguards {:.3} / {bv:.3}, exits {:.3} / {be:.3} (relay share {:.3})",
        o.forgeries_sent,
        o.forgeries_vouched,
        o.forge_targeted,
        p.guard_pool,
        p.vanguard_pool,
        p.exit,
        p.relay_share
    )
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The search figures' keys in the JSON (shown as lines in the table).
const SEARCH_KEYS: &[&str] = &["files", "poisoners", "churn", "search_mode", "search"];

/// The search figures, as JSON fields.
fn search_json(
    s: &SearchOutcome,
    sc: &SearchScenario,
) -> serde_json::Map<String, serde_json::Value> {
    let v = serde_json::json!({
        "files": s.files,
        "poisoners": sc.poisoners,
        "churn": sc.churn,
        "search_mode": sc.mode_name(),
        "searches": s.searches,
        "searches_succeeded": s.searches_succeeded,
        "search_success": s.search_success,
        "search_latency_ms_p50": s.search_latency_ms_p50,
        "messages_per_search": s.messages_per_search,
        "publish_messages_per_record": s.publish_messages_per_record,
        "decoy_top_results": s.decoy_top_results,
        "decoy_top_results_late": s.decoy_top_results_late,
        "late_searches": s.late_searches,
        "late_poisoned_searches": s.late_poisoned_searches,
        "ratings_received": s.ratings_received,
        "self_answers": s.self_answers,
        "index_records_mean": s.index_records_mean,
        "search": {
            "records": s.records,
            "poisoner_nodes": s.poisoner_nodes,
            "decoy_records": s.decoy_records,
            "poisoned_searches": s.poisoned_searches,
            "searches_refused": s.searches_refused,
            "searches_lost": s.searches_lost,
            "search_latency_ms_p95": s.search_latency_ms_p95,
            "walk_cells": s.walk_cells,
            "reply_cells": s.reply_cells,
            "search_circuit_cells": s.search_circuit_cells,
            "publish_cells": s.publish_cells,
            "publish_circuit_cells": s.publish_circuit_cells,
            "records_published": s.records_published,
            "answers": s.answers,
            "own_content_answers": s.own_content_answers,
            "rate_limited": s.rate_limited,
            "nodes_left": s.nodes_left,
            "nodes_joined": s.nodes_joined,
            "walkers": sc.walkers,
            "walk_len": sc.walk_len,
            "publish_len": sc.publish_len,
        },
    });
    match v {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// The human table's lines for the search workload.
fn search_lines(s: &SearchOutcome, sc: &SearchScenario) -> Vec<String> {
    vec![
        format!(
            "search ({}): {} files, {} records; {} of {} searches found their file ({:.3}; {} refused, {} searchers left), latency p50 {} ms, p95 {} ms",
            sc.mode_name(),
            s.files,
            s.records,
            s.searches_succeeded,
            s.searches,
            s.search_success,
            s.searches_refused,
            s.searches_lost,
            s.search_latency_ms_p50,
            s.search_latency_ms_p95
        ),
        format!(
            "search cost: {:.1} cells per search ({} walk, {} reply, {} circuit); publication {:.1} cells per record ({} walk, {} circuit, {} records published); index {:.1} records per relay",
            s.messages_per_search,
            s.walk_cells,
            s.reply_cells,
            s.search_circuit_cells,
            s.publish_messages_per_record,
            s.publish_cells,
            s.publish_circuit_cells,
            s.records_published,
            s.index_records_mean
        ),
        format!(
            "search abuse: {} poisoners ({} decoys), decoy on top in {} of {} searches for poisoned files; {} self-answers ({} about own content) of {} answers; churn {} ({} left, {} joined)",
            s.poisoner_nodes,
            s.decoy_records,
            s.decoy_top_results,
            s.poisoned_searches,
            s.self_answers,
            s.own_content_answers,
            s.answers,
            sc.churn,
            s.nodes_left,
            s.nodes_joined
        ),
    ]
}

/// The download figures' keys in the JSON (shown as lines in the table).
const DOWNLOAD_KEYS: &[&str] = &["download"];

/// The download figures, as JSON fields.
fn download_json(
    d: &DownloadOutcome,
    sc: &SearchScenario,
) -> serde_json::Map<String, serde_json::Value> {
    let v = serde_json::json!({
        "downloads": d.downloads,
        "downloads_completed": d.downloads_completed,
        "downloads_verified": d.downloads_verified,
        "decoy_downloads": d.decoy_downloads,
        "corrupt_pieces_sent": d.corrupt_pieces_sent,
        "corrupt_pieces_rejected": d.corrupt_pieces_rejected,
        "corrupt_accepted": d.corrupt_accepted,
        "download_ms_p50": d.download_ms_p50,
        "compromised_downloads": d.compromised_downloads,
        "ratings_published": d.ratings_published,
        "sources_dropped_bad": d.sources_dropped_bad,
        "session_colluder_first_hops_share": d.colluder_first_hops_share,
        "session_colluder_rendezvous_share": d.colluder_rendezvous_share,
        "download": {
            "downloaders": sc.downloaders,
            "judge_error": sc.judge_error,
            "downloads_skipped": d.downloads_skipped,
            "downloads_refused": d.downloads_refused,
            "downloads_not_found": d.downloads_not_found,
            "downloads_lost": d.downloads_lost,
            "downloads_started": d.downloads_started,
            "downloads_unfinished": d.downloads_unfinished,
            "download_ms_p95": d.download_ms_p95,
            "poisoned_downloads": d.poisoned_downloads,
            "poisoned_after_feedback": d.poisoned_after_feedback,
            "decoy_downloads_after_feedback": d.decoy_downloads_after_feedback,
            "sources_dropped_stalled": d.sources_dropped_stalled,
            "sources_dropped_failed": d.sources_dropped_failed,
            "honest_dropped_bad": d.honest_dropped_bad,
            "claimers_dropped_bad": d.claimers_dropped_bad,
            "stallers_dropped": d.stallers_dropped,
            "services": d.services,
            "pieces_served": d.pieces_served,
            "ratings_fake": d.ratings_fake,
            "ratings_good": d.ratings_good,
            "misjudged": d.misjudged,
            "sessions": d.sessions,
            "sessions_measured": d.sessions_measured,
            "sessions_unmatched": d.sessions_unmatched,
            "sessions_late": d.sessions_late,
            "colluder_first_hops": d.colluder_first_hops,
            "colluder_rendezvous": d.colluder_rendezvous,
        },
    });
    match v {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// The human table's lines for the download workload.
fn download_lines(d: &DownloadOutcome) -> Vec<String> {
    vec![
        format!(
            "downloads: {} asked, {} started, {} completed, {} verified (the wanted file, intact), {} unfinished; {} refused, {} found nothing; p50 {} ms, p95 {} ms",
            d.downloads,
            d.downloads_started,
            d.downloads_completed,
            d.downloads_verified,
            d.downloads_unfinished,
            d.downloads_refused,
            d.downloads_not_found,
            d.download_ms_p50,
            d.download_ms_p95
        ),
        format!(
            "download abuse: {} decoys picked ({} of {} poisoned after a fake rating); {} corrupt pieces sent, {} rejected, {} corrupt files accepted; sources dropped: {} bad ({} claimers, {} honest), {} stalled, {} failed",
            d.decoy_downloads,
            d.decoy_downloads_after_feedback,
            d.poisoned_after_feedback,
            d.corrupt_pieces_sent,
            d.corrupt_pieces_rejected,
            d.corrupt_accepted,
            d.sources_dropped_bad,
            d.claimers_dropped_bad,
            d.honest_dropped_bad,
            d.sources_dropped_stalled,
            d.sources_dropped_failed
        ),
        format!(
            "download sessions: {} opened, {} measured; colluders held both first hops in {} ({:.4}), the rendezvous point in {} ({:.4})",
            d.sessions,
            d.sessions_measured,
            d.colluder_first_hops,
            d.colluder_first_hops_share,
            d.colluder_rendezvous,
            d.colluder_rendezvous_share
        ),
    ]
}
