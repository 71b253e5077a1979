//! Outstanding permits: what is needed to undo an allowed send exactly.
//!
//! Permits are numbered per org, so the ledger is a deque indexed by `seq - first_seq`: O(1) to
//! record and to find, no hashing on the hot path. Records older than the permit TTL, or beyond
//! the per-org capacity, are dropped; reporting one of those answers "unknown or expired".
//!
//! Every allowed send leaves a record here for the permit TTL (10 minutes by default), so the
//! record's size is most of what an unreported send costs in memory (issue #16), and writing it
//! is a cache miss on a cold org. A record is therefore 20 bytes: times are kept as one
//! absolute time and a 32-bit gap, the slot and the flags share 16 bits, and the idempotency key
//! of the rare keyed send lives beside the records rather than in each of them.

use std::collections::VecDeque;

use crate::validate::RecipientKey;

/// `prev_gap` of a send that added its recipient to the window.
const NO_PREV: u32 = u32::MAX;
/// Slots are below `MAX_PHONE_SLOTS` (512), so a slot needs 10 bits and two are flags.
const SLOT_MASK: u16 = 0x3ff;
const REPORTED: u16 = 1 << 14;
const KEYED: u16 = 1 << 15;

/// What one allowed send changed. 20 bytes: the two 64-bit values are kept as halves, so that
/// nothing needs 8-byte alignment (as the window's nodes do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PermitRecord {
    at: [u32; 2],
    recipient: [u32; 2],
    /// `at` − the recipient's last send time before this one, or [`NO_PREV`]. The window spans
    /// at most 10 days (`Policy::validate`), far less than 2³² ms (49.7 days); a gap that does
    /// not fit can only name a time long out of every window, which undoing treats exactly as
    /// "no previous send", so it is kept as that.
    prev_gap: u32,
    /// Which window it counted in.
    window: u16,
    /// The phone slot it was sent from (low 10 bits), [`REPORTED`] and [`KEYED`].
    slot_flags: u16,
}

impl PermitRecord {
    /// A record of a send at `at` to `recipient`, whose previous send in `window` was
    /// `prev_ts`, from phone `slot` (< 1,024).
    pub(crate) fn new(
        at: u64,
        recipient: RecipientKey,
        prev_ts: Option<u64>,
        window: u16,
        slot: u16,
    ) -> Self {
        debug_assert!(slot <= SLOT_MASK);
        let mut r = PermitRecord {
            at: split(at),
            recipient: split(recipient.0),
            prev_gap: NO_PREV,
            window,
            slot_flags: slot & SLOT_MASK,
        };
        r.set_prev_ts(prev_ts);
        r
    }

    pub(crate) fn at(&self) -> u64 {
        join(self.at)
    }

    pub(crate) fn recipient(&self) -> RecipientKey {
        RecipientKey(join(self.recipient))
    }

    pub(crate) fn window(&self) -> u16 {
        self.window
    }

    pub(crate) fn slot(&self) -> u16 {
        self.slot_flags & SLOT_MASK
    }

    pub(crate) fn reported(&self) -> bool {
        self.slot_flags & REPORTED != 0
    }

    pub(crate) fn mark_reported(&mut self) {
        self.slot_flags |= REPORTED;
    }

    fn keyed(&self) -> bool {
        self.slot_flags & KEYED != 0
    }

    /// The recipient's last send time before this one; `None` if the send added it.
    pub(crate) fn prev_ts(&self) -> Option<u64> {
        (self.prev_gap != NO_PREV).then(|| self.at() - u64::from(self.prev_gap))
    }

    pub(crate) fn set_prev_ts(&mut self, prev: Option<u64>) {
        self.prev_gap = prev
            .and_then(|p| self.at().checked_sub(p))
            .and_then(|gap| u32::try_from(gap).ok())
            .filter(|&gap| gap != NO_PREV)
            .unwrap_or(NO_PREV);
    }
}

#[inline]
fn split(v: u64) -> [u32; 2] {
    [v as u32, (v >> 32) as u32]
}

#[inline]
fn join(v: [u32; 2]) -> u64 {
    u64::from(v[0]) | (u64::from(v[1]) << 32)
}

/// One org's permits, by sequence number.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "wire::Ledger", into = "wire::Ledger")]
pub(crate) struct PermitLedger {
    first_seq: u64,
    /// When the oldest record was made (kept inline so expiry needs no look at the buffer).
    oldest: Option<u64>,
    records: VecDeque<PermitRecord>,
    /// The idempotency key of each keyed record still held, by sequence number (ascending).
    keys: VecDeque<(u64, Box<str>)>,
}

