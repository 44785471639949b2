//! Node identities and publisher pseudonyms.
//!
//! A node has an ed25519 key (it signs the node's descriptor) and an x25519
//! key (its Noise static key). Its [`NodeId`] is
//! `BLAKE3-derive_key("veil 2025 node-id v1", ed25519_pub || x25519_pub)`,
//! so the id commits to both keys: a peer that completes a Noise handshake
//! with the x25519 key and shows the ed25519 key has proven the id. The id is
//! admitted only with a [`Pow`] over it in [`PowDomain::Node`].
//!
//! A publisher signs records with a [`Pseudonym`]: a separate ed25519 key,
//! never a node key, so what a node relays or stores cannot be linked to
//! what its user publishes. Its [`PublisherId`] is derived under another
//! context and its proof of work is in [`PowDomain::Publisher`], so neither
//! the id nor the work of one kind of identity can stand in for the other.
//!
//! Key files are versioned and start with a magic that differs between node
//! keys and pseudonyms, so one can never be loaded as the other. Loading
//! recomputes the id and re-checks the stored proof. Secrets are zeroized on
//! drop and never printed by `Debug`.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::pow::{self, Pow, PowDomain, PowError, PowParams};
use crate::wire::{DecodeError, Reader, Writer};

/// BLAKE3 `derive_key` context for node ids.
pub const NODE_ID_CONTEXT: &str = "veil 2025 node-id v1";
/// BLAKE3 `derive_key` context for publisher ids.
pub const PUBLISHER_ID_CONTEXT: &str = "veil 2025 publisher-id v1";

/// Magic at the start of a node key file.
pub const NODE_KEY_MAGIC: &[u8; 8] = b"veil-nkf";
/// Magic at the start of a pseudonym key file.
pub const PSEUDONYM_KEY_MAGIC: &[u8; 8] = b"veil-pkf";
/// Current key file format version (both kinds).
pub const KEY_FILE_VERSION: u8 = 1;

/// A 32-byte identifier shown as lowercase hex.
macro_rules! hex_id {
    ($name:ident, $what:literal) => {
        impl $name {
            /// Wraps raw id bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                $name(bytes)
            }

            /// The raw id bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            /// Parses 64 hex digits (either case).
            fn from_str(s: &str) -> Result<Self, ParseIdError> {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(s, &mut bytes).map_err(|_| ParseIdError { what: $what })?;
                Ok($name(bytes))
            }
        }
    };
}

/// A node's identifier: a hash of its two public keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; 32]);
hex_id!(NodeId, "node id");

/// A publisher pseudonym's identifier: a hash of its public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublisherId([u8; 32]);
hex_id!(PublisherId, "publisher id");

/// Text that is not 64 hex digits.
#[derive(Error, Debug, Clone, Copy, PartialEq, Eq)]
#[error("a {what} is 64 hex digits")]
pub struct ParseIdError {
    what: &'static str,
}

impl NodeId {
    /// The id of a node with these public keys.
    pub fn derive(ed25519: &VerifyingKey, x25519: &x25519_dalek::PublicKey) -> NodeId {
        NodeId::derive_raw(ed25519.as_bytes(), x25519.as_bytes())
    }

    /// The same derivation from the raw public key bytes (no point
    /// decompression), for ids claimed by not-yet-verified descriptors.
    pub fn derive_raw(ed25519: &[u8; 32], x25519: &[u8; 32]) -> NodeId {
        let mut h = blake3::Hasher::new_derive_key(NODE_ID_CONTEXT);
        h.update(ed25519);
        h.update(x25519);
        NodeId(*h.finalize().as_bytes())
    }
}

impl PublisherId {
    /// The id of a pseudonym with this public key.
    pub fn derive(key: &VerifyingKey) -> PublisherId {
        PublisherId(blake3::derive_key(PUBLISHER_ID_CONTEXT, key.as_bytes()))
    }
}

