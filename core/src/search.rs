//! Publication and search, the pure parts: what a query is, the one
//! matcher, what an index holder answers, the sealed answer, the messages
//! on circuits and on overlay links, and the searcher's ranking.
//!
//! The node's state for all this (the index holder's store, reverse paths,
//! pending searches) is in `node/search/`; the daemon and the simulator use
//! the same matcher and ranking from here.
//!
//! # Messages
//!
//! - On a circuit, client → last hop: [`ToExit`] (publish records, or start
//!   a search with a walk id and a reply key), in a
//!   [`crate::circuit::CircuitMsg::Search`]. Last hop → client: [`FromExit`]
//!   (a sealed answer), in a [`crate::circuit::CircuitMsg::SearchReply`].
//! - On overlay links: [`Walk`] (a query or publication taking one step of
//!   a random walk; or, in the flood baseline only, a flood with a TTL) and
//!   [`WalkReply`] (a sealed answer going back along the walk's reverse
//!   path to the exit).
//!
//! A walk carries no hop count: each node continues it with a fixed
//! probability, so a relay learns nothing of its distance from the exit
//! from the message.

use std::collections::BTreeMap;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::content::ContentId;
use crate::identity::PublisherId;
use crate::provider::SignedProvider;
use crate::rating::{SignedRating, SignerTag, Verdict};
use crate::record::{ContentRecord, SignedRecord, keywords_from_name};
use crate::wire::{DecodeError, Reader, Writer};

/// Most bytes of one search message (fits a relay cell's data and a link
/// cell's payload).
pub const MAX_SEARCH_BYTES: usize = crate::circuit::MAX_DATA_BYTES;
/// What the records of one answer may take: a message less what fits
/// around them (the walk id, the tag, the ephemeral key, the count).
pub const ANSWER_BUDGET_BYTES: usize = MAX_SEARCH_BYTES - 128;
/// The largest rating an answer can carry: one quarter of the budget (the
/// ratings' share), less its length prefix. `rating::signer_tags` names no
/// more signers than keep a rating within it.
pub const MAX_ANSWERED_RATING_BYTES: usize = ANSWER_BUDGET_BYTES / 4 - 2;
/// Most words in a query.
pub const MAX_QUERY_WORDS: usize = 8;
/// Most records in one publish message or one answer.
pub const MAX_RECORDS_PER_MSG: usize = 16;

/// The id of one walk (and the cookie of its reply point): random, so that
/// only the exit that started it can match its replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalkId(pub [u8; 16]);

/// What a search looks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// Records whose keywords include every one of these (canonical
    /// keywords, see [`keywords_from_name`]).
    Words(Vec<String>),
    /// Records of exactly this content.
    Content(ContentId),
}

/// Why a query text is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// No word of two or more letters or digits.
    #[error("the query has no word of two or more letters or digits")]
    Empty,
    /// More than [`MAX_QUERY_WORDS`] words.
    #[error("the query has more than {MAX_QUERY_WORDS} words")]
    TooManyWords,
}

