//! WhatsApp error codes change later decisions: one test per reaction.

use std::sync::Arc;

use tiergate_core::*;
use tiergate_testkit::{PHONE, engine_at_t0, org};

fn setup(mps: u32) -> (Engine, Arc<ManualClock>) {
    let (engine, clock) = engine_at_t0(Policy::default());
    let mut cfg = org("acme", Tier::Tier10K);
    cfg.phone_numbers[0].throughput_mps = mps;
    cfg.waba_ids = vec!["555".into()];
    cfg.phone_numbers[0].display_phone_number = "+1 555-0100".into();
    engine.put_org(cfg).unwrap();
    (engine, clock)
}

fn send(e: &Engine, r: &str, template: &str, category: Category) -> Decision {
    e.decide(&SendRequest {
        org_id: "acme",
        phone_number_id: PHONE,
        recipient: r,
        recipient_user_id: None,
        template_name: template,
        category,
        idempotency_key: None,
    })
    .unwrap()
}

fn fb(e: &Engine, r: Option<&str>, t: Option<&str>, code: i32) -> Reaction {
    e.feedback("acme", Some(PHONE), r, t, code).unwrap()
}

#[test]
fn throughput_cut_then_recovers() {
    let (e, clock) = setup(80);
    assert_eq!(fb(&e, None, None, 130_429), Reaction::ThroughputCut(40));
    assert_eq!(e.get_org("acme").unwrap().numbers[0].effective_mps, 40);
    // 40 in a burst, then the 41st waits
    for i in 0..40 {
        assert!(
            send(&e, &i.to_string(), "t", Category::Utility).is_allowed(),
            "{i}"
        );
    }
    assert_eq!(
        send(&e, "99", "t", Category::Utility).reason,
        Some(DenyReason::Throughput)
    );
    assert_eq!(fb(&e, None, None, 130_429), Reaction::ThroughputCut(20));
    clock.advance(10_000);
    assert_eq!(e.get_org("acme").unwrap().numbers[0].effective_mps, 25);
    clock.advance(1_000_000);
    assert_eq!(e.get_org("acme").unwrap().numbers[0].effective_mps, 80);
}

#[test]
fn pair_backoff_grows_by_powers_of_four() {
    let (e, clock) = setup(80);
    assert!(send(&e, "7", "t", Category::Utility).is_allowed());
    assert_eq!(
        fb(&e, Some("7"), None, 131_056),
        Reaction::PairBackoff(1_000)
    );
    assert_eq!(
        fb(&e, Some("7"), None, 131_056),
        Reaction::PairBackoff(4_000)
    );
    assert_eq!(
        fb(&e, Some("7"), None, 131_056),
        Reaction::PairBackoff(16_000)
    );
    clock.advance(7_000);
    let d = send(&e, "7", "t", Category::Utility);
    assert_eq!(d.reason, Some(DenyReason::PairRate));
    assert_eq!(d.retry_after_ms, 9_000);
    assert!(
        send(&e, "8", "t", Category::Utility).is_allowed(),
        "other pairs go"
    );
    assert_eq!(e.get_org("acme").unwrap().pair_backoffs, 1);
    clock.advance(9_000);
    assert!(send(&e, "7", "t", Category::Utility).is_allowed());
}

#[test]
fn spam_limit_pauses_the_number_with_backoff() {
    let (e, clock) = setup(80);
    assert_eq!(fb(&e, None, None, 131_048), Reaction::NumberPaused(60_000));
    let d = send(&e, "1", "t", Category::Utility);
    assert_eq!(d.reason, Some(DenyReason::AccountRestricted));
    assert_eq!(d.retry_after_ms, 60_000);
    assert!(
        e.get_org("acme").unwrap().numbers[0]
            .paused_until_ms
            .is_some()
    );
    clock.advance(60_000);
    assert!(send(&e, "1", "t", Category::Utility).is_allowed());
    assert_eq!(fb(&e, None, None, 131_048), Reaction::NumberPaused(120_000));
}

#[test]
fn account_blocked_until_an_admin_clears_it() {
    for code in [368, 131_031] {
        let (e, clock) = setup(80);
        assert_eq!(fb(&e, None, None, code), Reaction::AccountRestricted);
        clock.advance(30 * 86_400_000);
        let d = send(&e, "1", "t", Category::Utility);
        assert_eq!(d.reason, Some(DenyReason::AccountRestricted));
        assert_eq!(d.retry_after_ms, 0);
        assert!(e.get_org("acme").unwrap().account_restricted);
        e.set_account_restricted("acme", false).unwrap();
        assert!(send(&e, "1", "t", Category::Utility).is_allowed());
    }
}

