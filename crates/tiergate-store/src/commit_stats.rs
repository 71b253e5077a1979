//! Commit latency of a store, for `/metrics`: a Prometheus histogram without the dependency.
//!
//! The embedded store observes one redb transaction and its fsync per batch; the Redis store
//! one script call per batch (the gathering before it, the round trip, and Redis's own append to
//! its file).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the commit-latency histogram's buckets.
pub const COMMIT_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.25, 1.0,
];

/// Commit latencies and how many facts or log entries the commits carried.
#[derive(Debug, Default)]
pub struct CommitStats {
    buckets: [AtomicU64; COMMIT_BUCKETS.len()],
    sum_nanos: AtomicU64,
    count: AtomicU64,
    facts: AtomicU64,
    snapshots: AtomicU64,
}

impl CommitStats {
    pub(crate) fn observe(&self, took: Duration, facts: usize) {
        let secs = took.as_secs_f64();
        for (i, le) in COMMIT_BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.facts.fetch_add(facts as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket of [`COMMIT_BUCKETS`].
    pub fn buckets(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// Total seconds spent committing.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Commits (batches) made.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Counts org snapshots written (each replacing the log entries or facts before it).
    pub(crate) fn snapshot_written(&self, n: u64) {
        self.snapshots.fetch_add(n, Ordering::Relaxed);
    }

    /// Org snapshots written.
    pub fn snapshots(&self) -> u64 {
        self.snapshots.load(Ordering::Relaxed)
    }

    /// Facts committed.
    pub fn facts(&self) -> u64 {
        self.facts.load(Ordering::Relaxed)
    }
}
