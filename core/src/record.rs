//! Signed, canonical, expiring content records: what sharers publish and
//! index holders store and return to searches.
//!
//! Security argument:
//! - **What the signature covers.** The publisher's ed25519 key signs
//!   [`SIGNATURE_CONTEXT`] followed by every byte of the encoding before the
//!   signature: version, kind, publisher key, publisher proof of work and
//!   all record fields. The context string keeps these signatures from ever
//!   being valid for another veil message (or another protocol) signed with
//!   the same key. Verification is `verify_strict` (no small-order keys, no
//!   malleable signatures), so a record has exactly one valid signature.
//! - **One encoding per record.** Decoding is strict (no trailing bytes,
//!   strict booleans, bounded lengths) and the fields must be canonical
//!   (keywords lowercase, sorted, deduplicated; see [`is_canonical_keyword`]),
//!   so flipping any byte of a valid record gives an error, never a
//!   different valid record, and equal records have equal bytes (index
//!   holders can deduplicate on bytes).
//! - **Publisher cost.** The publisher key must carry a proof of work in
//!   [`PowDomain::Publisher`](crate::pow::PowDomain), so minting pseudonyms to
//!   outvote honest publishers costs work per pseudonym.
//! - **Expiry.** A record lives at most [`MAX_LIFETIME_SECS`] and is refused
//!   once expired or if created more than [`MAX_CLOCK_SKEW_SECS`] in the
//!   future, so a poisoner's records age out and stale ones do not linger.
//! - **Why [`Unchecked`].** Decoding yields an `Unchecked<SignedRecord>`; the
//!   only way to a [`SignedRecord`] is [`ContentRecord::sign`] or
//!   [`Unchecked::check`], so code that holds a `SignedRecord` knows its
//!   signature, proof, bounds and validity window were checked.
//!
//! Encoding (version 1, kind 1 = content), all integers big-endian:
//!
//! ```text
//! u8 version = 1 | u8 kind = 1
//! [32] publisher ed25519 key | u64 publisher pow nonce
//! [32] content id | u64 size
//! u8 len, name (UTF-8, 1..=255 bytes)
//! u8 count (0..=16), then count × (u8 len, keyword (UTF-8, 2..=32 bytes))
//! u8 has_media_type (0 or 1), then if 1: u8 len, media type (1..=64 bytes)
//! u64 created | u64 expires            (Unix seconds)
//! [64] ed25519 signature over SIGNATURE_CONTEXT || all bytes above
//! ```
//!
//! Everything after the kind byte is kind-specific: kind 2 (provider
//! records, [`crate::provider`]) and kind 3 (ratings, [`crate::rating`])
//! have their own decoders, and this module's decoder refuses them with
//! [`DecodeError::UnknownKind`].

use std::collections::BTreeSet;

use ed25519_dalek::{Signature, Signer, VerifyingKey};
use thiserror::Error;

use crate::content::ContentId;
use crate::identity::{Pseudonym, PublisherKey};
use crate::pow::{Pow, PowError, PowParams};
use crate::wire::{DecodeError, EncodeError, Reader, Writer};

/// The record format version this build writes and reads.
pub const RECORD_VERSION: u8 = 1;
/// Prefix of every record signature's message.
pub const SIGNATURE_CONTEXT: &[u8] = b"veil 2025 signed record v1\0";

/// Longest file name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Most keywords per record.
pub const MAX_KEYWORDS: usize = 16;
/// Longest keyword, in bytes.
pub const MAX_KEYWORD_BYTES: usize = 32;
/// Shortest keyword, in characters.
pub const MIN_KEYWORD_CHARS: usize = 2;
/// Longest media type, in bytes.
pub const MAX_MEDIA_TYPE_BYTES: usize = 64;
/// Longest time between `created` and `expires`: 7 days. Publishers
/// republish before expiry.
pub const MAX_LIFETIME_SECS: u64 = 7 * 24 * 60 * 60;
/// How far in the future `created` may be, to allow for clock skew.
pub const MAX_CLOCK_SKEW_SECS: u64 = 600;

pub(crate) const SIGNATURE_BYTES: usize = 64;
const HEADER_BYTES: usize = 1 + 1 + 32 + 8;
/// Longest encoded record (all fields at their bounds). Decoding refuses
/// anything longer before reading it.
pub const MAX_RECORD_BYTES: usize = HEADER_BYTES
    + 32
    + 8
    + (1 + MAX_NAME_BYTES)
    + 1
    + MAX_KEYWORDS * (1 + MAX_KEYWORD_BYTES)
    + (1 + 1 + MAX_MEDIA_TYPE_BYTES)
    + 8
    + 8
    + SIGNATURE_BYTES;

