//! Campaign preflight (SPEC §2a): what a plan says, what it refuses, and the promise that a plan
//! followed exactly meets no denial, on random orgs and campaigns.
//!
//! `PROPTEST_CASES` sets the number of random cases (default 2,000).

use proptest::prelude::*;
use tiergate_core::*;
use tiergate_testkit::{DAY, HOUR, PHONE, SEC, T0, email, engine_at_t0, org};

fn marketing<'a>(audience: Audience<'a>) -> PlanRequest<'a> {
    PlanRequest {
        org_id: "o",
        phone_number_id: PHONE,
        template_name: "t",
        category: Category::Marketing,
        audience,
    }
}

fn send(engine: &Engine, to: &str, category: Category) -> Decision {
    engine
        .decide(&SendRequest {
            org_id: "o",
            phone_number_id: PHONE,
            recipient: to,
            recipient_user_id: None,
            template_name: "t",
            category,
            idempotency_key: None,
        })
        .unwrap()
}

fn state(engine: &Engine) -> String {
    format!("{:?}", engine.snapshot_org("o").unwrap())
}

#[test]
fn a_full_tier_waits_for_the_window_and_says_so() {
    let (engine, _clock) = engine_at_t0(Policy::default());
    engine.put_org(org("o", Tier::Tier250)).unwrap();
    let before = state(&engine);
    let p = engine
        .plan(&marketing(Audience::NewRecipients(300)))
        .unwrap();
    assert_eq!(state(&engine), before, "a plan changes nothing");
    assert_eq!(p.allowed_now, 250);
    assert_eq!(
        p.waves,
        vec![
            Wave {
                at_ms: T0,
                count: 250
            },
            Wave {
                at_ms: T0 + DAY,
                count: 50
            }
        ]
    );
    assert_eq!(p.completes_at_ms, Some(T0 + DAY));
    assert_eq!(p.binding, Some(DenyReason::TierLimit));
    assert_eq!((p.already_counted, p.unplanned), (0, 0));
}

#[test]
fn all_now_binds_nothing() {
    let (engine, _clock) = engine_at_t0(Policy::default());
    engine.put_org(org("o", Tier::Tier2K)).unwrap();
    let p = engine
        .plan(&marketing(Audience::NewRecipients(10)))
        .unwrap();
    assert_eq!(p.allowed_now, 10);
    assert_eq!(p.completes_at_ms, Some(T0));
    assert_eq!(p.binding, None);
}

#[test]
fn a_list_counts_who_is_in_the_window_and_skips_who_opted_out() {
    let (engine, _clock) = engine_at_t0(Policy::default());
    engine.put_org(org("o", Tier::Tier250)).unwrap();
    for r in ["111", "222"] {
        assert!(send(&engine, r, Category::Utility).is_allowed());
    }
    // 131050: 333 opted out of marketing.
    engine
        .feedback("o", Some(PHONE), Some("333"), None, 131_050)
        .unwrap();
    let list = ["111", "333", "444", "222", "555"];
    let p = engine
        .plan(&marketing(Audience::Recipients(&list)))
        .unwrap();
    assert_eq!(p.already_counted, 2);
    assert_eq!(p.never, vec![1]);
    // 111 and 222 were messaged this instant: the pair rate holds them 6 s, in list order.
    assert_eq!(p.planned(), 4);
    assert_eq!(p.binding, Some(DenyReason::PairRate));
}

#[test]
fn reserves_hold_marketing_below_its_share() {
    let policy = Policy {
        reserve_authentication_percent: 10,
        reserve_utility_percent: 10,
        ..Policy::default()
    };
    let (engine, _clock) = engine_at_t0(policy);
    engine.put_org(org("o", Tier::Tier250)).unwrap();
    let p = engine
        .plan(&marketing(Audience::NewRecipients(250)))
        .unwrap();
    assert_eq!(p.allowed_now, 200);
    assert_eq!(p.binding, Some(DenyReason::CategoryReserve));
    let auth = PlanRequest {
        category: Category::Authentication,
        ..marketing(Audience::NewRecipients(250))
    };
    assert_eq!(engine.plan(&auth).unwrap().allowed_now, 250);
}

#[test]
fn what_time_cannot_cure_does_not_complete() {
    let (engine, _clock) = engine_at_t0(Policy::default());
    let mut cfg = org("o", Tier::Tier250);
    cfg.escalation_path = None;
    engine.put_org(cfg).unwrap();
    let p = engine.plan(&marketing(Audience::NewRecipients(5))).unwrap();
    assert_eq!(p.completes_at_ms, None);
    assert_eq!(p.binding, Some(DenyReason::EscalationPathRequired));
    assert_eq!((p.allowed_now, p.unplanned), (0, 5));
    assert!(p.waves.is_empty());
}