impl PermitLedger {
    /// The sequence number the next permit gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.first_seq + self.records.len() as u64
    }

    /// Records `rec` (made with idempotency `key` when it has one) and returns its sequence
    /// number. Beyond `capacity` records, the oldest is dropped.
    #[inline]
    pub(crate) fn push(&mut self, rec: PermitRecord, key: Option<&str>, capacity: usize) -> u64 {
        while self.records.len() >= capacity {
            self.pop_front();
        }
        let seq = self.next_seq();
        if self.records.is_empty() {
            self.oldest = Some(rec.at());
        }
        let rec = PermitRecord {
            slot_flags: (rec.slot_flags & !KEYED) | if key.is_some() { KEYED } else { 0 },
            ..rec
        };
        self.records.push_back(rec);
        if let Some(k) = key {
            self.keys.push_back((seq, Box::from(k)));
        }
        seq
    }

    fn pop_front(&mut self) {
        if let Some(r) = self.records.pop_front() {
            if r.keyed() {
                while self.keys.front().is_some_and(|(s, _)| *s <= self.first_seq) {
                    self.keys.pop_front();
                }
            }
            self.first_seq += 1;
        }
        self.oldest = self.records.front().map(PermitRecord::at);
    }

    /// Drops records made at or before `cutoff`.
    #[inline]
    pub(crate) fn expire(&mut self, cutoff: u64) {
        if self.oldest.is_some_and(|t| t <= cutoff) {
            while self.records.front().is_some_and(|r| r.at() <= cutoff) {
                self.pop_front();
            }
        }
    }

    pub(crate) fn get_mut(&mut self, seq: u64) -> Option<&mut PermitRecord> {
        let i = seq.checked_sub(self.first_seq)?;
        self.records.get_mut(usize::try_from(i).ok()?)
    }

    /// The idempotency key permit `seq` was made with, if it had one and is still held.
    pub(crate) fn key_of(&self, seq: u64) -> Option<&str> {
        let i = self.keys.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        Some(&self.keys[i].1)
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

/// The ledger as snapshots have always written it: one record per permit with its own times,
/// flags and key, so snapshots written before records were packed restore unchanged, and
/// snapshots stay readable JSON.
mod wire {
    use std::collections::VecDeque;

    use crate::validate::RecipientKey;

    #[derive(serde::Serialize, serde::Deserialize)]
    pub(super) struct Record {
        at: u64,
        recipient: RecipientKey,
        prev_ts: Option<u64>,
        window: u16,
        slot: u16,
        reported: bool,
        idempotency_key: Option<Box<str>>,
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    pub(super) struct Ledger {
        first_seq: u64,
        oldest: Option<u64>,
        records: VecDeque<Record>,
    }

    impl From<Ledger> for super::PermitLedger {
        fn from(w: Ledger) -> Self {
            let mut l = super::PermitLedger {
                first_seq: w.first_seq,
                oldest: w.oldest,
                records: VecDeque::with_capacity(w.records.len()),
                keys: VecDeque::new(),
            };
            for (i, r) in w.records.into_iter().enumerate() {
                let mut rec =
                    super::PermitRecord::new(r.at, r.recipient, r.prev_ts, r.window, r.slot);
                if r.reported {
                    rec.mark_reported();
                }
                if let Some(k) = r.idempotency_key {
                    rec.slot_flags |= super::KEYED;
                    l.keys.push_back((w.first_seq + i as u64, k));
                }
                l.records.push_back(rec);
            }
            l
        }
    }

    impl From<super::PermitLedger> for Ledger {
        fn from(l: super::PermitLedger) -> Self {
            let records = l
                .records
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let seq = l.first_seq + i as u64;
                    Record {
                        at: r.at(),
                        recipient: r.recipient(),
                        prev_ts: r.prev_ts(),
                        window: r.window,
                        slot: r.slot(),
                        reported: r.reported(),
                        idempotency_key: r.keyed().then(|| l.key_of(seq).map(Box::from)).flatten(),
                    }
                })
                .collect();
            Ledger {
                first_seq: l.first_seq,
                oldest: l.oldest,
                records,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(at: u64, r: u64, prev: Option<u64>) -> PermitRecord {
        PermitRecord::new(at, RecipientKey(r), prev, 0, 3)
    }

    #[test]
    fn a_record_is_20_bytes() {
        assert_eq!(std::mem::size_of::<PermitRecord>(), 20);
    }

    #[test]
    fn records_keep_what_undo_needs() {
        let r = PermitRecord::new(10_000, RecipientKey(7), Some(4_000), 5, 511);
        assert_eq!(
            (r.at(), r.recipient(), r.prev_ts(), r.window(), r.slot()),
            (10_000, RecipientKey(7), Some(4_000), 5, 511)
        );
        assert!(!r.keyed() && !r.reported());
        let mut r = rec(10_000, 7, None);
        assert_eq!(r.prev_ts(), None);
        r.mark_reported();
        assert!(r.reported());
        assert_eq!(r.slot(), 3);
        r.set_prev_ts(Some(10_000));
        assert_eq!(r.prev_ts(), Some(10_000));
        // A gap beyond 32 bits is older than any window: kept as no previous send.
        let far = 10_000 + (1u64 << 33);
        assert_eq!(rec(far, 7, Some(10_000)).prev_ts(), None);
    }

    #[test]
    fn keys_follow_their_records_out() {
        let mut l = PermitLedger::default();
        let a = l.push(rec(1, 1, None), Some("a"), 3);
        let b = l.push(rec(2, 2, None), None, 3);
        let c = l.push(rec(3, 3, None), Some("c"), 3);
        assert_eq!((l.key_of(a), l.key_of(b), l.key_of(c)), (Some("a"), None, Some("c")));
        let d = l.push(rec(4, 4, None), Some("d"), 3);
        assert_eq!(l.key_of(a), None);
        assert!(l.get_mut(a).is_none());
        l.expire(3);
        assert_eq!((l.key_of(c), l.key_of(d)), (None, Some("d")));
        assert_eq!(l.keys.len(), 1);
    }

    #[test]
    fn snapshots_keep_the_old_shape() {
        let mut l = PermitLedger::default();
        l.push(rec(100, 1, None), Some("k-1"), 10);
        l.push(rec(200, 1, Some(100)), None, 10);
        l.get_mut(0).unwrap().mark_reported();
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(
            json["records"][0],
            serde_json::json!({"at": 100, "recipient": 1, "prev_ts": null, "window": 0,
                "slot": 3, "reported": true, "idempotency_key": "k-1"})
        );
        assert_eq!(json["records"][1]["prev_ts"], 100);
        let back: PermitLedger = serde_json::from_value(json).unwrap();
        assert_eq!(back, l);
    }
}