impl Query {
    /// A query from what a user typed: 64 hex digits are a content id;
    /// anything else is cut into canonical keywords, the same way record
    /// keywords are made from file names.
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        let t = text.trim();
        if t.len() == 64
            && let Ok(id) = t.to_ascii_lowercase().parse::<ContentId>()
        {
            return Ok(Query::Content(id));
        }
        let words = keywords_from_name(t);
        if words.is_empty() {
            return Err(QueryError::Empty);
        }
        if words.len() > MAX_QUERY_WORDS {
            return Err(QueryError::TooManyWords);
        }
        Ok(Query::Words(words))
    }

    /// The one matcher: every query word is one of the record's keywords
    /// (keywords are canonical: lowercased, alphanumeric, as
    /// [`keywords_from_name`] makes them from the name), or the content id
    /// is the record's.
    pub fn matches(&self, record: &ContentRecord) -> bool {
        self.matches_parts(&record.keywords, &record.content_id)
    }

    /// [`Query::matches`] on a record's keywords and content id (for a
    /// store that keeps them apart from the record).
    pub fn matches_parts(&self, keywords: &[String], content_id: &ContentId) -> bool {
        match self {
            Query::Words(words) => words.iter().all(|w| keywords.iter().any(|k| k == w)),
            Query::Content(id) => content_id == id,
        }
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Query::Words(words) => {
                w.put_u8(0);
                w.put_u8(words.len() as u8);
                for word in words {
                    // Canonical keywords are at most 32 bytes.
                    let _ = w.put_bytes_u8len(word.as_bytes());
                }
            }
            Query::Content(id) => {
                w.put_u8(1);
                w.put_bytes(id.as_bytes());
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Query, DecodeError> {
        match r.get_u8()? {
            0 => {
                let n = usize::from(r.get_u8()?);
                if n == 0 || n > MAX_QUERY_WORDS {
                    return Err(DecodeError::BadValue {
                        field: "query",
                        reason: "word count",
                    });
                }
                let mut words = Vec::with_capacity(n);
                for _ in 0..n {
                    let word = r.get_str_u8len(crate::record::MAX_KEYWORD_BYTES, "query word")?;
                    if !crate::record::is_canonical_keyword(word) {
                        return Err(DecodeError::BadValue {
                            field: "query word",
                            reason: "not a canonical keyword",
                        });
                    }
                    words.push(word.to_owned());
                }
                words.sort();
                words.dedup();
                Ok(Query::Words(words))
            }
            1 => Ok(Query::Content(ContentId::from_bytes(r.get_array()?))),
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

/// Client → last hop, inside a circuit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToExit {
    /// Replicate these signed records (encodings) on index holders.
    Publish {
        /// Record encodings, unchecked.
        records: Vec<Vec<u8>>,
    },
    /// Start a search; answers come back sealed to `reply_key`.
    Search {
        /// The walk id (and reply cookie).
        walk: WalkId,
        /// What to look for.
        query: Query,
        /// An ephemeral x25519 public key of the searcher.
        reply_key: [u8; 32],
    },
}

/// Last hop → client, inside a circuit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FromExit {
    /// One index holder's sealed answer to the search with this walk id.
    Answer {
        /// The walk id.
        walk: WalkId,
        /// See [`seal`].
        sealed: Vec<u8>,
    },
}

/// One step of a walk, on an overlay link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Walk {
    /// The walk id (index holders answer once per id; reverse paths are
    /// keyed by it).
    pub id: WalkId,
    /// The flood baseline's remaining TTL (None for walks: a walk carries
    /// no hop count).
    pub flood_ttl: Option<u8>,
    /// A query or a publication.
    pub body: WalkBody,
}

/// What a walk carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalkBody {
    /// A search.
    Query {
        /// What to look for.
        query: Query,
        /// Answers are sealed to this key.
        reply_key: [u8; 32],
    },
    /// Records to store.
    Publish {
        /// Record encodings, unchecked.
        records: Vec<Vec<u8>>,
    },
}

/// A sealed answer going back to the exit, on an overlay link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalkReply {
    /// The walk id.
    pub id: WalkId,
    /// See [`seal`].
    pub sealed: Vec<u8>,
}

fn put_records(w: &mut Writer, records: &[Vec<u8>]) {
    w.put_u8(records.len() as u8);
    for r in records {
        w.put_u16(r.len() as u16);
        w.put_bytes(r);
    }
}

fn get_records(r: &mut Reader<'_>) -> Result<Vec<Vec<u8>>, DecodeError> {
    let n = usize::from(r.get_u8()?);
    if n > MAX_RECORDS_PER_MSG {
        return Err(DecodeError::TooLong {
            field: "records",
            len: n,
            max: MAX_RECORDS_PER_MSG,
        });
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(
            r.get_bytes_u16len(crate::record::MAX_RECORD_BYTES, "record")?
                .to_vec(),
        );
    }
    Ok(out)
}

fn finish(w: Writer) -> Option<Vec<u8>> {
    (w.len() <= MAX_SEARCH_BYTES).then(|| w.into_vec())
}

