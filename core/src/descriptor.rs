//! Signed node descriptors: what a node says about itself to the overlay.
//!
//! A descriptor carries the node's public keys and their proof of work, its
//! role (relay or client-only), the address it listens on, a timestamp and
//! room for extensions, all signed by the node's ed25519 key. It is gossiped
//! by peer sampling and later used to pick circuit hops.
//!
//! Security argument:
//! - **Keys bind the id.** The node id is derived from the two public keys,
//!   and the proof of work is on that id, so a descriptor cannot claim another
//!   node's id, and each id costs work.
//! - **The address is a claim, not a fact.** Nothing here proves that the
//!   node is reachable at `address`; the node state machine grants a claimed
//!   address one rate-limited handshake to the claimed id and uses it for
//!   nothing else until that handshake succeeds (so descriptors cannot aim
//!   traffic at a victim).
//! - **Fresh and bounded.** A descriptor is `Unchecked` until its signature,
//!   PoW, bounds and timestamp (not more than [`MAX_CLOCK_SKEW_MS`] in the
//!   future, not older than the caller's maximum age) are checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ed25519_dalek::{Signature, Signer, VerifyingKey};
use thiserror::Error;

use crate::identity::{NodeId, NodeIdentity, NodePublic};
use crate::pow::{Pow, PowDomain, PowError, PowParams};
use crate::record::Unchecked;
use crate::wire::{DecodeError, Reader, Writer};

/// Format version of descriptors.
pub const DESCRIPTOR_VERSION: u8 = 1;
/// Domain separation for descriptor signatures.
pub const DESCRIPTOR_SIGNATURE_CONTEXT: &[u8] = b"veil descriptor v1 signature\0";
/// Most extension bytes a descriptor may carry.
pub const MAX_EXTENSION_BYTES: usize = 256;
/// Largest encoded descriptor.
pub const MAX_DESCRIPTOR_BYTES: usize =
    2 + NodePublic::ENCODED_LEN + 1 + 16 + 2 + 8 + 2 + MAX_EXTENSION_BYTES + 64;
/// A descriptor may be stamped at most this far in the future.
pub const MAX_CLOCK_SKEW_MS: u64 = 10 * 60 * 1000;

/// Capability flags.
pub mod flags {
    /// The node relays for others (it may be picked as a circuit hop).
    pub const RELAY: u8 = 0b0000_0001;
    /// Flags this version understands; others must be zero.
    pub const KNOWN: u8 = RELAY;
}

/// The fields of a descriptor as they travel, public keys still raw bytes.
/// Only reachable wrapped in [`Unchecked`] (from the wire) or inside a
/// verified [`Descriptor`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawDescriptor {
    ed25519: [u8; 32],
    x25519: [u8; 32],
    pow: Pow,
    flags: u8,
    address: Option<SocketAddr>,
    timestamp_ms: u64,
    extensions: Vec<u8>,
    signature: Signature,
}

/// A descriptor from the wire, not yet checked.
pub type UncheckedDescriptor = Unchecked<RawDescriptor>;

/// A gossiped descriptor whose *identity* is admitted (fresh, well formed,
/// its node id carries the network's proof of work) but whose signature has
/// not been checked yet. The id can be fed to peer sampling: ids are bound
/// to keys and work, so nobody can mint them without paying. The claimed
/// address, flags and timestamp are not trusted until [`Admitted::verify`]
/// succeeds; a node verifies lazily, only the descriptors it uses (to dial,
/// to pick as a hop). Verifying every gossiped descriptor on receipt would
/// cost each node one signature check per network member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted(std::sync::Arc<RawDescriptor>);

impl Admitted {
    /// The node id (admitted: its proof of work was checked).
    pub fn node_id(&self) -> NodeId {
        self.0.claimed_id()
    }

    /// The claimed timestamp (unverified).
    pub fn timestamp_ms(&self) -> u64 {
        self.0.timestamp_ms
    }

    /// The claimed relay flag (unverified).
    pub fn claims_relay(&self) -> bool {
        self.0.flags & flags::RELAY != 0
    }

    /// The claimed address (unverified).
    pub fn claimed_address(&self) -> Option<SocketAddr> {
        self.0.address
    }

