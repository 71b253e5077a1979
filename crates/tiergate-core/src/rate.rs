//! Throughput per phone number and pair rate per recipient: GCRA, via `governor` for the
//! number and, for the pair, the same GCRA in whole milliseconds ([`PairGcra`], checked
//! against `governor`'s below).
//!
//! `governor` asks a [`governor::clock::Clock`] for "now" and a [`StateStore`] for the cell's
//! state inside every check. Both are handed in explicitly, per check: the clock is the
//! decision's own time ([`At`]), and the store is the org's own state field, lent for the call
//! ([`Lent`]). Nothing is hidden in a thread-local or a shared cell, so a check at time `t` is a
//! pure function of the org's state and `t`, which is what lets a replica or a replay decide at
//! a log's time.
//!
//! A `governor` limiter counts time from the instant it was built. Built per check at `now`, its
//! origin is `now`; the store translates between that origin and the absolute theoretical
//! arrival time (TAT, nanoseconds since the Unix epoch) the org keeps. A TAT in the past is
//! given to `governor` as "no state", which its GCRA treats exactly like a TAT at `now`
//! (`max(tat, t0)`), so the translation is exact. Building a limiter is a few arithmetic
//! operations (no allocation); `benches/decide.rs` measures the whole decision.

use std::cell::Cell;
use std::num::NonZeroU32;

use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{NotKeyed, StateStore};
use governor::{Quota, RateLimiter};
use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::halves::{join, split};

/// (phone slot, recipient key).
type PairKey = (u16, u64);

/// A TAT meaning "never used": indistinguishable from fresh.
const EMPTY: u64 = u64::MAX;

const NS_PER_MS: u64 = 1_000_000;

/// A clock that reads one instant: the time of the decision being made.
#[derive(Debug, Clone, Copy)]
struct At(Nanos);

impl governor::clock::Clock for At {
    type Instant = Nanos;

    #[inline]
    fn now(&self) -> Nanos {
        self.0
    }
}

/// One cell's state, lent by its owner for one check: an absolute TAT (ns since the epoch, or
/// [`EMPTY`]) seen by `governor` relative to the limiter's origin.
struct Lent<'a> {
    tat: &'a Cell<u64>,
    origin_ns: u64,
}

impl StateStore for Lent<'_> {
    type Key = NotKeyed;

    #[inline]
    fn measure_and_replace<T, F, E>(&self, _key: &NotKeyed, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let abs = self.tat.get();
        let rel = (abs != EMPTY && abs > self.origin_ns).then(|| Nanos::from(abs - self.origin_ns));
        let (t, next) = f(rel)?;
        self.tat.set(self.origin_ns.saturating_add(next.as_u64()));
        Ok(t)
    }
}

/// Runs `governor`'s GCRA for one cell at `now_ms`: `Ok` and the cell's TAT moved, or the
/// milliseconds until a cell is free (rounded up, at least 1) and the TAT untouched.
#[inline]
fn check(quota: Quota, tat: &mut u64, now_ms: u64) -> Result<(), u64> {
    let origin_ns = now_ms.saturating_mul(NS_PER_MS);
    let now = At(Nanos::from(origin_ns));
    let store = Lent {
        tat: Cell::from_mut(tat),
        origin_ns,
    };
    let limiter: RateLimiter<NotKeyed, Lent<'_>, At, NoOpMiddleware<Nanos>> =
        RateLimiter::new(quota, store, now);
    limiter.check().map(drop).map_err(|nu| {
        let wait = nu.wait_time_from(now.0);
        (wait.as_nanos().div_ceil(u128::from(NS_PER_MS)) as u64).max(1)
    })
}

/// Messages per second of one phone number: its quota and its one TAT.
#[derive(Debug, Clone)]
pub(crate) struct Throughput {
    quota: Quota,
    tat: u64,
}

/// A limiter's state, for a snapshot.
///
/// Older snapshots kept a TAT relative to when the limiter was built (`start_ms`); this version
/// writes `start_ms = 0` and an absolute TAT, which both versions read the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct GcraState {
    pub(crate) start_ms: u64,
    pub(crate) tat: u64,
}

