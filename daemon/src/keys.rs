//! Loading and creating the node key and the publisher pseudonym.
//!
//! **Invariant:** keys are never logged; key files are 0600 in the 0700 data
//! dir. The node key and the publisher pseudonym are separate keys in
//! separate files with different formats, so one can never be used as the
//! other.

use std::fs;
use std::io;

use anyhow::Context;
use rand::rngs::OsRng;
use veil_core::identity::{NodeIdentity, Pseudonym};
use veil_core::pow::PowParams;

use crate::datadir::{DataDir, NODE_KEY_FILE, PUBLISHER_KEY_FILE, write_private};

/// Load the node key, or create it (solving its proof of work) on first start.
pub fn load_or_create_node(dir: &DataDir, pow: PowParams) -> anyhow::Result<NodeIdentity> {
    let path = dir.file(NODE_KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let id = NodeIdentity::from_bytes(&bytes)
                .with_context(|| format!("node key {} is unreadable", path.display()))?;
            id.public().check_pow(pow).map_err(|e| {
                anyhow::anyhow!(
                    "node key {} does not meet this network's proof of work ({e}); it was made for another network (--testnet?): use a separate --data-dir",
                    path.display()
                )
            })?;
            Ok(id)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::info!(
                difficulty = pow.difficulty_bits,
                "creating node identity (proof of work)"
            );
            let id = NodeIdentity::generate(&mut OsRng, pow);
            write_private(&path, &id.to_bytes())
                .with_context(|| format!("cannot write node key {}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read node key {}", path.display())),
    }
}

/// Load the publisher pseudonym, or create it on first start.
pub fn load_or_create_publisher(dir: &DataDir, pow: PowParams) -> anyhow::Result<Pseudonym> {
    let path = dir.file(PUBLISHER_KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let p = Pseudonym::from_bytes(&bytes)
                .with_context(|| format!("publisher key {} is unreadable", path.display()))?;
            p.publisher().check_pow(pow).map_err(|e| {
                anyhow::anyhow!(
                    "publisher key {} does not meet this network's proof of work ({e}); it was made for another network (--testnet?): use a separate --data-dir",
                    path.display()
                )
            })?;
            Ok(p)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::info!(
                difficulty = pow.difficulty_bits,
                "creating publisher pseudonym (proof of work)"
            );
            let p = Pseudonym::generate(&mut OsRng, pow);
            write_private(&path, &p.to_bytes())
                .with_context(|| format!("cannot write publisher key {}", path.display()))?;
            Ok(p)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read publisher key {}", path.display())),
    }
}