#[test]
fn template_paused_or_disabled() {
    let (e, clock) = setup(80);
    assert_eq!(
        fb(&e, None, None, 132_015),
        Reaction::Incomplete,
        "needs the template"
    );
    assert_eq!(
        fb(&e, None, Some("promo"), 132_015),
        Reaction::TemplatePaused(3 * 3_600_000)
    );
    let d = send(&e, "1", "promo", Category::Marketing);
    assert_eq!(d.reason, Some(DenyReason::TemplatePaused));
    assert_eq!(d.retry_after_ms, 3 * 3_600_000);
    assert_eq!(
        fb(&e, None, Some("promo2"), 132_016),
        Reaction::TemplateDisabled
    );
    clock.advance(3 * 3_600_000);
    assert!(send(&e, "1", "promo", Category::Marketing).is_allowed());
    assert_eq!(
        send(&e, "2", "promo2", Category::Marketing).reason,
        Some(DenyReason::TemplatePaused)
    );
}

#[test]
fn marketing_opt_out_and_cap() {
    let (e, clock) = setup(80);
    assert_eq!(fb(&e, Some("5"), None, 131_050), Reaction::MarketingStopped);
    let d = send(&e, "5", "promo", Category::Marketing);
    assert_eq!(d.reason, Some(DenyReason::RecipientMarketingLimit));
    assert_eq!(d.retry_after_ms, 0);
    assert!(
        send(&e, "5", "receipt", Category::Utility).is_allowed(),
        "utility still goes"
    );
    assert_eq!(
        fb(&e, Some("6"), None, 131_049),
        Reaction::MarketingBackoff(86_400_000)
    );
    clock.advance(1_000);
    let d = send(&e, "6", "promo", Category::Marketing);
    assert_eq!(d.reason, Some(DenyReason::RecipientMarketingLimit));
    assert_eq!(d.retry_after_ms, 86_399_000);
    assert_eq!(e.get_org("acme").unwrap().marketing_blocked_recipients, 2);
}

#[test]
fn a_rejected_report_feeds_back() {
    let (e, _clock) = setup(80);
    let d = send(&e, "9", "t", Category::Utility);
    let r = e
        .report(
            &d.permit.unwrap(),
            SendOutcome::Rejected {
                error_code: 131_056,
            },
        )
        .unwrap();
    assert_eq!(r, Reaction::PairBackoff(1_000));
    assert_eq!(e.get_org("acme").unwrap().pair_backoffs, 1);
}

#[test]
fn ids_map_to_their_org_and_cannot_be_claimed_twice() {
    let (e, _clock) = setup(80);
    let owner = e.lookup_id(IdRef::Waba("555")).unwrap();
    assert_eq!(owner.org_id, "acme");
    let n = e.lookup_id(IdRef::DisplayNumber("15550100")).unwrap();
    assert_eq!(n.phone_number_id.as_deref(), Some(PHONE));
    assert_eq!(
        e.lookup_id(IdRef::PhoneNumberId(PHONE)).unwrap().org_id,
        "acme"
    );
    assert!(e.lookup_id(IdRef::Waba("556")).is_none());
    let mut other = OrgConfig::new("other", Tier::Tier250).with_phone("2002", 0);
    other.waba_ids = vec!["555".into()];
    assert!(matches!(e.put_org(other), Err(EngineError::Invalid(_))));
    assert!(
        e.get_org("other").is_err(),
        "a refused registration leaves nothing"
    );
    // an org re-registered without the WABA releases it
    let mut cfg = OrgConfig::new("acme", Tier::Tier10K).with_phone(PHONE, 80);
    cfg.escalation_path = e.get_org("acme").unwrap().config.escalation_path;
    e.put_org(cfg).unwrap();
    assert!(e.lookup_id(IdRef::Waba("555")).is_none());
}

// ---- 2026 codes (SPEC §1 "2026 codes") ----