/// A key file that cannot be loaded. A local fault (corrupt or wrong file).
#[derive(Error, Debug, Clone, PartialEq, Eq)]
pub enum KeyFileError {
    /// The file is malformed (truncated, trailing bytes, unknown version).
    #[error("malformed key file: {0}")]
    Decode(#[from] DecodeError),
    /// The file is the other kind of key file.
    #[error("this is a {found} key file, expected a {expected} key file")]
    WrongKind {
        /// What the caller asked to load.
        expected: &'static str,
        /// What the file holds.
        found: &'static str,
    },
    /// The stored proof of work does not meet its recorded difficulty.
    #[error("stored proof of work is invalid: {0}")]
    BadPow(#[from] PowError),
}

/// Reads magic and version, telling a node file from a pseudonym file.
fn read_key_file_header(
    r: &mut Reader<'_>,
    magic: &[u8; 8],
    expected: &'static str,
) -> Result<(), KeyFileError> {
    let found: [u8; 8] = r.get_array()?;
    if &found != magic {
        let other = match &found {
            m if m == NODE_KEY_MAGIC => Some("node"),
            m if m == PSEUDONYM_KEY_MAGIC => Some("pseudonym"),
            _ => None,
        };
        return Err(match other {
            Some(found) => KeyFileError::WrongKind { expected, found },
            None => DecodeError::BadMagic { expected }.into(),
        });
    }
    let version = r.get_u8()?;
    if version != KEY_FILE_VERSION {
        return Err(DecodeError::UnknownVersion(version).into());
    }
    Ok(())
}

/// A node's secret keys and admission proof.
///
/// Key file format (82 bytes): magic `veil-nkf`, version `1`, ed25519 secret
/// seed (32), x25519 secret (32), the difficulty the proof was made for
/// (1), the proof nonce (8, big-endian).
pub struct NodeIdentity {
    signing: SigningKey,
    x25519: x25519_dalek::StaticSecret,
    pow: Pow,
    params: PowParams,
    id: NodeId,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("id", &self.id)
            .field("pow", &self.pow)
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// New random keys, and a proof of work at `params` (this is the slow
    /// part: see [`PowParams::MAINNET`]).
    pub fn generate(rng: &mut impl CryptoRngCore, params: PowParams) -> Self {
        let mut ed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut *ed);
        let mut x = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut *x);
        let start = rng.next_u64();
        Self::from_keys_with_start(
            SigningKey::from_bytes(&ed),
            x25519_dalek::StaticSecret::from(*x),
            params,
            start,
        )
    }

    /// An identity from given keys; solves the proof of work from nonce 0,
    /// so the result is deterministic (test vectors, the simulator).
    pub fn from_keys(
        signing: SigningKey,
        x25519: x25519_dalek::StaticSecret,
        params: PowParams,
    ) -> Self {
        Self::from_keys_with_start(signing, x25519, params, 0)
    }

