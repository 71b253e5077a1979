//! The Redis side of replication: one ordered log of [`Command`]s per partition of the orgs.
//!
//! Keys of partition `T` (`partition.rs`; one partition on one Redis, 16 on a cluster; every key
//! of a partition carries the hash tag `{T}`, so a cluster keeps it on one slot and a script may
//! touch all of it):
//!
//! * `tg:{T}:log`: a stream. An entry (`r`: the replica, `c`: its commands, in
//!   `command_codec.rs`'s form; builds before it wrote a JSON array, still read) holds
//!   the commands one script call appended for the partition, in order. Its id is `<ms>-<n>`:
//!   `ms` is the time its commands run at, never less than the entry before it, so log order is
//!   time order (a stream refuses a smaller id, and the script then uses the stream's latest
//!   time).
//! * `tg:{T}:snap` (org → the org's snapshot) and `tg:{T}:pos` (org → the entry that snapshot
//!   is as of): what a checkpoint wrote.
//! * `tg:{T}:ckpt`: the entry the log was trimmed to; the entries up to it are gone, and every
//!   org that had one has a snapshot as of it or later.
//! * `tg:orgs`: the set of org ids (is an org registered at all); `tg:schema`: the layout
//!   version (a newer one is refused, version 1, one log per org, is migrated: `migrate.rs`);
//!   `tg:partitions`: the partition count, written once with the schema.
//!
//! [`APPEND`] runs atomically inside Redis: it orders one entry per partition after every
//! earlier one and returns the entries the caller has not applied yet. [`READ`] pages a log,
//! [`POINTS`], [`SNAP_READ`], [`SNAP_STORE`] and [`TRIM`] are a checkpoint's reads and writes.
//! Each is loaded once and called by SHA (`redis::Script` reloads it after a Redis restart
//! emptied the cache).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use redis::{AsyncCommands, Script, Value};
use tiergate_core::{Command, EngineError};

use crate::append::{Answer, Appender, Pack, group_by};
use crate::command_codec;
use crate::commit_stats::CommitStats;
use crate::gather::{BATCH, LastRound, gather};
use crate::own_entries::{self, OwnEntry};
use crate::partition::{CLUSTER_PARTITIONS, PartitionKeys, SINGLE_PARTITIONS, partition_of};
use crate::redis_conn::{RedisConn, RedisTopology};
use tokio::sync::{mpsc, oneshot};

/// The layout of the keys above. Version 1 kept one log per org; a start migrates it.
pub const REDIS_SCHEMA_VERSION: u64 = 2;

/// Entries an append returns at most; the rest are paged with [`READ`]. An entry holds a whole
/// call's commands for its partition, so pages are short.
pub(crate) const PAGE: usize = 64;

/// Entries one [`READ`] page carries.
const READ_PAGE: usize = 64;

/// What every script starts with: `id_less` compares two stream ids (`ms-n`; Lua numbers hold
/// every millisecond time exactly); `xadd` appends an entry, creating the log only for a caller
/// that has applied nothing of it (`NOMKSTREAM` otherwise: a log that vanished is not silently
/// started again; `nil` says so); `append_at_latest` appends at the log's latest time, for a
/// log already later than the time proposed (another replica's clock is ahead).
pub(crate) const HELPERS: &str = r#"
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

/// Appends one entry per partition and returns, for each, what the caller has not applied.
///
/// KEYS: the first partition's log (where the call is routed). ARGV: the replica id, the page
/// size, then per partition its log key, its checkpoint key, the proposed ms, the commands (an
/// entry in `command_codec.rs`'s form), the caller's last applied id there, and the ids of the
/// caller's own entries whose commands it holds (comma-separated; `own_entries.rs`). Returns per partition
/// `{id, entries}`, where entries are the others in `(after, id)`, at most a page, those named
/// as the caller's own with an empty `c` and not read from the log (a named id after `after` is
/// in the log: the caller appended it, and a trim never passes the checkpoint, which is at or
/// before `after`; a Redis that loses acknowledged entries breaks the replicas' agreement
/// whatever the script does); `{id, false}` when the log was trimmed past `after` (the
/// caller restores the snapshots: `replica.rs`; also when the checkpoint key could not be
/// read, which on a cluster means it is elsewhere for a migration: the caller then reads the
/// log); `{'lost', false}` when the caller has applied
/// entries of a log that no longer exists (nothing is written, and the replica stops trusting
/// Redis); or `{'err', message}` when nothing was written for it (on a cluster: its slot is
/// not served here, and it is sent again alone). A log is only ever created by a caller that
/// has applied nothing of it (`after` = `0-0`); a trimmed log stays, empty.
///
/// On one Redis the whole call is one atomic script run: one round trip, one append to Redis's
/// file. On a cluster it carries the partitions of one master (`append.rs`): Redis lets a
/// script without flags touch keys of several slots that this node serves.
pub const APPEND: &str = r#"
local replica, page = ARGV[1], ARGV[2]
local out = {}
local function msg(e)
  if type(e) == 'table' then return tostring(e.err) end
  return tostring(e)
