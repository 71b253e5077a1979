//! The engine against an obviously correct oracle.
//!
//! The oracle keeps every send in a `Vec` and recounts from scratch at every decision. Random
//! sequences of sends, clock advances, reports and admin events (escalation path, rating, tier
//! requests, appeals) go through both; verdict, reason and retry-after must agree on every send,
//! and tier, pending tier and flags after every admin event. Thresholds are shrunk (TIER_50,
//! weekly caps of a few dozen) so that short sequences reach every rule.
//!
//! Sends name their recipient by phone, by business-scoped user id (BSUID) or by both; the
//! oracle keeps the links an allowed send with both teaches and counts people, not ids (a BSUID
//! seen alone before its link keeps its own entry until it leaves the window).
//!
//! `PROPTEST_CASES` sets the number of cases; CI runs at least 10,000.

use std::collections::HashMap;

use proptest::prelude::*;
use tiergate_core::*;
use tiergate_testkit::{PHONE, T0, email, engine_at_t0};

#[derive(Debug, Clone)]
struct SendOp {
    /// The phone (`recipient`), if named.
    phone: Option<u64>,
    /// The BSUID (`recipient_user_id`), if named.
    user: Option<u8>,
    key: Option<u8>,
    category: Category,
}

impl SendOp {
    /// The request's strings: recipient, BSUID, idempotency key.
    fn ids(&self) -> (String, Option<String>, Option<String>) {
        (
            self.phone.map(|p| p.to_string()).unwrap_or_default(),
            self.user.map(|u| format!("US.{}", 500 + u64::from(u))),
            self.key.map(|k| format!("k{k}")),
        )
    }

    fn request<'a>(&self, r: &'a str, u: Option<&'a str>, k: Option<&'a str>) -> SendRequest<'a> {
        SendRequest {
            org_id: "o",
            phone_number_id: PHONE,
            recipient: r,
            recipient_user_id: u,
            template_name: "t",
            category: self.category,
            idempotency_key: k,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Send(SendOp),
    /// Sends decided in one batch call.
    Batch(Vec<SendOp>),
    Advance(u64),
    SetPath(bool),
    SetRating(QualityRating),
    RequestTier(Tier),
    FileAppeal,
    ResolveAppeal(bool),
    /// Report the n-th most recent permit.
    Report {
        back: usize,
        not_sent: bool,
    },
}

