//! A replica: this process's engine, kept equal to every other replica's by applying the same
//! per-org command logs in the same order.
//!
//! To run a command, a replica appends it to the org's log in Redis (one atomic script call,
//! which also returns the entries of other replicas it has not applied yet), then applies every
//! entry up to its own, in order, at the time the log gave each, and answers with what its own
//! entry returned. The engine is deterministic, so two replicas sharing a Redis make the same
//! decision for every entry: they cannot both hand out the last slot of a tier.
//!
//! Nothing outside the log may move an org's state or its clock on a replica. Reads that want
//! the present go through the log too ([`Command::Status`]); observers use
//! [`tiergate_core::Engine::peek_org`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use tiergate_core::{Command, Engine, EngineError, OrgSnapshot, Outcome};

use crate::chain::ErrorChain;
use crate::redis_conn::RedisTopology;
use crate::redis_log::{Entry, LogId, RedisLog, RedisStoreError};

/// Results of this replica's own entries that another call applied first, kept until their
/// caller takes them. Past this many, results older than a minute are dropped (their callers
/// gave up).
const STASH_SOFT_CAP: usize = 4_096;

/// Orgs loaded at once when a replica starts.
const LOAD_PARALLEL: usize = 4;

/// [`Replica::execute_many`] calls (batches) whose appends are in Redis at once, per replica.
///
/// Appends running together that touch the same orgs each carry the others' entries back (an
/// org's entries between the caller's last applied one and its own), so that Redis converts
/// and the replica decodes every entry several times: measured with batches of 100 over 1,000
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

#[derive(Debug, Default)]
struct Cursor {
    applied: LogId,
    stash: HashMap<LogId, Result<Outcome, EngineError>>,
    /// Entries applied since the org's last snapshot (taken or restored here).
    since_snapshot: u64,
    /// Recipients in that snapshot: a big org is snapshotted less often, so that writing
    /// snapshots costs a bounded share of the entries they replace.
    snapshot_recipients: u64,
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
    cursors: DashMap<String, Arc<Mutex<Cursor>>>,
    health: AtomicU8,
    discovering: AtomicBool,
    snapshot_every: u64,
    observer: std::sync::OnceLock<Observer>,
    /// Turns of [`Replica::execute_many`] (see [`BATCHES_IN_REDIS`]).
    batch_turns: tokio::sync::Semaphore,
    /// Batches waiting for a turn now.
    batches_waiting: AtomicUsize,
}

