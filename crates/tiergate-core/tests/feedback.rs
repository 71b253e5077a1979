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