impl Throughput {
    /// A fresh limiter at `mps` (at least 1) that lets `burst` (1..=mps) go back to back.
    pub(crate) fn new(mps: u32, burst: u32) -> Self {
        let mps = NonZeroU32::new(mps.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.clamp(1, mps.get())).unwrap_or(NonZeroU32::MIN);
        Self {
            quota: Quota::per_second(mps).allow_burst(burst),
            tat: EMPTY,
        }
    }

    /// At `now_ms`: `Ok` and one cell used, or the milliseconds until one is free.
    #[inline]
    pub(crate) fn check(&mut self, now_ms: u64) -> Result<(), u64> {
        check(self.quota, &mut self.tat, now_ms)
    }

    /// Its state, for a snapshot.
    pub(crate) fn state(&self) -> GcraState {
        GcraState {
            start_ms: 0,
            tat: self.tat,
        }
    }

    /// A limiter at `mps` and `burst` in the state a snapshot kept.
    pub(crate) fn restore(mps: u32, burst: u32, state: GcraState) -> Self {
        let mut t = Self::new(mps, burst);
        t.tat = absolute(state.start_ms.saturating_mul(NS_PER_MS), state.tat);
        t
    }
}

/// A TAT kept relative to `origin_ns` (older snapshots), made absolute.
fn absolute(origin_ns: u64, tat: u64) -> u64 {
    if tat == EMPTY {
        EMPTY
    } else {
        origin_ns.saturating_add(tat)
    }
}

/// One message per period from one number to one recipient, with a burst.
///
/// Each phone slot has its own [`PairTable`], and the first slot's is inline, since most orgs
/// send from one number and a decision on a cold org should not chase a pointer to reach it.
#[derive(Debug, Clone)]
pub(crate) struct PairRate {
    gcra: PairGcra,
    hasher: foldhash::fast::RandomState,
    /// Slot 0's pairs.
    first: PairTable,
    /// Slot `i + 1`'s pairs at `rest[i]`, grown when a higher slot first sends.
    rest: Vec<PairTable>,
}

/// Tables smaller than this just grow: pruning a small table often would cost more in
/// rebuilding than the memory it saves.
const PRUNE_FLOOR: usize = 1_024;

/// How long a table's base may lag behind the time of a check before the table is rebuilt on
/// a new base (12.4 days): a TAT is at most `period × burst` ahead of its check (30 days at
/// most, `Policy::validate`), so every offset stays below 2³² ms (49.7 days).
const REBASE_AFTER_MS: u64 = 1 << 30;

/// One pair: the recipient key in halves (nothing needs 8-byte alignment) and its TAT in
/// milliseconds after the table's base, 0 when the TAT is not after the base (then it is
/// indistinguishable from fresh, since the base is never later than the time of a check).
/// 12 bytes: a pair is held for a period after its last send whether or not anything else
/// happens, so at a high call rate the pair tables are a fifth of what an unreported send
/// costs in memory (issue #16).
#[derive(Debug, Clone, Copy)]
struct Pair {
    key: [u32; 2],
    tat: u32,
}

impl Pair {
    #[inline]
    fn key(&self) -> u64 {
        join(self.key)
    }
}

/// One number's pairs. A table is pruned of pairs indistinguishable from fresh (TAT not in the
/// future) when it is full, before it would grow, so it holds about the pairs messaged in the
/// last period (rate × period), not every pair ever seen.
#[derive(Debug, Clone, Default)]
struct PairTable {
    /// What the pairs' TATs are offsets from (ms); never later than the latest check.
    base: u64,
    pairs: HashTable<Pair>,
}

/// The absolute TAT (ns) of a pair whose offset is `tat` on `base`, or [`EMPTY`].
#[inline]
fn tat_ns(base: u64, tat: u32) -> u64 {
    if tat == 0 {
        EMPTY
    } else {
        (base + u64::from(tat)) * NS_PER_MS
    }
}

/// `tat_ns` as an offset from `base`, rounded up to the millisecond (a TAT made at a
/// millisecond's time with a period of whole milliseconds is whole; one from an older snapshot
/// that is not is kept no earlier than it was). `None` if it does not fit, which
/// [`REBASE_AFTER_MS`] and `Policy::validate` rule out for a TAT made by a check.
#[inline]
fn offset(base: u64, tat_ns: u64) -> Option<u32> {
    if tat_ns == EMPTY {
        return Some(0);
    }
    let ms = tat_ns.div_ceil(NS_PER_MS);
    match ms.checked_sub(base) {
        None | Some(0) => Some(0),
        Some(d) => u32::try_from(d).ok(),
    }
}

