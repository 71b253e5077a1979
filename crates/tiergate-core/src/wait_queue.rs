//! The queue of one org's waiting sends (SPEC §2a "Waiting"): who goes first when time frees
//! what several waiters want.
//!
//! A waiter is a send that was denied for a reason time cures within its wait, and whose caller
//! chose to wait. Waiters are ordered AUTHENTICATION, then UTILITY, then MARKETING, and by
//! arrival within a category ([`WaitQueue`] keeps them sorted by `(rank, seq)`). A send may take
//! nothing a waiter ahead of it is waiting for ([`WaitQueue::ahead`]): the next throughput slot
//! of a number a waiter ahead is blocked on, the pair, the template's pause, and a slot of the
//! 24 h window while the free slots are no more than the waiters ahead that need one (whatever
//! those are blocked on now: a waiter held by its number's throughput still needs its tier slot
//! when its turn comes). Waiters blocked on different things do not hold each other back, so a
//! pair-rate wait for one recipient does not stall a campaign to others.
//!
//! The queue lives in the org's state, so it is ordered like everything else: in memory by the
//! org's lock, and with Redis by the org's log, which every replica applies in the same order
//! (two replicas' waiters are one queue).

use serde::{Deserialize, Serialize};

use crate::decision::{Category, DenyReason};

/// What a waiter is blocked on: what a waiter behind it must not take first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Blocked {
    /// A slot of the 24 h window (tier limit, the restricted tier, a category's share): only a
    /// send to a new recipient competes for it.
    Slot,
    /// The weekly cap without an escalation path: every send competes.
    Week,
    /// The number's throughput, or its pause after a 131048 (by phone slot).
    Number(u16),
    /// The pair rate of one recipient on one number (slot, person key).
    Pair(u16, u64),
    /// A template's pause, by name.
    Template(Box<str>),
    /// The recipient's own marketing limit (person key).
    Person(u64),
}

impl Blocked {
    /// What a denial for `reason` blocks a send on (`slot`, `person`, `template` are the send's).
    pub(crate) fn of(reason: DenyReason, slot: u16, person: u64, template: &str) -> Blocked {
        match reason {
            DenyReason::TierLimit | DenyReason::QualityRestricted | DenyReason::CategoryReserve => {
                Blocked::Slot
            }
            DenyReason::WeeklyCapWithoutEscalation => Blocked::Week,
            DenyReason::Throughput | DenyReason::AccountRestricted => Blocked::Number(slot),
            DenyReason::PairRate => Blocked::Pair(slot, person),
            DenyReason::TemplatePaused => Blocked::Template(template.into()),
            DenyReason::RecipientMarketingLimit
            | DenyReason::MarketingApiRequired
            | DenyReason::EscalationPathRequired => Blocked::Person(person),
        }
    }

    /// Whether a waiter blocked on `self` holds back `want`, a send behind it: whether that send
    /// would take what this waiter is waiting for. Window slots are not decided here but by
    /// counting ([`WaitQueue::ahead`]).
    pub(crate) fn holds_back(&self, want: &Want<'_>) -> bool {
        match self {
            Blocked::Slot => false,
            Blocked::Week => true,
            Blocked::Number(s) => *s == want.slot,
            Blocked::Pair(s, p) => *s == want.slot && *p == want.person,
            Blocked::Template(t) => **t == *want.template,
            Blocked::Person(p) => *p == want.person,
        }
    }
}

/// What a send would take if it went now.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Want<'a> {
    pub(crate) slot: u16,
    pub(crate) person: u64,
    pub(crate) template: &'a str,
    /// The window it counts in.
    pub(crate) window: u16,
    /// Whether it would take a new slot of the window.
    pub(crate) new_recipient: bool,
}

/// What a try left a waiter with: what blocks it, why, when it expects to try again, and what it
/// will need of the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hold {
    pub(crate) blocked: Blocked,
    pub(crate) reason: DenyReason,
    pub(crate) due: u64,
    pub(crate) window: u16,
    pub(crate) new_recipient: bool,
}

/// The rank of a category: AUTHENTICATION first, then UTILITY, then MARKETING.
pub(crate) fn rank(category: Category) -> u8 {
    match category {
        Category::Authentication => 0,
        Category::Utility => 1,
        Category::Marketing => 2,
    }
}

