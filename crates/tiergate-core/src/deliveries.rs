//! Webhook deliveries already applied, so that Meta's redeliveries change nothing.
//!
//! Meta retries an unacknowledged webhook for up to 7 days, and a retry can arrive after the
//! first delivery was applied (an acknowledgement lost on the way back, a replica that answered
//! late). Each change carries a key (a status: its message id, status and error code; other
//! fields: their content and time), and the org remembers the keys it applied, bounded by count
//! and by age. The memory lives in the org's state, so it is journaled, replicated and
//! snapshotted like everything else: a restart or another replica drops the same duplicates.

use std::collections::VecDeque;

use hashbrown::HashSet;
use serde::{Deserialize, Serialize};

/// The remembered delivery keys of one org, as 64-bit FNV-1a hashes (deterministic on every
/// replica; at 100,000 keys a collision is a one-in-a-billion event).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Deliveries {
    order: VecDeque<(u64, u64)>,
    #[serde(skip)]
    seen: HashSet<u64, foldhash::fast::RandomState>,
}

/// FNV-1a, 64 bit: a stable hash of a delivery key.
fn fnv1a(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Deliveries {
    /// Whether `key` is new at `now`; a new key is remembered. Keys older than `ttl_ms` are
    /// forgotten first, and the oldest go when `capacity` is reached.
    pub(crate) fn first_time(&mut self, key: &str, now: u64, ttl_ms: u64, capacity: usize) -> bool {
        self.rebuild_if_restored();
        while let Some(&(at, h)) = self.order.front() {
            let expired = now.saturating_sub(at) >= ttl_ms;
            if !expired && self.order.len() < capacity {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&h);
        }
        let h = fnv1a(key);
        if !self.seen.insert(h) {
            return false;
        }
        self.order.push_back((now, h));
        true
    }

    /// After a snapshot was read, the set is rebuilt from the order (it is not stored twice).
    fn rebuild_if_restored(&mut self) {
        if self.seen.len() != self.order.len() {
            self.seen = self.order.iter().map(|&(_, h)| h).collect();
        }
    }

    /// How many are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_counts_once_until_it_ages_out_or_is_pushed_out() {
        let mut d = Deliveries::default();
        assert!(d.first_time("a", 0, 100, 2));
        assert!(!d.first_time("a", 50, 100, 2));
        assert!(d.first_time("b", 60, 100, 2));
        // "a" is older than the ttl at 101: forgotten, so it counts again.
        assert!(d.first_time("a", 101, 100, 2));
        // capacity 2: "c" pushes out the oldest ("b").
        assert!(d.first_time("c", 102, 100, 2));
        assert!(d.first_time("b", 103, 100, 2));
        assert!(d.len() <= 2);
    }

    #[test]
    fn a_restored_copy_remembers_the_same_keys() {
        let mut d = Deliveries::default();
        d.first_time("x", 1, 100, 10);
        let json = serde_json::to_string(&d).unwrap();
        let mut back: Deliveries = serde_json::from_str(&json).unwrap();
        assert!(!back.first_time("x", 2, 100, 10));
        assert!(back.first_time("y", 2, 100, 10));
    }
}
