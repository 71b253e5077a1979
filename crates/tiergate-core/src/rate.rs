//! Throughput per phone number and pair rate per recipient: GCRA, via `governor`.
//!
//! Both limiters read the [`DecisionClock`], which the org sets to the decision's time under its
//! lock, so GCRA runs on the same (injected) clock as the windows. The pair limiter's keys are
//! pruned with `retain_recent` whenever they double, which keeps its memory proportional to the
//! recipients messaged within the last pair period rather than to all recipients ever.

use std::cell::Cell;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{NotKeyed, StateStore};
use governor::{Quota, RateLimiter};
use hashbrown::HashMap;

use crate::clock::DecisionClock;

type Slotted = RateLimiter<NotKeyed, Slot, DecisionClock, NoOpMiddleware<Nanos>>;
/// (phone slot, recipient key).
type PairKey = (u16, u64);

const EMPTY: u64 = u64::MAX;

/// A one-value `governor` state store: the pair's state is loaded into it before a check and
/// read back after.
///
/// `governor`'s own keyed stores put a mutex and an atomic in front of every pair. The org
/// already holds its lock, so the pair map can be a plain map owned by the org: one probe, no
/// second lock, no per-pair atomic. The value lives in a thread-local (the check runs on the
/// deciding thread, under the org's lock), so the store costs no allocation and no cache miss.
/// The GCRA itself is still `governor`'s.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Slot;

thread_local! {
    static SLOT: Cell<u64> = const { Cell::new(EMPTY) };
}

impl Slot {
    fn put(v: u64) {
        SLOT.with(|c| c.set(v));
    }

    fn take() -> u64 {
        SLOT.with(Cell::get)
    }
}

impl StateStore for Slot {
    type Key = NotKeyed;

    fn measure_and_replace<T, F, E>(&self, _key: &NotKeyed, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let prev = Slot::take();
        let (t, next) = f((prev != EMPTY).then(|| Nanos::from(prev)))?;
        Slot::put(next.as_u64());
        Ok(t)
    }
}

/// Milliseconds to wait, rounded up so that retrying after it succeeds.
fn ceil_ms(d: Duration) -> u64 {
    d.as_nanos().div_ceil(1_000_000) as u64
}

/// Messages per second of one phone number.
///
/// Its GCRA state (one theoretical arrival time) is a plain field, loaded into the [`Slot`]
/// for each check like a pair's, so that a snapshot can carry it.
#[derive(Debug)]
pub(crate) struct Throughput {
    limiter: Slotted,
    /// When the limiter was made (ms): `governor` counts time from there.
    start_ms: u64,
    tat: u64,
}

/// A limiter's state, for a snapshot: when it was made and its theoretical arrival time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct GcraState {
    pub(crate) start_ms: u64,
    pub(crate) tat: u64,
}

impl Throughput {
    /// A limiter at `mps`; the caller has set the [`DecisionClock`] to now.
    pub(crate) fn new(mps: u32) -> Self {
        use governor::clock::Clock;
        let mps = NonZeroU32::new(mps.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            start_ms: DecisionClock.now().as_u64() / 1_000_000,
            limiter: RateLimiter::new(Quota::per_second(mps), Slot, DecisionClock),
            tat: EMPTY,
        }
    }

    /// `Ok` and one cell used, or the milliseconds until one is free.
    pub(crate) fn check(&mut self) -> Result<(), u64> {
        use governor::clock::Clock;
        Slot::put(self.tat);
        match self.limiter.check() {
            Ok(_) => {
                self.tat = Slot::take();
                Ok(())
            }
            Err(nu) => Err(ceil_ms(nu.wait_time_from(DecisionClock.now())).max(1)),
        }
    }

    /// Its state, for a snapshot.
    pub(crate) fn state(&self) -> GcraState {
        GcraState {
            start_ms: self.start_ms,
            tat: self.tat,
        }
    }

    /// A limiter at `mps` in the state a snapshot kept. Leaves the [`DecisionClock`] moved.
    pub(crate) fn restore(mps: u32, state: GcraState) -> Self {
        DecisionClock::set(state.start_ms);
        let mut t = Self::new(mps);
        t.tat = state.tat;
        t
    }
}