/// `governor`'s GCRA (`gcra.rs`: `tau = t × (burst − 1)`; a cell is free unless
/// `now < max(tat, now) − tau`, and taking it sets `tat = max(tat, now) + t`) in whole
/// milliseconds. A pair's period is whole milliseconds and so is every decision's time, so
/// every TAT is too, and this answers exactly as `governor` does through [`check`] (the tests
/// compare them over 60 days of sends), without building a limiter and converting to and
/// from nanoseconds on every send: a warm decision spent ~45 instructions on that (issue #16).
#[derive(Debug, Clone, Copy)]
struct PairGcra {
    t_ms: u64,
    tau_ms: u64,
}

impl PairGcra {
    fn new(period_ms: u64, burst: u32) -> Self {
        let t_ms = period_ms.max(1);
        Self {
            t_ms,
            tau_ms: t_ms.saturating_mul(u64::from(burst.max(1) - 1)),
        }
    }

    /// The next TAT when a cell whose TAT is `tat` (absolute ms; anything not after `now_ms`
    /// is fresh) is free at `now_ms`, or the milliseconds until it is.
    #[inline]
    fn take(self, tat: u64, now_ms: u64) -> Result<u64, u64> {
        let tat = tat.max(now_ms);
        let earliest = tat.saturating_sub(self.tau_ms);
        if now_ms < earliest {
            return Err(earliest - now_ms);
        }
        Ok(tat.saturating_add(self.t_ms))
    }
}

impl PairTable {
    /// At `now_ms`, with `gcra`: one cell of `recipient`'s pair, or the milliseconds until one
    /// is free.
    #[inline]
    fn check(
        &mut self,
        gcra: PairGcra,
        hasher: &foldhash::fast::RandomState,
        recipient: u64,
        now_ms: u64,
    ) -> Result<(), u64> {
        if now_ms.saturating_sub(self.base) > REBASE_AFTER_MS {
            if self.pairs.is_empty() {
                self.base = now_ms;
            } else {
                self.rebuild(now_ms, hasher);
            }
        }
        let hash = hasher.hash_one(recipient);
        let base = self.base;
        if let Some(p) = self.pairs.find_mut(hash, |p| p.key() == recipient) {
            // An offset of 0 is a TAT not after the base, so not after now: fresh.
            let next = gcra.take(base + u64::from(p.tat), now_ms)?;
            // A TAT that does not fit is past what the policy allows; keeping the latest that
            // fits would let the pair go early, so it is kept at the latest time a table can
            // hold instead (never earlier than the TAT it replaces).
            p.tat = u32::try_from(next - base).unwrap_or(u32::MAX).max(p.tat);
            return Ok(());
        }
        let next = gcra.take(now_ms, now_ms)?;
        if self.pairs.len() == self.pairs.capacity() && self.pairs.len() >= PRUNE_FLOOR {
            self.rebuild(now_ms, hasher);
        }
        let pair = Pair {
            key: split(recipient),
            tat: u32::try_from(next - self.base).unwrap_or(u32::MAX),
        };
        self.pairs
            .insert_unique(hash, pair, |p| hasher.hash_one(p.key()));
        Ok(())
    }

