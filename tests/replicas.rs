//! Several sidecars sharing one budget through a real Redis (the harness starts its own
//! `redis-server` on a free port), and Redis going away under load.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use support::*;
use tiergate_proto::v1 as pb;
use tonic::Code;

const BASE: u64 = 4_915_100_000_000;

async fn replica(redis: &RedisServer, extra: &[&str]) -> Sidecar {
    let url = redis.url();
    let mut args = vec![
        "--store",
        "redis",
        "--redis-url",
        &url,
        "--set",
        "policy.auto_upgrade=false",
    ];
    args.extend_from_slice(extra);
    Sidecar::start(&args).await
}

/// Asks until the answer is final: ALLOW, or a refusal that waiting a moment does not lift
/// (throughput and pair rate do, so those are asked again).
async fn settle(s: &Sidecar, org: &str, recipient: u64) -> pb::AcquireResponse {
    loop {
        let r = s.acquire(org, recipient).await;
        match reason(&r) {
            pb::DenyReason::Throughput | pb::DenyReason::PairRate => {
                tokio::time::sleep(Duration::from_millis(r.retry_after_ms.clamp(1, 50))).await;
            }
            _ => return r,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_exceed_the_tier_together() {
    let Some(redis) = RedisServer::start("two-replicas") else {
        return;
    };
    let a = Arc::new(replica(&redis, &[]).await);
    let b = Arc::new(replica(&redis, &[]).await);
    // Registered through one replica; the other finds it in Redis.
    a.put_org(org("race", pb::Tier::Tier250)).await;
    assert_eq!(b.get_org("race").await.tier, pb::Tier::Tier250 as i32);

    let allowed_n = Arc::new(AtomicU64::new(0));
    let limited_n = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in 0..8u64 {
        let (a, b) = (a.clone(), b.clone());
        let (allowed_n, limited_n) = (allowed_n.clone(), limited_n.clone());
        tasks.push(tokio::spawn(async move {
            // 400 distinct recipients, split over 8 clients that alternate between replicas.
            for (i, r) in (client..400).step_by(8).enumerate() {
                let s = if (client + i as u64) % 2 == 0 { &a } else { &b };
                let resp = settle(s, "race", BASE + r).await;
                if allowed(&resp) {
                    allowed_n.fetch_add(1, Ordering::SeqCst);
                } else {
                    assert_eq!(reason(&resp), pb::DenyReason::TierLimit, "recipient {r}");
                    assert!(resp.retry_after_ms > 0);
                    limited_n.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(allowed_n.load(Ordering::SeqCst), 250, "allowed in total");
    assert_eq!(limited_n.load(Ordering::SeqCst), 150, "refused at the tier");
    // Both replicas hold the same window.
    for s in [&a, &b] {
        let usage = s.get_org("race").await.usage.unwrap();
        assert_eq!(usage.unique_recipients_24h, 250);
        assert_eq!(usage.templates_7d, 250);
    }
    // A permit issued by one replica is reported through the other: NOT_SENT gives the slot
    // back for both.
    // Find a recipient that got in (the race decides which), and send to them again: a repeat
    // recipient is allowed at a full tier.
    let mut r = None;
    for i in 0..400 {
        let resp = settle(&a, "race", BASE + i).await;
        if allowed(&resp) {
            r = Some(resp);
            break;
        }
    }
    let r = r.expect("some recipient is in the window");
    assert_eq!(a.get_org("race").await.usage.unwrap().templates_7d, 251);
    // Report the repeat send's permit as NOT_SENT through the other replica.
    b.governor()
        .report(not_sent(&r.permit_id))
        .await
        .expect("report through the other replica");
    for s in [&a, &b] {
        assert_eq!(
            s.get_org("race").await.usage.unwrap().templates_7d,
            250,
            "the refund is seen by both replicas"
        );
    }
    // Redis's commits are in /metrics like the embedded store's.
    let m = a.metrics().await;
    assert!(m.contains("tiergate_store_up 1"), "{m}");
    let commits: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("tiergate_store_commit_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .expect("commit count");
    assert!(commits > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load() {
    let Some(mut redis) = RedisServer::start("restart") else {
        return;
    };
    let a = Arc::new(replica(&redis, &[]).await);
    let b = Arc::new(replica(&redis, &[]).await);
    let open = replica(&redis, &["--set", "server.on_store_error=allow"]).await;
    a.put_org(org("load", pb::Tier::Tier100k)).await;
    assert!(open.get_org("load").await.usage.is_some());
    assert!(readyz(&a).await && readyz(&b).await);

    let next = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let unavailable = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for client in 0..4u64 {
        let s = if client % 2 == 0 {
            a.clone()
        } else {
            b.clone()
        };
        let (next, acked, unavailable, other, stop) = (
            next.clone(),
            acked.clone(),
            unavailable.clone(),
            other.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut g = s.governor();
            while !stop.load(Ordering::SeqCst) {
                let r = next.fetch_add(1, Ordering::SeqCst);
                match g.acquire(acquire("load", BASE + r)).await {
                    Ok(resp) if allowed(resp.get_ref()) => {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {
                        other.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) if e.code() == Code::Unavailable => {
                        unavailable.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(e) => panic!("unexpected error {e:?}"),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_kill = acked.load(Ordering::SeqCst);
    assert!(before_kill > 0, "load is running");

    redis.kill9();
    wait_ready(&a, false).await;
    wait_ready(&b, false).await;
    // With on_store_error = allow, a sender is let through uncounted (no permit).
    let r = open.acquire("load", 1).await;
    assert!(allowed(&r));
    assert!(r.permit_id.is_empty(), "an uncounted send has no permit");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let down_unavailable = unavailable.load(Ordering::SeqCst);
    assert!(down_unavailable > 0, "senders were told UNAVAILABLE");

    redis.restart();
    wait_ready(&a, true).await;
    wait_ready(&b, true).await;
    let at_restart = acked.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.load(Ordering::SeqCst);
    assert!(acked > at_restart, "sends flow again after Redis returns");
    assert_eq!(other.load(Ordering::SeqCst), 0, "no denials at TIER_100K");

    // Every acknowledged ALLOW is counted, on both replicas alike; calls that failed may or may
    // not have reached Redis before it died, so they bound the count from above.
    let failed = unavailable.load(Ordering::SeqCst);
    let ca = a.get_org("load").await.usage.unwrap().unique_recipients_24h;
    let cb = b.get_org("load").await.usage.unwrap().unique_recipients_24h;
    assert_eq!(ca, cb, "replicas agree");
    assert!(ca >= acked, "counted {ca} < acknowledged {acked}");
    assert!(
        ca <= acked + failed,
        "counted {ca} > acknowledged {acked} + failed {failed}"
    );
    eprintln!(
        "acknowledged {acked}, unavailable {failed}, counted {ca}, before kill {before_kill}"
    );
}

#[tokio::test]
async fn a_redis_that_lost_its_data_is_refused_not_trusted() {
    let Some(mut redis) = RedisServer::start("lost") else {
        return;
    };
    let s = replica(&redis, &[]).await;
    s.put_org(org("gone", pb::Tier::Tier250)).await;
    assert!(allowed(&s.acquire("gone", BASE).await));
    // Same port, fresh data directory: Redis is back but empty.
    redis.kill9();
    let _ = std::fs::remove_dir_all(redis.dir());
    std::fs::create_dir_all(redis.dir()).unwrap();
    redis.restart();
    wait_ready(&s, false).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !readyz(&s).await,
        "stays unready: the shared budget is gone"
    );
    let err = s
        .governor()
        .acquire(acquire("gone", BASE + 1))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::Unavailable);
}

#[tokio::test]
async fn unknown_orgs_and_bad_input_write_nothing_to_redis() {
    let Some(redis) = RedisServer::start("unknown") else {
        return;
    };
    let s = replica(&redis, &[]).await;
    let err = s
        .governor()
        .acquire(acquire("nobody", BASE))
        .await
        .expect_err("unknown org");
    assert_eq!(err.code(), Code::NotFound);
    s.put_org(org("known", pb::Tier::Tier250)).await;
    let mut bad = acquire("known", BASE);
    bad.phone_number_id = "999".into();
    let err = s.governor().acquire(bad).await.expect_err("unknown number");
    assert_eq!(err.code(), Code::NotFound);
    let mut bad = acquire("known", BASE);
    bad.recipient = "not a number".into();
    let err = s.governor().acquire(bad).await.expect_err("bad recipient");
    assert_eq!(err.code(), Code::InvalidArgument);
    // Only the org's registration is in Redis: no key for "nobody", one entry in the log.
    let keys = redis_cli(&redis, &["KEYS", "*"]);
    assert!(!keys.contains("nobody"), "{keys}");
    let log = partition().log;
    assert_eq!(redis_cli(&redis, &["XLEN", &log]).trim(), "1");
    // Keys are hash-tagged per partition, so Redis Cluster keeps a partition on one slot.
    assert!(keys.contains(&log), "{keys}");
    assert!(log.starts_with("tg:{"), "{log}");
}

/// The one partition of a single Redis.
fn partition() -> tiergate_store::PartitionKeys {
    tiergate_store::PartitionKeys::of(0, tiergate_store::SINGLE_PARTITIONS)
}

fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    c.write_all(cmd.as_bytes()).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = c.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.ends_with(b"\r\n") && n < buf.len() {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out).to_string();
    // The integer reply of XLEN (":1") or the bulk strings of KEYS, as plain text.
    text.lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
        .map(|l| l.trim_start_matches(':'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_in_time_decides_at_the_logs_time() {
    let Some(redis) = RedisServer::start("clock") else {
        return;
    };
    let ahead = replica(&redis, &["--manual-clock"]).await;
    let behind = replica(&redis, &["--manual-clock"]).await;
    ahead.advance(2 * DAY).await;
    let mut o = org("clock", pb::Tier::Tier250);
    o.phone_numbers[0].throughput_mps = 1_000;
    ahead.put_org(o).await;
    for i in 0..250 {
        // One recipient per second of the ahead clock: no pair or throughput refusals.
        assert!(
            allowed(&settle(&ahead, "clock", BASE + i).await),
            "send {i}"
        );
        ahead.advance(SEC).await;
    }
    // The behind replica's command is ordered after the ahead one's, at the log's latest time
    // (the last send's, 249 s after the first): the tier is full, and the oldest recipient
    // leaves the window 24 h after it was sent on the ahead clock, not 2 days later.
    let r = behind.acquire("clock", BASE + 1_000).await;
    assert_eq!(reason(&r), pb::DenyReason::TierLimit);
    assert_eq!(r.retry_after_ms, DAY - 249 * SEC);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_and_started_again_reloads_from_redis() {
    let Some(redis) = RedisServer::start("reload") else {
        return;
    };
    let a = replica(&redis, &[]).await;
    let b = replica(&redis, &[]).await;
    a.put_org(org("reload", pb::Tier::Tier250)).await;
    for i in 0..40 {
        let s = if i % 2 == 0 { &a } else { &b };
        assert!(allowed(&settle(s, "reload", BASE + i).await));
    }
    b.admin()
        .set_quality_rating(b.req(pb::SetQualityRatingRequest {
            org_id: "reload".into(),
            rating: pb::QualityRating::Red as i32,
        }))
        .await
        .unwrap();
    let before = b.get_org("reload").await;
    a.kill9();
    let c = replica(&redis, &[]).await;
    let after = c.get_org("reload").await;
    assert_eq!(after.usage.unwrap().unique_recipients_24h, 40);
    assert_eq!(after.quality_rating, pb::QualityRating::Red as i32);
    assert_eq!(after.flagged_since_unix_ms, before.flagged_since_unix_ms);
    assert_eq!(after.tier, before.tier);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_replace_the_log_and_replicas_restore_them() {
    let Some(redis) = RedisServer::start("snapshots") else {
        return;
    };
    let snap = ["--set", "server.redis_snapshot_entries=20"];
    let a = replica(&redis, &snap).await;
    let b = replica(&redis, &snap).await;
    // A replica that stays idle while the log it has not applied is replaced by snapshots.
    let idle = replica(&redis, &snap).await;
    a.put_org(org("snap", pb::Tier::Tier1k)).await;
    assert!(idle.get_org("snap").await.usage.is_some());
    let first = settle(&a, "snap", BASE).await;
    assert!(allowed(&first));
    for i in 1..150 {
        let s = if i % 2 == 0 { &a } else { &b };
        assert!(allowed(&settle(s, "snap", BASE + i).await), "send {i}");
    }
    // The log holds the entries since the last checkpoint (at most the larger of the setting
    // and twice the recipients), not the 152 of its history.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let keys = partition();
    let len: u64 = redis_cli(&redis, &["XLEN", &keys.log])
        .trim()
        .parse()
        .unwrap();
    assert!(len < 150, "{len} entries left in the log");
    assert!(!redis_cli(&redis, &["GET", &keys.ckpt]).trim().is_empty());
    assert!(
        !redis_cli(&redis, &["HGET", &keys.pos, "snap"])
            .trim()
            .is_empty()
    );

    // A permit from before the snapshots can still be reported, through another replica.
    b.governor()
        .report(not_sent(&first.permit_id))
        .await
        .expect("report a permit older than the snapshot");
    let want = a.get_org("snap").await.usage.unwrap();
    assert_eq!(want.unique_recipients_24h, 149);

    // A new replica starts from the snapshot; the idle one restores it on its next call.
    let fresh = replica(&redis, &snap).await;
    assert_eq!(fresh.get_org("snap").await.usage.unwrap(), want);
    assert_eq!(idle.get_org("snap").await.usage.unwrap(), want);
    let r = settle(&idle, "snap", BASE + 10_000).await;
    assert!(allowed(&r));
    assert_eq!(r.usage.unwrap().unique_recipients_24h, 150);
}

/// A Redis written by a version-1 sidecar (one log per org, `tg:{org}:log` and
/// `tg:{org}:snap`) is migrated by the first version-2 sidecar: every org's snapshot and the
/// entries after it end up in the org's state, the schema says 2, and the version-1 keys are
/// renamed so that a version-1 sidecar still running would stop rather than decide alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_redis_is_migrated_with_nothing_lost() {
    use tiergate::{
        Category, Change, Command, Engine, EscalationKind, EscalationPath, Fact, ManualClock,
        OrgConfig, Policy, SendRequest, Tier,
    };
    let Some(redis) = RedisServer::start("migrate") else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let config = OrgConfig::new("legacy", Tier::Tier250)
        .with_phone(FIXTURE_PHONE, 1_000)
        .with_escalation(EscalationPath::new(EscalationKind::Email, "help@example.com").unwrap());
    // The snapshot a version-1 sidecar stored after five sends, as of entry `t0-4`.
    let t0 = now - 60_000;
    let engine = Engine::new(Policy::default(), Arc::new(ManualClock::new(t0))).unwrap();
    engine.put_org(config.clone()).unwrap();
    let recipients: Vec<String> = (0..8).map(|i| (BASE + i).to_string()).collect();
    fn send(r: &str) -> SendRequest<'_> {
        SendRequest {
            org_id: "legacy",
            phone_number_id: FIXTURE_PHONE,
            recipient: r,
            recipient_user_id: None,
            template_name: "order_update",
            category: Category::Utility,
            idempotency_key: None,
        }
    }
    for r in &recipients[..5] {
        assert!(engine.decide(&send(r)).unwrap().is_allowed());
    }
    let state = serde_json::to_string(&engine.snapshot_org("legacy").unwrap()).unwrap();
    let (log, snap) = ("tg:{legacy}:log", "tg:{legacy}:snap");
    redis_cli(&redis, &["SET", "tg:schema", "1"]);
    redis_cli(&redis, &["SADD", "tg:orgs", "legacy"]);
    redis_cli(
        &redis,
        &["HSET", snap, "id", &format!("{t0}-4"), "state", &state],
    );
    // The entries after the snapshot: three more sends (the registration is in the snapshot,
    // and a PutOrg entry shows that facts replay too).
    let put = Command::Apply {
        fact: Fact::new(0, "legacy", Change::PutOrg { config }),
    };
    let mut entries = vec![put];
    entries.extend(recipients[5..].iter().map(|r| Command::decide(&send(r))));
    for (i, c) in entries.iter().enumerate() {
        let id = format!("{}-0", t0 + 1_000 * (i as u64 + 1));
        let json = serde_json::to_string(c).unwrap();
        let added = redis_cli(&redis, &["XADD", log, &id, "r", "v1", "c", &json]);
        assert_eq!(added.trim(), id);
    }

    let a = replica(&redis, &[]).await;
    let usage = a.get_org("legacy").await.usage.unwrap();
    assert_eq!(
        usage.unique_recipients_24h, 8,
        "the snapshot's five and the log's three"
    );
    assert_eq!(redis_cli(&redis, &["GET", "tg:schema"]).trim(), "2");
    assert_eq!(redis_cli(&redis, &["EXISTS", log]).trim(), "0");
    assert_eq!(
        redis_cli(&redis, &["EXISTS", "tg:{legacy}:log.v1"]).trim(),
        "1"
    );
    assert_eq!(
        redis_cli(&redis, &["EXISTS", "tg:{legacy}:snap.v1"]).trim(),
        "1"
    );
    // A repeat recipient is free, a new one counts, and a second sidecar sees the same.
    assert!(allowed(&settle(&a, "legacy", BASE).await));
    assert!(allowed(&settle(&a, "legacy", BASE + 100).await));
    let b = replica(&redis, &[]).await;
    assert_eq!(
        b.get_org("legacy")
            .await
            .usage
            .unwrap()
            .unique_recipients_24h,
        9
    );
}