impl ToExit {
    /// The encoding, or None if it would not fit one message.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut w = Writer::new();
        match self {
            ToExit::Publish { records } => {
                w.put_u8(0);
                if records.len() > MAX_RECORDS_PER_MSG {
                    return None;
                }
                put_records(&mut w, records);
            }
            ToExit::Search {
                walk,
                query,
                reply_key,
            } => {
                w.put_u8(1);
                w.put_bytes(&walk.0);
                query.encode(&mut w);
                w.put_bytes(reply_key);
            }
        }
        finish(w)
    }

    /// Decodes one message; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<ToExit, DecodeError> {
        let mut r = Reader::new(bytes);
        let m = match r.get_u8()? {
            0 => ToExit::Publish {
                records: get_records(&mut r)?,
            },
            1 => ToExit::Search {
                walk: WalkId(r.get_array()?),
                query: Query::decode(&mut r)?,
                reply_key: r.get_array()?,
            },
            other => return Err(DecodeError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(m)
    }
}

impl FromExit {
    /// The encoding, or None if it would not fit one message.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut w = Writer::new();
        let FromExit::Answer { walk, sealed } = self;
        w.put_u8(0);
        w.put_bytes(&walk.0);
        w.put_bytes_u16len(sealed).ok()?;
        finish(w)
    }

    /// Decodes one message.
    pub fn decode(bytes: &[u8]) -> Result<FromExit, DecodeError> {
        let mut r = Reader::new(bytes);
        let m = match r.get_u8()? {
            0 => FromExit::Answer {
                walk: WalkId(r.get_array()?),
                sealed: r
                    .get_bytes_u16len(MAX_SEARCH_BYTES, "sealed answer")?
                    .to_vec(),
            },
            other => return Err(DecodeError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(m)
    }
}

impl Walk {
    /// The encoding, or None if it would not fit one link cell.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut w = Writer::new();
        w.put_bytes(&self.id.0);
        match self.flood_ttl {
            None => w.put_u8(0),
            Some(t) => {
                w.put_u8(1);
                w.put_u8(t);
            }
        }
        match &self.body {
            WalkBody::Query { query, reply_key } => {
                w.put_u8(0);
                query.encode(&mut w);
                w.put_bytes(reply_key);
            }
            WalkBody::Publish { records } => {
                w.put_u8(1);
                if records.len() > MAX_RECORDS_PER_MSG {
                    return None;
                }
                put_records(&mut w, records);
            }
        }
        finish(w)
    }

    /// Decodes one walk step.
    pub fn decode(bytes: &[u8]) -> Result<Walk, DecodeError> {
        let mut r = Reader::new(bytes);
        let id = WalkId(r.get_array()?);
        let flood_ttl = match r.get_u8()? {
            0 => None,
            1 => Some(r.get_u8()?),
            other => return Err(DecodeError::UnknownKind(other)),
        };
        let body = match r.get_u8()? {
            0 => WalkBody::Query {
                query: Query::decode(&mut r)?,
                reply_key: r.get_array()?,
            },
            1 => WalkBody::Publish {
                records: get_records(&mut r)?,
            },
            other => return Err(DecodeError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(Walk {
            id,
            flood_ttl,
            body,
        })
    }
}

impl WalkReply {
    /// The encoding, or None if it would not fit one link cell.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut w = Writer::new();
        w.put_bytes(&self.id.0);
        w.put_bytes_u16len(&self.sealed).ok()?;
        finish(w)
    }

    /// Decodes one reply.
    pub fn decode(bytes: &[u8]) -> Result<WalkReply, DecodeError> {
        let mut r = Reader::new(bytes);
        let id = WalkId(r.get_array()?);
        let sealed = r
            .get_bytes_u16len(MAX_SEARCH_BYTES, "sealed answer")?
            .to_vec();
        r.finish()?;
        Ok(WalkReply { id, sealed })
    }
}

/// A pseudonym-signed record about a file that an index holder answers
/// word queries with: a content record or a rating.
pub trait Answerable {
    /// The file's fields.
    fn record(&self) -> &ContentRecord;
    /// Who signed it.
    fn publisher_id(&self) -> PublisherId;
    /// Its canonical encoding.
    fn encoded(&self) -> &[u8];
}

impl Answerable for SignedRecord {
    fn record(&self) -> &ContentRecord {
        SignedRecord::record(self)
    }
    fn publisher_id(&self) -> PublisherId {
        self.publisher().id()
    }
    fn encoded(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Answerable for SignedRating {
    fn record(&self) -> &ContentRecord {
        SignedRating::record(self)
    }
    fn publisher_id(&self) -> PublisherId {
        self.publisher().id()
    }
    fn encoded(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// What one index holder answers to one query: matching records, at most
/// `max_records` in all, at most `max_bytes` of encodings, and at most
/// `max_per_publisher` from one publisher. Content ids are taken one at a
/// time in turn, in an order drawn from the walk id (`order`), so that
/// neither many decoy ids nor ids chosen to sort first can keep the others
/// out; a record that does not fit the byte budget is skipped, not the
/// rest.
pub fn select_answer<'a, R: Answerable>(
    query: &Query,
    held: impl Iterator<Item = &'a R>,
    order: &WalkId,
    max_records: usize,
    max_bytes: usize,
    max_per_publisher: usize,
) -> Vec<&'a R> {
    let mut by_content: BTreeMap<ContentId, Vec<&'a R>> = BTreeMap::new();
    for r in held {
        if query.matches(r.record()) {
            by_content.entry(r.record().content_id).or_default().push(r);
        }
    }
    let mut lists: Vec<([u8; 32], Vec<&'a R>)> = by_content
        .into_iter()
        .map(|(c, mut list)| {
            // Within a content id, signers in an order drawn from the walk
            // id too: a pseudonym ground to sort first is not always taken.
            list.sort_by_cached_key(|r| {
                let mut key = [0u8; 48];
                key[..16].copy_from_slice(&order.0);
                key[16..].copy_from_slice(r.publisher_id().as_bytes());
                *blake3::hash(&key).as_bytes()
            });
            let mut key = [0u8; 48];
            key[..16].copy_from_slice(&order.0);
            key[16..].copy_from_slice(c.as_bytes());
            (*blake3::hash(&key).as_bytes(), list)
        })
        .collect();
    lists.sort_by_key(|(k, _)| *k);
    let mut per_publisher: BTreeMap<PublisherId, usize> = BTreeMap::new();
    let mut out = Vec::new();
    let mut bytes = 0;
    let longest = lists.iter().map(|(_, l)| l.len()).max().unwrap_or(0);
    for round in 0..longest {
        for (_, list) in &lists {
            if out.len() >= max_records {
                return out;
            }
            let Some(r) = list.get(round) else {
                continue;
            };
            let n = per_publisher.entry(r.publisher_id()).or_default();
            let size = r.encoded().len() + 2;
            if *n < max_per_publisher && bytes + size <= max_bytes {
                *n += 1;
                bytes += size;
                out.push(*r);
            }
        }
    }
    out
}

/// Whether rating `r` names one of `signers`.
fn names_any(r: &SignedRating, signers: &std::collections::BTreeSet<SignerTag>) -> bool {
    r.rating().signers.iter().any(|t| signers.contains(t))
}

/// The signer tags of `records`.
fn tags_of<'a>(
    records: impl Iterator<Item = &'a SignedRecord>,
) -> std::collections::BTreeSet<SignerTag> {
    records
        .map(|r| SignerTag::of(&r.publisher().id()))
        .collect()
}

/// Whether any of `held` is a rating of a file `query` does not match
/// that names a signer of `records` (what [`select_signer_ratings`] could
/// take), stopping at the first.
pub fn any_signer_rating<'a>(
    query: &Query,
    records: impl Iterator<Item = &'a SignedRecord>,
    mut held: impl Iterator<Item = &'a SignedRating>,
) -> bool {
    let signers = tags_of(records);
    !signers.is_empty() && held.any(|r| !query.matches(r.record()) && names_any(r, &signers))
}

/// Ratings of other files to put in an answer to `query` next to
/// `records`: those that name a signer of one of them
/// ([`crate::rating::SignerTag`]), either verdict, of files the query does
/// not match (those go with the records), one per rater, at most `max`
/// within `max_bytes`, in an order drawn from the walk id (never by how
/// many signers a rating names: a framer naming everyone gains nothing).
/// This is how a searcher learns what other users said of a pseudonym that
/// signs under many names.
pub fn select_signer_ratings<'a>(
    query: &Query,
    records: &[&SignedRecord],
    held: impl Iterator<Item = &'a SignedRating>,
    order: &WalkId,
    max: usize,
    max_bytes: usize,
) -> Vec<&'a SignedRating> {
    let signers = tags_of(records.iter().copied());
    if signers.is_empty() || max == 0 {
        return Vec::new();
    }
    let mut list: Vec<([u8; 32], &'a SignedRating)> = held
        .filter(|r| !query.matches(r.record()) && names_any(r, &signers))
        .map(|r| {
            let mut key = [0u8; 80];
            key[..16].copy_from_slice(&order.0);
            key[16..48].copy_from_slice(r.publisher().id().as_bytes());
            key[48..].copy_from_slice(r.record().content_id.as_bytes());
            (*blake3::hash(&key).as_bytes(), r)
        })
        .collect();
    list.sort_by_key(|(k, _)| *k);
    let mut raters = std::collections::BTreeSet::new();
    let (mut out, mut bytes) = (Vec::new(), 0);
    for (_, r) in list {
        if out.len() >= max {
            break;
        }
        let size = r.as_bytes().len() + 2;
        if bytes + size <= max_bytes && raters.insert(r.publisher().id()) {
            bytes += size;
            out.push(r);
        }
    }
    out
}

/// The provider records for content `id` to put in one answer: at most
/// `max`, within `max_bytes`, one per service, in an order drawn from the
/// walk id (so no service is always first, and none can choose to be).
pub fn select_providers<'a>(
    held: impl Iterator<Item = &'a SignedProvider>,
    id: ContentId,
    order: &WalkId,
    max: usize,
    max_bytes: usize,
) -> Vec<&'a SignedProvider> {
    let mut list: Vec<([u8; 32], &'a SignedProvider)> = held
        .filter(|p| p.record().content_id == id)
        .map(|p| {
            let mut key = [0u8; 48];
            key[..16].copy_from_slice(&order.0);
            key[16..].copy_from_slice(p.publisher().id().as_bytes());
            (*blake3::hash(&key).as_bytes(), p)
        })
        .collect();
    list.sort_by_key(|(k, _)| *k);
    let mut out = Vec::new();
    let mut bytes = 0;
    for (_, p) in list {
        let size = p.as_bytes().len() + 2;
        if out.len() < max && bytes + size <= max_bytes {
            bytes += size;
            out.push(p);
        }
    }
    out
}

