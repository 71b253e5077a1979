//! The Redis side of replication: one ordered log of [`Command`]s per org.
//!
//! Keys (every key of one org carries the hash tag `{org}`, so Redis Cluster keeps an org on one
//! slot and the script may touch all of them):
//!
//! * `tg:{org}:log`: a stream of commands. An entry's id is `<ms>-<n>`: `ms` is the time the
//!   command runs at, never less than the entry before it, so log order is time order (a stream
//!   refuses a smaller id, and the script then uses the stream's latest time).
//! * `tg:{org}:snap`: the org's state as of one entry (`id`, `state`); the entries up to it are
//!   trimmed from the stream, so an org's keys hold its live state and the entries since, not
//!   its history.
//! * `tg:orgs`: the set of org ids, for replicas that start later or meet an org they never saw.
//! * `tg:schema`: the layout version; a newer one is refused.
//!
//! [`APPEND`] runs atomically inside Redis: it orders the command after every earlier one of the
//! org and returns the entries the caller has not applied yet. [`READ`] pages a log together
//! with the snapshot that replaced its older entries; [`SNAPSHOT`] stores one and trims. Each is
//! loaded once and called by SHA (`redis::Script` reloads it after a Redis restart emptied the
//! cache).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use redis::{AsyncCommands, Script, Value};
use tiergate_core::{Command, EngineError};

use crate::append::{APPEND_ON_NODE, Answer, Appender, Item};
use crate::commit_stats::CommitStats;
use crate::redis_conn::{RedisConn, RedisTopology};
use tokio::sync::{mpsc, oneshot};

/// The layout of the keys above.
pub const REDIS_SCHEMA_VERSION: u64 = 1;

/// Entries an append returns at most; the rest are paged with `XRANGE`.
pub(crate) const PAGE: usize = 512;

/// Entries one `XRANGE` page carries when catching up (a start reads whole logs).
const READ_PAGE: usize = 4_096;

/// What every script starts with: `id_less` compares two stream ids (`ms-n`; Lua numbers hold
/// every millisecond time exactly); `xadd` appends a command, creating the log only for a
/// caller that has applied nothing of it (`NOMKSTREAM` otherwise: a log that vanished is not
/// silently started again; `nil` says so); `append_at_latest` appends at the log's latest
/// time, for a log already later than the time proposed (another replica's clock is ahead).
const HELPERS: &str = r#"
local function id_less(a, b)
  local am, an = string.match(a, '^(%d+)-(%d+)$')
  local bm, bn = string.match(b, '^(%d+)-(%d+)$')
  am, an, bm, bn = tonumber(am), tonumber(an), tonumber(bm), tonumber(bn)
  return am < bm or (am == bm and an < bn)
end
local function xadd(key, after, at, replica, cmd)
  if after == '0-0' then
    return pcall(redis.call, 'XADD', key, at .. '-*', 'r', replica, 'c', cmd)
  end
  return pcall(redis.call, 'XADD', key, 'NOMKSTREAM', at .. '-*', 'r', replica, 'c', cmd)
end
local function append_at_latest(key, replica, cmd)
  local info = redis.call('XINFO', 'STREAM', key)
  local latest
  for j = 1, #info, 2 do
    if info[j] == 'last-generated-id' then latest = info[j + 1] end
  end
  return redis.call('XADD', key, string.match(latest, '^(%d+)-') .. '-*', 'r', replica, 'c', cmd)
end
"#;

