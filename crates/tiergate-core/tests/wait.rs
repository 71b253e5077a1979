//! Waiting sends (SPEC §2a "Waiting"), the engine's half: the order of an org's waiters and
//! what each try answers, on a manual clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tiergate_core::*;
use tiergate_testkit::{DAY, PHONE, SEC, SplitMix64, T0, email, engine_at_t0};

struct H {
    engine: Engine,
    clock: Arc<ManualClock>,
}

const WAIT: u64 = 30 * SEC;

/// An org at TIER_50 with two numbers: [`PHONE`] at `mps`, and "2002" at 1,000 msg/s.
fn two_numbers(policy: Policy, mps: u32) -> H {
    let (engine, clock) = engine_at_t0(policy);
    engine
        .put_org(
            OrgConfig::new("acme", Tier::Tier50)
                .with_phone(PHONE, mps)
                .with_phone("2002", 1_000)
                .with_escalation(email()),
        )
        .unwrap();
    H { engine, clock }
}

fn harness(mps: u32, tier: Tier) -> H {
    let (engine, clock) = engine_at_t0(Policy::default());
    engine
        .put_org(
            OrgConfig::new("acme", tier)
                .with_phone(PHONE, mps)
                .with_escalation(email()),
        )
        .unwrap();
    H { engine, clock }
}

impl H {
    fn try_wait(&self, id: u64, category: Category, recipient: u64, max_wait_ms: u64) -> WaitStep {
        self.try_cap(id, category, recipient, max_wait_ms, 10_000)
    }

    fn try_cap(
        &self,
        id: u64,
        category: Category,
        recipient: u64,
        max_wait_ms: u64,
        capacity: u32,
    ) -> WaitStep {
        self.try_from(PHONE, id, category, recipient, max_wait_ms, capacity)
    }

    fn try_from(
        &self,
        phone: &str,
        id: u64,
        category: Category,
        recipient: u64,
        max_wait_ms: u64,
        capacity: u32,
    ) -> WaitStep {
        let r = recipient.to_string();
        let req = SendRequest {
            org_id: "acme",
            phone_number_id: phone,
            recipient: &r,
            recipient_user_id: None,
            template_name: "t",
            category,
            idempotency_key: None,
        };
        let ticket = WaitTicket {
            id,
            max_wait_ms,
            capacity,
        };
        self.engine
            .decide_waiting_at(&req, ticket, self.clock.now_ms())
            .unwrap()
    }

    fn send(&self, recipient: u64) -> Decision {
        let r = recipient.to_string();
        self.engine
            .decide(&SendRequest {
                org_id: "acme",
                phone_number_id: PHONE,
                recipient: &r,
                recipient_user_id: None,
                template_name: "t",
                category: Category::Marketing,
                idempotency_key: None,
            })
            .unwrap()
    }
}

fn allowed(s: &WaitStep) -> bool {
    s.next == Next::Answer && s.decision.is_allowed()
}

#[test]
fn a_line_on_one_number_goes_in_arrival_order() {
    let h = harness(1, Tier::Tier1K);
    let m = Category::Marketing;
    assert!(allowed(&h.try_wait(1, m, 1, WAIT)));
    assert_eq!(
        h.try_wait(2, m, 2, WAIT).next,
        Next::Retry { after_ms: 1_000 }
    );
    assert!(matches!(
        h.try_wait(3, m, 3, WAIT).next,
        Next::Behind {
            waiter: 2,
            after_ms: 1_000,
            ..
        }
    ));
    assert!(matches!(
        h.try_wait(4, m, 4, WAIT).next,
        Next::Behind {
            waiter: 3,
            after_ms: 1_000,
            ..
        }
    ));
    assert_eq!(h.engine.waiting("acme"), 3);
    h.clock.advance(1_000);
    // The third tries first when the slot opens: the second was promised it.
    let s3 = h.try_wait(3, m, 3, WAIT);
    assert!(matches!(s3.next, Next::Behind { waiter: 2, .. }));
    assert_eq!(s3.decision.reason, Some(DenyReason::Throughput));
    assert!(!s3.wake_followers, "still blocked on the same slot");
    let s2 = h.try_wait(2, m, 2, WAIT);
    assert!(allowed(&s2));
    assert!(s2.wake_followers);
    assert_eq!(
        h.try_wait(3, m, 3, WAIT).next,
        Next::Retry { after_ms: 1_000 }
    );
    assert!(matches!(
        h.try_wait(4, m, 4, WAIT).next,
        Next::Behind { waiter: 3, .. }
    ));
    assert_eq!(h.engine.waiting("acme"), 2);
}