/// Key-derivation context for sealed answers.
const SEAL_CONTEXT: &str = "veil 2026 search answer seal v1";

/// Why a sealed answer did not open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Too short, or the tag did not verify.
    #[error("the answer does not open with this key")]
    Garbled,
    /// It opened but does not decode.
    #[error("the answer does not decode")]
    Malformed,
}

fn seal_key(dh: &[u8; 32], eph: &[u8; 32], to: &[u8; 32]) -> Key {
    let mut input = [0u8; 96];
    input[..32].copy_from_slice(dh);
    input[32..64].copy_from_slice(eph);
    input[64..].copy_from_slice(to);
    Key::from(blake3::derive_key(SEAL_CONTEXT, &input))
}

/// Seals record encodings to the searcher's `reply_key`: an ephemeral
/// x25519 key (from `seed`), a key derived from the DH output and both
/// public keys, ChaCha20-Poly1305 under it (one message per key, so a zero
/// nonce). Only the searcher can open it; relays on the way see its length.
pub fn seal(reply_key: &[u8; 32], records: &[Vec<u8>], seed: [u8; 32]) -> Option<Vec<u8>> {
    let eph = StaticSecret::from(seed);
    let eph_pub = PublicKey::from(&eph);
    let dh = eph.diffie_hellman(&PublicKey::from(*reply_key));
    if !dh.was_contributory() {
        return None;
    }
    let key = seal_key(dh.as_bytes(), eph_pub.as_bytes(), reply_key);
    let mut w = Writer::new();
    if records.len() > MAX_RECORDS_PER_MSG {
        return None;
    }
    put_records(&mut w, records);
    let ct = ChaCha20Poly1305::new(&key)
        .encrypt(&Nonce::default(), w.as_slice())
        .ok()?;
    let mut out = eph_pub.as_bytes().to_vec();
    out.extend_from_slice(&ct);
    Some(out)
}

