//! Provider records (record kind 2): which service serves a content id, and
//! where a downloader introduces itself to it.
//!
//! A sharer signs one provider record per shared file with its service key
//! ([`crate::rendezvous::ServiceKey`]), never with the pseudonym that signs
//! its content records and never with its node key, so a provider record
//! links a content id to a service and nothing else. Provider records
//! travel and are stored like content records (same publication path, same
//! index holders, the service pseudonym counted as their publisher), and a
//! search for an exact content id returns them with the content records.
//!
//! Security argument, as for content records ([`crate::record`]): the
//! service pseudonym signs [`crate::record::SIGNATURE_CONTEXT`] and every
//! byte before the signature (the kind byte included, so a provider
//! signature is never a content signature); `verify_strict`; strict
//! decoding (one encoding per record); proof of work on the service
//! pseudonym; a validity window of at most [`MAX_PROVIDER_LIFETIME_SECS`],
//! short because introduction points change. The introduction points are
//! signed relay descriptors: a downloader checks each one (signature, proof
//! of work, freshness) before building a circuit to it, as for an EXTEND.
//!
//! Encoding (version 1, kind 2), integers big-endian:
//!
//! ```text
//! u8 version = 1 | u8 kind = 2
//! [32] service ed25519 key | u64 service pow nonce
//! [32] content id
//! [32] service x25519 key (the static key of the end-to-end handshake)
//! u8 count (1..=3), then count × (u16 len, signed descriptor)
//! u64 created | u64 expires            (Unix seconds)
//! [64] ed25519 signature over SIGNATURE_CONTEXT || all bytes above
//! ```

use ed25519_dalek::Signature;

use crate::content::ContentId;
use crate::descriptor::MAX_DESCRIPTOR_BYTES;
use crate::identity::PublisherKey;
use crate::pow::PowParams;
use crate::record::{
    RECORD_VERSION, RecordError, RecordKind, SIGNATURE_BYTES, Unchecked, check_signed,
    decode_header, signed_message,
};
use crate::rendezvous::{ServiceKey, ServicePublic};
use crate::wire::{DecodeError, Reader, Writer};

/// Most introduction points one provider record names.
pub const MAX_INTRO_POINTS: usize = 3;
/// Longest validity window of a provider record.
pub const MAX_PROVIDER_LIFETIME_SECS: u64 = 6 * 3600;
/// Largest encoded provider record.
pub const MAX_PROVIDER_BYTES: usize =
    2 + 32 + 8 + 32 + 32 + 1 + MAX_INTRO_POINTS * (2 + MAX_DESCRIPTOR_BYTES) + 16 + SIGNATURE_BYTES;

const _: () = assert!(MAX_PROVIDER_BYTES + 64 <= crate::search::MAX_SEARCH_BYTES);

/// What a service says about one content id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderRecord {
    /// The content it serves.
    pub content_id: ContentId,
    /// The service's x25519 key.
    pub x25519: [u8; 32],
    /// Signed descriptors of its introduction points (1 to
    /// [`MAX_INTRO_POINTS`]).
    pub intro_points: Vec<Vec<u8>>,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Expiry, Unix seconds; after `created`, by at most
    /// [`MAX_PROVIDER_LIFETIME_SECS`].
    pub expires: u64,
}

impl ProviderRecord {
    /// Checks the bounds and the validity window's shape.
    pub fn validate(&self) -> Result<(), RecordError> {
        if self.intro_points.is_empty() {
            return Err(RecordError::Empty {
                field: "intro points",
            });
        }
        if self.intro_points.len() > MAX_INTRO_POINTS {
            return Err(RecordError::FieldTooLong {
                field: "intro points",
                len: self.intro_points.len(),
                max: MAX_INTRO_POINTS,
            });
        }
        for d in &self.intro_points {
            if d.is_empty() || d.len() > MAX_DESCRIPTOR_BYTES {
                return Err(RecordError::FieldTooLong {
                    field: "intro point descriptor",
                    len: d.len(),
                    max: MAX_DESCRIPTOR_BYTES,
                });
            }
        }
        let lifetime = self
            .expires
            .checked_sub(self.created)
            .filter(|&l| l > 0)
            .ok_or(RecordError::ExpiresBeforeCreated {
                created: self.created,
                expires: self.expires,
            })?;
        if lifetime > MAX_PROVIDER_LIFETIME_SECS {
            return Err(RecordError::LifetimeTooLong {
                lifetime,
                max: MAX_PROVIDER_LIFETIME_SECS,
            });
        }
        Ok(())
    }

