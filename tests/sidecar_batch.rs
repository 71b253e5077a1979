//! `SendGovernor.AcquireBatch` (SPEC §2a) end to end on every store: a batch decides its items
//! exactly as lone Acquires in sequence would; a bad item, an unknown org or too many items
//! refuse the whole batch and record nothing; acknowledged batches survive `kill -9` (embedded);
//! two replicas taking batches never exceed the tier together (Redis).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use support::*;
use tiergate_proto::v1 as pb;
use tonic::Code;

const MANUAL: &[&str] = &["--manual-clock", "--set", "policy.auto_upgrade=false"];

fn send(org_id: &str, phone: &str, recipient: u64, key: &str) -> pb::AcquireRequest {
    pb::AcquireRequest {
        org_id: org_id.into(),
        phone_number_id: phone.into(),
        idempotency_key: key.into(),
        ..acquire(org_id, recipient)
    }
}

fn batch(sends: Vec<pb::AcquireRequest>) -> pb::AcquireBatchRequest {
    pb::AcquireBatchRequest { sends }
}

async fn acquire_batch(
    s: &Sidecar,
    sends: Vec<pb::AcquireRequest>,
) -> Result<Vec<pb::AcquireResponse>, tonic::Status> {
    s.governor()
        .acquire_batch(batch(sends))
        .await
        .map(|r| r.into_inner().results)
}

/// A response with its permit's org taken out (`acme:17` → `17`), to compare two orgs' answers.
fn anonymous(mut r: pb::AcquireResponse) -> pb::AcquireResponse {
    if let Some((_, seq)) = r.permit_id.split_once(':') {
        r.permit_id = seq.to_owned();
    }
    r
}

/// One org's sequence: distinct recipients, a repeat inside the pair-rate window, an
/// idempotency key used twice, then past the end of the tier.
fn sequence(org_id: &str, phone: &str) -> Vec<pb::AcquireRequest> {
    let mut v = Vec::new();
    for r in 0..200 {
        v.push(send(org_id, phone, 1_000 + r, ""));
    }
    v.push(send(org_id, phone, 1_005, ""));
    v.push(send(org_id, phone, 9_300, "k-300"));
    v.push(send(org_id, phone, 9_300, "k-300"));
    for r in 200..260 {
        v.push(send(org_id, phone, 1_000 + r, ""));
    }
    v.push(send(org_id, phone, 1_007, ""));
    v.push(send(org_id, phone, 9_300, "k-300"));
    v
}

