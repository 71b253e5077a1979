//! What the Redis log tests share: a replica's log on a test's own `redis-server`, and a plain
//! connection to look at what it wrote.

use std::time::Duration;

use tiergate_store::{LogFormat, RedisLog, RedisOptions, RedisTopology};
use tiergate_testkit::redis::RedisServer;

/// Replica `replica`'s log on `redis` (one partition), writing its entries in `log_format`.
pub async fn log_as(redis: &RedisServer, replica: &str, log_format: LogFormat) -> RedisLog {
    RedisLog::connect(&RedisOptions {
        url: redis.url(),
        topology: RedisTopology::Single,
        response_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        replica: replica.into(),
        partitions: None,
        log_format,
        fill_wait: RedisOptions::FILL_WAIT,
    })
    .await
    .unwrap()
}

/// A connection of the test's own, to read keys and `INFO`.
pub async fn client(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}