    /// Append the wire encoding (for forwarding in pull replies).
    pub fn encode(&self, w: &mut Writer) {
        self.0.encode(w);
    }

    /// Check the signature.
    pub fn verify(&self) -> Result<Descriptor, DescriptorError> {
        let key =
            VerifyingKey::from_bytes(&self.0.ed25519).map_err(|_| DescriptorError::BadSignature)?;
        key.verify_strict(&self.0.signed_message(), &self.0.signature)
            .map_err(|_| DescriptorError::BadSignature)?;
        Ok(Descriptor {
            raw: RawDescriptor::clone(&self.0),
            key,
        })
    }

    /// Whether this is exactly the verified descriptor `d`.
    pub fn is(&self, d: &Descriptor) -> bool {
        *self.0 == d.raw
    }
}

/// A node's signed self-description, verified (or made by ourselves).
#[derive(Clone, Debug)]
pub struct Descriptor {
    raw: RawDescriptor,
    /// The decompressed ed25519 key (derived from `raw.ed25519`).
    key: VerifyingKey,
}

impl PartialEq for Descriptor {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl Eq for Descriptor {}

/// Why a descriptor was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DescriptorError {
    /// The bytes do not parse.
    #[error("malformed descriptor: {0}")]
    Decode(#[from] DecodeError),
    /// The signature does not verify.
    #[error("descriptor signature does not verify")]
    BadSignature,
    /// The node id lacks the network's proof of work.
    #[error("descriptor proof of work: {0}")]
    BadPow(#[from] PowError),
    /// Stamped too far in the future.
    #[error("descriptor stamped {ahead_ms} ms in the future")]
    FromTheFuture {
        /// How far ahead of `now`.
        ahead_ms: u64,
    },
    /// Older than the caller accepts.
    #[error("descriptor is {age_ms} ms old")]
    Stale {
        /// Its age at `now`.
        age_ms: u64,
    },
    /// A relay must say where it listens.
    #[error("a relay descriptor has no address")]
    RelayWithoutAddress,
}

impl Descriptor {
    /// Build and sign a descriptor for `identity`.
    pub fn sign(
        identity: &NodeIdentity,
        flags: u8,
        address: Option<SocketAddr>,
        timestamp_ms: u64,
        extensions: Vec<u8>,
    ) -> Descriptor {
        let mut extensions = extensions;
        extensions.truncate(MAX_EXTENSION_BYTES);
        let public = identity.public();
        let mut raw = RawDescriptor {
            ed25519: public.ed25519.to_bytes(),
            x25519: public.x25519.to_bytes(),
            pow: public.pow,
            flags: flags & flags::KNOWN,
            address,
            timestamp_ms,
            extensions,
            signature: Signature::from_bytes(&[0; 64]),
        };
        let msg = raw.signed_message();
        raw.signature = identity.signing_key().sign(&msg);
        Descriptor {
            raw,
            key: public.ed25519,
        }
    }

    /// The node id.
    pub fn node_id(&self) -> NodeId {
        self.raw.claimed_id()
    }

    /// The node's public keys.
    pub fn public(&self) -> NodePublic {
        NodePublic {
            ed25519: self.key,
            x25519: x25519_dalek::PublicKey::from(self.raw.x25519),
            pow: self.raw.pow,
        }
    }

    /// The node's x25519 (Noise static) public key.
    pub fn x25519(&self) -> &[u8; 32] {
        &self.raw.x25519
    }

    /// Whether the node relays for others.
    pub fn is_relay(&self) -> bool {
        self.raw.flags & flags::RELAY != 0
    }

    /// Capability flags.
    pub fn flags(&self) -> u8 {
        self.raw.flags
    }

    /// The claimed listening address (unverified until reached there).
    pub fn address(&self) -> Option<SocketAddr> {
        self.raw.address
    }

    /// When it was signed (Unix milliseconds).
    pub fn timestamp_ms(&self) -> u64 {
        self.raw.timestamp_ms
    }

    /// Extension bytes (opaque to this version).
    pub fn extensions(&self) -> &[u8] {
        &self.raw.extensions
    }

    /// Append the canonical encoding to `w`.
    pub fn encode(&self, w: &mut Writer) {
        self.raw.encode(w);
    }

    /// The same descriptor as an [`Admitted`] one (for forwarding).
    pub fn admitted(&self) -> Admitted {
        Admitted(std::sync::Arc::new(self.raw.clone()))
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(MAX_DESCRIPTOR_BYTES);
        self.encode(&mut w);
        w.into_vec()
    }

    /// Read one descriptor from `r` (which may hold more after it).
    pub fn decode_from(r: &mut Reader<'_>) -> Result<UncheckedDescriptor, DecodeError> {
        let version = r.get_u8()?;
        if version != DESCRIPTOR_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let flags = r.get_u8()?;
        if flags & !flags::KNOWN != 0 {
            return Err(DecodeError::BadValue {
                field: "descriptor flags",
                reason: "unknown flag bits set",
            });
        }
        let ed25519 = r.get_array::<32>()?;
        let x25519 = r.get_array::<32>()?;
        let pow = Pow {
            nonce: r.get_u64()?,
        };
        let address = match r.get_u8()? {
            0 => None,
            4 => {
                let ip = Ipv4Addr::from(r.get_array::<4>()?);
                Some(SocketAddr::new(IpAddr::V4(ip), r.get_u16()?))
            }
            6 => {
                let ip = Ipv6Addr::from(r.get_array::<16>()?);
                Some(SocketAddr::new(IpAddr::V6(ip), r.get_u16()?))
            }
            _ => {
                return Err(DecodeError::BadValue {
                    field: "descriptor address family",
                    reason: "not 0, 4 or 6",
                });
            }
        };
        let timestamp_ms = r.get_u64()?;
        let extensions = r
            .get_bytes_u16len(MAX_EXTENSION_BYTES, "descriptor extensions")?
            .to_vec();
        let signature = Signature::from_bytes(&r.get_array::<64>()?);
        Ok(Unchecked::new(RawDescriptor {
            ed25519,
            x25519,
            pow,
            flags,
            address,
            timestamp_ms,
            extensions,
            signature,
        }))
    }

    /// Decode exactly one descriptor.
    pub fn decode(bytes: &[u8]) -> Result<UncheckedDescriptor, DecodeError> {
        if bytes.len() > MAX_DESCRIPTOR_BYTES {
            return Err(DecodeError::TooLong {
                field: "descriptor",
                len: bytes.len(),
                max: MAX_DESCRIPTOR_BYTES,
            });
        }
        let mut r = Reader::new(bytes);
        let d = Descriptor::decode_from(&mut r)?;
        r.finish()?;
        Ok(d)
    }
}

impl RawDescriptor {
    /// Everything but the signature: freshness, role, proof of work, and a
    /// decodable key (returned, for the signature check).
    fn precheck(
        &self,
        now_ms: u64,
        max_age_ms: u64,
        pow: PowParams,
    ) -> Result<VerifyingKey, DescriptorError> {
        self.admit_checks(now_ms, max_age_ms, pow)?;
        VerifyingKey::from_bytes(&self.ed25519).map_err(|_| DescriptorError::BadSignature)
    }

    /// Freshness, role and proof of work: no curve arithmetic.
    fn admit_checks(
        &self,
        now_ms: u64,
        max_age_ms: u64,
        pow: PowParams,
    ) -> Result<(), DescriptorError> {
        if self.timestamp_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(DescriptorError::FromTheFuture {
                ahead_ms: self.timestamp_ms - now_ms,
            });
        }
        let age_ms = now_ms.saturating_sub(self.timestamp_ms);
        if age_ms > max_age_ms {
            return Err(DescriptorError::Stale { age_ms });
        }
        if self.flags & flags::RELAY != 0 && self.address.is_none() {
            return Err(DescriptorError::RelayWithoutAddress);
        }
        crate::pow::verify(PowDomain::Node, self.claimed_id().as_bytes(), self.pow, pow)?;
        Ok(())
    }

    /// The id the keys in these fields derive to.
    fn claimed_id(&self) -> NodeId {
        NodeId::derive_raw(&self.ed25519, &self.x25519)
    }

    fn encode_body(&self, w: &mut Writer) {
        w.put_u8(DESCRIPTOR_VERSION);
        w.put_u8(self.flags);
        w.put_bytes(&self.ed25519);
        w.put_bytes(&self.x25519);
        w.put_u64(self.pow.nonce);
        match self.address {
            None => w.put_u8(0),
            Some(SocketAddr::V4(a)) => {
                w.put_u8(4);
                w.put_bytes(&a.ip().octets());
                w.put_u16(a.port());
            }
            Some(SocketAddr::V6(a)) => {
                w.put_u8(6);
                w.put_bytes(&a.ip().octets());
                w.put_u16(a.port());
            }
        }
        w.put_u64(self.timestamp_ms);
        // Bounded at construction and at decode, so this cannot fail.
        let _ = w.put_bytes_u16len(&self.extensions);
    }

    fn signed_message(&self) -> Vec<u8> {
        let mut w =
            Writer::with_capacity(MAX_DESCRIPTOR_BYTES + DESCRIPTOR_SIGNATURE_CONTEXT.len());
        w.put_bytes(DESCRIPTOR_SIGNATURE_CONTEXT);
        self.encode_body(&mut w);
        w.into_vec()
    }

    fn encode(&self, w: &mut Writer) {
        self.encode_body(w);
        w.put_bytes(&self.signature.to_bytes());
    }
}

impl Unchecked<RawDescriptor> {
    /// Check timestamp window (cheap), proof of work, then the signature.
    /// `max_age_ms` bounds how old a descriptor may be at `now_ms`.
    pub fn check(
        self,
        now_ms: u64,
        max_age_ms: u64,
        pow: PowParams,
    ) -> Result<Descriptor, DescriptorError> {
        let d = self.into_inner();
        let key = d.precheck(now_ms, max_age_ms, pow)?;
        key.verify_strict(&d.signed_message(), &d.signature)
            .map_err(|_| DescriptorError::BadSignature)?;
        Ok(Descriptor { raw: d, key })
    }

