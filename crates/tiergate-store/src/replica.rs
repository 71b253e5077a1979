//! A replica: this process's engine, kept equal to every other replica's by applying the same
//! partitioned command logs in the same order.
//!
//! To run a command, a replica appends it to its org's partition in Redis (one atomic script
//! call, shared with whatever else the replica appends meanwhile, which also returns the entries
//! of other replicas it has not applied yet), then applies every entry up to its own, in order,
//! each command to its org at the time the log gave the entry, and answers with what its own
//! command returned. The engine is deterministic, so two replicas sharing a Redis make the same
//! decision for every command: they cannot both hand out the last slot of a tier.
//!
//! Every replica applies every entry of a partition, whoever appended it. The log does not grow
//! for ever: now and then a replica takes a checkpoint (it snapshots the orgs that had entries
//! since its last one, stores the snapshots, then trims the log); a replica that falls behind a
//! checkpoint, or starts, restores the snapshots newer than what it applied and goes on from
//! the log.
//!
//! Nothing outside the log may move an org's state or its clock on a replica. Reads that want
//! the present go through the log too ([`Command::Status`]); observers use
//! [`tiergate_core::Engine::peek_org`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use tiergate_core::{Command, Engine, EngineError, OrgSnapshot, Outcome};
use tokio::sync::Mutex;

use crate::append::group_by;
use crate::chain::ErrorChain;
use crate::redis_conn::RedisTopology;
use crate::redis_log::{Entry, LogId, RedisLog, RedisStoreError};

/// Results of this replica's own entries that another call applied first, kept until their
/// caller takes them. Past this many, results older than a minute are dropped (their callers
/// gave up).
const STASH_SOFT_CAP: usize = 4_096;

/// How long a replica keeps the right to checkpoint a partition without using it: past this,
/// another replica may take over (one that stopped, say).
const CHECKPOINT_LEASE_MS: u64 = 60_000;

/// About how many bytes of snapshots a checkpoint stores per script call: few calls (each is
/// an `fsync` with `appendfsync always`), none so big that it holds Redis, and the appends
/// behind it, for long.
const SNAPSHOT_CALL_BYTES: usize = 1 << 20;

