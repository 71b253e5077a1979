//! Which Redis the logs live in: one server, or a Redis Cluster.
//!
//! Everything the Redis store sends is a command on one key or a script on one partition's keys,
//! so the same code runs on both; what differs is how a connection finds the node for a key and
//! how a round of appends is split: on a cluster by master ([`RedisConn::node_of`], see
//! `append.rs`); each partition's keys share one hash tag, so one partition's commands always
//! stay in one entry, in order. The cluster's routing is `cluster_router.rs`.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};

use crate::cluster_router::{ClusterRouter, SlotConn};
use crate::slot::hash_slot;

/// How the sidecar reaches Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedisTopology {
    /// One Redis (`--store redis`): every key on one server, any batch in one script call.
    #[default]
    Single,
    /// A Redis Cluster (`--store redis-cluster`): the URLs are seed nodes, the slot map is
    /// learned from them and `MOVED`/`ASK` are followed; a batch is one script call per master.
    Cluster,
}

/// A managed connection to one Redis or to a cluster's masters; cheap to clone (each node's
/// connection is multiplexed and reconnects by itself).
#[derive(Clone)]
pub(crate) enum RedisConn {
    Single(ConnectionManager),
    Cluster(Arc<ClusterRouter>),
}

impl RedisConn {
    /// Connects to `urls` (one URL for a single Redis; one or more seed nodes, comma-separated
    /// in the config, for a cluster). Each reply waits at most `response`, each connect at most
    /// `connect`. On a cluster, `scripts` are loaded on a node that answers NOSCRIPT.
    pub(crate) async fn connect(
        topology: RedisTopology,
        urls: &[&str],
        response: Duration,
        connect: Duration,
        scripts: Vec<Script>,
    ) -> Result<Self, redis::RedisError> {
        match topology {
            RedisTopology::Single => {
                let url = urls.first().copied().unwrap_or_default();
                let client = client(url)?;
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(response))
                    .set_connection_timeout(Some(connect))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                Ok(RedisConn::Single(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
            RedisTopology::Cluster => Ok(RedisConn::Cluster(
                ClusterRouter::connect(urls, response, connect, scripts).await?,
            )),
        }
    }

    /// The connection for commands on `key` (and on keys of its hash slot).
    pub(crate) fn on(&self, key: &str) -> Routed {
        match self {
            RedisConn::Single(c) => Routed::Single(c.clone()),
            RedisConn::Cluster(r) => Routed::Cluster(SlotConn {
                router: r.clone(),
                slot: hash_slot(key.as_bytes()),
            }),
        }
    }

    /// The master that serves `key`'s slot now, as far as this client knows (`None` on one
    /// Redis, or while the slot's master is unknown): how a batch is split on a cluster.
    pub(crate) fn node_of(&self, key: &str) -> Option<Arc<str>> {
        match self {
            RedisConn::Single(_) => None,
            RedisConn::Cluster(r) => r.owner(hash_slot(key.as_bytes())),
        }
    }

    /// Whether this is a cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }

    /// PINGs the Redis, or every master of the cluster.
    pub(crate) async fn ping(&self) -> Result<(), redis::RedisError> {
        match self {
            RedisConn::Single(c) => {
                let mut c = c.clone();
                let _: String = redis::cmd("PING").query_async(&mut c).await?;
                Ok(())
            }
            RedisConn::Cluster(r) => r.ping_all().await,
        }
    }
}

/// A connection for the keys of one slot (on a single Redis, the one connection).
#[derive(Clone)]
pub(crate) enum Routed {
    Single(ConnectionManager),
    Cluster(SlotConn),
}

impl ConnectionLike for Routed {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Routed::Single(c) => c.req_packed_command(cmd),
            Routed::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Routed::Single(c) => c.req_packed_commands(cmd, offset, count),
            Routed::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Routed::Single(c) => c.get_db(),
            Routed::Cluster(c) => c.get_db(),
        }
    }
}

/// A client for `url` whose sockets send at once (`TCP_NODELAY`), as the gRPC side's do. The
/// `redis` crate leaves Nagle's algorithm on by default, which may hold a call written while an
/// earlier one is unacknowledged. (Measured on loopback, batches of 100 at 4 in flight: no
/// difference either way, since Redis's replies carry the ACKs; the gRPC side's Nagle was what
/// held batches 40 ms.)
pub(crate) fn client<T: redis::IntoConnectionInfo>(url: T) -> redis::RedisResult<redis::Client> {
    let info = url
        .into_connection_info()?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    redis::Client::open(info)
}
