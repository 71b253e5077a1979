//! The test kit's `redis-server` (on a free port, with its data in a fresh directory, append-only
//! file fsynced on every write), with this suite's policy when there is none to start.
//!
//! When `redis-server` is not on `PATH` a test skips with a message, unless
//! `TIERGATE_REQUIRE_REDIS=1` (which `.ci/run` sets): then it fails. Any other failure to start
//! it fails the test (`tiergate_testkit::redis::or_skip`).

use std::ops::{Deref, DerefMut};

use tiergate_testkit::redis::{self, or_skip};
use tiergate_testkit::redis_cluster;

/// A running `redis-server`, killed on drop.
pub struct RedisServer(redis::RedisServer);

impl RedisServer {
    /// Starts one, or returns `None` (after saying why) when redis-server is not installed and
    /// not required.
    pub fn start(name: &str) -> Option<RedisServer> {
        or_skip(redis::RedisServer::start(name)).map(RedisServer)
    }

    /// Starts it again on the same port and data (after [`redis::RedisServer::kill9`]).
    pub fn restart(&mut self) {
        self.0.restart().expect("restart redis-server");
    }
}

impl Deref for RedisServer {
    type Target = redis::RedisServer;
    fn deref(&self) -> &redis::RedisServer {
        &self.0
    }
}

impl DerefMut for RedisServer {
    fn deref_mut(&mut self) -> &mut redis::RedisServer {
        &mut self.0
    }
}

/// The test kit's 3-master Redis Cluster, killed on drop.
pub struct RedisCluster(redis_cluster::RedisCluster);

impl RedisCluster {
    /// Starts one, or returns `None` (after saying why) when redis-server is not installed and
    /// not required.
    pub fn start(name: &str) -> Option<RedisCluster> {
        or_skip(redis_cluster::RedisCluster::start(name)).map(RedisCluster)
    }
}

impl Deref for RedisCluster {
    type Target = redis_cluster::RedisCluster;
    fn deref(&self) -> &redis_cluster::RedisCluster {
        &self.0
    }
}

impl DerefMut for RedisCluster {
    fn deref_mut(&mut self) -> &mut redis_cluster::RedisCluster {
        &mut self.0
    }
}