/// `items` in consecutive runs of about `bytes` of state each (at least one item a run).
fn chunks_of_size(items: &[(String, String)], bytes: usize) -> Vec<&[(String, String)]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, (_, state)) in items.iter().enumerate() {
        if i > start && size + state.len() > bytes {
            out.push(&items[start..i]);
            (start, size) = (i, 0);
        }
        size += state.len();
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// [`Replica::execute_many`] calls (batches) whose appends are in Redis at once, per replica.
///
/// Appends running together each carry the others' entries back (the entries between the
/// caller's last applied one and its own), so that Redis converts and the replica decodes
/// every entry several times: measured, with one log per org, with batches of 100 over 1,000
/// orgs (`appendfsync always`, `tiergate loadgen --batch 100 --concurrency C`), 14.6 K
/// decisions/s at C = 1, 35.4 K at 2, 31.1 K at 4, 29.4 K at 8 and 13.8–16.5 K at 64, where
/// Redis spent 37–49 µs of script time per decision against 16–20 µs at 1–8 (BENCHMARKS,
/// "Batches through the sidecar"). Two keep Redis busy while the replica applies the other's
/// answer; the rest wait their turn here, in arrival order.
/// Single calls do not take a slot: they already reach Redis one script call at a time per
/// batcher.
///
/// A batch waits for its turn at most one reply's timeout, and not at all while Redis is down:
/// past that Redis is stalled, and a queue of batches each waiting out its own timeout would
/// hold the last one's answer (an error, or with `on_store_error = "allow"` an uncounted
/// ALLOW) for the queue's length in timeouts. It then goes without a turn, as every batch
/// did before turns.
const BATCHES_IN_REDIS: usize = 2;

/// One partition as this replica has applied it. Behind an async lock: applying a round of
/// entries holds it for the round's commands (hundreds of microseconds under load), and the
/// calls waiting for it should give their worker thread to other work meanwhile rather than
/// park it. (With a blocking lock, one CLI run measured 64 µs of sidecar CPU per call against
/// 52 µs with per-org logs at 256 in flight; with this lock, runs were within this machine's
/// spread of per-org logs. The difference was not measured apart from that noise.)
///
/// How far the partition is applied, and what a call takes once its entry is, are not here but
/// in [`Applied`], so that only the call that applies a round waits for this lock. Only a
/// holder of this lock moves [`Applied::cursor`], so under it the cursor stays put.
#[derive(Debug, Default)]
struct Part {
    /// Per org restored from a snapshot here, the entry that snapshot is as of: an entry at or
    /// before it is already in the org's state. Bounded by the orgs with snapshots.
    restored: HashMap<String, LogId>,
    /// Orgs with entries applied since the last checkpoint this replica started (or since it
    /// started): a checkpoint snapshots them. It may hold orgs another replica's checkpoint
    /// covered already, which only costs a snapshot more.
    dirty: HashSet<String>,
    /// Commands applied since that checkpoint.
    since_checkpoint: u64,
    /// The results of the entry being applied, on their way to [`Applied::stash`] (kept for
    /// its buffer).
    results: Vec<((LogId, u32), Result<Outcome, EngineError>)>,
    /// Recipients in the orgs of the last checkpoint taken here: a checkpoint of big orgs
    /// costs more, so it comes less often.
    checkpoint_recipients: u64,
    /// A checkpoint of this partition is running here.
    checkpointing: bool,
}

/// What calls read of a partition without its [`Part`] lock: how far it is applied, and the
/// results of this replica's own commands waiting for their callers. Behind a short blocking
/// lock, held for a lookup, for one entry's results, or (past [`STASH_SOFT_CAP`], once per
/// apply) to drop results nobody took; never across an `await`.
///
/// Why apart from [`Part`]: a round's answer wakes all of its calls at once, and the first to
/// run applies the whole round. With the results behind the async lock every other call of the
/// round queued for it too, and that lock, fair, handed itself on one woken task at a time:
/// each call was suspended and polled once more only to take its result (measured: the
/// semaphore under the lock among the Redis path's larger costs in `perf`, BENCHMARKS.md).
#[derive(Debug, Default)]
struct Applied {
    /// The last entry applied; an append reads it as its `after`. Moved only under the
    /// partition's [`Part`] lock.
    cursor: LogId,
    /// Results of this replica's own commands, by entry and place, kept until their caller
    /// takes them. Filled before [`Applied::cursor`] passes their entry.
    stash: HashMap<(LogId, u32), Result<Outcome, EngineError>>,
}

/// What the store's connection looks like from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Redis answers.
    Up,
    /// Redis does not answer; calls fail until it does.
    Down,
    /// Redis answers but lost tiergate's keys (restarted without persistence, or flushed):
    /// the shared budget is gone, so this replica refuses until it is restarted.
    Lost,
}

/// This process's engine, replicated through Redis.
pub struct Replica {
    engine: Arc<Engine>,
    log: RedisLog,
    id: String,
    /// By partition.
    parts: Arc<[Mutex<Part>]>,
    /// By partition: how far it is applied and the results waiting to be taken, readable
    /// without waiting for the partition's lock (which a round being applied holds).
    applied: Arc<[parking_lot::Mutex<Applied>]>,
    health: AtomicU8,
    discovering: AtomicBool,
    snapshot_every: u64,
    observer: std::sync::OnceLock<Observer>,
    /// Turns of [`Replica::execute_many`] (see [`BATCHES_IN_REDIS`]).
    batch_turns: tokio::sync::Semaphore,
    /// Batches waiting for a turn now.
    batches_waiting: AtomicUsize,
}

/// Told of every command another replica appended, as this one applies it.
pub type Observer = Box<dyn Fn(&Command) + Send + Sync>;

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.id)
            .field("partitions", &self.parts.len())
            .finish_non_exhaustive()
    }
}

fn health_code(h: Health) -> u8 {
    match h {
        Health::Up => 0,
        Health::Down => 1,
        Health::Lost => 2,
    }
}