    /// Validates the record, then signs it with the service's pseudonym.
    /// The record's x25519 key must be the service's.
    pub fn sign(&self, service: &ServiceKey) -> Result<SignedProvider, RecordError> {
        self.validate()?;
        let public = service.public();
        if public.x25519 != self.x25519 {
            return Err(RecordError::NotCanonical {
                field: "x25519",
                reason: "not the signing service's key",
            });
        }
        let mut w = Writer::with_capacity(MAX_PROVIDER_BYTES);
        w.put_u8(RECORD_VERSION);
        w.put_u8(RecordKind::Provider.as_u8());
        w.put_bytes(public.key.key.as_bytes());
        w.put_u64(public.key.pow.nonce);
        w.put_bytes(self.content_id.as_bytes());
        w.put_bytes(&self.x25519);
        w.put_u8(self.intro_points.len() as u8);
        for d in &self.intro_points {
            w.put_bytes_u16len(d)?;
        }
        w.put_u64(self.created);
        w.put_u64(self.expires);
        let signature = service.sign(&signed_message(w.as_slice()));
        w.put_bytes(&signature.to_bytes());
        Ok(SignedProvider {
            record: self.clone(),
            key: public.key,
            signature,
            bytes: w.into_vec(),
        })
    }
}

/// A provider record whose signature, proof, bounds and validity window
/// were checked. Only [`ProviderRecord::sign`] and [`Unchecked::check`]
/// make one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedProvider {
    record: ProviderRecord,
    key: PublisherKey,
    signature: Signature,
    bytes: Vec<u8>,
}

impl SignedProvider {
    /// The record's fields.
    pub fn record(&self) -> &ProviderRecord {
        &self.record
    }

    /// The service, as a downloader needs it.
    pub fn service(&self) -> ServicePublic {
        ServicePublic {
            key: self.key,
            x25519: self.record.x25519,
        }
    }

    /// The service pseudonym (the record's publisher for storage bounds).
    pub fn publisher(&self) -> &PublisherKey {
        &self.key
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bytes.clone()
    }

