//! One test per rule of SPEC §2, through the public API with a manual clock.

use std::sync::Arc;

use tiergate_core::*;
use tiergate_testkit::{DAY, HOUR, PHONE, SEC, T0, email, engine_at_t0};

struct H {
    engine: Engine,
    clock: Arc<ManualClock>,
}

fn harness(policy: Policy, org: OrgConfig) -> H {
    let (engine, clock) = engine_at_t0(policy);
    engine.put_org(org).unwrap();
    H { engine, clock }
}

/// Fast numbers so throughput never gets in the way unless a test wants it.
fn org(tier: Tier) -> OrgConfig {
    tiergate_testkit::org("acme", tier)
}

impl H {
    fn send(&self, recipient: u64) -> Decision {
        self.send_t(recipient, "order_update")
    }

    fn send_t(&self, recipient: u64, template: &str) -> Decision {
        self.send_as(PHONE, recipient, template)
    }

    /// A send from `phone` 10 ms after the previous event.
    fn send_from(&self, phone: &str, recipient: u64) -> Decision {
        self.clock.advance(10);
        self.send_as(phone, recipient, "t")
    }

    fn send_as(&self, phone: &str, recipient: u64, template: &str) -> Decision {
        let r = recipient.to_string();
        self.engine
            .decide(&SendRequest {
                org_id: "acme",
                phone_number_id: phone,
                recipient: &r,
                recipient_user_id: None,
                template_name: template,
                category: Category::Utility,
                idempotency_key: None,
            })
            .unwrap()
    }

    /// Sends to `n` distinct new recipients starting at `from`, 10 ms apart; all must pass.
    fn fill(&self, from: u64, n: u64) {
        for i in 0..n {
            self.clock.advance(10);
            let d = self.send(from + i);
            assert!(d.is_allowed(), "send {i} denied: {d:?}");
        }
    }
}

fn denied(d: &Decision, reason: DenyReason) {
    assert_eq!(d.verdict, Verdict::Deny, "{d:?}");
    assert_eq!(d.reason, Some(reason), "{d:?}");
}