    /// Rebuilds the table on the base `now_ms` with only the pairs still distinguishable from
    /// fresh (TAT in the future), in the fewest buckets that leave room for a quarter as many
    /// again and at least 16 more: the next prune is at least that many inserts away, so the
    /// scan costs O(1) amortised per insert (at most about eight buckets an insert), and the
    /// table stays within a small multiple of the live pairs. (Erasing in place would leave
    /// tombstones that keep a full table full.)
    ///
    /// The room asked for decides the memory: buckets come in powers of two, so asking for
    /// half as many again (as this did before) doubled the table whenever the live pairs were
    /// between 58 % and 88 % of a size, which at a steady rate is a coin toss. A quarter keeps
    /// it within one size of the live pairs (issue #16: the pair tables were 7–14 bytes of an
    /// unreported send, by that toss).
    fn rebuild(&mut self, now_ms: u64, hasher: &foldhash::fast::RandomState) {
        let live = |p: &&Pair| self.base + u64::from(p.tat) > now_ms && p.tat != 0;
        let n = self.pairs.iter().filter(live).count();
        let mut fresh = HashTable::with_capacity(n + n / 4 + 16);
        for p in self.pairs.iter().filter(live) {
            // Live TATs are after `now_ms`, so they stay positive on the new base and, being
            // no more than `period × burst` after a past check, fit.
            let tat = (self.base + u64::from(p.tat) - now_ms).min(u64::from(u32::MAX)) as u32;
            fresh.insert_unique(hasher.hash_one(p.key()), Pair { key: p.key, tat }, |q| {
                hasher.hash_one(q.key())
            });
        }
        self.pairs = fresh;
        self.base = now_ms;
    }

    /// Sets `recipient`'s absolute TAT (ns, or [`EMPTY`]), from a snapshot taken at `now_ms`
    /// (the org's latest time, which no later check precedes).
    fn restore(
        &mut self,
        hasher: &foldhash::fast::RandomState,
        recipient: u64,
        tat_ns: u64,
        now_ms: u64,
    ) {
        if self.pairs.is_empty() {
            self.base = now_ms;
        }
        // A TAT further ahead than a table can reach (49.7 days) was made under a policy this
        // one refuses (`period × burst` at most 30 days); it is kept at the furthest it can be.
        let tat = offset(self.base, tat_ns).unwrap_or(u32::MAX);
        let hash = hasher.hash_one(recipient);
        match self.pairs.find_mut(hash, |p| p.key() == recipient) {
            Some(p) => p.tat = tat,
            None => {
                self.pairs.insert_unique(
                    hash,
                    Pair {
                        key: split(recipient),
                        tat,
                    },
                    |p| hasher.hash_one(p.key()),
                );
            }
        }
    }
}

/// A [`PairRate`]'s state, for a snapshot (`start_ns = 0` and absolute TATs in this version;
/// older snapshots kept TATs relative to `start_ns`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct PairState {
    start_ns: u64,
    pairs: Vec<(PairKey, u64)>,
    /// Read and written for older versions, which pruned at a mark; this one prunes when full.
    prune_at: usize,
}

impl PairRate {
    /// A limiter of one message per `period_ms` per pair with `burst`.
    pub(crate) fn new(period_ms: u64, burst: u32) -> Self {
        Self {
            gcra: PairGcra::new(period_ms, burst),
            hasher: foldhash::fast::RandomState::default(),
            first: PairTable::default(),
            rest: Vec::new(),
        }
    }

    #[inline]
    fn table(&mut self, phone: u16) -> &mut PairTable {
        match phone.checked_sub(1) {
            None => &mut self.first,
            Some(i) => {
                let i = usize::from(i);
                if i >= self.rest.len() {
                    self.rest.resize_with(i + 1, PairTable::default);
                }
                &mut self.rest[i]
            }
        }
    }

    /// At `now_ms`: `Ok` and one cell used, or the milliseconds until the pair may be messaged
    /// again.
    #[inline]
    pub(crate) fn check(&mut self, phone: u16, recipient: u64, now_ms: u64) -> Result<(), u64> {
        let gcra = self.gcra;
        let hasher = self.hasher.clone();
        self.table(phone).check(gcra, &hasher, recipient, now_ms)
    }

    /// Reads where `recipient`'s pair of slot `phone` sits, changing nothing: a decision on a
    /// cold org calls this early, so that the pair's cache lines are on their way while the
    /// rules before the pair rate run (issue #16). The answer is only a read to wait on.
    #[inline]
    pub(crate) fn touch(&self, phone: u16, recipient: u64) -> u32 {
        let table = match phone.checked_sub(1) {
            None => &self.first,
            Some(i) => match self.rest.get(usize::from(i)) {
                Some(t) => t,
                None => return 0,
            },
        };
        table
            .pairs
            .find(self.hasher.hash_one(recipient), |p| p.key() == recipient)
            .map_or(0, |p| p.tat)
    }

