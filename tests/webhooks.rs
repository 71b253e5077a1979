//! WhatsApp webhooks against the real binary: Meta's fixtures, signed with the test app secret.

mod support;

use support::*;
use tiergate_proto::v1 as pb;
use tiergate_server::webhook::signature::sign;

const SECRET: &str = "tiergate-test-app-secret";
const WABA: &str = "102290129340398";

fn fixture(name: &str) -> Vec<u8> {
    let p = format!(
        "{}/tests/fixtures/webhooks/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

async fn start() -> Sidecar {
    Sidecar::start_with(
        &["--manual-clock", "--set", "policy.auto_upgrade=false"],
        &[
            ("TIERGATE_WEBHOOK_SECRET", SECRET),
            ("TIERGATE_WEBHOOK_VERIFY_TOKEN", "verify-me"),
        ],
    )
    .await
}

/// The org the fixtures name: WABA 102290129340398, number 106540352242922 (+1 555 078 3881).
async fn register(s: &Sidecar, tier: pb::Tier, with_path: bool, mps: u32) {
    let mut o = org("acme", tier);
    o.waba_ids = vec![WABA.into()];
    o.phone_numbers[0].display_phone_number = "+1 555-078-3881".into();
    o.phone_numbers[0].throughput_mps = mps;
    if !with_path {
        o.escalation_path = None;
        o.has_template_history = true;
    }
    s.put_org(o).await;
}

async fn post(s: &Sidecar, body: &[u8], signature: Option<String>) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(format!("http://{}/webhooks/whatsapp", s.http))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(sig) = signature {
        req = req.header("x-hub-signature-256", sig);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn post_signed(s: &Sidecar, body: &[u8]) -> (u16, String) {
    post(s, body, Some(sign(SECRET.as_bytes(), body))).await
}

#[tokio::test]
async fn verification_handshake() {
    let s = start().await;
    let get = |q: &str| {
        let url = format!("http://{}/webhooks/whatsapp?{q}", s.http);
        async move {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(
        get("hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=1158201444").await,
        (200, "1158201444".to_owned())
    );
    assert_eq!(
        get("hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1")
            .await
            .0,
        403
    );
    assert_eq!(
        get("hub.mode=unsubscribe&hub.verify_token=verify-me&hub.challenge=1")
            .await
            .0,
        403
    );
    assert_eq!(get("").await.0, 403);
}

#[tokio::test]
async fn bad_signatures_change_nothing() {
    let s = start().await;
    register(&s, pb::Tier::Tier2k, true, 80).await;
    let body = fixture("quality_update_flagged_legacy.json");
    assert_eq!(post(&s, &body, None).await.0, 401);
    assert_eq!(
        post(&s, &body, Some(sign(b"wrong-secret", &body))).await.0,
        401
    );
    let mut tampered = body.clone();
    let i = tampered.iter().position(|&b| b == b'F').unwrap();
    tampered[i] = b'U'; // FLAGGED → ULAGGED, signed over the original
    assert_eq!(
        post(&s, &tampered, Some(sign(SECRET.as_bytes(), &body)))
            .await
            .0,
        401
    );
    assert_eq!(post(&s, &body, Some("sha256=00".into())).await.0, 401);
    let o = s.get_org("acme").await;
    assert_eq!(o.quality_rating, pb::QualityRating::Unknown as i32);
    assert_eq!(o.tier, pb::Tier::Tier2k as i32);
    // oversized: refused before it is read
    let big = vec![b' '; 2 * 1024 * 1024];
    assert_eq!(post_signed(&s, &big).await.0, 413);
}

#[tokio::test]
async fn only_a_body_that_is_no_notification_is_refused() {
    let s = start().await;
    register(&s, pb::Tier::Tier2k, true, 80).await;
    assert_eq!(post_signed(&s, b"{not json").await.0, 400);
    assert_eq!(
        post_signed(&s, br#"{"object":"page","entry":[]}"#).await.0,
        400
    );
    assert_eq!(
        post_signed(&s, br#"{"object":"whatsapp_business_account","entry":{}}"#)
            .await
            .0,
        400
    );
    let m = s.metrics().await;
    assert!(
        m.contains(r#"tiergate_webhook_requests_total{result="malformed"} 3"#),
        "{m}"
    );
}

/// SPEC §5: a change tiergate cannot read (a limit of 1234, `TIER_NOT_SET` where it was not
/// expected, an unknown event) does not cost the readable changes beside it: they apply, the
/// unreadable one is counted, and Meta gets its 200 so it does not retry for days.
#[tokio::test]
async fn what_can_be_read_is_applied_and_the_body_answered_200() {
    let s = start().await;
    register(&s, pb::Tier::Tier2k, true, 80).await;
    let batch = format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"{WABA}","time":1,"changes":[
        {{"field":"phone_number_quality_update","value":{{"display_phone_number":"15550783881","event":"FLAGGED","current_limit":"TIER_1K"}}}},
        {{"field":"business_capability_update","value":{{"max_daily_conversations_per_business":1234}}}},
        {{"field":"phone_number_quality_update","value":{{"display_phone_number":"15550783881","event":"EXPLODED"}}}},
        {{"field":"business_capability_update","value":{{"whatsapp_business_manager_messaging_limit":"TIER_NOT_SET"}}}}]}}]}}"#
    );
    let (status, text) = post_signed(&s, batch.as_bytes()).await;
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (&v["applied"], &v["unreadable"], &v["ignored"]),
        (&1.into(), &2.into(), &1.into()),
        "{text}"
    );
    let o = s.get_org("acme").await;
    assert_eq!(o.quality_rating, pb::QualityRating::Red as i32);
    assert_eq!(
        o.tier,
        pb::Tier::Tier1k as i32,
        "TIER_NOT_SET changes no tier"
    );
    let m = s.metrics().await;
    for line in [
        r#"tiergate_webhook_changes_total{field="business_capability_update",result="unreadable"} 1"#,
        r#"tiergate_webhook_changes_total{field="phone_number_quality_update",result="unreadable"} 1"#,
        r#"tiergate_webhook_changes_total{field="business_capability_update",result="ignored"} 1"#,
        r#"tiergate_webhook_changes_total{field="phone_number_quality_update",result="applied"} 1"#,
        r#"tiergate_webhook_requests_total{result="ok"} 1"#,
    ] {
        assert!(m.contains(line), "{line}\n{m}");
    }
}

/// A failed status with 131048 for message `id`, built from Meta's pair-rate fixture.
fn spam_status(id: &str) -> Vec<u8> {
    let body = String::from_utf8(fixture("status_failed_pair_rate.json")).unwrap();
    let old_id = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA";
    assert!(body.contains(old_id) && body.contains("131056"));
    body.replace(old_id, id)
        .replace("131056", "131048")
        .into_bytes()
}

fn count(text: &str, what: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    v[what].as_u64().unwrap()
}

async fn paused_until(s: &Sidecar) -> i64 {
    s.get_org("acme").await.numbers[0].paused_until_unix_ms
}

/// Meta redelivers a webhook it thinks was lost: the number is paused once for one status, and
/// only a second, distinct 131048 doubles the pause.
#[tokio::test]
async fn a_redelivered_webhook_is_applied_once() {
    let s = start().await;
    register(&s, pb::Tier::Tier2k, true, 80).await;
    let now = s.advance(0).await;

    let (st, t) = post_signed(&s, &spam_status("wamid.first")).await;
    assert_eq!((st, count(&t, "applied")), (200, 1), "{t}");
    let once = paused_until(&s).await;
    let pause = once - now;
    assert!(pause > 0);

    let (st, t) = post_signed(&s, &spam_status("wamid.first")).await;
    assert_eq!(
        (st, count(&t, "duplicate"), count(&t, "applied")),
        (200, 1, 0),
        "{t}"
    );
    assert_eq!(
        paused_until(&s).await,
        once,
        "not paused again, not doubled"
    );

    post_signed(&s, &spam_status("wamid.second")).await;
    assert_eq!(
        paused_until(&s).await,
        now + 2 * pause,
        "a second strike doubles"
    );

    // business_capability_update: the limit applies once; an admin's later change is not
    // undone by the redelivery.
    let cap = fixture("business_capability_update.json");
    s.admin()
        .request_tier_change(s.req(pb::RequestTierChangeRequest {
            org_id: "acme".into(),
            target_tier: pb::Tier::Tier250 as i32,
        }))
        .await
        .unwrap();
    post_signed(&s, &cap).await;
    assert_eq!(s.get_org("acme").await.tier, pb::Tier::Tier2k as i32);
    s.admin()
        .request_tier_change(s.req(pb::RequestTierChangeRequest {
            org_id: "acme".into(),
            target_tier: pb::Tier::Tier250 as i32,
        }))
        .await
        .unwrap();
    let (st, t) = post_signed(&s, &cap).await;
    assert_eq!((st, count(&t, "duplicate")), (200, 1), "{t}");
    assert_eq!(s.get_org("acme").await.tier, pb::Tier::Tier250 as i32);

    let m = s.metrics().await;
    for line in [
        r#"tiergate_webhook_changes_total{field="messages",result="duplicate"} 1"#,
        r#"tiergate_webhook_changes_total{field="business_capability_update",result="duplicate"} 1"#,
        r#"tiergate_webhook_changes_total{field="messages",result="applied"} 2"#,
    ] {
        assert!(m.contains(line), "{line}\n{m}");
    }
}

/// The org's memory of deliveries is journaled: after `kill -9` and a restart, the embedded
/// store still drops a redelivery.
#[tokio::test]
async fn a_redelivery_after_a_restart_is_still_a_duplicate() {
    let dir = std::env::temp_dir().join(format!("tiergate-webhook-dedupe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir = dir.to_string_lossy().into_owned();
    let args = [
        "--store",
        "embedded",
        "--data-dir",
        dir.as_str(),
        "--manual-clock",
        "--set",
        "policy.auto_upgrade=false",
    ];
    let env = [("TIERGATE_WEBHOOK_SECRET", SECRET)];
    let s = Sidecar::start_with(&args, &env).await;
    register(&s, pb::Tier::Tier2k, true, 80).await;
    assert_eq!(post_signed(&s, &spam_status("wamid.kept")).await.0, 200);
    let once = paused_until(&s).await;
    s.kill9();

    let s = Sidecar::start_with(&args, &env).await;
    assert_eq!(paused_until(&s).await, once);
    let (st, t) = post_signed(&s, &spam_status("wamid.kept")).await;
    assert_eq!((st, count(&t, "duplicate")), (200, 1), "{t}");
    assert_eq!(paused_until(&s).await, once);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Meta's 2026 shapes, through the real binary: a held send puts the org under pacing review;
/// a 130472 for a recipient named only by its BSUID stops marketing to that person; contacts'
/// ids and a changed BSUID link a person's ids, so sends under any of them count once.
#[tokio::test]
async fn the_2026_shapes_are_read_and_applied() {
    let s = start().await;
    register(&s, pb::Tier::Tier2k, true, 80).await;

    // The held status also pairs its phone and BSUID: two changes applied.
    let (st, t) = post_signed(&s, &fixture("status_held_for_quality_assessment.json")).await;
    assert_eq!((st, count(&t, "applied")), (200, 2), "{t}");
    let o = s.get_org("acme").await;
    assert!(o.pacing_review);
    assert!(o.pacing_held_at_unix_ms > 0);

    let (st, t) = post_signed(&s, &fixture("status_failed_experiment_bsuid.json")).await;
    assert_eq!((st, count(&t, "applied")), (200, 1), "{t}");
    let by_bsuid = |category: pb::Category, user_id: &str| pb::AcquireRequest {
        recipient: String::new(),
        recipient_user_id: user_id.into(),
        category: category as i32,
        ..acquire("acme", 0)
    };
    let r = s
        .acquire_req(by_bsuid(pb::Category::Marketing, "GB.20385716640219937715"))
        .await;
    assert_eq!(reason(&r), pb::DenyReason::RecipientMarketingLimit);

    // The same code for another message, with the phone too: that phone's marketing stops.
    let with_phone = String::from_utf8(fixture("status_failed_experiment_bsuid.json"))
        .unwrap()
        .replace(r#""id":"wamid."#, r#""id":"wamid.phone"#)
        .replace(
            r#""recipient_user_id""#,
            r#""recipient_id":"16505559876","recipient_user_id""#,
        );
    let (st, t) = post_signed(&s, with_phone.as_bytes()).await;
    assert_eq!((st, count(&t, "applied")), (200, 2), "{t}");
    let mut req = acquire("acme", 16_505_559_876);
    req.category = pb::Category::Marketing as i32;
    assert_eq!(
        reason(&s.acquire_req(req).await),
        pb::DenyReason::RecipientMarketingLimit
    );

    // contacts[] pairs 16505551234 with its BSUID and parent; user_id_update renames the BSUID.
    for name in ["status_delivered_bsuid.json", "user_id_update.json"] {
        let (st, t) = post_signed(&s, &fixture(name)).await;
        assert_eq!(
            (st, count(&t, "applied"), count(&t, "unreadable")),
            (200, 1, 0),
            "{name}: {t}"
        );
    }
    let before = s.get_org("acme").await.usage.unwrap().unique_recipients_24h;
    assert!(allowed(&s.acquire("acme", 16_505_551_234).await));
    // The renamed BSUID and the parent BSUID are the same person: the same pair cell.
    for user_id in ["US.40917733529105862204", "US.ENT.11815799212886844830"] {
        let r = s
            .acquire_req(by_bsuid(pb::Category::Utility, user_id))
            .await;
        assert_eq!(reason(&r), pb::DenyReason::PairRate, "{user_id}");
    }
    let after = s.get_org("acme").await.usage.unwrap().unique_recipients_24h;
    assert_eq!(after, before + 1, "one person, one slot");
    let m = s.metrics().await;
    for line in [
        r#"tiergate_feedback_reactions_total{result="marketing_experiment"} 2"#,
        r#"tiergate_webhook_changes_total{field="user_id_update",result="applied"} 1"#,
    ] {
        assert!(m.contains(line), "{line}\n{m}");
    }
}

#[tokio::test]
async fn unknown_ids_are_counted_and_answered_200() {
    let s = start().await;
    let body = fixture("quality_update_flagged_legacy.json");
    let (status, text) = post_signed(&s, &body).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["unknown_id"], 1);
    let m = s.metrics().await;
    assert!(
        m.contains(r#"tiergate_webhook_changes_total{field="phone_number_quality_update",result="unknown_id"} 1"#),
        "{m}"
    );
    let list = s
        .admin()
        .list_orgs(s.req(pb::ListOrgsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(list.orgs.is_empty(), "unknown ids create nothing");
}

#[tokio::test]
async fn every_fixture_changes_state_as_specified() {
    let s = start().await;
    register(&s, pb::Tier::Tier2k, false, 80).await;
    let applied = |text: &str, field: &str| {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        v[field].as_u64().unwrap()
    };

    // FLAGGED (legacy): RED, and the limit Meta reports (TIER_1K, a decrease) applies
    let (st, t) = post_signed(&s, &fixture("quality_update_flagged_legacy.json")).await;
    assert_eq!((st, applied(&t, "applied")), (200, 1), "{t}");
    let o = s.get_org("acme").await;
    assert_eq!(o.quality_rating, pb::QualityRating::Red as i32);
    assert!(o.flagged_since_unix_ms > 0);
    assert_eq!(o.tier, pb::Tier::Tier1k as i32);

    // UPGRADE to TIER_10K: held while there is no escalation path
    let (_, t) = post_signed(&s, &fixture("quality_update_upgrade_legacy.json")).await;
    assert_eq!(applied(&t, "held"), 1, "{t}");
    let o = s.get_org("acme").await;
    assert_eq!(o.tier, pb::Tier::Tier1k as i32);
    assert_eq!(o.pending_tier, pb::Tier::Tier10k as i32);
    let o = s
        .admin()
        .set_escalation_path(s.req(pb::SetEscalationPathRequest {
            org_id: "acme".into(),
            path: Some(email()),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        o.tier,
        pb::Tier::Tier10k as i32,
        "applied once a path is set"
    );

    // THROUGHPUT_UPGRADE: the number goes to 1,000 msg/s
    let (st, _) = post_signed(&s, &fixture("quality_update_throughput_upgrade.json")).await;
    assert_eq!(st, 200);
    let o = s.get_org("acme").await;
    assert_eq!(o.numbers[0].effective_mps, 1_000);
    assert_eq!(o.tier, pb::Tier::Unlimited as i32);

    // business_capability_update: the portfolio limit, 2000 → TIER_2K
    post_signed(&s, &fixture("business_capability_update.json")).await;
    assert_eq!(s.get_org("acme").await.tier, pb::Tier::Tier2k as i32);

    // template paused (FIRST_PAUSE: 3 h), refused until the pause ends
    let now = s.advance(0).await;
    post_signed(&s, &fixture("template_paused.json")).await;
    let o = s.get_org("acme").await;
    assert_eq!(o.paused_templates[0].template_name, "order_shipped");
    assert_eq!(o.paused_templates[0].until_unix_ms, now + 3 * HOUR as i64);
    let mut req = acquire("acme", 4_915_112_345_678);
    req.template_name = "order_shipped".into();
    let r = s.acquire_req(req.clone()).await;
    assert_eq!(reason(&r), pb::DenyReason::TemplatePaused);
    assert_eq!(r.retry_after_ms, 3 * HOUR);
    s.advance(3 * HOUR).await;
    assert!(allowed(&s.acquire_req(req).await));

    // template quality update: noted, nothing blocks
    let (st, t) = post_signed(&s, &fixture("template_quality_update.json")).await;
    assert_eq!((st, applied(&t, "applied")), (200, 1));

    // a failed status with 131056: that pair backs off
    post_signed(&s, &fixture("status_failed_pair_rate.json")).await;
    assert_eq!(s.get_org("acme").await.pair_backoffs, 1);
    let m = s.metrics().await;
    assert!(
        m.contains(r#"tiergate_feedback_reactions_total{result="pair_backoff"} 1"#),
        "{m}"
    );

    // account disabled: every send refused until an admin reinstates
    post_signed(&s, &fixture("account_update_disabled.json")).await;
    let o = s.get_org("acme").await;
    assert!(o.account_restricted);
    assert_eq!(
        reason(&s.acquire("acme", 1).await),
        pb::DenyReason::AccountRestricted
    );
}

#[tokio::test]
async fn flagged_then_seven_days_then_restricted_tier() {
    let s = Sidecar::start_with(
        &[
            "--manual-clock",
            "--set",
            "policy.auto_upgrade=false",
            "--set",
            "policy.small_sender_weekly_limit=10",
        ],
        &[("TIERGATE_WEBHOOK_SECRET", SECRET)],
    )
    .await;
    register(&s, pb::Tier::Tier10k, true, 1_000).await;
    // The legacy fixture reports TIER_1K; restricted one rung down the current ladder = 250.
    post_signed(&s, &fixture("quality_update_flagged_legacy.json")).await;
    s.advance(7 * DAY - HOUR).await;
    for i in 0..300 {
        assert!(
            allowed(&s.acquire("acme", i).await),
            "inside the grace, send {i}"
        );
    }
    s.advance(HOUR).await;
    let r = s.acquire("acme", 10_000).await;
    assert_eq!(reason(&r), pb::DenyReason::QualityRestricted);
    assert_eq!(r.usage.unwrap().tier_limit, 250);
}
