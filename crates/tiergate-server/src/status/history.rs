//! What the status page draws over time: each org's window fill and its denials by reason, in
//! buckets over the last 24 h.
//!
//! Denials are counted as they are answered (an array increment for a denied send; an allowed
//! send costs nothing here). A sampler closes a bucket every `bucket_ms`: it takes the counts and
//! the window fill the engine shows at that moment (read without touching the store). Each org
//! keeps at most a day of buckets, and only registered orgs are counted (a send to an unknown
//! org is an error before it gets here), so memory stays bounded by the orgs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tiergate_core::DenyReason;

use crate::gate::Gate;

/// Reasons in decision order (the index of a reason's count).
pub const REASONS: [DenyReason; DenyReason::ALL.len()] = DenyReason::ALL;

/// One closed bucket of an org's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// When the bucket closed (the engine's clock).
    pub at_ms: u64,
    /// Recipients in the 24 h window then.
    pub fill: u64,
    /// The effective limit then (`None`: unlimited).
    pub limit: Option<u64>,
    /// Denials during the bucket, by reason ([`REASONS`] order).
    pub denials: [u32; REASONS.len()],
}

#[derive(Debug, Default)]
struct OrgHistory {
    open: [u32; REASONS.len()],
    closed: VecDeque<Sample>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Activity {
    orgs: DashMap<Box<str>, OrgHistory>,
    bucket_ms: u64,
    keep: usize,
}

fn index(reason: DenyReason) -> usize {
    REASONS.iter().position(|r| *r == reason).unwrap_or(0)
}

impl Activity {
    /// Buckets of `bucket_ms`, a day of them kept.
    pub fn new(bucket_ms: u64) -> Arc<Self> {
        let bucket_ms = bucket_ms.max(1_000);
        Arc::new(Activity {
            orgs: DashMap::new(),
            bucket_ms,
            keep: (86_400_000 / bucket_ms).max(1) as usize,
        })
    }

    /// How long one bucket is.
    pub fn bucket_ms(&self) -> u64 {
        self.bucket_ms
    }

    /// The buckets a chart of the last day spans (the closed ones kept, and the open one).
    pub fn slots(&self) -> usize {
        self.keep + 1
    }

    /// Counts a denial of a registered org's send.
    pub fn denied(&self, org_id: &str, reason: DenyReason) {
        let i = index(reason);
        // The org's entry exists after its first sample or denial: no key allocated then.
        match self.orgs.get_mut(org_id) {
            Some(mut h) => h.open[i] = h.open[i].saturating_add(1),
            None => self.orgs.entry(org_id.into()).or_default().open[i] += 1,
        }
    }

    /// Closes the open bucket of every org the gate knows, at `now_ms`.
    pub fn sample(&self, gate: &Gate, now_ms: u64) {
        for st in gate.observe_orgs() {
            let id = st.config.org_id.as_str();
            let mut h = self.orgs.entry(id.into()).or_default();
            let denials = std::mem::take(&mut h.open);
            h.closed.push_back(Sample {
                at_ms: now_ms,
                fill: st.usage.unique_recipients_24h,
                limit: st.usage.tier_limit,
                denials,
            });
            while h.closed.len() > self.keep {
                h.closed.pop_front();
            }
        }
    }

    /// An org's closed buckets, oldest first, and the counts of the open one.
    pub fn history(&self, org_id: &str) -> (Vec<Sample>, [u32; REASONS.len()]) {
        match self.orgs.get(org_id) {
            Some(h) => (h.closed.iter().cloned().collect(), h.open),
            None => (Vec::new(), [0; REASONS.len()]),
        }
    }

    /// Denials of an org in the open bucket and the closed ones of the last day, in total.
    pub fn denials_24h(&self, org_id: &str) -> u64 {
        self.orgs.get(org_id).map_or(0, |h| {
            let open: u64 = h.open.iter().map(|&n| u64::from(n)).sum();
            let closed: u64 = h
                .closed
                .iter()
                .flat_map(|s| s.denials.iter())
                .map(|&n| u64::from(n))
                .sum();
            open + closed
        })
    }

    /// Closes a bucket every `bucket_ms` until the process ends.
    pub async fn run_sampler(self: Arc<Self>, gate: Gate) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.bucket_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = gate.engine().clock().now_ms();
            self.sample(&gate, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_are_counted_by_reason_and_bounded_to_a_day() {
        let a = Activity::new(3_600_000);
        a.denied("acme", DenyReason::TierLimit);
        a.denied("acme", DenyReason::TierLimit);
        a.denied("acme", DenyReason::PairRate);
        let (closed, open) = a.history("acme");
        assert!(closed.is_empty());
        assert_eq!(open[index(DenyReason::TierLimit)], 2);
        assert_eq!(open[index(DenyReason::PairRate)], 1);
        assert_eq!(a.denials_24h("acme"), 3);
        assert_eq!(a.keep, 24);
    }
}