/// One waiting send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Waiter {
    /// The id its caller gave it ([`crate::WaitTicket::id`]).
    pub(crate) id: u64,
    /// [`rank`] of its category.
    pub(crate) rank: u8,
    /// Arrival order in the org.
    pub(crate) seq: u64,
    /// The org's time after which it no longer waits (its caller has given up by then).
    pub(crate) until: u64,
    /// What it is blocked on.
    pub(crate) blocked: Blocked,
    /// Why it was denied last.
    pub(crate) reason: DenyReason,
    /// The org's time it expects to go (or learn more): its last retry-after.
    pub(crate) due: u64,
    /// The window it counts in.
    #[serde(default)]
    pub(crate) window: u16,
    /// Whether it needs a new slot of that window (its recipient is not counted there).
    #[serde(default)]
    pub(crate) new_recipient: bool,
}

impl Waiter {
    fn key(&self) -> (u8, u64) {
        (self.rank, self.seq)
    }
}

/// One org's waiters, sorted by `(rank, seq)`. Its length is bounded by the callers' own limit
/// ([`crate::WaitTicket::capacity`]), so an org's queue cannot grow without bound.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WaitQueue {
    waiters: Vec<Waiter>,
    next_seq: u64,
}

impl WaitQueue {
    /// How many wait.
    pub(crate) fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Whether nobody waits (the common case: one branch on the hot path).
    pub(crate) fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// Drops waiters whose wait ended before `now`: their callers have given up (a replica that
    /// died with waiters cannot hold the others back longer than their wait).
    pub(crate) fn expire(&mut self, now: u64) {
        if !self.waiters.is_empty() {
            self.waiters.retain(|w| w.until >= now);
        }
    }

    /// The waiter `id`, if it waits.
    pub(crate) fn get(&self, id: u64) -> Option<&Waiter> {
        self.waiters.iter().find(|w| w.id == id)
    }

    /// The sort key a waiter `id` of `rank` has (or would get, arriving now).
    pub(crate) fn key_of(&self, id: u64, rank: u8) -> (u8, u64) {
        self.get(id).map_or((rank, self.next_seq), Waiter::key)
    }

    /// The nearest waiter ahead of `key` (other than `id`) that holds `want` back: one blocked
    /// on what `want` would take, or, when `want` needs a new slot of its window and that window
    /// has `free_slots` (`None`: unlimited) for as many waiters ahead that need one or fewer, the
    /// nearest of those.
    pub(crate) fn ahead(
        &self,
        key: (u8, u64),
        id: u64,
        want: &Want<'_>,
        free_slots: Option<u64>,
    ) -> Option<&Waiter> {
        let mut blocking: Option<(usize, &Waiter)> = None;
        let mut needing: Option<(usize, &Waiter)> = None;
        let mut need = 0u64;
        for (i, w) in self
            .waiters
            .iter()
            .enumerate()
            .take_while(|(_, w)| w.key() < key)
        {
            if w.id == id {
                continue;
            }
            if w.blocked.holds_back(want) {
                blocking = Some((i, w));
            }
            if want.new_recipient && w.new_recipient && w.window == want.window {
                need += 1;
                needing = Some((i, w));
            }
        }
        let short = free_slots.is_some_and(|free| free <= need);
        let needing = needing.filter(|_| short);
        match (blocking, needing) {
            (Some(a), Some(b)) => Some(if a.0 > b.0 { a.1 } else { b.1 }),
            (a, b) => a.or(b).map(|(_, w)| w),
        }
    }

    /// Puts waiter `id` in the queue or updates it; a new one gets the next arrival number and
    /// waits until `until`. Returns what it was blocked on before (`None` if new).
    pub(crate) fn hold(&mut self, id: u64, rank: u8, until: u64, h: Hold) -> Option<Blocked> {
        if let Some(w) = self.waiters.iter_mut().find(|w| w.id == id) {
            w.reason = h.reason;
            w.due = h.due;
            w.window = h.window;
            w.new_recipient = h.new_recipient;
            return Some(std::mem::replace(&mut w.blocked, h.blocked));
        }
        let w = Waiter {
            id,
            rank,
            seq: self.next_seq,
            until,
            blocked: h.blocked,
            reason: h.reason,
            due: h.due,
            window: h.window,
            new_recipient: h.new_recipient,
        };
        self.next_seq += 1;
        let at = self.waiters.partition_point(|x| x.key() < w.key());
        self.waiters.insert(at, w);
        None
    }

    /// Takes waiter `id` out of the queue. Returns whether it was in it.
    pub(crate) fn remove(&mut self, id: u64) -> bool {
        match self.waiters.iter().position(|w| w.id == id) {
            Some(i) => {
                self.waiters.remove(i);
                true
            }
            None => false,
        }
    }

