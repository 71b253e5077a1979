//! Sidecars on a real Redis Cluster of the test's own (three masters on free ports, created with
//! `redis-cli --cluster create`): exact across sidecars, a master killed under load, and slots
//! moving under load (`MOVED`, `ASK`). The rules themselves run on the cluster through the
//! `every_backend!` suites.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use support::*;
use tiergate_proto::v1 as pb;
use tonic::Code;

const BASE: u64 = 4_915_200_000_000;

async fn sidecar(cluster: &RedisCluster, extra: &[&str]) -> Sidecar {
    let urls = cluster.urls();
    let mut args = vec![
        "--store",
        "redis-cluster",
        "--redis-url",
        &urls,
        "--set",
        "policy.auto_upgrade=false",
    ];
    args.extend_from_slice(extra);
    Sidecar::start(&args).await
}

/// The log of `org`'s partition (a cluster has [`tiergate_store::CLUSTER_PARTITIONS`]).
fn log_of(org: &str) -> String {
    let n = tiergate_store::CLUSTER_PARTITIONS;
    tiergate_store::PartitionKeys::of(tiergate_store::partition_of(org, n), n).log
}

/// The master (0..3) whose slots hold `key`.
fn master_of_key(cluster: &RedisCluster, key: &str) -> usize {
    cluster
        .owner_of_slot(cluster.slot_of(key).expect("slot"))
        .expect("slot owner")
}

/// The master (0..3) whose slots hold `org`'s partition.
fn master_of(cluster: &RedisCluster, org: &str) -> usize {
    master_of_key(cluster, &log_of(org))
}

/// A master that holds neither the schema keys nor the org set, so that what fails when it
/// does is only its partitions' logs.
fn victim_master(cluster: &RedisCluster) -> usize {
    let shared = [
        master_of_key(cluster, "tg:schema"),
        master_of_key(cluster, "tg:partitions"),
        master_of_key(cluster, "tg:orgs"),
    ];
    (0..3).find(|m| !shared.contains(m)).unwrap_or(2)
}

/// An org id whose keys live on `master`, named from `prefix`.
fn org_on_master(cluster: &RedisCluster, prefix: &str, master: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|o| master_of(cluster, o) == master)
        .expect("some name hashes to every master")
}

