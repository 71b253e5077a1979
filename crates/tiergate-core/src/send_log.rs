//! The exact rolling 7-day template count.
//!
//! The policy compares the number of templates sent in a moving 7 days against a handful of
//! thresholds (1,000 for pass-through and for the weekly cap without an escalation path, half the
//! tier for automatic upgrades). "Are there at least k sends in the window?" only needs the k-th
//! most recent send time, so the log keeps the most recent `capacity` send times exactly, with
//! capacity = the largest threshold plus slack for refunds. Memory is therefore bounded by the
//! tier, not by volume, and every threshold decision is exact.
//!
//! Beyond `capacity` the *reported* total (`templates_7d`) comes from hourly buckets and is
//! exact except for the hour that straddles the window edge; no decision depends on it.

use std::collections::VecDeque;

const HOUR_MS: u64 = 3_600_000;

/// Refunds (NOT_SENT reports) that can land inside a full log before thresholds lose exactness.
pub const REFUND_SLACK: usize = 1_024;

/// Recent send times of one org, oldest first.
///
/// The oldest time and the current hour's bucket are kept inline: on the hot path the log is
/// checked for expiry and appended to, and neither then needs to touch the far end of a buffer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(from = "wire::SendLog", into = "wire::SendLog")]
pub struct SendLog {
    recent: VecDeque<u64>,
    /// `recent.front()`, or `None` when empty.
    oldest: Option<u64>,
    capacity: usize,
    /// The hour being filled: (hour index, sends).
    hour: (u64, u32),
    /// Earlier hours, oldest first.
    hours: VecDeque<(u64, u32)>,
    /// Sends in `hours` and `hour` together, so that the reported total of a full log (every
    /// busy sender's) is one subtraction per decision instead of a sum over up to 192 hours.
    bucketed: u64,
    /// `hours.front()`'s hour (`u64::MAX` when empty), inline so that expiry drops the hours
    /// before the window without reading the buffer on every decision.
    first_hour: u64,
}

/// The log as snapshots have always written it (the running total is derived).
mod wire {
    use std::collections::VecDeque;

    #[derive(serde::Serialize, serde::Deserialize)]
    pub(super) struct SendLog {
        recent: VecDeque<u64>,
        oldest: Option<u64>,
        capacity: usize,
        hour: (u64, u32),
        hours: VecDeque<(u64, u32)>,
    }

    impl From<SendLog> for super::SendLog {
        fn from(w: SendLog) -> Self {
            let bucketed = w
                .hours
                .iter()
                .chain(std::iter::once(&w.hour))
                .map(|&(_, n)| u64::from(n))
                .sum();
            super::SendLog {
                first_hour: w.hours.front().map_or(u64::MAX, |&(h, _)| h),
                recent: w.recent,
                oldest: w.oldest,
                capacity: w.capacity,
                hour: w.hour,
                hours: w.hours,
                bucketed,
            }
        }
    }

    impl From<super::SendLog> for SendLog {
        fn from(l: super::SendLog) -> Self {
            SendLog {
                recent: l.recent,
                oldest: l.oldest,
                capacity: l.capacity,
                hour: l.hour,
                hours: l.hours,
            }
        }
    }
}

impl Default for SendLog {
    fn default() -> Self {
        SendLog {
            recent: VecDeque::new(),
            oldest: None,
            capacity: 0,
            hour: (0, 0),
            hours: VecDeque::new(),
            bucketed: 0,
            first_hour: u64::MAX,
        }
    }
}

impl SendLog {
    /// A log able to answer thresholds up to `max_threshold` exactly.
    pub fn new(max_threshold: u64) -> Self {
        let mut log = Self::default();
        log.set_max_threshold(max_threshold);
        log
    }

    /// Changes the largest threshold asked about (e.g. after a tier change).
    pub fn set_max_threshold(&mut self, max_threshold: u64) {
        self.capacity = (max_threshold as usize).saturating_add(REFUND_SLACK);
        while self.recent.len() > self.capacity {
            self.recent.pop_front();
        }
        self.oldest = self.recent.front().copied();
    }

    /// Forgets sends at or before `cutoff` (= now − 7 days), and the hours before its hour.
    #[inline]
    pub fn expire(&mut self, cutoff: u64) {
        if self.oldest.is_some_and(|t| t <= cutoff) {
            while self.recent.front().is_some_and(|&t| t <= cutoff) {
                self.recent.pop_front();
            }
            self.oldest = self.recent.front().copied();
        }
        if self.first_hour < cutoff / HOUR_MS {
            self.drop_hours_before(cutoff / HOUR_MS);
        }
    }

    fn drop_hours_before(&mut self, hour: u64) {
        while let Some(&(h, n)) = self.hours.front()
            && h < hour
        {
            self.bucketed -= u64::from(n);
            self.hours.pop_front();
        }
        self.first_hour = self.hours.front().map_or(u64::MAX, |&(h, _)| h);
    }

    /// Reads the newest send time: see `PermitLedger::touch_tail`.
    #[inline(always)]
    pub(crate) fn touch_tail(&self) -> u64 {
        self.recent.back().copied().unwrap_or(0)
    }

