//! Which downloads are being fetched now, and how another request stops
//! one.
//!
//! A download is fetched by at most one loop at a time: the loop holds the
//! download's [`Claim`] for as long as it runs (a `veil get`, a resume at
//! start or by `veil downloads resume`). Pausing and cancelling are done by
//! whoever holds the claim, so they never race with a fetch writing
//! pieces:
//!
//! 1. [`Running::take_over`] asks the current holder to stop (a [`Stop`]
//!    reason on its claim) and waits, bounded, until it lets go;
//! 2. the fetch loop checks [`Claim::stop_requested`] between updates (it
//!    waits for updates in short ticks, so it notices within one), stops
//!    the network side and drops its claim;
//! 3. the taker now holds the claim and changes the download on disk.
//!
//! A claim is released when dropped, however its holder ends.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use veil_core::content::ContentId;

/// Why a running download is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `veil downloads pause`: keep what is held, want nothing for now.
    Pause,
    /// `veil downloads cancel`: the download is being forgotten.
    Cancel,
}

/// The downloads being fetched now, one claim each.
#[derive(Debug, Default)]
pub struct Running {
    claims: Mutex<Claims>,
    /// Signalled whenever a claim is released.
    released: Condvar,
}

/// The claims, and a counter that tells one claim of an id from the next.
#[derive(Debug, Default)]
struct Claims {
    slots: BTreeMap<ContentId, Slot>,
    next_generation: u64,
}

impl Claims {
    fn insert(&mut self, id: ContentId) {
        self.next_generation += 1;
        let slot = Slot {
            generation: self.next_generation,
            ..Slot::default()
        };
        self.slots.insert(id, slot);
    }
}

/// One claim, and who waits for it to stop: the stop asked of its holder
/// follows from the waiters, so one that gives up withdraws only its own
/// request (a cancel still waiting is not undone by a pause that timed
/// out, nor the other way round).
#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    generation: u64,
    pauses: usize,
    cancels: usize,
}

impl Slot {
    /// A cancel outweighs a pause.
    fn stop(&self) -> Option<Stop> {
        if self.cancels > 0 {
            Some(Stop::Cancel)
        } else if self.pauses > 0 {
            Some(Stop::Pause)
        } else {
            None
        }
    }

    fn count(&mut self, why: Stop) -> &mut usize {
        match why {
            Stop::Pause => &mut self.pauses,
            Stop::Cancel => &mut self.cancels,
        }
    }
}

/// Why [`Running::take_over`] did not get the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the running download did not stop within {} s", .0.as_secs())]
pub struct StillRunning(pub Duration);

impl Running {
    /// Claim `id` for a fetch; None if something holds it already.
    pub fn claim(self: &Arc<Self>, id: ContentId) -> Option<Claim> {
        let mut claims = self.lock();
        if claims.slots.contains_key(&id) {
            return None;
        }
        claims.insert(id);
        Some(Claim {
            running: Arc::clone(self),
            id,
        })
    }

    /// Whether `id` is claimed now.
    pub fn is_running(&self, id: &ContentId) -> bool {
        self.lock().slots.contains_key(id)
    }

