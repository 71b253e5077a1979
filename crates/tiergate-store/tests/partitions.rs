//! The partition count is chosen once, by the replica that creates the store, and kept: every
//! replica must agree on which partition an org is in.

use std::time::Duration;

use tiergate_store::{RedisLog, RedisOptions, RedisStoreError, RedisTopology};
use tiergate_testkit::redis::{RedisServer, or_skip};

async fn connect(
    redis: &RedisServer,
    partitions: Option<u32>,
) -> Result<RedisLog, RedisStoreError> {
    RedisLog::connect(&RedisOptions {
        url: redis.url(),
        topology: RedisTopology::Single,
        response_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        replica: "test".into(),
        partitions,
        log_format: Default::default(),
        fill_wait: RedisOptions::FILL_WAIT,
    })
    .await
}

#[tokio::test]
async fn a_store_keeps_the_partitions_it_was_created_with() {
    let Some(redis) = or_skip(RedisServer::start("partitions")) else {
        return;
    };
    let first = connect(&redis, Some(3)).await.unwrap();
    assert_eq!(first.partitions(), 3);
    // Another replica asking for another count gets the store's.
    let second = connect(&redis, Some(5)).await.unwrap();
    assert_eq!(second.partitions(), 3);
    let default = connect(&redis, None).await.unwrap();
    assert_eq!(default.partitions(), 3);
    // Out of range: refused before anything is written.
    let other = or_skip(RedisServer::start("partitions")).unwrap();
    let e = connect(&other, Some(0)).await.err().unwrap().to_string();
    assert!(e.contains("between 1 and 1024"), "{e}");
    assert_eq!(connect(&other, None).await.unwrap().partitions(), 1);
}
