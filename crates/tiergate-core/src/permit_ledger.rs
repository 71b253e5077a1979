//! Outstanding permits: what is needed to undo an allowed send exactly.
//!
//! Permits are numbered per org, so the ledger is a deque indexed by `seq - first_seq`: O(1) to
//! record and to find, no hashing on the hot path. Records older than the permit TTL, or beyond
//! the per-org capacity, are dropped; reporting one of those answers "unknown or expired".
//!
//! Every allowed send leaves a record here for the permit TTL (10 minutes by default), so the
//! record's size is most of what an unreported send costs in memory (issue #16), and writing it
//! is a cache miss on a cold org. A record is therefore 18 bytes: times are kept as one
//! absolute time and a 32-bit gap, the slot, the window and the flags share 16 bits (a send's
//! window is either the org's one or its slot's), fields are kept in 16-bit pieces so that the
//! record is 2-aligned and nothing pads it, and the idempotency key of the rare keyed send
//! lives beside the records rather than in each of them.

use std::collections::VecDeque;

use crate::halves::{from_pieces, from_quarters, pieces, quarters};
use crate::validate::RecipientKey;

/// `prev_gap` of a send that added its recipient to the window.
const NO_PREV: u32 = u32::MAX;
/// Slots are below `MAX_PHONE_SLOTS` (512), so a slot fits in the low 10 bits; bits 13–15 are
/// flags.
const SLOT_MASK: u16 = 0x3ff;
/// The send counted in its slot's window (`phone_number` scope) rather than window 0.
const WINDOW_IS_SLOT: u16 = 1 << 13;
const REPORTED: u16 = 1 << 14;
const KEYED: u16 = 1 << 15;

/// What one allowed send changed, as the engine reads and writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PermitRecord {
    pub(crate) at: u64,
    pub(crate) recipient: RecipientKey,
    /// The recipient's last send time before this one; `None` if the send added it.
    pub(crate) prev_ts: Option<u64>,
    /// Which window it counted in: 0, or `slot` (the engine's `window_of`).
    pub(crate) window: u16,
    /// The phone slot it was sent from (below 1,024).
    pub(crate) slot: u16,
}

/// Why a permit cannot be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotReportable {
    /// Never made, expired, or dropped beyond the capacity.
    Unknown,
    AlreadyReported,
}

/// A [`PermitRecord`] as the ledger holds it: 18 bytes, 2-aligned (every field in 16-bit
/// pieces, so that nothing needs 4- or 8-byte alignment and the record is not padded to 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed {
    /// `at` − the ledger's `base`. The ledger spans at most the permit TTL (30 days at most,
    /// `Policy::validate`), well within 2³² ms (49.7 days).
    at: [u16; 2],
    /// The recipient key.
    recipient: [u16; 4],
    /// `at` − the recipient's previous send, or [`NO_PREV`]. A previous send lies within the
    /// window (at most 10 days); a gap that does not fit in 32 bits can only name a time long
    /// out of every window, which undoing treats exactly as "no previous send", so it is kept
    /// as that.
    prev_gap: [u16; 2],
    /// The slot (low 10 bits), [`WINDOW_IS_SLOT`], [`REPORTED`] and [`KEYED`].
    slot_flags: u16,
}

impl Packed {
    #[inline(always)]
    fn at(&self) -> u32 {
        from_pieces(self.at)
    }

    #[inline(always)]
    fn set_at(&mut self, at: u32) {
        self.at = pieces(at);
    }

    #[inline(always)]
    fn prev_gap(&self) -> u32 {
        from_pieces(self.prev_gap)
    }

    #[inline(always)]
    fn slot(&self) -> u16 {
        self.slot_flags & SLOT_MASK
    }

    #[inline(always)]
    fn window(&self) -> u16 {
        if self.slot_flags & WINDOW_IS_SLOT != 0 {
            self.slot()
        } else {
            0
        }
    }
}

fn gap(at: u64, prev: Option<u64>) -> u32 {
    prev.and_then(|p| at.checked_sub(p))
        .and_then(|g| u32::try_from(g).ok())
        .filter(|&g| g != NO_PREV)
        .unwrap_or(NO_PREV)
}

/// One org's permits, by sequence number.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "wire::Ledger", into = "wire::Ledger")]
pub(crate) struct PermitLedger {
    first_seq: u64,
    /// When the oldest record was made (kept inline so expiry needs no look at the buffer).
    oldest: Option<u64>,
    /// What records' times are offsets from.
    base: u64,
    records: VecDeque<Packed>,
    /// The idempotency key of each keyed record still held, by sequence number (ascending).
    keys: VecDeque<(u64, Box<str>)>,
}

