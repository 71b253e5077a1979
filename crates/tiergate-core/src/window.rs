//! The exact 24 h unique-recipient window: one algorithm, one file.
//!
//! WhatsApp's messaging limit counts the *unique* recipients of template messages in a moving
//! 24 h. A recipient belongs to the window while its most recent counted send is younger than
//! the window, so a repeat send refreshes it. The structure is an LRU list ordered by last send
//! time, in a slab, with a hash index beside it:
//!
//! * membership test, insert and refresh are O(1) (refresh moves the node to the tail);
//! * expiry pops from the head, so it is O(expired) and exact to the millisecond;
//! * the oldest member (the head) gives the exact retry-after for a full tier;
//! * memory is one 20-byte node (key, time as a 32-bit offset from the window's base, two links)
//!   plus a 4-byte index slot and a control byte per recipient; the slab grows by 1.25× rather
//!   than 2×. It is bounded by the tier because only allowed sends enter;
//! * each entry carries a class (0–3, in the top two bits of its node's time, so the node stays
//!   20 bytes) that the window counts per class, so that an org can show which categories fill
//!   its tier. The class is the one of the send that took the slot; a refresh keeps it.
//!
//! Time must not go backwards between calls; the engine clamps it per org.

use hashbrown::HashTable;

use crate::halves::{join, split};
use crate::validate::RecipientKey;

const NIL: u32 = u32::MAX;

/// A node's time is 30 bits of milliseconds after the window's base (12.4 days, far more than
/// any window spans: `Policy::validate` keeps `tier_window_ms` within 10 days); the top two
/// bits are its class.
const TS_BITS: u32 = 30;
const TS_MASK: u32 = (1 << TS_BITS) - 1;

/// 20 bytes, 4-aligned: the key is split in two halves so that no field needs 8-byte alignment.
#[derive(Debug, Clone, Copy)]
struct Node {
    key: [u32; 2],
    /// Milliseconds after the window's `base` (low 30 bits) and the class (top 2).
    ts: u32,
    prev: u32,
    next: u32,
}

impl Node {
    #[inline]
    fn key(&self) -> u64 {
        join(self.key)
    }

    /// Milliseconds after the base.
    #[inline]
    fn t(&self) -> u32 {
        self.ts & TS_MASK
    }

    #[inline]
    fn set_t(&mut self, t: u32) {
        self.ts = (self.ts & !TS_MASK) | (t & TS_MASK);
    }

    #[inline]
    fn class(&self) -> u8 {
        (self.ts >> TS_BITS) as u8
    }
}

/// What [`RecipientWindow::touch`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// The recipient was not in the window: it now counts.
    New,
    /// The recipient was already counted; its last send time moved from `prev_ts`.
    Refreshed {
        /// The previous last-send time, needed to undo this send exactly.
        prev_ts: u64,
    },
}

/// Where a recipient sits in a window, from [`RecipientWindow::lookup`]. Valid until the
/// window next changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found(Option<u32>);

impl Found {
    /// Whether the recipient is counted in the window.
    pub fn is_member(self) -> bool {
        self.0.is_some()
    }
}

/// Classes an entry can carry (see [`RecipientWindow::class_counts`]).
pub const CLASSES: usize = 4;

/// Unique recipients keyed by [`RecipientKey`], ordered by last send time.
#[derive(Debug, Clone)]
pub struct RecipientWindow {
    nodes: Vec<Node>,
    /// Entries per class.
    per_class: [u32; CLASSES],
    /// Node times are offsets from here, so that they fit in 32 bits.
    base: u64,
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    head: u32,
    tail: u32,
    free: u32,
    len: u32,
    /// No entry's time is earlier than this (absolute ms): expiry compares it first and reads
    /// the head node only when something may leave. The head is a random slot of the slab, so
    /// on a cold org this saves a cache miss on nearly every decision (issue #16). Times only
    /// grow, so the bound stays true as the head moves; only an undo lowers it.
    oldest_at_least: u64,
}