/// What a record describes; the byte after the version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// A file: its content id, size, name and keywords.
    Content = 1,
    /// Who serves a content id: a service key and its introduction points
    /// ([`crate::provider`]).
    Provider = 2,
    /// A user's verdict on content it downloaded ([`crate::rating`]).
    Rating = 3,
}

impl RecordKind {
    /// The kind for a tag byte, if this build knows it.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(RecordKind::Content),
            2 => Some(RecordKind::Provider),
            3 => Some(RecordKind::Rating),
            _ => None,
        }
    }

    /// The tag byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A record that fails validation. All variants are the publisher's fault
/// when the record came from a peer, except that [`Expired`] and
/// [`CreatedInFuture`] may also come from honest clock skew or a stale
/// replica: drop the record, but penalise lightly.
///
/// [`Expired`]: RecordError::Expired
/// [`CreatedInFuture`]: RecordError::CreatedInFuture
#[derive(Error, Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The bytes are not a well-formed record.
    #[error("malformed record: {0}")]
    Decode(#[from] DecodeError),
    /// A field is longer than its bound (for `keywords`: too many of them).
    #[error("{field} too long: {len}, at most {max}")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length (bytes, or count for `keywords`).
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A required field is empty.
    #[error("{field} is empty")]
    Empty {
        /// The field.
        field: &'static str,
    },
    /// A field is not in canonical form.
    #[error("{field} not canonical: {reason}")]
    NotCanonical {
        /// The field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// `created` is more than [`MAX_CLOCK_SKEW_SECS`] after `now`.
    #[error("record created at {created}, in the future (now {now})")]
    CreatedInFuture {
        /// The record's creation time.
        created: u64,
        /// The checker's time.
        now: u64,
    },
    /// `expires` is not after `now`.
    #[error("record expired at {expires} (now {now})")]
    Expired {
        /// The record's expiry.
        expires: u64,
        /// The checker's time.
        now: u64,
    },
    /// `expires` is not after `created`.
    #[error("record expires ({expires}) before it is created ({created})")]
    ExpiresBeforeCreated {
        /// The record's creation time.
        created: u64,
        /// The record's expiry.
        expires: u64,
    },
    /// `expires - created` exceeds [`MAX_LIFETIME_SECS`].
    #[error("record lifetime {lifetime}s exceeds {max}s")]
    LifetimeTooLong {
        /// `expires - created`.
        lifetime: u64,
        /// The bound.
        max: u64,
    },
    /// The signature does not verify under the publisher key.
    #[error("bad record signature")]
    BadSignature,
    /// The publisher's proof of work is insufficient.
    #[error("publisher proof of work: {0}")]
    BadPow(#[from] PowError),
}

impl From<EncodeError> for RecordError {
    fn from(e: EncodeError) -> Self {
        RecordError::FieldTooLong {
            field: "field",
            len: e.len,
            max: e.max,
        }
    }
}

/// A file as a publisher describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentRecord {
    /// BLAKE3 root of the content.
    pub content_id: ContentId,
    /// Content length in bytes.
    pub size: u64,
    /// File name: 1..=255 bytes, no control characters or path separators,
    /// not `.` or `..`.
    pub name: String,
    /// Canonical keywords (see [`is_canonical_keyword`]): sorted, distinct,
    /// at most [`MAX_KEYWORDS`]. [`keywords_from_name`] makes them.
    pub keywords: Vec<String>,
    /// Lowercase printable ASCII media type such as `text/plain`.
    pub media_type: Option<String>,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Expiry time, Unix seconds; after `created`, by at most
    /// [`MAX_LIFETIME_SECS`].
    pub expires: u64,
}

/// Whether `kw` is a canonical keyword: 2 or more characters, at most
/// [`MAX_KEYWORD_BYTES`] bytes, alphanumeric only, and already lowercase.
/// (Unicode normalisation is not applied: the same text in NFC and NFD gives
/// different keywords.)
pub fn is_canonical_keyword(kw: &str) -> bool {
    kw.len() <= MAX_KEYWORD_BYTES
        && kw.chars().nth(MIN_KEYWORD_CHARS - 1).is_some()
        && kw.chars().all(char::is_alphanumeric)
        && kw.to_lowercase() == kw
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn truncate_chars(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    s.get(..end).unwrap_or_default()
}

/// Canonical keywords for a file name or a search phrase: lowercased, split
/// on anything not alphanumeric, tokens cut to [`MAX_KEYWORD_BYTES`], tokens
/// shorter than [`MIN_KEYWORD_CHARS`] dropped, the first [`MAX_KEYWORDS`]
/// distinct ones kept, sorted. The result always passes
/// [`is_canonical_keyword`].
pub fn keywords_from_name(name: &str) -> Vec<String> {
    let lower = name.to_lowercase();
    let mut seen = BTreeSet::new();
    for token in lower.split(|c: char| !c.is_alphanumeric()) {
        if seen.len() == MAX_KEYWORDS {
            break;
        }
        let token = truncate_chars(token, MAX_KEYWORD_BYTES);
        if is_canonical_keyword(token) {
            seen.insert(token);
        }
    }
    seen.into_iter().map(str::to_owned).collect()
}

/// Characters that change how a name looks without being seen: bidi
/// embeddings, overrides, isolates and marks, zero-width characters and
/// the byte-order mark. A name with one could show as another name on
/// screen (`invoice<U+202E>fdp.exe` looks like `invoiceexe.pdf`), so no
/// record may carry one.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), RecordError> {
    if len > max {
        Err(RecordError::FieldTooLong { field, len, max })
    } else {
        Ok(())
    }
}

impl ContentRecord {
    /// Checks every field bound and canonical form, and the lifetime (but
    /// not against a clock: that is [`Unchecked::check`]'s job).
    pub fn validate(&self) -> Result<(), RecordError> {
        check_len("name", self.name.len(), MAX_NAME_BYTES)?;
        if self.name.is_empty() {
            return Err(RecordError::Empty { field: "name" });
        }
        if self
            .name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\')
        {
            return Err(RecordError::NotCanonical {
                field: "name",
                reason: "control character or path separator",
            });
        }
        if self.name.chars().any(is_invisible_format) {
            return Err(RecordError::NotCanonical {
                field: "name",
                reason: "bidirectional or invisible formatting character",
            });
        }
        if self.name == "." || self.name == ".." {
            return Err(RecordError::NotCanonical {
                field: "name",
                reason: "not a file name",
            });
        }

        check_len("keywords", self.keywords.len(), MAX_KEYWORDS)?;
        for kw in &self.keywords {
            check_len("keyword", kw.len(), MAX_KEYWORD_BYTES)?;
            if !is_canonical_keyword(kw) {
                return Err(RecordError::NotCanonical {
                    field: "keyword",
                    reason: "must be lowercase alphanumeric, at least 2 characters",
                });
            }
        }
        if !self
            .keywords
            .windows(2)
            .all(|w| matches!(w, [a, b] if a < b))
        {
            return Err(RecordError::NotCanonical {
                field: "keywords",
                reason: "must be sorted and distinct",
            });
        }

        if let Some(mt) = &self.media_type {
            check_len("media type", mt.len(), MAX_MEDIA_TYPE_BYTES)?;
            if mt.is_empty() {
                return Err(RecordError::Empty {
                    field: "media type",
                });
            }
            if !mt
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase())
            {
                return Err(RecordError::NotCanonical {
                    field: "media type",
                    reason: "must be lowercase printable ASCII",
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
        if lifetime > MAX_LIFETIME_SECS {
            return Err(RecordError::LifetimeTooLong {
                lifetime,
                max: MAX_LIFETIME_SECS,
            });
        }
        Ok(())
    }

    /// Validates the record, then signs it with the publisher's pseudonym.
    pub fn sign(&self, publisher: &Pseudonym) -> Result<SignedRecord, RecordError> {
        self.validate()?;
        let key = publisher.publisher();
        let mut w = Writer::with_capacity(MAX_RECORD_BYTES);
        w.put_u8(RECORD_VERSION);
        w.put_u8(RecordKind::Content.as_u8());
        w.put_bytes(key.key.as_bytes());
        w.put_u64(key.pow.nonce);
        self.encode_body(&mut w)?;
        let signature = publisher.signing_key().sign(&signed_message(w.as_slice()));
        w.put_bytes(&signature.to_bytes());
        Ok(SignedRecord {
            record: self.clone(),
            publisher: key,
            signature,
            bytes: w.into_vec(),
        })
    }

    pub(crate) fn encode_body(&self, w: &mut Writer) -> Result<(), EncodeError> {
        w.put_bytes(self.content_id.as_bytes());
        w.put_u64(self.size);
        w.put_bytes_u8len(self.name.as_bytes())?;
        let count = u8::try_from(self.keywords.len()).map_err(|_| EncodeError {
            len: self.keywords.len(),
            max: MAX_KEYWORDS,
        })?;
        w.put_u8(count);
        for kw in &self.keywords {
            w.put_bytes_u8len(kw.as_bytes())?;
        }
        w.put_bool(self.media_type.is_some());
        if let Some(mt) = &self.media_type {
            w.put_bytes_u8len(mt.as_bytes())?;
        }
        w.put_u64(self.created);
        w.put_u64(self.expires);
        Ok(())
    }

    pub(crate) fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let content_id = ContentId::from_bytes(r.get_array()?);
        let size = r.get_u64()?;
        let name = r.get_str_u8len(MAX_NAME_BYTES, "name")?.to_owned();
        let count = usize::from(r.get_u8()?);
        if count > MAX_KEYWORDS {
            return Err(DecodeError::TooLong {
                field: "keywords",
                len: count,
                max: MAX_KEYWORDS,
            });
        }
        let mut keywords = Vec::with_capacity(count);
        for _ in 0..count {
            keywords.push(r.get_str_u8len(MAX_KEYWORD_BYTES, "keyword")?.to_owned());
        }
        let media_type = if r.get_bool("has media type")? {
            Some(
                r.get_str_u8len(MAX_MEDIA_TYPE_BYTES, "media type")?
                    .to_owned(),
            )
        } else {
            None
        };
        let created = r.get_u64()?;
        let expires = r.get_u64()?;
        Ok(ContentRecord {
            content_id,
            size,
            name,
            keywords,
            media_type,
            created,
            expires,
        })
    }
}

/// The kind of a record encoding (its second byte), for dispatch before
/// decoding; None if it is too short or of an unknown version or kind.
pub fn kind_of(bytes: &[u8]) -> Option<RecordKind> {
    match bytes {
        [RECORD_VERSION, kind, ..] => RecordKind::from_u8(*kind),
        _ => None,
    }
}

pub(crate) fn signed_message(unsigned: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNATURE_CONTEXT.len() + unsigned.len());
    msg.extend_from_slice(SIGNATURE_CONTEXT);
    msg.extend_from_slice(unsigned);
    msg
}

/// A record whose signature, publisher proof, bounds and validity window
/// were checked. Only [`ContentRecord::sign`] and [`Unchecked::check`] make
/// one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRecord {
    record: ContentRecord,
    publisher: PublisherKey,
    signature: Signature,
    /// The canonical encoding (decoding is strict, so the bytes received are
    /// the bytes this would encode to).
    bytes: Vec<u8>,
}

impl SignedRecord {
    /// The record's fields.
    pub fn record(&self) -> &ContentRecord {
        &self.record
    }

    /// The publisher that signed it.
    pub fn publisher(&self) -> &PublisherKey {
        &self.publisher
    }

    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
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

/// A value decoded from a peer (or from storage) whose signature and
/// validity have not been checked. It cannot be unwrapped; call `check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unchecked<T>(T);

impl<T> Unchecked<T> {
    /// Wrap a freshly decoded value (for other checked types in this crate).
    pub(crate) const fn new(value: T) -> Self {
        Unchecked(value)
    }

    /// The value, for the `check` of the type that wraps it. Never hand it
    /// out unchecked.
    pub(crate) fn into_inner(self) -> T {
        self.0
    }

    /// Borrow the value, for fields that need no check (such as an id
    /// derived from the keys the value carries).
    pub(crate) fn inner_ref(&self) -> &T {
        &self.0
    }
}

impl Unchecked<SignedRecord> {
    /// Decodes a record. Bounded (inputs over [`MAX_RECORD_BYTES`] are
    /// refused unread), strict (no trailing bytes, bad UTF-8, oversize
    /// fields, unknown version or kind).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(DecodeError::TooLong {
                field: "record",
                len: bytes.len(),
                max: MAX_RECORD_BYTES,
            });
        }
        let mut r = Reader::new(bytes);
        let publisher = decode_header(&mut r, RecordKind::Content)?;
        let record = ContentRecord::decode_body(&mut r)?;
        let signature = Signature::from_bytes(&r.get_array()?);
        r.finish()?;
        Ok(Unchecked(SignedRecord {
            record,
            publisher,
            signature,
            bytes: bytes.to_vec(),
        }))
    }

    /// Checks field bounds and canonical form, the validity window at `now`
    /// (Unix seconds), the publisher's proof of work at `pow`, and the
    /// signature, in that order (cheapest first).
    pub fn check(self, now: u64, pow: PowParams) -> Result<SignedRecord, RecordError> {
        let signed = self.0;
        signed.record.validate()?;
        check_signed(
            (signed.record.created, signed.record.expires),
            &signed.publisher,
            &signed.bytes,
            &signed.signature,
            now,
            pow,
        )?;
        Ok(signed)
    }
}