/// Orders commands after their orgs' others and returns, for each, what the caller has not
/// applied.
///
/// KEYS: per command, its org's log and snapshot (an org may repeat). ARGV: the replica id, the
/// page size, then per command its proposed ms, its JSON and the caller's last applied id, or
/// an empty string for "the command before this one of the same org in this call" (a batch's
/// later items: nothing can come between them, so their entries are only their own).
/// Returns, per command, `{id, entries}` where entries are the other entries in `(after, id)`,
/// at most a page of them (the caller knows its own command; with one replica there are none),
/// or `{id, false}` when a snapshot has replaced entries the caller never applied (it then
/// reads the snapshot with [`READ`]), or `{'lost', false}` when the caller has applied entries
/// of a log that no longer exists (Redis, or a cluster's master, lost the org's keys: nothing
/// is written, and the replica stops trusting Redis). A log is only ever created by a caller
/// that has applied nothing of it (`after` = `0-0`); a trimmed log stays, empty.
///
/// The whole batch is one atomic script run: one round trip, one append to Redis's file. A
/// Redis Cluster refuses declared keys of different slots in one run, so there this script
/// carries one slot's appends, and a batch goes to each master as one
/// [`crate::APPEND_ON_NODE`] (see `append.rs`).
pub const APPEND: &str = r#"
local replica, page = ARGV[1], ARGV[2]
local out, last = {}, {}
for i = 1, #KEYS / 2 do
  local key, snap = KEYS[2 * i - 1], KEYS[2 * i]
  local at, cmd, after = ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2]
  if after == '' then after = last[key] or '0-0' end
  local ok, id = xadd(key, after, at, replica, cmd)
  if not ok then
    -- The log is already later (another replica's clock is ahead): run at its latest time.
    id = append_at_latest(key, replica, cmd)
  end
  if not id or last[key] == 'lost' then
    last[key] = 'lost'
    out[i] = {'lost', false}
  else
    last[key] = id
    local sid = redis.call('HGET', snap, 'id')
    if sid and id_less(after, sid) then
      out[i] = {id, false}
    else
      out[i] = {id, redis.call('XRANGE', key, '(' .. after, '(' .. id, 'COUNT', page)}
    end
  end
end
return out
"#;

/// Reads an org's log after the caller's last applied entry, atomically with its snapshot.
///
/// KEYS: log, snapshot. ARGV: after, until (an id or `+`), page size.
/// Returns `{snapshot id or false, snapshot or false, entries}`: the snapshot when it replaced
/// entries after `after` (the entries then follow the snapshot), else only the entries.
pub const READ: &str = r#"
local after = ARGV[1]
local snap = redis.call('HMGET', KEYS[2], 'id', 'state')
if snap[1] and id_less(after, snap[1]) then
  return {snap[1], snap[2], redis.call('XRANGE', KEYS[1], '(' .. snap[1], ARGV[2], 'COUNT', ARGV[3])}
end
return {false, false, redis.call('XRANGE', KEYS[1], '(' .. after, ARGV[2], 'COUNT', ARGV[3])}
"#;

/// Stores an org's snapshot as of entry `id` and drops the entries it replaces.
///
/// KEYS: log, snapshot. ARGV: id, state. A snapshot older than the stored one changes nothing.
/// Returns 1 when stored.
pub const SNAPSHOT: &str = r#"
local cur = redis.call('HGET', KEYS[2], 'id')
if cur and not id_less(cur, ARGV[1]) then return 0 end
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'state', ARGV[2])
local ms, n = string.match(ARGV[1], '^(%d+)-(%d+)$')
redis.call('XTRIM', KEYS[1], 'MINID', ms .. '-' .. (tonumber(n) + 1))
return 1
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{HELPERS}{body}"))
}

/// A stream entry id: the entry's time in ms, then its number within that ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogId {
    /// The time the command runs at (Unix ms).
    pub ms: u64,
    /// Its number within the millisecond.
    pub n: u64,
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.n)
    }
}

impl FromStr for LogId {
    type Err = RedisStoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RedisStoreError::Protocol(format!("bad stream id {s:?}"));
        let (ms, n) = s.split_once('-').ok_or_else(bad)?;
        Ok(LogId {
            ms: ms.parse().map_err(|_| bad())?,
            n: n.parse().map_err(|_| bad())?,
        })
    }
}

/// One command of an org's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its place (and time).
    pub id: LogId,
    /// The replica that appended it.
    pub replica: String,
    /// The command.
    pub command: Command,
}