end
-- The entries in (after, id), at most a page, in order. The caller's own entries named in
-- `known` are not read: each is given with an empty `c` (the caller holds its commands, most of
-- an entry's bytes, and Redis hashes every byte of a string it hands to Lua); the rest of the
-- range is read from the log between them.
local function between(key, after, id, known, page)
  page = tonumber(page)
  local own = {}
  for k in string.gmatch(known, '[^,]+') do
    if id_less(after, k) and id_less(k, id) then own[#own + 1] = k end
  end
  table.sort(own, id_less)
  local entries, from = {}, after
  for j = 1, #own + 1 do
    local left = page - #entries
    if left <= 0 then break end
    local got = redis.call('XRANGE', key, '(' .. from, '(' .. (own[j] or id), 'COUNT', left)
    for _, e in ipairs(got) do entries[#entries + 1] = e end
    -- A part cut short by the page ends the answer: the caller reads on from its last entry.
    if own[j] == nil or #entries >= page then break end
    entries[#entries + 1] = {own[j], {'r', replica, 'c', ''}}
    from = own[j]
  end
  return entries
end
for i = 1, (#ARGV - 2) / 6 do
  local b = 6 * i - 3
  local key, ckpt, at, cmds, after, known = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local ok, id = xadd(key, after, at, replica, cmds)
  if not ok and string.find(msg(id), 'equal or smaller', 1, true) then
    -- The log is already later (another replica's clock is ahead): run at its latest time.
    ok, id = pcall(append_at_latest, key, replica, cmds)
  end
  if not ok then
    out[i] = {'err', msg(id)}
  elseif not id then
    out[i] = {'lost', false}
  else
    local okc, c = pcall(redis.call, 'GET', ckpt)
    if not okc or (c and id_less(after, c)) then
      out[i] = {id, false}
    else
      local okr, entries = pcall(between, key, after, id, known, page)
      if okr then
        out[i] = {id, entries}
      else
        out[i] = {id, false}
      end
    end
  end
end
return out
"#;

/// Reads a partition's log after the caller's last applied entry.
///
/// KEYS: log, checkpoint. ARGV: after, until (an id or `+`), page size. Returns
/// `{checkpoint, {}}` when the log was trimmed past `after` (the caller restores the snapshots
/// first), else `{false, entries}`.
pub const READ: &str = r#"
local after = ARGV[1]
local c = redis.call('GET', KEYS[2])
if c and id_less(after, c) then return {c, {}} end
return {false, redis.call('XRANGE', KEYS[1], '(' .. after, ARGV[2], 'COUNT', ARGV[3])}
"#;

/// A partition's checkpoint and where each org's snapshot is, atomically.
///
/// KEYS: checkpoint, positions. Returns `{checkpoint or false, {org, id, org, id, …}}`.
pub const POINTS: &str = r#"
return {redis.call('GET', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"#;

/// One org's snapshot and the entry it is as of, atomically.
///
/// KEYS: positions, snapshots. ARGV: org. Returns `{id, state}` or `{false, false}`.
pub const SNAP_READ: &str = r#"
return {redis.call('HGET', KEYS[1], ARGV[1]), redis.call('HGET', KEYS[2], ARGV[1])}
"#;

/// Stores orgs' snapshots as of entry `id`, each unless a newer one is there.
///
/// KEYS: positions, snapshots. ARGV: id, then per org its id and its state. Returns how many
/// were stored. A checkpoint sends its orgs in a few calls rather than one each: with
/// `appendfsync always` each call is an `fsync`, and a thousand of them in a row held up the
/// appends queued behind them (p999 0.25–0.38 s at 256 calls in flight).
pub const SNAP_STORE: &str = r#"
local id, stored = ARGV[1], 0
for i = 2, #ARGV - 1, 2 do
  local org, state = ARGV[i], ARGV[i + 1]
  local cur = redis.call('HGET', KEYS[1], org)
  if not (cur and not id_less(cur, id)) then
    redis.call('HSET', KEYS[2], org, state)
    redis.call('HSET', KEYS[1], org, id)
    stored = stored + 1
  end
end
return stored
"#;

/// Trims a partition's log to entry `id` (inclusive) and records it as the checkpoint, unless
/// a later one is recorded. The caller has stored, first, a snapshot as of `id` or later of
/// every org with an entry up to it that no earlier snapshot covers.
///
/// KEYS: checkpoint, log. ARGV: id. Returns 1 when trimmed.
pub const TRIM: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and not id_less(cur, ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
local ms, n = string.match(ARGV[1], '^(%d+)-(%d+)$')
redis.call('XTRIM', KEYS[2], 'MINID', ms .. '-' .. (tonumber(n) + 1))
return 1
"#;

pub(crate) fn script(body: &str) -> Script {
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

/// One entry of a partition's log: the commands one call appended there, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its place (and the time its commands run at).
    pub id: LogId,
    /// The replica that appended it.
    pub replica: String,
    /// The commands, each for its own org (shared: a replica's own entry is the round it sent).
    pub commands: Arc<Vec<Command>>,
}

/// One page of a partition's log.
#[derive(Debug)]
pub struct Page {
    /// The checkpoint, when the log was trimmed past the reader's last applied entry: the
    /// reader restores the snapshots newer than its cursor first ([`RedisLog::points`]).
    pub checkpoint: Option<LogId>,
    /// Entries after the reader's last applied entry (none with a checkpoint).
    pub entries: Vec<Entry>,
}

/// What one append got back.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The entry that holds the command.
    pub id: LogId,
    /// The command's place in it.
    pub index: u32,
    /// Entries the caller may not have applied, in order (shared by the commands of one
    /// round, so they may start before the caller's own `after`), ending with `id` itself
    /// when nothing is missing between; otherwise the caller reads the rest
    /// ([`RedisLog::read`]).
    pub entries: Arc<Vec<Entry>>,
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
    /// An entry's commands that this build cannot read (`command_codec.rs`): damaged, or
    /// written by a newer build.
    #[error("entry {id}: its commands are not readable by this tiergate")]
    Entry {
        /// The entry.
        id: LogId,
        /// The codec's reason.
        source: crate::command_codec::CommandCodecError,
    },
    /// A snapshot another replica stored was refused by this replica's engine.
    #[error("snapshot {id}: refused by the engine")]
    Restore {
        /// The entry the snapshot was taken at.
        id: LogId,
        /// The engine's reason.
        source: EngineError,
    },
    /// [`RedisOptions::partitions`] is out of range (the config checks it first).
    #[error("{0} partitions: between 1 and {MAX_PARTITIONS}")]
    Partitions(u32),
    /// This replica's own entry was trimmed into a checkpoint before it applied it: its
    /// effect stands (in the snapshot), but its result is lost.
    #[error(
        "entry {id} of {org} was replaced by a snapshot before this replica applied it; its effect stands"
    )]
    Superseded {
        /// The org.
        org: String,
        /// The entry.
        id: LogId,
    },
    /// A migration from the version-1 layout is under way elsewhere, or was left unfinished
    /// by a sidecar that stopped (`tg:migrating`); it expires by itself.
    #[error(
        "another sidecar is migrating redis's keys to schema {REDIS_SCHEMA_VERSION}; try again when it is done"
    )]
    Migrating,
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
            RedisStoreError::Lost => RedisStoreError::Lost,
            RedisStoreError::Protocol(s) => RedisStoreError::Protocol(s.clone()),
            // With its causes: an entry this build cannot read says why.
            other => RedisStoreError::Protocol(crate::ErrorChain(other).to_string()),
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
    /// Partitions for a store this replica creates (`None`: 1 on one Redis, 16 on a cluster).
    /// A store that exists keeps the count it was created with, whatever this says: every
    /// replica must agree on which partition an org is in. On a cluster with a fixed number
    /// of masters, one partition per master costs Redis about a quarter less CPU per decision
    /// than 16 (BENCHMARKS.md); 16 lets the cluster grow to 16 masters without a migration.
    pub partitions: Option<u32>,
    /// How this replica writes its entries: binary (the default), or JSON while replicas of
    /// earlier builds share the Redis (they read only JSON).
    pub log_format: command_codec::LogFormat,
    /// The longest a round of appends waits to fill after a larger one (`gather.rs`): fewer
    /// script calls, so fewer `fsync`s, under load, at up to this much added latency; zero:
    /// rounds never wait. [`RedisOptions::FILL_WAIT`] unless set.
    pub fill_wait: Duration,
}

impl RedisOptions {
    /// The default [`RedisOptions::fill_wait`]: 3 ms took about a tenth off Redis's CPU per
    /// decision at 256 calls in flight (3–17 % in the runs measured), and costs a bursty
    /// moderate load up to 3.3 ms at the median (BENCHMARKS.md, "Redis: a round waits for the
    /// wave").
    pub const FILL_WAIT: Duration = Duration::from_millis(3);
}

/// The partitioned logs in Redis (one server or a cluster), over managed, multiplexed
/// connections that reconnect by themselves: one to a single Redis, one per master of a
/// cluster.
#[derive(Clone)]
pub struct RedisLog {
    conn: RedisConn,
    appender: Appender,
    read: Script,
    points: Script,
    snap_read: Script,
    snap_store: Script,
    trim: Script,
    batches: Arc<Batchers>,
    replica: Arc<str>,
    stats: Arc<CommitStats>,
    response_timeout: Duration,
    keys: Arc<Vec<PartitionKeys>>,
    /// The schema version found at connect, when older than this build's (a migration is due).
    older_schema: Option<u64>,
}

/// One command waiting for its batcher's next round.
struct Call {
    partition: u32,
    command: Command,
    /// The command's record in its entry (`command_codec.rs`).
    record: Vec<u8>,
    after: LogId,
    at: u64,
    reply: oneshot::Sender<Result<Appended, RedisStoreError>>,
}

/// The batchers: one on a single Redis; on a cluster one per master, so that a master that
/// hangs (a host gone without a reset) holds up only the appends bound for it, not a batch
/// shared with the live masters.
struct Batchers {
    appender: Appender,
    keys: Arc<Vec<PartitionKeys>>,
    replica: Arc<str>,
    stats: Arc<CommitStats>,
    /// The longest a round waits to fill (`gather.rs`).
    fill_wait: Duration,
    /// By master as the slot map knows it (`None`: one Redis, or a slot with no known master).
    /// Bounded by the cluster's masters.
    lanes: DashMap<Option<Arc<str>>, mpsc::Sender<Call>>,
}

impl Batchers {
    /// The batcher for `partition`'s appends, started on first use.
    fn lane(&self, partition: u32) -> mpsc::Sender<Call> {
        let conn = &self.appender.conn;
        let key = if conn.is_cluster() {
            conn.node_of(&self.keys[partition as usize].log)
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
                tokio::spawn(batcher(
                    self.appender.clone(),
                    self.keys.clone(),
                    self.replica.clone(),
                    self.stats.clone(),
                    self.fill_wait,
                    rx,
                ));
                tx
            })
            .clone()
    }
}

/// Sends the commands waiting at that moment together, one entry per partition (one script
/// call on one Redis, one per master on a cluster, where a slot may have moved since its lane
/// was chosen): while one round is in Redis, the next gathers (group commit, as in the embedded
/// store), and under load waits to fill after a larger one (`gather.rs`).
async fn batcher(
    appender: Appender,
    keys: Arc<Vec<PartitionKeys>>,
    replica: Arc<str>,
    stats: Arc<CommitStats>,
    fill_wait: Duration,
    mut rx: mpsc::Receiver<Call>,
) {
    let mut batch: Vec<Call> = Vec::with_capacity(BATCH);
    let mut last = LastRound::new(fill_wait);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // The commit latency `/metrics` shows includes the gathering.
        let start = tokio::time::Instant::now();
        gather(&mut rx, &mut batch, last.fill(start)).await;
        let n = batch.len();
        let all: Vec<usize> = (0..n).collect();
        let groups = group_by(&all, |&i| batch[i].partition);
        let mut calls: Vec<Option<Call>> = batch.drain(..).map(Some).collect();
        let mut parts = Vec::with_capacity(groups.len());
        let mut replies = Vec::with_capacity(groups.len());
        for idx in groups {
            let group: Vec<Call> = idx.into_iter().filter_map(|i| calls[i].take()).collect();
            let Some(first) = group.first() else {
                continue;
            };
            let mut part = PartRound {
                partition: first.partition,
                after: group.iter().map(|c| c.after).min().unwrap_or_default(),
                at_ms: group.iter().map(|c| c.at).max().unwrap_or(0),
                records: Vec::with_capacity(group.len()),
                commands: Vec::with_capacity(group.len()),
            };
            let waiting: Vec<_> = group
                .into_iter()
                .map(|c| {
                    part.records.push(c.record);
                    part.commands.push(c.command);
                    c.reply
                })
                .collect();
            parts.push(part);
            replies.push(waiting);
        }
        let mut all_ok = true;
        let sent = send_round(&appender, &keys, &replica, parts).await;
        for (answer, replies) in sent.into_iter().zip(replies) {
            match answer {
                Ok((id, entries)) => {
                    for (index, reply) in replies.into_iter().enumerate() {
                        // A send fails only when the caller stopped waiting (its call was
                        // cancelled): nobody is left to tell.
                        let _ = reply.send(Ok(Appended {
                            id,
                            index: index as u32,
                            entries: entries.clone(),
                        }));
                    }
                }
                Err(e) => {
                    all_ok = false;
                    for reply in replies {
                        let _ = reply.send(Err(e.duplicate()));
                    }
                }
            }
        }
        if all_ok {
            stats.observe(start.elapsed(), n);
        }
        last.answered(n, all_ok, tokio::time::Instant::now());
    }
}

impl fmt::Debug for RedisLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLog").finish_non_exhaustive()
    }
}