impl Replica {
    /// A replica of `engine` (which must be empty) over `log`: migrates Redis's keys from an
    /// older layout if they are in one (`migrate.rs`), then restores every partition's snapshots
    /// and applies its log before it returns. A partition is checkpointed (its dirty orgs
    /// snapshotted, its log trimmed) after `snapshot_every` commands, or twice the recipients
    /// its last checkpoint held if more.
    pub async fn start(
        engine: Arc<Engine>,
        log: RedisLog,
        snapshot_every: u64,
    ) -> Result<Self, RedisStoreError> {
        if let Some(found) = log.older_schema() {
            crate::migrate::migrate(&log, &engine, found).await?;
        }
        crate::migrate::rename_v1(&log).await?;
        let parts: Vec<Mutex<Part>> = (0..log.partitions())
            .map(|_| Mutex::new(Part::default()))
            .collect();
        let applied: Vec<parking_lot::Mutex<Applied>> = (0..log.partitions())
            .map(|_| parking_lot::Mutex::new(Applied::default()))
            .collect();
        let replica = Self {
            engine,
            id: log.replica().to_owned(),
            log,
            parts: parts.into(),
            applied: applied.into(),
            health: AtomicU8::new(health_code(Health::Up)),
            discovering: AtomicBool::new(false),
            snapshot_every: snapshot_every.max(1),
            observer: std::sync::OnceLock::new(),
            batch_turns: tokio::sync::Semaphore::new(BATCHES_IN_REDIS),
            batches_waiting: AtomicUsize::new(0),
        };
        for p in 0..replica.log.partitions() {
            replica.catch_up(p, None).await?;
        }
        Ok(replica)
    }

    /// Sets what is told of other replicas' commands as they are applied here (once; later
    /// calls are ignored): how waiting sends here hear that a change elsewhere may free
    /// something.
    pub fn observe(&self, observer: Observer) {
        let _ = self.observer.set(observer);
    }

    /// Batches waiting for their turn in Redis now (see [`BATCHES_IN_REDIS`]): what
    /// `tiergate_store_batches_waiting` shows, so that an operator sees batches queue here
    /// rather than guess it from their latency.
    pub fn batches_waiting(&self) -> usize {
        self.batches_waiting.load(Ordering::Relaxed)
    }

