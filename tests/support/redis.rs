//! The test kit's `redis-server` (on a free port, with its data in a fresh directory, append-only
//! file fsynced on every write), with this suite's policy when there is none to start.
//!
//! When `redis-server` is not on `PATH` a test skips with a message, unless
//! `TIERGATE_REQUIRE_REDIS=1` (which `.ci/run` sets): then it fails. Any other failure to start
//! it fails the test.

use std::ops::{Deref, DerefMut};

use tiergate_testkit::redis::{self, RedisError};

/// A running `redis-server`, killed on drop.
pub struct RedisServer(redis::RedisServer);

impl RedisServer {
    /// Starts one, or returns `None` (after saying why) when redis-server is not installed and
    /// not required.
    pub fn start(name: &str) -> Option<RedisServer> {
        match redis::RedisServer::start(name) {
            Ok(r) => Some(RedisServer(r)),
            Err(RedisError::NotInstalled)
                if std::env::var("TIERGATE_REQUIRE_REDIS").as_deref() != Ok("1") =>
            {
                eprintln!(
                    "skipped: redis-server is not on PATH (set TIERGATE_REQUIRE_REDIS=1 to fail)"
                );
                None
            }
            Err(RedisError::NotInstalled) => {
                panic!("TIERGATE_REQUIRE_REDIS=1 but redis-server is not on PATH")
            }
            Err(e) => panic!("{e}"),
        }
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