    /// Admit the identity without checking the signature: freshness, role,
    /// proof of work. See [`Admitted`].
    pub fn admit(
        self,
        now_ms: u64,
        max_age_ms: u64,
        pow: PowParams,
    ) -> Result<Admitted, DescriptorError> {
        let d = self.into_inner();
        d.admit_checks(now_ms, max_age_ms, pow)?;
        Ok(Admitted(std::sync::Arc::new(d)))
    }

    /// Whether this is byte-for-byte the admitted descriptor `a` (then its
    /// proof of work was already checked and only freshness matters).
    pub fn same_as(&self, a: &Admitted) -> bool {
        *self.inner_ref() == *a.0
    }

    /// Check against a descriptor verified earlier: if this one is
    /// byte-for-byte the same (same signature over the same fields), only
    /// its freshness needs checking again. Returns `None` if it differs, in
    /// which case the caller runs the full [`Self::check`].
    pub fn check_against_verified(
        &self,
        verified: &Descriptor,
        now_ms: u64,
        max_age_ms: u64,
    ) -> Option<Result<Descriptor, DescriptorError>> {
        let d = self.inner_ref();
        if *d != verified.raw {
            return None;
        }
        if d.timestamp_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Some(Err(DescriptorError::FromTheFuture {
                ahead_ms: d.timestamp_ms - now_ms,
            }));
        }
        let age_ms = now_ms.saturating_sub(d.timestamp_ms);
        if age_ms > max_age_ms {
            return Some(Err(DescriptorError::Stale { age_ms }));
        }
        Some(Ok(verified.clone()))
    }

