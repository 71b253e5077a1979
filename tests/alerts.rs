//! Alerts (`[alerts]`) against a local receiver: signed, retried after failures until taken,
//! each delivered once; kept across a restart on the embedded store; sent by one replica of two
//! on Redis; a receiver that hangs never slows a decision.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use support::*;
use tiergate_proto::v1 as pb;
use tiergate_server::webhook::signature;

const SECRET: &str = "alert-secret-0123";

#[derive(Clone, Default)]
struct Receiver {
    /// Every POST: (signature valid, body).
    seen: Arc<Mutex<Vec<(bool, Value)>>>,
    /// How many POSTs to refuse (500) before taking them.
    refuse: Arc<Mutex<usize>>,
}

impl Receiver {
    /// The alerts taken (answered 200), in order.
    fn taken(&self) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(ok, v)| *ok && v["taken"] == true)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn kinds(&self) -> Vec<String> {
        self.taken()
            .iter()
            .map(|v| v["kind"].as_str().unwrap().to_owned())
            .collect()
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let sig = headers
        .get("x-tiergate-signature-256")
        .and_then(|v| v.to_str().ok());
    let ok = signature::verify(SECRET.as_bytes(), &body, sig);
    let mut v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let refuse = {
        let mut n = r.refuse.lock().unwrap();
        let refuse = *n > 0;
        *n = n.saturating_sub(1);
        refuse
    };
    v["taken"] = Value::Bool(ok && !refuse);
    r.seen.lock().unwrap().push((ok, v));
    if !ok {
        StatusCode::UNAUTHORIZED
    } else if refuse {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

async fn receiver(refuse: usize) -> (String, Receiver) {
    let r = Receiver::default();
    *r.refuse.lock().unwrap() = refuse;
    let app = axum::Router::new()
        .route("/alerts", post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/alerts"), r)
}

async fn rate(s: &Sidecar, org_id: &str, rating: pb::QualityRating) {
    s.admin()
        .set_quality_rating(s.req(pb::SetQualityRatingRequest {
            org_id: org_id.into(),
            rating: rating as i32,
        }))
        .await
        .unwrap();
}

/// One batch of sends from `phone`, to each recipient of `to`.
async fn send_to(s: &Sidecar, org_id: &str, phone: &str, to: std::ops::Range<u64>) {
    let sends = to
        .map(|r| pb::AcquireRequest {
            phone_number_id: phone.into(),
            ..acquire(org_id, r)
        })
        .collect();
    s.governor()
        .acquire_batch(pb::AcquireBatchRequest { sends })
        .await
        .unwrap();
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(30), "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn args<'a>(url: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--set",
        "alerts.check_ms=100",
        "--set",
        "alerts.max_backoff_ms=1000",
        "--set",
        "policy.auto_upgrade=false",
        "--set",
    ];
    v.push(Box::leak(format!("alerts.url={url}").into_boxed_str()));
    v.extend_from_slice(more);
    v
}

#[tokio::test]
async fn alerts_are_signed_retried_until_taken_and_each_delivered_once() {
    let (url, r) = receiver(2).await;
    let s = Sidecar::start_with(&args(&url, &[]), &[("TIERGATE_ALERTS_SECRET", SECRET)]).await;
    s.put_org(org_on("acme", pb::Tier::Tier50, "901")).await;
    // Seen once as it was registered (its baseline) before it changes.
    tokio::time::sleep(Duration::from_millis(400)).await;
    rate(&s, "acme", pb::QualityRating::Red).await;
    until("the RED alert", || {
        r.kinds().contains(&"rating_changed".into())
    })
    .await;
    let red = r
        .taken()
        .into_iter()
        .find(|v| v["kind"] == "rating_changed")
        .unwrap();
    assert_eq!(red["org_id"], "acme");
    assert_eq!(red["subject"], "RED");
    assert_eq!(red["from"], "UNKNOWN");
    assert!(red["text"].as_str().unwrap().contains("RED"), "{red}");
    // The two refusals were the same alert, tried again.
    let all = r.seen.lock().unwrap().clone();
    assert!(all.len() >= 3, "{all:?}");
    assert!(all.iter().all(|(ok, _)| *ok), "every body signed");
    assert_eq!(all[0].1["id"], red["id"]);
    assert_eq!(all[1].1["id"], red["id"]);

    // The window at 80 % and full (TIER_50), a template paused, and back to GREEN.
    send_to(&s, "acme", "901", 7_000..7_040).await;
    until("window_80", || r.kinds().contains(&"window_80".into())).await;
    send_to(&s, "acme", "901", 7_040..7_050).await;
    s.admin()
        .pause_template(s.req(pb::PauseTemplateRequest {
            org_id: "acme".into(),
            template_name: "promo".into(),
            until_unix_ms: 0,
        }))
        .await
        .unwrap();
    rate(&s, "acme", pb::QualityRating::Green).await;
    until("the rest", || {
        let k = r.kinds();
        ["window_full", "template_disabled"]
            .iter()
            .all(|want| k.contains(&(*want).to_owned()))
            && k.iter().filter(|k| *k == "rating_changed").count() == 2
    })
    .await;
    // Each alert once, whatever the retries.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let taken = r.taken();
    let mut ids: Vec<&str> = taken.iter().map(|v| v["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "an alert taken twice: {taken:?}");
    assert_eq!(n, 5, "{:?}", r.kinds());
    let m = s.metrics().await;
    assert!(m.contains("tiergate_alerts_delivered_total 5"), "{m}");
    assert!(m.contains("tiergate_alerts_failed_total 2"), "{m}");
    assert!(m.contains("tiergate_alerts_queued 0"), "{m}");
}

#[tokio::test]
async fn undelivered_alerts_survive_a_restart_of_the_embedded_store() {
    let (url, r) = receiver(usize::MAX).await;
    let dir = std::env::temp_dir().join(format!("tiergate-alerts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_string_lossy().into_owned();
    let a = args(&url, &["--store", "embedded", "--data-dir", &d]);
    let env = [("TIERGATE_ALERTS_SECRET", SECRET)];
    let s = Sidecar::start_with(&a, &env).await;
    s.put_org(org_on("keep", pb::Tier::Tier250, "902")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    rate(&s, "keep", pb::QualityRating::Red).await;
    until("a refused attempt", || !r.seen.lock().unwrap().is_empty()).await;
    let id = r.seen.lock().unwrap()[0].1["id"].clone();
    assert!(s.terminate().await.success());
    // The receiver recovers; the sidecar starts again on the same directory.
    *r.refuse.lock().unwrap() = 0;
    let s = Sidecar::start_with(&a, &env).await;
    until("the kept alert", || !r.taken().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let taken = r.taken();
    assert_eq!(taken.len(), 1, "kept, and not raised again: {taken:?}");
    assert_eq!(taken[0]["id"], id);
    assert_eq!(taken[0]["kind"], "rating_changed");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_two_replicas_send_each_alert_once() {
    let Some(redis) = RedisServer::start("alerts-replicas") else {
        return;
    };
    let (url, r) = receiver(0).await;
    let redis_url = redis.url();
    let a = args(&url, &["--store", "redis", "--redis-url", &redis_url]);
    let env = [("TIERGATE_ALERTS_SECRET", SECRET)];
    let one = Sidecar::start_with(&a, &env).await;
    let two = Sidecar::start_with(&a, &env).await;
    one.put_org(org_on("shared", pb::Tier::Tier250, "903"))
        .await;
    // Both replicas know the org before it changes.
    two.get_org("shared").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    rate(&two, "shared", pb::QualityRating::Red).await;
    until("the RED alert", || !r.taken().is_empty()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let taken = r.taken();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0]["subject"], "RED");
}

#[tokio::test]
async fn a_receiver_that_hangs_never_slows_a_decision() {
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    let s = Sidecar::start(&args(&url, &["--set", "alerts.timeout_ms=60000"])).await;
    s.put_org(org_on("slow", pb::Tier::Tier50, "904")).await;
    rate(&s, "slow", pb::QualityRating::Red).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..50 {
        let req = pb::AcquireRequest {
            phone_number_id: "904".into(),
            ..acquire("slow", 1_000 + i)
        };
        let r = tokio::time::timeout(Duration::from_secs(5), s.governor().acquire(req))
            .await
            .expect("a decision while the receiver hangs")
            .unwrap()
            .into_inner();
        assert!(allowed(&r), "{r:?}");
    }
    // The RED alert (and, as the window fills, the window's) still waits for the receiver.
    let m = s.metrics().await;
    let queued: u64 = m
        .lines()
        .find_map(|l| {
            l.strip_prefix("tiergate_alerts_queued ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no tiergate_alerts_queued in {m}"));
    assert!((1..=3).contains(&queued), "{queued} queued");
    drop(listener);
}

#[tokio::test]
async fn bad_alert_settings_are_refused_naming_the_key_and_line() {
    let file = std::env::temp_dir().join(format!("tiergate-alerts-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        "[alerts]\nurl = \"ftp://x\"\nevents = [\"rating_changed\", \"weather\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(
        err.contains("alerts.url") && err.contains("line 2"),
        "{err}"
    );
    assert!(
        err.contains("alerts.events") && err.contains("weather"),
        "{err}"
    );
}
