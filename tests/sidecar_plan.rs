//! SPEC §2a "Preflight" and "Category reserves", end to end: the real binary on real sockets,
//! generated clients, the manual clock, on every store (and two replicas on one Redis).
//!
//! A plan is checked the way a sender uses it: asked for, then followed through `Acquire`, which
//! must meet no denial; and a plan must change nothing (the org reads the same before and after).

mod support;

use support::*;
use tiergate_proto::v1 as pb;
use tonic::Code;

const BASE: u64 = 4_915_100_000_000;
const MANUAL: &[&str] = &["--manual-clock", "--set", "policy.auto_upgrade=false"];

/// The number each org of these tests sends from (ids belong to one org only): orgs `b` and `c`
/// have their own, every other org the fixture number.
fn phone(org: &str) -> &'static str {
    match org {
        "b" => "106540352242923",
        "c" => "106540352242924",
        "tp" => "106540352242925",
        "wk" => "106540352242926",
        "ps" => "106540352242927",
        "red" => "106540352242928",
        _ => FIXTURE_PHONE,
    }
}

/// [`org`] on the number [`phone`] gives it, with its own display number and WABA.
fn org_of(org_id: &str, tier: pb::Tier) -> pb::Org {
    let mut o = org(org_id, tier);
    if phone(org_id) != FIXTURE_PHONE {
        let n = &phone(org_id)[12..];
        o.phone_numbers[0].phone_number_id = phone(org_id).into();
        o.phone_numbers[0].display_phone_number = format!("+1 555 0{n}");
        o.waba_ids = vec![format!("102290129340{n}")];
    }
    o
}

/// A plan of `audience_size` new recipients from the org's number.
fn audience(org: &str, category: pb::Category, n: u64) -> pb::PlanRequest {
    pb::PlanRequest {
        org_id: org.into(),
        phone_number_id: phone(org).into(),
        template_name: "order_update".into(),
        category: category as i32,
        recipients: Vec::new(),
        audience_size: n,
    }
}

/// A plan of these recipients, in this order.
fn list(org: &str, category: pb::Category, recipients: &[&str]) -> pb::PlanRequest {
    pb::PlanRequest {
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        audience_size: 0,
        ..audience(org, category, 0)
    }
}

/// An Acquire of `category` (the support helper sends UTILITY).
fn send(org: &str, category: pb::Category, recipient: u64) -> pb::AcquireRequest {
    pb::AcquireRequest {
        category: category as i32,
        phone_number_id: phone(org).into(),
        ..acquire(org, recipient)
    }
}

fn waves(p: &pb::PlanResponse) -> Vec<(i64, u64)> {
    p.waves.iter().map(|w| (w.at_unix_ms, w.count)).collect()
}

fn binding(p: &pb::PlanResponse) -> pb::DenyReason {
    pb::DenyReason::try_from(p.binding).unwrap()
}

async fn plan(s: &Sidecar, req: pb::PlanRequest) -> pb::PlanResponse {
    s.governor().plan(req).await.expect("plan").into_inner()
}

async fn plan_err(s: &Sidecar, req: pb::PlanRequest) -> tonic::Status {
    match s.governor().plan(req).await {
        Ok(r) => panic!("expected an error, got {:?}", r.into_inner()),
        Err(e) => e,
    }
}

async fn org_count(s: &Sidecar) -> usize {
    s.admin()
        .list_orgs(s.req(pb::ListOrgsRequest {}))
        .await
        .expect("list_orgs")
        .into_inner()
        .orgs
        .len()
}

async fn put_org_err(s: &Sidecar, o: pb::Org) -> tonic::Status {
    match s
        .admin()
        .put_org(s.req(pb::PutOrgRequest { org: Some(o) }))
        .await
    {
        Ok(r) => panic!("expected an error, got {:?}", r.into_inner()),
        Err(e) => e,
    }
}

/// Follows a plan through `Acquire`: at each wave's time, the next `count` sends of `sends`
/// (skipping the plan's `never_indexes`). Every one must be allowed. Returns how many were sent.
async fn follow(s: &Sidecar, p: &pb::PlanResponse, sends: &[pb::AcquireRequest]) -> u64 {
    let mut next = sends
        .iter()
        .enumerate()
        .filter(|(i, _)| !p.never_indexes.contains(&(*i as u32)));
    let mut sent = 0;
    for w in &p.waves {
        assert_eq!(advance_to(s, w.at_unix_ms).await, w.at_unix_ms, "{p:?}");
        for _ in 0..w.count {
            let (i, req) = next.next().expect("the plan holds no more than the list");
            let r = s.acquire_req(req.clone()).await;
            assert!(
                allowed(&r),
                "send {i} ({}) of the plan, wave at {}: {r:?}\nplan: {p:?}",
                req.recipient,
                w.at_unix_ms
            );
            sent += 1;
        }
    }
    sent
}