fn send_op() -> impl Strategy<Value = SendOp> {
    (
        proptest::option::weighted(0.85, 0u64..90),
        proptest::option::weighted(0.3, 0u8..8),
        proptest::option::weighted(0.15, 0u8..4),
        prop_oneof![
            3 => Just(Category::Marketing),
            1 => Just(Category::Utility),
            1 => Just(Category::Authentication),
        ],
    )
        .prop_map(|(phone, user, key, category)| SendOp {
            // A send names at least one id.
            user: if phone.is_none() {
                user.or(Some(0))
            } else {
                user
            },
            phone,
            key,
            category,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let advance = prop_oneof![
        8 => 1u64..2_000,
        3 => 1u64..3_600_000,
        2 => 1u64..86_400_000,
        1 => Just(7 * 86_400_000),
        1 => 1u64..(8 * 86_400_000),
    ];
    let rating = prop_oneof![
        1 => Just(QualityRating::Green),
        1 => Just(QualityRating::Yellow),
        3 => Just(QualityRating::Red),
        1 => Just(QualityRating::Unknown),
    ];
    prop_oneof![
        120 => send_op().prop_map(Op::Send),
        6 => proptest::collection::vec(send_op(), 1..12).prop_map(Op::Batch),
        12 => advance.prop_map(Op::Advance),
        3 => any::<bool>().prop_map(Op::SetPath),
        3 => rating.prop_map(Op::SetRating),
        2 => proptest::sample::select(Tier::ALL.to_vec()).prop_map(Op::RequestTier),
        1 => Just(Op::FileAppeal),
        1 => any::<bool>().prop_map(Op::ResolveAppeal),
        4 => (0usize..5, any::<bool>()).prop_map(|(back, not_sent)| Op::Report { back, not_sent }),
    ]
}

#[derive(Debug, Clone)]
struct Setup {
    policy: Policy,
    tier: Tier,
    path: bool,
    history: bool,
    rating: QualityRating,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        2u64..40,
        2u64..60,
        proptest::bool::weighted(0.3),
        prop_oneof![Just(0u8), Just(20u8)],
        prop_oneof![3 => Just(Tier::Tier50), 1 => Just(Tier::Tier250)],
        proptest::bool::weighted(0.75),
        any::<bool>(),
        prop_oneof![Just(QualityRating::Green), Just(QualityRating::Red)],
        prop_oneof![Just(1_000u64), Just(6_000u64)],
        prop_oneof![Just(60_000u64), Just(3_600_000), Just(7 * 86_400_000)],
        prop_oneof![
            3 => Just((0u8, 0u8)),
            1 => Just((20, 0)),
            1 => Just((0, 30)),
            1 => Just((20, 30)),
            1 => Just((50, 50)),
        ],
    )
        .prop_map(
            |(
                small,
                cap,
                auto_upgrade,
                headroom,
                tier,
                path,
                history,
                rating,
                pair,
                grace,
                res,
            )| {
                Setup {
                    policy: Policy {
                        small_sender_weekly_limit: small,
                        weekly_cap_without_escalation: cap,
                        auto_upgrade,
                        upgrade_usage_percent: 100,
                        tier_headroom_percent: headroom,
                        ladder: Ladder::new(Tier::LEGACY_LADDER.to_vec()).unwrap(),
                        default_throughput_mps: 1_000,
                        pair_rate_period_ms: pair,
                        red_grace_ms: grace,
                        reserve_authentication_percent: res.0,
                        reserve_utility_percent: res.1,
                        ..Policy::default()
                    },
                    tier,
                    path,
                    history,
                    rating,
                }
            },
        )
}

#[derive(Debug, Clone)]
struct Sent {
    at: u64,
    recipient: u64,
    refunded: bool,
    reported: bool,
    permit: Permit,
}

/// The specification, written as directly as possible.
struct Oracle {
    p: Policy,
    tier: Tier,
    pending: Option<Tier>,
    path: bool,
    history: bool,
    rating: QualityRating,
    flagged: Option<u64>,
    appeal_pending: bool,
    sends: Vec<Sent>,
    idem: HashMap<u8, (u64, usize)>,
    /// BSUID → the person it counts under (a phone), learned from allowed sends.
    links: HashMap<u8, u64>,
}

impl Oracle {
    /// Who a send is to: its phone; else the phone its BSUID is linked to; else the BSUID
    /// itself (people keyed apart from phones).
    fn person(&self, phone: Option<u64>, user: Option<u8>) -> u64 {
        match (phone, user) {
            (Some(p), _) => p,
            (None, Some(u)) => self.links.get(&u).copied().unwrap_or(1_000 + u64::from(u)),
            (None, None) => unreachable!("a send names an id"),
        }
    }

    fn live(&self) -> impl Iterator<Item = &Sent> {
        self.sends.iter().filter(|s| !s.refunded)
    }

    fn count7(&self, now: u64) -> u64 {
        self.live()
            .filter(|s| s.at + self.p.weekly_window_ms > now)
            .count() as u64
    }

    fn window(&self, now: u64) -> HashMap<u64, u64> {
        let mut w = HashMap::new();
        for s in self.live().filter(|s| s.at + self.p.tier_window_ms > now) {
            let e = w.entry(s.recipient).or_insert(0);
            *e = (*e).max(s.at);
        }
        w
    }

    fn change_tier(&mut self, target: Tier) {
        if target > self.tier && !self.path {
            self.pending = Some(self.pending.map_or(target, |p| p.max(target)));
        } else {
            self.tier = target;
            if self.pending.is_some_and(|p| p <= target) {
                self.pending = None;
            }
        }
    }

    fn set_rating(&mut self, r: QualityRating, now: u64) {
        if r == QualityRating::Red {
            if self.rating != QualityRating::Red || self.flagged.is_none() {
                self.flagged = Some(now);
            }
        } else {
            self.flagged = None;
        }
        self.rating = r;
    }

    fn set_path(&mut self, on: bool) {
        self.path = on;
        if on
            && let Some(p) = self.pending.take()
            && p > self.tier
        {
            self.tier = p;
        }
    }

    /// Checks the engine's decision `d` on `send` at `now` against the oracle's, and records
    /// the send when allowed.
    fn check(
        &mut self,
        send: &SendOp,
        d: &Decision,
        now: u64,
        step: usize,
    ) -> Result<(), TestCaseError> {
        let SendOp {
            phone,
            user,
            key,
            category,
        } = *send;
        let recipient = self.person(phone, user);
        let replay = key.and_then(|k| {
            self.idem
                .get(&k)
                .filter(|(at, i)| at + self.p.idempotency_ttl_ms > now && !self.sends[*i].refunded)
                .map(|&(_, i)| i)
        });
        let (reason, retry, seen) = self.decide(recipient, key, category, now);
        if replay.is_none() {
            prop_assert_eq!((d.usage.tier, d.usage.passthrough), seen, "step {}", step);
        }
        prop_assert_eq!(d.reason, reason, "step {}: {:?}", step, d);
        prop_assert_eq!(d.retry_after_ms, retry, "step {}: {:?}", step, d);
        if let Some(i) = replay {
            prop_assert_eq!(
                d.permit.as_ref(),
                Some(&self.sends[i].permit),
                "step {}",
                step
            );
        } else if reason.is_none() {
            let permit = d.permit.clone().unwrap();
            self.sends.push(Sent {
                at: now,
                recipient,
                refunded: false,
                reported: false,
                permit,
            });
            if let Some(k) = key {
                self.idem.insert(k, (now, self.sends.len() - 1));
            }
            if let (Some(p), Some(u)) = (phone, user) {
                self.links.insert(u, p);
            }
        }
        Ok(())
    }

    /// The denial reason (`None`: allow), the retry-after, and the (effective tier,
    /// pass-through) the send was judged at.
    fn decide(
        &mut self,
        recipient: u64,
        key: Option<u8>,
        category: Category,
        now: u64,
    ) -> (Option<DenyReason>, u64, (Tier, bool)) {
        if let Some(k) = key {
            if let Some(&(at, i)) = self.idem.get(&k)
                && at + self.p.idempotency_ttl_ms > now
                && !self.sends[i].refunded
            {
                return (None, 0, (self.tier, false));
            }
            self.idem.remove(&k);
        }
        // automatic eligibility
        if self.p.auto_upgrade
            && self.rating != QualityRating::Red
            && let (Some(limit), Some(next)) =
                (self.tier.limit(), self.p.ladder.next_above(self.tier))
            && self.pending.is_none_or(|p| p < next)
            && self.count7(now) >= self.p.upgrade_threshold(limit)
        {
            self.change_tier(next);
        }
        let c7 = self.count7(now);
        let passthrough = c7 < self.p.small_sender_weekly_limit;
        let restricted = self.rating == QualityRating::Red
            && self.flagged.is_some_and(|f| now >= f + self.p.red_grace_ms)
            && !passthrough;
        let eff = if restricted {
            self.p
                .ladder
                .step_down(self.tier, self.p.restricted_tier_steps)
        } else {
            self.tier
        };
        let limit = self.p.with_headroom(eff.limit());
        let seen = (eff, passthrough);
        let history = self.history || self.live().next().is_some();
        if !self.path && !history {
            return (Some(DenyReason::EscalationPathRequired), 0, seen);
        }
        let cap = self.p.weekly_cap_without_escalation;
        if !self.path && c7 >= cap {
            let mut recent: Vec<u64> = self
                .live()
                .filter(|s| s.at + self.p.weekly_window_ms > now)
                .map(|s| s.at)
                .collect();
            recent.sort_unstable();
            let kth = recent[recent.len() - cap as usize];
            return (
                Some(DenyReason::WeeklyCapWithoutEscalation),
                kth + self.p.weekly_window_ms - now,
                seen,
            );
        }
        let w = self.window(now);
        if let Some(l) = limit
            && !w.contains_key(&recipient)
            && w.len() as u64 >= l
        {
            // A slot frees once the window holds fewer than the limit: when the
            // (len − limit + 1)-th oldest recipient leaves.
            let mut times: Vec<u64> = w.values().copied().collect();
            times.sort_unstable();
            let excess = times.len() - l as usize;
            let retry = times
                .get(excess)
                .map_or(0, |t| t + self.p.tier_window_ms - now);
            let reason = if restricted {
                DenyReason::QualityRestricted
            } else {
                DenyReason::TierLimit
            };
            return (Some(reason), retry, seen);
        }
        // SPEC §2a reserves: MARKETING takes a new slot only while the whole window is below
        // 100 − auth − utility % of the limit, UTILITY below 100 − auth %.
        let share_pct = match category {
            Category::Marketing => {
                100 - u64::from(self.p.reserve_authentication_percent)
                    - u64::from(self.p.reserve_utility_percent)
            }
            Category::Utility => 100 - u64::from(self.p.reserve_authentication_percent),
            Category::Authentication => 100,
        };
        if let Some(l) = limit
            && !w.contains_key(&recipient)
            && (w.len() as u64) >= l * share_pct / 100
        {
            let share = (l * share_pct / 100) as usize;
            let mut times: Vec<u64> = w.values().copied().collect();
            times.sort_unstable();
            let retry = times
                .get(times.len() - share)
                .map_or(0, |t| t + self.p.tier_window_ms - now);
            return (Some(DenyReason::CategoryReserve), retry, seen);
        }
        // pair rate, burst 1: one allowed send (refunded or not) per period
        if let Some(last) = self
            .sends
            .iter()
            .filter(|s| s.recipient == recipient)
            .map(|s| s.at)
            .max()
            && last + self.p.pair_rate_period_ms > now
        {
            return (
                Some(DenyReason::PairRate),
                last + self.p.pair_rate_period_ms - now,
                seen,
            );
        }
        (None, 0, seen)
    }
}

fn run(setup: Setup, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (engine, clock) = engine_at_t0(setup.policy.clone());
    let mut cfg = OrgConfig::new("o", setup.tier).with_phone(PHONE, 1_000);
    cfg.has_template_history = setup.history;
    cfg.quality_rating = setup.rating;
    if setup.path {
        cfg.escalation_path = Some(email());
    }
    engine.put_org(cfg).unwrap();
    let mut o = Oracle {
        p: setup.policy.clone(),
        tier: setup.tier,
        pending: None,
        path: setup.path,
        history: setup.history,
        rating: setup.rating,
        flagged: (setup.rating == QualityRating::Red).then_some(T0),
        appeal_pending: false,
        sends: Vec::new(),
        idem: HashMap::new(),
        links: HashMap::new(),
    };
    let mut last_appeal: Option<AppealId> = None;
    for (step, op) in ops.into_iter().enumerate() {
        let now = clock.now_ms();
        match op {
            Op::Send(send) => {
                let (r, u, k) = send.ids();
                let d = engine
                    .decide(&send.request(&r, u.as_deref(), k.as_deref()))
                    .unwrap();
                o.check(&send, &d, now, step)?;
            }
            Op::Batch(sends) => {
                // A batch equals its items in sequence (SPEC §2a).
                let ids: Vec<_> = sends.iter().map(SendOp::ids).collect();
                let reqs: Vec<SendRequest<'_>> = sends
                    .iter()
                    .zip(&ids)
                    .map(|(s, (r, u, k))| s.request(r, u.as_deref(), k.as_deref()))
                    .collect();
                let ds = engine.decide_batch(&reqs).unwrap();
                prop_assert_eq!(ds.len(), sends.len());
                for (send, d) in sends.iter().zip(&ds) {
                    o.check(send, d, now, step)?;
                }
            }
            Op::Advance(ms) => {
                clock.advance(ms);
            }
            Op::SetPath(on) => {
                if on {
                    engine.set_escalation_path("o", email()).unwrap();
                } else {
                    engine.clear_escalation_path("o").unwrap();
                }
                o.set_path(on);
            }
            Op::SetRating(r) => {
                engine.set_quality_rating("o", r).unwrap();
                o.set_rating(r, now);
            }
            Op::RequestTier(t) => {
                let c = engine.request_tier_change("o", t).unwrap();
                o.change_tier(t);
                prop_assert_eq!(c.tier, o.tier, "step {}", step);
                prop_assert_eq!(c.pending_tier, o.pending, "step {}", step);
            }
            Op::FileAppeal => {
                let r = engine.file_appeal("o", "evidence");
                prop_assert_eq!(r.is_ok(), !o.appeal_pending, "step {}", step);
                if let Ok(a) = r {
                    o.appeal_pending = true;
                    last_appeal = Some(a.appeal_id);
                }
            }
            Op::ResolveAppeal(approved) => {
                if let Some(id) = &last_appeal {
                    let r = engine.resolve_appeal(id, approved);
                    prop_assert_eq!(r.is_ok(), o.appeal_pending, "step {}", step);
                    if o.appeal_pending {
                        o.appeal_pending = false;
                        if approved && o.rating == QualityRating::Red {
                            o.rating = QualityRating::Unknown;
                            o.flagged = None;
                        }
                    }
                }
            }
            Op::Report { back, not_sent } => {
                if back >= o.sends.len() {
                    continue;
                }
                let i = o.sends.len() - 1 - back;
                let outcome = if not_sent {
                    SendOutcome::NotSent
                } else {
                    SendOutcome::Sent
                };
                let r = engine.report(&o.sends[i].permit, outcome);
                let s = &mut o.sends[i];
                if s.at + setup.policy.permit_ttl_ms <= now {
                    prop_assert!(
                        matches!(r, Err(EngineError::UnknownPermit(_))),
                        "step {}: {:?}",
                        step,
                        r
                    );
                } else if s.reported {
                    prop_assert!(
                        matches!(r, Err(EngineError::PermitAlreadyReported(_))),
                        "step {}: {:?}",
                        step,
                        r
                    );
                } else {
                    prop_assert!(r.is_ok(), "step {}: {:?}", step, r);
                    s.reported = true;
                    s.refunded = not_sent;
                }
            }
        }
        let st = engine.get_org("o").unwrap();
        let now = clock.now_ms();
        prop_assert_eq!(st.config.tier, o.tier, "step {}", step);
        prop_assert_eq!(st.pending_tier, o.pending, "step {}", step);
        prop_assert_eq!(st.config.quality_rating, o.rating, "step {}", step);
        prop_assert_eq!(st.flagged_since_ms, o.flagged, "step {}", step);
        prop_assert_eq!(st.usage.templates_7d, o.count7(now), "step {}", step);
        prop_assert_eq!(
            st.usage.unique_recipients_24h,
            o.window(now).len() as u64,
            "step {}",
            step
        );
        let f = st.fill;
        prop_assert_eq!(
            f.marketing + f.utility + f.authentication + f.unattributed,
            st.usage.unique_recipients_24h,
            "step {}: fill by category adds up to the window",
            step
        );
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_oracle(setup in setup(), ops in proptest::collection::vec(op(), 1..250)) {
        run(setup, ops)?;
    }
}