/// Reads the header every pseudonym-signed record of `kind` starts with:
/// version, kind, the pseudonym's key and proof-of-work nonce.
pub(crate) fn decode_header(
    r: &mut Reader<'_>,
    kind: RecordKind,
) -> Result<PublisherKey, DecodeError> {
    let version = r.get_u8()?;
    if version != RECORD_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let got = r.get_u8()?;
    if RecordKind::from_u8(got) != Some(kind) {
        return Err(DecodeError::UnknownKind(got));
    }
    let key = VerifyingKey::from_bytes(&r.get_array()?).map_err(|_| DecodeError::BadValue {
        field: "publisher key",
        reason: "not a valid ed25519 point",
    })?;
    let pow = Pow {
        nonce: r.get_u64()?,
    };
    Ok(PublisherKey { key, pow })
}

/// Checks what every pseudonym-signed record needs beyond its own fields
/// (which the caller validated): the validity window `window` (created,
/// expires) at `now` (Unix seconds), the pseudonym's proof of work at
/// `pow`, and the signature over every byte of `bytes` before it, in that
/// order (cheapest first).
pub(crate) fn check_signed(
    (created, expires): (u64, u64),
    publisher: &PublisherKey,
    bytes: &[u8],
    signature: &Signature,
    now: u64,
    pow: PowParams,
) -> Result<(), RecordError> {
    if created > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(RecordError::CreatedInFuture { created, now });
    }
    if now >= expires {
        return Err(RecordError::Expired { expires, now });
    }
    publisher.check_pow(pow)?;
    let unsigned_len = bytes.len().saturating_sub(SIGNATURE_BYTES);
    let unsigned = bytes.get(..unsigned_len).ok_or(RecordError::BadSignature)?;
    publisher
        .key
        .verify_strict(&signed_message(unsigned), signature)
        .map_err(|_| RecordError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    const CREATED: u64 = 1_700_000_000;

    fn pseudonym() -> &'static Pseudonym {
        static P: OnceLock<Pseudonym> = OnceLock::new();
        P.get_or_init(|| {
            Pseudonym::from_key(SigningKey::from_bytes(&[7u8; 32]), PowParams::TESTNET)
        })
    }

    fn vector_record() -> ContentRecord {
        ContentRecord {
            content_id: ContentId::from_bytes(*blake3::hash(b"hello veil\n").as_bytes()),
            size: 11,
            name: "Hello Veil - test vector.txt".to_owned(),
            keywords: keywords_from_name("Hello Veil - test vector.txt"),
            media_type: Some("text/plain".to_owned()),
            created: CREATED,
            expires: CREATED + 86_400,
        }
    }

    /// Committed vector: [`vector_record`] signed by the pseudonym from seed
    /// `[7; 32]` with its TESTNET proof (nonce [`VECTOR_PSEUDONYM_NONCE`]).
    const VECTOR_PSEUDONYM_NONCE: u64 = 331;
    const VECTOR_RECORD_HEX: &str = concat!(
        "0101",                                                             // version, kind
        "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c", // publisher key
        "000000000000014b",                                                 // pow nonce
        "74de59e8b0715071f8056276a528ec0a8c4a154e53a7e3b4d3da696457675b1e", // content id
        "000000000000000b",                                                 // size
        "1c48656c6c6f205665696c202d207465737420766563746f722e747874",       // name
        "05",                                                               // keyword count
        "0568656c6c6f",                                                     // hello
        "0474657374",                                                       // test
        "03747874",                                                         // txt
        "06766563746f72",                                                   // vector
        "047665696c",                                                       // veil
        "010a746578742f706c61696e",                                         // media type
        "000000006553f100",                                                 // created
        "0000000065554280",                                                 // expires
        "e7ad0c2b9d8c65761e899a5727001aed80e4627aaacd9017766c3865da20eafd5b2836ad7f547e215d23f6f48f5df722e122d1e4547f7ff77a48bae80f966c05", // signature
    );
    const VECTOR_NOW: u64 = CREATED + 3_600;

    fn check(bytes: &[u8], now: u64) -> Result<SignedRecord, RecordError> {
        Unchecked::<SignedRecord>::decode(bytes)?.check(now, PowParams::TESTNET)
    }

    #[test]
    fn record_vector() {
        let p = pseudonym();
        assert_eq!(
            p.publisher().pow,
            Pow {
                nonce: VECTOR_PSEUDONYM_NONCE
            }
        );
        let rec = vector_record();
        assert_eq!(rec.keywords, ["hello", "test", "txt", "vector", "veil"]);
        let signed = rec.sign(p).unwrap();
        assert_eq!(hex::encode(signed.as_bytes()), VECTOR_RECORD_HEX);
        let bytes = hex::decode(VECTOR_RECORD_HEX).unwrap();
        let checked = check(&bytes, VECTOR_NOW).unwrap();
        assert_eq!(checked, signed);
        assert_eq!(checked.record(), &rec);
        assert_eq!(checked.publisher(), &p.publisher());
        assert_eq!(checked.to_bytes(), bytes);
    }

    #[test]
    fn sign_check_round_trip() {
        let signed = vector_record().sign(pseudonym()).unwrap();
        let bytes = signed.to_bytes();
        assert!(bytes.len() <= MAX_RECORD_BYTES);
        assert_eq!(check(&bytes, CREATED).unwrap(), signed);
    }

    #[test]
    fn validity_window() {
        let bytes = vector_record().sign(pseudonym()).unwrap().to_bytes();
        let expires = CREATED + 86_400;
        assert!(check(&bytes, expires - 1).is_ok());
        assert_eq!(
            check(&bytes, expires).unwrap_err(),
            RecordError::Expired {
                expires,
                now: expires
            }
        );
        // Created up to ten minutes ahead of our clock is tolerated ...
        assert!(check(&bytes, CREATED - MAX_CLOCK_SKEW_SECS).is_ok());
        // ... more is not.
        let now = CREATED - MAX_CLOCK_SKEW_SECS - 1;
        assert_eq!(
            check(&bytes, now).unwrap_err(),
            RecordError::CreatedInFuture {
                created: CREATED,
                now
            }
        );
    }

    #[test]
    fn lifetime_bounds() {
        let p = pseudonym();
        let mut rec = vector_record();
        rec.expires = rec.created + MAX_LIFETIME_SECS;
        assert!(rec.sign(p).is_ok());
        rec.expires += 1;
        assert_eq!(
            rec.sign(p).unwrap_err(),
            RecordError::LifetimeTooLong {
                lifetime: MAX_LIFETIME_SECS + 1,
                max: MAX_LIFETIME_SECS
            }
        );
        rec.expires = rec.created;
        assert!(matches!(
            rec.sign(p),
            Err(RecordError::ExpiresBeforeCreated { .. })
        ));
        rec.expires = rec.created - 1;
        assert!(matches!(
            rec.sign(p),
            Err(RecordError::ExpiresBeforeCreated { .. })
        ));
    }

    #[test]
    fn field_bounds_on_sign() {
        let p = pseudonym();
        let mut rec = vector_record();
        rec.name = "a".repeat(MAX_NAME_BYTES);
        assert!(rec.sign(p).is_ok());
        rec.name.push('a');
        assert_eq!(
            rec.sign(p).unwrap_err(),
            RecordError::FieldTooLong {
                field: "name",
                len: 256,
                max: 255
            }
        );
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "a\nb",
            "a\u{7f}",
            // Names that would show as other names on screen.
            "invoice\u{202E}fdp.exe",
            "a\u{200B}b",
            "\u{FEFF}a",
            "a\u{2066}b\u{2069}",
            "a\u{061C}b",
        ] {
            rec.name = bad.to_owned();
            assert!(rec.sign(p).is_err(), "{bad:?}");
        }

        let mut rec = vector_record();
        for bad in [
            vec!["b".to_owned(), "a".to_owned()],
            vec!["aa".to_owned(), "aa".to_owned()],
            vec!["Ab".to_owned()],
            vec!["a".to_owned()],
            vec!["a b".to_owned()],
            vec!["a".repeat(MAX_KEYWORD_BYTES + 1)],
        ] {
            rec.keywords = bad.clone();
            assert!(rec.sign(p).is_err(), "{bad:?}");
        }
        rec.keywords = (0..=MAX_KEYWORDS).map(|i| format!("k{i:02}")).collect();
        assert!(matches!(
            rec.sign(p),
            Err(RecordError::FieldTooLong {
                field: "keywords",
                ..
            })
        ));
        rec.keywords.pop();
        assert!(rec.sign(p).is_ok());

        let mut rec = vector_record();
        for bad in [
            "",
            "Text/Plain",
            "text plain",
            &"a".repeat(MAX_MEDIA_TYPE_BYTES + 1),
        ] {
            rec.media_type = Some(bad.to_owned());
            assert!(rec.sign(p).is_err(), "{bad:?}");
        }
        rec.media_type = None;
        assert!(rec.sign(p).is_ok());
    }

    /// Builds a record encoding by hand, with a valid signature, so that
    /// decode-level and check-level rejections can be tested apart from
    /// `sign`'s own validation.
    fn forge(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let signed = vector_record().sign(pseudonym()).unwrap();
        let mut unsigned = signed.to_bytes();
        unsigned.truncate(unsigned.len() - SIGNATURE_BYTES);
        edit(&mut unsigned);
        let sig = pseudonym().signing_key().sign(&signed_message(&unsigned));
        unsigned.extend_from_slice(&sig.to_bytes());
        unsigned
    }

    const NAME_AT: usize = HEADER_BYTES + 32 + 8;

    #[test]
    fn decode_rejections() {
        let good = vector_record().sign(pseudonym()).unwrap().to_bytes();

        let mut b = good.clone();
        b[0] = 2;
        assert_eq!(
            Unchecked::<SignedRecord>::decode(&b).unwrap_err(),
            DecodeError::UnknownVersion(2)
        );
        for kind in [0, 2, 3, 255] {
            let mut b = good.clone();
            b[1] = kind;
            assert_eq!(
                Unchecked::<SignedRecord>::decode(&b).unwrap_err(),
                DecodeError::UnknownKind(kind)
            );
        }

        let mut b = good.clone();
        b.push(0);
        assert_eq!(
            Unchecked::<SignedRecord>::decode(&b).unwrap_err(),
            DecodeError::TrailingBytes { count: 1 }
        );
        for len in 0..good.len() {
            assert!(
                Unchecked::<SignedRecord>::decode(&good[..len]).is_err(),
                "prefix {len}"
            );
        }
        assert!(matches!(
            Unchecked::<SignedRecord>::decode(&vec![1; MAX_RECORD_BYTES + 1]),
            Err(DecodeError::TooLong {
                field: "record",
                ..
            })
        ));

        // Bad UTF-8 in the name, even with a valid signature.
        let b = forge(|u| u[NAME_AT + 1] = 0xff);
        assert_eq!(
            Unchecked::<SignedRecord>::decode(&b).unwrap_err(),
            DecodeError::BadUtf8 { field: "name" }
        );
        // A keyword count over the bound.
        let name_len = usize::from(good[NAME_AT]);
        let b = forge(|u| u[NAME_AT + 1 + name_len] = 17);
        assert!(matches!(
            Unchecked::<SignedRecord>::decode(&b),
            Err(DecodeError::TooLong {
                field: "keywords",
                len: 17,
                ..
            })
        ));
        // An oversize keyword length.
        let b = forge(|u| u[NAME_AT + 2 + name_len] = 33);
        assert!(matches!(
            Unchecked::<SignedRecord>::decode(&b),
            Err(DecodeError::TooLong {
                field: "keyword",
                len: 33,
                ..
            })
        ));
    }

    #[test]
    fn check_rejections() {
        // Validly signed but non-canonical: keywords swapped out of order.
        let name_len = vector_record().name.len();
        let b = forge(|u| {
            let at = NAME_AT + 2 + name_len; // first keyword length byte
            assert_eq!(&u[at..at + 6], b"\x05hello");
            u[at + 1..at + 6].copy_from_slice(b"zzzzz");
        });
        assert!(matches!(
            check(&b, CREATED),
            Err(RecordError::NotCanonical {
                field: "keywords",
                ..
            })
        ));

        // Wrong signer: a different key signs, the header names ours.
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let mut b = vector_record().sign(pseudonym()).unwrap().to_bytes();
        let n = b.len() - SIGNATURE_BYTES;
        let sig = other.sign(&signed_message(&b[..n]));
        b[n..].copy_from_slice(&sig.to_bytes());
        assert_eq!(check(&b, CREATED).unwrap_err(), RecordError::BadSignature);

        // Signed without the context string.
        let mut b = vector_record().sign(pseudonym()).unwrap().to_bytes();
        let sig = pseudonym().signing_key().sign(&b[..n]);
        b[n..].copy_from_slice(&sig.to_bytes());
        assert_eq!(check(&b, CREATED).unwrap_err(), RecordError::BadSignature);
    }

    #[test]
    fn bad_publisher_pow() {
        let p = pseudonym();
        let b = vector_record().sign(p).unwrap().to_bytes();
        let achieved = crate::pow::work_bits(
            crate::pow::PowDomain::Publisher,
            p.publisher().id().as_bytes(),
            p.publisher().pow,
        );
        let harder = PowParams {
            difficulty_bits: u8::try_from(achieved + 1).unwrap(),
        };
        assert!(matches!(
            Unchecked::<SignedRecord>::decode(&b)
                .unwrap()
                .check(CREATED, harder),
            Err(RecordError::BadPow(_))
        ));
        // A pseudonym made with no work at all is refused at TESTNET.
        let lazy = (0u8..)
            .map(|s| {
                Pseudonym::from_key(
                    SigningKey::from_bytes(&[s; 32]),
                    PowParams { difficulty_bits: 0 },
                )
            })
            .find(|p| p.publisher().check_pow(PowParams::TESTNET).is_err())
            .unwrap();
        let b = vector_record().sign(&lazy).unwrap().to_bytes();
        assert!(matches!(check(&b, CREATED), Err(RecordError::BadPow(_))));
    }

    #[test]
    fn every_byte_flip_is_rejected() {
        let good = hex::decode(VECTOR_RECORD_HEX).unwrap();
        for i in 0..good.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut b = good.clone();
                b[i] ^= mask;
                assert!(check(&b, VECTOR_NOW).is_err(), "byte {i} ^ {mask:#x}");
            }
        }
    }

    #[test]
    fn keywords_from_name_examples() {
        assert_eq!(
            keywords_from_name("The.Big-Movie (2024) [1080p] a b.mkv"),
            ["1080p", "2024", "big", "mkv", "movie", "the"]
        );
        assert_eq!(keywords_from_name("ÉCOLE école"), ["école"]);
        assert!(keywords_from_name("").is_empty());
        let long = "x".repeat(100);
        assert_eq!(keywords_from_name(&long), ["x".repeat(MAX_KEYWORD_BYTES)]);
        let many: String = (0..40).map(|i| format!("w{i:02} ")).collect();
        let kws = keywords_from_name(&many);
        assert_eq!(kws.len(), MAX_KEYWORDS);
        assert_eq!(kws.first().map(String::as_str), Some("w00"));
    }

    fn record_strategy() -> impl Strategy<Value = ContentRecord> {
        (
            any::<[u8; 32]>(),
            any::<u64>(),
            "[^/\\\\\\p{Cc}\\p{Cf}]{1,60}",
            "\\PC{0,120}",
            proptest::option::of("[a-z0-9.+-]{1,30}/[a-z0-9.+-]{1,30}"),
            0u64..(u64::MAX / 2),
            1u64..=MAX_LIFETIME_SECS,
        )
            .prop_filter("not a file name", |(_, _, name, ..)| {
                name != "." && name != ".."
            })
            .prop_map(
                |(id, size, name, words, media_type, created, life)| ContentRecord {
                    content_id: ContentId::from_bytes(id),
                    size,
                    name,
                    keywords: keywords_from_name(&words),
                    media_type,
                    created,
                    expires: created + life,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn prop_round_trip(rec in record_strategy()) {
            let signed = rec.sign(pseudonym()).unwrap();
            let bytes = signed.to_bytes();
            prop_assert!(bytes.len() <= MAX_RECORD_BYTES);
            let checked = check(&bytes, rec.created).unwrap();
            prop_assert_eq!(checked.record(), &rec);
            prop_assert_eq!(checked.to_bytes(), bytes);
        }

        #[test]
        fn prop_tamper_is_rejected(rec in record_strategy(), pos in any::<prop::sample::Index>(), mask in 1u8..=255) {
            let mut bytes = rec.sign(pseudonym()).unwrap().to_bytes();
            let i = pos.index(bytes.len());
            bytes[i] ^= mask;
            prop_assert!(check(&bytes, rec.created).is_err());
        }

        #[test]
        fn prop_keywords_are_canonical(name in "\\PC{0,200}") {
            let kws = keywords_from_name(&name);
            prop_assert!(kws.len() <= MAX_KEYWORDS);
            prop_assert!(kws.iter().all(|k| is_canonical_keyword(k)));
            prop_assert!(kws.windows(2).all(|w| w[0] < w[1]));
        }

        #[test]
        fn prop_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
            if let Ok(u) = Unchecked::<SignedRecord>::decode(&bytes) {
                let _ = u.check(CREATED, PowParams::TESTNET);
            }
        }
    }
}
