//! Batches take turns in Redis (`replica.rs::BATCHES_IN_REDIS`): with Redis holding every write
//! (`CLIENT PAUSE … WRITE`), two batches are in it and the rest wait in the replica, counted;
//! when Redis lets go, every batch is answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tiergate_core::{Command, Engine, Policy, SystemClock};
use tiergate_store::{RedisLog, RedisOptions, RedisTopology, Replica};
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
    let log = RedisLog::connect(&RedisOptions {
        url: redis.url(),
        topology: RedisTopology::Single,
        response_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
        replica: "test".into(),
    })
    .await
    .unwrap();
    let engine = Arc::new(Engine::new(Policy::default(), Arc::new(SystemClock)).unwrap());
    let replica = Arc::new(Replica::start(engine, log, 1_000_000).await.unwrap());

    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "1500", "WRITE"])
        .query_async(&mut admin)
        .await
        .unwrap();

    let batches: Vec<_> = (0..12u64)
        .map(|b| {
            let r = replica.clone();
            tokio::spawn(async move {
                let commands: Vec<Command> = (0..5).map(|i| unwait(&format!("o{i}"), b)).collect();
                r.execute_many(&commands).await.map(|results| results.len())
            })
        })
        .collect();

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
