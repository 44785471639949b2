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
//! u8 n <= 96 | n x [8] signer tags, strictly increasing
//! [64] ed25519 signature over SIGNATURE_CONTEXT || all bytes above
//! ```
//!
//! # Signer tags
//! A rating also names the pseudonyms that signed the rated id in the
//! rater's results: the first 8 bytes of each publisher id
//! ([`SignerTag`]), at most [`MAX_RATED_SIGNERS`]. A searcher that never
//! saw the rated id can then weigh those pseudonyms wherever they sign
//! (a coalition signing decoys under many names with the same
//! pseudonyms is caught by the ratings of any one of them). The names are
//! the rater's claim, not proof that the named pseudonym signed anything:
//! the searcher weighs them as it weighs the verdict, by the rater's
//! weight, and needs more than one fresh rater per pseudonym
//! (`crate::search::rank`). Eight bytes of a BLAKE3-derived id: finding a
//! second pseudonym with an honest one's tag costs about 2^64 key
//! derivations.

use ed25519_dalek::{Signature, Signer};

use rand_core::RngCore;

use crate::identity::{Pseudonym, PublisherId, PublisherKey};
use crate::pow::PowParams;
use crate::record::{
    ContentRecord, MAX_RECORD_BYTES, RECORD_VERSION, RecordError, RecordKind, SIGNATURE_BYTES,
    Unchecked, check_signed, decode_header, signed_message,
};
use crate::wire::{DecodeError, Reader, Writer};

/// Most signer tags one rating names.
pub const MAX_RATED_SIGNERS: usize = 96;

/// Most signers of a content id a node keeps from the answers to one
/// download's own searches for providers (each signer once). A fake
/// verdict names them with those the user's search showed; a good one
/// does not (anyone can sign a record of a popular id and slip it into
/// those answers, to be credited by the user's approval).
pub const MAX_DOWNLOAD_SIGNERS: usize = 256;

/// Largest encoded rating.
pub const MAX_RATING_BYTES: usize = MAX_RECORD_BYTES + 1 + 1 + MAX_RATED_SIGNERS * SignerTag::BYTES;

/// How a rating names a pseudonym that signed the rated id: the first
/// 8 bytes of its publisher id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SignerTag(pub [u8; 8]);

impl SignerTag {
    /// Bytes of a tag.
    pub const BYTES: usize = 8;

    /// The tag of publisher `id`.
    pub fn of(id: &PublisherId) -> SignerTag {
        let mut t = [0u8; Self::BYTES];
        t.copy_from_slice(&id.as_bytes()[..Self::BYTES]);
        SignerTag(t)
    }
}

/// The signer tags a rating of `rated` names for `signers` (the
/// pseudonyms that signed it in the rater's results): all of them, or as
/// many as drawn at random when there are more than
/// [`MAX_RATED_SIGNERS`] or than keep the rating within
/// [`crate::search::MAX_ANSWERED_RATING_BYTES`] (so that an answer can
/// carry it), sorted.
pub fn signer_tags(
    signers: &[PublisherId],
    rated: &ContentRecord,
    rng: &mut impl RngCore,
) -> Vec<SignerTag> {
    let mut body = Writer::with_capacity(MAX_RECORD_BYTES);
    let room = match rated.encode_body(&mut body) {
        // version, kind, key, nonce | body | verdict, count | signature
        Ok(()) => {
            crate::search::MAX_ANSWERED_RATING_BYTES
                .saturating_sub(1 + 1 + 32 + 8 + body.as_slice().len() + 1 + 1 + SIGNATURE_BYTES)
                / SignerTag::BYTES
        }
        Err(_) => 0,
    };
    let mut tags: Vec<SignerTag> = signers.iter().map(SignerTag::of).collect();
    tags.sort();
    tags.dedup();
    let keep = tags.len().min(MAX_RATED_SIGNERS).min(room);
    // A partial Fisher-Yates shuffle: the first `keep` are a uniform draw.
    for i in 0..keep {
        let j = i + (rng.next_u64() % (tags.len() - i) as u64) as usize;
        tags.swap(i, j);
    }
    tags.truncate(keep);
    tags.sort();
    tags
}

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
    /// The pseudonyms that signed the rated id in the rater's results
    /// (see the module docs); sorted and deduplicated when signed, at
    /// most [`MAX_RATED_SIGNERS`].
    pub signers: Vec<SignerTag>,
}