const ORGS_KEY: &str = "tg:orgs";
pub(crate) const SCHEMA_KEY: &str = "tg:schema";
const PARTITIONS_KEY: &str = "tg:partitions";

/// The most partitions a store may have.
pub const MAX_PARTITIONS: u32 = 1024;

impl RedisLog {
    /// Connects, checks (or writes) the schema version and the partition count, and loads the
    /// scripts (on every master of a cluster).
    pub async fn connect(opts: &RedisOptions) -> Result<Self, RedisStoreError> {
        let connect = |source| RedisStoreError::Connect {
            url: opts.url.clone(),
            source,
        };
        let urls: Vec<&str> = opts.url.split(',').map(str::trim).collect();
        let (append, read, points, snap_read, snap_store, trim) = (
            script(APPEND),
            script(READ),
            script(POINTS),
            script(SNAP_READ),
            script(SNAP_STORE),
            script(TRIM),
        );
        let mut all = vec![
            append.clone(),
            read.clone(),
            points.clone(),
            snap_read.clone(),
            snap_store.clone(),
            trim.clone(),
        ];
        all.extend(crate::migrate::scripts());
        let conn = RedisConn::connect(
            opts.topology,
            &urls,
            opts.response_timeout,
            opts.connect_timeout,
            all.clone(),
        )
        .await
        .map_err(connect)?;
        let default_partitions = opts.partitions.unwrap_or(match opts.topology {
            RedisTopology::Single => SINGLE_PARTITIONS,
            RedisTopology::Cluster => CLUSTER_PARTITIONS,
        });
        if !(1..=MAX_PARTITIONS).contains(&default_partitions) {
            return Err(RedisStoreError::Partitions(default_partitions));
        }
        let (older_schema, partitions) = check_schema(&conn, default_partitions).await?;
        let replica: Arc<str> = opts.replica.as_str().into();
        let (keys, stats) = (
            Arc::new(PartitionKeys::all(partitions)),
            Arc::new(CommitStats::default()),
        );
        let appender = Appender {
            conn: conn.clone(),
            append,
            replica: replica.clone(),
            own: Arc::default(),
            format: opts.log_format,
        };
        let log = Self {
            conn,
            appender: appender.clone(),
            read,
            points,
            snap_read,
            snap_store,
            trim,
            batches: Arc::new(Batchers {
                appender: appender.clone(),
                keys: keys.clone(),
                replica: replica.clone(),
                stats: stats.clone(),
                fill_wait: opts.fill_wait,
                lanes: DashMap::new(),
            }),
            replica,
            stats,
            response_timeout: opts.response_timeout,
            keys,
            older_schema,
        };
        // On a cluster each master loads a script on its first call (NOSCRIPT runs nothing).
        if let RedisConn::Single(_) = &log.conn {
            let mut c = log.conn.on(SCHEMA_KEY);
            for s in &all {
                s.prepare_invoke().load_async(&mut c).await?;
            }
        }
        Ok(log)
    }