/// One page of an org's log, with the snapshot that must be restored first, if any.
#[derive(Debug)]
pub struct Page {
    /// The snapshot (as of its entry id), when it replaced entries the reader had not applied.
    pub snapshot: Option<(LogId, String)>,
    /// Entries after the snapshot, or after the reader's last applied entry.
    pub entries: Vec<Entry>,
}

/// Why Redis could not be used. Each variant keeps the error that caused it as its
/// `source()`. [`RedisStoreError::is_unavailable`] tells a store that cannot be reached (try
/// again later) from one whose contents cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    /// The URL is not a Redis URL, or Redis could not be reached at start.
    #[error("cannot connect to {url}")]
    Connect {
        /// The URL given.
        url: String,
        /// The client's reason.
        source: redis::RedisError,
    },
    /// A call failed: Redis is unreachable, timed out or answered with an error.
    #[error("redis call failed")]
    Call(#[from] redis::RedisError),
    /// The task that batches appends stopped (the runtime is shutting down).
    #[error("the redis append batcher stopped")]
    BatcherStopped,
    /// Redis answers but lost tiergate's keys (restarted without persistence, or flushed):
    /// the shared budget is gone, and only a restart of the sidecars may trust it again.
    #[error("redis lost tiergate's keys (restarted without persistence?); restart the sidecars")]
    Lost,
    /// Redis answered something this version cannot read.
    #[error("redis: unexpected reply: {0}")]
    Protocol(String),
    /// A command, an entry or a snapshot is not valid JSON for this build's types.
    #[error("{what}: not valid JSON for this tiergate")]
    Json {
        /// Which value (`command`, `entry <id>`, `snapshot <id>`).
        what: String,
        /// The codec's reason.
        source: serde_json::Error,
    },
    /// A snapshot another replica stored was refused by this replica's engine.
    #[error("snapshot {id}: refused by the engine")]
    Restore {
        /// The entry the snapshot was taken at.
        id: LogId,
        /// The engine's reason.
        source: EngineError,
    },
    /// This replica's own entry was replaced by a snapshot before it applied it: its effect
    /// stands (in the snapshot), but its result is lost.
    #[error(
        "entry {id} of {org} was replaced by a snapshot before this replica applied it; its effect stands"
    )]
    Superseded {
        /// The org.
        org: String,
        /// The entry.
        id: LogId,
    },
    /// A task loading an org's log at start panicked or was cancelled.
    #[error("loading an org's log")]
    Load(#[source] tokio::task::JoinError),
    /// The keys were written by a newer tiergate.
    #[error(
        "redis holds tiergate schema version {found}; this tiergate reads up to {REDIS_SCHEMA_VERSION}: refusing to touch it"
    )]
    NewerSchema {
        /// The version found.
        found: u64,
    },
}

impl RedisStoreError {
    /// Whether Redis could not be reached or did not answer (the replica is down until it
    /// does), as opposed to answering something this replica cannot trust or use.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            RedisStoreError::Connect { .. }
                | RedisStoreError::Call(_)
                | RedisStoreError::BatcherStopped
        )
    }

    /// The same error again, for each caller of a batch that failed as one.
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            RedisStoreError::Call(e) => RedisStoreError::Call(e.clone()),
            RedisStoreError::BatcherStopped => RedisStoreError::BatcherStopped,
            RedisStoreError::Protocol(s) => RedisStoreError::Protocol(s.clone()),
            other => RedisStoreError::Protocol(other.to_string()),
        }
    }
}

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://host:port/db`; for a cluster, seed nodes separated by commas
    /// (`redis://h1:p1,redis://h2:p2`).
    pub url: String,
    /// One Redis or a cluster.
    pub topology: RedisTopology,
    /// Longest wait for one reply; past it the call fails (and the store's error rule applies).
    pub response_timeout: Duration,
    /// Longest wait to connect.
    pub connect_timeout: Duration,
    /// This replica's id, written in every entry it appends.
    pub replica: String,
}