/// `n` sends of `category` to new recipients, in order.
fn new_sends(org: &str, category: pb::Category, n: u64) -> Vec<pb::AcquireRequest> {
    (0..n).map(|i| send(org, category, BASE + i)).collect()
}

/// Moves the manual clock to `at` (never back) and returns the time now.
async fn advance_to(s: &Sidecar, at: i64) -> i64 {
    let now = s.advance(0).await;
    if at > now {
        s.advance((at - now) as u64).await
    } else {
        now
    }
}

/// The value of one `tiergate_org_window_fill_by_category` series in a `/metrics` page.
fn fill_metric(page: &str, org: &str, category: &str) -> Option<u64> {
    let key =
        format!("tiergate_org_window_fill_by_category{{org=\"{org}\",category=\"{category}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

/// A config file (in the temp dir, unique to this test and store) keeping 20 % of the tier for
/// AUTHENTICATION.
fn reserve_config(name: &str, backend: Backend) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tiergate-plan-cfg-{name}-{backend:?}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("reserves.toml");
    std::fs::write(
        &f,
        "[policy]\nreserve_authentication_percent = 20\nauto_upgrade = false\n",
    )
    .unwrap();
    f
}

every_backend! {
async fn a_plan_followed_exactly_meets_no_denial() {
    let s = start!(MANUAL);
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    let now = s.advance(0).await;
    let before = s.get_org("acme").await;
    let p = plan(&s, audience("acme", pb::Category::Utility, 300)).await;
    assert_eq!(s.get_org("acme").await, before, "a plan changes nothing");
    assert_eq!(p.allowed_now, 250, "{p:?}");
    assert_eq!(waves(&p), vec![(now, 250), (now + DAY as i64, 50)], "{p:?}");
    assert_eq!(p.completes_at_unix_ms, now + DAY as i64);
    assert_eq!(binding(&p), pb::DenyReason::TierLimit);
    assert_eq!((p.already_counted, p.never, p.unplanned), (0, 0, 0), "{p:?}");
    assert!(p.never_indexes.is_empty());

    // Followed for real: every wave at its time, every send allowed.
    let mut next = 0;
    for w in &p.waves {
        assert_eq!(advance_to(&s, w.at_unix_ms).await, w.at_unix_ms);
        for _ in 0..w.count {
            let r = s.acquire("acme", BASE + next).await;
            assert!(allowed(&r), "recipient {next} of the plan, wave at {}: {r:?}", w.at_unix_ms);
            next += 1;
        }
    }
    assert_eq!(next, 300);
    let usage = s.get_org("acme").await.usage.unwrap();
    assert_eq!(usage.unique_recipients_24h, 50, "the first wave left the window");
    assert_eq!(usage.templates_7d, 300);
}

async fn a_plan_asked_mid_campaign_sees_what_was_sent() {
    let s = start!(MANUAL);
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    let start = s.advance(0).await;
    for i in 0..100 {
        assert!(allowed(&s.acquire("acme", BASE + i).await), "send {i}");
    }
    let now = s.advance(HOUR).await;
    let p = plan(&s, audience("acme", pb::Category::Utility, 200)).await;
    assert_eq!(p.allowed_now, 150, "{p:?}");
    assert_eq!(waves(&p), vec![(now, 150), (start + DAY as i64, 50)], "{p:?}");
    assert_eq!(p.completes_at_unix_ms, start + DAY as i64);
    assert_eq!(binding(&p), pb::DenyReason::TierLimit);
    // At a full tier nothing goes now, and the plan says when.
    for i in 100..250 {
        assert!(allowed(&s.acquire("acme", BASE + i).await), "send {i}");
    }
    let p = plan(&s, audience("acme", pb::Category::Utility, 1)).await;
    assert_eq!(p.allowed_now, 0, "{p:?}");
    assert_eq!(waves(&p), vec![(start + DAY as i64, 1)], "{p:?}");
    assert_eq!(binding(&p), pb::DenyReason::TierLimit);
    let r = s.acquire("acme", BASE + 1_000).await;
    assert_eq!(reason(&r), pb::DenyReason::TierLimit);
    assert_eq!(now + r.retry_after_ms as i64, start + DAY as i64, "the plan and Acquire agree");
}

async fn a_list_plan_counts_the_window_and_skips_who_opted_out() {
    let s = start!(MANUAL);
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    for r in [1001, 1002, 1003] {
        assert!(allowed(&s.acquire("acme", r).await), "recipient {r}");
    }
    // 2000 opts out of marketing: WhatsApp answers 131050 to a marketing send.
    let m = s.acquire_req(send("acme", pb::Category::Marketing, 2000)).await;
    assert!(allowed(&m), "{m:?}");
    let rep = s
        .governor()
        .report(pb::ReportRequest {
            permit_id: m.permit_id.clone(),
            outcome: pb::SendOutcome::Rejected as i32,
            error_code: 131_050,
        })
        .await
        .expect("report")
        .into_inner();
    assert_eq!(rep.advice, pb::Advice::DoNotRetry as i32, "{rep:?}");
    // Past the pair rate of those sends; all four are still in the 24 h window.
    let now = s.advance(HOUR).await;
    let before = s.get_org("acme").await;
    assert_eq!(before.usage.as_ref().unwrap().unique_recipients_24h, 4);

    let recipients = ["1001", "5000", "2000", "1002", "5001"];
    let p = plan(&s, list("acme", pb::Category::Marketing, &recipients)).await;
    assert_eq!(s.get_org("acme").await, before, "a plan changes nothing");
    assert_eq!(p.already_counted, 3, "1001, 2000 and 1002 are in the window: {p:?}");
    assert_eq!(p.never, 1, "{p:?}");
    assert_eq!(p.never_indexes, vec![2], "2000 opted out of marketing");
    assert_eq!(p.allowed_now, 4, "{p:?}");
    assert_eq!(waves(&p), vec![(now, 4)]);
    assert_eq!(p.completes_at_unix_ms, now);
    assert_eq!(binding(&p), pb::DenyReason::Unspecified, "all go now");
    assert_eq!(p.unplanned, 0);

    // A UTILITY template may still go to 2000.
    let u = plan(&s, list("acme", pb::Category::Utility, &recipients)).await;
    assert_eq!((u.allowed_now, u.never, u.already_counted), (5, 0, 3), "{u:?}");
    assert!(u.never_indexes.is_empty());

    // Followed: every recipient not in never_indexes is allowed, and 2000 is refused as the
    // plan said.
    for (i, r) in recipients.iter().enumerate() {
        let resp = s
            .acquire_req(send("acme", pb::Category::Marketing, r.parse().unwrap()))
            .await;
        if p.never_indexes.contains(&(i as u32)) {
            assert_eq!(reason(&resp), pb::DenyReason::RecipientMarketingLimit, "{resp:?}");
        } else {
            assert!(allowed(&resp), "recipients[{i}] = {r}: {resp:?}");
        }
    }
    assert_eq!(s.get_org("acme").await.usage.unwrap().unique_recipients_24h, 6);
}

async fn bad_plans_name_the_field_and_change_nothing() {
    let s = start!(MANUAL);
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    assert!(allowed(&s.acquire("acme", 1).await));
    let before = s.get_org("acme").await;
    let orgs = org_count(&s).await;
    let gov = |r| plan_err(&s, r);

    let e = gov(list("acme", pb::Category::Utility, &[])).await;
    assert_eq!(e.code(), Code::InvalidArgument, "empty plan: {e:?}");
    assert!(e.message().contains("recipients") && e.message().contains("audience_size"), "{e:?}");

    let mut both = list("acme", pb::Category::Utility, &["1001"]);
    both.audience_size = 5;
    let e = gov(both).await;
    assert_eq!(e.code(), Code::InvalidArgument, "both: {e:?}");
    assert!(e.message().contains("recipients") && e.message().contains("audience_size"), "{e:?}");

    let e = gov(list("acme", pb::Category::Utility, &["1001", "+49 151"])).await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("recipients[1]"), "{e:?}");

    let e = gov(audience("acme", pb::Category::Utility, 100_001)).await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("audience_size"), "{e:?}");

    let e = gov(audience("acme", pb::Category::Unspecified, 5)).await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("category"), "{e:?}");

    let e = gov(pb::PlanRequest { template_name: String::new(), ..audience("acme", pb::Category::Utility, 5) }).await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("template_name"), "{e:?}");

    let e = gov(audience("", pb::Category::Utility, 5)).await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("org_id"), "{e:?}");

    let e = gov(audience("nobody", pb::Category::Utility, 5)).await;
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("nobody"), "{e:?}");

    let e = gov(pb::PlanRequest { phone_number_id: "999".into(), ..audience("acme", pb::Category::Utility, 5) }).await;
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("999"), "{e:?}");

    // 100,001 short phones are about 1 MB: far over server.max_request_bytes (64 KiB), but a
    // plan has its own limit (server.max_plan_request_bytes, 4 MiB), so the plan's maximum
    // answers, by name.
    let many: Vec<String> = (0..100_001u64).map(|i| (1_000_000 + i).to_string()).collect();
    let big = pb::PlanRequest { recipients: many, ..list("acme", pb::Category::Utility, &[]) };
    let e = gov(big).await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("recipients") && e.message().contains("100000"), "{e:?}");
    // Over the plan's own limit (100,001 × 50 bytes ≈ 5 MB): refused before it is read.
    let huge: Vec<String> = (0..100_001u64).map(|i| format!("{:0>48}", i)).collect();
    let e = gov(pb::PlanRequest { recipients: huge, ..list("acme", pb::Category::Utility, &[]) }).await;
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("server.max_plan_request_bytes"), "{e:?}");
    // Every other call keeps the small limit.
    let e = s
        .governor()
        .acquire(s.req(pb::AcquireRequest {
            org_id: "acme".into(),
            phone_number_id: FIXTURE_PHONE.into(),
            recipient: "1".repeat(70_000),
            template_name: "t".into(),
            category: pb::Category::Utility as i32,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("server.max_request_bytes"), "{e:?}");

    assert_eq!(s.get_org("acme").await, before, "nothing changed");
    assert_eq!(org_count(&s).await, orgs, "an unknown org creates no state");
    let e = s
        .admin()
        .get_org(s.req(pb::GetOrgRequest { org_id: "nobody".into() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

async fn a_list_over_the_plan_maximum_is_refused_by_name() {
    // The default limits take 100,001 recipients: the plan's own maximum answers.
    let s = start!(&["--manual-clock", "--set", "policy.auto_upgrade=false"]);
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    let before = s.get_org("acme").await;
    let phones = |n: u64| -> Vec<String> { (0..n).map(|i| (1_000_000 + i).to_string()).collect() };
    let e = plan_err(&s, pb::PlanRequest { recipients: phones(100_001), ..list("acme", pb::Category::Utility, &[]) }).await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("recipients") && e.message().contains("100000"), "{e:?}");
    // The maximum itself is planned: 250 a day for the 30-day horizon, then it cannot complete.
    let now = s.advance(0).await;
    let p = plan(&s, pb::PlanRequest { recipients: phones(100_000), ..list("acme", pb::Category::Utility, &[]) }).await;
    assert_eq!(p.allowed_now, 250);
    assert_eq!(p.completes_at_unix_ms, 0, "cannot complete");
    assert_eq!(binding(&p), pb::DenyReason::TierLimit);
    let planned: u64 = p.waves.iter().map(|w| w.count).sum();
    assert_eq!(planned + p.unplanned, 100_000, "{:?}", &p.waves);
    assert!(p.waves.iter().all(|w| w.count == 250), "{:?}", &p.waves);
    for (k, w) in p.waves.iter().enumerate() {
        assert_eq!(w.at_unix_ms, now + k as i64 * DAY as i64);
    }
    assert!(p.waves.last().unwrap().at_unix_ms <= now + 30 * DAY as i64);
    assert_eq!(s.get_org("acme").await, before);
}

async fn plans_wait_out_the_rules_that_change_with_time() {
    let s = start!(&[
        "--manual-clock",
        "--set",
        "policy.auto_upgrade=false",
        "--set",
        "policy.weekly_cap_without_escalation=20",
        "--set",
        "policy.small_sender_weekly_limit=50",
        "--set",
        "policy.ladder=[\"TIER_50\",\"TIER_250\",\"TIER_1K\",\"TIER_10K\",\"TIER_100K\",\"TIER_UNLIMITED\"]",
    ]);
    let u = pb::Category::Utility;

    // Throughput: a number of 2 messages a second.
    let mut tp = org_of("tp", pb::Tier::Tier250);
    tp.phone_numbers[0].throughput_mps = 2;
    s.put_org(tp).await;
    let now = s.advance(0).await;
    let p = plan(&s, audience("tp", u, 7)).await;
    assert_eq!(p.allowed_now, 2, "{p:?}");
    assert_eq!(binding(&p), pb::DenyReason::Throughput, "{p:?}");
    assert_eq!(p.waves.iter().map(|w| w.count).sum::<u64>(), 7, "{p:?}");
    assert!(p.completes_at_unix_ms > now && p.completes_at_unix_ms <= now + 3 * SEC as i64, "{p:?}");
    assert_eq!(follow(&s, &p, &new_sends("tp", u, 7)).await, 7);

    // The weekly cap without an escalation path: 20 now, the rest when the first leave the week.
    let mut wk = org_of("wk", pb::Tier::Tier250);
    wk.escalation_path = None;
    wk.has_template_history = true;
    s.put_org(wk).await;
    let now = s.advance(0).await;
    let p = plan(&s, audience("wk", u, 30)).await;
    assert_eq!(waves(&p), vec![(now, 20), (now + 7 * DAY as i64, 10)], "{p:?}");
    assert_eq!(binding(&p), pb::DenyReason::WeeklyCapWithoutEscalation);
    assert_eq!(follow(&s, &p, &new_sends("wk", u, 30)).await, 30);

    // A template paused for an hour, then one disabled (the campaign cannot complete).
    s.put_org(org_of("ps", pb::Tier::Tier250)).await;
    let now = s.advance(0).await;
    s.admin()
        .pause_template(s.req(pb::PauseTemplateRequest {
            org_id: "ps".into(),
            template_name: "order_update".into(),
            until_unix_ms: now + HOUR as i64,
        }))
        .await
        .unwrap();
    let p = plan(&s, audience("ps", u, 3)).await;
    assert_eq!(p.allowed_now, 0, "{p:?}");
    assert_eq!(waves(&p), vec![(now + HOUR as i64, 3)], "{p:?}");
    assert_eq!(binding(&p), pb::DenyReason::TemplatePaused);
    assert_eq!(follow(&s, &p, &new_sends("ps", u, 3)).await, 3);
    s.admin()
        .pause_template(s.req(pb::PauseTemplateRequest {
            org_id: "ps".into(),
            template_name: "order_update".into(),
            until_unix_ms: 0,
        }))
        .await
        .unwrap();
    let p = plan(&s, audience("ps", u, 3)).await;
    assert_eq!((p.allowed_now, p.completes_at_unix_ms, p.unplanned), (0, 0, 3), "{p:?}");
    assert!(p.waves.is_empty(), "{p:?}");
    assert_eq!(binding(&p), pb::DenyReason::TemplatePaused);

    // RED: the 7-day grace ends an hour into the campaign, and the tier falls from 250 to 50
    // (one rung down this server's ladder).
    s.put_org(org_of("red", pb::Tier::Tier250)).await;
    s.admin()
        .set_quality_rating(s.req(pb::SetQualityRatingRequest {
            org_id: "red".into(),
            rating: pb::QualityRating::Red as i32,
        }))
        .await
        .unwrap();
    let now = s.advance(7 * DAY - HOUR).await;
    let p = plan(&s, audience("red", u, 350)).await;
    assert_eq!(
        waves(&p),
        vec![(now, 250), (now + DAY as i64, 50), (now + 2 * DAY as i64, 50)],
        "{p:?}"
    );
    assert!(
        matches!(binding(&p), pb::DenyReason::QualityRestricted | pb::DenyReason::TierLimit),
        "{p:?}"
    );
    assert_eq!(follow(&s, &p, &new_sends("red", u, 350)).await, 350);
    assert!(s.get_org("red").await.restricted);
}

async fn a_list_plan_knows_linked_ids_and_repeats() {
    let s = start!(MANUAL);
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    // One person known by a phone and a BSUID from this send on.
    let bsuid = "US.13491208655302741918";
    let mut first = acquire("acme", 16_505_551_234);
    first.recipient_user_id = bsuid.into();
    assert!(allowed(&s.acquire_req(first).await));
    let now = s.advance(60 * SEC).await;
    // The BSUID is in the window through its phone; 5000 twice waits out the pair rate.
    let recipients = [bsuid, "5000", "5000", "16505551234"];
    let p = plan(&s, list("acme", pb::Category::Utility, &recipients)).await;
    assert_eq!(p.already_counted, 2, "the BSUID and its phone: {p:?}");
    assert_eq!(p.allowed_now, 2, "{p:?}");
    assert_eq!(waves(&p), vec![(now, 2), (now + 6 * SEC as i64, 2)], "{p:?}");
    assert_eq!(binding(&p), pb::DenyReason::PairRate);
    let sends: Vec<pb::AcquireRequest> = recipients
        .iter()
        .map(|r| pb::AcquireRequest {
            recipient: r.to_string(),
            ..acquire("acme", 0)
        })
        .collect();
    assert_eq!(follow(&s, &p, &sends).await, 4);
    assert_eq!(s.get_org("acme").await.usage.unwrap().unique_recipients_24h, 2);
}

async fn reserves_keep_the_tier_for_authentication() {
    let cfg = reserve_config(NAME, BACKEND);
    let s = start!(&["--manual-clock", "--config", cfg.to_str().unwrap()]);
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    let o = s.get_org("acme").await;
    assert_eq!(o.reserve_authentication_percent, None, "the policy's, not the org's own");
    assert_eq!(
        o.reserves_in_force,
        Some(pb::Reserves { authentication_percent: 20, utility_percent: 0 })
    );
    let start = s.advance(0).await;
    // MARKETING (and UTILITY) may fill 80 % of 250: 200.
    let p = plan(&s, audience("acme", pb::Category::Marketing, 300)).await;
    assert_eq!(p.allowed_now, 200, "{p:?}");
    assert_eq!(waves(&p), vec![(start, 200), (start + DAY as i64, 100)], "{p:?}");
    assert_eq!(binding(&p), pb::DenyReason::CategoryReserve);
    for i in 0..200 {
        let r = s.acquire_req(send("acme", pb::Category::Marketing, BASE + i)).await;
        assert!(allowed(&r), "marketing {i}: {r:?}");
    }
    let now = s.advance(10 * SEC).await;
    let r = s.acquire_req(send("acme", pb::Category::Marketing, BASE + 200)).await;
    assert_eq!(reason(&r), pb::DenyReason::CategoryReserve, "{r:?}");
    assert_eq!(r.retry_after_ms as i64, start + DAY as i64 - now, "when the first slot frees");
    let r = s.acquire_req(send("acme", pb::Category::Utility, BASE + 200)).await;
    assert_eq!(reason(&r), pb::DenyReason::CategoryReserve, "{r:?}");
    // A recipient already in the window costs no slot and is not held back.
    assert!(allowed(&s.acquire_req(send("acme", pb::Category::Marketing, BASE + 7)).await));
    // AUTHENTICATION takes the rest, up to the tier.
    for i in 200..250 {
        let r = s.acquire_req(send("acme", pb::Category::Authentication, BASE + i)).await;
        assert!(allowed(&r), "authentication {i}: {r:?}");
    }
    let r = s.acquire_req(send("acme", pb::Category::Authentication, BASE + 250)).await;
    assert_eq!(reason(&r), pb::DenyReason::TierLimit, "{r:?}");
    let o = s.get_org("acme").await;
    assert_eq!(
        o.fill,
        Some(pb::CategoryFill { marketing: 200, utility: 0, authentication: 50, unattributed: 0 })
    );
    assert_eq!(o.usage.unwrap().unique_recipients_24h, 250);
    let m = s.metrics().await;
    assert_eq!(fill_metric(&m, "acme", "MARKETING"), Some(200), "{m}");
    assert_eq!(fill_metric(&m, "acme", "AUTHENTICATION"), Some(50), "{m}");
    assert_eq!(fill_metric(&m, "acme", "UTILITY"), Some(0), "{m}");
    assert_eq!(fill_metric(&m, "acme", "UNATTRIBUTED"), Some(0), "{m}");
    assert!(m.contains("# TYPE tiergate_org_window_fill_by_category gauge"), "{m}");

    // The org's own reserve (PutOrg) round-trips and sets its share: 50 % leaves marketing 125.
    let mut b = org_of("b", pb::Tier::Tier250);
    b.reserve_authentication_percent = Some(50);
    let put = s.put_org(b.clone()).await;
    let got = s.get_org("b").await;
    for o in [&put, &got] {
        assert_eq!(o.reserve_authentication_percent, Some(50));
        assert_eq!(o.reserve_utility_percent, None);
        assert_eq!(
            o.reserves_in_force,
            Some(pb::Reserves { authentication_percent: 50, utility_percent: 0 })
        );
    }
    let now = s.advance(0).await;
    let p = plan(&s, audience("b", pb::Category::Marketing, 200)).await;
    assert_eq!(p.allowed_now, 125, "{p:?}");
    assert_eq!(waves(&p), vec![(now, 125), (now + DAY as i64, 75)], "{p:?}");
    for i in 0..125 {
        assert!(allowed(&s.acquire_req(send("b", pb::Category::Marketing, BASE + i)).await), "{i}");
    }
    let r = s.acquire_req(send("b", pb::Category::Marketing, BASE + 125)).await;
    assert_eq!(reason(&r), pb::DenyReason::CategoryReserve, "{r:?}");
    // Changed on a live org: 40 % leaves marketing 150, the window is kept.
    b.reserve_authentication_percent = Some(40);
    s.put_org(b.clone()).await;
    let o = s.get_org("b").await;
    assert_eq!(o.fill.unwrap().marketing, 125);
    for i in 125..150 {
        assert!(allowed(&s.acquire_req(send("b", pb::Category::Marketing, BASE + i)).await), "{i}");
    }
    let r = s.acquire_req(send("b", pb::Category::Marketing, BASE + 150)).await;
    assert_eq!(reason(&r), pb::DenyReason::CategoryReserve, "{r:?}");

    // An org's own 0 % overrides the policy's 20 %, and a utility reserve nests under it.
    let mut c = org_of("c", pb::Tier::Tier250);
    c.reserve_authentication_percent = Some(0);
    c.reserve_utility_percent = Some(40);
    s.put_org(c).await;
    let o = s.get_org("c").await;
    assert_eq!(
        o.reserves_in_force,
        Some(pb::Reserves { authentication_percent: 0, utility_percent: 40 })
    );
    assert_eq!(plan(&s, audience("c", pb::Category::Marketing, 300)).await.allowed_now, 150);
    assert_eq!(plan(&s, audience("c", pb::Category::Utility, 300)).await.allowed_now, 250);

    // Out of range: refused by name, nothing changed.
    let before = s.get_org("b").await;
    let mut bad = org_of("b", pb::Tier::Tier250);
    bad.reserve_authentication_percent = Some(101);
    let e = put_org_err(&s, bad.clone()).await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("org.reserve_authentication_percent"), "{e:?}");
    bad.reserve_authentication_percent = Some(60);
    bad.reserve_utility_percent = Some(50);
    let e = put_org_err(&s, bad).await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("org.reserve_utility_percent"), "{e:?}");
    assert_eq!(s.get_org("b").await, before);
    let _ = std::fs::remove_dir_all(cfg.parent().unwrap());
}
}

/// Two replicas on one Redis: what one allowed, a plan on the other accounts for (the replica
/// reads the org's log to its end before planning).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_on_one_replica_sees_the_sends_of_another() {
    let Some(redis) = RedisServer::start("plan-replicas") else {
        return;
    };
    let url = redis.url();
    let args = [
        "--store",
        "redis",
        "--redis-url",
        &url,
        "--set",
        "policy.auto_upgrade=false",
    ];
    let a = Sidecar::start(&args).await;
    let b = Sidecar::start(&args).await;
    a.put_org(org("shared", pb::Tier::Tier250)).await;
    // b has not seen the org at all before its first plan.
    let p = plan(&b, audience("shared", pb::Category::Utility, 300)).await;
    assert_eq!(p.allowed_now, 250, "{p:?}");
    for i in 0..10 {
        assert!(
            allowed(&a.acquire("shared", BASE + i).await),
            "send {i} on A"
        );
    }
    let p = plan(&b, audience("shared", pb::Category::Utility, 300)).await;
    assert_eq!(p.allowed_now, 240, "B accounts for A's ten sends: {p:?}");
    let planned: u64 = p.waves.iter().map(|w| w.count).sum();
    assert_eq!(planned, 300);
    // A list: the two A sent to cost no slot (they go last: the pair rate holds them a moment).
    let (x, y) = ((BASE + 1).to_string(), (BASE + 2).to_string());
    let p = plan(
        &b,
        list(
            "shared",
            pb::Category::Utility,
            &["1000001", "1000002", &x, &y],
        ),
    )
    .await;
    assert_eq!(p.already_counted, 2, "{p:?}");
    assert!(p.allowed_now >= 2, "{p:?}");
    assert_eq!(p.waves.iter().map(|w| w.count).sum::<u64>(), 4, "{p:?}");
    // A fills the tier; B's plan says nothing new goes now, and Acquire on B agrees.
    for i in 10..250 {
        assert!(
            allowed(&a.acquire("shared", BASE + i).await),
            "send {i} on A"
        );
    }
    let p = plan(&b, audience("shared", pb::Category::Utility, 1)).await;
    assert_eq!(p.allowed_now, 0, "{p:?}");
    assert_eq!(binding(&p), pb::DenyReason::TierLimit);
    assert_eq!(p.waves.len(), 1);
    let r = b.acquire("shared", BASE + 1_000).await;
    assert_eq!(reason(&r), pb::DenyReason::TierLimit, "{r:?}");
    // The plan's wave time and B's retry-after name the same moment (within the wall clock's
    // drift between the two calls).
    let retry_at = now_ms() + r.retry_after_ms as i64;
    assert!(
        (retry_at - p.waves[0].at_unix_ms).abs() < 5 * SEC as i64,
        "{p:?} vs {r:?}"
    );
    // A plan wrote nothing: both replicas still read 250.
    for s in [&a, &b] {
        assert_eq!(
            s.get_org("shared")
                .await
                .usage
                .unwrap()
                .unique_recipients_24h,
            250
        );
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn snapshots_written(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("tiergate_store_snapshots_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// An org whose own reserve leaves MARKETING 40 of TIER_250 (84 % kept for AUTHENTICATION).
fn reserved_org() -> pb::Org {
    let mut o = org("keep", pb::Tier::Tier250);
    o.reserve_authentication_percent = Some(84);
    o
}

/// Fills `keep` with 40 MARKETING and 10 AUTHENTICATION recipients, and checks the 41st
/// MARKETING one is held back.
async fn fill_keep(s: &Sidecar) {
    for i in 0..40 {
        let r = s
            .acquire_req(send("keep", pb::Category::Marketing, BASE + i))
            .await;
        assert!(allowed(&r), "marketing {i}: {r:?}");
    }
    for i in 40..50 {
        let r = s
            .acquire_req(send("keep", pb::Category::Authentication, BASE + i))
            .await;
        assert!(allowed(&r), "authentication {i}: {r:?}");
    }
    let r = s
        .acquire_req(send("keep", pb::Category::Marketing, BASE + 50))
        .await;
    assert_eq!(reason(&r), pb::DenyReason::CategoryReserve, "{r:?}");
}

/// What a restarted or fresh process must read back.
async fn assert_keep_restored(s: &Sidecar, what: &str) {
    let o = s.get_org("keep").await;
    assert_eq!(o.reserve_authentication_percent, Some(84), "{what}");
    assert_eq!(
        o.fill,
        Some(pb::CategoryFill {
            marketing: 40,
            utility: 0,
            authentication: 10,
            unattributed: 0
        }),
        "{what}"
    );
    let r = s
        .acquire_req(send("keep", pb::Category::Marketing, BASE + 60))
        .await;
    assert_eq!(reason(&r), pb::DenyReason::CategoryReserve, "{what}: {r:?}");
    let p = plan(s, audience("keep", pb::Category::Marketing, 5)).await;
    assert_eq!(p.allowed_now, 0, "{what}: {p:?}");
    assert_eq!(
        p.waves.iter().map(|w| w.count).sum::<u64>(),
        5,
        "{what}: {p:?}"
    );
    assert!(allowed(
        &s.acquire_req(send("keep", pb::Category::Authentication, BASE + 61))
            .await
    ));
}

/// The embedded store: an org's own reserve and the window's fill by category survive
/// compaction (snapshots) and `kill -9`.
#[tokio::test]
async fn reserves_and_fill_by_category_survive_compaction_and_kill9() {
    let dir = std::env::temp_dir().join(format!("tiergate-plan-kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap().to_owned();
    let args = [
        "--store",
        "embedded",
        "--data-dir",
        &d,
        "--manual-clock",
        "--set",
        "policy.auto_upgrade=false",
        "--set",
        "server.compact_facts=20",
        "--set",
        "server.compact_check_ms=20",
    ];
    let s = Sidecar::start(&args).await;
    s.put_org(reserved_org()).await;
    fill_keep(&s).await;
    // Repeat sends (no new slot) after the fill, then wait until a snapshot is written after
    // them: it holds the whole fill (at most 5 s).
    let before = snapshots_written(&s.metrics().await);
    s.advance(60 * SEC).await;
    for i in 0..40 {
        let r = s
            .acquire_req(send("keep", pb::Category::Marketing, BASE + i))
            .await;
        assert!(allowed(&r), "repeat {i}: {r:?}");
    }
    for _ in 0..250 {
        if snapshots_written(&s.metrics().await) > before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        snapshots_written(&s.metrics().await) > before,
        "no snapshot after the fill"
    );
    s.kill9();
    let s = Sidecar::start(&args).await;
    assert_keep_restored(&s, "after kill -9").await;
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Redis: a replica started after the org's log was replaced by a snapshot reads the org's own
/// reserve and the fill by category from it; one that was running sees a PutOrg made elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_replicas_share_reserves_and_fill_through_snapshots() {
    let Some(redis) = RedisServer::start("plan-snapshots") else {
        return;
    };
    let url = redis.url();
    let args = [
        "--store",
        "redis",
        "--redis-url",
        &url,
        "--set",
        "policy.auto_upgrade=false",
        "--set",
        "server.redis_snapshot_entries=10",
    ];
    let a = Sidecar::start(&args).await;
    let b = Sidecar::start(&args).await;
    a.put_org(reserved_org()).await;
    fill_keep(&a).await;
    // B, already running, holds it back too.
    let r = b
        .acquire_req(send("keep", pb::Category::Marketing, BASE + 70))
        .await;
    assert_eq!(reason(&r), pb::DenyReason::CategoryReserve, "{r:?}");
    // Churn enough log entries (AUTHENTICATION sends given back) to pass the snapshot threshold
    // (twice the window's 50 recipients) after the fill, and wait until that snapshot is stored
    // (in the background; at most 5 s).
    let before = snapshots_written(&a.metrics().await);
    for i in 0..60 {
        let r = a
            .acquire_req(send("keep", pb::Category::Authentication, BASE + 1_000 + i))
            .await;
        assert!(allowed(&r), "churn {i}: {r:?}");
        a.governor().report(not_sent(&r.permit_id)).await.unwrap();
    }
    for _ in 0..250 {
        if snapshots_written(&a.metrics().await) > before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        snapshots_written(&a.metrics().await) > before,
        "no snapshot after the fill"
    );
    let c = Sidecar::start(&args).await;
    assert_keep_restored(&c, "a fresh replica").await;
    // An override changed through B is seen by A and C: 0 % leaves marketing the whole tier.
    let mut o = reserved_org();
    o.reserve_authentication_percent = Some(0);
    b.put_org(o).await;
    for s in [&a, &c] {
        let got = s.get_org("keep").await;
        assert_eq!(got.reserve_authentication_percent, Some(0));
        let p = plan(s, audience("keep", pb::Category::Marketing, 10)).await;
        assert_eq!(p.allowed_now, 10, "{p:?}");
    }
}