    fn from_keys_with_start(
        signing: SigningKey,
        x25519: x25519_dalek::StaticSecret,
        params: PowParams,
        start_nonce: u64,
    ) -> Self {
        let id = NodeId::derive(
            &signing.verifying_key(),
            &x25519_dalek::PublicKey::from(&x25519),
        );
        let pow = pow::solve(PowDomain::Node, id.as_bytes(), params, start_nonce);
        NodeIdentity {
            signing,
            x25519,
            pow,
            params,
            id,
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// The public half, as peers see it.
    pub fn public(&self) -> NodePublic {
        NodePublic {
            ed25519: self.signing.verifying_key(),
            x25519: x25519_dalek::PublicKey::from(&self.x25519),
            pow: self.pow,
        }
    }

    /// The proof of work.
    pub fn pow(&self) -> Pow {
        self.pow
    }

    /// The difficulty the proof was made for.
    pub fn pow_params(&self) -> PowParams {
        self.params
    }

    /// The ed25519 key that signs this node's descriptor.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The x25519 Noise static key.
    pub fn x25519_secret(&self) -> &x25519_dalek::StaticSecret {
        &self.x25519
    }

    /// The key file (see the type's docs). Holds secrets: zeroized on drop.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_capacity(82);
        w.put_bytes(NODE_KEY_MAGIC);
        w.put_u8(KEY_FILE_VERSION);
        w.put_bytes(self.signing.as_bytes());
        w.put_bytes(self.x25519.as_bytes());
        w.put_u8(self.params.difficulty_bits);
        w.put_u64(self.pow.nonce);
        Zeroizing::new(w.into_vec())
    }

    /// Loads a key file: recomputes the id and checks the stored proof
    /// against the difficulty it was made for. (Whether that difficulty is
    /// enough for a given network is [`NodePublic::check_pow`]'s question.)
    pub fn from_bytes(b: &[u8]) -> Result<Self, KeyFileError> {
        let mut r = Reader::new(b);
        read_key_file_header(&mut r, NODE_KEY_MAGIC, "node")?;
        let ed = Zeroizing::new(r.get_array::<32>()?);
        let x = Zeroizing::new(r.get_array::<32>()?);
        let params = PowParams {
            difficulty_bits: r.get_u8()?,
        };
        let pow = Pow {
            nonce: r.get_u64()?,
        };
        r.finish()?;
        let signing = SigningKey::from_bytes(&ed);
        let x25519 = x25519_dalek::StaticSecret::from(*x);
        let id = NodeId::derive(
            &signing.verifying_key(),
            &x25519_dalek::PublicKey::from(&x25519),
        );
        pow::verify(PowDomain::Node, id.as_bytes(), pow, params)?;
        Ok(NodeIdentity {
            signing,
            x25519,
            pow,
            params,
            id,
        })
    }
}

/// A node's public keys and admission proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePublic {
    /// Signs the node's descriptor.
    pub ed25519: VerifyingKey,
    /// The Noise static key.
    pub x25519: x25519_dalek::PublicKey,
    /// Proof of work over the node id.
    pub pow: Pow,
}

impl NodePublic {
    /// Encoded length: two keys and a nonce.
    pub const ENCODED_LEN: usize = 32 + 32 + 8;

    /// The node id these keys hash to.
    pub fn node_id(&self) -> NodeId {
        NodeId::derive(&self.ed25519, &self.x25519)
    }

    /// Whether the proof of work admits this node at `params`.
    pub fn check_pow(&self, params: PowParams) -> Result<(), PowError> {
        pow::verify(PowDomain::Node, self.node_id().as_bytes(), self.pow, params)
    }

    /// Writes ed25519 key, x25519 key, nonce.
    pub fn encode(&self, w: &mut Writer) {
        w.put_bytes(self.ed25519.as_bytes());
        w.put_bytes(self.x25519.as_bytes());
        w.put_u64(self.pow.nonce);
    }

    /// Reads what [`encode`](Self::encode) wrote. Rejects an ed25519 key
    /// that is not a valid point; the proof is *not* checked here.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let ed25519 =
            VerifyingKey::from_bytes(&r.get_array()?).map_err(|_| DecodeError::BadValue {
                field: "node ed25519 key",
                reason: "not a valid ed25519 point",
            })?;
        let x25519 = x25519_dalek::PublicKey::from(r.get_array::<32>()?);
        let pow = Pow {
            nonce: r.get_u64()?,
        };
        Ok(NodePublic {
            ed25519,
            x25519,
            pow,
        })
    }
}

/// A publisher pseudonym: a separate ed25519 key that signs records, never
/// a node key.
///
/// Key file format (50 bytes): magic `veil-pkf`, version `1`, ed25519 secret
/// seed (32), the difficulty the proof was made for (1), the proof nonce (8).
pub struct Pseudonym {
    signing: SigningKey,
    pow: Pow,
    params: PowParams,
}