#[test]
fn experiment_130472_stops_marketing_to_that_person_for_the_configured_time() {
    let (e, clock) = setup(80);
    let week = Policy::default().experiment_marketing_pause_ms;
    assert_eq!(
        fb(&e, Some("7"), None, 130_472),
        Reaction::MarketingExperiment(week)
    );
    let d = send(&e, "7", "promo", Category::Marketing);
    assert_eq!(d.reason, Some(DenyReason::RecipientMarketingLimit));
    assert_eq!(d.retry_after_ms, week);
    assert!(send(&e, "7", "otp", Category::Utility).is_allowed());
    assert!(send(&e, "8", "promo", Category::Marketing).is_allowed());
    clock.advance(week);
    assert!(send(&e, "7", "promo", Category::Marketing).is_allowed());
    assert_eq!(fb(&e, None, None, 130_472), Reaction::Incomplete);
}

#[test]
fn bsuid_unsupported_131062_changes_nothing() {
    let (e, _) = setup(80);
    let before = e.get_org("acme").unwrap();
    assert_eq!(fb(&e, Some("7"), None, 131_062), Reaction::BsuidUnsupported);
    assert_eq!(e.get_org("acme").unwrap(), before);
}

#[test]
fn marketing_api_required_131063_denies_marketing_until_an_admin_clears_it() {
    let (e, _) = setup(80);
    assert_eq!(fb(&e, None, None, 131_063), Reaction::MarketingApiRequired);
    assert!(e.get_org("acme").unwrap().marketing_api_required);
    let d = send(&e, "7", "promo", Category::Marketing);
    assert_eq!(d.reason, Some(DenyReason::MarketingApiRequired));
    assert_eq!(d.retry_after_ms, 0);
    assert!(send(&e, "8", "otp", Category::Authentication).is_allowed());
    assert!(send(&e, "9", "order", Category::Utility).is_allowed());
    let st = e.set_marketing_api_required("acme", false).unwrap();
    assert!(!st.marketing_api_required);
    assert!(send(&e, "7", "promo", Category::Marketing).is_allowed());
}

#[test]
fn limit_reduced_131064_applies_the_restricted_tier_until_meta_sets_the_next_limit() {
    let (e, clock) = setup(1_000);
    e.request_tier_change("acme", Tier::Tier2K).unwrap();
    assert!(matches!(
        fb(&e, None, None, 131_064),
        Reaction::LimitReduced(_)
    ));
    let st = e.get_org("acme").unwrap();
    assert!(st.limit_reduced);
    // One rung down the ladder (`restricted_tier_steps`), as for a quality restriction.
    assert_eq!(st.usage.tier, Tier::Tier250);
    for i in 0..250 {
        clock.advance(10);
        assert!(send(&e, &i.to_string(), "t", Category::Utility).is_allowed());
    }
    clock.advance(10);
    let d = send(&e, "250", "t", Category::Utility);
    assert_eq!(d.reason, Some(DenyReason::TierLimit));
    assert!(d.retry_after_ms > 0, "{d:?}");
    // Meta's next limit (a webhook's tier, or an admin) ends the reduction.
    e.request_tier_change("acme", Tier::Tier2K).unwrap();
    assert!(!e.get_org("acme").unwrap().limit_reduced);
    assert!(send(&e, "250", "t", Category::Utility).is_allowed());
}

#[test]
fn maintenance_131057_pauses_the_number_without_a_strike() {
    let (e, clock) = setup(80);
    let ms = Policy::default().maintenance_pause_ms;
    assert_eq!(fb(&e, None, None, 131_057), Reaction::NumberMaintenance(ms));
    let d = send(&e, "7", "t", Category::Utility);
    assert_eq!(d.reason, Some(DenyReason::AccountRestricted));
    assert_eq!(d.retry_after_ms, ms);
    // Twice does not double it (not a spam strike).
    assert_eq!(fb(&e, None, None, 131_057), Reaction::NumberMaintenance(ms));
    assert_eq!(send(&e, "7", "t", Category::Utility).retry_after_ms, ms);
    clock.advance(ms);
    assert!(send(&e, "7", "t", Category::Utility).is_allowed());
    // A later spam strike still starts at the first step.
    assert_eq!(
        fb(&e, None, None, 131_048),
        Reaction::NumberPaused(Policy::default().number_pause_ms)
    );
}