#[test]
fn malformed_requests_are_errors_not_decisions() {
    let h = harness(Policy::default(), org(Tier::Tier250));
    let base = SendRequest {
        org_id: "acme",
        phone_number_id: PHONE,
        recipient: "4915112345678",
        recipient_user_id: None,
        template_name: "order_update",
        category: Category::Utility,
        idempotency_key: None,
    };
    for (req, field) in [
        (SendRequest { org_id: "", ..base }, "org_id"),
        (
            SendRequest {
                phone_number_id: "abc",
                ..base
            },
            "phone_number_id",
        ),
        (
            SendRequest {
                recipient: "+4915",
                recipient_user_id: None,
                ..base
            },
            "recipient",
        ),
        (
            SendRequest {
                template_name: "Bad Name",
                ..base
            },
            "template_name",
        ),
        (
            SendRequest {
                idempotency_key: Some("has space"),
                ..base
            },
            "idempotency_key",
        ),
    ] {
        match h.engine.decide(&req) {
            Err(EngineError::Invalid(e)) => assert_eq!(e.field, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn unknown_org_or_number_is_not_found_and_creates_no_state() {
    let h = harness(Policy::default(), org(Tier::Tier250));
    let req = SendRequest {
        org_id: "ghost",
        phone_number_id: PHONE,
        recipient: "1",
        recipient_user_id: None,
        template_name: "t",
        category: Category::Utility,
        idempotency_key: None,
    };
    assert!(matches!(
        h.engine.decide(&req),
        Err(EngineError::UnknownOrg(_))
    ));
    assert_eq!(h.engine.org_count(), 1);
    let req = SendRequest {
        org_id: "acme",
        phone_number_id: "999",
        ..req
    };
    assert!(matches!(
        h.engine.decide(&req),
        Err(EngineError::UnknownPhoneNumber { .. })
    ));
}

#[test]
fn account_restricted_denies_first() {
    let h = harness(Policy::default(), org(Tier::Tier250));
    h.engine.set_account_restricted("acme", true).unwrap();
    h.engine
        .pause_template("acme", "order_update", None)
        .unwrap();
    denied(&h.send(1), DenyReason::AccountRestricted);
    h.engine.set_account_restricted("acme", false).unwrap();
    denied(&h.send(1), DenyReason::TemplatePaused);
}

#[test]
fn paused_template_retries_when_the_pause_ends() {
    let h = harness(Policy::default(), org(Tier::Tier250));
    h.engine
        .pause_template("acme", "promo", Some(T0 + 3 * HOUR))
        .unwrap();
    let d = h.send_t(1, "promo");
    denied(&d, DenyReason::TemplatePaused);
    assert_eq!(d.retry_after_ms, 3 * HOUR);
    assert!(
        h.send_t(2, "order_update").is_allowed(),
        "other templates go"
    );
    h.clock.advance(3 * HOUR);
    assert!(h.send_t(1, "promo").is_allowed());
    h.engine.pause_template("acme", "promo", None).unwrap();
    let d = h.send_t(3, "promo");
    denied(&d, DenyReason::TemplatePaused);
    assert_eq!(d.retry_after_ms, 0, "disabled: waiting does not help");
    h.engine.reinstate_template("acme", "promo").unwrap();
    assert!(h.send_t(3, "promo").is_allowed());
}

#[test]
fn start_gate_without_escalation_path_and_history() {
    let mut cfg = org(Tier::Tier250);
    cfg.escalation_path = None;
    let h = harness(Policy::default(), cfg);
    let d = h.send(1);
    denied(&d, DenyReason::EscalationPathRequired);
    assert_eq!(d.retry_after_ms, 0);
    assert_eq!(h.engine.get_org("acme").unwrap().usage.templates_7d, 0);
    h.engine.set_escalation_path("acme", email()).unwrap();
    assert!(h.send(1).is_allowed());
    // with history, clearing the path no longer stops sending (below the weekly cap)
    h.engine.clear_escalation_path("acme").unwrap();
    h.clock.advance(10);
    assert!(h.send(2).is_allowed());
}

#[test]
fn weekly_cap_without_escalation_path() {
    let policy = Policy {
        weekly_cap_without_escalation: 20,
        small_sender_weekly_limit: 20,
        auto_upgrade: false,
        ..Policy::default()
    };
    let mut cfg = org(Tier::Tier250);
    cfg.escalation_path = None;
    cfg.has_template_history = true;
    let h = harness(policy, cfg);
    let first = T0 + 10;
    h.fill(1, 20);
    let d = h.send(100);
    denied(&d, DenyReason::WeeklyCapWithoutEscalation);
    // the 20th most recent send is the first one: the cap frees when it is 7 days old
    assert_eq!(d.retry_after_ms, first + 7 * DAY - h.clock.now_ms());
    h.clock.advance_to(first + 7 * DAY - 1);
    denied(&h.send(100), DenyReason::WeeklyCapWithoutEscalation);
    h.clock.advance(1);
    assert!(h.send(100).is_allowed());
    // a path lifts the cap at once
    denied(&h.send(101), DenyReason::WeeklyCapWithoutEscalation);
    h.engine.set_escalation_path("acme", email()).unwrap();
    assert!(h.send(101).is_allowed());
}

#[test]
fn tier_window_counts_unique_recipients_with_exact_retry() {
    let policy = Policy {
        auto_upgrade: false,
        ..Policy::default()
    };
    let h = harness(policy, org(Tier::Tier250));
    h.fill(1, 250);
    let d = h.send(1_000);
    denied(&d, DenyReason::TierLimit);
    assert_eq!(d.usage.unique_recipients_24h, 250);
    assert_eq!(d.usage.tier_limit, Some(250));
    // the oldest recipient (sent at T0 + 10) leaves the window 24 h later
    assert_eq!(d.retry_after_ms, T0 + 10 + DAY - h.clock.now_ms());
    // a recipient already counted does not count again
    h.clock.advance(6 * SEC);
    let d = h.send(5);
    assert!(d.is_allowed(), "{d:?}");
    assert_eq!(d.usage.unique_recipients_24h, 250);
    // just before the oldest leaves: still full; at that moment: one slot
    h.clock.advance_to(T0 + 10 + DAY - 1);
    denied(&h.send(1_000), DenyReason::TierLimit);
    h.clock.advance(1);
    assert!(h.send(1_000).is_allowed());
    denied(&h.send(1_001), DenyReason::TierLimit);
}

#[test]
fn headroom_reserves_part_of_the_tier() {
    let policy = Policy {
        tier_headroom_percent: 20,
        auto_upgrade: false,
        ..Policy::default()
    };
    let h = harness(policy, org(Tier::Tier250));
    h.fill(1, 200);
    let d = h.send(1_000);
    denied(&d, DenyReason::TierLimit);
    assert_eq!(d.usage.tier_limit, Some(200));
}

fn red_org_policy() -> Policy {
    Policy {
        small_sender_weekly_limit: 100,
        auto_upgrade: false,
        ..Policy::default()
    }
}

#[test]
fn red_grace_then_restricted_tier() {
    // TIER_2K restricted one step down = TIER_250.
    let h = harness(red_org_policy(), org(Tier::Tier2K));
    h.fill(1, 300); // not a small sender any more (> 100 a week)
    h.engine
        .set_quality_rating("acme", QualityRating::Red)
        .unwrap();
    let flagged = h.clock.now_ms();
    h.clock.advance_to(flagged + 7 * DAY - 3_000);
    // still within the grace: the 300 recipients expired, new ones go past 250
    h.fill(10_000, 260);
    let st = h.engine.get_org("acme").unwrap();
    assert!(!st.restricted);
    assert_eq!(st.flagged_since_ms, Some(flagged));
    h.clock.advance_to(flagged + 7 * DAY);
    let st = h.engine.get_org("acme").unwrap();
    assert!(st.restricted);
    let d = h.send(20_000);
    denied(&d, DenyReason::QualityRestricted);
    assert_eq!(d.usage.tier, Tier::Tier250);
    assert_eq!(d.usage.tier_limit, Some(250));
    assert!(!d.usage.passthrough);
    assert!(d.retry_after_ms > 0);
    // repeat recipients are still fine
    h.clock.advance(6 * SEC);
    assert!(h.send(10_000).is_allowed());
    // the rating recovers: the normal tier applies again
    h.engine
        .set_quality_rating("acme", QualityRating::Yellow)
        .unwrap();
    assert!(h.send(20_000).is_allowed());
    assert_eq!(h.engine.get_org("acme").unwrap().flagged_since_ms, None);
}

#[test]
fn small_senders_pass_through_quality_restriction() {
    let policy = Policy {
        small_sender_weekly_limit: 1_000,
        auto_upgrade: false,
        ..Policy::default()
    };
    // TIER_10K → restricted TIER_2K; sending 2,000 recipients over a week would exceed 1,000
    let h = harness(policy, org(Tier::Tier10K));
    h.engine
        .set_quality_rating("acme", QualityRating::Red)
        .unwrap();
    h.clock.advance(7 * DAY);
    h.fill(1, 999);
    // the 1,000th template of the week still passes through
    let d = h.send(5_000);
    assert!(d.is_allowed());
    assert!(d.usage.passthrough);
    // now 1,000 in 7 days: the next one is not a small sender, restriction applies (2K limit
    // not reached yet, so it is allowed but no longer pass-through)
    let d = h.send(5_001);
    assert!(d.is_allowed());
    assert!(!d.usage.passthrough);
    assert_eq!(d.usage.tier, Tier::Tier2K);
}

#[test]
fn restriction_bites_only_when_not_small_sender() {
    // At TIER_250 on the legacy ladder, restricted = TIER_50.
    let policy = Policy {
        small_sender_weekly_limit: 60,
        auto_upgrade: false,
        ladder: Ladder::new(Tier::LEGACY_LADDER.to_vec()).unwrap(),
        ..Policy::default()
    };
    let h = harness(policy, org(Tier::Tier250));
    h.engine
        .set_quality_rating("acme", QualityRating::Red)
        .unwrap();
    h.clock.advance(7 * DAY);
    // 59 sends: with the 60th counted still ≤ 60, pass-through applies and 250 is the limit
    h.fill(1, 59);
    let d = h.send(100);
    assert!(d.is_allowed() && d.usage.passthrough, "{d:?}");
    // 60 in the week: no longer small; 60 recipients ≥ 50 → restricted
    let d = h.send(101);
    denied(&d, DenyReason::QualityRestricted);
    assert_eq!(d.usage.tier_limit, Some(50));
}

#[test]
fn tier_increase_held_without_path_then_applied() {
    let mut cfg = org(Tier::Tier250);
    cfg.escalation_path = None;
    cfg.has_template_history = true;
    let h = harness(Policy::default(), cfg);
    let c = h.engine.request_tier_change("acme", Tier::Tier2K).unwrap();
    assert!(!c.applied);
    assert_eq!(c.tier, Tier::Tier250);
    assert_eq!(c.pending_tier, Some(Tier::Tier2K));
    assert_eq!(c.held_reason, Some(DenyReason::EscalationPathRequired));
    // a decrease applies at once and keeps the pending increase
    let c = h.engine.request_tier_change("acme", Tier::Tier50).unwrap();
    assert!(c.applied);
    assert_eq!(c.tier, Tier::Tier50);
    assert_eq!(c.pending_tier, Some(Tier::Tier2K));
    let st = h.engine.set_escalation_path("acme", email()).unwrap();
    assert_eq!(st.config.tier, Tier::Tier2K);
    assert_eq!(st.pending_tier, None);
    let c = h.engine.request_tier_change("acme", Tier::Tier10K).unwrap();
    assert!(c.applied);
}

#[test]
fn put_org_increase_passes_the_same_gate() {
    let mut cfg = org(Tier::Tier250);
    cfg.escalation_path = None;
    let h = harness(Policy::default(), cfg.clone());
    cfg.tier = Tier::Tier10K;
    let st = h.engine.put_org(cfg).unwrap();
    assert_eq!(st.config.tier, Tier::Tier250);
    assert_eq!(st.pending_tier, Some(Tier::Tier10K));
}

#[test]
fn the_tier_rises_only_when_meta_says_so() {
    // The default: an org at TIER_250 that used half its limit is eligible, and that is all.
    let h = harness(Policy::default(), org(Tier::Tier250));
    h.fill(1, 124);
    assert!(!h.engine.get_org("acme").unwrap().upgrade_eligible);
    h.fill(125, 1);
    let eligible_at = h.clock.now_ms();
    let st = h.engine.get_org("acme").unwrap();
    assert!(st.upgrade_eligible);
    assert_eq!(st.upgrade_eligible_since_ms, Some(eligible_at));
    assert_eq!(st.config.tier, Tier::Tier250);
    h.fill(126, 125);
    // The 251st recipient: WhatsApp would reject it, so the governor does.
    h.clock.advance(10);
    denied(&h.send(251), DenyReason::TierLimit);
    let st = h.engine.get_org("acme").unwrap();
    assert_eq!(
        st.upgrade_eligible_since_ms,
        Some(eligible_at),
        "since stays"
    );
    // Meta's word (webhook or admin) raises it, through the escalation gate.
    h.engine.request_tier_change("acme", Tier::Tier2K).unwrap();
    h.clock.advance(10);
    assert!(h.send(251).is_allowed());
    // RED orgs are not eligible.
    let h = harness(Policy::default(), org(Tier::Tier250));
    h.engine
        .set_quality_rating("acme", QualityRating::Red)
        .unwrap();
    h.fill(1, 200);
    assert!(!h.engine.get_org("acme").unwrap().upgrade_eligible);
}

#[test]
fn automatic_upgrade_is_an_opt_in_for_what_if_runs() {
    let what_if = || Policy {
        auto_upgrade: true,
        ..Policy::default()
    };
    let h = harness(what_if(), org(Tier::Tier250));
    h.fill(1, 125);
    // the next decision sees 125 ≥ 250 / 2 in 7 days
    h.clock.advance(10);
    let d = h.send(500);
    assert_eq!(d.usage.tier, Tier::Tier2K);
    // without a path it is held instead
    let mut cfg = org(Tier::Tier250);
    cfg.org_id = "acme".into();
    cfg.escalation_path = None;
    cfg.has_template_history = true;
    let h = harness(what_if(), cfg);
    h.fill(1, 126);
    let st = h.engine.get_org("acme").unwrap();
    assert_eq!(st.config.tier, Tier::Tier250);
    assert_eq!(st.pending_tier, Some(Tier::Tier2K));
    // RED orgs are not eligible
    let h = harness(what_if(), org(Tier::Tier250));
    h.engine
        .set_quality_rating("acme", QualityRating::Red)
        .unwrap();
    h.fill(1, 200);
    assert_eq!(h.engine.get_org("acme").unwrap().config.tier, Tier::Tier250);
}

#[test]
fn appeal_approved_clears_red_and_restriction() {
    let h = harness(red_org_policy(), org(Tier::Tier2K));
    h.fill(1, 300);
    h.engine
        .set_quality_rating("acme", QualityRating::Red)
        .unwrap();
    h.clock.advance(7 * DAY);
    assert!(h.engine.get_org("acme").unwrap().restricted);
    let a = h.engine.file_appeal("acme", "we added a web form").unwrap();
    assert_eq!(a.status, AppealStatus::Pending);
    assert!(matches!(
        h.engine.file_appeal("acme", "again"),
        Err(EngineError::AppealConflict(_))
    ));
    let rejected = h.engine.resolve_appeal(&a.appeal_id, false).unwrap();
    assert_eq!(rejected.status, AppealStatus::Rejected);
    assert!(
        h.engine.get_org("acme").unwrap().restricted,
        "rejection changes nothing"
    );
    assert!(h.engine.resolve_appeal(&a.appeal_id, true).is_err());
    let b = h.engine.file_appeal("acme", "more evidence").unwrap();
    let ok = h.engine.resolve_appeal(&b.appeal_id, true).unwrap();
    assert_eq!(ok.status, AppealStatus::Approved);
    let st = h.engine.get_org("acme").unwrap();
    assert!(!st.restricted);
    assert_eq!(st.flagged_since_ms, None);
    assert_ne!(st.config.quality_rating, QualityRating::Red);
    assert_eq!(st.appeal.unwrap().appeal_id, b.appeal_id);
    let unknown: AppealId = "acme:appeal:99".parse().unwrap();
    assert!(matches!(
        h.engine.resolve_appeal(&unknown, true),
        Err(EngineError::UnknownAppeal(_))
    ));
}

#[test]
fn throughput_per_phone_number() {
    let cfg = OrgConfig::new("acme", Tier::Tier10K)
        .with_phone(PHONE, 2)
        .with_escalation(email());
    let h = harness(Policy::default(), cfg);
    assert!(h.send(1).is_allowed());
    assert!(h.send(2).is_allowed());
    let d = h.send(3);
    denied(&d, DenyReason::Throughput);
    assert_eq!(d.retry_after_ms, 500);
    h.clock.advance(500);
    assert!(h.send(3).is_allowed());
}

/// `policy.throughput_burst_percent = 0`: sends go one emission interval apart, so no second
/// holds more than the number's rate (at the default, a quiet number's first second may hold
/// almost twice as many).
#[test]
fn throughput_without_burst_keeps_every_second_at_the_rate() {
    let most_in_a_second = |burst_percent: u8| {
        let cfg = OrgConfig::new("acme", Tier::Tier10K)
            .with_phone(PHONE, 20)
            .with_escalation(email());
        let policy = Policy {
            throughput_burst_percent: burst_percent,
            ..Policy::default()
        };
        let h = harness(policy, cfg);
        let mut sent = Vec::new();
        let mut r = 0;
        while sent.len() < 100 {
            let d = h.send(r);
            if d.is_allowed() {
                sent.push(h.clock.now_ms());
                r += 1;
            } else {
                denied(&d, DenyReason::Throughput);
                h.clock.advance(d.retry_after_ms);
            }
        }
        sent.iter()
            .map(|&a| sent.iter().filter(|&&b| b >= a && b < a + SEC).count())
            .max()
            .unwrap_or(0)
    };
    assert_eq!(most_in_a_second(100), 39);
    assert_eq!(most_in_a_second(0), 20);
}

#[test]
fn pair_rate_per_recipient() {
    let h = harness(Policy::default(), org(Tier::Tier250));
    assert!(h.send(1).is_allowed());
    let d = h.send(1);
    denied(&d, DenyReason::PairRate);
    assert_eq!(d.retry_after_ms, 6 * SEC);
    h.clock.advance(6 * SEC);
    assert!(h.send(1).is_allowed());
}

#[test]
fn idempotency_returns_the_first_decision_and_counts_once() {
    let h = harness(Policy::default(), org(Tier::Tier250));
    let req = SendRequest {
        org_id: "acme",
        phone_number_id: PHONE,
        recipient: "7",
        recipient_user_id: None,
        template_name: "t",
        category: Category::Utility,
        idempotency_key: Some("order-1"),
    };
    let a = h.engine.decide(&req).unwrap();
    h.clock.advance(HOUR);
    let b = h.engine.decide(&req).unwrap();
    assert!(b.replayed && !a.replayed);
    assert_eq!(
        a,
        Decision {
            replayed: false,
            ..b
        }
    );
    assert_eq!(h.engine.get_org("acme").unwrap().usage.templates_7d, 1);
    // past the TTL it is a new send
    h.clock.advance(DAY);
    let c = h.engine.decide(&req).unwrap();
    assert_ne!(c.permit, a.permit);
    assert_eq!(h.engine.get_org("acme").unwrap().usage.templates_7d, 2);
}

#[test]
fn not_sent_gives_the_slot_back_once() {
    let policy = Policy {
        auto_upgrade: false,
        ..Policy::default()
    };
    let h = harness(policy, org(Tier::Tier250));
    h.fill(1, 249);
    h.clock.advance(10);
    let last = h.send(999);
    assert!(last.is_allowed());
    denied(&h.send(1_000), DenyReason::TierLimit);
    let permit = last.permit.clone().unwrap();
    h.engine.report(&permit, SendOutcome::NotSent).unwrap();
    assert!(matches!(
        h.engine.report(&permit, SendOutcome::NotSent),
        Err(EngineError::PermitAlreadyReported(_))
    ));
    let st = h.engine.get_org("acme").unwrap();
    assert_eq!(st.usage.unique_recipients_24h, 249);
    assert_eq!(st.usage.templates_7d, 249);
    assert!(h.send(1_000).is_allowed());
    // a SENT report keeps the count
    h.clock.advance(6 * SEC);
    let p = h.send(2).permit.unwrap();
    h.engine.report(&p, SendOutcome::Sent).unwrap();
    assert_eq!(h.engine.get_org("acme").unwrap().usage.templates_7d, 251);
    let bogus: Permit = "acme:123456".parse().unwrap();
    assert!(matches!(
        h.engine.report(&bogus, SendOutcome::Sent),
        Err(EngineError::UnknownPermit(_))
    ));
}

#[test]
fn refund_of_a_repeat_send_restores_the_previous_time() {
    let h = harness(Policy::default(), org(Tier::Tier250));
    assert!(h.send(1).is_allowed());
    h.clock.advance(HOUR);
    let again = h.send(1);
    assert!(again.is_allowed());
    h.engine
        .report(&again.permit.unwrap(), SendOutcome::NotSent)
        .unwrap();
    // the recipient now leaves the window 24 h after the *first* send
    h.clock.advance_to(T0 + DAY);
    assert_eq!(
        h.engine
            .get_org("acme")
            .unwrap()
            .usage
            .unique_recipients_24h,
        0
    );
}

#[test]
fn phone_number_scope_keeps_a_window_per_number() {
    let policy = Policy {
        tier_scope: TierScope::PhoneNumber,
        auto_upgrade: false,
        ..Policy::default()
    };
    let cfg = OrgConfig::new("acme", Tier::Tier50)
        .with_phone("1", 1_000)
        .with_phone("2", 1_000)
        .with_escalation(email());
    let h = harness(policy, cfg);
    let send = |phone: &str, r: u64| h.send_from(phone, r);
    for i in 0..50 {
        assert!(send("1", i).is_allowed());
    }
    denied(&send("1", 1_000), DenyReason::TierLimit);
    for i in 0..50 {
        assert!(send("2", 100 + i).is_allowed());
    }
    denied(&send("2", 1_000), DenyReason::TierLimit);
}

#[test]
fn org_scope_shares_the_window_between_numbers() {
    let policy = Policy {
        auto_upgrade: false,
        ..Policy::default()
    };
    let cfg = OrgConfig::new("acme", Tier::Tier50)
        .with_phone("1", 1_000)
        .with_phone("2", 1_000)
        .with_escalation(email());
    let h = harness(policy, cfg);
    for i in 0..50u64 {
        let phone = if i % 2 == 0 { "1" } else { "2" };
        assert!(h.send_from(phone, i).is_allowed());
    }
    let d = h.send_from("2", 1_000);
    denied(&d, DenyReason::TierLimit);
}

#[test]
fn bad_org_config_changes_nothing() {
    let h = harness(Policy::default(), org(Tier::Tier250));
    let mut bad = org(Tier::Tier2K);
    bad.phone_numbers.push(PhoneNumberConfig {
        phone_number_id: "12x".into(),
        display_phone_number: String::new(),
        throughput_mps: 0,
    });
    assert!(matches!(
        h.engine.put_org(bad),
        Err(EngineError::Invalid(_))
    ));
    let st = h.engine.get_org("acme").unwrap();
    assert_eq!(st.config.tier, Tier::Tier250);
    assert_eq!(st.config.phone_numbers.len(), 1);
    let mut too_fast = org(Tier::Tier250);
    too_fast.phone_numbers[0].throughput_mps = 5_000;
    assert!(h.engine.put_org(too_fast).is_err());
}

#[test]
fn time_never_runs_backwards_for_an_org() {
    // A SystemClock that steps back (NTP) must not corrupt windows: the engine clamps.
    struct Steps(std::sync::Mutex<Vec<u64>>);
    impl Clock for Steps {
        fn now_ms(&self) -> u64 {
            let mut v = self.0.lock().unwrap();
            if v.len() > 1 { v.remove(0) } else { v[0] }
        }
    }
    let clock = Arc::new(Steps(std::sync::Mutex::new(vec![
        T0,
        T0,
        T0 + 10_000,
        T0 + 5_000,
        T0 + 20_000,
    ])));
    let engine = Engine::new(Policy::default(), clock).unwrap();
    engine.put_org(org(Tier::Tier250)).unwrap();
    for r in ["1", "2", "3"] {
        let d = engine
            .decide(&SendRequest {
                org_id: "acme",
                phone_number_id: PHONE,
                recipient: r,
                recipient_user_id: None,
                template_name: "t",
                category: Category::Utility,
                idempotency_key: None,
            })
            .unwrap();
        assert!(d.is_allowed());
    }
}

// ---- Recipients (2026): phones, BSUIDs and parent BSUIDs are one person ----

const SAM_PHONE: &str = "16505551234";
const SAM: &str = "US.13491208655302741918";
const SAM_PARENT: &str = "US.ENT.11815799212886844830";

impl H {
    /// A send naming `recipient` and/or `user_id`, 10 ms after the previous event.
    fn send_ids(&self, recipient: &str, user_id: Option<&str>) -> Decision {
        self.clock.advance(10);
        self.engine
            .decide(&SendRequest {
                org_id: "acme",
                phone_number_id: PHONE,
                recipient,
                recipient_user_id: user_id,
                template_name: "t",
                category: Category::Utility,
                idempotency_key: None,
            })
            .unwrap()
    }

    fn window(&self) -> u64 {
        self.engine
            .get_org("acme")
            .unwrap()
            .usage
            .unique_recipients_24h
    }
}

#[test]
fn a_send_with_both_ids_links_them_and_the_person_counts_once() {
    let h = harness(Policy::default(), org(Tier::Tier250));
    assert!(h.send_ids(SAM_PHONE, Some(SAM)).is_allowed());
    assert_eq!(h.window(), 1);
    // The same person by BSUID alone, by parent BSUID in `recipient`: the same pair cell…
    let d = h.send_ids("", Some(SAM));
    assert_eq!(d.reason, Some(DenyReason::PairRate), "{d:?}");
    h.clock.advance(6_000);
    // …and the same window entry.
    assert!(h.send_ids("", Some(SAM)).is_allowed());
    assert_eq!(h.window(), 1);
    // A parent BSUID is learned when a send pairs it with a known id.
    h.clock.advance(6_000);
    assert!(h.send_ids(SAM_PARENT, Some(SAM)).is_allowed());
    h.clock.advance(6_000);
    assert!(h.send_ids(SAM_PARENT, None).is_allowed());
    assert_eq!(h.window(), 1, "one person, whichever id");
    // Another BSUID is another person.
    assert!(h.send_ids("", Some("US.40917733529105862204")).is_allowed());
    assert_eq!(h.window(), 2);
}

#[test]
fn a_link_learned_late_never_frees_a_slot_whatsapp_still_counts() {
    let h = harness(Policy::default(), org(Tier::Tier250));
    assert!(h.send_ids("", Some(SAM)).is_allowed());
    assert!(h.send_ids(SAM_PHONE, None).is_allowed());
    assert_eq!(h.window(), 2, "not known to be one person yet");
    h.clock.advance(6_000);
    assert!(h.send_ids(SAM_PHONE, Some(SAM)).is_allowed());
    // The BSUID's old entry stays until it leaves the window (conservative), but from now on the
    // BSUID counts under the phone.
    assert_eq!(h.window(), 2);
    h.clock.advance(DAY - 5_000);
    assert!(h.send_ids("", Some(SAM)).is_allowed());
    assert_eq!(h.window(), 1);
}

#[test]
fn webhooks_link_ids_and_rename_a_bsuid() {
    let h = harness(Policy::default(), org(Tier::Tier250));
    assert!(h.send_ids(SAM_PHONE, None).is_allowed());
    let apply = |change: Change| {
        h.engine
            .execute(&Command::Apply {
                fact: Fact::new(0, "acme", change),
            })
            .unwrap()
    };
    apply(Change::RecipientIds {
        phone: SAM_PHONE.into(),
        user_ids: vec![SAM.into(), SAM_PARENT.into()],
    });
    h.clock.advance(6_000);
    assert!(h.send_ids("", Some(SAM_PARENT)).is_allowed());
    assert_eq!(h.window(), 1);
    // user_id_update: the new BSUID is the same person.
    let new = "US.40917733529105862204";
    apply(Change::UserIdChanged {
        previous: SAM.into(),
        current: new.into(),
    });
    h.clock.advance(6_000);
    assert!(h.send_ids("", Some(new)).is_allowed());
    assert_eq!(h.window(), 1);
    // A marketing opt-out reported under the BSUID stops marketing to the phone too.
    h.engine
        .feedback("acme", Some(PHONE), Some(new), None, 131_050)
        .unwrap();
    h.clock.advance(6_000);
    let d = h
        .engine
        .decide(&SendRequest {
            org_id: "acme",
            phone_number_id: PHONE,
            recipient: SAM_PHONE,
            recipient_user_id: None,
            template_name: "promo",
            category: Category::Marketing,
            idempotency_key: None,
        })
        .unwrap();
    assert_eq!(d.reason, Some(DenyReason::RecipientMarketingLimit));
}

#[test]
fn bsuids_are_checked_strictly_and_the_field_is_named() {
    let h = harness(Policy::default(), org(Tier::Tier250));
    let field = |recipient: &str, user_id: Option<&str>| match h.engine.decide(&SendRequest {
        org_id: "acme",
        phone_number_id: PHONE,
        recipient,
        recipient_user_id: user_id,
        template_name: "t",
        category: Category::Utility,
        idempotency_key: None,
    }) {
        Err(EngineError::Invalid(v)) => v.field,
        other => panic!("{other:?}"),
    };
    assert_eq!(field("", None), "recipient");
    assert_eq!(field("US.12a", None), "recipient");
    assert_eq!(field("", Some("U.123")), "recipient_user_id");
    assert_eq!(field(SAM_PHONE, Some("US.ENT.")), "recipient_user_id");
    assert_eq!(field(SAM_PHONE, Some("us.123")), "recipient_user_id");
    // Nothing was recorded.
    assert_eq!(h.window(), 0);
}