impl fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pseudonym")
            .field("id", &self.publisher().id())
            .field("pow", &self.pow)
            .finish_non_exhaustive()
    }
}

impl Pseudonym {
    /// A new random pseudonym with a proof of work at `params`.
    pub fn generate(rng: &mut impl CryptoRngCore, params: PowParams) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut *seed);
        let start = rng.next_u64();
        Self::from_key_with_start(SigningKey::from_bytes(&seed), params, start)
    }

    /// A pseudonym from a given key; solves the proof from nonce 0
    /// (deterministic: test vectors, the simulator).
    pub fn from_key(signing: SigningKey, params: PowParams) -> Self {
        Self::from_key_with_start(signing, params, 0)
    }

    fn from_key_with_start(signing: SigningKey, params: PowParams, start_nonce: u64) -> Self {
        let id = PublisherId::derive(&signing.verifying_key());
        let pow = pow::solve(PowDomain::Publisher, id.as_bytes(), params, start_nonce);
        Pseudonym {
            signing,
            pow,
            params,
        }
    }

    /// The public key and proof that go into every signed record.
    pub fn publisher(&self) -> PublisherKey {
        PublisherKey {
            key: self.signing.verifying_key(),
            pow: self.pow,
        }
    }

    /// The signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The difficulty the proof was made for.
    pub fn pow_params(&self) -> PowParams {
        self.params
    }

    /// The key file (see the type's docs). Holds a secret: zeroized on drop.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_capacity(50);
        w.put_bytes(PSEUDONYM_KEY_MAGIC);
        w.put_u8(KEY_FILE_VERSION);
        w.put_bytes(self.signing.as_bytes());
        w.put_u8(self.params.difficulty_bits);
        w.put_u64(self.pow.nonce);
        Zeroizing::new(w.into_vec())
    }

    /// Loads a key file, re-checking the stored proof against its recorded
    /// difficulty.
    pub fn from_bytes(b: &[u8]) -> Result<Self, KeyFileError> {
        let mut r = Reader::new(b);
        read_key_file_header(&mut r, PSEUDONYM_KEY_MAGIC, "pseudonym")?;
        let seed = Zeroizing::new(r.get_array::<32>()?);
        let params = PowParams {
            difficulty_bits: r.get_u8()?,
        };
        let pow = Pow {
            nonce: r.get_u64()?,
        };
        r.finish()?;
        let signing = SigningKey::from_bytes(&seed);
        let id = PublisherId::derive(&signing.verifying_key());
        pow::verify(PowDomain::Publisher, id.as_bytes(), pow, params)?;
        Ok(Pseudonym {
            signing,
            pow,
            params,
        })
    }
}

/// A publisher's public key and admission proof, as carried in records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublisherKey {
    /// Verifies the publisher's records.
    pub key: VerifyingKey,
    /// Proof of work over the publisher id.
    pub pow: Pow,
}

impl PublisherKey {
    /// The publisher id.
    pub fn id(&self) -> PublisherId {
        PublisherId::derive(&self.key)
    }