#[test]
fn beyond_the_horizon_does_not_complete() {
    // Without an escalation path: 1,000 a week, so 6,000 take five weeks.
    let (engine, _clock) = engine_at_t0(Policy::default());
    let mut cfg = org("o", Tier::Tier10K);
    cfg.escalation_path = None;
    cfg.has_template_history = true;
    engine.put_org(cfg).unwrap();
    let p = engine
        .plan(&marketing(Audience::NewRecipients(6_000)))
        .unwrap();
    assert_eq!(p.allowed_now, 1_000);
    assert_eq!(p.completes_at_ms, None);
    assert_eq!(p.binding, Some(DenyReason::WeeklyCapWithoutEscalation));
    assert_eq!(p.planned() + p.unplanned, 6_000);
}

#[test]
fn a_red_grace_ending_mid_campaign_drops_the_tier() {
    let policy = Policy {
        red_grace_ms: HOUR,
        small_sender_weekly_limit: 10,
        ..Policy::default()
    };
    let (engine, clock) = engine_at_t0(policy);
    let mut cfg = org("o", Tier::Tier2K);
    cfg.quality_rating = QualityRating::Red;
    cfg.phone_numbers[0].throughput_mps = 1;
    engine.put_org(cfg).unwrap();
    // One send a second: the grace ends after 3,600 sends, at the restricted tier (250), which
    // the window already passed; the rest wait a day.
    let p = engine
        .plan(&marketing(Audience::NewRecipients(4_000)))
        .unwrap();
    let before_grace: u64 = p
        .waves
        .iter()
        .filter(|w| w.at_ms < T0 + HOUR)
        .map(|w| w.count)
        .sum();
    assert_eq!(before_grace, 2_000, "{p:?}");
    assert_eq!(p.binding, Some(DenyReason::QualityRestricted));
    follow(
        &engine,
        &clock,
        &p,
        &(0..4_000).map(anon).collect::<Vec<_>>(),
    );
}

#[test]
fn bad_plans_name_their_field_and_change_nothing() {
    let policy = Policy {
        plan_max_recipients: 100_000,
        ..Policy::default()
    };
    let (engine, _clock) = engine_at_t0(policy);
    engine.put_org(org("o", Tier::Tier250)).unwrap();
    let before = state(&engine);
    let field = |r: Result<Plan, EngineError>| match r {
        Err(EngineError::Invalid(v)) => v.field.into_owned(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        field(engine.plan(&marketing(Audience::Recipients(&[])))),
        "recipients"
    );
    assert_eq!(
        field(engine.plan(&marketing(Audience::NewRecipients(0)))),
        "audience_size"
    );
    assert_eq!(
        field(engine.plan(&marketing(Audience::NewRecipients(100_001)))),
        "audience_size"
    );
    let many: Vec<String> = (0..100_001).map(|i| (10_000_000 + i).to_string()).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        field(engine.plan(&marketing(Audience::Recipients(&many)))),
        "recipients"
    );
    assert_eq!(
        field(engine.plan(&marketing(Audience::Recipients(&["123", "+49"])))),
        "recipients[1]"
    );
    let unknown = PlanRequest {
        org_id: "nope",
        ..marketing(Audience::NewRecipients(1))
    };
    assert!(matches!(
        engine.plan(&unknown),
        Err(EngineError::UnknownOrg(_))
    ));
    let phone = PlanRequest {
        phone_number_id: "999",
        ..marketing(Audience::NewRecipients(1))
    };
    assert!(matches!(
        engine.plan(&phone),
        Err(EngineError::UnknownPhoneNumber { .. })
    ));
    assert_eq!(state(&engine), before);
    assert_eq!(engine.org_count(), 1);
}

/// A recipient of an `audience_size` plan followed for real: distinct phones, none used before.
fn anon(i: u64) -> String {
    (900_000_000 + i).to_string()
}

/// Sends every wave at its time and demands zero denials; returns the last send's time.
fn follow(engine: &Engine, clock: &ManualClock, plan: &Plan, list: &[String]) -> Option<u64> {
    let mut next = 0usize;
    let mut last = None;
    for w in &plan.waves {
        clock.advance_to(w.at_ms);
        for _ in 0..w.count {
            while plan.never.contains(&(next as u32)) {
                next += 1;
            }
            let d = engine
                .decide(&SendRequest {
                    org_id: "o",
                    phone_number_id: PHONE,
                    recipient: &list[next],
                    recipient_user_id: None,
                    template_name: "t",
                    category: CATEGORY.with(|c| c.get()),
                    idempotency_key: None,
                })
                .unwrap();
            assert!(
                d.is_allowed(),
                "recipient {next} at {} (T0 + {} ms): {d:?}\nplan: {plan:?}",
                w.at_ms,
                w.at_ms - T0
            );
            last = Some(clock.now_ms());
            next += 1;
        }
    }
    last
}

std::thread_local! {
    /// The category `follow` sends with (tests set it before following).
    static CATEGORY: std::cell::Cell<Category> = const { std::cell::Cell::new(Category::Marketing) };
}

#[derive(Debug, Clone)]
struct World {
    policy: Policy,
    tier: Tier,
    path: bool,
    history: bool,
    red: bool,
    mps: u32,
    /// Sends before the plan: (advance ms, recipient, category index).
    before: Vec<(u64, u64, u8)>,
    /// Error codes fed back before the plan: (code, recipient).
    feedback: Vec<(i32, u64)>,
    category: u8,
    /// The campaign: a list of recipients from a pool that overlaps the earlier sends, or a
    /// count.
    list: Option<Vec<u64>>,
    count: u64,
}

