//! Time sources.
//!
//! Every rule of the policy is a function of time (24 h windows, 7-day counts, the RED grace,
//! pauses, GCRA), so time is injected instead of read from the OS: tests and `simulate` drive a
//! [`ManualClock`], production uses [`SystemClock`]. Times are Unix milliseconds, the unit that
//! WhatsApp's APIs and tiergate's gRPC contract use.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in Unix milliseconds.
pub trait Clock: Send + Sync + 'static {
    /// The current time, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to. Tests, the simulator and `serve --manual-clock` use it
/// so that 7-day rules can be exercised in milliseconds.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    /// A clock stopped at `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self {
            now: AtomicU64::new(start_ms),
        }
    }

    /// Moves time forward by `ms` and returns the new time. Time never moves backwards.
    pub fn advance(&self, ms: u64) -> u64 {
        self.now.fetch_add(ms, Ordering::SeqCst).saturating_add(ms)
    }

    /// Moves time forward to `ms`; an earlier `ms` leaves the clock where it is, because the
    /// engine's windows assume time never goes backwards. Returns the resulting time.
    pub fn advance_to(&self, ms: u64) -> u64 {
        self.now.fetch_max(ms, Ordering::SeqCst).max(ms)
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

/// Unix milliseconds as RFC 3339 in UTC, to the millisecond: how times are shown to people
/// (the CLI's tables, the status page), whatever clock produced them.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1_000);
    let milli = ms.rem_euclid(1_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3_600,
        sod % 3_600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_680_368_123), "2026-11-26T08:06:08.123Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn manual_clock_only_moves_forward() {
        let c = ManualClock::new(1_000);
        assert_eq!(c.advance(500), 1_500);
        assert_eq!(c.advance_to(1_200), 1_500);
        assert_eq!(c.advance_to(2_000), 2_000);
        assert_eq!(c.now_ms(), 2_000);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