#[test]
fn authentication_goes_before_earlier_marketing() {
    let h = harness(1, Tier::Tier1K);
    assert!(h.send(100).is_allowed());
    let m = Category::Marketing;
    assert!(matches!(h.try_wait(1, m, 1, WAIT).next, Next::Retry { .. }));
    for id in 2..=50 {
        assert!(matches!(
            h.try_wait(id, m, id, WAIT).next,
            Next::Behind { .. }
        ));
    }
    let u = h.try_wait(60, Category::Utility, 60, WAIT);
    assert_eq!(
        u.next,
        Next::Retry { after_ms: 1_000 },
        "nobody is ahead of it"
    );
    let a = h.try_wait(70, Category::Authentication, 70, WAIT);
    assert_eq!(a.next, Next::Retry { after_ms: 1_000 });
    h.clock.advance(1_000);
    // The marketing head and the utility waiter wake first, and are held back.
    assert!(matches!(
        h.try_wait(1, m, 1, WAIT).next,
        Next::Behind { waiter: 60, .. }
    ));
    assert!(matches!(
        h.try_wait(60, Category::Utility, 60, WAIT).next,
        Next::Behind { waiter: 70, .. }
    ));
    assert!(allowed(&h.try_wait(70, Category::Authentication, 70, WAIT)));
    assert_eq!(
        h.try_wait(60, Category::Utility, 60, WAIT).next,
        Next::Retry { after_ms: 1_000 }
    );
    h.clock.advance(1_000);
    assert!(matches!(
        h.try_wait(1, m, 1, WAIT).next,
        Next::Behind { waiter: 60, .. }
    ));
    assert!(allowed(&h.try_wait(60, Category::Utility, 60, WAIT)));
    assert_eq!(
        h.try_wait(1, m, 1, WAIT).next,
        Next::Retry { after_ms: 1_000 }
    );
}

#[test]
fn a_wait_that_cannot_suffice_is_answered_at_once() {
    let h = harness(1, Tier::Tier1K);
    assert!(h.send(100).is_allowed());
    let s = h.try_wait(1, Category::Utility, 1, 999);
    assert_eq!(s.next, Next::Answer);
    assert_eq!(s.decision.reason, Some(DenyReason::Throughput));
    assert_eq!(s.decision.retry_after_ms, 1_000);
    assert_eq!(h.engine.waiting("acme"), 0);
    // Exactly enough is enough.
    assert_eq!(
        h.try_wait(2, Category::Utility, 2, 1_000).next,
        Next::Retry { after_ms: 1_000 }
    );
    // Behind one due after its own wait ends: answered at once too.
    h.clock.advance(500);
    let s = h.try_wait(3, Category::Utility, 3, 400);
    assert_eq!(s.next, Next::Answer);
    assert_eq!(s.decision.reason, Some(DenyReason::Throughput));
    // A denial time does not cure is never a wait.
    h.engine.set_account_restricted("acme", true).unwrap();
    let s = h.try_wait(4, Category::Utility, 4, WAIT);
    assert_eq!(s.next, Next::Answer);
    assert_eq!(s.decision.reason, Some(DenyReason::AccountRestricted));
}

#[test]
fn a_full_queue_answers_new_waiters_at_once() {
    let h = harness(1, Tier::Tier1K);
    assert!(h.send(100).is_allowed());
    let m = Category::Marketing;
    assert!(matches!(
        h.try_cap(1, m, 1, WAIT, 2).next,
        Next::Retry { .. }
    ));
    assert!(matches!(
        h.try_cap(2, m, 2, WAIT, 2).next,
        Next::Behind { .. }
    ));
    let s = h.try_cap(3, m, 3, WAIT, 2);
    assert_eq!(s.next, Next::Answer);
    assert_eq!(s.decision.reason, Some(DenyReason::Throughput));
    assert_eq!(h.engine.waiting("acme"), 2);
    // Those already waiting keep trying.
    assert!(matches!(
        h.try_cap(2, m, 2, WAIT, 2).next,
        Next::Behind { .. }
    ));
}

#[test]
fn a_waiter_that_leaves_or_expires_holds_nobody_back() {
    let h = harness(1, Tier::Tier1K);
    assert!(h.send(100).is_allowed());
    let m = Category::Marketing;
    assert!(matches!(h.try_wait(1, m, 1, WAIT).next, Next::Retry { .. }));
    assert!(matches!(
        h.try_wait(2, m, 2, WAIT).next,
        Next::Behind { waiter: 1, .. }
    ));
    assert!(h.engine.unwait_at("acme", 1, h.clock.now_ms()).unwrap());
    assert!(!h.engine.unwait_at("acme", 1, h.clock.now_ms()).unwrap());
    assert!(matches!(h.try_wait(2, m, 2, WAIT).next, Next::Retry { .. }));
    // A waiter whose wait ran out (its replica died) is dropped by time alone.
    h.clock.advance(1_000);
    assert!(allowed(&h.try_wait(2, m, 2, WAIT)));
    assert!(matches!(
        h.try_wait(3, m, 3, 1_500).next,
        Next::Retry { .. }
    ));
    assert!(matches!(
        h.try_wait(4, m, 4, WAIT).next,
        Next::Behind { waiter: 3, .. }
    ));
    h.clock.advance(1_600);
    assert!(h.engine.waiter_blocked("acme", 3).is_some());
    assert!(allowed(&h.try_wait(4, m, 4, WAIT)));
    assert!(h.engine.waiter_blocked("acme", 3).is_none());
}