    pub(crate) fn conn(&self) -> &RedisConn {
        &self.conn
    }

    /// The schema version Redis held at connect, when it was older than this build's: the
    /// keys must be migrated before anything is appended ([`crate::Replica::start`] does).
    pub fn older_schema(&self) -> Option<u64> {
        self.older_schema
    }

    /// Records that the keys are in this build's layout now (the migration's last step).
    pub(crate) async fn finish_migration(&self) -> Result<(), RedisStoreError> {
        let mut c = self.conn.on(SCHEMA_KEY);
        let () = c.set(SCHEMA_KEY, REDIS_SCHEMA_VERSION).await?;
        Ok(())
    }

    /// The number of partitions.
    pub fn partitions(&self) -> u32 {
        self.keys.len() as u32
    }

    /// The partition `org` belongs to.
    pub fn partition_of(&self, org: &str) -> u32 {
        partition_of(org, self.partitions())
    }

    /// Partition `p`'s keys.
    pub fn keys(&self, p: u32) -> &PartitionKeys {
        &self.keys[p as usize]
    }

    /// Latency of the script calls that appended rounds, and the commands they carried.
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

    fn encode(&self, command: &Command) -> Result<Vec<u8>, RedisStoreError> {
        let mut record = Vec::new();
        command_codec::encode(command, self.appender.format, &mut record).map_err(|source| {
            RedisStoreError::Json {
                what: "command".into(),
                source,
            }
        })?;
        Ok(record)
    }

