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
