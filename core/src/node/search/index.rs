//! The index holder's store: checked records only, bounded per publisher
//! and in total, expired ones dropped, never our own.

use std::collections::BTreeMap;

use crate::content::ContentId;
use crate::identity::PublisherId;
use crate::record::SignedRecord;

/// Why a record was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Expired, or over the publisher's share of the store.
    Limit,
    /// Already held (same publisher, same content, same or newer).
    Duplicate,
}

#[derive(Debug, Clone)]
struct Held {
    record: SignedRecord,
    seq: u64,
}

/// Records held for others, first in first out within the bounds.
#[derive(Debug, Default)]
pub(super) struct Index {
    held: BTreeMap<(PublisherId, ContentId), Held>,
    per_publisher: BTreeMap<PublisherId, usize>,
    /// Arrival order, for eviction when full.
    order: BTreeMap<u64, (PublisherId, ContentId)>,
    seq: u64,
}

impl Index {
    /// Records held.
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }

    /// Every record held.
    pub(super) fn records(&self) -> impl Iterator<Item = &SignedRecord> {
        self.held.values().map(|h| &h.record)
    }

    /// Stores a checked record: at most `per_publisher` from one publisher
    /// (a newer record for the same content replaces the old one), at most
    /// `total` in all (the oldest stored goes first).
    pub(super) fn offer(
        &mut self,
        now_s: u64,
        record: SignedRecord,
        per_publisher: usize,
        total: usize,
    ) -> Result<(), Refused> {
        if record.record().expires <= now_s {
            return Err(Refused::Limit);
        }
        let key = (record.publisher().id(), record.record().content_id);
        if let Some(h) = self.held.get(&key) {
            if h.record.record().created >= record.record().created {
                return Err(Refused::Duplicate);
            }
            self.remove(&key);
        }
        if self.per_publisher.get(&key.0).copied().unwrap_or(0) >= per_publisher {
            return Err(Refused::Limit);
        }
        while self.held.len() >= total.max(1) {
            let Some((_, oldest)) = self.order.first_key_value().map(|(s, k)| (*s, *k)) else {
                break;
            };
            self.remove(&oldest);
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
            .filter(|(_, h)| h.record.record().expires <= now_s)
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