#[test]
fn a_pair_rate_wait_does_not_hold_back_other_recipients() {
    let h = harness(1_000, Tier::Tier1K);
    assert!(h.send(7).is_allowed());
    let s = h.try_wait(1, Category::Authentication, 7, WAIT);
    assert_eq!(s.decision.reason, Some(DenyReason::PairRate));
    assert!(matches!(s.next, Next::Retry { .. }));
    assert!(matches!(
        h.engine.waiter_blocked("acme", 1),
        Some(Blocked::Pair(0, _))
    ));
    assert!(allowed(&h.try_wait(2, Category::Marketing, 8, WAIT)));
    // The same recipient waits behind it.
    assert!(matches!(
        h.try_wait(3, Category::Marketing, 7, WAIT).next,
        Next::Behind { waiter: 1, .. }
    ));
}

#[test]
fn a_tier_slot_wait_does_not_hold_back_counted_recipients() {
    let h = harness(1_000, Tier::Tier50);
    for r in 0..50 {
        h.clock.advance(10);
        assert!(h.send(r).is_allowed());
    }
    // The first slot frees 10 s from now.
    h.clock.advance(DAY - 10 * SEC - 500);
    let s = h.try_wait(1, Category::Marketing, 1_000, WAIT);
    assert_eq!(s.decision.reason, Some(DenyReason::TierLimit));
    assert!(matches!(s.next, Next::Retry { .. }));
    // An already counted recipient takes no slot: not held back (after its pair rate).
    assert!(allowed(&h.try_wait(2, Category::Marketing, 3, WAIT)));
    // A second new recipient waits behind the first.
    assert!(matches!(
        h.try_wait(3, Category::Marketing, 1_001, WAIT).next,
        Next::Behind { waiter: 1, .. }
    ));
}

#[test]
fn waiting_never_changes_a_plain_send() {
    // A queue holds waiters back from each other; a send that does not wait is decided as it
    // always was (SPEC §2a: 0 = answer at once, as before).
    let h = harness(1, Tier::Tier1K);
    assert!(h.send(100).is_allowed());
    assert!(matches!(
        h.try_wait(1, Category::Authentication, 1, WAIT).next,
        Next::Retry { .. }
    ));
    h.clock.advance(1_000);
    assert!(h.send(101).is_allowed());
    assert_eq!(h.engine.waiting("acme"), 1);
}

