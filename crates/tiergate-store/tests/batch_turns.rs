//! Batches take turns in Redis (`replica.rs::BATCHES_IN_REDIS`): with Redis holding every write
//! (`CLIENT PAUSE … WRITE`), two batches are in it and the rest wait in the replica, counted;
//! when Redis lets go, every batch is answered. While Redis is down, nobody waits for a turn.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tiergate_core::{Command, Engine, Policy, SystemClock};
use tiergate_store::{Health, RedisLog, RedisOptions, RedisStoreError, RedisTopology, Replica};
use tiergate_testkit::redis::{RedisServer, or_skip};

/// A cheap command that is valid in a log (the org need not exist: the engine's refusal is
/// the command's result, and the entry is written all the same).
fn unwait(org: &str, waiter: u64) -> Command {
    Command::Unwait {
        org: org.into(),
        waiter,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_beyond_two_wait_in_the_replica_and_all_are_answered() {
    let Some(redis) = or_skip(RedisServer::start("batch-turns")) else {
        return;
    };
    let replica = replica_on(&redis, Duration::from_secs(10)).await;
    pause_writes(&redis, 1_500).await;
    let batches = twelve_batches(&replica);

    // While Redis holds the first two, the other ten wait here.
    let start = Instant::now();
    while replica.batches_waiting() != 10 {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{} batches waiting, not 10",
            replica.batches_waiting()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for b in batches {
        assert_eq!(b.await.unwrap().unwrap(), 5);
    }
    assert_eq!(replica.batches_waiting(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_batches_do_not_wait_for_a_turn() {
    let Some(redis) = or_skip(RedisServer::start("batch-turns-down")) else {
        return;
    };
    let replica = replica_on(&redis, Duration::from_millis(500)).await;
    pause_writes(&redis, 10_000).await;
    let one = replica.execute_many(&[unwait("o0", 0)]).await;
    assert!(one.is_err_and(|e| e.is_unavailable()));
    assert_eq!(replica.health(), Health::Down);

    let batches = twelve_batches(&replica);
    // The two that would hold the turns are stuck in Redis for 500 ms; with turns taken while
    // down, ten would wait here meanwhile.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(replica.batches_waiting(), 0);
    for b in batches {
        assert!(b.await.unwrap().is_err_and(|e| e.is_unavailable()));
    }
}

async fn replica_on(redis: &RedisServer, response_timeout: Duration) -> Arc<Replica> {
    let log = RedisLog::connect(&RedisOptions {
        url: redis.url(),
        topology: RedisTopology::Single,
        response_timeout,
        connect_timeout: Duration::from_secs(2),
        replica: "test".into(),
        partitions: None,
        log_format: Default::default(),
        fill_wait: RedisOptions::FILL_WAIT,
    })
    .await
    .unwrap();
    let engine = Arc::new(Engine::new(Policy::default(), Arc::new(SystemClock)).unwrap());
    Arc::new(Replica::start(engine, log, 1_000_000).await.unwrap())
}

/// Redis holds every write (scripts included) for `ms`.
async fn pause_writes(redis: &RedisServer, ms: u64) {
    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .unwrap();
}

/// Twelve batches of five commands at once; each answers the number of results.
fn twelve_batches(
    replica: &Arc<Replica>,
) -> Vec<tokio::task::JoinHandle<Result<usize, RedisStoreError>>> {
    (0..12u64)
        .map(|b| {
            let r = replica.clone();
            tokio::spawn(async move {
                let commands: Vec<Command> = (0..5).map(|i| unwait(&format!("o{i}"), b)).collect();
                r.execute_many(&commands).await.map(|results| results.len())
            })
        })
        .collect()
}
