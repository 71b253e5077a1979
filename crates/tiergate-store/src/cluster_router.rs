//! A Redis Cluster client made for one promise: a dead master fails only its own slots.
//!
//! The `redis` crate's cluster connection drives every node through one task, and while it
//! rebuilds its slot map or reconnects to a node that died, requests to the live masters wait
//! too (measured: an org on a live master went from ~100 calls/s to 2 in 1.5 s while another
//! master was down). Here each master has its own managed connection, the slot map is a plain
//! table, and a request goes to its slot's master alone:
//!
//! * `MOVED slot addr`: the slot now lives at `addr`; the table is corrected at once, a full
//!   refresh is started in the background, and the request is sent there.
//! * `ASK slot addr`: the slot is being migrated and this key has left; the request is sent to
//!   `addr` once, preceded by `ASKING` on the same connection.
//! * `TRYAGAIN` (a multi-key request while its keys are split between the two nodes of a
//!   migration) and `CLUSTERDOWN`: wait a little and ask again.
//! * Anything else, a refused connection or a timeout included, is the caller's answer at once
//!   (tiergate then fails closed); a refresh is started in case a replica took over. A node
//!   that failed so is skipped for [`DOWN_FOR`]: calls for its slots fail at once instead of
//!   each waiting on a reconnect, so that a batch holding them does not hold up the others.
//!
//! Every request is bounded by a number of tries and a deadline, so a slot that never settles
//! fails instead of hanging.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisResult, ServerErrorKind, Value};

/// Hash slots in a Redis Cluster.
pub(crate) const SLOTS: usize = 16_384;

/// Tries of one request (redirects and waits included) before it fails.
const MAX_TRIES: u32 = 32;

/// How long a node that did not answer is not asked again (its slots' calls fail at once).
const DOWN_FOR: Duration = Duration::from_millis(200);

/// The hash slot of `key`: CRC16 (XMODEM) of its hash tag (`{…}`, when not empty) or of the
/// whole key, modulo 16,384, as Redis Cluster computes it. Public so that tests can hold it
/// against Redis's own `CLUSTER KEYSLOT`: a slot computed differently would send every call of
/// an org to the wrong master first.
pub fn hash_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16_xmodem(tagged) % SLOTS as u16
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot map and one connection per node.
pub(crate) struct ClusterRouter {
    /// Seed URLs, asked for the slot map when no known node answers.
    seeds: Vec<String>,
    /// What precedes `host:port` in a node's URL (`redis://user:pass@`), from the first seed,
    /// so that nodes learned from the cluster are reached with the seeds' credentials.
    prefix: String,
    /// Each slot's master (`host:port`), `None` while unknown.
    slots: RwLock<Vec<Option<Arc<str>>>>,
    nodes: RwLock<HashMap<Arc<str>, ConnectionManager>>,
    /// Nodes that did not answer, and until when they are not asked.
    down: RwLock<HashMap<Arc<str>, Instant>>,
    refreshing: AtomicBool,
    response: Duration,
    connect: Duration,
}

impl std::fmt::Debug for ClusterRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterRouter")
            .field("seeds", &self.seeds)
            .finish_non_exhaustive()
    }
}

/// `host:port` of a URL, and what precedes it.
fn split_url(url: &str) -> Option<(&str, &str)> {
    let scheme_end = url.find("://")? + 3;
    let after = &url[scheme_end..];
    let host_start = scheme_end + after.rfind('@').map_or(0, |at| at + 1);
    let rest = &url[host_start..];
    let host_end = host_start + rest.find('/').unwrap_or(rest.len());
    Some((&url[..host_start], &url[host_start..host_end]))
}

fn protocol(msg: &str) -> RedisError {
    RedisError::from((ErrorKind::Client, "redis cluster", msg.to_owned()))
}

impl ClusterRouter {
    /// Learns the slot map from the seeds (one must answer) and connects to the masters.
    pub(crate) async fn connect(
        urls: &[&str],
        response: Duration,
        connect: Duration,
    ) -> RedisResult<Arc<Self>> {
        let (prefix, _) = urls
            .first()
            .and_then(|u| split_url(u))
            .ok_or_else(|| protocol("no seed URL"))?;
        let router = Arc::new(Self {
            seeds: urls.iter().map(|u| (*u).to_owned()).collect(),
            prefix: prefix.to_owned(),
            slots: RwLock::new(vec![None; SLOTS]),
            nodes: RwLock::new(HashMap::new()),
            down: RwLock::new(HashMap::new()),
            refreshing: AtomicBool::new(false),
            response,
            connect,
        });
        router.refresh().await?;
        Ok(router)
    }

