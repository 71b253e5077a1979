//! Throughput per phone number and pair rate per recipient: GCRA, via `governor`.
//!
//! Both limiters read a [`DecisionClock`] that the org sets to the decision's time under its
//! lock, so GCRA runs on the same (injected) clock as the windows. The pair limiter's keys are
//! pruned with `retain_recent` whenever they double, which keeps its memory proportional to the
//! recipients messaged within the last pair period rather than to all recipients ever.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::clock::DecisionClock;

type Direct = RateLimiter<NotKeyed, InMemoryState, DecisionClock, NoOpMiddleware<Nanos>>;
/// (phone slot, recipient key).
type PairKey = (u16, u64);
type Keyed = RateLimiter<
    PairKey,
    HashMapStateStore<PairKey, foldhash::fast::RandomState>,
    DecisionClock,
    NoOpMiddleware<Nanos>,
>;

/// Milliseconds to wait, rounded up so that retrying after it succeeds.
fn ceil_ms(d: Duration) -> u64 {
    d.as_nanos().div_ceil(1_000_000) as u64
}

/// Messages per second of one phone number.
#[derive(Debug)]
pub(crate) struct Throughput {
    limiter: Direct,
    clock: DecisionClock,
}

impl Throughput {
    pub(crate) fn new(mps: u32, clock: DecisionClock) -> Self {
        let mps = NonZeroU32::new(mps.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::direct_with_clock(Quota::per_second(mps), clock.clone()),
            clock,
        }
    }

    /// `Ok` and one cell used, or the milliseconds until one is free.
    pub(crate) fn check(&self) -> Result<(), u64> {
        use governor::clock::Clock;
        self.limiter
            .check()
            .map_err(|nu| ceil_ms(nu.wait_time_from(self.clock.now())).max(1))
    }
}

/// One message per period from one number to one recipient, with a burst.
#[derive(Debug)]
pub(crate) struct PairRate {
    limiter: Keyed,
    clock: DecisionClock,
    prune_at: usize,
}

const PRUNE_FLOOR: usize = 1_024;

impl PairRate {
    pub(crate) fn new(period_ms: u64, burst: u32, clock: DecisionClock) -> Self {
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(Duration::from_millis(period_ms.max(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            limiter: RateLimiter::hashmap_with_clock_and_hasher(
                quota,
                clock.clone(),
                foldhash::fast::RandomState::default(),
            ),
            clock,
            prune_at: PRUNE_FLOOR,
        }
    }

    /// `Ok` and one cell used, or the milliseconds until the pair may be messaged again.
    pub(crate) fn check(&mut self, phone: u16, recipient: u64) -> Result<(), u64> {
        use governor::clock::Clock;
        let r = self
            .limiter
            .check_key(&(phone, recipient))
            .map_err(|nu| ceil_ms(nu.wait_time_from(self.clock.now())).max(1));
        if r.is_ok() && self.limiter.len() >= self.prune_at {
            self.limiter.retain_recent();
            self.prune_at = (self.limiter.len() * 2).max(PRUNE_FLOOR);
        }
        r
    }

    /// Keys currently held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_follows_the_decision_clock() {
        let clock = DecisionClock::new(1_000_000);
        let t = Throughput::new(2, clock.clone());
        assert!(t.check().is_ok());
        assert!(t.check().is_ok());
        let wait = t.check().unwrap_err();
        assert_eq!(wait, 500);
        clock.set(1_000_500);
        assert!(t.check().is_ok());
    }

    #[test]
    fn pair_rate_one_per_period() {
        let clock = DecisionClock::new(1_000_000);
        let mut p = PairRate::new(6_000, 1, clock.clone());
        assert!(p.check(0, 7).is_ok());
        assert_eq!(p.check(0, 7).unwrap_err(), 6_000);
        assert!(p.check(1, 7).is_ok(), "another number is another pair");
        clock.set(1_005_999);
        assert_eq!(p.check(0, 7).unwrap_err(), 1);
        clock.set(1_006_000);
        assert!(p.check(0, 7).is_ok());
    }

    #[test]
    fn pair_keys_are_pruned() {
        let clock = DecisionClock::new(1_000_000);
        let mut p = PairRate::new(6_000, 1, clock.clone());
        for i in 0..10_000u64 {
            clock.set(1_000_000 + i * 10);
            p.check(0, i).unwrap();
        }
        // only the last ~6 s of recipients (600) can still be distinguishable from fresh
        assert!(p.len() < 2 * PRUNE_FLOOR, "{} keys held", p.len());
    }
}
