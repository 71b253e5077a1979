//! Outstanding permits: what is needed to undo an allowed send exactly.
//!
//! Permits are numbered per org, so the ledger is a deque indexed by `seq - first_seq`: O(1) to
//! record and to find, no hashing on the hot path. Records older than the permit TTL, or beyond
//! the per-org capacity, are dropped; reporting one of those answers "unknown or expired".

use std::collections::VecDeque;

use crate::validate::RecipientKey;

/// What one allowed send changed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct PermitRecord {
    pub(crate) at: u64,
    pub(crate) recipient: RecipientKey,
    /// The recipient's last send time before this one; `None` if the send added it.
    pub(crate) prev_ts: Option<u64>,
    /// Which window it counted in.
    pub(crate) window: u16,
    /// The phone slot it was sent from.
    pub(crate) slot: u16,
    pub(crate) reported: bool,
    pub(crate) idempotency_key: Option<Box<str>>,
}

/// One org's permits, by sequence number.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct PermitLedger {
    first_seq: u64,
    /// When the oldest record was made (kept inline so expiry needs no look at the buffer).
    oldest: Option<u64>,
    records: VecDeque<PermitRecord>,
}

impl PermitLedger {
    /// The sequence number the next permit gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.first_seq + self.records.len() as u64
    }

    pub(crate) fn push(&mut self, rec: PermitRecord, capacity: usize) -> u64 {
        while self.records.len() >= capacity {
            self.pop_front();
        }
        let seq = self.next_seq();
        if self.records.is_empty() {
            self.oldest = Some(rec.at);
        }
        self.records.push_back(rec);
        seq
    }

    fn pop_front(&mut self) {
        if self.records.pop_front().is_some() {
            self.first_seq += 1;
        }
        self.oldest = self.records.front().map(|r| r.at);
    }

    /// Drops records made at or before `cutoff`.
    #[inline]
    pub(crate) fn expire(&mut self, cutoff: u64) {
        if self.oldest.is_some_and(|t| t <= cutoff) {
            while self.records.front().is_some_and(|r| r.at <= cutoff) {
                self.pop_front();
            }
        }
    }

    pub(crate) fn get_mut(&mut self, seq: u64) -> Option<&mut PermitRecord> {
        let i = seq.checked_sub(self.first_seq)?;
        self.records.get_mut(usize::try_from(i).ok()?)
    }

    /// The first record after `seq` to the same recipient in the same window.
    pub(crate) fn next_to_same(&mut self, seq: u64) -> Option<&mut PermitRecord> {
        let i = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        let (key, window) = {
            let r = self.records.get(i)?;
            (r.recipient, r.window)
        };
        self.records
            .iter_mut()
            .skip(i + 1)
            .find(|r| r.recipient == key && r.window == window)
    }
}