impl PermitLedger {
    /// The sequence number the next permit gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.first_seq + self.records.len() as u64
    }

    /// Reads the newest record's offset: a decision on a cold org calls this early, so that
    /// the line the next record is written to is on its way while the rules run.
    #[inline(always)]
    pub(crate) fn touch_tail(&self) -> u32 {
        self.records.back().map_or(0, Packed::at)
    }

    fn unpack(&self, p: &Packed) -> PermitRecord {
        let at = self.base + u64::from(p.at());
        let gap = p.prev_gap();
        PermitRecord {
            at,
            recipient: RecipientKey(from_quarters(p.recipient)),
            prev_ts: (gap != NO_PREV).then(|| at - u64::from(gap)),
            window: p.window(),
            slot: p.slot(),
        }
    }

    /// `at` as an offset from the base, moving the base up to the oldest record when `at` is
    /// past its 32-bit reach. Records older than that reach (only possible with a TTL the
    /// policy refuses) are dropped rather than kept wrong.
    fn offset(&mut self, at: u64) -> u32 {
        if self.records.is_empty() {
            self.base = at;
        }
        if at.saturating_sub(self.base) > u64::from(u32::MAX) {
            while self
                .oldest
                .is_some_and(|o| at.saturating_sub(o) > u64::from(u32::MAX))
            {
                self.pop_front();
            }
            let new_base = self.oldest.unwrap_or(at);
            let shift = (new_base - self.base) as u32;
            for r in &mut self.records {
                r.set_at(r.at() - shift);
            }
            self.base = new_base;
        }
        at.saturating_sub(self.base) as u32
    }

    /// Records `rec` (made with idempotency `key` when it has one) and returns its sequence
    /// number. Beyond `capacity` records, the oldest is dropped. `rec.at` is never earlier
    /// than a time recorded before (the org's clock does not go back).
    #[inline]
    pub(crate) fn push(&mut self, rec: PermitRecord, key: Option<&str>, capacity: usize) -> u64 {
        debug_assert!(rec.slot <= SLOT_MASK);
        debug_assert!(rec.window == 0 || rec.window == rec.slot);
        while self.records.len() >= capacity {
            self.pop_front();
        }
        let at = self.offset(rec.at);
        let seq = self.next_seq();
        if self.records.is_empty() {
            self.oldest = Some(rec.at);
        }
        let mut slot_flags = rec.slot & SLOT_MASK;
        if rec.window != 0 {
            slot_flags |= WINDOW_IS_SLOT;
        }
        if key.is_some() {
            slot_flags |= KEYED;
        }
        self.records.push_back(Packed {
            at: pieces(at),
            recipient: quarters(rec.recipient.0),
            prev_gap: pieces(gap(rec.at, rec.prev_ts)),
            slot_flags,
        });
        if let Some(k) = key {
            self.keys.push_back((seq, Box::from(k)));
        }
        seq
    }

    fn pop_front(&mut self) {
        if let Some(r) = self.records.pop_front() {
            if r.slot_flags & KEYED != 0 {
                while self.keys.front().is_some_and(|(s, _)| *s <= self.first_seq) {
                    self.keys.pop_front();
                }
            }
            self.first_seq += 1;
        }
        self.oldest = self.records.front().map(|r| self.base + u64::from(r.at()));
    }

    /// Drops records made at or before `cutoff`.
    #[inline]
    pub(crate) fn expire(&mut self, cutoff: u64) {
        if self.oldest.is_some_and(|t| t <= cutoff) {
            while self.oldest.is_some_and(|t| t <= cutoff) {
                self.pop_front();
            }
        }
    }

    fn index(&self, seq: u64) -> Option<usize> {
        let i = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        (i < self.records.len()).then_some(i)
    }

    /// Marks permit `seq` reported and returns what it recorded; a permit is reported once.
    pub(crate) fn report(&mut self, seq: u64) -> Result<PermitRecord, NotReportable> {
        let i = self.index(seq).ok_or(NotReportable::Unknown)?;
        let p = &mut self.records[i];
        if p.slot_flags & REPORTED != 0 {
            return Err(NotReportable::AlreadyReported);
        }
        p.slot_flags |= REPORTED;
        let p = *p;
        Ok(self.unpack(&p))
    }

    /// The record of permit `seq`, if it is still held.
    #[cfg(test)]
    pub(crate) fn get(&self, seq: u64) -> Option<PermitRecord> {
        self.index(seq).map(|i| self.unpack(&self.records[i]))
    }

    /// The idempotency key permit `seq` was made with, if it had one and is still held.
    pub(crate) fn key_of(&self, seq: u64) -> Option<&str> {
        let i = self.keys.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        Some(&self.keys[i].1)
    }

    /// Undoing permit `seq` (`rec`) could not touch its window because a later send to the same
    /// recipient is the latest there. If that later send (in the same window) followed `rec`,
    /// it now follows `rec`'s predecessor, so undoing it later restores the right time.
    pub(crate) fn relink_after_undo(&mut self, seq: u64, rec: &PermitRecord) {
        let Some(i) = self.index(seq) else {
            return;
        };
        let key = quarters(rec.recipient.0);
        let base = self.base;
        if let Some(later) = self
            .records
            .iter_mut()
            .skip(i + 1)
            .find(|r| r.recipient == key && r.window() == rec.window)
        {
            let at = base + u64::from(later.at());
            let later_gap = later.prev_gap();
            if at.checked_sub(u64::from(later_gap)) == Some(rec.at) && later_gap != NO_PREV {
                later.prev_gap = pieces(gap(at, rec.prev_ts));
            }
        }
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

    impl TryFrom<Ledger> for super::PermitLedger {
        type Error = String;

        /// Refuses a record whose window is neither 0 nor its slot: the engine never makes
        /// one (a send counts in the org's window or its number's), and a packed record
        /// cannot hold it.
        fn try_from(w: Ledger) -> Result<Self, String> {
            let mut l = super::PermitLedger {
                first_seq: w.first_seq,
                ..Default::default()
            };
            let n = w.records.len();
            for (i, r) in w.records.into_iter().enumerate() {
                let slot = r.slot & super::SLOT_MASK;
                if r.window != 0 && r.window != slot {
                    return Err(format!(
                        "permit {}: window {} is neither 0 nor its slot {slot}",
                        w.first_seq + i as u64,
                        r.window
                    ));
                }
                let rec = super::PermitRecord {
                    at: r.at,
                    recipient: r.recipient,
                    prev_ts: r.prev_ts,
                    window: r.window,
                    slot,
                };
                let seq = l.push(rec, r.idempotency_key.as_deref(), n.max(1));
                if r.reported {
                    let _ = l.report(seq);
                }
                debug_assert_eq!(seq, w.first_seq + i as u64);
            }
            // `oldest` follows from the records; the stored one is written for older versions.
            Ok(l)
        }
    }

    impl From<super::PermitLedger> for Ledger {
        fn from(l: super::PermitLedger) -> Self {
            let records = l
                .records
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let r = l.unpack(p);
                    Record {
                        at: r.at,
                        recipient: r.recipient,
                        prev_ts: r.prev_ts,
                        window: r.window,
                        slot: r.slot,
                        reported: p.slot_flags & super::REPORTED != 0,
                        idempotency_key: l.key_of(l.first_seq + i as u64).map(Box::from),
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
        PermitRecord {
            at,
            recipient: RecipientKey(r),
            prev_ts: prev,
            window: 0,
            slot: 3,
        }
    }

    #[test]
    fn a_record_is_18_bytes() {
        assert_eq!(std::mem::size_of::<Packed>(), 18);
    }

    #[test]
    fn records_keep_what_undo_needs() {
        let mut l = PermitLedger::default();
        let full = PermitRecord {
            at: 1_700_000_010_000,
            recipient: RecipientKey(u64::MAX >> 1),
            prev_ts: Some(1_700_000_004_000),
            window: 511,
            slot: 511,
        };
        let a = l.push(full, None, 10);
        assert_eq!(l.get(a), Some(full));
        let b = l.push(rec(1_700_000_020_000, 7, None), None, 10);
        assert_eq!(l.get(b).unwrap().prev_ts, None);
        assert_eq!(l.report(b), Ok(rec(1_700_000_020_000, 7, None)));
        assert_eq!(l.report(b), Err(NotReportable::AlreadyReported));
        assert_eq!(l.report(b + 1), Err(NotReportable::Unknown));
        // A gap beyond 32 bits is older than any window: kept as no previous send.
        let far = 1_700_000_020_000 + (1u64 << 33);
        let c = l.push(rec(far, 8, Some(10_000)), None, 10);
        assert_eq!(l.get(c).unwrap().prev_ts, None);
    }

    /// Times are offsets from a base that moves up when a time is past 32 bits of it; records
    /// beyond that reach of the newest are dropped (a TTL the policy refuses).
    #[test]
    fn the_base_moves_with_the_records() {
        let mut l = PermitLedger::default();
        let t0 = 1_700_000_000_000;
        let a = l.push(rec(t0, 1, None), None, 10);
        let b = l.push(rec(t0 + 3_000_000_000, 2, Some(t0)), None, 10);
        let c = l.push(rec(t0 + 5_000_000_000, 3, None), None, 10);
        assert_eq!(l.get(a), None, "49.7 days older than the newest");
        assert_eq!(l.get(b), Some(rec(t0 + 3_000_000_000, 2, Some(t0))));
        assert_eq!(l.get(c), Some(rec(t0 + 5_000_000_000, 3, None)));
        l.expire(t0 + 4_000_000_000);
        assert_eq!((l.get(b), l.get(c).is_some()), (None, true));
    }

    #[test]
    fn keys_follow_their_records_out() {
        let mut l = PermitLedger::default();
        let a = l.push(rec(1, 1, None), Some("a"), 3);
        let b = l.push(rec(2, 2, None), None, 3);
        let c = l.push(rec(3, 3, None), Some("c"), 3);
        assert_eq!(
            (l.key_of(a), l.key_of(b), l.key_of(c)),
            (Some("a"), None, Some("c"))
        );
        let d = l.push(rec(4, 4, None), Some("d"), 3);
        assert_eq!(l.key_of(a), None);
        assert!(l.get(a).is_none());
        l.expire(3);
        assert_eq!((l.key_of(c), l.key_of(d)), (None, Some("d")));
        assert_eq!(l.keys.len(), 1);
    }

    #[test]
    fn an_undone_send_relinks_the_next_one() {
        let mut l = PermitLedger::default();
        let a = l.push(rec(100, 1, Some(50)), None, 10);
        l.push(rec(150, 2, None), None, 10);
        let c = l.push(rec(200, 1, Some(100)), None, 10);
        let ra = l.report(a).unwrap();
        l.relink_after_undo(a, &ra);
        assert_eq!(l.get(c).unwrap().prev_ts, Some(50));
        // only a send that followed the undone one moves
        l.relink_after_undo(a, &rec(100, 1, Some(10)));
        assert_eq!(l.get(c).unwrap().prev_ts, Some(50));
    }

    #[test]
    fn snapshots_keep_the_old_shape() {
        let mut l = PermitLedger::default();
        l.push(rec(100, 1, None), Some("k-1"), 10);
        l.push(rec(200, 1, Some(100)), None, 10);
        l.report(0).unwrap();
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(
            json["records"][0],
            serde_json::json!({"at": 100, "recipient": 1, "prev_ts": null, "window": 0,
                "slot": 3, "reported": true, "idempotency_key": "k-1"})
        );
        assert_eq!(json["records"][1]["prev_ts"], 100);
        assert_eq!(json["first_seq"], 0);
        let back: PermitLedger = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, l);
        let mut odd = json;
        odd["records"][1]["window"] = serde_json::json!(2);
        let e = serde_json::from_value::<PermitLedger>(odd).unwrap_err();
        assert!(
            e.to_string()
                .contains("window 2 is neither 0 nor its slot 3"),
            "{e}"
        );
    }

    /// A send in `phone_number` scope counts in its slot's window; the packed record keeps that
    /// as one bit.
    #[test]
    fn the_window_is_0_or_the_slot() {
        let mut l = PermitLedger::default();
        let slot_window = PermitRecord {
            window: 7,
            slot: 7,
            ..rec(100, 1, Some(40))
        };
        let org_window = PermitRecord {
            window: 0,
            slot: 7,
            ..rec(200, 1, Some(100))
        };
        let a = l.push(slot_window, None, 10);
        let b = l.push(org_window, None, 10);
        assert_eq!((l.get(a), l.get(b)), (Some(slot_window), Some(org_window)));
        // relinking looks for a later send in the same window: b is in another one
        let ra = l.report(a).unwrap();
        l.relink_after_undo(a, &ra);
        assert_eq!(l.get(b).unwrap().prev_ts, Some(100));
    }
}