    /// Appends `command` to its org's partition at `at_ms` (or later, if the log is already
    /// later), together with whatever else this replica appends meanwhile, and returns its
    /// place and the entries after `after` up to it (see [`Appended`]).
    pub async fn append(
        &self,
        command: &Command,
        at_ms: u64,
        after: LogId,
    ) -> Result<Appended, RedisStoreError> {
        let partition = self.partition_of(command.org());
        let record = self.encode(command)?;
        let (reply, rx) = oneshot::channel();
        let gone = || RedisStoreError::BatcherStopped;
        let call = Call {
            partition,
            command: command.clone(),
            record,
            after,
            at: at_ms,
            reply,
        };
        self.batches
            .lane(partition)
            .send(call)
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Appends `commands` in order, one entry per partition, in one script call (one round
    /// trip; atomic on one Redis, so nothing comes between two commands of one partition), each
    /// at `at_ms` or later. `after` gives the caller's last applied entry of each partition.
    /// Returns, per command, what [`RedisLog::append`] returns for one.
    pub async fn append_many(
        &self,
        commands: &[Command],
        at_ms: u64,
        after: impl Fn(u32) -> LogId,
    ) -> Result<Vec<Appended>, RedisStoreError> {
        let start = Instant::now();
        let mut records = commands
            .iter()
            .map(|c| self.encode(c))
            .collect::<Result<Vec<_>, _>>()?;
        let all: Vec<usize> = (0..commands.len()).collect();
        let groups = group_by(&all, |&i| self.partition_of(commands[i].org()));
        let parts: Vec<PartRound> = groups
            .iter()
            .map(|idx| {
                let partition = self.partition_of(commands[idx[0]].org());
                PartRound {
                    partition,
                    after: after(partition),
                    at_ms,
                    records: idx
                        .iter()
                        .map(|&i| std::mem::take(&mut records[i]))
                        .collect(),
                    commands: idx.iter().map(|&i| commands[i].clone()).collect(),
                }
            })
            .collect();
        let rounds = send_round(&self.appender, &self.keys, &self.replica, parts).await;
        let mut out: Vec<Option<Appended>> = vec![None; commands.len()];
        for (idx, round) in groups.into_iter().zip(rounds) {
            let (id, entries) = round?;
            for (index, i) in idx.into_iter().enumerate() {
                out[i] = Some(Appended {
                    id,
                    index: index as u32,
                    entries: entries.clone(),
                });
            }
        }
        self.stats.observe(start.elapsed(), commands.len());
        out.into_iter()
            .map(|a| a.ok_or_else(|| RedisStoreError::Protocol("a command went unanswered".into())))
            .collect()
    }

    /// The next page of partition `p`'s log after `after`, up to `until` (inclusive) or the
    /// end; or the checkpoint, when the log was trimmed past `after`.
    pub async fn read(
        &self,
        p: u32,
        after: LogId,
        until: Option<LogId>,
    ) -> Result<Page, RedisStoreError> {
        let keys = self.keys(p);
        let mut c = self.conn.on(&keys.log);
        let end = until.map_or_else(|| "+".to_owned(), |u| u.to_string());
        let (ckpt, entries): (Option<String>, Value) = self
            .read
            .key(&keys.log)
            .key(&keys.ckpt)
            .arg(after.to_string())
            .arg(end)
            .arg(READ_PAGE)
            .invoke_async(&mut c)
            .await?;
        Ok(Page {
            checkpoint: ckpt.map(|c| c.parse()).transpose()?,
            entries: decode_entries(entries, &[])?,
        })
    }

    /// Partition `p`'s checkpoint and the entry each org's snapshot is as of.
    pub async fn points(
        &self,
        p: u32,
    ) -> Result<(Option<LogId>, Vec<(String, LogId)>), RedisStoreError> {
        let keys = self.keys(p);
        let mut c = self.conn.on(&keys.log);
        let (ckpt, pos): (Option<String>, Vec<(String, String)>) = self
            .points
            .key(&keys.ckpt)
            .key(&keys.pos)
            .invoke_async(&mut c)
            .await?;
        let pos = pos
            .into_iter()
            .map(|(org, id)| Ok((org, id.parse()?)))
            .collect::<Result<_, RedisStoreError>>()?;
        Ok((ckpt.map(|c| c.parse()).transpose()?, pos))
    }

    /// `org`'s snapshot in partition `p` and the entry it is as of, if it has one.
    pub async fn snapshot_of(
        &self,
        p: u32,
        org: &str,
    ) -> Result<Option<(LogId, String)>, RedisStoreError> {
        let keys = self.keys(p);
        let mut c = self.conn.on(&keys.log);
        let (id, state): (Option<String>, Option<String>) = self
            .snap_read
            .key(&keys.pos)
            .key(&keys.snap)
            .arg(org)
            .invoke_async(&mut c)
            .await?;
        match (id, state) {
            (Some(id), Some(state)) => Ok(Some((id.parse()?, state))),
            _ => Ok(None),
        }
    }

    /// Stores orgs' snapshots (org, state) as of entry `id` in partition `p`, each unless a newer
    /// one is there, in one script call (one round trip, one write to Redis's file). Returns
    /// how many were stored.
    pub async fn store_snapshots(
        &self,
        p: u32,
        id: LogId,
        snapshots: &[(String, String)],
    ) -> Result<u64, RedisStoreError> {
        if snapshots.is_empty() {
            return Ok(0);
        }
        let keys = self.keys(p);
        let mut c = self.conn.on(&keys.log);
        let mut inv = self.snap_store.prepare_invoke();
        inv.key(&keys.pos).key(&keys.snap).arg(id.to_string());
        for (org, state) in snapshots {
            inv.arg(org).arg(state);
        }
        let stored: u64 = inv.invoke_async(&mut c).await?;
        Ok(stored)
    }

    /// Trims partition `p`'s log to entry `id` and records it as the checkpoint (see
    /// [`TRIM`] for what must be stored first). Returns whether it trimmed.
    pub async fn trim(&self, p: u32, id: LogId) -> Result<bool, RedisStoreError> {
        let keys = self.keys(p);
        let mut c = self.conn.on(&keys.log);
        let trimmed: i64 = self
            .trim
            .key(&keys.ckpt)
            .key(&keys.log)
            .arg(id.to_string())
            .invoke_async(&mut c)
            .await?;
        Ok(trimmed == 1)
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
        .arg(&*self.replica)
        .arg(ttl_ms)
        .invoke_async(&mut c)
        .await?;
        Ok(held == 1)
    }

    /// Gives up a lease this replica holds (a job done before its time ran out).
    pub(crate) async fn release(&self, key: &str) -> Result<(), RedisStoreError> {
        let mut c = self.conn.on(key);
        let _: i64 = Script::new(
            r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
              return 0",
        )
        .key(key)
        .arg(&*self.replica)
        .invoke_async(&mut c)
        .await?;
        Ok(())
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

/// One partition's share of a round: its commands, as sent and as records, the caller's last
/// applied entry there and the time proposed.
struct PartRound {
    partition: u32,
    after: LogId,
    at_ms: u64,
    /// The commands' records (`command_codec.rs`), in order.
    records: Vec<Vec<u8>>,
    commands: Vec<Command>,
}

/// Sends one round, an entry per partition, and returns per partition its entry's id and the
/// entries to apply up to it; each entry written is remembered as this replica's own
/// (`own_entries.rs`). The batchers' rounds and [`RedisLog::append_many`] both come through
/// here.
async fn send_round(
    appender: &Appender,
    keys: &[PartitionKeys],
    replica: &str,
    parts: Vec<PartRound>,
) -> Vec<Result<(LogId, Arc<Vec<Entry>>), RedisStoreError>> {
    let known: Vec<Vec<OwnEntry>> = parts
        .iter()
        .map(|r| appender.own.recent(r.partition))
        .collect();
    let packs: Vec<Pack> = parts
        .iter()
        .zip(&known)
        .map(|(r, known)| {
            pack(
                keys,
                r.partition,
                r.at_ms,
                r.after,
                &r.records,
                appender.format,
                known,
            )
        })
        .collect();
    let answers = appender.append(packs.into()).await;
    parts
        .into_iter()
        .zip(answers)
        .zip(known)
        .map(|((r, answer), known)| {
            let own = Arc::new(r.commands);
            let (id, entries) = round(replica, answer, own.clone(), &known)?;
            appender.own.record(r.partition, id, own);
            Ok((id, entries))
        })
        .collect()
}

/// One partition's entry to append: its commands' records as one entry.
fn pack(
    keys: &[PartitionKeys],
    partition: u32,
    at_ms: u64,
    after: LogId,
    records: &[Vec<u8>],
    format: command_codec::LogFormat,
    known: &[OwnEntry],
) -> Pack {
    let cmds = command_codec::entry(records, format);
    let keys = &keys[partition as usize];
    Pack {
        log: keys.log.clone(),
        ckpt: keys.ckpt.clone(),
        at_ms,
        cmds,
        after: after.to_string(),
        known: own_entries::names(known, after),
    }
}

/// A pack's entry id and the entries to apply up to it, from the script's answer: ending with
/// its own entry (`own`, as sent) when nothing is missing before it. Entries the pack named as
/// its own come back without their commands and are completed from `known`.
fn round(
    replica: &str,
    answer: Answer,
    own: Arc<Vec<Command>>,
    known: &[OwnEntry],
) -> Result<(LogId, Arc<Vec<Entry>>), RedisStoreError> {
    let (id, entries) = answer?;
    if id == "lost" {
        return Err(RedisStoreError::Lost);
    }
    let id: LogId = id.parse()?;
    if matches!(entries, Value::Nil | Value::Boolean(false)) {
        // The log was trimmed past the caller's cursor: it must restore first.
        return Ok((id, Arc::new(Vec::new())));
    }
    let mut entries = decode_entries(entries, known)?;
    if entries.len() < PAGE {
        entries.push(Entry {
            id,
            replica: replica.to_owned(),
            commands: own,
        });
    }
    Ok((id, Arc::new(entries)))
}

/// Reads (or writes, on an empty Redis) the schema version and the partition count. Returns
/// the version found when it is older than this build's (a migration is due), and the
/// partition count every replica uses.
async fn check_schema(
    conn: &RedisConn,
    default_partitions: u32,
) -> Result<(Option<u64>, u32), RedisStoreError> {
    let mut c = conn.on(SCHEMA_KEY);
    let _: bool = c.set_nx(SCHEMA_KEY, REDIS_SCHEMA_VERSION).await?;
    let found: String = c.get(SCHEMA_KEY).await?;
    let found: u64 = found
        .parse()
        .map_err(|_| RedisStoreError::Protocol(format!("{SCHEMA_KEY} = {found:?}")))?;
    if found > REDIS_SCHEMA_VERSION {
        return Err(RedisStoreError::NewerSchema { found });
    }
    let mut c = conn.on(PARTITIONS_KEY);
    let _: bool = c.set_nx(PARTITIONS_KEY, default_partitions).await?;
    let partitions: String = c.get(PARTITIONS_KEY).await?;
    let partitions: u32 = partitions
        .parse()
        .ok()
        .filter(|&p| (1..=MAX_PARTITIONS).contains(&p))
        .ok_or_else(|| RedisStoreError::Protocol(format!("{PARTITIONS_KEY} = {partitions:?}")))?;
    if partitions != default_partitions {
        tracing::info!(
            partitions,
            "redis holds another partition count than this replica would create; using redis's"
        );
    }
    Ok(((found < REDIS_SCHEMA_VERSION).then_some(found), partitions))
}

pub(crate) fn text(v: &Value) -> Result<String, RedisStoreError> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone())
            .map_err(|_| RedisStoreError::Protocol("entry field is not UTF-8".into())),
        Value::SimpleString(s) => Ok(s.clone()),
        other => Err(RedisStoreError::Protocol(format!(
            "expected a string, got {other:?}"
        ))),
    }
}

/// A bulk string's bytes, not copied (an entry's commands are most of an answer's bytes).
fn bulk(v: &Value) -> Result<&[u8], RedisStoreError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.as_bytes()),
        other => Err(RedisStoreError::Protocol(format!(
            "expected a string, got {other:?}"
        ))),
    }
}

/// Entries as `XRANGE` gives them; one with an empty `c` is one of `known` (the caller's own,
/// named in its append) and takes its commands from there.
fn decode_entries(v: Value, known: &[OwnEntry]) -> Result<Vec<Entry>, RedisStoreError> {
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
            let (mut replica, mut commands) = (None, None);
            for kv in fields.chunks(2) {
                if let [k, v] = kv {
                    match text(k)?.as_str() {
                        "r" => replica = Some(text(v)?),
                        "c" => {
                            let field = bulk(v)?;
                            commands = Some(if field.is_empty() {
                                own_entries::find(known, id).ok_or_else(|| {
                                    RedisStoreError::Protocol(format!(
                                        "entry {id} came back without its commands, which this replica does not hold"
                                    ))
                                })?
                            } else {
                                Arc::new(command_codec::decode(field).map_err(|source| {
                                    RedisStoreError::Entry { id, source }
                                })?)
                            });
                        }
                        _ => {}
                    }
                }
            }
            match (replica, commands) {
                (Some(replica), Some(commands)) => Ok(Entry {
                    id,
                    replica,
                    commands,
                }),
                _ => Err(RedisStoreError::Protocol(format!(
                    "entry {id} lacks its command"
                ))),
            }
        })
        .collect()
}
