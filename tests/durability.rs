//! The embedded store: state survives restarts and `kill -9`; bad data directories are refused.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use support::*;
use tiergate_proto::v1 as pb;

fn data_dir(name: &str) -> String {
    let d = std::env::temp_dir().join(format!("tiergate-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d.to_string_lossy().into_owned()
}

async fn embedded(dir: &str) -> Sidecar {
    embedded_with(dir, &[]).await
}

async fn embedded_with(dir: &str, extra: &[&str]) -> Sidecar {
    let mut args = vec![
        "--store",
        "embedded",
        "--data-dir",
        dir,
        "--manual-clock",
        "--set",
        "policy.auto_upgrade=false",
    ];
    args.extend_from_slice(extra);
    Sidecar::start(&args).await
}

/// Compacts every 200 facts, checked every 20 ms: compaction runs again and again under load.
const COMPACT_OFTEN: &[&str] = &[
    "--set",
    "server.compact_facts=200",
    "--set",
    "server.compact_check_ms=20",
];

/// A number's throughput no test load reaches ([`UNTHROTTLED`] allows it).
const UNTHROTTLED_MPS: u32 = 100_000_000;

/// Allows a number a throughput of [`UNTHROTTLED_MPS`].
const UNTHROTTLED: &[&str] = &["--set", "policy.max_throughput_mps=100000000"];

fn snapshots_written(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("tiergate_store_snapshots_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn restart_restores_everything() {
    let dir = data_dir("restart");
    let s = embedded(&dir).await;
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    let mut permits = Vec::new();
    for i in 0..20 {
        let r = s.acquire("acme", i).await;
        assert!(allowed(&r));
        permits.push(r.permit_id);
    }
    s.admin()
        .set_quality_rating(s.req(pb::SetQualityRatingRequest {
            org_id: "acme".into(),
            rating: pb::QualityRating::Red as i32,
        }))
        .await
        .unwrap();
    s.admin()
        .file_appeal(s.req(pb::FileAppealRequest {
            org_id: "acme".into(),
            evidence: "help desk".into(),
        }))
        .await
        .unwrap();
    let mut idem = acquire("acme", 500);
    idem.idempotency_key = "order-500".into();
    let first = s.acquire_req(idem.clone()).await;
    let before = s.get_org("acme").await;
    assert!(s.terminate().await.success());

    let s = embedded(&dir).await;
    let after = s.get_org("acme").await;
    assert_eq!(after.usage, before.usage);
    assert_eq!(after.quality_rating, pb::QualityRating::Red as i32);
    assert_eq!(after.flagged_since_unix_ms, before.flagged_since_unix_ms);
    assert_eq!(after.appeal, before.appeal);
    // a recipient counted before the restart is not counted again (past its pair rate)
    s.advance(6_000).await;
    let r = s.acquire("acme", 3).await;
    assert!(allowed(&r));
    assert_eq!(r.usage.unwrap().unique_recipients_24h, 21);
    // the idempotency key still returns the first answer
    assert_eq!(s.acquire_req(idem).await.permit_id, first.permit_id);
    // a permit from before the restart can still be reported and refunds its slot
    s.governor().report(not_sent(&permits[19])).await.unwrap();
    assert_eq!(
        s.get_org("acme").await.usage.unwrap().unique_recipients_24h,
        20
    );
    let m = s.metrics().await;
    assert!(m.contains("tiergate_store_commit_seconds_count"), "{m}");
    assert!(
        !m.contains("tiergate_store_commit_seconds_count 0\n"),
        "{m}"
    );
    assert!(s.terminate().await.success());
    // The first restart compacted the facts into snapshots: this start restores the snapshot
    // and then the facts recorded since.
    let s = embedded(&dir).await;
    let again = s.get_org("acme").await;
    assert_eq!(again.usage.unwrap().unique_recipients_24h, 20);
    assert_eq!(again.quality_rating, pb::QualityRating::Red as i32);
    assert_eq!(again.flagged_since_unix_ms, before.flagged_since_unix_ms);
    assert_eq!(again.appeal, before.appeal);
    // a permit from before both restarts still refunds exactly once
    s.governor().report(not_sent(&permits[18])).await.unwrap();
    let twice = s.governor().report(not_sent(&permits[19])).await;
    assert_eq!(twice.unwrap_err().code(), tonic::Code::FailedPrecondition);
    assert!(s.terminate().await.success());
    let s = embedded(&dir).await;
    assert_eq!(
        s.get_org("acme").await.usage.unwrap().unique_recipients_24h,
        19
    );
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_allow() {
    let dir = data_dir("crash");
    // Compacting all the while, so the kill also lands during compactions.
    let s = embedded_with(&dir, &[COMPACT_OFTEN, UNTHROTTLED].concat()).await;
    // The clock stands still, so a throughput of its own would stop the allowed sends after
    // its first second's worth, long before the kill; then the kill could not land among
    // answers not yet durable.
    let mut crash = org("crash", pb::Tier::Unlimited);
    crash.phone_numbers[0].throughput_mps = UNTHROTTLED_MPS;
    s.put_org(crash).await;
    let acked = Arc::new(AtomicU64::new(0));
    let started = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let mut g = s.governor();
        let (acked, started, finished, stop) = (
            acked.clone(),
            started.clone(),
            finished.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let to = |k: u64| acquire("crash", 1_000_000 * (w + 1) + i + k);
                // Half the workers send batches of four: a batch's answer is held on its
                // connection until durable, as a lone send's is.
                let (sends, ok) = if w % 2 == 0 {
                    started.fetch_add(1, Ordering::SeqCst);
                    let r = g.acquire(to(0)).await;
                    (1, r.map(|r| u64::from(allowed(&r.into_inner()))))
                } else {
                    started.fetch_add(4, Ordering::SeqCst);
                    let sends = (0..4).map(to).collect();
                    let r = g.acquire_batch(pb::AcquireBatchRequest { sends }).await;
                    let n = |r: pb::AcquireBatchResponse| {
                        r.results.iter().filter(|d| allowed(d)).count() as u64
                    };
                    (4, r.map(|r| n(r.into_inner())))
                };
                match ok {
                    Ok(n) => {
                        acked.fetch_add(n, Ordering::SeqCst);
                        finished.fetch_add(sends, Ordering::SeqCst);
                    }
                    Err(_) => return,
                }
                i += sends;
            }
        }));
    }
    // Kill it only once a compaction ran under the load (on a busy machine that can take
    // longer than the usual fraction of a second).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    while snapshots_written(&s.metrics().await) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no compaction ran during the load"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    s.kill9();
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.load(Ordering::SeqCst);
    let in_flight = started.load(Ordering::SeqCst) - finished.load(Ordering::SeqCst);
    assert!(
        acked > 100,
        "only {acked} sends acknowledged before the kill"
    );
    let s = embedded_with(&dir, UNTHROTTLED).await;
    let counted = s.get_org("crash").await.usage.unwrap().templates_7d;
    assert!(counted >= acked, "{counted} counted < {acked} acknowledged");
    assert!(
        counted <= acked + in_flight,
        "{counted} counted > {acked} acknowledged + {in_flight} in flight"
    );
}