impl Default for RecipientWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl RecipientWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self {
            nodes: Vec::new(),
            per_class: [0; CLASSES],
            base: 0,
            index: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            head: NIL,
            tail: NIL,
            free: NIL,
            len: 0,
            oldest_at_least: 0,
        }
    }

    /// Recipients currently counted.
    pub fn len(&self) -> u64 {
        u64::from(self.len)
    }

    /// Whether no recipient is counted.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Recipients counted per class (the class of the send that took each slot).
    pub fn class_counts(&self) -> [u64; CLASSES] {
        self.per_class.map(u64::from)
    }

    #[inline]
    fn hash(&self, key: u64) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    #[inline]
    fn find(&self, key: u64) -> Option<u32> {
        let nodes = &self.nodes;
        self.index
            .find(self.hash(key), |&i| nodes[i as usize].key() == key)
            .copied()
    }

    /// Drops every recipient whose last send is at or before `cutoff` (= now − window).
    #[inline]
    pub fn expire(&mut self, cutoff: u64) {
        if self.head == NIL || self.oldest_at_least > cutoff {
            return;
        }
        while self.head != NIL {
            let t = self.abs(self.nodes[self.head as usize].t());
            if t > cutoff {
                self.oldest_at_least = t;
                return;
            }
            let i = self.head;
            self.remove_node(i);
        }
    }

    /// The last send time of `key`, if it is in the window.
    #[inline]
    pub fn last_seen(&self, key: RecipientKey) -> Option<u64> {
        self.find(key.0)
            .map(|i| self.abs(self.nodes[i as usize].t()))
    }

    #[inline]
    fn abs(&self, rel: u32) -> u64 {
        self.base + u64::from(rel)
    }

    /// `ts` as an offset from `base`, moving `base` forward when `ts` is past its 30-bit reach.
    /// The window spans far less than 2³⁰ ms (12.4 days), so everything fits after a rebase.
    fn rel(&mut self, ts: u64) -> u32 {
        if self.head == NIL {
            self.base = ts;
            self.oldest_at_least = ts;
        }
        if ts < self.base {
            // Only a restored (older) time can be below the base; the engine never restores a
            // time outside the window, which always lies at or after the base.
            return 0;
        }
        if ts - self.base > u64::from(TS_MASK) {
            let new_base = self.abs(self.nodes[self.head as usize].t());
            let shift = (new_base - self.base) as u32;
            for n in &mut self.nodes {
                n.set_t(n.t().saturating_sub(shift));
            }
            self.base = new_base;
        }
        (ts - self.base).min(u64::from(TS_MASK)) as u32
    }

    /// The oldest last-send time in the window: the moment + window when a slot frees up.
    pub fn oldest(&self) -> Option<u64> {
        (self.head != NIL).then(|| self.abs(self.nodes[self.head as usize].t()))
    }

    /// When the window will hold fewer than `limit` recipients if nobody new is counted: the
    /// last-send time of the recipient whose leaving gets it there (add the window's length for
    /// the moment). `None` when it already holds fewer, or never will (`limit` 0).
    ///
    /// After Meta lowers a limit (131064) the window may hold far more than the new limit, and
    /// a slot frees only once the excess has left, not when the oldest does. Walks the excess:
    /// O(len − limit), for a rare error code, never on the decision path.
    pub fn below_at(&self, limit: u64) -> Option<u64> {
        let excess = self.len().checked_sub(limit)?;
        self.iter()
            .nth(usize::try_from(excess).ok()?)
            .map(|(_, ts)| ts)
    }

    /// Looks `key` up once, for a decision that first asks whether the recipient is counted
    /// and then counts it: [`Self::touch_found`] reuses the lookup.
    #[inline]
    pub fn lookup(&self, key: RecipientKey) -> Found {
        Found(self.find(key.0))
    }

    /// Counts a send to `key` at `ts` (≥ every time seen before), in class 0.
    pub fn touch(&mut self, key: RecipientKey, ts: u64) -> Touch {
        let found = self.lookup(key);
        self.touch_found(key, found, ts, 0)
    }

    /// [`Self::touch`] with the result of [`Self::lookup`] made since the last change. A new
    /// entry takes `class` (below [`CLASSES`]); a refreshed one keeps its own.
    pub fn touch_found(&mut self, key: RecipientKey, found: Found, ts: u64, class: u8) -> Touch {
        if let Some(i) = found.0 {
            let prev_ts = self.abs(self.nodes[i as usize].t());
            let rel = self.rel(ts);
            self.unlink(i);
            self.nodes[i as usize].set_t(rel);
            self.link_after(i, self.tail);
            return Touch::Refreshed { prev_ts };
        }
        let rel = self.rel(ts);
        let class = class.min(CLASSES as u8 - 1);
        let i = self.alloc(Node {
            key: split(key.0),
            ts: rel | (u32::from(class) << TS_BITS),
            prev: NIL,
            next: NIL,
        });
        self.per_class[usize::from(class)] += 1;
        self.link_after(i, self.tail);
        let hash = self.hash(key.0);
        let nodes = &self.nodes;
        let hasher = &self.hasher;
        self.index.insert_unique(hash, i, |&j| {
            use std::hash::BuildHasher;
            hasher.hash_one(nodes[j as usize].key())
        });
        self.len += 1;
        Touch::New
    }

    /// Undoes a send to `key` made at `ts` whose previous last-send time was `prev` (`None`:
    /// the send had added the recipient). Only acts when that send is still the recipient's
    /// latest; returns whether it did. `cutoff` is now − window: a restored time at or before it
    /// means the recipient leaves the window.
    pub fn undo(&mut self, key: RecipientKey, ts: u64, prev: Option<u64>, cutoff: u64) -> bool {
        let Some(i) = self.find(key.0) else {
            return false;
        };
        if self.abs(self.nodes[i as usize].t()) != ts {
            return false;
        }
        match prev {
            Some(p) if p > cutoff => {
                if p < self.base {
                    // Move the base back to `p`; everything in the window spans far less than
                    // 2³² ms, so the shifted offsets still fit.
                    let shift = (self.base - p) as u32;
                    for n in &mut self.nodes {
                        n.set_t(n.t().saturating_add(shift).min(TS_MASK));
                    }
                    self.base = p;
                }
                self.oldest_at_least = self.oldest_at_least.min(p);
                self.unlink(i);
                let p = (p - self.base) as u32;
                self.nodes[i as usize].set_t(p);
                // Walk back from the tail to the last node not newer than `p`.
                let mut at = self.tail;
                while at != NIL && self.nodes[at as usize].t() > p {
                    at = self.nodes[at as usize].prev;
                }
                self.link_after(i, at);
            }
            _ => self.remove_node(i),
        }
        true
    }

    fn alloc(&mut self, node: Node) -> u32 {
        if self.free != NIL {
            let i = self.free;
            self.free = self.nodes[i as usize].next;
            self.nodes[i as usize] = node;
            i
        } else {
            if self.nodes.len() == self.nodes.capacity() {
                // Grow by a quarter: a window's slab is its biggest allocation.
                self.nodes.reserve_exact(self.nodes.len() / 4 + 16);
            }
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        }
    }

    fn remove_node(&mut self, i: u32) {
        let key = self.nodes[i as usize].key();
        let hash = self.hash(key);
        if let Ok(e) = self.index.find_entry(hash, |&j| j == i) {
            e.remove();
        }
        self.unlink(i);
        self.nodes[i as usize].next = self.free;
        self.free = i;
        self.len -= 1;
        self.per_class[usize::from(self.nodes[i as usize].class())] -= 1;
        if self.len == 0 {
            // Give memory back once an org goes quiet for a whole window.
            self.nodes = Vec::new();
            self.index = HashTable::new();
            self.free = NIL;
        }
    }

    fn unlink(&mut self, i: u32) {
        let Node { prev, next, .. } = self.nodes[i as usize];
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else {
            self.head = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        } else {
            self.tail = prev;
        }
    }

    /// Links `i` after `at` (`NIL`: at the head).
    fn link_after(&mut self, i: u32, at: u32) {
        let next = if at == NIL {
            self.head
        } else {
            self.nodes[at as usize].next
        };
        self.nodes[i as usize].prev = at;
        self.nodes[i as usize].next = next;
        if at == NIL {
            self.head = i;
        } else {
            self.nodes[at as usize].next = i;
        }
        if next == NIL {
            self.tail = i;
        } else {
            self.nodes[next as usize].prev = i;
        }
    }

    /// Last send times from oldest to newest (tests and snapshots).
    pub fn iter(&self) -> impl Iterator<Item = (RecipientKey, u64)> + '_ {
        self.iter_classes().map(|(k, t, _)| (k, t))
    }

    /// Entries from oldest to newest with their classes.
    pub fn iter_classes(&self) -> impl Iterator<Item = (RecipientKey, u64, u8)> + '_ {
        let mut at = self.head;
        std::iter::from_fn(move || {
            (at != NIL).then(|| {
                let n = self.nodes[at as usize];
                at = n.next;
                (RecipientKey(n.key()), self.abs(n.t()), n.class())
            })
        })
    }
}

