//! Idempotency keys: the same key within the TTL returns the first decision, counted once.
//!
//! Only ALLOW decisions are remembered. A denial records nothing, so a retry with the same key
//! is simply decided again, which is what a caller retrying after `retry_after_ms` needs. The
//! cache is bounded per org (oldest first) so that keys cannot grow memory without limit.

use std::collections::VecDeque;

use hashbrown::HashMap;

use crate::decision::Decision;

#[derive(Debug)]
struct Entry {
    at: u64,
    decision: Decision,
}

/// Remembered decisions of one org by idempotency key.
#[derive(Debug, Default)]
pub(crate) struct IdempotencyCache {
    map: HashMap<Box<str>, Entry, foldhash::fast::RandomState>,
    order: VecDeque<(u64, Box<str>)>,
}

/// An [`IdempotencyCache`], for a snapshot: its expiry order and its entries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct IdempotencyState {
    order: Vec<(u64, String)>,
    entries: Vec<(String, u64, Decision)>,
}

impl IdempotencyCache {
    /// Its state, for a snapshot.
    pub(crate) fn state(&self) -> IdempotencyState {
        IdempotencyState {
            order: self
                .order
                .iter()
                .map(|(at, k)| (*at, k.to_string()))
                .collect(),
            entries: self
                .map
                .iter()
                .map(|(k, e)| (k.to_string(), e.at, e.decision.clone()))
                .collect(),
        }
    }

    /// A cache in the state a snapshot kept.
    pub(crate) fn restore(state: IdempotencyState) -> Self {
        Self {
            map: state
                .entries
                .into_iter()
                .map(|(k, at, decision)| (k.into_boxed_str(), Entry { at, decision }))
                .collect(),
            order: state
                .order
                .into_iter()
                .map(|(at, k)| (at, k.into_boxed_str()))
                .collect(),
        }
    }

    /// Drops keys older than the TTL (at or before `cutoff`).
    pub(crate) fn expire(&mut self, cutoff: u64) {
        while let Some((at, _)) = self.order.front() {
            if *at > cutoff {
                break;
            }
            let Some((at, key)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&key).is_some_and(|e| e.at == at) {
                self.map.remove(&key);
            }
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Decision> {
        if self.map.is_empty() {
            return None;
        }
        self.map.get(key).map(|e| &e.decision)
    }

    pub(crate) fn insert(&mut self, key: &str, at: u64, decision: Decision, capacity: usize) {
        if capacity == 0 {
            return;
        }
        while self.map.len() >= capacity {
            let Some((old_at, old)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|e| e.at == old_at) {
                self.map.remove(&old);
            }
        }
        let key: Box<str> = key.into();
        self.order.push_back((at, key.clone()));
        self.map.insert(key, Entry { at, decision });
    }

    /// Forgets `key` if it still maps to permit `seq` (a NOT_SENT refund).
    pub(crate) fn forget(&mut self, key: &str, seq: u64) {
        if self
            .map
            .get(key)
            .is_some_and(|e| e.decision.permit.as_ref().is_some_and(|p| p.seq == seq))
        {
            self.map.remove(key);
        }
    }
}