    /// Whether the proof of work admits this publisher at `params`.
    pub fn check_pow(&self, params: PowParams) -> Result<(), PowError> {
        pow::verify(PowDomain::Publisher, self.id().as_bytes(), self.pow, params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn fixed_node() -> NodeIdentity {
        NodeIdentity::from_keys(
            SigningKey::from_bytes(&[7u8; 32]),
            x25519_dalek::StaticSecret::from([9u8; 32]),
            PowParams::TESTNET,
        )
    }

    /// Committed vector: the node id of the keys from seeds `[7; 32]`
    /// (ed25519) and `[9; 32]` (x25519), and its TESTNET proof.
    const VECTOR_ED25519_PUB: &str =
        "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";
    const VECTOR_X25519_PUB: &str =
        "57db4b359f23ae5e146e4e2512056704722506348c150c14753d0c933d04d421";
    const VECTOR_NODE_ID: &str = "108872c534e73af64455366e322a10091a5b85fdd90d772d0b8d64fc2467bd1e";
    const VECTOR_NODE_NONCE: u64 = 363;

    #[test]
    fn node_id_vector() {
        let node = fixed_node();
        let public = node.public();
        assert_eq!(hex::encode(public.ed25519.as_bytes()), VECTOR_ED25519_PUB);
        assert_eq!(hex::encode(public.x25519.as_bytes()), VECTOR_X25519_PUB);
        // The reference definition with blake3's one-shot API.
        let mut material = Vec::new();
        material.extend_from_slice(&hex::decode(VECTOR_ED25519_PUB).unwrap());
        material.extend_from_slice(&hex::decode(VECTOR_X25519_PUB).unwrap());
        let reference = blake3::derive_key("veil 2025 node-id v1", &material);
        assert_eq!(node.node_id().as_bytes(), &reference);
        assert_eq!(node.node_id().to_string(), VECTOR_NODE_ID);
        assert_eq!(public.node_id(), node.node_id());
        assert_eq!(
            node.pow(),
            Pow {
                nonce: VECTOR_NODE_NONCE
            }
        );
        assert_eq!(public.check_pow(PowParams::TESTNET), Ok(()));
    }

    #[test]
    fn id_text_forms() {
        let id = fixed_node().node_id();
        let s = id.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s, s.to_lowercase());
        assert_eq!(s.parse::<NodeId>(), Ok(id));
        assert_eq!(s.to_uppercase().parse::<NodeId>(), Ok(id));
        assert_eq!(format!("{id:?}"), format!("NodeId({s})"));
        assert!("abc".parse::<NodeId>().is_err());
        assert!(format!("{s}00").parse::<NodeId>().is_err());
        assert!("g".repeat(64).parse::<NodeId>().is_err());
        assert_eq!(NodeId::from_bytes(*id.as_bytes()), id);
        let pid = PublisherId::from_bytes([0xab; 32]);
        assert_eq!(pid.to_string().parse::<PublisherId>(), Ok(pid));
    }

    #[test]
    fn node_key_file_round_trip() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let node = NodeIdentity::generate(&mut rng, PowParams::TESTNET);
        let bytes = node.to_bytes();
        assert_eq!(bytes.len(), 82);
        let back = NodeIdentity::from_bytes(&bytes).unwrap();
        assert_eq!(back.node_id(), node.node_id());
        assert_eq!(back.public(), node.public());
        assert_eq!(back.pow_params(), PowParams::TESTNET);
        assert_eq!(back.signing_key().as_bytes(), node.signing_key().as_bytes());
        assert_eq!(
            back.x25519_secret().as_bytes(),
            node.x25519_secret().as_bytes()
        );
        assert_eq!(*back.to_bytes(), *bytes);
    }

    #[test]
    fn debug_prints_no_secrets() {
        let node = fixed_node();
        let secret_hex = hex::encode([7u8; 32]);
        for text in [
            format!("{node:?}"),
            format!(
                "{:?}",
                Pseudonym::from_key(SigningKey::from_bytes(&[7u8; 32]), PowParams::TESTNET)
            ),
        ] {
            assert!(!text.contains(&secret_hex), "{text}");
            assert!(!text.contains("[7, 7"), "{text}");
        }
        let x_hex = hex::encode([9u8; 32]);
        assert!(!format!("{node:?}").contains(&x_hex));
    }

    #[test]
    fn bad_node_key_files() {
        let node = fixed_node();
        let good = node.to_bytes().to_vec();

        let mut bad_version = good.clone();
        bad_version[8] = 2;
        assert_eq!(
            NodeIdentity::from_bytes(&bad_version).unwrap_err(),
            KeyFileError::Decode(DecodeError::UnknownVersion(2))
        );

        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            NodeIdentity::from_bytes(&trailing).unwrap_err(),
            KeyFileError::Decode(DecodeError::TrailingBytes { count: 1 })
        );
        for len in 0..good.len() {
            assert!(NodeIdentity::from_bytes(&good[..len]).is_err());
        }