/// Opens a sealed answer with the searcher's ephemeral secret.
pub fn open(secret: &StaticSecret, sealed: &[u8]) -> Result<Vec<Vec<u8>>, OpenError> {
    let (eph, ct) = sealed.split_at_checked(32).ok_or(OpenError::Garbled)?;
    let eph: [u8; 32] = eph.try_into().map_err(|_| OpenError::Garbled)?;
    let me = PublicKey::from(secret);
    let dh = secret.diffie_hellman(&PublicKey::from(eph));
    let key = seal_key(dh.as_bytes(), &eph, me.as_bytes());
    let plain = ChaCha20Poly1305::new(&key)
        .decrypt(&Nonce::default(), ct)
        .map_err(|_| OpenError::Garbled)?;
    let mut r = Reader::new(&plain);
    let records = get_records(&mut r).map_err(|_| OpenError::Malformed)?;
    r.finish().map_err(|_| OpenError::Malformed)?;
    Ok(records)
}

/// What a searcher knows of publishers: when it first saw each pseudonym
/// (its own clock, never the publisher's timestamps) and the standing
/// each earned from what happened after downloads (fed by the transfer
/// code; persisted by the daemon).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    first_seen_ms: BTreeMap<PublisherId, u64>,
    score: BTreeMap<PublisherId, i32>,
}