/// One message per period from one number to one recipient, with a burst.
#[derive(Debug)]
pub(crate) struct PairRate {
    limiter: Slotted,
    /// The limiter's origin: `governor` keeps times as nanoseconds after it.
    start: Nanos,
    /// Each pair's GCRA state (theoretical arrival time, in `governor`'s nanoseconds).
    pairs: HashMap<PairKey, u64, foldhash::fast::RandomState>,
    prune_at: usize,
}

const PRUNE_FLOOR: usize = 1_024;

/// A [`PairRate`]'s state, for a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct PairState {
    start_ns: u64,
    pairs: Vec<(PairKey, u64)>,
    prune_at: usize,
}

impl PairRate {
    /// A limiter of one message per `period_ms` per pair with `burst`; the caller has set the
    /// [`DecisionClock`] to now.
    pub(crate) fn new(period_ms: u64, burst: u32) -> Self {
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(Duration::from_millis(period_ms.max(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        use governor::clock::Clock;
        Self {
            limiter: RateLimiter::new(quota, Slot, DecisionClock),
            start: DecisionClock.now(),
            pairs: HashMap::default(),
            prune_at: PRUNE_FLOOR,
        }
    }

    /// `Ok` and one cell used, or the milliseconds until the pair may be messaged again.
    pub(crate) fn check(&mut self, phone: u16, recipient: u64) -> Result<(), u64> {
        use governor::clock::Clock;
        let entry = self.pairs.entry((phone, recipient));
        let prev = match &entry {
            hashbrown::hash_map::Entry::Occupied(o) => *o.get(),
            hashbrown::hash_map::Entry::Vacant(_) => EMPTY,
        };
        Slot::put(prev);
        match self.limiter.check() {
            Ok(_) => {
                entry.insert(Slot::take());
            }
            Err(nu) => return Err(ceil_ms(nu.wait_time_from(DecisionClock.now())).max(1)),
        }
        if self.pairs.len() >= self.prune_at {
            self.prune();
        }
        Ok(())
    }

    /// Drops pairs whose state is indistinguishable from fresh (TAT not in the future).
    fn prune(&mut self) {
        use governor::clock::{Clock, Reference};
        let now = DecisionClock.now().duration_since(self.start).as_u64();
        self.pairs.retain(|_, tat| *tat > now);
        self.prune_at = (self.pairs.len() * 2).max(PRUNE_FLOOR);
    }

    /// Its state, for a snapshot: when it was made, each pair's TAT, and its prune mark.
    pub(crate) fn state(&self) -> PairState {
        PairState {
            start_ns: self.start.as_u64(),
            pairs: self.pairs.iter().map(|(k, v)| (*k, *v)).collect(),
            prune_at: self.prune_at,
        }
    }

    /// A limiter like [`PairRate::new`] in the state a snapshot kept. Leaves the
    /// [`DecisionClock`] moved.
    pub(crate) fn restore(period_ms: u64, burst: u32, state: PairState) -> Self {
        DecisionClock::set(state.start_ns / 1_000_000);
        let mut p = Self::new(period_ms, burst);
        p.pairs = state.pairs.into_iter().collect();
        p.prune_at = state.prune_at;
        p
    }

    /// Pairs currently held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pairs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_follows_the_decision_clock() {
        DecisionClock::set(1_000_000);
        let mut t = Throughput::new(2);
        assert!(t.check().is_ok());
        assert!(t.check().is_ok());
        let wait = t.check().unwrap_err();
        assert_eq!(wait, 500);
        DecisionClock::set(1_000_500);
        assert!(t.check().is_ok());
    }

    #[test]
    fn pair_rate_one_per_period() {
        DecisionClock::set(1_000_000);
        let mut p = PairRate::new(6_000, 1);
        assert!(p.check(0, 7).is_ok());
        assert_eq!(p.check(0, 7).unwrap_err(), 6_000);
        assert!(p.check(1, 7).is_ok(), "another number is another pair");
        DecisionClock::set(1_005_999);
        assert_eq!(p.check(0, 7).unwrap_err(), 1);
        DecisionClock::set(1_006_000);
        assert!(p.check(0, 7).is_ok());
    }

    #[test]
    fn pair_keys_are_pruned() {
        DecisionClock::set(1_000_000);
        let mut p = PairRate::new(6_000, 1);
        for i in 0..10_000u64 {
            DecisionClock::set(1_000_000 + i * 10);
            p.check(0, i).unwrap();
        }
        // only the last ~6 s of recipients (600) can still be distinguishable from fresh
        assert!(p.len() < 2 * PRUNE_FLOOR, "{} keys held", p.len());
    }
}