/// The per-org logs in Redis (one server or a cluster), over managed, multiplexed connections
/// that reconnect by themselves: one to a single Redis, one per master of a cluster.
#[derive(Clone)]
pub struct RedisLog {
    conn: RedisConn,
    appender: Appender,
    read: Script,
    snapshot: Script,
    batches: Arc<Batchers>,
    replica: String,
    stats: Arc<CommitStats>,
    response_timeout: Duration,
}

/// One `APPEND` waiting for its batch.
struct Call {
    item: Item,
    reply: oneshot::Sender<Answer>,
}

/// Appends in one script call at most.
const BATCH: usize = 256;

/// The batchers: one on a single Redis; on a cluster one per master, so that a master that
/// hangs (a host gone without a reset) holds up only the appends bound for it, not a batch
/// shared with the live masters.
struct Batchers {
    appender: Appender,
    stats: Arc<CommitStats>,
    /// By master as the slot map knows it (`None`: one Redis, or a slot with no known master).
    /// Bounded by the cluster's masters.
    lanes: DashMap<Option<Arc<str>>, mpsc::Sender<Call>>,
}

impl Batchers {
    /// The batcher for `org`'s appends, started on first use.
    fn lane(&self, org: &str) -> mpsc::Sender<Call> {
        let conn = &self.appender.conn;
        let key = if conn.is_cluster() {
            conn.node_of(&log_key(org))
        } else {
            None
        };
        if let Some(tx) = self.lanes.get(&key) {
            return tx.clone();
        }
        self.lanes
            .entry(key)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(4 * BATCH);
                tokio::spawn(batcher(self.appender.clone(), self.stats.clone(), rx));
                tx
            })
            .clone()
    }
}

/// Sends the `APPEND`s waiting at that moment together (one script call on one Redis, one per
/// master on a cluster, where a slot may have moved since its lane was chosen): while one batch
/// is in Redis, the next gathers (group commit, as in the embedded store).
async fn batcher(appender: Appender, stats: Arc<CommitStats>, mut rx: mpsc::Receiver<Call>) {
    let mut batch: Vec<Call> = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let (n, start) = (batch.len(), Instant::now());
        let (items, replies): (Vec<Item>, Vec<_>) =
            batch.drain(..).map(|c| (c.item, c.reply)).unzip();
        let answers = appender.append(items.into()).await;
        let all_ok = answers.iter().all(Result::is_ok);
        // A send fails only when the caller stopped waiting (its call was cancelled): nobody
        // is left to tell.
        for (reply, a) in replies.into_iter().zip(answers) {
            let _ = reply.send(a);
        }
        if all_ok {
            stats.observe(start.elapsed(), n);
        }
    }
}

impl fmt::Debug for RedisLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLog").finish_non_exhaustive()
    }
}

pub(crate) fn log_key(org: &str) -> String {
    format!("tg:{{{org}}}:log")
}

pub(crate) fn snap_key(org: &str) -> String {
    format!("tg:{{{org}}}:snap")
}

const ORGS_KEY: &str = "tg:orgs";
const SCHEMA_KEY: &str = "tg:schema";