/// How long a pseudonym must be known before it counts fully in ranking.
pub const AGING_MS: u64 = 24 * 3600 * 1000;
/// Standing a rater gains when our user judged as it did.
pub const RATER_AGREED: i32 = 1;
/// Standing a rater gets when our user judged the other way: below zero,
/// where it weighs nothing.
pub const RATER_DISAGREED: i32 = -100;
/// Most pseudonyms remembered (the oldest-seen are kept).
pub const MAX_STANDING_ENTRIES: usize = 1 << 16;

impl Standing {
    /// Notes that we saw `id` at `now` (the first time counts).
    pub fn seen(&mut self, id: PublisherId, now: u64) {
        if self.first_seen_ms.len() >= MAX_STANDING_ENTRIES && !self.first_seen_ms.contains_key(&id)
        {
            return;
        }
        self.first_seen_ms.entry(id).or_insert(now);
    }

    /// Adds `delta` to `id`'s standing (a kept, verified download: +1; a
    /// decoy the user rated fake: a large negative).
    pub fn adjust(&mut self, id: PublisherId, delta: i32) {
        let s = self.score.entry(id).or_default();
        *s = s.saturating_add(delta).clamp(-1000, 1000);
    }

    /// Our user judged content `id` (`verdict`): applies [`agreement`].
    /// Returns how many raters agreed and disagreed.
    pub fn judged(
        &mut self,
        id: &ContentId,
        verdict: Verdict,
        ratings: &[SignedRating],
        me: Option<&PublisherId>,
    ) -> (usize, usize) {
        let deltas = agreement(id, verdict, ratings, me);
        let agreed = deltas.iter().filter(|(_, d)| *d > 0).count();
        for (rater, delta) in &deltas {
            self.adjust(*rater, *delta);
        }
        (agreed, deltas.len() - agreed)
    }

    /// When we first saw `id`.
    pub fn first_seen(&self, id: &PublisherId) -> Option<u64> {
        self.first_seen_ms.get(id).copied()
    }

    /// `id`'s standing (0 if unknown).
    pub fn score(&self, id: &PublisherId) -> i32 {
        self.score.get(id).copied().unwrap_or(0)
    }

    /// Restores one persisted entry.
    pub fn restore(&mut self, id: PublisherId, first_seen_ms: u64, score: i32) {
        self.first_seen_ms.insert(id, first_seen_ms);
        if score != 0 {
            self.score.insert(id, score);
        }
    }

    /// Every entry: (pseudonym, first seen, standing).
    pub fn entries(&self) -> Vec<(PublisherId, u64, i32)> {
        self.first_seen_ms
            .iter()
            .map(|(id, t)| (*id, *t, self.score(id)))
            .collect()
    }