        let mut bad_magic = good.clone();
        bad_magic[0] ^= 1;
        assert_eq!(
            NodeIdentity::from_bytes(&bad_magic).unwrap_err(),
            KeyFileError::Decode(DecodeError::BadMagic { expected: "node" })
        );

        // Raising the recorded difficulty beyond what the nonce achieves,
        // or swapping a key under the proof, invalidates the file.
        let achieved = pow::work_bits(PowDomain::Node, node.node_id().as_bytes(), node.pow());
        let mut harder = good.clone();
        harder[73] = u8::try_from(achieved + 1).unwrap();
        assert!(matches!(
            NodeIdentity::from_bytes(&harder),
            Err(KeyFileError::BadPow(_))
        ));
        let mut other_key = good.clone();
        other_key[9] ^= 1;
        other_key[73] = 16;
        assert!(matches!(
            NodeIdentity::from_bytes(&other_key),
            Err(KeyFileError::BadPow(_))
        ));
    }

    #[test]
    fn pseudonym_key_file_round_trip_and_kinds_do_not_mix() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let pseudo = Pseudonym::generate(&mut rng, PowParams::TESTNET);
        let bytes = pseudo.to_bytes();
        assert_eq!(bytes.len(), 50);
        let back = Pseudonym::from_bytes(&bytes).unwrap();
        assert_eq!(back.publisher(), pseudo.publisher());
        assert_eq!(back.pow_params(), PowParams::TESTNET);
        assert_eq!(back.publisher().check_pow(PowParams::TESTNET), Ok(()));

        assert_eq!(
            NodeIdentity::from_bytes(&bytes).unwrap_err(),
            KeyFileError::WrongKind {
                expected: "node",
                found: "pseudonym"
            }
        );
        let node = NodeIdentity::generate(&mut rng, PowParams::TESTNET);
        assert_eq!(
            Pseudonym::from_bytes(&node.to_bytes()).unwrap_err(),
            KeyFileError::WrongKind {
                expected: "pseudonym",
                found: "node"
            }
        );
    }

    #[test]
    fn node_and_publisher_ids_are_domain_separated() {
        // The same ed25519 key gives unrelated ids and proofs in the two
        // roles, so a node's work cannot admit a pseudonym.
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let pseudo = Pseudonym::from_key(key.clone(), PowParams::TESTNET);
        let node = fixed_node();
        assert_ne!(
            pseudo.publisher().id().as_bytes(),
            node.node_id().as_bytes()
        );
        assert_eq!(
            pseudo.publisher().id().as_bytes(),
            &blake3::derive_key("veil 2025 publisher-id v1", key.verifying_key().as_bytes())
        );
        let strong = PowParams {
            difficulty_bits: 12,
        };
        let node_pow = pow::solve(
            PowDomain::Node,
            pseudo.publisher().id().as_bytes(),
            strong,
            0,
        );
        let forged = PublisherKey {
            key: key.verifying_key(),
            pow: node_pow,
        };
        assert!(forged.check_pow(strong).is_err());
    }

    #[test]
    fn node_public_codec() {
        let public = fixed_node().public();
        let mut w = Writer::new();
        public.encode(&mut w);
        let bytes = w.into_vec();
        assert_eq!(bytes.len(), NodePublic::ENCODED_LEN);
        let mut r = Reader::new(&bytes);
        assert_eq!(NodePublic::decode(&mut r), Ok(public));
        assert_eq!(r.finish(), Ok(()));
        assert!(NodePublic::decode(&mut Reader::new(&bytes[..71])).is_err());
    }
}
