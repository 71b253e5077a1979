//! A clock that reads a fact's time while replaying, then the real clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tiergate_core::Clock;

/// While `pinned` is non-zero the engine sees that time; afterwards, the inner clock.
pub struct ReplayClock {
    inner: Arc<dyn Clock>,
    pinned: AtomicU64,
}

impl ReplayClock {
    /// Wraps `inner`, unpinned.
    pub fn new(inner: Arc<dyn Clock>) -> Self {
        Self {
            inner,
            pinned: AtomicU64::new(0),
        }
    }

    /// Pins the time (replay).
    pub fn pin(&self, ms: u64) {
        self.pinned.store(ms.max(1), Ordering::SeqCst);
    }

    /// Back to the inner clock.
    pub fn release(&self) {
        self.pinned.store(0, Ordering::SeqCst);
    }
}

impl Clock for ReplayClock {
    fn now_ms(&self) -> u64 {
        match self.pinned.load(Ordering::Relaxed) {
            0 => self.inner.now_ms(),
            t => t,
        }
    }
}