/// The number of an org of [`org_of`]: its own, derived from its id.
fn phone_of(id: &str) -> String {
    let n: u64 = id
        .bytes()
        .fold(7, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    format!("9{:014}", n % 100_000_000_000_000)
}

/// An org on a number of its own, so that many can be registered.
fn org_of(id: &str, tier: pb::Tier) -> pb::Org {
    org_on(id, tier, &phone_of(id))
}

/// A send of `org`'s (of [`org_of`]) to `recipient`.
fn send(org: &str, recipient: u64) -> pb::AcquireRequest {
    pb::AcquireRequest {
        phone_number_id: phone_of(org),
        ..acquire(org, recipient)
    }
}

/// Asks until the answer is final: ALLOW, or a refusal that waiting a moment does not lift.
/// `UNAVAILABLE` (a slot between owners for longer than the client's retries) is asked again
/// and counted.
async fn settle(
    s: &Sidecar,
    org: &str,
    recipient: u64,
    retried: &AtomicU64,
) -> pb::AcquireResponse {
    let mut g = s.governor();
    loop {
        match g.acquire(send(org, recipient)).await {
            Ok(r) => {
                let r = r.into_inner();
                match reason(&r) {
                    pb::DenyReason::Throughput | pb::DenyReason::PairRate => {
                        tokio::time::sleep(Duration::from_millis(r.retry_after_ms.clamp(1, 50)))
                            .await;
                    }
                    _ => return r,
                }
            }
            Err(e) if e.code() == Code::Unavailable => {
                retried.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
}

/// 400 recipients raced over 8 clients alternating between two sidecars at TIER_250, with
/// `already` places taken: exactly the rest get in, and both sidecars hold the same window.
/// Returns how many calls were asked again after UNAVAILABLE.
async fn race_to_the_tier(a: &Arc<Sidecar>, b: &Arc<Sidecar>, org: &str, already: u64) -> u64 {
    let allowed_n = Arc::new(AtomicU64::new(0));
    let limited_n = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in 0..8u64 {
        let (a, b, org) = (a.clone(), b.clone(), org.to_owned());
        let (allowed_n, limited_n, retried) =
            (allowed_n.clone(), limited_n.clone(), retried.clone());
        tasks.push(tokio::spawn(async move {
            for (i, r) in (client..400).step_by(8).enumerate() {
                let s = if (client + i as u64) % 2 == 0 { &a } else { &b };
                let resp = settle(s, &org, BASE + r, &retried).await;
                if allowed(&resp) {
                    allowed_n.fetch_add(1, Ordering::SeqCst);
                } else {
                    assert_eq!(reason(&resp), pb::DenyReason::TierLimit, "recipient {r}");
                    limited_n.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let places = 250 - already;
    assert_eq!(
        allowed_n.load(Ordering::SeqCst),
        places,
        "{org}: allowed in total"
    );
    assert_eq!(
        limited_n.load(Ordering::SeqCst),
        400 - places,
        "{org}: refused at the tier"
    );
    for s in [a, b] {
        let usage = s.get_org(org).await.usage.unwrap();
        assert_eq!(usage.unique_recipients_24h, 250, "{org}");
    }
    retried.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_on_a_cluster_never_exceed_the_tier_together() {
    let Some(cluster) = RedisCluster::start("two-sidecars") else {
        return;
    };
    let a = Arc::new(sidecar(&cluster, &[]).await);
    let b = Arc::new(sidecar(&cluster, &[]).await);
    // One org on each master, registered through one sidecar and found by the other.
    let orgs: Vec<String> = (0..3).map(|m| org_on_master(&cluster, "race", m)).collect();
    for o in &orgs {
        a.put_org(org_of(o, pb::Tier::Tier250)).await;
        assert_eq!(b.get_org(o).await.tier, pb::Tier::Tier250 as i32);
    }
    let races = orgs.iter().map(|o| {
        let (a, b, o) = (a.clone(), b.clone(), o.clone());
        tokio::spawn(async move { race_to_the_tier(&a, &b, &o, 0).await })
    });
    for r in races.collect::<Vec<_>>() {
        assert_eq!(r.await.unwrap(), 0, "no call failed on a healthy cluster");
    }
    // A permit from one sidecar is reported through the other, on each master.
    for o in &orgs {
        let retried = AtomicU64::new(0);
        let mut found = None;
        for i in 0..400 {
            let r = settle(&a, o, BASE + i, &retried).await;
            if allowed(&r) {
                found = Some(r);
                break;
            }
        }
        let r = found.expect("some recipient is in the window");
        b.governor().report(not_sent(&r.permit_id)).await.unwrap();
        for s in [&a, &b] {
            let usage = s.get_org(o).await.usage.unwrap();
            assert_eq!(usage.templates_7d, 250, "{o}: the refund is seen by both");
        }
    }
    // Each master holds the log of its own org's partition.
    for (m, o) in orgs.iter().enumerate() {
        let here = cluster.cli(m, &["EXISTS", &log_of(o)]).unwrap();
        assert_eq!(here, "1", "{o} on master {m}");
    }
    let m = a.metrics().await;
    assert!(m.contains("tiergate_store_up 1"), "{m}");
}

/// What the load did to one org.
#[derive(Default)]
struct Tally {
    acked: AtomicU64,
    unavailable: AtomicU64,
    other: AtomicU64,
}

/// Sends to `orgs` from 2 clients per org (alternating sidecars) until `stop`; each org gets
/// fresh recipients.
fn load(
    sidecars: &[Arc<Sidecar>],
    orgs: &[String],
    stop: &Arc<AtomicBool>,
) -> (
    Vec<tokio::task::JoinHandle<()>>,
    HashMap<String, Arc<Tally>>,
) {
    let next = Arc::new(AtomicU64::new(0));
    let tallies: HashMap<String, Arc<Tally>> =
        orgs.iter().map(|o| (o.clone(), Arc::default())).collect();
    let mut tasks = Vec::new();
    for (n, o) in orgs.iter().enumerate() {
        for client in 0..2 {
            let s = sidecars[(n + client) % sidecars.len()].clone();
            let (o, t, next, stop) = (o.clone(), tallies[o].clone(), next.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut g = s.governor();
                while !stop.load(Ordering::SeqCst) {
                    let r = next.fetch_add(1, Ordering::SeqCst);
                    match g.acquire(send(&o, BASE + r)).await {
                        Ok(resp) if allowed(resp.get_ref()) => {
                            t.acked.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(resp) => {
                            let why = reason(resp.get_ref());
                            assert!(
                                matches!(
                                    why,
                                    pb::DenyReason::Throughput | pb::DenyReason::PairRate
                                ),
                                "{o}: unexpected denial {why:?}"
                            );
                            t.other.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(e) if e.code() == Code::Unavailable => {
                            t.unavailable.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(e) => panic!("{o}: unexpected error {e:?}"),
                    }
                }
            }));
        }
    }
    (tasks, tallies)
}

/// Stops the load of [`load`] and waits for its clients (a client's panic fails the test).
async fn stop_load(stop: &AtomicBool, tasks: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
}

/// Every acknowledged ALLOW is counted, on every sidecar alike; calls that failed may or may
/// not have reached Redis, so they bound the count from above.
async fn counted_exactly(sidecars: &[Arc<Sidecar>], o: &str, t: &Tally) -> u64 {
    let (acked, failed) = (
        t.acked.load(Ordering::SeqCst),
        t.unavailable.load(Ordering::SeqCst),
    );
    let mut seen = Vec::new();
    for s in sidecars {
        seen.push(s.get_org(o).await.usage.unwrap().unique_recipients_24h);
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "{o}: sidecars agree: {seen:?}"
    );
    let counted = seen[0];
    assert!(
        counted >= acked,
        "{o}: counted {counted} < acknowledged {acked}"
    );
    assert!(
        counted <= acked + failed,
        "{o}: counted {counted} > acknowledged {acked} + failed {failed}"
    );
    counted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_fails_its_orgs_closed_while_the_others_go_on() {
    let Some(mut cluster) = RedisCluster::start("kill-master") else {
        return;
    };
    let a = Arc::new(sidecar(&cluster, &[]).await);
    let b = Arc::new(sidecar(&cluster, &[]).await);
    let sidecars = [a.clone(), b.clone()];
    let victim = victim_master(&cluster);
    let orgs: Vec<String> = (0..3).map(|m| org_on_master(&cluster, "load", m)).collect();
    for o in &orgs {
        a.put_org(org_of(o, pb::Tier::Tier100k)).await;
        assert!(b.get_org(o).await.usage.is_some());
    }
    assert!(readyz(&a).await && readyz(&b).await);

    let stop = Arc::new(AtomicBool::new(false));
    let (tasks, tallies) = load(&sidecars, &orgs, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for o in &orgs {
        assert!(
            tallies[o].acked.load(Ordering::SeqCst) > 0,
            "{o}: load is running"
        );
    }

    cluster.kill9(victim);
    wait_ready(&a, false).await;
    wait_ready(&b, false).await;
    // While it is down: its org is refused with UNAVAILABLE, the others go on.
    let down_at: HashMap<&String, u64> = orgs
        .iter()
        .map(|o| (o, tallies[o].acked.load(Ordering::SeqCst)))
        .collect();
    let unavailable_at = tallies[&orgs[victim]].unavailable.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for (m, o) in orgs.iter().enumerate() {
        let t = &tallies[o];
        eprintln!(
            "{o} (master {m}, victim {victim}): acknowledged {} -> {} while down; unavailable {}",
            down_at[o],
            t.acked.load(Ordering::SeqCst),
            t.unavailable.load(Ordering::SeqCst)
        );
        if m == victim {
            assert!(
                t.unavailable.load(Ordering::SeqCst) > unavailable_at,
                "{o}: its master is down, so its calls fail"
            );
        } else {
            assert!(
                t.acked.load(Ordering::SeqCst) > down_at[o] + 10,
                "{o}: on a live master, it goes on"
            );
        }
    }
    let r = a.governor().acquire(send(&orgs[victim], 1)).await;
    assert_eq!(r.unwrap_err().code(), Code::Unavailable, "fails closed");
    let victim_down = tallies[&orgs[victim]].acked.load(Ordering::SeqCst);

    cluster.restart(victim).expect("restart the master");
    wait_ready(&a, true).await;
    wait_ready(&b, true).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop_load(&stop, tasks).await;
    assert!(
        tallies[&orgs[victim]].acked.load(Ordering::SeqCst) > victim_down,
        "its org flows again once the master is back"
    );
    for o in &orgs {
        let counted = counted_exactly(&sidecars, o, &tallies[o]).await;
        let t = &tallies[o];
        eprintln!(
            "{o}: acknowledged {}, unavailable {}, counted {counted}",
            t.acked.load(Ordering::SeqCst),
            t.unavailable.load(Ordering::SeqCst)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_hangs_holds_up_only_its_own_orgs() {
    let Some(cluster) = RedisCluster::start("hang") else {
        return;
    };
    let a = Arc::new(sidecar(&cluster, &[]).await);
    let sidecars = [a.clone()];
    let victim = victim_master(&cluster);
    let orgs: Vec<String> = (0..3).map(|m| org_on_master(&cluster, "hang", m)).collect();
    for o in &orgs {
        a.put_org(org_of(o, pb::Tier::Tier100k)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (tasks, tallies) = load(&sidecars, &orgs, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // SIGSTOP: the master keeps its connections and answers nothing (no reset), so each call
    // to it waits for the reply timeout (1 s) before the node is marked down.
    cluster.pause(victim).expect("pause the master");
    let paused_at: HashMap<&String, u64> = orgs
        .iter()
        .map(|o| (o, tallies[o].acked.load(Ordering::SeqCst)))
        .collect();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for (m, o) in orgs.iter().enumerate() {
        let t = &tallies[o];
        let acked = t.acked.load(Ordering::SeqCst);
        eprintln!(
            "{o} (master {m}, hung {victim}): acknowledged {} -> {acked} while hung; unavailable {}",
            paused_at[o],
            t.unavailable.load(Ordering::SeqCst)
        );
        if m == victim {
            // Its two clients' calls in flight when it stopped may have been answered first.
            assert!(
                acked <= paused_at[o] + 2,
                "{o}: nothing more is acknowledged by a hung master"
            );
            assert!(
                t.unavailable.load(Ordering::SeqCst) > 0,
                "{o}: its calls fail"
            );
        } else {
            // At least half the rate it had before (0.5 s before, 2.5 s during): a batch
            // shared with the hung master's orgs would wait a second at a time.
            assert!(
                acked - paused_at[o] >= paused_at[o] * 5 / 2,
                "{o}: on a live master, it is not held up by the hung one"
            );
        }
    }
    wait_ready(&a, false).await;

    cluster.resume(victim).expect("resume the master");
    wait_ready(&a, true).await;
    let resumed_at = tallies[&orgs[victim]].acked.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop_load(&stop, tasks).await;
    assert!(
        tallies[&orgs[victim]].acked.load(Ordering::SeqCst) > resumed_at,
        "its org flows again once the master answers"
    );
    for o in &orgs {
        counted_exactly(&sidecars, o, &tallies[o]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_moving_under_load_give_no_wrong_answer() {
    let Some(cluster) = RedisCluster::start("reshard") else {
        return;
    };
    let cluster = Arc::new(cluster);
    let a = Arc::new(sidecar(&cluster, &[]).await);
    let b = Arc::new(sidecar(&cluster, &[]).await);
    // The race's org lives on master 0; its slot is moved key by key to master 1 while the
    // race runs (ASK while its keys are split, MOVED after).
    let racer = org_on_master(&cluster, "race", 0);
    a.put_org(org_of(&racer, pb::Tier::Tier250)).await;
    // Warm its log so that the slot has keys to migrate.
    let retried = AtomicU64::new(0);
    let first = settle(&a, &racer, BASE + 1_000, &retried).await;
    assert!(allowed(&first));
    let slot = cluster.slot_of(&log_of(&racer)).expect("slot");
    let migrating = {
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.migrate_slot(slot, 0, 1, Duration::from_millis(150)))
    };
    let race = {
        let (a, b, racer) = (a.clone(), b.clone(), racer.clone());
        tokio::spawn(async move {
            // The warming recipient holds one of the 250 places.
            race_to_the_tier(&a, &b, &racer, 1).await
        })
    };
    migrating.await.unwrap().expect("migrate the slot");
    let retried = race.await.unwrap();
    assert_eq!(master_of(&cluster, &racer), 1, "the slot moved");
    eprintln!("race across a slot migration: {retried} calls retried after UNAVAILABLE");

    // Many orgs under load while a third of the slots move (redis-cli --cluster reshard).
    let orgs: Vec<String> = (0..24).map(|i| format!("many-{i}")).collect();
    for o in &orgs {
        a.put_org(org_of(o, pb::Tier::Tier100k)).await;
    }
    let sidecars = [a.clone(), b.clone()];
    let stop = Arc::new(AtomicBool::new(false));
    let (tasks, tallies) = load(&sidecars, &orgs, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let moved_from: Vec<usize> = orgs.iter().map(|o| master_of(&cluster, o)).collect();
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.reshard(2, 0, 2_000))
        .await
        .unwrap()
        .expect("reshard");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_load(&stop, tasks).await;
    let moved = orgs
        .iter()
        .zip(&moved_from)
        .filter(|(o, m)| **m == 2 && master_of(&cluster, o) == 0)
        .count();
    let mut failed = 0;
    for o in &orgs {
        counted_exactly(&sidecars, o, &tallies[o]).await;
        failed += tallies[o].unavailable.load(Ordering::SeqCst);
    }
    eprintln!("reshard of 2,000 slots under load: {moved} orgs moved, {failed} calls UNAVAILABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_log_lost_by_its_master_is_refused_not_started_again() {
    let Some(cluster) = RedisCluster::start("lost-org") else {
        return;
    };
    let a = sidecar(&cluster, &[]).await;
    let lost = org_on_master(&cluster, "lost", 1);
    let other = org_on_master(&cluster, "kept", 2);
    for o in [&lost, &other] {
        a.put_org(org_of(o, pb::Tier::Tier250)).await;
        let r = a.governor().acquire(send(o, BASE)).await.unwrap();
        assert!(allowed(r.get_ref()));
    }
    assert!(readyz(&a).await);
    // Master 1 loses the org's partition's log (as a master that came back without its data
    // would): the sidecar has applied entries of a log that is gone, so the shared budget is
    // gone too.
    let key = log_of(&lost);
    assert_eq!(cluster.cli(1, &["DEL", &key]).unwrap(), "1");
    let e = a
        .governor()
        .acquire(send(&lost, BASE + 1))
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    // Nothing was written: the log was not started again behind the sidecars' backs.
    assert_eq!(cluster.cli(1, &["EXISTS", &key]).unwrap(), "0");
    // Like a Redis that lost its data, the sidecar trusts the store no more until restarted.
    wait_ready(&a, false).await;
    let e = a
        .governor()
        .acquire(send(&other, BASE + 1))
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
}