impl RedisLog {
    /// Connects, checks (or writes) the schema version and loads the scripts (on every master
    /// of a cluster).
    pub async fn connect(opts: &RedisOptions) -> Result<Self, RedisStoreError> {
        let connect = |source| RedisStoreError::Connect {
            url: opts.url.clone(),
            source,
        };
        let urls: Vec<&str> = opts.url.split(',').map(str::trim).collect();
        let (append, on_node, read, snapshot) = (
            script(APPEND),
            script(APPEND_ON_NODE),
            script(READ),
            script(SNAPSHOT),
        );
        let all = vec![
            append.clone(),
            on_node.clone(),
            read.clone(),
            snapshot.clone(),
        ];
        let conn = RedisConn::connect(
            opts.topology,
            &urls,
            opts.response_timeout,
            opts.connect_timeout,
            all,
        )
        .await
        .map_err(connect)?;
        let appender = Appender {
            conn: conn.clone(),
            append,
            on_node,
            replica: opts.replica.as_str().into(),
        };
        let stats = Arc::new(CommitStats::default());
        let batches = Arc::new(Batchers {
            appender: appender.clone(),
            stats: stats.clone(),
            lanes: DashMap::new(),
        });
        let log = Self {
            conn,
            appender,
            read,
            snapshot,
            batches,
            replica: opts.replica.clone(),
            stats,
            response_timeout: opts.response_timeout,
        };
        log.check_schema().await?;
        // On a cluster each master loads a script on its first call (NOSCRIPT runs nothing).
        if let RedisConn::Single(_) = &log.conn {
            let mut c = log.conn.on(SCHEMA_KEY);
            for s in [&log.appender.append, &log.read, &log.snapshot] {
                s.prepare_invoke().load_async(&mut c).await?;
            }
        }
        Ok(log)
    }

    async fn check_schema(&self) -> Result<(), RedisStoreError> {
        let mut c = self.conn.on(SCHEMA_KEY);
        let _: bool = c.set_nx(SCHEMA_KEY, REDIS_SCHEMA_VERSION).await?;
        let found: String = c.get(SCHEMA_KEY).await?;
        let found: u64 = found
            .parse()
            .map_err(|_| RedisStoreError::Protocol(format!("{SCHEMA_KEY} = {found:?}")))?;
        if found > REDIS_SCHEMA_VERSION {
            return Err(RedisStoreError::NewerSchema { found });
        }
        Ok(())
    }