fn category(i: u8) -> Category {
    match i % 3 {
        0 => Category::Marketing,
        1 => Category::Utility,
        _ => Category::Authentication,
    }
}

fn world() -> impl Strategy<Value = World> {
    let policy = (
        prop_oneof![Just(0u8), Just(20)],
        prop_oneof![2 => Just((0u8, 0u8)), 1 => Just((20, 10)), 1 => Just((10, 40))],
        prop_oneof![Just(HOUR), Just(6 * HOUR), Just(7 * DAY)],
        2u64..300,
        2u64..300,
        prop_oneof![Just(1u32), Just(2)],
    )
        .prop_map(|(headroom, res, grace, small, cap, burst)| Policy {
            tier_headroom_percent: headroom,
            reserve_authentication_percent: res.0,
            reserve_utility_percent: res.1,
            red_grace_ms: grace,
            small_sender_weekly_limit: small,
            weekly_cap_without_escalation: cap,
            pair_rate_burst: burst,
            ladder: Ladder::new(Tier::LEGACY_LADDER.to_vec()).unwrap(),
            ..Policy::default()
        });
    (
        policy,
        prop_oneof![3 => Just(Tier::Tier50), 1 => Just(Tier::Tier250)],
        proptest::bool::weighted(0.7),
        any::<bool>(),
        proptest::bool::weighted(0.3),
        prop_oneof![Just(1u32), Just(7), Just(80), Just(1_000)],
        proptest::collection::vec((0u64..4 * HOUR, 0u64..120, 0u8..3), 0..80),
        proptest::collection::vec(
            (
                proptest::sample::select(vec![
                    131_050, 131_049, 130_472, 132_015, 130_429, 131_048, 131_056, 131_057, 131_064,
                ]),
                0u64..120,
            ),
            0..4,
        ),
        0u8..3,
        proptest::option::weighted(0.7, proptest::collection::vec(0u64..160, 1..250)),
        1u64..250,
    )
        .prop_map(
            |(policy, tier, path, history, red, mps, before, feedback, category, list, count)| {
                World {
                    policy,
                    tier,
                    path,
                    history,
                    red,
                    mps,
                    before,
                    feedback,
                    category,
                    list,
                    count,
                }
            },
        )
}

fn run(w: World) -> Result<(), TestCaseError> {
    let (engine, clock) = engine_at_t0(w.policy.clone());
    let mut cfg = OrgConfig::new("o", w.tier).with_phone(PHONE, w.mps);
    if w.path {
        cfg.escalation_path = Some(email());
    }
    cfg.has_template_history = w.history;
    if w.red {
        cfg.quality_rating = QualityRating::Red;
    }
    engine.put_org(cfg).unwrap();
    let phone = |r: u64| (5_000 + r).to_string();
    for &(advance, r, c) in &w.before {
        clock.advance(advance / 1_000 + 1);
        send(&engine, &phone(r), category(c));
    }
    for &(code, r) in &w.feedback {
        engine
            .feedback("o", Some(PHONE), Some(&phone(r)), Some("t"), code)
            .unwrap();
    }
    clock.advance(SEC);
    let cat = category(w.category);
    CATEGORY.with(|c| c.set(cat));
    let list: Vec<String> = match &w.list {
        Some(l) => l.iter().map(|&r| phone(r)).collect(),
        None => (0..w.count).map(anon).collect(),
    };
    let refs: Vec<&str> = list.iter().map(String::as_str).collect();
    let audience = match &w.list {
        Some(_) => Audience::Recipients(&refs),
        None => Audience::NewRecipients(w.count),
    };
    let req = PlanRequest {
        category: cat,
        ..marketing(audience)
    };
    let before = state(&engine);
    let plan = engine.plan(&req).unwrap();
    prop_assert_eq!(state(&engine), before, "a plan changes nothing");
    prop_assert_eq!(
        plan.planned() + plan.never.len() as u64 + plan.unplanned,
        list.len() as u64,
        "{:?}",
        plan
    );
    prop_assert!(plan.waves.windows(2).all(|p| p[0].at_ms < p[1].at_ms));
    prop_assert_eq!(plan.completes_at_ms.is_none(), plan.unplanned > 0);
    let now = clock.now_ms();
    prop_assert_eq!(
        plan.allowed_now,
        plan.waves
            .first()
            .filter(|w| w.at_ms == now)
            .map_or(0, |w| w.count)
    );
    let last = follow(&engine, &clock, &plan, &list);
    if let Some(done) = plan.completes_at_ms {
        let last = last.unwrap_or(now);
        prop_assert!(last.abs_diff(done) <= SEC, "done {} vs {}", last, done);
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 1_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// SPEC §2a: a plan followed exactly meets no denial, and completes when it says.
    #[test]
    fn a_plan_followed_exactly_meets_no_denial(w in world()) {
        run(w)?;
    }
}