/// `serve` on the embedded store in `dir`, run to completion (for the refusals).
fn serve_once(dir: &str) -> std::process::Output {
    Command::new(bin())
        .args(["serve", "--store", "embedded", "--data-dir", dir])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_second_process_on_the_same_directory_is_refused() {
    let dir = data_dir("lock");
    let _s = embedded(&dir).await;
    let out = serve_once(&dir);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "it must not listen");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tiergate.redb"), "{err}");
}

#[test]
fn a_corrupt_store_is_refused_and_left_alone() {
    let dir = data_dir("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    let file = format!("{dir}/tiergate.redb");
    let junk = vec![0x5au8; 64 * 1024];
    std::fs::write(&file, &junk).unwrap();
    let out = serve_once(&dir);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tiergate.redb"));
    assert_eq!(std::fs::read(&file).unwrap(), junk, "never silently reset");
}

#[tokio::test]
async fn a_damaged_journal_is_refused_and_left_alone() {
    let dir = data_dir("damaged");
    let s = embedded(&dir).await;
    s.put_org(org("acme", pb::Tier::Tier250)).await;
    // One call at a time: each commit is its own group in the journal.
    for i in 0..5 {
        assert!(allowed(&s.acquire("acme", i).await));
    }
    s.kill9();
    let journal = std::path::Path::new(&dir).join("journal");
    let segment = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "facts"))
        .expect("a journal segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    // A byte inside the first group (32-byte segment header, 16-byte group header): later
    // groups are intact, so this is damage, not a torn last write.
    bytes[32 + 16 + 8] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();
    let out = serve_once(&dir);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "it must not listen");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&*segment.to_string_lossy()) && err.contains("corrupt at byte 32"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        bytes,
        "never silently reset"
    );
}

#[tokio::test]
async fn compaction_while_running_keeps_everything() {
    let dir = data_dir("compact");
    let s = embedded_with(&dir, COMPACT_OFTEN).await;
    s.put_org(org("acme", pb::Tier::Tier1k)).await;
    let mut permits = Vec::new();
    for i in 0..300 {
        let r = s.acquire("acme", i).await;
        assert!(allowed(&r), "send {i}");
        permits.push(r.permit_id);
    }
    // Wait for a compaction that covers the sends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while snapshots_written(&s.metrics().await) == 0 {
        assert!(std::time::Instant::now() < deadline, "no compaction ran");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // An org registered after the compaction, with sends of its own.
    let mut late = org("late", pb::Tier::Tier250);
    late.waba_ids = vec!["999000111".into()];
    late.phone_numbers[0].phone_number_id = "555000111".into();
    late.phone_numbers[0].display_phone_number = "+1 555 0199".into();
    s.put_org(late).await;
    for i in 0..5 {
        let mut req = acquire("late", 1_000 + i);
        req.phone_number_id = "555000111".into();
        assert!(allowed(&s.acquire_req(req).await));
    }
    let before = s.get_org("acme").await;
    s.kill9();
    let s = embedded(&dir).await;
    assert_eq!(s.get_org("acme").await.usage, before.usage);
    assert_eq!(
        s.get_org("late").await.usage.unwrap().unique_recipients_24h,
        5
    );
    // A permit from before the compaction is still known, and refunds once.
    s.governor().report(not_sent(&permits[0])).await.unwrap();
    assert_eq!(
        s.get_org("acme").await.usage.unwrap().unique_recipients_24h,
        299
    );
}
