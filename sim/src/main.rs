//! `veil-sim`: a discrete-event simulator that drives many `veil-core` nodes
//! in virtual time. The event loop arrives with the sans-IO node state
//! machine; today the binary reports what it can already exercise: the
//! identity layer's proof of work at a chosen difficulty, from a seed.

use std::time::Instant;

use clap::{Parser, Subcommand};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use veil_core::identity::NodeIdentity;
use veil_core::pow::PowParams;

/// veil-sim: run many veil nodes in virtual time.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create N PoW-admitted node identities from a seed and report the cost.
    Identities {
        #[arg(long, default_value_t = 100)]
        nodes: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// PoW difficulty in leading zero bits (default: the testnet value).
        #[arg(long)]
        difficulty: Option<u8>,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Identities {
            nodes,
            seed,
            difficulty,
            json,
        } => {
            eprintln!("veil-sim: seed {seed}");
            let params = PowParams {
                difficulty_bits: difficulty.unwrap_or(PowParams::TESTNET.difficulty_bits),
            };
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let started = Instant::now();
            let mut digest = blake3::Hasher::new();
            for _ in 0..nodes {
                let id = NodeIdentity::generate(&mut rng, params);
                digest.update(id.node_id().as_bytes());
            }
            let wall_ms = started.elapsed().as_millis() as u64;
            let ids_digest = digest.finalize().to_hex().to_string();
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "nodes": nodes, "seed": seed, "difficulty_bits": params.difficulty_bits,
                        "ids_digest": ids_digest, "wall_ms": wall_ms,
                    })
                );
            } else {
                println!("nodes            {nodes}");
                println!("seed             {seed}");
                println!("difficulty bits  {}", params.difficulty_bits);
                println!("ids digest       {ids_digest}");
                println!("wall ms          {wall_ms}");
            }
        }
    }
    Ok(())
}