    /// The canonical encoding, borrowed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Unchecked<SignedProvider> {
    /// Decodes a provider record: bounded, strict.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_PROVIDER_BYTES {
            return Err(DecodeError::TooLong {
                field: "provider record",
                len: bytes.len(),
                max: MAX_PROVIDER_BYTES,
            });
        }
        let mut r = Reader::new(bytes);
        let key = decode_header(&mut r, RecordKind::Provider)?;
        let content_id = ContentId::from_bytes(r.get_array()?);
        let x25519 = r.get_array()?;
        let count = usize::from(r.get_u8()?);
        if count > MAX_INTRO_POINTS {
            return Err(DecodeError::TooLong {
                field: "intro points",
                len: count,
                max: MAX_INTRO_POINTS,
            });
        }
        let mut intro_points = Vec::with_capacity(count);
        for _ in 0..count {
            intro_points.push(
                r.get_bytes_u16len(MAX_DESCRIPTOR_BYTES, "intro point")?
                    .to_vec(),
            );
        }
        let created = r.get_u64()?;
        let expires = r.get_u64()?;
        let signature = Signature::from_bytes(&r.get_array()?);
        r.finish()?;
        Ok(Unchecked::new(SignedProvider {
            record: ProviderRecord {
                content_id,
                x25519,
                intro_points,
                created,
                expires,
            },
            key,
            signature,
            bytes: bytes.to_vec(),
        }))
    }

    /// Checks bounds, the validity window at `now` (Unix seconds), the
    /// service's proof of work at `pow`, and the signature, cheapest first.
    pub fn check(self, now: u64, pow: PowParams) -> Result<SignedProvider, RecordError> {
        let signed = self.into_inner();
        signed.record.validate()?;
        check_signed(
            (signed.record.created, signed.record.expires),
            &signed.key,
            &signed.bytes,
            &signed.signature,
            now,
            pow,
        )?;
        Ok(signed)
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::record::Unchecked;

    const NOW: u64 = 1_800_000_000;

    fn service() -> ServiceKey {
        ServiceKey::generate(&mut ChaCha20Rng::seed_from_u64(1), PowParams::TESTNET)
    }

    fn record(s: &ServiceKey) -> ProviderRecord {
        ProviderRecord {
            content_id: ContentId::from_bytes([3; 32]),
            x25519: s.public().x25519,
            intro_points: vec![vec![1; 150], vec![2; MAX_DESCRIPTOR_BYTES]],
            created: NOW,
            expires: NOW + 3600,
        }
    }

    fn check(bytes: &[u8]) -> Result<SignedProvider, RecordError> {
        Unchecked::<SignedProvider>::decode(bytes)?.check(NOW + 1, PowParams::TESTNET)
    }

    #[test]
    fn a_signed_provider_record_round_trips_and_names_its_service() {
        let s = service();
        let signed = record(&s).sign(&s).expect("sign");
        assert!(signed.as_bytes().len() <= MAX_PROVIDER_BYTES);
        let back = check(signed.as_bytes()).expect("check");
        assert_eq!(back, signed);
        assert_eq!(back.service(), s.public());
        assert_eq!(
            crate::record::kind_of(signed.as_bytes()),
            Some(RecordKind::Provider)
        );
        // A content-record decoder refuses it.
        assert!(Unchecked::<crate::record::SignedRecord>::decode(signed.as_bytes()).is_err());
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let s = service();
        let signed = record(&s).sign(&s).expect("sign");
        let bytes = signed.as_bytes();
        for i in 0..bytes.len() {
            let mut bent = bytes.to_vec();
            bent[i] ^= 0x01;
            assert!(check(&bent).is_err(), "byte {i} flipped still checks");
        }
        for n in 0..bytes.len() {
            assert!(check(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn bounds_and_validity_are_enforced() {
        let s = service();
        let mut r = record(&s);
        r.intro_points.clear();
        assert!(r.sign(&s).is_err(), "no intro point");
        let mut r = record(&s);
        r.intro_points = vec![vec![1; 10]; MAX_INTRO_POINTS + 1];
        assert!(r.sign(&s).is_err(), "too many");
        let mut r = record(&s);
        r.expires = r.created + MAX_PROVIDER_LIFETIME_SECS + 1;
        assert!(r.sign(&s).is_err(), "lives too long");
        let mut r = record(&s);
        r.x25519 = [9; 32];
        assert!(r.sign(&s).is_err(), "another service's key");
        let signed = record(&s).sign(&s).expect("sign");
        let u = Unchecked::<SignedProvider>::decode(signed.as_bytes()).expect("decode");
        assert!(matches!(
            u.clone().check(NOW + 3600, PowParams::TESTNET),
            Err(RecordError::Expired { .. })
        ));
        assert!(matches!(
            u.clone().check(NOW - 3600, PowParams::TESTNET),
            Err(RecordError::CreatedInFuture { .. })
        ));
        assert!(matches!(
            u.check(
                NOW + 1,
                PowParams {
                    difficulty_bits: 30
                }
            ),
            Err(RecordError::BadPow(_))
        ));
    }

    #[test]
    fn decoding_garbage_never_panics() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        for len in 0..400 {
            let mut b = vec![0u8; len * 4];
            rand_core::RngCore::fill_bytes(&mut rng, &mut b);
            if b.len() >= 2 {
                b[0] = RECORD_VERSION;
                b[1] = RecordKind::Provider.as_u8();
            }
            let _ = check(&b);
        }
    }
}
