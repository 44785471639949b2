//! Loading and creating the node key and the publisher pseudonym.
//!
//! **Invariant:** keys are never logged; key files are 0600 in the 0700 data
//! dir. The node key and the publisher pseudonym are separate keys in
//! separate files with different formats, so one can never be used as the
//! other.
//!
//! A client-only node does not use the node key file: it makes a fresh
//! node identity for each run ([`fresh_node`]) and never writes it, so the
//! id its guards see does not outlive a restart (and with it, usually, a
//! change of address). The publisher pseudonym is kept either way.

use std::fs;
use std::io;

use anyhow::Context;
use rand::rngs::OsRng;
use veil_core::identity::{NodeIdentity, Pseudonym};
use veil_core::pow::PowParams;

use crate::datadir::{
    DataDir, NODE_KEY_FILE, PUBLISHER_KEY_FILE, RATER_KEY_FILE, SERVICE_KEY_FILE, write_private,
};

/// How one kind of key file is read, checked, made and written.
struct KeyKind<T> {
    what: &'static str,
    file: &'static str,
    decode: fn(&[u8]) -> anyhow::Result<T>,
    check_pow: fn(&T, PowParams) -> Result<(), veil_core::pow::PowError>,
    generate: fn(PowParams) -> T,
    encode: fn(&T) -> zeroize::Zeroizing<Vec<u8>>,
}

fn load_or_create<T>(dir: &DataDir, pow: PowParams, kind: &KeyKind<T>) -> anyhow::Result<T> {
    let path = dir.file(kind.file);
    let what = kind.what;
    match fs::read(&path) {
        Ok(bytes) => {
            let key = (kind.decode)(&bytes)
                .with_context(|| format!("{what} {} is unreadable", path.display()))?;
            (kind.check_pow)(&key, pow).map_err(|e| {
                anyhow::anyhow!(
                    "{what} {} does not meet this network's proof of work ({e}); it was made for another network (--testnet?): use a separate --data-dir",
                    path.display()
                )
            })?;
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::info!(
                difficulty = pow.difficulty_bits,
                "creating {what} (proof of work)"
            );
            let key = (kind.generate)(pow);
            write_private(&path, &(kind.encode)(&key))
                .with_context(|| format!("cannot write {what} {}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {what} {}", path.display())),
    }
}

/// Load the node key, or create it (solving its proof of work) on first start.
pub fn load_or_create_node(dir: &DataDir, pow: PowParams) -> anyhow::Result<NodeIdentity> {
    load_or_create(
        dir,
        pow,
        &KeyKind {
            what: "node key",
            file: NODE_KEY_FILE,
            decode: |b| Ok(NodeIdentity::from_bytes(b)?),
            check_pow: |k, pow| k.public().check_pow(pow),
            generate: |pow| NodeIdentity::generate(&mut OsRng, pow),
            encode: NodeIdentity::to_bytes,
        },
    )
}

/// A fresh node identity for one run of a client-only node (solving its
/// proof of work now), never written anywhere.
pub fn fresh_node(pow: PowParams) -> NodeIdentity {
    tracing::info!(
        difficulty = pow.difficulty_bits,
        "client-only: creating a fresh node identity for this run (proof of work; never saved, the node key file is not used)"
    );
    let started = std::time::Instant::now();
    let key = NodeIdentity::generate(&mut OsRng, pow);
    tracing::debug!(
        pow_ms = started.elapsed().as_millis() as u64,
        "fresh node identity made"
    );
    key
}

/// Load the publisher pseudonym, or create it on first start.
pub fn load_or_create_publisher(dir: &DataDir, pow: PowParams) -> anyhow::Result<Pseudonym> {
    load_or_create(
        dir,
        pow,
        &KeyKind {
            what: "publisher key",
            file: PUBLISHER_KEY_FILE,
            decode: |b| Ok(Pseudonym::from_bytes(b)?),
            check_pow: |k, pow| k.publisher().check_pow(pow),
            generate: |pow| Pseudonym::generate(&mut OsRng, pow),
            encode: Pseudonym::to_bytes,
        },
    )
}

/// Load the rater pseudonym, or create it on first rating. It signs our
/// user's ratings and nothing else, so ratings link to each other (which
/// their weighing needs) and not to our library or our node.
pub fn load_or_create_rater(dir: &DataDir, pow: PowParams) -> anyhow::Result<Pseudonym> {
    load_or_create(
        dir,
        pow,
        &KeyKind {
            what: "rater key",
            file: RATER_KEY_FILE,
            decode: |b| Ok(Pseudonym::from_bytes(b)?),
            check_pow: |k, pow| k.publisher().check_pow(pow),
            generate: |pow| Pseudonym::generate(&mut OsRng, pow),
            encode: Pseudonym::to_bytes,
        },
    )
}

/// Load the service key (our files are served under it through
/// introduction points), or create it on first start.
pub fn load_or_create_service(
    dir: &DataDir,
    pow: PowParams,
) -> anyhow::Result<veil_core::rendezvous::ServiceKey> {
    use veil_core::rendezvous::ServiceKey;
    load_or_create(
        dir,
        pow,
        &KeyKind {
            what: "service key",
            file: SERVICE_KEY_FILE,
            decode: |b| Ok(ServiceKey::from_bytes(b)?),
            check_pow: |k, pow| k.public().key.check_pow(pow),
            generate: |pow| ServiceKey::generate(&mut OsRng, pow),
            encode: ServiceKey::to_bytes,
        },
    )
}