    /// Latency of the script calls that appended batches, and the entries they carried.
    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }

    /// One Redis or a cluster: what a successful call proves (on a cluster, only its own
    /// master is up) and what the store is called in logs and metrics.
    pub fn topology(&self) -> RedisTopology {
        if self.conn.is_cluster() {
            RedisTopology::Cluster
        } else {
            RedisTopology::Single
        }
    }

    /// The longest wait for one reply (`RedisOptions::response_timeout`).
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The id of the replica this log appends for.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// A fresh replica id: unique per process start.
    pub fn new_replica_id() -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            // A clock before 1970 only makes the id less random: the pid still tells
            // processes apart.
            .unwrap_or(0);
        format!("{:x}-{}", nanos & 0xffff_ffff_ffff, std::process::id())
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> Result<(), RedisStoreError> {
        Ok(self.conn.ping().await?)
    }

    /// Appends `command` for its org at `at_ms` (or later, if the log is already later) and
    /// returns its id and the entries between `after` and it (at most a page: when the page is
    /// full, page on with [`RedisLog::read`]). The caller's own entry is not sent back.
    pub async fn append(
        &self,
        command: &Command,
        at_ms: u64,
        after: LogId,
    ) -> Result<(LogId, Vec<Entry>), RedisStoreError> {
        let org = command.org();
        let json = serde_json::to_string(command).map_err(|source| RedisStoreError::Json {
            what: "command".into(),
            source,
        })?;
        let (reply, rx) = oneshot::channel();
        let gone = || RedisStoreError::BatcherStopped;
        let call = Call {
            item: Item {
                org: org.to_owned(),
                at_ms,
                json,
                after: after.to_string(),
            },
            reply,
        };
        self.batches
            .lane(org)
            .send(call)
            .await
            .map_err(|_| gone())?;
        let (id, entries) = rx.await.map_err(|_| gone())??;
        self.appended(command, &id, entries)
    }

    /// Appends `commands` in order, in one script call (one round trip; atomic, so nothing
    /// comes between two commands of one org), each at `at_ms` or later. `after` gives the
    /// caller's last applied entry of each org; it is asked once per org, at its first command.
    ///
    /// Returns, per command, what [`RedisLog::append`] returns for one: its id and the entries
    /// between the org's previous command of this call (or `after`, for its first) and it,
    /// ending with its own when nothing is missing. When the list does not end with its own
    /// (a snapshot replaced entries, or a full page), read on with [`RedisLog::read`].
    pub async fn append_many(
        &self,
        commands: &[Command],
        at_ms: u64,
        mut after: impl FnMut(&str) -> LogId,
    ) -> Result<Vec<(LogId, Vec<Entry>)>, RedisStoreError> {
        let start = Instant::now();
        let mut seen = std::collections::HashSet::new();
        let mut items = Vec::with_capacity(commands.len());
        for command in commands {
            let org = command.org();
            let json = serde_json::to_string(command).map_err(|source| RedisStoreError::Json {
                what: "command".into(),
                source,
            })?;
            let after = if seen.insert(org) {
                after(org).to_string()
            } else {
                String::new()
            };
            let item = Item {
                org: org.to_owned(),
                at_ms,
                json,
                after,
            };
            items.push(item);
        }
        let answers = self.appender.append(items.into()).await;
        let mut results = Vec::with_capacity(answers.len());
        for a in answers {
            results.push(a?);
        }
        self.stats.observe(start.elapsed(), commands.len());
        commands
            .iter()
            .zip(results)
            .map(|(command, (id, entries))| self.appended(command, &id, entries))
            .collect()
    }

    /// One command's id and entries, from the script's answer for it.
    fn appended(
        &self,
        command: &Command,
        id: &str,
        entries: Value,
    ) -> Result<(LogId, Vec<Entry>), RedisStoreError> {
        if id == "lost" {
            return Err(RedisStoreError::Lost);
        }
        let id: LogId = id.parse()?;
        if matches!(entries, Value::Nil | Value::Boolean(false)) {
            // A snapshot replaced entries this replica has not applied: it must read it.
            return Ok((id, Vec::new()));
        }
        let mut entries = decode_entries(entries)?;
        if entries.len() < PAGE {
            // Nothing is missing between the others and ours: append ours as sent.
            entries.push(Entry {
                id,
                replica: self.replica.clone(),
                command: command.clone(),
            });
        }
        Ok((id, entries))
    }

    /// The next page of `org`'s log after `after`, up to `until` (inclusive) or the end; with
    /// the snapshot that replaced entries after `after`, if one did.
    pub async fn read(
        &self,
        org: &str,
        after: LogId,
        until: Option<LogId>,
    ) -> Result<Page, RedisStoreError> {
        let mut c = self.conn.on(&log_key(org));
        let end = until.map_or_else(|| "+".to_owned(), |u| u.to_string());
        let (sid, state, entries): (Option<String>, Option<String>, Value) = self
            .read
            .key(log_key(org))
            .key(snap_key(org))
            .arg(after.to_string())
            .arg(end)
            .arg(READ_PAGE)
            .invoke_async(&mut c)
            .await?;
        let snapshot = match (sid, state) {
            (Some(id), Some(state)) => Some((id.parse()?, state)),
            _ => None,
        };
        Ok(Page {
            snapshot,
            entries: decode_entries(entries)?,
        })
    }

    /// Stores `org`'s snapshot as of entry `id` and trims the entries before it. Returns
    /// whether it was stored (a newer one may already be there).
    pub async fn store_snapshot(
        &self,
        org: &str,
        id: LogId,
        state: &str,
    ) -> Result<bool, RedisStoreError> {
        let mut c = self.conn.on(&log_key(org));
        let stored: i64 = self
            .snapshot
            .key(log_key(org))
            .key(snap_key(org))
            .arg(id.to_string())
            .arg(state)
            .invoke_async(&mut c)
            .await?;
        Ok(stored == 1)
    }

    /// Whether tiergate's schema key is still there (a Redis that restarted without its data
    /// answers, but has lost every log).
    pub async fn schema_present(&self) -> Result<bool, RedisStoreError> {
        let mut c = self.conn.on(SCHEMA_KEY);
        Ok(c.exists(SCHEMA_KEY).await?)
    }

    /// Adds an org to the set replicas discover orgs from.
    pub async fn register(&self, org: &str) -> Result<(), RedisStoreError> {
        let mut c = self.conn.on(ORGS_KEY);
        let _: i64 = c.sadd(ORGS_KEY, org).await?;
        Ok(())
    }

    /// Whether an org was ever registered.
    pub async fn is_registered(&self, org: &str) -> Result<bool, RedisStoreError> {
        let mut c = self.conn.on(ORGS_KEY);
        Ok(c.sismember(ORGS_KEY, org).await?)
    }

    /// Takes or keeps a lease named `key` for this replica for `ttl_ms`: true while this
    /// replica holds it (what makes one replica of many do a job, e.g. send alerts).
    pub async fn lease(&self, key: &str, ttl_ms: u64) -> Result<bool, RedisStoreError> {
        let mut c = self.conn.on(key);
        let held: i64 = Script::new(
            r"local v = redis.call('GET', KEYS[1])
              if v == false then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
              if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
              return 0",
        )
        .key(key)
        .arg(&self.replica)
        .arg(ttl_ms)
        .invoke_async(&mut c)
        .await?;
        Ok(held == 1)
    }

    /// A value stored under `key` by [`RedisLog::put_value`].
    pub async fn value(&self, key: &str) -> Result<Option<String>, RedisStoreError> {
        let mut c = self.conn.on(key);
        Ok(c.get(key).await?)
    }

    /// Stores `value` under `key`.
    pub async fn put_value(&self, key: &str, value: &str) -> Result<(), RedisStoreError> {
        let mut c = self.conn.on(key);
        let () = c.set(key, value).await?;
        Ok(())
    }

    /// Every registered org.
    pub async fn orgs(&self) -> Result<Vec<String>, RedisStoreError> {
        let mut c = self.conn.on(ORGS_KEY);
        let mut v: Vec<String> = c.smembers(ORGS_KEY).await?;
        v.sort();
        Ok(v)
    }
}

