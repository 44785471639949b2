//! The index holder's store: checked records only, bounded per publisher
//! and in total, expired ones dropped, never our own.

use std::collections::BTreeMap;

use crate::content::ContentId;
use crate::identity::PublisherId;
use crate::provider::SignedProvider;
use crate::rating::SignedRating;
use crate::record::SignedRecord;

/// What an index holds: a checked record of some kind.
pub(super) trait Stored: Clone {
    fn publisher_id(&self) -> PublisherId;
    fn content_id(&self) -> ContentId;
    fn created(&self) -> u64;
    fn expires(&self) -> u64;
}

impl Stored for SignedRecord {
    fn publisher_id(&self) -> PublisherId {
        self.publisher().id()
    }
    fn content_id(&self) -> ContentId {
        self.record().content_id
    }
    fn created(&self) -> u64 {
        self.record().created
    }
    fn expires(&self) -> u64 {
        self.record().expires
    }
}

impl Stored for SignedProvider {
    fn publisher_id(&self) -> PublisherId {
        self.publisher().id()
    }
    fn content_id(&self) -> ContentId {
        self.record().content_id
    }
    fn created(&self) -> u64 {
        self.record().created
    }
    fn expires(&self) -> u64 {
        self.record().expires
    }
}

impl Stored for SignedRating {
    fn publisher_id(&self) -> PublisherId {
        self.publisher().id()
    }
    fn content_id(&self) -> ContentId {
        self.record().content_id
    }
    fn created(&self) -> u64 {
        self.record().created
    }
    fn expires(&self) -> u64 {
        self.record().expires
    }
}

/// Why a record was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Expired, or over the publisher's share of the store.
    Limit,
    /// Already held (same publisher, same content, same or newer).
    Duplicate,
}

#[derive(Debug, Clone)]
struct Held<R> {
    record: R,
    seq: u64,
}

/// Records held for others. When full, the publisher holding the most
/// records loses its oldest (so that a coalition filling the store evicts
/// itself, not honest publishers with a few records each).
#[derive(Debug)]
pub(super) struct Index<R> {
    held: BTreeMap<(PublisherId, ContentId), Held<R>>,
    per_publisher: BTreeMap<PublisherId, usize>,
    /// Arrival order, for eviction when full.
    order: BTreeMap<u64, (PublisherId, ContentId)>,
    seq: u64,
}

impl<R> Default for Index<R> {
    fn default() -> Self {
        Index {
            held: BTreeMap::new(),
            per_publisher: BTreeMap::new(),
            order: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<R: Stored> Index<R> {
    /// Records held.
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }

    /// Every record held.
    pub(super) fn records(&self) -> impl Iterator<Item = &R> {
        self.held.values().map(|h| &h.record)
    }

    /// Stores a checked record: at most `per_publisher` from one publisher
    /// (a newer record for the same content replaces the old one), at most
    /// `total` in all (the oldest stored goes first).
    pub(super) fn offer(
        &mut self,
        now_s: u64,
        record: R,
        per_publisher: usize,
        total: usize,
    ) -> Result<(), Refused> {
        if record.expires() <= now_s {
            return Err(Refused::Limit);
        }
        let key = (record.publisher_id(), record.content_id());
        if let Some(h) = self.held.get(&key) {
            if h.record.created() >= record.created() {
                // A republication: the record moves to the back of the
                // eviction order.
                let old = h.seq;
                self.seq += 1;
                self.order.remove(&old);
                self.order.insert(self.seq, key);
                if let Some(h) = self.held.get_mut(&key) {
                    h.seq = self.seq;
                }
                return Err(Refused::Duplicate);
            }
            self.remove(&key);
        }
        if self.per_publisher.get(&key.0).copied().unwrap_or(0) >= per_publisher {
            return Err(Refused::Limit);
        }
        while self.held.len() >= total.max(1) {
            // The publisher holding the most records loses its oldest: a
            // flood of pseudonyms evicts its own records before anyone
            // else's.
            let Some((&biggest, _)) = self.per_publisher.iter().max_by_key(|(id, n)| (**n, **id))
            else {
                break;
            };
            let Some(victim) = self.order.values().find(|(p, _)| *p == biggest).copied() else {
                break;
            };
            self.remove(&victim);
        }
        self.seq += 1;
        self.order.insert(self.seq, key);
        *self.per_publisher.entry(key.0).or_default() += 1;
        self.held.insert(
            key,
            Held {
                record,
                seq: self.seq,
            },
        );
        Ok(())
    }

    /// Drops records expired at `now_s`.
    pub(super) fn expire(&mut self, now_s: u64) {
        let gone: Vec<_> = self
            .held
            .iter()
            .filter(|(_, h)| h.record.expires() <= now_s)
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            self.remove(&k);
        }
    }

    fn remove(&mut self, key: &(PublisherId, ContentId)) {
        if let Some(h) = self.held.remove(key) {
            self.order.remove(&h.seq);
            if let Some(n) = self.per_publisher.get_mut(&key.0) {
                *n -= 1;
                if *n == 0 {
                    self.per_publisher.remove(&key.0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Pseudonym;
    use crate::pow::PowParams;
    use crate::record::{ContentRecord, keywords_from_name};
    use ed25519_dalek::SigningKey;

    fn rec(id: u16, who: u8) -> SignedRecord {
        let p = Pseudonym::from_key(SigningKey::from_bytes(&[who; 32]), PowParams::TESTNET);
        let mut cid = [0u8; 32];
        cid[..2].copy_from_slice(&id.to_be_bytes());
        ContentRecord {
            content_id: ContentId::from_bytes(cid),
            size: 1,
            name: format!("file {id}"),
            keywords: keywords_from_name(&format!("file {id}")),
            media_type: None,
            created: 1_000,
            expires: 10_000,
        }
        .sign(&p)
        .unwrap()
    }

    #[test]
    fn a_flood_of_pseudonyms_evicts_itself_not_honest_records() {
        let mut idx = Index::default();
        // Ten honest publishers with two records each.
        for who in 1..=10u8 {
            for i in 0..2 {
                idx.offer(100, rec(u16::from(who) * 10 + i, who), 50, 60)
                    .unwrap();
            }
        }
        // Two flooding pseudonyms send 50 records each into a store of 60.
        for who in [200u8, 201] {
            for i in 0..50 {
                let _ = idx.offer(100, rec(1000 + i, who), 50, 60);
            }
        }
        let honest = idx
            .records()
            .filter(|r| !matches!(r.publisher().id(), id if id == rec(0, 200).publisher().id() || id == rec(0, 201).publisher().id()))
            .count();
        assert_eq!(honest, 20, "every honest record stayed");
        assert_eq!(idx.len(), 60);
        // Expired records go.
        idx.expire(10_000);
        assert_eq!(idx.len(), 0);
    }
}