    /// The weight of one pseudonym's vote: 0.1 when first seen, growing
    /// linearly to 1 over [`AGING_MS`]; a negative standing takes it to 0,
    /// a positive one adds up to 1 more.
    pub fn weight(&self, id: &PublisherId, now: u64) -> f64 {
        let age = self
            .first_seen(id)
            .map_or(0, |t| now.saturating_sub(t))
            .min(AGING_MS);
        let aged = 0.1 + 0.9 * (age as f64 / AGING_MS as f64);
        let s = self.score(id);
        if s < 0 {
            0.0
        } else {
            aged + (f64::from(s.min(10)) / 10.0)
        }
    }
}

/// What our user's judgment of content `id` (`verdict`) does to the
/// raters of `id` in `ratings` (but `me`), once each: one who said the
/// same gains [`RATER_AGREED`], one who said the other gets
/// [`RATER_DISAGREED`] and weighs nothing from then on (Credence's rule,
/// by agreement on shared ids).
pub fn agreement(
    id: &ContentId,
    verdict: Verdict,
    ratings: &[SignedRating],
    me: Option<&PublisherId>,
) -> Vec<(PublisherId, i32)> {
    // A rater that said both counts as having disagreed.
    let mut all_same: BTreeMap<PublisherId, bool> = BTreeMap::new();
    for r in ratings.iter().filter(|r| r.record().content_id == *id) {
        let rater = r.publisher().id();
        if Some(&rater) == me {
            continue;
        }
        let same = r.rating().verdict == verdict;
        *all_same.entry(rater).or_insert(same) &= same;
    }
    all_same
        .into_iter()
        .map(|(rater, same)| (rater, if same { RATER_AGREED } else { RATER_DISAGREED }))
        .collect()
}

/// One content id in ranked results.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    /// The content.
    pub content_id: ContentId,
    /// The name most publishers gave it (ties: the smallest).
    pub name: String,
    /// Its size (as most publishers gave it).
    pub size: u64,
    /// Distinct publisher pseudonyms that signed a record for it.
    pub publishers: usize,
    /// The sum of those pseudonyms' weights ([`Standing::weight`]), and
    /// of the weights of raters who rated it good.
    pub score: f64,
    /// Distinct raters (not its publishers) who rated it good, and fake.
    pub rated_good: usize,
    /// See `rated_good`.
    pub rated_fake: usize,
    /// Of its publishers, those raters' signer tags discredit (see
    /// [`rank`]): they add nothing to `score`.
    pub discredited: usize,
    /// Raters' weight says fake ([`DISPUTE_MARGIN`]), or every publisher
    /// is discredited: ranked after every content id that is not.
    pub disputed: bool,
}

/// How much the weight of raters saying fake must exceed that of raters
/// saying good for a content id to be disputed: more than one rater seen
/// for the first time (so one misjudgment does not bury a real file).
pub const DISPUTE_MARGIN: f64 = 0.15;