impl Rating {
    /// Validates the rated fields, then signs with the rater pseudonym.
    pub fn sign(&self, rater: &Pseudonym) -> Result<SignedRating, RecordError> {
        self.rated.validate()?;
        let mut rating = self.clone();
        rating.signers.sort();
        rating.signers.dedup();
        if rating.signers.len() > MAX_RATED_SIGNERS {
            return Err(RecordError::FieldTooLong {
                field: "signers",
                len: rating.signers.len(),
                max: MAX_RATED_SIGNERS,
            });
        }
        let key = rater.publisher();
        let mut w = Writer::with_capacity(MAX_RATING_BYTES);
        w.put_u8(RECORD_VERSION);
        w.put_u8(RecordKind::Rating.as_u8());
        w.put_bytes(key.key.as_bytes());
        w.put_u64(key.pow.nonce);
        self.rated.encode_body(&mut w)?;
        w.put_u8(self.verdict.as_u8());
        // At most MAX_RATED_SIGNERS (96), checked above.
        w.put_u8(rating.signers.len() as u8);
        for t in &rating.signers {
            w.put_bytes(&t.0);
        }
        let signature = rater.signing_key().sign(&signed_message(w.as_slice()));
        w.put_bytes(&signature.to_bytes());
        Ok(SignedRating {
            rating,
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
        let n = usize::from(r.get_u8()?);
        if n > MAX_RATED_SIGNERS {
            return Err(DecodeError::TooLong {
                field: "signers",
                len: n,
                max: MAX_RATED_SIGNERS,
            });
        }
        let mut signers: Vec<SignerTag> = Vec::with_capacity(n);
        for _ in 0..n {
            let t = SignerTag(r.get_array::<{ SignerTag::BYTES }>()?);
            // One encoding per rating: strictly increasing tags.
            if signers.last().is_some_and(|last| *last >= t) {
                return Err(DecodeError::BadValue {
                    field: "signers",
                    reason: "not strictly increasing",
                });
            }
            signers.push(t);
        }
        let signature = Signature::from_bytes(&r.get_array::<SIGNATURE_BYTES>()?);
        r.finish()?;
        Ok(Unchecked::new(SignedRating {
            rating: Rating {
                rated,
                verdict,
                signers,
            },
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

    fn tags(n: u8) -> Vec<SignerTag> {
        (0..n).map(|i| SignerTag([i; 8])).collect()
    }

    fn signed(verdict: Verdict) -> SignedRating {
        Rating {
            rated: rated(),
            verdict,
            signers: tags(3),
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
        // A verdict byte outside 1..=2: the decoder refuses it before the
        // signature is looked at.
        let mut b = s.to_bytes();
        let at = b.len() - SIGNATURE_BYTES - 1 - 1 - 3 * SignerTag::BYTES;
        b[at] = 9;
        assert!(matches!(
            Unchecked::<SignedRating>::decode(&b),
            Err(DecodeError::BadValue {
                field: "verdict",
                ..
            })
        ));
    }

    #[test]
    fn signer_tags_are_signed_sorted_and_strict() {
        // Given unsorted with a duplicate, signing sorts and dedups them.
        let mut signers = tags(5);
        signers.reverse();
        signers.push(SignerTag([2; 8]));
        let s = Rating {
            rated: rated(),
            verdict: Verdict::Fake,
            signers,
        }
        .sign(rater())
        .unwrap();
        assert_eq!(s.rating().signers, tags(5));
        let back = Unchecked::<SignedRating>::decode(s.as_bytes())
            .unwrap()
            .check(NOW, PowParams::TESTNET)
            .unwrap();
        assert_eq!(back.rating().signers, tags(5));
        // Two tags swapped in the bytes: refused as not canonical, before
        // any signature check.
        let mut b = s.to_bytes();
        let first = b.len() - SIGNATURE_BYTES - 5 * SignerTag::BYTES;
        b[first..first + 8].copy_from_slice(&[1; 8]);
        b[first + 8..first + 16].copy_from_slice(&[0; 8]);
        assert!(matches!(
            Unchecked::<SignedRating>::decode(&b),
            Err(DecodeError::BadValue {
                field: "signers",
                ..
            })
        ));
        // More than the bound: refused when signing, and when decoding.
        let many: Vec<SignerTag> = (0..=MAX_RATED_SIGNERS as u64)
            .map(|i| SignerTag(i.to_be_bytes()))
            .collect();
        let too_many = Rating {
            rated: rated(),
            verdict: Verdict::Fake,
            signers: many,
        };
        assert!(matches!(
            too_many.sign(rater()),
            Err(RecordError::FieldTooLong {
                field: "signers",
                ..
            })
        ));
        let mut b = signed(Verdict::Fake).to_bytes();
        let count = b.len() - SIGNATURE_BYTES - 3 * SignerTag::BYTES - 1;
        b[count] = MAX_RATED_SIGNERS as u8 + 1;
        assert!(matches!(
            Unchecked::<SignedRating>::decode(&b),
            Err(DecodeError::TooLong {
                field: "signers",
                ..
            })
        ));
    }

    #[test]
    fn signer_tags_name_every_signer_or_a_sample_of_the_bound() {
        use rand_chacha::ChaCha20Rng;
        use rand_chacha::rand_core::SeedableRng;
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let ids: Vec<PublisherId> = (0..100u8)
            .map(|i| PublisherId::from_bytes([i; 32]))
            .collect();
        let few = signer_tags(&ids[..10], &rated(), &mut rng);
        assert_eq!(few.len(), 10);
        assert!(few.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(few[3], SignerTag::of(&ids[3]));
        let a = signer_tags(&ids, &rated(), &mut rng);
        let b = signer_tags(&ids, &rated(), &mut rng);
        // As many as fit an answer (fewer than the bound for this name).
        assert!(a.len() == b.len() && a.len() > 64 && a.len() <= MAX_RATED_SIGNERS);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_ne!(a, b, "two raters name different samples");
        // A rating naming the bound fits what an answer carries.
        let s = Rating {
            rated: rated(),
            verdict: Verdict::Fake,
            signers: a,
        }
        .sign(rater())
        .unwrap();
        assert!(s.as_bytes().len() <= crate::search::MAX_ANSWERED_RATING_BYTES);
        // A file with a long name and many words leaves room for fewer
        // signers, and the rating still fits.
        let mut long = rated();
        long.name = "w".repeat(200);
        long.keywords = (0..16)
            .map(|i| format!("{i:02}{}", "k".repeat(28)))
            .collect();
        let fewer = signer_tags(&ids, &long, &mut rng);
        assert!(fewer.len() < MAX_RATED_SIGNERS && !fewer.is_empty());
        let s = Rating {
            rated: long,
            verdict: Verdict::Fake,
            signers: fewer,
        }
        .sign(rater())
        .unwrap();
        assert!(s.as_bytes().len() <= crate::search::MAX_ANSWERED_RATING_BYTES);
    }
}
