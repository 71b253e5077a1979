//! A replica's own entries do not come back from Redis (`own_entries.rs`): an append that finds
//! this replica's earlier entry in its answer gets that entry without its commands, over the
//! wire, and completes it from what it sent; another replica gets the entry whole.

use std::time::Duration;

use tiergate_core::Command;
use tiergate_store::{LogId, RedisLog, RedisOptions, RedisTopology};
use tiergate_testkit::redis::{RedisServer, or_skip};

async fn log_on(redis: &RedisServer, replica: &str) -> RedisLog {
    RedisLog::connect(&RedisOptions {
        url: redis.url(),
        topology: RedisTopology::Single,
        response_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        replica: replica.into(),
        partitions: None,
    })
    .await
    .unwrap()
}

/// 400 cheap commands with long org ids: about 29 KB of JSON in one entry.
fn commands(round: u64) -> Vec<Command> {
    (0..400)
        .map(|i| Command::Unwait {
            org: format!("an-org-with-a-rather-long-id-{i:05}"),
            waiter: round,
        })
        .collect()
}

/// Bytes Redis has written to its clients so far.
async fn bytes_out(con: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(con)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_output_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_entries_come_back_without_their_commands() {
    let Some(redis) = or_skip(RedisServer::start("own-entries")) else {
        return;
    };
    let mine = log_on(&redis, "mine").await;
    let other = log_on(&redis, "other").await;
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let never = |_| LogId::default();

    let first = mine.append_many(&commands(1), 1_000, never).await.unwrap();
    let first_id = first[0].id;

    // The same replica, not having applied its first entry: the answer holds it, without its
    // 40 KB of commands on the wire, and completed here.
    let before = bytes_out(&mut con).await;
    let second = mine.append_many(&commands(2), 1_000, never).await.unwrap();
    let sent = bytes_out(&mut con).await - before;
    assert!(
        sent < 8_000,
        "{sent} bytes came back for an answer holding this replica's own entry"
    );
    let entries = &second[0].entries;
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0].id, first_id);
    assert_eq!(entries[0].replica, "mine");
    assert_eq!(*entries[0].commands, commands(1));
    assert_eq!(*entries[1].commands, commands(2));

    // Another replica gets both entries whole, and they are the same.
    let before = bytes_out(&mut con).await;
    let third = other.append_many(&commands(3), 1_000, never).await.unwrap();
    let sent = bytes_out(&mut con).await - before;
    assert!(
        sent > 50_000,
        "{sent} bytes: the other replica's entries came whole"
    );
    let entries = &third[0].entries;
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert_eq!(*entries[0].commands, commands(1));
    assert_eq!(*entries[1].commands, commands(2));
    assert_eq!(*entries[2].commands, commands(3));
    assert_eq!(entries[2].replica, "other");
}