    /// The id this descriptor claims (unverified: derived from the keys it
    /// carries, not yet proven by the signature).
    pub fn claimed_id(&self) -> NodeId {
        self.inner_ref().claimed_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use x25519_dalek::StaticSecret;

    const NOW: u64 = 1_800_000_000_000;
    const DAY: u64 = 24 * 3600 * 1000;

    fn identity(seed: u8) -> NodeIdentity {
        NodeIdentity::from_keys(
            SigningKey::from_bytes(&[seed; 32]),
            StaticSecret::from([seed.wrapping_add(1); 32]),
            PowParams::TESTNET,
        )
    }

    fn addr() -> SocketAddr {
        "127.3.0.1:4433".parse().unwrap()
    }

    #[test]
    fn round_trip_and_check() {
        let id = identity(3);
        let d = Descriptor::sign(&id, flags::RELAY, Some(addr()), NOW, vec![1, 2]);
        let bytes = d.to_bytes();
        let back = Descriptor::decode(&bytes)
            .unwrap()
            .check(NOW, DAY, PowParams::TESTNET)
            .unwrap();
        assert_eq!(back, d);
        assert_eq!(back.node_id(), id.node_id());
        assert!(back.is_relay());
        assert_eq!(back.address(), Some(addr()));
        let v6 = Descriptor::sign(&id, 0, Some("[::1]:9".parse().unwrap()), NOW, vec![]);
        let back = Descriptor::decode(&v6.to_bytes())
            .unwrap()
            .check(NOW, DAY, PowParams::TESTNET)
            .unwrap();
        assert!(!back.is_relay());
    }

    #[test]
    fn hex_vector() {
        let d = Descriptor::sign(&identity(7), flags::RELAY, Some(addr()), NOW, vec![]);
        let hex = hex::encode(d.to_bytes());
        assert_eq!(hex, VECTOR);
        let back = Descriptor::decode(&hex::decode(VECTOR).unwrap()).unwrap();
        back.check(NOW, DAY, PowParams::TESTNET).unwrap();
    }

    const VECTOR: &str = "0101ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c31d4ab6aceec961137917037936e60716fac573afe94d9da84a8020448dfc1120000000000000198047f0300011151000001a3185c5000000027cb38c2fea019cc37eed857b245d1d0388912064ca5b238c80914b691cd43a38a2589425483b9bc1311c86acab07c8ec913dc9ee2ed01e704751cd7b96a8d0e";

    #[test]
    fn every_flipped_byte_is_refused() {
        let d = Descriptor::sign(&identity(5), flags::RELAY, Some(addr()), NOW, vec![9; 3]);
        let bytes = d.to_bytes();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= bit;
                let ok = Descriptor::decode(&b)
                    .map_err(DescriptorError::from)
                    .and_then(|u| u.check(NOW, DAY, PowParams::TESTNET));
                assert!(ok.is_err(), "flip at {i} accepted");
            }
        }
    }

    #[test]
    fn time_window_and_pow_are_enforced() {
        let d = Descriptor::sign(&identity(5), flags::RELAY, Some(addr()), NOW, vec![]);
        let b = d.to_bytes();
        let u = || Descriptor::decode(&b).unwrap();
        assert!(matches!(
            u().check(NOW - MAX_CLOCK_SKEW_MS - 1, DAY, PowParams::TESTNET),
            Err(DescriptorError::FromTheFuture { .. })
        ));
        assert!(matches!(
            u().check(NOW + DAY + 1, DAY, PowParams::TESTNET),
            Err(DescriptorError::Stale { .. })
        ));
        let harder = PowParams {
            difficulty_bits: 30,
        };
        assert!(matches!(
            u().check(NOW, DAY, harder),
            Err(DescriptorError::BadPow(_))
        ));
        let relay_no_addr = Descriptor::sign(&identity(5), flags::RELAY, None, NOW, vec![]);
        assert_eq!(
            Descriptor::decode(&relay_no_addr.to_bytes())
                .unwrap()
                .check(NOW, DAY, PowParams::TESTNET),
            Err(DescriptorError::RelayWithoutAddress)
        );
    }

    #[test]
    fn bounded_decoding() {
        assert!(Descriptor::decode(&[]).is_err());
        assert!(Descriptor::decode(&vec![1u8; MAX_DESCRIPTOR_BYTES + 1]).is_err());
        let d = Descriptor::sign(&identity(5), 0, None, NOW, vec![]);
        let mut b = d.to_bytes();
        b.push(0);
        assert!(matches!(
            Descriptor::decode(&b),
            Err(DecodeError::TrailingBytes { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = Descriptor::decode(&bytes).map(|u| u.check(NOW, DAY, PowParams::TESTNET));
        }
    }
}