fn text(v: &Value) -> Result<String, RedisStoreError> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone())
            .map_err(|_| RedisStoreError::Protocol("entry field is not UTF-8".into())),
        Value::SimpleString(s) => Ok(s.clone()),
        other => Err(RedisStoreError::Protocol(format!(
            "expected a string, got {other:?}"
        ))),
    }
}

fn decode_entries(v: Value) -> Result<Vec<Entry>, RedisStoreError> {
    let Value::Array(items) = v else {
        return Err(RedisStoreError::Protocol(format!(
            "expected entries, got {v:?}"
        )));
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Array(mut pair) = item else {
                return Err(RedisStoreError::Protocol(
                    "entry is not [id, fields]".into(),
                ));
            };
            if pair.len() != 2 {
                return Err(RedisStoreError::Protocol(
                    "entry is not [id, fields]".into(),
                ));
            }
            let fields = pair.pop().unwrap_or(Value::Nil);
            let id: LogId = text(&pair[0])?.parse()?;
            let Value::Array(fields) = fields else {
                return Err(RedisStoreError::Protocol("entry fields".into()));
            };
            let (mut replica, mut command) = (None, None);
            for kv in fields.chunks(2) {
                if let [k, v] = kv {
                    match text(k)?.as_str() {
                        "r" => replica = Some(text(v)?),
                        "c" => {
                            let json = text(v)?;
                            command =
                                Some(serde_json::from_str::<Command>(&json).map_err(|source| {
                                    RedisStoreError::Json {
                                        what: format!("entry {id}"),
                                        source,
                                    }
                                })?);
                        }
                        _ => {}
                    }
                }
            }
            match (replica, command) {
                (Some(replica), Some(command)) => Ok(Entry {
                    id,
                    replica,
                    command,
                }),
                _ => Err(RedisStoreError::Protocol(format!(
                    "entry {id} lacks its command"
                ))),
            }
        })
        .collect()
}