/// An org's windows: one in `org` scope, one per phone slot in `phone_number` scope.
///
/// The first is inline because in `org` scope it is the only one, and a decision should not
/// chase a pointer to reach it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Windows {
    first: RecipientWindow,
    rest: Vec<RecipientWindow>,
}

impl Windows {
    /// Each window's (recipient, last send), oldest first: what a snapshot keeps.
    pub(crate) fn entries(&self) -> Vec<Vec<(u64, u64)>> {
        self.iter()
            .map(|w| w.iter().map(|(k, t)| (k.0, t)).collect())
            .collect()
    }

    /// Each window's entry classes, in the order of [`Self::entries`].
    pub(crate) fn classes(&self) -> Vec<Vec<u8>> {
        self.iter()
            .map(|w| w.iter_classes().map(|(_, _, c)| c).collect())
            .collect()
    }

    /// Windows holding `entries` (from a snapshot) with their `classes` (absent in older
    /// snapshots: class 0); at least one.
    pub(crate) fn from_entries(entries: &[Vec<(u64, u64)>], classes: &[Vec<u8>]) -> Self {
        let mut ws = entries.iter().enumerate().map(|(i, list)| {
            let mut w = RecipientWindow::new();
            let cls = classes.get(i).map_or(&[][..], Vec::as_slice);
            for (j, &(k, t)) in list.iter().enumerate() {
                let key = RecipientKey(k);
                let found = w.lookup(key);
                w.touch_found(key, found, t, cls.get(j).copied().unwrap_or(0));
            }
            w
        });
        Windows {
            first: ws.next().unwrap_or_default(),
            rest: ws.collect(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        1 + self.rest.len()
    }

    /// Grows to at least `n` windows.
    pub(crate) fn ensure(&mut self, n: usize) {
        if n > self.len() {
            self.rest.resize_with(n - 1, RecipientWindow::new);
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &RecipientWindow> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }

    /// Expires every window up to `cutoff`.
    pub(crate) fn expire_all(&mut self, cutoff: u64) {
        self.first.expire(cutoff);
        for w in &mut self.rest {
            w.expire(cutoff);
        }
    }

    /// The index of the fullest window (what `GetOrg` reports).
    pub(crate) fn fullest(&self) -> usize {
        (0..self.len()).max_by_key(|&w| self[w].len()).unwrap_or(0)
    }
}

impl std::ops::Index<usize> for Windows {
    type Output = RecipientWindow;

    #[inline]
    fn index(&self, i: usize) -> &RecipientWindow {
        if i == 0 {
            &self.first
        } else {
            &self.rest[i - 1]
        }
    }
}

impl std::ops::IndexMut<usize> for Windows {
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut RecipientWindow {
        if i == 0 {
            &mut self.first
        } else {
            &mut self.rest[i - 1]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u64) -> RecipientKey {
        RecipientKey(n)
    }

    #[test]
    fn counts_unique_and_refreshes() {
        let mut w = RecipientWindow::new();
        assert_eq!(w.touch(k(1), 10), Touch::New);
        assert_eq!(w.touch(k(2), 20), Touch::New);
        assert_eq!(w.touch(k(1), 30), Touch::Refreshed { prev_ts: 10 });
        assert_eq!(w.len(), 2);
        assert_eq!(w.oldest(), Some(20));
        w.expire(20);
        assert_eq!(w.len(), 1);
        assert_eq!(w.last_seen(k(1)), Some(30));
        assert_eq!(w.last_seen(k(2)), None);
        w.expire(30);
        assert!(w.is_empty());
        assert_eq!(w.oldest(), None);
        assert_eq!(w.touch(k(2), 40), Touch::New);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn below_at_waits_for_the_excess_to_leave() {
        let mut w = RecipientWindow::new();
        for (i, ts) in [10, 20, 30, 40, 50].into_iter().enumerate() {
            w.touch(k(i as u64), ts);
        }
        // a refresh moves recipient 0 to the back
        w.touch(k(0), 60);
        // 5 held, fewer than 6 already
        assert_eq!(w.below_at(6), None);
        // fewer than 5: the oldest (20) must leave
        assert_eq!(w.below_at(5), Some(20));
        // fewer than 2: 20, 30, 40 and 50 must leave
        assert_eq!(w.below_at(2), Some(50));
        // fewer than 1: everyone, the last at 60
        assert_eq!(w.below_at(1), Some(60));
        // fewer than 0: never
        assert_eq!(w.below_at(0), None);
    }

    #[test]
    fn undo_restores_order() {
        let mut w = RecipientWindow::new();
        w.touch(k(1), 10);
        w.touch(k(2), 20);
        w.touch(k(3), 30);
        w.touch(k(1), 40);
        // undo the refresh of 1: it goes back before 2
        assert!(w.undo(k(1), 40, Some(10), 0));
        let order: Vec<_> = w.iter().collect();
        assert_eq!(order, vec![(k(1), 10), (k(2), 20), (k(3), 30)]);
        // undo of a send that is not the latest does nothing
        assert!(!w.undo(k(2), 5, None, 0));
        // undo of a new recipient removes it
        assert!(w.undo(k(3), 30, None, 0));
        assert_eq!(w.len(), 2);
        // restoring a time already out of the window removes it
        w.touch(k(2), 50);
        assert!(w.undo(k(2), 50, Some(20), 25));
        assert_eq!(w.iter().collect::<Vec<_>>(), vec![(k(1), 10)]);
    }

    /// Expiry trusts a lower bound on the oldest time; an undo that moves an entry back before
    /// it must lower the bound, or the entry would outlive its window.
    #[test]
    fn an_undone_refresh_still_expires() {
        let mut w = RecipientWindow::new();
        w.touch(k(1), 10);
        w.touch(k(2), 20);
        w.touch(k(3), 30);
        w.touch(k(1), 40);
        w.expire(15);
        assert_eq!(w.len(), 3);
        assert!(w.undo(k(1), 40, Some(10), 0));
        w.expire(15);
        assert_eq!(w.iter().collect::<Vec<_>>(), vec![(k(2), 20), (k(3), 30)]);
        w.expire(35);
        assert!(w.is_empty());
    }

    #[test]
    fn times_past_32_bits_rebase() {
        let mut w = RecipientWindow::new();
        let day = 86_400_000u64;
        let mut t = 1_700_000_000_000u64;
        for round in 0..60u64 {
            t += day / 2;
            w.expire(t - day);
            w.touch(k(round % 3), t);
            w.touch(k(100 + round), t + 1);
        }
        let got: Vec<_> = w.iter().collect();
        // this round's two, last round's two, and the +1 send from two rounds ago
        assert_eq!(got.len(), 5);
        assert!(got.windows(2).all(|p| p[0].1 <= p[1].1));
        assert_eq!(got.last().unwrap().1, t + 1);
        assert_eq!(w.oldest(), Some(t - day + 1));
    }

    #[test]
    fn undo_of_a_lone_refreshed_recipient() {
        let mut w = RecipientWindow::new();
        w.touch(k(1), 1_000);
        w.touch(k(1), 5_000);
        assert!(w.undo(k(1), 5_000, Some(1_000), 0));
        assert_eq!(w.iter().collect::<Vec<_>>(), vec![(k(1), 1_000)]);
        w.touch(k(2), 6_000);
        assert_eq!(w.oldest(), Some(1_000));
    }

    #[test]
    fn node_is_20_bytes() {
        assert_eq!(std::mem::size_of::<Node>(), 20);
    }

    #[test]
    fn slots_are_reused() {
        let mut w = RecipientWindow::new();
        for i in 0..100 {
            w.touch(k(i), i);
        }
        w.expire(49);
        for i in 100..150 {
            w.touch(k(i), i);
        }
        assert_eq!(w.len(), 100);
        assert_eq!(w.nodes.len(), 100);
    }
}
