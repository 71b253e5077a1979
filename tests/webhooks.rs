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
async fn malformed_bodies_apply_nothing() {
    let s = start().await;
    register(&s, pb::Tier::Tier2k, true, 80).await;
    assert_eq!(post_signed(&s, b"{not json").await.0, 400);
    // one valid change and one broken one in the same batch: neither is applied
    let batch = format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"{WABA}","changes":[
        {{"field":"phone_number_quality_update","value":{{"display_phone_number":"15550783881","event":"FLAGGED","current_limit":"TIER_1K"}}}},
        {{"field":"business_capability_update","value":{{"max_daily_conversations_per_business":1234}}}}]}}]}}"#
    );
    let (status, text) = post_signed(&s, batch.as_bytes()).await;
    assert_eq!(status, 400, "{text}");
    let o = s.get_org("acme").await;
    assert_eq!(o.quality_rating, pb::QualityRating::Unknown as i32);
    assert_eq!(o.tier, pb::Tier::Tier2k as i32);
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