every_backend! {
async fn a_batch_equals_its_items_in_sequence() {
    let s = start!(MANUAL);
    s.put_org(org_on("lone", pb::Tier::Tier250, "201")).await;
    s.put_org(org_on("bat", pb::Tier::Tier250, "202")).await;
    s.put_org(org_on("mix", pb::Tier::Unlimited, "203")).await;
    let mut lone = Vec::new();
    for req in sequence("lone", "201") {
        lone.push(anonymous(s.acquire_req(req).await));
    }
    // The same sequence in three batches, each interleaved with another org's sends (a batch
    // spans orgs; each org keeps its order): the repeated recipient and the first key replay
    // fall in the second, the end of the tier and the replay across batches in the third.
    let mut got = Vec::new();
    let mut mixed = 0;
    let seq = sequence("bat", "202");
    for chunk in [&seq[..150], &seq[150..203], &seq[203..]] {
        let mut items = Vec::new();
        for (i, req) in chunk.iter().enumerate() {
            items.push(req.clone());
            if i % 3 == 0 {
                items.push(send("mix", "203", 50_000 + mixed, ""));
                mixed += 1;
            }
        }
        let results = acquire_batch(&s, items.clone()).await.unwrap();
        assert_eq!(results.len(), items.len());
        for (req, r) in items.iter().zip(results) {
            if req.org_id == "mix" {
                assert!(allowed(&r), "{r:?}");
                assert!(r.permit_id.starts_with("mix:"), "{r:?}");
            } else {
                assert!(r.permit_id.is_empty() || r.permit_id.starts_with("bat:"));
                got.push(anonymous(r));
            }
        }
    }
    assert_eq!(got.len(), lone.len());
    for (i, (b, l)) in got.iter().zip(&lone).enumerate() {
        assert_eq!(b, l, "item {i}: batch vs lone");
    }
    // What the sequence holds, so the comparison above compares something.
    assert_eq!(reason(&got[200]), pb::DenyReason::PairRate);
    assert!(allowed(&got[201]));
    assert_eq!(got[202].permit_id, got[201].permit_id, "key replayed in a batch");
    assert_eq!(got[264].permit_id, got[201].permit_id, "key replayed across batches");
    assert_eq!(got.iter().filter(|r| allowed(r)).count(), 252);
    assert!(allowed(&got[251]));
    assert_eq!(reason(&got[252]), pb::DenyReason::TierLimit);
    assert!(got[252].retry_after_ms > 0);
    assert_eq!(reason(&got[263]), pb::DenyReason::PairRate);
    let (b, l) = (s.get_org("bat").await.usage, s.get_org("lone").await.usage);
    assert_eq!(b, l);
    assert_eq!(b.unwrap().unique_recipients_24h, 250);
    assert_eq!(s.get_org("mix").await.usage.unwrap().templates_7d, mixed);
}

async fn a_bad_item_or_unknown_org_refuses_the_whole_batch() {
    let s = start!(MANUAL);
    s.put_org(org_on("acme", pb::Tier::Tier250, "301")).await;
    let good = |r: u64| send("acme", "301", r, "");
    let cases: Vec<(Vec<pb::AcquireRequest>, Code, &str)> = vec![
        (
            vec![good(1), good(2), send("acme", "301", 3, "").tap(|r| r.recipient = "+49 151".into())],
            Code::InvalidArgument,
            "sends[2].recipient",
        ),
        (vec![good(1), send("nobody", "301", 2, "")], Code::NotFound, "sends[1].org_id"),
        (vec![good(1), send("acme", "999", 2, "")], Code::NotFound, "sends[1].phone_number_id"),
        (
            vec![good(1), good(2).tap(|r| r.template_name.clear())],
            Code::InvalidArgument,
            "sends[1].template_name",
        ),
        (
            vec![good(1), good(2).tap(|r| r.category = pb::Category::Unspecified as i32)],
            Code::InvalidArgument,
            "sends[1].category",
        ),
        (
            vec![good(1), good(2).tap(|r| r.org_id.clear())],
            Code::InvalidArgument,
            "sends[1].org_id",
        ),
        (vec![], Code::InvalidArgument, "sends"),
    ];
    for (items, code, field) in cases {
        let e = acquire_batch(&s, items).await.unwrap_err();
        assert_eq!(e.code(), code, "{field}: {e:?}");
        assert!(e.message().starts_with(field), "{field}: {e:?}");
    }
    // Nothing was recorded, and the org's good sends still go through afterwards.
    let u = s.get_org("acme").await.usage.unwrap();
    assert_eq!((u.templates_7d, u.unique_recipients_24h), (0, 0));
    let r = acquire_batch(&s, vec![good(1), good(2)]).await.unwrap();
    assert!(r.iter().all(allowed));
    assert!(r[0].permit_id.starts_with("acme:"), "{r:?}");
    assert_eq!(s.get_org("acme").await.usage.unwrap().templates_7d, 2);
}

async fn at_most_max_batch_sends_and_their_own_size_limit() {
    let s = start!(MANUAL);
    s.put_org(org_on("big", pb::Tier::Unlimited, "401")).await;
    // 1,000 sends are far over server.max_request_bytes (64 KiB)'s share of one send, but a
    // batch has its own limit: all decided.
    let full: Vec<_> = (0..1_000).map(|r| send("big", "401", 70_000 + r, "")).collect();
    let r = acquire_batch(&s, full.clone()).await.unwrap();
    assert_eq!(r.len(), 1_000);
    assert!(r.iter().all(allowed));
    assert_eq!(r[999].usage.as_ref().unwrap().unique_recipients_24h, 1_000);
    // One more is refused whole, naming the limit.
    let mut over = full;
    over.push(send("big", "401", 80_000, ""));
    let e = acquire_batch(&s, over).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("sends:"), "{e:?}");
    assert!(e.message().contains("1000 (server.max_batch)"), "{e:?}");
    // Over server.max_batch_request_bytes (1 MiB): RESOURCE_EXHAUSTED naming that key.
    let huge: Vec<_> = (0..1_000)
        .map(|r| send("big", "401", r, "").tap(|s| s.template_name = "t".repeat(1_100)))
        .collect();
    let e = acquire_batch(&s, huge).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("server.max_batch_request_bytes"), "{e:?}");
    assert_eq!(s.get_org("big").await.usage.unwrap().templates_7d, 1_000);
    // A lone Acquire keeps the small limit.
    let e = s
        .governor()
        .acquire(send("big", "401", 1, "").tap(|s| s.template_name = "t".repeat(70_000)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("server.max_request_bytes"), "{e:?}");
}

