//! `SendTemplate` wraps the send: a fake Cloud API on loopback records every call and answers
//! with whatever a test asks for.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use support::*;
use tiergate_proto::v1 as pb;

#[derive(Debug, Clone)]
struct Call {
    phone_number_id: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Value,
}

#[derive(Clone, Default)]
struct Fake {
    calls: Arc<Mutex<Vec<Call>>>,
}

/// The answer depends on the recipient: `…0` succeeds, `9000000…` hangs, `1310560…` etc.
/// answer with the code in their first six digits, `777…` is accepted but held for quality
/// assessment (portfolio pacing).
async fn messages(
    State(f): State<Fake>,
    Path(phone): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    f.calls.lock().unwrap().push(Call {
        phone_number_id: phone,
        authorization: h("authorization"),
        content_type: h("content-type"),
        body: body.clone(),
    });
    let to = body["to"].as_str().unwrap_or_default().to_owned();
    if to.starts_with("9000000") {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    for code in [131_056, 130_429, 368, 132_015, 131_050, 131_063] {
        if to.starts_with(&code.to_string()) {
            return (
                StatusCode::BAD_REQUEST,
                Json(
                    json!({"error": {"message": "(#x) failed", "type": "OAuthException", "code": code,
                    "error_data": {"messaging_product": "whatsapp", "details": format!("error {code}")},
                    "fbtrace_id": "Az8"}}),
                ),
            );
        }
    }
    if to.starts_with("777") {
        return (
            StatusCode::OK,
            Json(json!({"messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": format!("wamid.{to}"),
                              "message_status": "held_for_quality_assessment"}]})),
        );
    }
    (
        StatusCode::OK,
        Json(json!({"messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": format!("wamid.{to}"), "message_status": "accepted"}]})),
    )
}

async fn fake_upstream() -> (String, Fake) {
    let fake = Fake::default();
    let app = axum::Router::new()
        .route("/v21.0/{phone}/messages", post(messages))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v21.0"), fake)
}

fn template(org: &str, recipient: &str) -> pb::SendTemplateRequest {
    pb::SendTemplateRequest {
        org_id: org.into(),
        phone_number_id: FIXTURE_PHONE.into(),
        recipient: recipient.into(),
        template_name: "order_shipped".into(),
        category: pb::Category::Utility as i32,
        idempotency_key: String::new(),
        recipient_user_id: String::new(),
        language_code: "en_US".into(),
        components_json: r#"[{"type":"body","parameters":[{"type":"text","text":"A-42"}]}]"#.into(),
        max_wait_ms: 0,
    }
}

async fn start(url: &str) -> Sidecar {
    Sidecar::start_with(
        &[
            "--manual-clock",
            "--upstream-url",
            url,
            "--set",
            "server.upstream_timeout_ms=500",
            "--set",
            "policy.auto_upgrade=false",
        ],
        &[("TIERGATE_UPSTREAM_TOKEN", "upstream-secret")],
    )
    .await
}

#[tokio::test]
async fn send_reaches_upstream_with_path_headers_and_body() {
    let (url, fake) = fake_upstream().await;
    let s = start(&url).await;
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    let r = s
        .governor()
        .send_template(template("acme", "4915112345670"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.verdict, pb::Verdict::Allow as i32);
    assert_eq!(r.message_id, "wamid.4915112345670");
    assert_eq!(r.error_code, 0);
    assert_eq!(r.advice(), pb::Advice::Unspecified);
    let calls = fake.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(c.phone_number_id, FIXTURE_PHONE);
    assert_eq!(c.authorization.as_deref(), Some("Bearer upstream-secret"));
    assert_eq!(c.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        c.body,
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "4915112345670",
            "type": "template",
            "template": {
                "name": "order_shipped",
                "language": {"code": "en_US"},
                "components": [{"type": "body", "parameters": [{"type": "text", "text": "A-42"}]}]
            }
        })
    );
    assert_eq!(s.get_org("acme").await.usage.unwrap().templates_7d, 1);
}

