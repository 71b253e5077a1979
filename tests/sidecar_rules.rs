//! Every rule of SPEC §2, end to end: the real binary, generated clients, the manual clock.

mod support;

use support::*;
use tiergate_proto::v1 as pb;

const MANUAL: &[&str] = &["--manual-clock"];

every_backend! {
async fn start_gate_then_escalation_path() {
    let s = start!(MANUAL);
    let mut o = org("acme", pb::Tier::Tier250);
    o.escalation_path = None;
    s.put_org(o).await;
    let r = s.acquire("acme", 1).await;
    assert_eq!(reason(&r), pb::DenyReason::EscalationPathRequired);
    assert_eq!(r.verdict, pb::Verdict::Deny as i32);
    assert_eq!(r.retry_after_ms, 0);
    s.admin()
        .set_escalation_path(s.req(pb::SetEscalationPathRequest {
            org_id: "acme".into(),
            path: Some(email()),
        }))
        .await
        .unwrap();
    assert!(allowed(&s.acquire("acme", 1).await));
}

async fn weekly_cap_without_escalation_path() {
    let s = start!(&[
        "--manual-clock",
        "--set",
        "policy.weekly_cap_without_escalation=20",
        "--set",
        "policy.auto_upgrade=false",
    ]);
    let mut o = org("acme", pb::Tier::Tier250);
    o.escalation_path = None;
    o.has_template_history = true;
    s.put_org(o).await;
    let first = s.advance(0).await;
    for i in 0..20 {
        assert!(allowed(&s.acquire("acme", i).await), "send {i}");
    }
    let now = s.advance(1_000).await;
    let r = s.acquire("acme", 99).await;
    assert_eq!(reason(&r), pb::DenyReason::WeeklyCapWithoutEscalation);
    assert_eq!(r.retry_after_ms as i64, first + 7 * DAY as i64 - now);
    s.advance(r.retry_after_ms).await;
    assert!(allowed(&s.acquire("acme", 99).await));
}

async fn tier_window_with_retry_after_and_repeat_recipients() {
    let s = start!(&["--manual-clock", "--set", "policy.auto_upgrade=false"]);
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    let start = s.advance(0).await;
    for i in 0..250 {
        assert!(allowed(&s.acquire("acme", i).await), "send {i}");
    }
    let now = s.advance(10 * SEC).await;
    let r = s.acquire("acme", 1_000).await;
    assert_eq!(reason(&r), pb::DenyReason::TierLimit);
    let u = r.usage.unwrap();
    assert_eq!(u.unique_recipients_24h, 250);
    assert_eq!(u.tier_limit, 250);
    assert_eq!(r.retry_after_ms as i64, start + DAY as i64 - now);
    // the repeat recipient is not counted again
    let r = s.acquire("acme", 7).await;
    assert!(allowed(&r));
    assert_eq!(r.usage.unwrap().unique_recipients_24h, 250);
    s.advance(DAY - 10 * SEC).await;
    assert!(allowed(&s.acquire("acme", 1_000).await));
}

async fn red_grace_then_restricted_tier_and_appeal() {
    let s = start!(&[
        "--manual-clock",
        "--set",
        "policy.small_sender_weekly_limit=50",
        "--set",
        "policy.auto_upgrade=false",
    ]);
    // TIER_2K, restricted one step down = TIER_250
    s.put_org(org("acme", pb::Tier::Tier2k)).await;
    let o = s
        .admin()
        .set_quality_rating(s.req(pb::SetQualityRatingRequest {
            org_id: "acme".into(),
            rating: pb::QualityRating::Red as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(o.flagged_since_unix_ms > 0);
    assert!(!o.restricted);
    s.advance(7 * DAY - HOUR).await;
    for i in 0..300 {
        assert!(
            allowed(&s.acquire("acme", i).await),
            "within the grace, send {i}"
        );
    }
    s.advance(HOUR).await;
    let o = s.get_org("acme").await;
    assert!(o.restricted);
    let r = s.acquire("acme", 5_000).await;
    assert_eq!(reason(&r), pb::DenyReason::QualityRestricted);
    let u = r.usage.unwrap();
    assert_eq!(u.tier, pb::Tier::Tier250 as i32);
    assert!(!u.passthrough);
    // an approved appeal clears the restriction
    let a = s
        .admin()
        .file_appeal(s.req(pb::FileAppealRequest {
            org_id: "acme".into(),
            evidence: "support form at https://example.com/help".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.status, pb::AppealStatus::Pending as i32);
    let a = s
        .admin()
        .resolve_appeal(s.req(pb::ResolveAppealRequest {
            appeal_id: a.appeal_id,
            approved: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.status, pb::AppealStatus::Approved as i32);
    let o = s.get_org("acme").await;
    assert!(!o.restricted);
    assert_eq!(o.flagged_since_unix_ms, 0);
    assert_eq!(o.appeal.unwrap().status, pb::AppealStatus::Approved as i32);
    assert!(allowed(&s.acquire("acme", 5_000).await));
}

async fn small_sender_passes_through() {
    let s = start!(&[
        "--manual-clock",
        "--set",
        "policy.small_sender_weekly_limit=100",
        "--set",
        "policy.auto_upgrade=false",
        "--set",
        "policy.ladder=[\"TIER_50\",\"TIER_250\",\"TIER_1K\",\"TIER_10K\",\"TIER_100K\",\"TIER_UNLIMITED\"]",
    ]);
    // TIER_250 on the legacy ladder: restricted = TIER_50
    let mut o = org("small", pb::Tier::Tier250);
    o.quality_rating = pb::QualityRating::Red as i32;
    s.put_org(o).await;
    s.advance(8 * DAY).await;
    assert!(s.get_org("small").await.restricted);
    for i in 0..100 {
        let r = s.acquire("small", i).await;
        assert!(allowed(&r), "send {i}: {r:?}");
        assert!(r.usage.unwrap().passthrough);
    }
    let r = s.acquire("small", 1_000).await;
    assert_eq!(reason(&r), pb::DenyReason::QualityRestricted);
    assert_eq!(r.usage.unwrap().tier_limit, 50);
}

async fn tier_increase_held_then_applied() {
    let s = start!(MANUAL);
    let mut o = org("acme", pb::Tier::Tier250);
    o.escalation_path = None;
    s.put_org(o).await;
    let r = s
        .admin()
        .request_tier_change(s.req(pb::RequestTierChangeRequest {
            org_id: "acme".into(),
            target_tier: pb::Tier::Tier10k as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.applied);
    assert_eq!(r.tier, pb::Tier::Tier250 as i32);
    assert_eq!(r.pending_tier, pb::Tier::Tier10k as i32);
    assert_eq!(r.held_reason, pb::DenyReason::EscalationPathRequired as i32);
    assert_eq!(
        s.get_org("acme").await.pending_tier,
        pb::Tier::Tier10k as i32
    );
    let o = s
        .admin()
        .set_escalation_path(s.req(pb::SetEscalationPathRequest {
            org_id: "acme".into(),
            path: Some(pb::EscalationPath {
                kind: pb::EscalationKind::WebForm as i32,
                contact: "https://example.com/support".into(),
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(o.tier, pb::Tier::Tier10k as i32);
    assert_eq!(o.pending_tier, pb::Tier::Unspecified as i32);
}

async fn throughput_and_pair_rate() {
    let s = start!(MANUAL);
    let mut o = org("acme", pb::Tier::Tier10k);
    o.phone_numbers[0].throughput_mps = 2;
    s.put_org(o).await;
    assert!(allowed(&s.acquire("acme", 1).await));
    assert!(allowed(&s.acquire("acme", 2).await));
    let r = s.acquire("acme", 3).await;
    assert_eq!(reason(&r), pb::DenyReason::Throughput);
    assert_eq!(r.retry_after_ms, 500);
    s.advance(500).await;
    let r = s.acquire("acme", 1).await;
    assert_eq!(reason(&r), pb::DenyReason::PairRate);
    assert_eq!(r.retry_after_ms, 5_500);
    s.advance(5_500).await;
    assert!(allowed(&s.acquire("acme", 1).await));
}

async fn idempotency_and_not_sent_refund() {
    let s = start!(&["--manual-clock", "--set", "policy.auto_upgrade=false"]);
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    let mut req = acquire("acme", 42);
    req.idempotency_key = "order-42".into();
    let a = s.acquire_req(req.clone()).await;
    assert!(allowed(&a));
    s.advance(HOUR).await;
    let b = s.acquire_req(req).await;
    assert_eq!(a, b, "same key, same answer");
    assert_eq!(s.get_org("acme").await.usage.unwrap().templates_7d, 1);
    // fill the tier, then give the last slot back
    for i in 0..248 {
        assert!(allowed(&s.acquire("acme", 1_000 + i).await));
    }
    let last = s.acquire("acme", 5_000).await;
    assert!(allowed(&last));
    assert_eq!(
        reason(&s.acquire("acme", 6_000).await),
        pb::DenyReason::TierLimit
    );
    s.governor()
        .report(not_sent(&last.permit_id))
        .await
        .unwrap();
    let again = s
        .governor()
        .report(not_sent(&last.permit_id))
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    let o = s.get_org("acme").await;
    assert_eq!(o.usage.unwrap().unique_recipients_24h, 249);
    assert!(allowed(&s.acquire("acme", 6_000).await));
}

async fn account_restriction_is_reported_in_get_org() {
    // Rule 3 is driven by WhatsApp error codes (368, 131031); until those feed back, a REJECTED
    // report is accepted and recorded as sent.
    let s = start!(MANUAL);
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    let a = s.acquire("acme", 1).await;
    s.governor()
        .report(pb::ReportRequest {
            permit_id: a.permit_id,
            outcome: pb::SendOutcome::Rejected as i32,
            error_code: 131_056,
        })
        .await
        .unwrap();
    let o = s.get_org("acme").await;
    assert!(!o.account_restricted);
    assert_eq!(o.usage.unwrap().templates_7d, 1);
}

async fn the_tier_rises_on_meta_s_word_and_eligibility_is_reported() {
    // The default policy: the engine never raises the tier by itself.
    let s = start!(MANUAL);
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    for i in 0..125 {
        assert!(allowed(&s.acquire("acme", i).await), "send {i}");
        s.advance(10).await;
    }
    let o = s.get_org("acme").await;
    assert!(o.upgrade_eligible);
    let since = o.upgrade_eligible_since_unix_ms;
    assert!(since > 0);
    assert_eq!(o.tier, pb::Tier::Tier250 as i32);
    for i in 125..250 {
        assert!(allowed(&s.acquire("acme", i).await), "send {i}");
        s.advance(10).await;
    }
    assert_eq!(reason(&s.acquire("acme", 250).await), pb::DenyReason::TierLimit);
    assert_eq!(s.get_org("acme").await.upgrade_eligible_since_unix_ms, since);
    s.admin()
        .request_tier_change(s.req(pb::RequestTierChangeRequest {
            org_id: "acme".into(),
            target_tier: pb::Tier::Tier2k as i32,
        }))
        .await
        .unwrap();
    assert!(allowed(&s.acquire("acme", 250).await));
}

async fn marketing_api_required_after_131063_until_an_admin_clears_it() {
    let s = start!(MANUAL);
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    let a = s.acquire("acme", 1).await;
    s.governor()
        .report(pb::ReportRequest {
            permit_id: a.permit_id,
            outcome: pb::SendOutcome::Rejected as i32,
            error_code: 131_063,
        })
        .await
        .unwrap();
    assert!(s.get_org("acme").await.marketing_api_required);
    let marketing = |r: u64| pb::AcquireRequest {
        category: pb::Category::Marketing as i32,
        ..acquire("acme", r)
    };
    let r = s.acquire_req(marketing(2)).await;
    assert_eq!(reason(&r), pb::DenyReason::MarketingApiRequired);
    assert!(allowed(&s.acquire("acme", 3).await), "utility still goes");
    let o = s
        .admin()
        .set_marketing_api_required(s.req(pb::SetMarketingApiRequiredRequest {
            org_id: "acme".into(),
            required: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!o.marketing_api_required);
    assert!(allowed(&s.acquire_req(marketing(2)).await));
}

async fn a_rejected_report_answers_with_advice() {
    // SPEC §2a: what to do about each code, and how long to wait where waiting helps.
    let s = start!(MANUAL);
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    // fill the tier: 250 recipients at one instant; 131064 keeps the limit at 250 (the
    // ladder's lowest rung), so a slot frees when the oldest leaves the window
    let mut permits = Vec::new();
    for i in 0..250 {
        let a = s.acquire("acme", 1_000 + i).await;
        assert!(allowed(&a));
        permits.push(a.permit_id);
    }
    s.advance(5 * 60_000).await;
    use pb::Advice::*;
    let cases = [
        (131_064, RetryAfter, DAY - 5 * 60_000),
        (131_056, RetryAfter, 1_000),
        // 1,000 msg/s cut to 500: one message's interval
        (130_429, RetryAfter, 2),
        (131_048, RetryAfter, 60_000),
        (131_057, RetryAfter, 60_000),
        (131_049, RetryAfter, DAY),
        (130_472, DoNotRetry, 0),
        (131_050, DoNotRetry, 0),
        (131_062, DoNotRetry, 0),
        (132_015, TemplatePaused, 0),
        (132_016, TemplatePaused, 0),
        (131_063, UseMarketingApi, 0),
        (368, StopSending, 0),
        (131_031, StopSending, 0),
        (131_000, Unspecified, 0),
    ];
    for ((code, advice, wait), permit_id) in cases.into_iter().zip(&permits) {
        let r = s
            .governor()
            .report(pb::ReportRequest {
                permit_id: permit_id.clone(),
                outcome: pb::SendOutcome::Rejected as i32,
                error_code: code,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (r.advice(), r.retry_after_ms),
            (advice, wait),
            "error {code}"
        );
    }
    // a send that went out needs no advice
    let r = s
        .governor()
        .report(pb::ReportRequest {
            permit_id: permits[200].clone(),
            outcome: pb::SendOutcome::Sent as i32,
            error_code: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.advice(), r.retry_after_ms), (Unspecified, 0));
}

async fn a_person_counts_once_whichever_id_a_send_uses() {
    let s = start!(MANUAL);
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    let ids = |recipient: &str, user_id: &str| pb::AcquireRequest {
        recipient: recipient.into(),
        recipient_user_id: user_id.into(),
        ..acquire("acme", 0)
    };
    // Phone and BSUID together: the org learns they are one person.
    assert!(allowed(&s.acquire_req(ids("16505551234", "US.13491208655302741918")).await));
    s.advance(6 * SEC).await;
    // The BSUID alone, later: the same window entry.
    let r = s.acquire_req(ids("", "US.13491208655302741918")).await;
    assert!(allowed(&r), "{r:?}");
    assert_eq!(r.usage.unwrap().unique_recipients_24h, 1);
    // …and the same pair cell: right after, the phone waits for the pair period.
    let r = s.acquire_req(ids("16505551234", "")).await;
    assert_eq!(reason(&r), pb::DenyReason::PairRate);
    // A malformed BSUID names its field; nothing is recorded.
    let bad = s
        .governor()
        .acquire(ids("16505551234", "US.ENT."))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("recipient_user_id"), "{}", bad.message());
    assert_eq!(
        s.get_org("acme").await.usage.unwrap().unique_recipients_24h,
        1
    );
}
}