async fn a_smaller_max_batch_is_obeyed() {
    let s = start!(&["--manual-clock", "--set", "server.max_batch=3"]);
    s.put_org(org_on("few", pb::Tier::Unlimited, "501")).await;
    let items: Vec<_> = (0..4).map(|r| send("few", "501", r, "")).collect();
    let e = acquire_batch(&s, items.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("limit of 3 (server.max_batch)"), "{e:?}");
    assert_eq!(acquire_batch(&s, items[..3].to_vec()).await.unwrap().len(), 3);
}
}

/// `f` applied to a value, returned (builds one-off variants of a request inline).
trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

impl Tap for pb::AcquireRequest {}

#[tokio::test]
async fn embedded_acknowledged_batches_survive_kill_9() {
    let dir = std::env::temp_dir().join(format!("tiergate-batch-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_string_lossy().into_owned();
    // The wall clock: the number's throughput (1,000/s) refills as the load goes on.
    let args = ["--store", "embedded", "--data-dir", &d];
    let s = Sidecar::start(&args).await;
    s.put_org(org_on("crash", pb::Tier::Unlimited, "601")).await;
    let acked = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let mut g = s.governor();
        let (acked, in_flight) = (acked.clone(), in_flight.clone());
        tasks.push(tokio::spawn(async move {
            for b in 0u64.. {
                let items = (0..50)
                    .map(|i| send("crash", "601", 10_000_000 * (w + 1) + b * 100 + i, ""))
                    .collect();
                in_flight.fetch_add(50, Ordering::SeqCst);
                let Ok(r) = g.acquire_batch(batch(items)).await else {
                    return;
                };
                let n = r.into_inner().results.iter().filter(|r| allowed(r)).count();
                acked.fetch_add(n as u64, Ordering::SeqCst);
                in_flight.fetch_sub(50, Ordering::SeqCst);
            }
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while acked.load(Ordering::SeqCst) < 1_500 {
        assert!(
            std::time::Instant::now() < deadline,
            "too few sends allowed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let (acked, in_flight) = (
        acked.load(Ordering::SeqCst),
        in_flight.load(Ordering::SeqCst),
    );
    let s = Sidecar::start(&args).await;
    let counted = s.get_org("crash").await.usage.unwrap().templates_7d;
    assert!(counted >= acked, "{counted} counted < {acked} acknowledged");
    assert!(
        counted <= acked + in_flight,
        "{counted} counted > {acked} acknowledged + {in_flight} in flight"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_two_replicas_taking_batches_never_exceed_the_tier() {
    let Some(redis) = RedisServer::start("batch-replicas") else {
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
    let a = Arc::new(Sidecar::start(&args).await);
    let b = Arc::new(Sidecar::start(&args).await);
    a.put_org(org_on("race", pb::Tier::Tier250, "701")).await;
    b.put_org(org_on("other", pb::Tier::Unlimited, "702")).await;
    let allowed_n = Arc::new(AtomicU64::new(0));
    let limited_n = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in 0..8u64 {
        let (a, b) = (a.clone(), b.clone());
        let (allowed_n, limited_n) = (allowed_n.clone(), limited_n.clone());
        tasks.push(tokio::spawn(async move {
            // 400 distinct recipients over 8 clients, in batches of 10 (with one send of
            // another org in each), alternating between the replicas. Sends refused for a
            // moment (throughput) go again in the next batch.
            let mut todo: Vec<u64> = (client..400).step_by(8).collect();
            let mut round = 0u64;
            while !todo.is_empty() {
                let s = if (client + round) % 2 == 0 { &a } else { &b };
                let take: Vec<u64> = todo.drain(..todo.len().min(10)).collect();
                let mut items: Vec<_> = take
                    .iter()
                    .map(|r| send("race", "701", 4_915_200_000_000 + r, ""))
                    .collect();
                items.insert(
                    items.len() / 2,
                    send("other", "702", 1_000 * client + round, ""),
                );
                let results = acquire_batch(s, items.clone()).await.unwrap();
                for (req, r) in items.iter().zip(results) {
                    if req.org_id == "other" {
                        continue;
                    }
                    if allowed(&r) {
                        allowed_n.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    match reason(&r) {
                        pb::DenyReason::TierLimit => {
                            limited_n.fetch_add(1, Ordering::SeqCst);
                        }
                        pb::DenyReason::Throughput | pb::DenyReason::PairRate => {
                            todo.push(req.recipient.parse::<u64>().unwrap() - 4_915_200_000_000);
                        }
                        other => panic!("{other:?}: {r:?}"),
                    }
                }
                round += 1;
                if !todo.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(allowed_n.load(Ordering::SeqCst), 250, "allowed in total");
    assert_eq!(limited_n.load(Ordering::SeqCst), 150, "refused at the tier");
    for s in [&a, &b] {
        let u = s.get_org("race").await.usage.unwrap();
        assert_eq!(u.unique_recipients_24h, 250);
    }
}

/// `tiergate loadgen --setup` against `grpc` over 5 orgs and 2 connections, with `args`; its
/// `--json` summary.
fn loadgen_json(grpc: &str, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(bin())
        .args([
            "loadgen",
            "--addr",
            grpc,
            "--setup",
            "--orgs",
            "5",
            "--connections",
            "2",
        ])
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `loadgen --report`: every allowed send's permit is reported as sent, each report a call that
/// the sidecar accepts (a permit id it did not issue would fail as NOT_FOUND), on the embedded
/// store, where the report's answer waits on its connection for its commit.
#[tokio::test]
async fn loadgen_reports_each_allowed_permit_and_the_sidecar_accepts_them() {
    let dir = std::env::temp_dir().join(format!("tiergate-loadgen-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_string_lossy().into_owned();
    let s = Sidecar::start(&["--store", "embedded", "--data-dir", &d]).await;
    let v = loadgen_json(
        &s.grpc,
        &[
            "--requests",
            "200",
            "--recipients",
            "100",
            "--concurrency",
            "8",
            "--report",
        ],
    );
    let allowed = v["allowed"].as_u64().unwrap();
    assert!(allowed > 0 && v["denied"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["reports"].as_u64().unwrap(), allowed, "{v}");
    assert_eq!(v["report_errors"], 0, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["requests"].as_u64().unwrap(), 200 + allowed, "{v}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn loadgen_batches_count_decisions_like_the_server_metrics() {
    let s = Sidecar::start(&[]).await;
    let v = loadgen_json(
        &s.grpc,
        &[
            "--requests",
            "60",
            "--batch",
            "10",
            "--recipients",
            "200",
            "--concurrency",
            "4",
        ],
    );
    assert_eq!(v["requests"], 60);
    assert_eq!(v["batch"], 10);
    assert_eq!(v["decisions"], 600);
    assert_eq!(v["errors"], 0);
    let (allowed, denied) = (
        v["allowed"].as_u64().unwrap(),
        v["denied"].as_u64().unwrap(),
    );
    assert_eq!(allowed + denied, 600);
    assert!(
        denied > 0,
        "200 recipients over 600 sends must hit the pair rate"
    );
    assert!(v["decisions_per_s"].as_f64().unwrap() > v["throughput_rps"].as_f64().unwrap());
    // Every send of every batch is counted as a lone Acquire's decision.
    let m = s.metrics().await;
    let sum = |verdict: &str| -> u64 {
        m.lines()
            .filter(|l| {
                l.starts_with("tiergate_decisions_total{")
                    && l.contains(&format!("verdict=\"{verdict}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(sum("allow"), allowed, "{m}");
    assert_eq!(sum("deny"), denied, "{m}");
}