    /// This replica's id, as written in the entries it appends.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The Redis log (for its commit statistics).
    pub fn log(&self) -> &RedisLog {
        &self.log
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The store's health as last seen.
    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Relaxed) {
            0 => Health::Up,
            1 => Health::Down,
            _ => Health::Lost,
        }
    }

    fn set_health(&self, h: Health) {
        // Lost stays lost: only a restart (a full reload) can trust the log again.
        let _ = self
            .health
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                (cur != health_code(Health::Lost)).then_some(health_code(h))
            });
    }

    fn failed(&self, e: RedisStoreError) -> RedisStoreError {
        if e.is_unavailable() {
            self.set_health(Health::Down);
        }
        if matches!(e, RedisStoreError::Lost) && self.health() != Health::Lost {
            // An org's log vanished under entries this replica applied (a cluster master that
            // came back without its data, keys deleted): its budget is gone from Redis.
            tracing::error!("redis lost an org's log; refusing until restarted");
            self.set_health(Health::Lost);
        }
        e
    }

    fn check_usable(&self) -> Result<(), RedisStoreError> {
        match self.health() {
            Health::Lost => Err(RedisStoreError::Lost),
            _ => Ok(()),
        }
    }

    /// A call went through: on one Redis, that Redis is up. On a cluster it only says that
    /// one master is, so there only [`Replica::watch`], which asks every master, says Up.
    fn succeeded(&self) {
        if self.log.topology() == RedisTopology::Single {
            self.set_health(Health::Up);
        }
    }

    /// Checks Redis every `every` and updates [`Replica::health`]; runs until dropped. On a
    /// cluster every master must answer: while one is down, the orgs on its slots fail, so the
    /// replica is not ready (the others' calls still go through).
    pub async fn watch(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            let checked = match self.log.topology() {
                RedisTopology::Single => self.log.schema_present().await,
                RedisTopology::Cluster => match self.log.ping().await {
                    Ok(()) => self.log.schema_present().await,
                    Err(e) => Err(e),
                },
            };
            let h = match &checked {
                Ok(true) => Health::Up,
                Ok(false) => Health::Lost,
                Err(_) => Health::Down,
            };
            let before = self.health();
            self.set_health(h);
            if before != self.health() {
                match self.health() {
                    Health::Up => tracing::info!("redis reachable again"),
                    Health::Down => match &checked {
                        Err(e) => tracing::warn!(error = %ErrorChain(e), "redis unreachable"),
                        Ok(_) => tracing::warn!("redis unreachable"),
                    },
                    Health::Lost => {
                        tracing::error!("redis lost tiergate's keys; refusing until restarted")
                    }
                }
            }
        }
    }

    /// The last entry of partition `p` applied here (it stays put while the caller holds the
    /// partition's [`Part`] lock).
    fn cursor(&self, p: u32) -> LogId {
        self.applied[p as usize].lock().cursor
    }

    /// Applies `entries` past the partition's cursor, in order, each command to its org
    /// (unless the org's state is already as of a later entry, from a snapshot); keeps the
    /// results of this replica's own. When the partition is due a checkpoint and the entry is
    /// this replica's own (so that the busiest replica takes it, not all), starts one.
    fn apply(&self, p: u32, part: &mut Part, entries: &[Entry]) {
        let mut cursor = self.cursor(p);
        for e in entries {
            if e.id <= cursor {
                continue;
            }
            let own = e.replica == self.id;
            for (index, command) in e.commands.iter().enumerate() {
                let org = command.org();
                if part.restored.get(org).is_some_and(|&at| e.id <= at) {
                    // A snapshot as of this entry or a later one holds this command's effect;
                    // its result, if it was this replica's, is lost (`Superseded`).
                    continue;
                }
                let r = self.engine.execute_at(command, e.id.ms);
                if !part.dirty.contains(org) {
                    part.dirty.insert(org.to_owned());
                }
                part.since_checkpoint += 1;
                if own {
                    part.results.push(((e.id, index as u32), r));
                } else if let Some(observe) = self.observer.get() {
                    observe(command);
                }
            }
            cursor = e.id;
            {
                // The entry's results, then the cursor past it: a call that sees the cursor
                // finds its result.
                let mut applied = self.applied[p as usize].lock();
                applied.stash.extend(part.results.drain(..));
                applied.cursor = e.id;
            }
            let due = self.snapshot_every.max(2 * part.checkpoint_recipients);
            if own && part.since_checkpoint >= due && !part.checkpointing {
                self.checkpoint(p, part);
            }
        }
        // Once per apply, not per entry: a full stash is scanned whole.
        let mut applied = self.applied[p as usize].lock();
        if applied.stash.len() > STASH_SOFT_CAP {
            let horizon = cursor.ms.saturating_sub(60_000);
            applied.stash.retain(|(id, _), _| id.ms >= horizon);
        }
    }

    /// Starts a checkpoint of partition `p` in the background. Holding the checkpoint lease, it
    /// snapshots every org with entries since the last checkpoint this replica took, all at one
    /// cursor `c` (under one hold of the partition's lock, so that the snapshots agree with each
    /// other as of one entry: what orgs share, the numbers and WABA ids one of them claims, is
    /// the same in all of them), stores them, and only then trims the log to `c`. Every entry
    /// up to `c` is then in a stored snapshot: its org's, as of `c` (or a later one another
    /// checkpoint stored). A failure only means the log stays longer; every org of the
    /// checkpoint goes back into the next one.
    fn checkpoint(&self, p: u32, part: &mut Part) {
        part.checkpointing = true;
        part.since_checkpoint = 0;
        let (engine, parts, log) = (self.engine.clone(), self.parts.clone(), self.log.clone());
        let applied = self.applied.clone();
        tokio::spawn(async move {
            // One replica at a time checkpoints a partition (each would cover it, but all of
            // them doing it would multiply the snapshots written); a replica that does not hold
            // the lease keeps its orgs for when it does.
            let lease = format!("{}:lease", log.keys(p).ckpt);
            let held = log
                .lease(&lease, CHECKPOINT_LEASE_MS)
                .await
                .unwrap_or(false);
            let (upto, orgs, snaps) = {
                let mut part = parts[p as usize].lock().await;
                if !held {
                    part.checkpointing = false;
                    return;
                }
                let orgs: Vec<String> = part.dirty.drain().collect();
                let mut snaps = Vec::with_capacity(orgs.len());
                let mut failed = None;
                for org in &orgs {
                    match engine.snapshot_org(org) {
                        Ok(s) => snaps.push((org.clone(), s)),
                        // An org that never came to be (its registering command failed on
                        // every replica alike) has no state to keep.
                        Err(EngineError::UnknownOrg(_)) => {}
                        Err(e) => failed = Some(format!("snapshot of {org}: {e}")),
                    }
                }
                if let Some(e) = failed {
                    part.dirty.extend(orgs);
                    part.checkpointing = false;
                    tracing::warn!(partition = p, error = %e, "checkpoint not taken");
                    return;
                }
                // Under the partition's lock, the cursor stays put.
                let upto = applied[p as usize].lock().cursor;
                (upto, orgs, snaps)
            };
            let recipients: u64 = snaps.iter().map(|(_, s)| s.recipients() as u64).sum();
            let mut stored = 0u64;
            let done: Result<(), String> = async {
                // Encoding big orgs takes a while: not on the runtime.
                let encoded = tokio::task::spawn_blocking(move || {
                    snaps
                        .into_iter()
                        .map(|(org, s)| serde_json::to_string(&s).map(|j| (org, j)))
                        .collect::<Result<Vec<_>, _>>()
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
                for chunk in chunks_of_size(&encoded, SNAPSHOT_CALL_BYTES) {
                    stored += log
                        .store_snapshots(p, upto, chunk)
                        .await
                        .map_err(|e| ErrorChain(&e).to_string())?;
                }
                log.trim(p, upto)
                    .await
                    .map_err(|e| ErrorChain(&e).to_string())?;
                Ok(())
            }
            .await;
            log.stats().snapshot_written(stored);
            let mut part = parts[p as usize].lock().await;
            part.checkpointing = false;
            match done {
                Ok(()) => {
                    part.checkpoint_recipients = recipients;
                    tracing::debug!(partition = p, %upto, snapshots = stored, "checkpoint");
                }
                Err(e) => {
                    // The log was not trimmed: all of the checkpoint's orgs go into the next.
                    part.dirty.extend(orgs);
                    tracing::warn!(partition = p, %upto, error = %e, "checkpoint not finished");
                }
            }
        });
    }

    /// Restores partition `p` from its snapshots after the log was trimmed past what this
    /// replica applied (to `ckpt` at least, as the log said): every org whose snapshot is newer
    /// than its state here, then the cursor moves to the checkpoint (the entries up to it are in
    /// those snapshots).
    async fn restore(&self, p: u32, ckpt: LogId) -> Result<(), RedisStoreError> {
        let (now, points) = self.log.points(p).await.map_err(|e| self.failed(e))?;
        // A later checkpoint than the log said is fine: the snapshots read next are at least
        // as new as it.
        let ckpt = now.map_or(ckpt, |c| c.max(ckpt));
        for (org, pos) in points {
            let behind = {
                let part = self.parts[p as usize].lock().await;
                part.restored.get(&org).is_none_or(|&at| at < pos) && self.cursor(p) < pos
            };
            if !behind {
                continue;
            }
            let Some((id, state)) = self
                .log
                .snapshot_of(p, &org)
                .await
                .map_err(|e| self.failed(e))?
            else {
                continue;
            };
            let snap: OrgSnapshot =
                serde_json::from_str(&state).map_err(|source| RedisStoreError::Json {
                    what: format!("snapshot {id}"),
                    source,
                })?;
            let mut part = self.parts[p as usize].lock().await;
            if part.restored.get(&org).is_some_and(|&at| at >= id) || self.cursor(p) >= id {
                continue; // applied meanwhile
            }
            self.engine
                .restore_org(snap)
                .map_err(|source| RedisStoreError::Restore { id, source })?;
            part.restored.insert(org, id);
        }
        let _part = self.parts[p as usize].lock().await;
        let mut applied = self.applied[p as usize].lock();
        if applied.cursor < ckpt {
            applied.cursor = ckpt;
        }
        Ok(())
    }

    /// Applies partition `p`'s log up to `until` (or its end).
    async fn catch_up(&self, p: u32, until: Option<LogId>) -> Result<(), RedisStoreError> {
        loop {
            // After any apply under way.
            let after = {
                let _part = self.parts[p as usize].lock().await;
                self.cursor(p)
            };
            if until.is_some_and(|u| after >= u) {
                return Ok(());
            }
            let page = self
                .log
                .read(p, after, until)
                .await
                .map_err(|e| self.failed(e))?;
            if let Some(ckpt) = page.checkpoint {
                self.restore(p, ckpt).await?;
                continue;
            }
            if page.entries.is_empty() {
                return Ok(());
            }
            self.apply(p, &mut *self.parts[p as usize].lock().await, &page.entries);
        }
    }

    /// Makes sure an org another replica registered is known here. Returns whether it is.
    pub async fn discover(&self, org: &str) -> Result<bool, RedisStoreError> {
        self.check_usable()?;
        if self.engine.has_org(org) {
            return Ok(true);
        }
        if !self
            .log
            .is_registered(org)
            .await
            .map_err(|e| self.failed(e))?
        {
            return Ok(false);
        }
        self.catch_up(self.log.partition_of(org), None).await?;
        Ok(self.engine.has_org(org))
    }

    /// Brings an org up to the end of its log without writing to it: what a read that must see
    /// every committed call (a campaign plan) asks first. Returns whether the org is known.
    pub async fn sync(&self, org: &str) -> Result<bool, RedisStoreError> {
        if !self.discover(org).await? {
            return Ok(false);
        }
        self.catch_up(self.log.partition_of(org), None).await?;
        Ok(true)
    }

    /// Applies every partition up to its end (for lookups by WhatsApp id, which do not name
    /// the org). At most one runs at a time; others return at once.
    pub async fn discover_all(&self) -> Result<(), RedisStoreError> {
        self.check_usable()?;
        if self.discovering.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let mut r = Ok(());
        for p in 0..self.log.partitions() {
            r = self.catch_up(p, None).await;
            if r.is_err() {
                break;
            }
        }
        self.discovering.store(false, Ordering::Release);
        r
    }

    /// Takes the results of `places` (entry, place, org) in partition `p` once it is applied
    /// past them: at once when another call of the round applied it, else after applying the
    /// entries this append brought, or, when they do not reach its own, after reading the log
    /// up to them (a full page, or a checkpoint passed).
    async fn finish(
        &self,
        p: u32,
        entries: &[Entry],
        places: &[(LogId, u32, &str)],
    ) -> Result<Vec<Result<Outcome, EngineError>>, RedisStoreError> {
        let last = places
            .iter()
            .map(|&(id, _, _)| id)
            .max()
            .unwrap_or_default();
        let take_all = |applied: &mut Applied| {
            places
                .iter()
                .map(|&(id, index, org)| take(applied, id, index, org))
                .collect()
        };
        // The results, once the partition is applied up to `last`.
        let ready = || {
            let mut applied = self.applied[p as usize].lock();
            (applied.cursor >= last).then(|| take_all(&mut applied))
        };
        // Another call of the same round applied it already: the common case under load.
        if let Some(results) = ready() {
            return results;
        }
        self.apply(p, &mut *self.parts[p as usize].lock().await, entries);
        if let Some(results) = ready() {
            return results;
        }
        self.catch_up(p, Some(last)).await?;
        take_all(&mut self.applied[p as usize].lock())
    }

    /// Runs commands in order, as [`Replica::execute`] would one after another, but ordered in
    /// their partitions' logs by one script call: the commands of one partition stay in the
    /// given order with nothing between them. The results come back in the given order.
    /// Commands that register an org (`PutOrg`) register it first.
    pub async fn execute_many(
        &self,
        commands: &[Command],
    ) -> Result<Vec<Result<Outcome, EngineError>>, RedisStoreError> {
        self.check_usable()?;
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        // Held until this batch's entries are applied: a third batch starts only after one of
        // the two in Redis has applied its entries (the semaphore is never closed).
        let _turn = if self.health() == Health::Down {
            None
        } else {
            let _waiting = Counted::new(&self.batches_waiting);
            let turn = self.batch_turns.acquire();
            match tokio::time::timeout(self.log.response_timeout(), turn).await {
                Ok(Ok(permit)) => Some(permit),
                Ok(Err(_)) => return Err(RedisStoreError::BatcherStopped),
                Err(_) => None,
            }
        };
        for c in commands.iter().filter(|c| c.registers()) {
            self.log
                .register(c.org())
                .await
                .map_err(|e| self.failed(e))?;
        }
        let now = self.engine.clock().now_ms();
        let appended = self
            .log
            .append_many(commands, now, |p| self.cursor(p))
            .await
            .map_err(|e| self.failed(e))?;
        self.succeeded();
        // Per partition (in the order of their first command): the entries its first command's
        // append brought (every command of a partition shares them), and its commands' places.
        let all: Vec<usize> = (0..commands.len()).collect();
        let mut out: Vec<Option<Result<Outcome, EngineError>>> =
            commands.iter().map(|_| None).collect();
        for idx in group_by(&all, |&i| self.log.partition_of(commands[i].org())) {
            let p = self.log.partition_of(commands[idx[0]].org());
            let at: Vec<(LogId, u32, &str)> = idx
                .iter()
                .map(|&i| (appended[i].id, appended[i].index, commands[i].org()))
                .collect();
            let results = self.finish(p, &appended[idx[0]].entries, &at).await?;
            for (&i, r) in idx.iter().zip(results) {
                out[i] = Some(r);
            }
        }
        out.into_iter()
            .map(|r| r.ok_or_else(|| RedisStoreError::Protocol("a command went unanswered".into())))
            .collect()
    }

    /// Runs a command: orders it in its partition's log, applies the log up to it and returns
    /// its result. The outer error is Redis's; the inner one the engine's (the same on every
    /// replica). A `PutOrg` registers the org first, so other replicas can find it.
    pub async fn execute(
        &self,
        command: &Command,
    ) -> Result<Result<Outcome, EngineError>, RedisStoreError> {
        self.check_usable()?;
        let org = command.org();
        if command.registers() {
            self.log.register(org).await.map_err(|e| self.failed(e))?;
        }
        let p = self.log.partition_of(org);
        let after = self.cursor(p);
        let now = self.engine.clock().now_ms();
        let a = self
            .log
            .append(command, now, after)
            .await
            .map_err(|e| self.failed(e))?;
        self.succeeded();
        let mut r = self.finish(p, &a.entries, &[(a.id, a.index, org)]).await?;
        r.pop()
            .ok_or_else(|| RedisStoreError::Protocol("a command went unanswered".into()))
    }
}

/// The result of this replica's command at `(id, index)`, which the partition applied.
fn take(
    applied: &mut Applied,
    id: LogId,
    index: u32,
    org: &str,
) -> Result<Result<Outcome, EngineError>, RedisStoreError> {
    applied
        .stash
        .remove(&(id, index))
        .ok_or_else(|| RedisStoreError::Superseded {
            org: org.to_owned(),
            id,
        })
}

/// Counts itself in a gauge while it lives, whether its holder finishes or is dropped
/// (a caller that gave up while waiting stops counting).
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(gauge: &'a AtomicUsize) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Counted(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis_log::RedisOptions;
    use tiergate_core::Policy;
    use tiergate_testkit::engine_at_t0;
    use tiergate_testkit::redis::{RedisServer, or_skip};

    /// The calls of a round that another call applied take their results without queueing for
    /// the partition's lock: here it is held throughout (as a long apply of the next round
    /// would hold it), and the call still finishes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_whose_entry_is_applied_does_not_wait_for_the_partition_lock() {
        let Some(redis) = or_skip(RedisServer::start("applied-results")) else {
            return;
        };
        let log = RedisLog::connect(&RedisOptions {
            url: redis.url(),
            topology: RedisTopology::Single,
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            replica: "one".into(),
            partitions: None,
            log_format: Default::default(),
            fill_wait: RedisOptions::FILL_WAIT,
        })
        .await
        .unwrap();
        let (engine, _clock) = engine_at_t0(Policy::default());
        let replica = Replica::start(Arc::new(engine), log, 1_000_000)
            .await
            .unwrap();
        let org = "nobody";
        let p = replica.log.partition_of(org);
        let command = Command::Status { org: org.into() };
        let a = replica
            .log
            .append(&command, 1_000, LogId::default())
            .await
            .unwrap();
        let mut part = replica.parts[p as usize].lock().await;
        replica.apply(p, &mut part, &a.entries);
        assert_eq!(replica.applied[p as usize].lock().cursor, a.id);

        let finished = tokio::time::timeout(
            Duration::from_secs(2),
            replica.finish(p, &[], &[(a.id, a.index, org)]),
        )
        .await
        .expect("the call waited for the partition's lock")
        .unwrap();
        assert!(
            matches!(finished.as_slice(), [Err(EngineError::UnknownOrg(o))] if o == org),
            "{finished:?}"
        );
        assert!(
            replica.applied[p as usize].lock().stash.is_empty(),
            "taken once"
        );
        drop(part);
    }

    #[test]
    fn snapshots_go_in_runs_of_about_a_size() {
        let items: Vec<(String, String)> = [3, 3, 3, 9, 1, 1]
            .iter()
            .enumerate()
            .map(|(i, &n)| (i.to_string(), "x".repeat(n)))
            .collect();
        let runs: Vec<usize> = super::chunks_of_size(&items, 6)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(runs, vec![2, 1, 1, 2]);
        assert!(super::chunks_of_size(&[], 6).is_empty());
    }
}