#[tokio::test]
async fn denied_sends_never_reach_upstream() {
    let (url, fake) = fake_upstream().await;
    let s = start(&url).await;
    let mut o = org("acme", pb::Tier::Tier250);
    o.escalation_path = None;
    s.put_org(o).await;
    let r = s
        .governor()
        .send_template(template("acme", "4915112345670"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.reason, pb::DenyReason::EscalationPathRequired as i32);
    assert!(fake.calls.lock().unwrap().is_empty());
    // bad input is refused before anything happens
    let mut bad = template("acme", "4915112345670");
    bad.components_json = "{not json".into();
    let e = s.governor().send_template(bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("components_json"));
}

#[tokio::test]
async fn whatsapp_errors_feed_back() {
    let (url, _fake) = fake_upstream().await;
    let s = start(&url).await;
    s.put_org(org("acme", pb::Tier::Tier10k)).await;
    let send = |to: &'static str| {
        let mut g = s.governor();
        async move { g.send_template(template("acme", to)).await }
    };
    let r = send("131056000001").await.unwrap().into_inner();
    assert_eq!(r.error_code, 131_056);
    assert_eq!(r.error_title, "error 131056");
    // SPEC §2a: the advice, and the pair's back-off as the wait
    assert_eq!(r.verdict, pb::Verdict::Allow as i32);
    assert_eq!(
        (r.advice(), r.retry_after_ms),
        (pb::Advice::RetryAfter, 1_000)
    );
    let o = s.get_org("acme").await;
    assert_eq!(o.pair_backoffs, 1);
    assert_eq!(
        o.usage.unwrap().templates_7d,
        1,
        "a rejected send still counts"
    );
    let r = send("130429000001").await.unwrap().into_inner();
    assert_eq!(r.error_code, 130_429);
    // cut from 1,000 to 500 msg/s: one message's interval at the cut rate
    assert_eq!((r.advice(), r.retry_after_ms), (pb::Advice::RetryAfter, 2));
    assert_eq!(s.get_org("acme").await.numbers[0].effective_mps, 500);
    let r = send("368000000001").await.unwrap().into_inner();
    assert_eq!((r.advice(), r.retry_after_ms), (pb::Advice::StopSending, 0));
    let o = s.get_org("acme").await;
    assert!(o.account_restricted);
    let r = send("4915112345670").await.unwrap().into_inner();
    assert_eq!(r.reason, pb::DenyReason::AccountRestricted as i32);
    s.admin()
        .set_account_restricted(s.req(pb::SetAccountRestrictedRequest {
            org_id: "acme".into(),
            restricted: false,
        }))
        .await
        .unwrap();
    let r = send("132015000001").await.unwrap().into_inner();
    assert_eq!(r.error_code, 132_015);
    assert_eq!(
        (r.advice(), r.retry_after_ms),
        (pb::Advice::TemplatePaused, 0)
    );
    let o = s.get_org("acme").await;
    assert_eq!(o.paused_templates[0].template_name, "order_shipped");
    let r = send("4915112345671").await.unwrap().into_inner();
    assert_eq!(r.reason, pb::DenyReason::TemplatePaused as i32);
    s.admin()
        .reinstate_template(s.req(pb::ReinstateTemplateRequest {
            org_id: "acme".into(),
            template_name: "order_shipped".into(),
        }))
        .await
        .unwrap();
    let r = send("131050000001").await.unwrap().into_inner();
    assert_eq!((r.advice(), r.retry_after_ms), (pb::Advice::DoNotRetry, 0));
    let r = send("131063000001").await.unwrap().into_inner();
    assert_eq!(
        (r.advice(), r.retry_after_ms),
        (pb::Advice::UseMarketingApi, 0)
    );
    assert!(s.get_org("acme").await.marketing_api_required);
    let body = http_get(&s.http, "/metrics").await;
    assert!(
        body.contains("tiergate_upstream_calls_total{result=\"rejected\"} 6"),
        "{body}"
    );
    assert!(
        body.contains("tiergate_feedback_reactions_total{result=\"pair_backoff\"} 1"),
        "{body}"
    );
}