    fn tables(&self) -> impl Iterator<Item = (u16, &PairTable)> {
        std::iter::once(&self.first)
            .chain(&self.rest)
            .enumerate()
            .map(|(i, t)| (i as u16, t))
    }

    /// Its state, for a snapshot: each pair's TAT.
    pub(crate) fn state(&self) -> PairState {
        let mut pairs: Vec<(PairKey, u64)> = self
            .tables()
            .flat_map(|(slot, t)| {
                t.pairs
                    .iter()
                    .map(move |p| ((slot, p.key()), tat_ns(t.base, p.tat)))
            })
            .collect();
        pairs.sort_unstable();
        PairState {
            start_ns: 0,
            prune_at: pairs.len(),
            pairs,
        }
    }

    /// A limiter like [`PairRate::new`] in the state a snapshot taken at `now_ms` kept.
    pub(crate) fn restore(period_ms: u64, burst: u32, state: PairState, now_ms: u64) -> Self {
        let mut p = Self::new(period_ms, burst);
        let hasher = p.hasher.clone();
        for ((slot, r), tat) in state.pairs {
            let tat = absolute(state.start_ns, tat);
            p.table(slot).restore(&hasher, r, tat, now_ms);
        }
        p
    }

    /// Pairs currently held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.tables().map(|(_, t)| t.pairs.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn throughput_at_the_time_it_is_given() {
        let mut t = Throughput::new(2, 2);
        assert!(t.check(1_000_000).is_ok());
        assert!(t.check(1_000_000).is_ok());
        assert_eq!(t.check(1_000_000).unwrap_err(), 500);
        assert!(t.check(1_000_500).is_ok());
    }

    /// With a burst of a second's worth, a quiet number may send almost twice its rate in its
    /// first second; with a burst of 1 no second (sliding) holds more than the rate.
    #[test]
    fn a_burst_of_one_keeps_every_second_at_the_rate() {
        let most_in_a_second = |burst: u32| {
            let mut t = Throughput::new(20, burst);
            let mut sent = Vec::new();
            let mut now = 1_000_000u64;
            while sent.len() < 200 {
                match t.check(now) {
                    Ok(()) => sent.push(now),
                    Err(ms) => now += ms,
                }
            }
            sent.iter()
                .map(|&a| sent.iter().filter(|&&b| b >= a && b < a + 1_000).count())
                .max()
                .unwrap_or(0)
        };
        assert_eq!(most_in_a_second(20), 39);
        assert_eq!(most_in_a_second(1), 20);
    }

    #[test]
    fn pair_rate_one_per_period() {
        let mut p = PairRate::new(6_000, 1);
        assert!(p.check(0, 7, 1_000_000).is_ok());
        assert_eq!(p.check(0, 7, 1_000_000).unwrap_err(), 6_000);
        assert!(
            p.check(1, 7, 1_000_000).is_ok(),
            "another number is another pair"
        );
        assert_eq!(p.check(0, 7, 1_005_999).unwrap_err(), 1);
        assert!(p.check(0, 7, 1_006_000).is_ok());
    }

    #[test]
    fn pair_keys_are_pruned() {
        let mut p = PairRate::new(6_000, 1);
        for i in 0..10_000u64 {
            p.check(0, i, 1_000_000 + i * 10).unwrap();
        }
        // only the last ~6 s of recipients (600) can still be distinguishable from fresh;
        // the table holds at most about three times that before it prunes again
        assert!(p.len() < 2_000, "{} keys held", p.len());
        assert!(
            p.first.pairs.capacity() < 2_000,
            "room for {}",
            p.first.pairs.capacity()
        );
        // what is held still decides: the last recipient is within its period
        assert_eq!(p.check(0, 9_999, 1_000_000 + 99_990).unwrap_err(), 6_000);
        assert!(p.check(0, 9_000, 1_000_000 + 99_990).is_ok());
    }

    #[test]
    fn a_pair_is_twelve_bytes() {
        assert_eq!(std::mem::size_of::<Pair>(), 12);
    }

    /// The table's 12-byte pairs (TATs as offsets from a base that moves at every prune and
    /// after 12.4 days) answer exactly as a plain GCRA per pair with 64-bit TATs, over 60 days
    /// of sends to enough recipients that the table prunes, including a snapshot restored half
    /// way.
    #[test]
    fn the_pair_table_answers_as_a_plain_gcra_per_pair() {
        for (period, burst) in [(6_000u64, 1u32), (6_000, 3), (1, 1), (86_400_000, 2)] {
            let mut p = PairRate::new(period, burst);
            // governor's own GCRA through the lent state, as the number's throughput runs it
            let quota = Quota::with_period(Duration::from_millis(period))
                .unwrap()
                .allow_burst(NonZeroU32::new(burst).unwrap());
            let mut plain: std::collections::HashMap<(u16, u64), u64> = Default::default();
            let mut now = 1_700_000_000_000u64;
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let days = 60 * 86_400_000;
            let start = now;
            let mut i = 0u64;
            while now < start + days {
                let r = next();
                // mostly short steps, sometimes hours or days
                now += match r % 10_000 {
                    0 => r % (3 * 86_400_000),
                    1..=9 => r % 3_600_000,
                    _ => r % 50,
                };
                let slot = (r >> 20) as u16 % 3;
                let recipient = (r >> 24) % 3_000;
                let tat = plain.entry((slot, recipient)).or_insert(EMPTY);
                let want = check(quota, tat, now);
                assert_eq!(
                    p.check(slot, recipient, now),
                    want,
                    "period {period} burst {burst}, send {i} at +{} ms",
                    now - start
                );
                i += 1;
                if i == 40_000 {
                    p = PairRate::restore(period, burst, p.state(), now);
                }
            }
            assert!(i > 100_000, "{i} sends");
        }
    }

    #[test]
    fn pairs_of_each_number_survive_a_snapshot() {
        let mut p = PairRate::new(6_000, 1);
        p.check(0, 7, 1_000_000).unwrap();
        p.check(3, 7, 1_001_000).unwrap();
        let state = p.state();
        assert_eq!(state.pairs.len(), 2);
        let mut q = PairRate::restore(6_000, 1, state.clone(), 1_001_000);
        assert_eq!(q.state(), state);
        assert_eq!(q.check(0, 7, 1_002_000).unwrap_err(), 4_000);
        assert_eq!(q.check(3, 7, 1_002_000).unwrap_err(), 5_000);
        assert!(q.check(2, 7, 1_002_000).is_ok());
    }

    #[test]
    fn old_relative_snapshots_restore_to_the_same_instant() {
        // A limiter built at 1,000 ms whose TAT is 500 ms after that (old format) is the same
        // as an absolute TAT of 1,500 ms.
        let old = Throughput::restore(
            1,
            1,
            GcraState {
                start_ms: 1_000,
                tat: 500 * NS_PER_MS,
            },
        );
        assert_eq!(old.state().tat, 1_500 * NS_PER_MS);
        let fresh = Throughput::restore(
            1,
            1,
            GcraState {
                start_ms: 0,
                tat: EMPTY,
            },
        );
        assert_eq!(fresh.state().tat, EMPTY);
    }

    /// `governor`'s own limiter (its stock state store, a fake clock) is the oracle: over
    /// random arrival times and quotas, the lent-state check answers identically.
    #[test]
    fn lent_state_matches_governors_own_limiter() {
        use governor::clock::FakeRelativeClock;
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..200 {
            let burst = NonZeroU32::new(1 + (next() % 5) as u32).unwrap();
            let period = Duration::from_millis(1 + next() % 2_000);
            let quota = Quota::with_period(period).unwrap().allow_burst(burst);
            let clock = FakeRelativeClock::default();
            let oracle = RateLimiter::direct_with_clock(quota, clock.clone());
            let base_ms = 1_700_000_000_000u64;
            let mut t_ms = 0u64;
            let mut tat = EMPTY;
            for _ in 0..200 {
                let step = next() % 700;
                t_ms += step;
                clock.advance(Duration::from_millis(step));
                let want = oracle.check().map(drop).map_err(|nu| {
                    use governor::clock::Clock;
                    let w = nu.wait_time_from(clock.now());
                    (w.as_nanos().div_ceil(1_000_000) as u64).max(1)
                });
                let got = check(quota, &mut tat, base_ms + t_ms);
                assert_eq!(got, want, "round {round} at {t_ms} ms");
            }
        }
    }
}
