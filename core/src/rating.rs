//! Ratings (record kind 3): a user's signed verdict on content it
//! downloaded, "good" or "fake".
//!
//! A decoy is real content under a popular name, with a valid Merkle tree,
//! so no verification can catch it: only people who downloaded it can. A
//! rating lets one user's judgment reach others. It names the rated file
//! as the rater saw it (the content record's id, size, name and keywords),
//! so it is published, held and found exactly like a content record: by
//! the words of that name. A searcher weighs each rater by its own
//! standing of that rater ([`crate::search::Standing`]), which its user's
//! own ratings move: a rater who judged as this user did gains, one who
//! judged the other way weighs nothing (Credence's correlation, reduced to
//! agreement on shared ids).
//!
//! A rater signs with a *rater pseudonym* of its own (never the pseudonym
//! that signs its library, never its node key): ratings link a rater's
//! downloads to each other, which the weighing needs, and to nothing else.
//!
//! Security argument, as for content records ([`crate::record`]): the
//! rater signs [`crate::record::SIGNATURE_CONTEXT`] and every byte before
//! the signature (the kind byte included, so a rating is never a content
//! record); `verify_strict`; strict decoding (one encoding per rating);
//! proof of work on the rater pseudonym; the validity window of a content
//! record. What a rating cannot do: prove that its rater downloaded
//! anything. A coalition that mints rater pseudonyms can rate honest files
//! fake; what stops it is the searcher's weighing (first-sight weight, the
//! user's own agreement), not the record (docs/protocol.md, Ratings).
//!
//! Encoding (version 1, kind 3), integers big-endian:
//!
//! ```text
//! u8 version = 1 | u8 kind = 3
//! [32] rater ed25519 key | u64 rater pow nonce
//! the body of a content record (crate::record): content id, size, name,
//!   keywords, media type, created, expires (the rating's own window)
//! u8 verdict (1 good, 2 fake)
//! [64] ed25519 signature over SIGNATURE_CONTEXT || all bytes above
//! ```

use ed25519_dalek::{Signature, Signer};

use crate::identity::{Pseudonym, PublisherKey};
use crate::pow::PowParams;
use crate::record::{
    ContentRecord, MAX_RECORD_BYTES, RECORD_VERSION, RecordError, RecordKind, SIGNATURE_BYTES,
    Unchecked, check_signed, decode_header, signed_message,
};
use crate::wire::{DecodeError, Reader, Writer};

/// Largest encoded rating.
pub const MAX_RATING_BYTES: usize = MAX_RECORD_BYTES + 1;

/// What a user said of a download.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// What its name says.
    Good,
    /// Not what its name says (a decoy).
    Fake,
}

impl Verdict {
    fn as_u8(self) -> u8 {
        match self {
            Verdict::Good => 1,
            Verdict::Fake => 2,
        }
    }

    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            1 => Ok(Verdict::Good),
            2 => Ok(Verdict::Fake),
            _ => Err(DecodeError::BadValue {
                field: "verdict",
                reason: "not 1 (good) or 2 (fake)",
            }),
        }
    }
}

/// A verdict on one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rating {
    /// The rated file as the rater found it (id, size, name, keywords,
    /// media type); `created` and `expires` are the rating's own.
    pub rated: ContentRecord,
    /// The verdict.
    pub verdict: Verdict,
}

impl Rating {
    /// Validates the rated fields, then signs with the rater pseudonym.
    pub fn sign(&self, rater: &Pseudonym) -> Result<SignedRating, RecordError> {
        self.rated.validate()?;
        let key = rater.publisher();
        let mut w = Writer::with_capacity(MAX_RATING_BYTES);
        w.put_u8(RECORD_VERSION);
        w.put_u8(RecordKind::Rating.as_u8());
        w.put_bytes(key.key.as_bytes());
        w.put_u64(key.pow.nonce);
        self.rated.encode_body(&mut w)?;
        w.put_u8(self.verdict.as_u8());
        let signature = rater.signing_key().sign(&signed_message(w.as_slice()));
        w.put_bytes(&signature.to_bytes());
        Ok(SignedRating {
            rating: self.clone(),
            rater: key,
            signature,
            bytes: w.into_vec(),
        })
    }
}

/// A rating whose signature, proof, bounds and validity window were
/// checked. Only [`Rating::sign`] and [`Unchecked::check`] make one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRating {
    rating: Rating,
    rater: PublisherKey,
    signature: Signature,
    bytes: Vec<u8>,
}

impl SignedRating {
    /// The rating's fields.
    pub fn rating(&self) -> &Rating {
        &self.rating
    }

    /// The rated file's fields (and the rating's window).
    pub fn record(&self) -> &ContentRecord {
        &self.rating.rated
    }