/// A shell on a manual clock, trying waiters in a random order at each instant: whatever the
/// order of tries, sends go AUTHENTICATION, UTILITY, MARKETING, by arrival within each, at the
/// number's rate, and no waiter is woken but when its slot or its predecessor moved.
#[test]
fn any_order_of_tries_serves_the_queue_in_priority_order() {
    for seed in 0..40 {
        let mut rng = SplitMix64::new(seed);
        let mps = 1 + rng.below(5) as u32;
        let h = harness(mps, Tier::Tier1K);
        let n = 10 + rng.below(40);
        let cats = [
            Category::Authentication,
            Category::Utility,
            Category::Marketing,
        ];
        let waiters: Vec<(u64, Category)> = (1..=n)
            .map(|id| (id, cats[rng.below(3) as usize]))
            .collect();
        // Each waiter: when it may try (a time) or whom it waits for.
        #[derive(Clone, Copy, Debug)]
        enum State {
            At(u64),
            After(u64),
            Done,
        }
        let mut state: BTreeMap<u64, State> = BTreeMap::new();
        let mut allowed_at: Vec<(u64, u64)> = Vec::new();
        let mut tries = 0u64;
        let step = |h: &H, id: u64, cat: Category, state: &mut BTreeMap<u64, State>| {
            let s = h.try_wait(id, cat, id, 10 * 60 * SEC);
            let now = h.clock.now_ms();
            let wake = s.wake_followers;
            let new = match s.next {
                Next::Answer => {
                    assert!(s.decision.is_allowed(), "seed {seed}: {s:?}");
                    State::Done
                }
                Next::Retry { after_ms } => State::At(now + after_ms),
                Next::Behind { waiter, .. } => State::After(waiter),
            };
            state.insert(id, new);
            if wake || matches!(new, State::Done) {
                for st in state.values_mut() {
                    if matches!(*st, State::After(w) if w == id) {
                        *st = State::At(now);
                    }
                }
            }
            s.decision.is_allowed()
        };
        // Everyone arrives at T0, in id order.
        let cat_of: HashMap<u64, Category> = waiters.iter().copied().collect();
        for &(id, cat) in &waiters {
            tries += 1;
            if step(&h, id, cat, &mut state) {
                allowed_at.push((h.clock.now_ms(), id));
            }
        }
        let mut guard = 0;
        while state.values().any(|s| !matches!(s, State::Done)) {
            guard += 1;
            assert!(guard < 100_000, "seed {seed}: stuck {state:?}");
            let next = state
                .values()
                .filter_map(|s| match s {
                    State::At(t) => Some(*t),
                    _ => None,
                })
                .min()
                .unwrap_or_else(|| panic!("seed {seed}: nobody to wake {state:?}"));
            h.clock.advance_to(next.max(h.clock.now_ms()));
            let mut due: Vec<u64> = state
                .iter()
                .filter(|(_, s)| matches!(s, State::At(t) if *t <= next))
                .map(|(id, _)| *id)
                .collect();
            // A random order of tries among those due.
            for i in (1..due.len()).rev() {
                due.swap(i, rng.below(i as u64 + 1) as usize);
            }
            for id in due {
                if !matches!(state[&id], State::At(t) if t <= h.clock.now_ms()) {
                    continue;
                }
                tries += 1;
                if step(&h, id, cat_of[&id], &mut state) {
                    allowed_at.push((h.clock.now_ms(), id));
                }
            }
        }
        // The first arrivals took the free slots (the number's burst); the rest went in
        // priority order, at the number's rate.
        let at_once = allowed_at.iter().filter(|(t, _)| *t == T0).count();
        let order: Vec<u64> = allowed_at.iter().skip(at_once).map(|(_, id)| *id).collect();
        let mut expected: Vec<u64> = waiters.iter().skip(at_once).map(|(id, _)| *id).collect();
        let rank = |c: Category| match c {
            Category::Authentication => 0,
            Category::Utility => 1,
            Category::Marketing => 2,
        };
        expected.sort_by_key(|id| (rank(cat_of[id]), *id));
        assert_eq!(order, expected, "seed {seed}");
        // At the number's rate: one send per 1/mps s after the first.
        let interval = 1_000 / u64::from(mps);
        for w in allowed_at[at_once.saturating_sub(1)..].windows(2) {
            assert!(w[1].0 - w[0].0 >= interval - 1, "seed {seed}: {w:?}");
        }
        // About two tries per send: the head's when its slot opens, and the next one's when
        // the head leaves (plus the arrivals).
        assert!(
            tries <= 3 * n + 2,
            "seed {seed}: {tries} tries for {n} sends"
        );
        assert_eq!(h.engine.waiting("acme"), 0);
    }
}

/// A waiter held by its number's throughput still needs its tier slot: a send on another number
/// may not take the last one first.
#[test]
fn a_waiter_keeps_its_tier_slot_while_it_waits_for_its_number() {
    let h = two_numbers(Policy::default(), 1);
    for r in 0..49 {
        h.clock.advance(1_000);
        assert!(h.send(r).is_allowed());
    }
    // The number is busy for a second; one tier slot is left.
    let s = h.try_wait(1, Category::Authentication, 500, WAIT);
    assert_eq!(s.decision.reason, Some(DenyReason::Throughput));
    assert!(matches!(s.next, Next::Retry { .. }));
    // A new recipient on the other number: held back, the last slot is the waiter's.
    let other = |id, to| h.try_from("2002", id, Category::Marketing, to, WAIT, 100);
    assert!(matches!(other(2, 600).next, Next::Behind { waiter: 1, .. }));
    // An already counted recipient on the other number takes no slot: it goes.
    assert!(allowed(&other(3, 10)));
    h.clock.advance(1_000);
    assert!(allowed(&h.try_wait(1, Category::Authentication, 500, WAIT)));
}

/// With tier_scope = phone_number, a tier wait on one number holds nothing back on another.
#[test]
fn a_tier_wait_holds_back_only_its_own_window() {
    let policy = Policy {
        tier_scope: TierScope::PhoneNumber,
        ..Policy::default()
    };
    let h = two_numbers(policy, 1_000);
    for r in 0..50 {
        h.clock.advance(10);
        assert!(h.send(r).is_allowed());
    }
    h.clock.advance(DAY - 10 * SEC);
    let s = h.try_wait(1, Category::Authentication, 1_000, WAIT);
    assert_eq!(s.decision.reason, Some(DenyReason::TierLimit));
    assert!(matches!(s.next, Next::Retry { .. }));
    let s = h.try_from("2002", 2, Category::Marketing, 7_777, WAIT, 100);
    assert!(allowed(&s), "{s:?}");
}