/// Told of every entry another replica appended, as this one applies it.
pub type Observer = Box<dyn Fn(&Command) + Send + Sync>;

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.id)
            .field("orgs", &self.cursors.len())
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
    /// A replica of `engine` (which must be empty) over `log`: restores every registered org's
    /// snapshot and applies its log before it returns. An org is snapshotted (and its log
    /// trimmed) after `snapshot_every` entries, or twice its recipients if more.
    pub async fn start(
        engine: Arc<Engine>,
        log: RedisLog,
        snapshot_every: u64,
    ) -> Result<Self, RedisStoreError> {
        let replica = Self {
            engine,
            id: log.replica().to_owned(),
            log,
            cursors: DashMap::new(),
            health: AtomicU8::new(health_code(Health::Up)),
            discovering: AtomicBool::new(false),
            snapshot_every: snapshot_every.max(1),
            observer: std::sync::OnceLock::new(),
            batch_turns: tokio::sync::Semaphore::new(BATCHES_IN_REDIS),
            batches_waiting: AtomicUsize::new(0),
        };
        // Orgs are independent: load a few at once (the engine takes them in parallel), so a
        // start costs the slowest org's log more than the sum of all.
        let replica = Arc::new(replica);
        let mut loads = tokio::task::JoinSet::new();
        let mut orgs = replica.log.orgs().await?.into_iter();
        loop {
            while loads.len() < LOAD_PARALLEL {
                let Some(org) = orgs.next() else { break };
                let r = replica.clone();
                loads.spawn(async move { r.catch_up(&org, None).await });
            }
            match loads.join_next().await {
                None => break,
                Some(Ok(r)) => r?,
                Some(Err(e)) => return Err(RedisStoreError::Load(e)),
            }
        }
        Arc::into_inner(replica)
            .ok_or_else(|| RedisStoreError::Protocol("a load task outlived the start".into()))
    }

    /// Sets what is told of other replicas' entries as they are applied here (once; later calls
    /// are ignored): how waiting sends here hear that a change elsewhere may free something.
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

    fn cursor(&self, org: &str) -> Arc<Mutex<Cursor>> {
        if let Some(c) = self.cursors.get(org) {
            return c.clone();
        }
        self.cursors.entry(org.to_owned()).or_default().clone()
    }

    /// Applies `entries` past the cursor, in order; keeps the results of this replica's own.
    /// When the org is due a snapshot and the entry is this replica's own (so that one replica
    /// writes it, not all), takes it and stores it in the background.
    fn apply(&self, org: &str, cur: &mut Cursor, entries: &[Entry]) {
        for e in entries {
            if e.id <= cur.applied {
                continue;
            }
            let r = self.engine.execute_at(&e.command, e.id.ms);
            cur.applied = e.id;
            cur.since_snapshot += 1;
            if e.replica != self.id
                && let Some(observe) = self.observer.get()
            {
                observe(&e.command);
            }
            if e.replica == self.id {
                cur.stash.insert(e.id, r);
                let due = self.snapshot_every.max(2 * cur.snapshot_recipients);
                if cur.since_snapshot >= due {
                    self.snapshot(org, cur);
                }
            }
        }
        if cur.stash.len() > STASH_SOFT_CAP {
            let horizon = cur.applied.ms.saturating_sub(60_000);
            cur.stash.retain(|id, _| id.ms >= horizon);
        }
    }

    /// Takes the org's snapshot as of the cursor and stores it (and trims the log) in the
    /// background; a failure only means the log stays longer.
    fn snapshot(&self, org: &str, cur: &mut Cursor) {
        cur.since_snapshot = 0;
        let snap = match self.engine.snapshot_org(org) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(org, error = %e, "no snapshot taken");
                return;
            }
        };
        cur.snapshot_recipients = snap.recipients() as u64;
        let (log, org, id) = (self.log.clone(), org.to_owned(), cur.applied);
        // Encoding a big org takes a while: not under the org's cursor, not on the runtime.
        tokio::spawn(async move {
            let state =
                match tokio::task::spawn_blocking(move || serde_json::to_string(&snap)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return tracing::warn!(org, error = %e, "snapshot not encodable"),
                    Err(e) => return tracing::warn!(org, error = %e, "snapshot not encoded"),
                };
            match log.store_snapshot(&org, id, &state).await {
                Ok(stored) => {
                    if stored {
                        log.stats().snapshot_written(1);
                    }
                    tracing::debug!(org, %id, bytes = state.len(), stored, "snapshot")
                }
                Err(e) => tracing::warn!(org, %id, error = %ErrorChain(&e), "snapshot not stored"),
            }
        });
    }

    /// Puts the org in the state of a snapshot another replica stored (which replaced entries
    /// this one had not applied).
    fn restore(&self, cur: &mut Cursor, id: LogId, state: &str) -> Result<(), RedisStoreError> {
        let snap: OrgSnapshot =
            serde_json::from_str(state).map_err(|source| RedisStoreError::Json {
                what: format!("snapshot {id}"),
                source,
            })?;
        cur.snapshot_recipients = snap.recipients() as u64;
        self.engine
            .restore_org(snap)
            .map_err(|source| RedisStoreError::Restore { id, source })?;
        cur.applied = id;
        cur.since_snapshot = 0;
        Ok(())
    }

    /// Applies the org's log up to `until` (or its end).
    async fn catch_up(&self, org: &str, until: Option<LogId>) -> Result<(), RedisStoreError> {
        let cur = self.cursor(org);
        loop {
            let after = cur.lock().applied;
            if until.is_some_and(|u| after >= u) {
                return Ok(());
            }
            let page = self
                .log
                .read(org, after, until)
                .await
                .map_err(|e| self.failed(e))?;
            let mut c = cur.lock();
            let mut moved = false;
            if let Some((id, state)) = &page.snapshot
                && *id > c.applied
            {
                self.restore(&mut c, *id, state)?;
                moved = true;
            }
            if page.entries.is_empty() && !moved {
                return Ok(());
            }
            self.apply(org, &mut c, &page.entries);
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
        self.catch_up(org, None).await?;
        Ok(self.engine.has_org(org))
    }

    /// Brings an org up to the end of its log without writing to it: what a read that must see
    /// every committed call (a campaign plan) asks first. Returns whether the org is known.
    pub async fn sync(&self, org: &str) -> Result<bool, RedisStoreError> {
        if !self.discover(org).await? {
            return Ok(false);
        }
        self.catch_up(org, None).await?;
        Ok(true)
    }

    /// Loads every org registered since the last call (for lookups by WhatsApp id, which do not
    /// name the org). At most one runs at a time; others return at once.
    pub async fn discover_all(&self) -> Result<(), RedisStoreError> {
        self.check_usable()?;
        if self.discovering.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let r = async {
            for org in self.log.orgs().await.map_err(|e| self.failed(e))? {
                if !self.engine.has_org(&org) {
                    self.catch_up(&org, None).await?;
                }
            }
            Ok(())
        }
        .await;
        self.discovering.store(false, Ordering::Release);
        r
    }

    /// Runs commands in order, as [`Replica::execute`] would one after another, but ordered in
    /// their orgs' logs by one script call: the commands of one org stay in the given order with
    /// nothing between them, and the orgs' logs are each applied here up to their last command.
    /// The results come back in the given order. Commands that register an org (`PutOrg`)
    /// register it first.
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
            .append_many(commands, now, |org| self.cursor(org).lock().applied)
            .await
            .map_err(|e| self.failed(e))?;
        self.succeeded();
        // Per org (in the order of their first command): the entries known to follow the
        // cursor without a gap, and the org's last command. A command whose list does not end
        // with itself leaves a gap after it: the rest is read from the log.
        let ids: Vec<LogId> = appended.iter().map(|(id, _)| *id).collect();
        let mut orgs: Vec<(&str, Vec<Entry>, bool, LogId)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (c, (id, entries)) in commands.iter().zip(appended) {
            let org = c.org();
            let i = *index.entry(org).or_insert_with(|| {
                orgs.push((org, Vec::new(), true, id));
                orgs.len() - 1
            });
            let (_, run, whole, last) = &mut orgs[i];
            *last = id;
            if *whole {
                *whole = entries.last().is_some_and(|e| e.id == id);
                run.extend(entries);
            }
        }
        for (org, run, _, last) in &orgs {
            let cur = self.cursor(org);
            self.apply(org, &mut cur.lock(), run);
            self.catch_up(org, Some(*last)).await?;
        }
        commands
            .iter()
            .zip(ids)
            .map(|(c, id)| {
                self.cursor(c.org())
                    .lock()
                    .stash
                    .remove(&id)
                    .ok_or_else(|| RedisStoreError::Superseded {
                        org: c.org().to_owned(),
                        id,
                    })
            })
            .collect()
    }

    /// Runs a command: orders it in the org's log, applies the log up to it and returns its
    /// result. The outer error is Redis's; the inner one the engine's (the same on every
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
        let cur = self.cursor(org);
        let after = cur.lock().applied;
        let now = self.engine.clock().now_ms();
        let (id, entries) = self
            .log
            .append(command, now, after)
            .await
            .map_err(|e| self.failed(e))?;
        self.succeeded();
        self.apply(org, &mut cur.lock(), &entries);
        self.catch_up(org, Some(id)).await?;
        cur.lock()
            .stash
            .remove(&id)
            .ok_or_else(|| RedisStoreError::Superseded {
                org: org.to_owned(),
                id,
            })
    }
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