    /// The rater pseudonym (the rating's publisher for storage bounds).
    pub fn publisher(&self) -> &PublisherKey {
        &self.rater
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

impl Unchecked<SignedRating> {
    /// Decodes a rating: bounded, strict.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_RATING_BYTES {
            return Err(DecodeError::TooLong {
                field: "rating",
                len: bytes.len(),
                max: MAX_RATING_BYTES,
            });
        }
        let mut r = Reader::new(bytes);
        let rater = decode_header(&mut r, RecordKind::Rating)?;
        let rated = ContentRecord::decode_body(&mut r)?;
        let verdict = Verdict::from_u8(r.get_u8()?)?;
        let signature = Signature::from_bytes(&r.get_array::<SIGNATURE_BYTES>()?);
        r.finish()?;
        Ok(Unchecked::new(SignedRating {
            rating: Rating { rated, verdict },
            rater,
            signature,
            bytes: bytes.to_vec(),
        }))
    }

    /// Checks the rated fields' bounds, the window at `now` (Unix
    /// seconds), the rater's proof of work and the signature.
    pub fn check(self, now: u64, pow: PowParams) -> Result<SignedRating, RecordError> {
        let signed = self.into_inner();
        signed.rating.rated.validate()?;
        check_signed(
            (signed.rating.rated.created, signed.rating.rated.expires),
            &signed.rater,
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
    use super::*;
    use crate::content::ContentId;
    use crate::record::{SignedRecord, kind_of};
    use ed25519_dalek::SigningKey;
    use std::sync::OnceLock;

    const NOW: u64 = 1_700_000_000;

    fn rater() -> &'static Pseudonym {
        static P: OnceLock<Pseudonym> = OnceLock::new();
        P.get_or_init(|| Pseudonym::from_key(SigningKey::from_bytes(&[3; 32]), PowParams::TESTNET))
    }

    fn rated() -> ContentRecord {
        ContentRecord {
            content_id: ContentId::from_bytes([7; 32]),
            size: 1234,
            name: "ubuntu 24.04 desktop.iso".into(),
            keywords: crate::record::keywords_from_name("ubuntu 24.04 desktop.iso"),
            media_type: None,
            created: NOW,
            expires: NOW + 3600,
        }
    }

    fn signed(verdict: Verdict) -> SignedRating {
        Rating {
            rated: rated(),
            verdict,
        }
        .sign(rater())
        .unwrap()
    }

    #[test]
    fn sign_decode_check_round_trip() {
        for v in [Verdict::Good, Verdict::Fake] {
            let s = signed(v);
            assert_eq!(kind_of(s.as_bytes()), Some(RecordKind::Rating));
            let back = Unchecked::<SignedRating>::decode(s.as_bytes())
                .unwrap()
                .check(NOW, PowParams::TESTNET)
                .unwrap();
            assert_eq!(back, s);
            assert_eq!(back.rating().verdict, v);
        }
    }

    #[test]
    fn a_rating_is_never_a_content_record_nor_the_reverse() {
        let s = signed(Verdict::Fake);
        assert!(matches!(
            Unchecked::<SignedRecord>::decode(s.as_bytes()),
            Err(DecodeError::UnknownKind(3))
        ));
        let record = rated().sign(rater()).unwrap();
        assert!(matches!(
            Unchecked::<SignedRating>::decode(record.as_bytes()),
            Err(DecodeError::UnknownKind(1))
        ));
    }

    #[test]
    fn every_byte_flip_is_rejected() {
        let s = signed(Verdict::Good);
        for i in 0..s.as_bytes().len() {
            let mut b = s.to_bytes();
            b[i] ^= 0x01;
            let ok = Unchecked::<SignedRating>::decode(&b)
                .ok()
                .and_then(|u| u.check(NOW, PowParams::TESTNET).ok());
            assert!(ok.is_none(), "flip at byte {i} gave a valid rating");
        }
    }

    #[test]
    fn window_and_bad_input() {
        let s = signed(Verdict::Fake);
        let late = Unchecked::<SignedRating>::decode(s.as_bytes())
            .unwrap()
            .check(NOW + 3600, PowParams::TESTNET);
        assert!(matches!(late, Err(RecordError::Expired { .. })));
        let mut b = s.to_bytes();
        b.push(0);
        assert!(Unchecked::<SignedRating>::decode(&b).is_err());
        assert!(Unchecked::<SignedRating>::decode(&b[..10]).is_err());
        let big = vec![1u8; MAX_RATING_BYTES + 1];
        assert!(matches!(
            Unchecked::<SignedRating>::decode(&big),
            Err(DecodeError::TooLong { .. })
        ));
        // A verdict byte outside 1..=2, re-signed so only the verdict is bad.
        let mut b = s.to_bytes();
        let at = b.len() - SIGNATURE_BYTES - 1;
        b[at] = 9;
        assert!(matches!(
            Unchecked::<SignedRating>::decode(&b),
            Err(DecodeError::BadValue {
                field: "verdict",
                ..
            })
        ));
    }
}