    /// Records a send at `ts` (≥ every earlier one).
    pub fn push(&mut self, ts: u64) {
        if self.recent.len() == self.capacity {
            self.recent.pop_front();
            self.oldest = self.recent.front().copied();
        }
        self.recent.push_back(ts);
        if self.oldest.is_none() {
            self.oldest = Some(ts);
        }
        let hour = ts / HOUR_MS;
        self.bucketed += 1;
        if self.hour.0 == hour {
            self.hour.1 += 1;
        } else {
            if self.hour.1 > 0 {
                self.hours.push_back(self.hour);
                self.first_hour = self.first_hour.min(self.hour.0);
            }
            self.hour = (hour, 1);
            // At most a week and a day of hours are ever asked about.
            self.drop_hours_before(hour.saturating_sub(8 * 24));
        }
    }

    /// Removes one send made at `ts` (a refund). Returns whether one was found.
    pub fn remove(&mut self, ts: u64) -> bool {
        let hour = ts / HOUR_MS;
        let bucket = if self.hour.0 == hour {
            Some(&mut self.hour)
        } else {
            self.hours.iter_mut().rev().find(|(h, _)| *h == hour)
        };
        let Some(b) = bucket.filter(|b| b.1 > 0) else {
            return false;
        };
        b.1 -= 1;
        self.bucketed -= 1;
        let i = self.recent.partition_point(|&t| t < ts);
        if self.recent.get(i) == Some(&ts) {
            self.recent.remove(i);
            self.oldest = self.recent.front().copied();
        }
        true
    }

    /// Whether at least `k` sends happened after `cutoff`. Exact for `k` ≤ the max threshold.
    #[inline]
    pub fn at_least(&self, k: u64, cutoff: u64) -> bool {
        if k == 0 {
            return true;
        }
        let n = self.recent.len();
        if (k as usize) > n {
            return false;
        }
        // Every entry is newer than `cutoff` once expired: no need to look at the k-th.
        self.oldest.is_some_and(|t| t > cutoff) || self.recent[n - k as usize] > cutoff
    }

    /// Milliseconds from `now` until fewer than `k` sends remain in the window of `window_ms`:
    /// when the k-th most recent send leaves it. 0 when already fewer.
    pub fn until_fewer_than(&self, k: u64, now: u64, window_ms: u64) -> u64 {
        let n = self.recent.len();
        if k == 0 || (k as usize) > n {
            return 0;
        }
        (self.recent[n - k as usize] + window_ms).saturating_sub(now)
    }

    /// Sends after `cutoff`: exact while the log holds them all, hour-bucketed beyond.
    pub fn count(&self, cutoff: u64) -> u64 {
        let in_recent = match self.oldest {
            Some(t) if t > cutoff => self.recent.len(),
            _ => self.recent.len() - self.recent.partition_point(|&t| t <= cutoff),
        };
        if in_recent < self.recent.len() || self.recent.len() < self.capacity {
            return in_recent as u64;
        }
        // Expiry dropped the hours before its cutoff's; any left before this cutoff's (none when
        // the two are the same, as on a decision) come first.
        let cutoff_hour = cutoff / HOUR_MS;
        let before: u64 = self
            .hours
            .iter()
            .chain(std::iter::once(&self.hour))
            .take_while(|(h, _)| *h < cutoff_hour)
            .map(|&(_, n)| u64::from(n))
            .sum();
        (self.bucketed - before).max(in_recent as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_exact() {
        let mut log = SendLog::new(3);
        for t in [10, 20, 30, 40] {
            log.push(t);
        }
        assert!(log.at_least(4, 0));
        assert!(log.at_least(3, 10));
        assert!(!log.at_least(4, 10));
        assert_eq!(log.count(10), 3);
        assert_eq!(log.until_fewer_than(3, 45, 100), 20 + 100 - 45);
        assert!(log.remove(20));
        assert!(!log.at_least(4, 0));
        assert_eq!(log.count(0), 3);
        log.expire(30);
        assert_eq!(log.count(30), 1);
    }

    /// The running total gives what summing the hours from the cutoff's on gives, through
    /// pushes over many hours, refunds and expiry.
    #[test]
    fn the_running_total_matches_a_scan() {
        fn scan(log: &SendLog, cutoff: u64) -> u64 {
            let ch = cutoff / HOUR_MS;
            log.hours
                .iter()
                .chain(std::iter::once(&log.hour))
                .filter(|(h, _)| *h >= ch)
                .map(|&(_, n)| u64::from(n))
                .sum()
        }
        let mut log = SendLog::new(10);
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut t = 1_700_000_000_000u64;
        let week = 7 * 24 * HOUR_MS;
        let mut checked = 0;
        for i in 0..20_000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            t += seed % (HOUR_MS / 4);
            log.push(t);
            if i % 7 == 0 {
                log.remove(t);
            }
            let cutoff = t.saturating_sub(week);
            log.expire(cutoff);
            if log.recent.len() == log.capacity {
                assert_eq!(
                    log.count(cutoff),
                    scan(&log, cutoff).max(log.recent.len() as u64),
                    "after {i} sends"
                );
                checked += 1;
            }
        }
        assert!(checked > 10_000, "the log was full {checked} times");
        let back: SendLog = serde_json::from_value(serde_json::to_value(&log).unwrap()).unwrap();
        assert_eq!(back.bucketed, log.bucketed);
    }

    #[test]
    fn memory_is_capped_but_counts_continue() {
        let mut log = SendLog::new(2);
        for t in 0..5_000u64 {
            log.push(1_000_000 + t);
        }
        assert!(log.recent.len() <= 2 + REFUND_SLACK);
        assert_eq!(log.count(0), 5_000);
        assert!(log.at_least(2, 1_004_997));
        assert!(!log.at_least(2, 1_004_998));
    }
}