/// Groups checked records by content id and ranks them: content ids that
/// raters dispute come last; then by the summed weight of their distinct
/// publishers and of the raters who rated them good (ties: more
/// publishers, then the content id). A rater's verdict on content it also
/// published is ignored, and each rater counts once per content id (its
/// first rating here). Uses only what the searcher knows: no address, no
/// timestamp a publisher chose.
///
/// Ratings also judge the pseudonyms they name as signers
/// ([`crate::rating::SignerTag`]), whatever file they rate, so `ratings`
/// may hold ratings of ids that are not among `records`: a publisher whose
/// namers' weight says fake by more than [`DISPUTE_MARGIN`] (each rater
/// once per publisher, fake if it named it in any fake rating; raters
/// that publish among `records` not at all) is *discredited* and adds
/// nothing to any score, nor to the tie-break; a content id all of whose
/// publishers are discredited is disputed.
pub fn rank(
    records: &[SignedRecord],
    ratings: &[SignedRating],
    standing: &Standing,
    now: u64,
) -> Vec<Ranked> {
    let mut groups: BTreeMap<ContentId, BTreeMap<PublisherId, &SignedRecord>> = BTreeMap::new();
    for r in records {
        groups
            .entry(r.record().content_id)
            .or_default()
            .entry(r.publisher().id())
            .or_insert(r);
    }
    // Each rater's verdict per id; a rater that signed both verdicts for
    // one id (under two names, say) counts for neither.
    let mut verdicts: BTreeMap<ContentId, BTreeMap<PublisherId, Option<Verdict>>> = BTreeMap::new();
    for r in ratings {
        let id = r.record().content_id;
        let rater = r.publisher().id();
        if groups.get(&id).is_some_and(|p| p.contains_key(&rater)) {
            continue;
        }
        let v = r.rating().verdict;
        verdicts
            .entry(id)
            .or_default()
            .entry(rater)
            .and_modify(|old| {
                if *old != Some(v) {
                    *old = None;
                }
            })
            .or_insert(Some(v));
    }
    // Each rater's verdict on each pseudonym it names, over every rating
    // here, of these ids or of others: fake if it named it as a signer of
    // anything it judged fake (signing real files too does not wash that
    // out). Raters that publish in these results are not counted: a
    // coalition does not vouch for itself.
    let publishing: std::collections::BTreeSet<PublisherId> =
        records.iter().map(|r| r.publisher().id()).collect();
    let mut named: BTreeMap<SignerTag, BTreeMap<PublisherId, Verdict>> = BTreeMap::new();
    for r in ratings {
        let rater = r.publisher().id();
        if publishing.contains(&rater) {
            continue;
        }
        let v = r.rating().verdict;
        for t in &r.rating().signers {
            named
                .entry(*t)
                .or_default()
                .entry(rater)
                .and_modify(|old| {
                    if v == Verdict::Fake {
                        *old = Verdict::Fake;
                    }
                })
                .or_insert(v);
        }
    }
    let discredited = |p: &PublisherId| -> bool {
        let Some(by) = named.get(&SignerTag::of(p)) else {
            return false;
        };
        let (mut good, mut fake) = (0.0, 0.0);
        for (rater, v) in by {
            match v {
                Verdict::Good => good += standing.weight(rater, now),
                Verdict::Fake => fake += standing.weight(rater, now),
            }
        }
        fake > good + DISPUTE_MARGIN
    };
    let mut out: Vec<Ranked> = groups
        .into_iter()
        .map(|(content_id, pubs)| {
            let mut names: BTreeMap<(&str, u64), usize> = BTreeMap::new();
            for r in pubs.values() {
                *names
                    .entry((r.record().name.as_str(), r.record().size))
                    .or_default() += 1;
            }
            let ((name, size), _) = names
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(k, v)| (*k, *v))
                .unwrap_or((("", 0), 0));
            let (mut good, mut fake) = (0.0, 0.0);
            let (mut rated_good, mut rated_fake) = (0, 0);
            for (rater, v) in verdicts.get(&content_id).into_iter().flatten() {
                let w = standing.weight(rater, now);
                match v {
                    None => {}
                    Some(Verdict::Good) => {
                        good += w;
                        rated_good += 1;
                    }
                    Some(Verdict::Fake) => {
                        fake += w;
                        rated_fake += 1;
                    }
                }
            }
            let standing_of: Vec<(&PublisherId, bool)> =
                pubs.keys().map(|id| (id, discredited(id))).collect();
            let discredited = standing_of.iter().filter(|(_, d)| *d).count();
            let score = standing_of
                .iter()
                .filter(|(_, d)| !*d)
                .map(|(id, _)| standing.weight(id, now))
                .sum::<f64>()
                + good;
            Ranked {
                content_id,
                name: name.to_owned(),
                size,
                publishers: pubs.len(),
                score,
                rated_good,
                rated_fake,
                discredited,
                disputed: fake > good + DISPUTE_MARGIN
                    || (discredited > 0 && discredited == pubs.len()),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        a.disputed
            .cmp(&b.disputed)
            .then(b.score.total_cmp(&a.score))
            .then((b.publishers - b.discredited).cmp(&(a.publishers - a.discredited)))
            .then(a.content_id.cmp(&b.content_id))
    });
    out
}

#[cfg(test)]
mod tests;
