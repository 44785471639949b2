//! Reverse paths: for each walk id seen, where its answers go back to, for
//! how long, and how many have gone back already. Bounded in number, with
//! the entry expiring first evicted in O(log n) when full.

use std::collections::{BTreeMap, BTreeSet};

use super::Back;
use crate::node::Millis;
use crate::search::WalkId;

#[derive(Debug, Clone, Copy)]
struct Path {
    back: Back,
    replies: u32,
}

/// The reverse-path table.
#[derive(Debug, Default)]
pub(super) struct Paths {
    by_id: BTreeMap<WalkId, Path>,
    by_expiry: BTreeSet<(Millis, WalkId)>,
}

impl Paths {
    pub(super) fn contains(&self, id: &WalkId) -> bool {
        self.by_id.contains_key(id)
    }

    /// Records where `id`'s answers go (a first visit only), evicting the
    /// entry that expires first when `max` are held.
    pub(super) fn insert(&mut self, id: WalkId, back: Back, until_ms: Millis, max: usize) {
        if self.by_id.contains_key(&id) {
            return;
        }
        while self.by_id.len() >= max.max(1) {
            let Some((t, old)) = self.by_expiry.pop_first() else {
                break;
            };
            let _ = t;
            self.by_id.remove(&old);
        }
        self.by_id.insert(id, Path { back, replies: 0 });
        self.by_expiry.insert((until_ms, id));
    }

    /// Where `id`'s answers go, without counting one.
    pub(super) fn back(&self, id: &WalkId) -> Option<Back> {
        self.by_id.get(id).map(|p| p.back)
    }

    /// Where a reply for `id` goes, counting it against `cap` replies per
    /// walk id: None for an unknown id or once the cap is reached.
    pub(super) fn route_reply(&mut self, id: &WalkId, cap: u32) -> Option<Back> {
        let p = self.by_id.get_mut(id)?;
        if p.replies >= cap {
            return None;
        }
        p.replies += 1;
        Some(p.back)
    }

    /// Drops entries expired at `now`.
    pub(super) fn expire(&mut self, now: Millis) {
        while let Some(&(t, id)) = self.by_expiry.first() {
            if t > now {
                break;
            }
            self.by_expiry.pop_first();
            self.by_id.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_capped_and_expiring() {
        let mut p = Paths::default();
        for i in 0..5u8 {
            p.insert(
                WalkId([i; 16]),
                Back::Link(crate::node::LinkId(1)),
                100 + u64::from(i),
                3,
            );
        }
        assert!(!p.contains(&WalkId([0; 16])), "the first to expire went");
        assert!(p.contains(&WalkId([4; 16])));
        assert!(p.route_reply(&WalkId([4; 16]), 2).is_some());
        assert!(p.route_reply(&WalkId([4; 16]), 2).is_some());
        assert!(p.route_reply(&WalkId([4; 16]), 2).is_none(), "capped");
        assert!(p.route_reply(&WalkId([9; 16]), 2).is_none(), "unknown");
        p.expire(103);
        assert!(!p.contains(&WalkId([3; 16])));
        assert!(p.contains(&WalkId([4; 16])));
    }
}