    /// Empties the queue (after a restart: nobody is waiting any more).
    pub(crate) fn clear(&mut self) {
        self.waiters.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(slot: u16, person: u64, new_recipient: bool) -> Want<'static> {
        Want {
            slot,
            person,
            template: "t",
            window: 0,
            new_recipient,
        }
    }

    fn hold(blocked: Blocked, reason: DenyReason, due: u64, new_recipient: bool) -> Hold {
        Hold {
            blocked,
            reason,
            due,
            window: 0,
            new_recipient,
        }
    }

    #[test]
    fn sorted_by_category_then_arrival() {
        let mut q = WaitQueue::default();
        let b = || hold(Blocked::Number(0), DenyReason::Throughput, 1, false);
        q.hold(1, 2, 99, b());
        q.hold(2, 2, 99, b());
        q.hold(3, 0, 99, b());
        q.hold(4, 1, 99, b());
        let ids: Vec<u64> = q.waiters.iter().map(|w| w.id).collect();
        assert_eq!(ids, [3, 4, 1, 2]);
        // The nearest ahead of the second marketing waiter is the first.
        let k = q.key_of(2, 2);
        assert_eq!(
            q.ahead(k, 2, &want(0, 7, false), None).map(|w| w.id),
            Some(1)
        );
        // Nobody is ahead of the authentication waiter.
        assert!(
            q.ahead(q.key_of(3, 0), 3, &want(0, 7, false), None)
                .is_none()
        );
        // A new marketing arrival goes behind everyone.
        assert_eq!(
            q.ahead(q.key_of(9, 2), 9, &want(0, 7, false), None)
                .map(|w| w.id),
            Some(2)
        );
    }

    #[test]
    fn only_what_is_wanted_holds_back() {
        assert!(Blocked::Number(1).holds_back(&want(1, 5, false)));
        assert!(!Blocked::Number(1).holds_back(&want(2, 5, true)));
        assert!(Blocked::Pair(1, 5).holds_back(&want(1, 5, false)));
        assert!(!Blocked::Pair(1, 5).holds_back(&want(1, 6, false)));
        assert!(
            !Blocked::Slot.holds_back(&want(3, 5, true)),
            "counted instead"
        );
        assert!(Blocked::Week.holds_back(&want(3, 5, false)));
        assert!(Blocked::Template("t".into()).holds_back(&want(3, 5, false)));
        assert!(!Blocked::Template("u".into()).holds_back(&want(3, 5, false)));
    }

    #[test]
    fn window_slots_are_kept_for_the_waiters_ahead_that_need_one() {
        let mut q = WaitQueue::default();
        // Waiting on their numbers' throughput, both need a new slot when their turn comes.
        q.hold(
            1,
            0,
            99,
            hold(Blocked::Number(1), DenyReason::Throughput, 5, true),
        );
        q.hold(
            2,
            0,
            99,
            hold(Blocked::Number(2), DenyReason::Throughput, 5, true),
        );
        let other_number = want(3, 9, true);
        let key = q.key_of(9, 2);
        // Two free slots, two needed ahead: held back by the nearest.
        assert_eq!(
            q.ahead(key, 9, &other_number, Some(2)).map(|w| w.id),
            Some(2)
        );
        // Three free: one to spare.
        assert!(q.ahead(key, 9, &other_number, Some(3)).is_none());
        // Unlimited, or a counted recipient, or another window: never held for slots.
        assert!(q.ahead(key, 9, &other_number, None).is_none());
        assert!(q.ahead(key, 9, &want(3, 9, false), Some(0)).is_none());
        let elsewhere = Want {
            window: 3,
            ..other_number
        };
        assert!(q.ahead(key, 9, &elsewhere, Some(0)).is_none());
    }

    #[test]
    fn expired_and_removed_waiters_leave() {
        let mut q = WaitQueue::default();
        let week = || {
            hold(
                Blocked::Week,
                DenyReason::WeeklyCapWithoutEscalation,
                5,
                false,
            )
        };
        q.hold(1, 2, 10, week());
        q.hold(2, 2, 20, week());
        assert_eq!(
            q.hold(
                2,
                2,
                20,
                hold(Blocked::Slot, DenyReason::TierLimit, 6, true)
            ),
            Some(Blocked::Week)
        );
        q.expire(11);
        assert_eq!(q.len(), 1);
        assert!(q.remove(2));
        assert!(!q.remove(2));
        assert!(q.is_empty());
    }
}