#[tokio::test]
async fn timeouts_and_connection_errors_give_the_slot_back() {
    let (url, _fake) = fake_upstream().await;
    let s = start(&url).await;
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    let r = s
        .governor()
        .send_template(template("acme", "900000000001"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.verdict, pb::Verdict::Allow as i32);
    assert!(r.message_id.is_empty());
    assert!(r.error_title.contains("timed out"), "{}", r.error_title);
    let u = s.get_org("acme").await.usage.unwrap();
    assert_eq!((u.unique_recipients_24h, u.templates_7d), (0, 0));

    // nothing listens here
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let s = start(&format!("http://{closed}/v21.0")).await;
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    let r = s
        .governor()
        .send_template(template("acme", "4915112345670"))
        .await
        .unwrap()
        .into_inner();
    assert!(r.error_title.contains("unreachable"), "{}", r.error_title);
    assert_eq!(s.get_org("acme").await.usage.unwrap().templates_7d, 0);
}

#[tokio::test]
async fn a_send_held_for_quality_assessment_stays_counted_and_flags_pacing() {
    let (url, fake) = fake_upstream().await;
    let s = start(&url).await;
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    let o = s.get_org("acme").await;
    assert!(!o.pacing_review);
    assert!(
        s.metrics()
            .await
            .contains("tiergate_org_pacing_review{org=\"acme\"} 0")
    );
    let r = s
        .governor()
        .send_template(template("acme", "777000000001"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.verdict, pb::Verdict::Allow as i32);
    assert_eq!(r.message_id, "wamid.777000000001");
    assert_eq!((r.error_code, r.advice()), (0, pb::Advice::Unspecified));
    assert_eq!(fake.calls.lock().unwrap().len(), 1);
    let o = s.get_org("acme").await;
    assert!(o.pacing_review);
    assert!(o.pacing_held_at_unix_ms > 0);
    let u = o.usage.unwrap();
    assert_eq!(
        (u.unique_recipients_24h, u.templates_7d),
        (1, 1),
        "a held send stays counted"
    );
    let body = s.metrics().await;
    assert!(
        body.contains("tiergate_org_pacing_review{org=\"acme\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("tiergate_upstream_calls_total{result=\"held\"} 1"),
        "{body}"
    );
    // an accepted send does not flag it; the review ends `policy.pacing_review_ms` (24 h)
    // after the last hold
    s.governor()
        .send_template(template("acme", "4915112345670"))
        .await
        .unwrap();
    s.advance(DAY - 1).await;
    assert!(s.get_org("acme").await.pacing_review);
    s.advance(1).await;
    assert!(!s.get_org("acme").await.pacing_review);
    assert!(
        s.metrics()
            .await
            .contains("tiergate_org_pacing_review{org=\"acme\"} 0")
    );
}

/// A waiting SendTemplate (SPEC §2a) is held until its send may go, then forwarded once.
#[tokio::test]
async fn a_waiting_send_is_forwarded_once_it_may_go() {
    let (url, fake) = fake_upstream().await;
    let s = Sidecar::start_with(
        &[
            "--upstream-url",
            &url,
            "--set",
            "policy.throughput_burst_percent=0",
        ],
        &[("TIERGATE_UPSTREAM_TOKEN", "upstream-secret")],
    )
    .await;
    let mut o = org("slow", pb::Tier::Tier250);
    o.phone_numbers[0].throughput_mps = 1;
    s.put_org(o).await;
    let mut tasks = Vec::new();
    for r in 0..3 {
        let mut g = s.governor();
        let mut req = template("slow", &format!("49151000000{r}0"));
        req.org_id = "slow".into();
        req.max_wait_ms = 5_000;
        tasks.push(tokio::spawn(async move {
            g.send_template(req).await.unwrap().into_inner()
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.verdict, pb::Verdict::Allow as i32, "{r:?}");
        assert!(r.message_id.starts_with("wamid."), "{r:?}");
    }
    assert_eq!(fake.calls.lock().unwrap().len(), 3);
    // Without a wait, the same burst is refused after the first.
    let mut req = template("slow", "4915100000990");
    req.org_id = "slow".into();
    let r = s.governor().send_template(req).await.unwrap().into_inner();
    assert_eq!(r.reason, pb::DenyReason::Throughput as i32, "{r:?}");
    assert_eq!(fake.calls.lock().unwrap().len(), 3);
}