    /// The connection to `addr`, made on first use; an error while the node is marked down.
    async fn node(&self, addr: &Arc<str>) -> RedisResult<ConnectionManager> {
        if let Some(until) = self.down.read().get(addr)
            && Instant::now() < *until
        {
            return Err(RedisError::from((
                ErrorKind::Io,
                "redis cluster node did not answer; retried shortly",
                addr.to_string(),
            )));
        }
        if let Some(c) = self.nodes.read().get(addr) {
            return Ok(c.clone());
        }
        let client = redis::Client::open(format!("{}{addr}", self.prefix))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(self.response))
            .set_connection_timeout(Some(self.connect))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let c = ConnectionManager::new_with_config(client, config).await?;
        // Two callers may have connected at once: the first one kept is used by both.
        Ok(self.nodes.write().entry(addr.clone()).or_insert(c).clone())
    }

    /// Asks the known nodes, then the seeds, for `CLUSTER SLOTS`, and replaces the map with the
    /// first answer.
    async fn refresh(&self) -> RedisResult<()> {
        let mut asked: Vec<Arc<str>> = self.nodes.read().keys().cloned().collect();
        for seed in &self.seeds {
            if let Some((_, addr)) = split_url(seed)
                && !asked.iter().any(|a| &**a == addr)
            {
                asked.push(addr.into());
            }
        }
        let mut last = protocol("no node answered CLUSTER SLOTS");
        for addr in asked {
            let answer = async {
                let mut c = self.node(&addr).await?;
                let v: Value = redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async(&mut c)
                    .await?;
                parse_slots(v, &addr)
            }
            .await;
            match answer {
                Ok(map) => {
                    *self.slots.write() = map;
                    return Ok(());
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Starts a refresh in the background unless one is running.
    fn refresh_soon(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.refresh().await {
                tracing::debug!(error = %e, "redis cluster: slot map not refreshed");
            }
            me.refreshing.store(false, Ordering::Release);
        });
    }

    /// The slot's master, as far as this client knows.
    pub(crate) fn owner(&self, slot: u16) -> Option<Arc<str>> {
        self.slots.read().get(usize::from(slot)).cloned().flatten()
    }

    /// The masters that own slots now.
    pub(crate) fn masters(&self) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = Vec::new();
        for addr in self.slots.read().iter().flatten() {
            if !out.contains(addr) {
                out.push(addr.clone());
            }
        }
        out
    }

    /// PINGs every master; the first failure is the answer. A slot without a master counts as
    /// a failure too.
    pub(crate) async fn ping_all(self: &Arc<Self>) -> RedisResult<()> {
        if self.slots.read().iter().any(Option::is_none) {
            self.refresh_soon();
            return Err(protocol("some hash slots have no master"));
        }
        for addr in self.masters() {
            let mut c = self.node(&addr).await?;
            let _: String = redis::cmd("PING").query_async(&mut c).await?;
        }
        Ok(())
    }

    /// Sends `cmd`, whose keys are all in `slot`, to the slot's master, following redirects.
    pub(crate) async fn run(self: &Arc<Self>, slot: u16, cmd: &Cmd) -> RedisResult<Value> {
        let deadline = Instant::now() + 2 * self.response;
        let mut ask: Option<Arc<str>> = None;
        let mut wait = Duration::from_millis(5);
        let mut tries = 0;
        loop {
            tries += 1;
            let asking = ask.take();
            let addr = match asking.clone().or_else(|| self.owner(slot)) {
                Some(a) => a,
                None => {
                    self.refresh().await?;
                    self.owner(slot)
                        .ok_or_else(|| protocol("the slot has no master"))?
                }
            };
            let result = async {
                let mut c = self.node(&addr).await?;
                match asking {
                    None => c.req_packed_command(cmd).await?.extract_error(),
                    Some(_) => {
                        let mut p = redis::pipe();
                        p.cmd("ASKING").add_command(cmd.clone());
                        let mut v = c.req_packed_commands(&p, 1, 1).await?;
                        v.pop()
                            .ok_or_else(|| protocol("no reply after ASKING"))?
                            .extract_error()
                    }
                }
            }
            .await;
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if tries >= MAX_TRIES || Instant::now() >= deadline {
                return Err(err);
            }
            match err.kind() {
                ErrorKind::Server(ServerErrorKind::Moved) => {
                    let (to, moved) = err.redirect_node().ok_or_else(|| err.clone())?;
                    let to: Arc<str> = to.into();
                    if let Some(s) = self.slots.write().get_mut(usize::from(moved)) {
                        *s = Some(to);
                    }
                    self.refresh_soon();
                }
                ErrorKind::Server(ServerErrorKind::Ask) => {
                    let (to, _) = err.redirect_node().ok_or_else(|| err.clone())?;
                    ask = Some(to.into());
                }
                ErrorKind::Server(ServerErrorKind::TryAgain | ServerErrorKind::ClusterDown) => {
                    tokio::time::sleep(
                        wait.min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                    wait = (wait * 2).min(Duration::from_millis(100));
                }
                _ => {
                    // A node that does not answer may have been replaced: look again, but
                    // this request fails now (the caller fails closed).
                    if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() {
                        let mut down = self.down.write();
                        if down.get(&addr).is_none_or(|u| Instant::now() >= *u) {
                            down.insert(addr, Instant::now() + DOWN_FOR);
                        }
                        drop(down);
                        self.refresh_soon();
                    }
                    return Err(err);
                }
            }
        }
    }

    /// Sends a pipeline whose keys are all in `slot` to the slot's master (no redirects: the
    /// store sends none; a pipeline's later commands could not be redirected alone).
    async fn run_pipeline(
        self: &Arc<Self>,
        slot: u16,
        p: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let addr = self
            .owner(slot)
            .ok_or_else(|| protocol("the slot has no master"))?;
        let mut c = self.node(&addr).await?;
        c.req_packed_commands(p, offset, count).await
    }
}

/// `CLUSTER SLOTS`: `[start, end, [host, port, id, …], replicas…]` per range. An empty host
/// means the node that answered.
fn parse_slots(v: Value, answered: &str) -> RedisResult<Vec<Option<Arc<str>>>> {
    let bad = || protocol("unexpected CLUSTER SLOTS reply");
    let Value::Array(ranges) = v else {
        return Err(bad());
    };
    let answered_host = answered.rsplit_once(':').map_or(answered, |(h, _)| h);
    let mut map = vec![None; SLOTS];
    for range in ranges {
        let Value::Array(r) = range else {
            return Err(bad());
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
            (r.first(), r.get(1), r.get(2))
        else {
            return Err(bad());
        };
        let host = match master.first() {
            Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
            Some(Value::SimpleString(h)) => h.clone(),
            _ => return Err(bad()),
        };
        let host = if host.is_empty() || host == "?" {
            answered_host.to_owned()
        } else {
            host
        };
        let Some(Value::Int(port)) = master.get(1) else {
            return Err(bad());
        };
        let addr: Arc<str> = format!("{host}:{port}").into();
        let (start, end) = (
            usize::try_from(*start).map_err(|_| bad())?,
            usize::try_from(*end).map_err(|_| bad())?,
        );
        if start > end || end >= SLOTS {
            return Err(bad());
        }
        for s in &mut map[start..=end] {
            *s = Some(addr.clone());
        }
    }
    Ok(map)
}

/// A connection for the keys of one slot: what the store's commands and scripts run on.
#[derive(Clone)]
pub(crate) struct SlotConn {
    pub(crate) router: Arc<ClusterRouter>,
    pub(crate) slot: u16,
}

impl ConnectionLike for SlotConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> redis::RedisFuture<'a, Value> {
        Box::pin(async move { self.router.run(self.slot, cmd).await })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.router
                .run_pipeline(self.slot, cmd, offset, count)
                .await
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // From the Redis Cluster specification.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(hash_slot(b"foo"), 12_182);
        assert_eq!(
            hash_slot(b"{user1000}.following"),
            hash_slot(b"{user1000}.followers")
        );
        assert_eq!(hash_slot(b"{user1000}.following"), hash_slot(b"user1000"));
        // An empty tag hashes the whole key.
        assert_eq!(
            hash_slot(b"foo{}{bar}"),
            crc16_xmodem(b"foo{}{bar}") % 16_384
        );
        assert_eq!(hash_slot(b"foo{{bar}}zap"), hash_slot(b"{bar"));
        assert_eq!(hash_slot(b"tg:{acme}:log"), hash_slot(b"tg:{acme}:snap"));
    }

    #[test]
    fn urls_split_into_credentials_and_address() {
        assert_eq!(
            split_url("redis://127.0.0.1:7000"),
            Some(("redis://", "127.0.0.1:7000"))
        );
        assert_eq!(
            split_url("rediss://u:p@h:1/0"),
            Some(("rediss://u:p@", "h:1"))
        );
        assert_eq!(split_url("h:1"), None);
    }

    #[test]
    fn a_slots_reply_becomes_the_map() {
        let node = |h: &str, p: i64| {
            Value::Array(vec![
                Value::BulkString(h.as_bytes().to_vec()),
                Value::Int(p),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(8_000),
                node("10.0.0.1", 7000),
            ]),
            Value::Array(vec![Value::Int(8_001), Value::Int(16_383), node("", 7001)]),
        ]);
        let map = parse_slots(reply, "10.0.0.9:7005").unwrap();
        assert_eq!(map[0].as_deref(), Some("10.0.0.1:7000"));
        assert_eq!(map[8_000].as_deref(), Some("10.0.0.1:7000"));
        assert_eq!(map[8_001].as_deref(), Some("10.0.0.9:7001"));
        assert_eq!(map[16_383].as_deref(), Some("10.0.0.9:7001"));
        let partial = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(10),
            node("h", 1),
        ])]);
        assert!(parse_slots(partial, "h:1").unwrap()[11].is_none());
        assert!(parse_slots(Value::Int(3), "h:1").is_err());
    }
}