#[test]
fn held_for_quality_assessment_shows_a_pacing_review_and_keeps_the_send_counted() {
    let (e, clock) = setup(80);
    assert!(send(&e, "7", "t", Category::Utility).is_allowed());
    let fact = Fact::new(0, "acme", Change::PacingHeld);
    e.execute(&Command::Apply { fact }).unwrap();
    let st = e.get_org("acme").unwrap();
    assert!(st.pacing_review);
    assert_eq!(st.pacing_held_at_ms, Some(clock.now_ms()));
    assert_eq!(
        st.usage.unique_recipients_24h, 1,
        "a held send stays counted"
    );
    clock.advance(Policy::default().pacing_review_ms);
    assert!(!e.get_org("acme").unwrap().pacing_review);
}

#[test]
fn a_webhook_delivery_is_applied_once() {
    let (e, clock) = setup(80);
    let delivery = |key: &str| {
        let fact = Fact::new(0, "acme", Change::WebhookDelivery { key: key.into() });
        e.execute(&Command::Apply { fact }).unwrap()
    };
    assert_eq!(
        delivery("wamid.1/failed/131048"),
        Outcome::Delivery { first: true }
    );
    assert_eq!(
        delivery("wamid.1/failed/131048"),
        Outcome::Delivery { first: false }
    );
    assert_eq!(
        delivery("wamid.2/failed/131048"),
        Outcome::Delivery { first: true }
    );
    clock.advance(Policy::default().webhook_dedupe_ttl_ms);
    assert_eq!(
        delivery("wamid.1/failed/131048"),
        Outcome::Delivery { first: true }
    );
    let long = "k".repeat(MAX_DELIVERY_KEY_LEN + 1);
    let fact = Fact::new(0, "acme", Change::WebhookDelivery { key: long });
    assert!(matches!(
        e.execute(&Command::Apply { fact }),
        Err(EngineError::Invalid(_))
    ));
}

#[test]
fn limit_reduced_says_when_a_slot_of_the_reduced_limit_frees() {
    let (e, clock) = engine_at_t0(Policy::default());
    e.put_org(org("acme", Tier::Tier2K)).unwrap();
    // 300 recipients, one a second: over the 250 that 131064 steps 2K down to
    for i in 0..300 {
        assert!(send(&e, &(1_000 + i).to_string(), "t", Category::Utility).is_allowed());
        clock.advance(1_000);
    }
    // now = T0 + 300 s; the window must shed 51 recipients, the last of them sent at T0 + 50 s
    let wait = 86_400_000 - 250_000;
    assert_eq!(fb(&e, None, None, 131_064), Reaction::LimitReduced(wait));
    assert_eq!(
        advise(131_064, Reaction::LimitReduced(wait)),
        (Advice::RetryAfter, wait)
    );
    let o = e.get_org("acme").unwrap();
    assert!(o.limit_reduced);
    assert_eq!(o.usage.tier_limit, Some(250));
    clock.advance(wait - 1);
    assert_eq!(
        send(&e, "9", "t", Category::Utility).reason,
        Some(DenyReason::TierLimit)
    );
    clock.advance(1);
    assert!(send(&e, "9", "t", Category::Utility).is_allowed());
    // under the reduced limit already: a slot is free now
    let (e, _clock) = setup(80);
    assert_eq!(fb(&e, None, None, 131_064), Reaction::LimitReduced(0));
}

#[test]
fn a_tier_limit_over_a_reduced_limit_says_when_the_excess_has_left() {
    let (e, clock) = setup(1_000);
    e.request_tier_change("acme", Tier::Tier2K).unwrap();
    // 300 recipients, 1 s apart.
    let start = clock.now_ms();
    for i in 0..300u64 {
        assert!(send(&e, &i.to_string(), "t", Category::Utility).is_allowed());
        clock.advance(1_000);
    }
    fb(&e, None, None, 131_064);
    // Reduced to 250: a slot frees when the 51st-oldest recipient (sent at start + 50 s) leaves.
    let d = send(&e, "999", "t", Category::Utility);
    assert_eq!(d.reason, Some(DenyReason::TierLimit));
    let frees_at = start + 50_000 + Policy::default().tier_window_ms;
    assert_eq!(d.retry_after_ms, frees_at - clock.now_ms());
    clock.advance(d.retry_after_ms - 1);
    assert_eq!(
        send(&e, "999", "t", Category::Utility).reason,
        Some(DenyReason::TierLimit)
    );
    clock.advance(1);
    assert!(send(&e, "999", "t", Category::Utility).is_allowed());
}