    /// Get the claim of `id`, asking its holder (if any) to stop for
    /// `why` and waiting up to `wait` for it to let go. Returns the claim
    /// and whether something was running. On a timeout this request is
    /// withdrawn (others' stay), so a holder nobody else asked to stop
    /// carries on as if nothing was asked.
    pub fn take_over(
        self: &Arc<Self>,
        id: ContentId,
        why: Stop,
        wait: Duration,
    ) -> Result<(Claim, bool), StillRunning> {
        let deadline = Instant::now() + wait;
        let mut claims = self.lock();
        let mut was_running = false;
        // The claim (by generation) our request is counted on.
        let mut counted_on = None;
        while let Some(slot) = claims.slots.get_mut(&id) {
            was_running = true;
            if counted_on != Some(slot.generation) {
                *slot.count(why) += 1;
                counted_on = Some(slot.generation);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let n = slot.count(why);
                *n = n.saturating_sub(1);
                return Err(StillRunning(wait));
            }
            claims = self
                .released
                .wait_timeout(claims, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        claims.insert(id);
        let claim = Claim {
            running: Arc::clone(self),
            id,
        };
        Ok((claim, was_running))
    }

    fn lock(&self) -> MutexGuard<'_, Claims> {
        // The map stays consistent whatever a panicking holder did.
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A download claimed for a fetch; released on drop.
#[derive(Debug)]
pub struct Claim {
    running: Arc<Running>,
    id: ContentId,
}

impl Claim {
    /// The claimed download.
    pub fn id(&self) -> ContentId {
        self.id
    }

    /// Whether another request asked this fetch to stop, and why.
    pub fn stop_requested(&self) -> Option<Stop> {
        self.running.lock().slots.get(&self.id).and_then(Slot::stop)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.running.lock().slots.remove(&self.id);
        self.running.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> ContentId {
        ContentId::from_bytes([b; 32])
    }

    #[test]
    fn one_claim_per_download_released_on_drop() {
        let r = Arc::new(Running::default());
        let a = r.claim(id(1)).unwrap();
        assert!(r.claim(id(1)).is_none(), "claimed twice");
        let b = r.claim(id(2)).unwrap();
        assert!(r.is_running(&id(1)) && r.is_running(&id(2)));
        assert_eq!(a.stop_requested(), None);
        drop(a);
        assert!(!r.is_running(&id(1)));
        assert!(r.claim(id(1)).is_some());
        assert_eq!(b.id(), id(2));
    }

    #[test]
    fn take_over_of_an_idle_download_claims_it_at_once() {
        let r = Arc::new(Running::default());
        let (claim, was_running) = r
            .take_over(id(1), Stop::Pause, Duration::from_secs(5))
            .unwrap();
        assert!(!was_running);
        assert!(r.claim(id(1)).is_none(), "the taker holds it");
        drop(claim);
        assert!(!r.is_running(&id(1)));
    }

    #[test]
    fn take_over_asks_the_holder_to_stop_and_waits_for_it() {
        let r = Arc::new(Running::default());
        let holder = r.claim(id(1)).unwrap();
        // A fetch loop: checks between ticks, lets go when asked.
        let fetch = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Some(why) = holder.stop_requested() {
                    return Some(why);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        });
        let (claim, was_running) = r
            .take_over(id(1), Stop::Cancel, Duration::from_secs(30))
            .unwrap();
        assert!(was_running);
        assert_eq!(fetch.join().unwrap(), Some(Stop::Cancel));
        assert_eq!(claim.stop_requested(), None, "the new claim runs free");
    }

    #[test]
    fn a_holder_that_does_not_stop_keeps_its_claim_and_runs_on() {
        let r = Arc::new(Running::default());
        let holder = r.claim(id(1)).unwrap();
        let err = r
            .take_over(id(1), Stop::Pause, Duration::from_millis(50))
            .unwrap_err();
        assert_eq!(err, StillRunning(Duration::from_millis(50)));
        assert!(r.is_running(&id(1)));
        assert_eq!(holder.stop_requested(), None, "the request is withdrawn");
    }

    /// A pause that gives up does not withdraw a cancel still waiting,
    /// and a cancel that gives up leaves a waiting pause in force.
    #[test]
    fn a_request_that_gives_up_withdraws_only_itself() {
        let r = Arc::new(Running::default());
        let holder = r.claim(id(1)).unwrap();
        let r2 = r.clone();
        let cancel =
            std::thread::spawn(move || r2.take_over(id(1), Stop::Cancel, Duration::from_secs(30)));
        let deadline = Instant::now() + Duration::from_secs(10);
        while holder.stop_requested() != Some(Stop::Cancel) {
            assert!(Instant::now() < deadline, "the cancel never asked");
            std::thread::sleep(Duration::from_millis(5));
        }
        let err = r.take_over(id(1), Stop::Pause, Duration::from_millis(50));
        assert!(err.is_err());
        assert_eq!(holder.stop_requested(), Some(Stop::Cancel), "still asked");
        drop(holder);
        let (claim, was_running) = cancel.join().unwrap().unwrap();
        assert!(was_running);
        assert_eq!(claim.stop_requested(), None);

        // The other way round: a pause waits, a cancel gives up.
        let r2 = r.clone();
        let pause =
            std::thread::spawn(move || r2.take_over(id(1), Stop::Pause, Duration::from_secs(30)));
        let deadline = Instant::now() + Duration::from_secs(10);
        while claim.stop_requested() != Some(Stop::Pause) {
            assert!(Instant::now() < deadline, "the pause never asked");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            r.take_over(id(1), Stop::Cancel, Duration::from_millis(50))
                .is_err()
        );
        assert_eq!(claim.stop_requested(), Some(Stop::Pause), "the pause stays");
        drop(claim);
        assert!(pause.join().unwrap().is_ok());
    }
}
