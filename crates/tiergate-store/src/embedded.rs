//! The embedded store: facts appended to a journal of segment files by one writer thread,
//! group commit; snapshots, the schema version and the directory's lock in redb.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::chain::ErrorChain;
use crate::commit_stats::CommitStats;
use crate::fact_codec::{self, FactCodecError};
use crate::fact_log::{self, FactLog, FactLogError, Group};
use crate::waiters::{WaitError, Waiters};
use parking_lot::{Condvar, Mutex};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tiergate_core::{Engine, EngineError, Fact, Journal, OrgSnapshot};

/// The on-disk format this build writes and reads. Version 4 writes sends into the journal in
/// binary form (`fact_codec.rs`) and every other fact as JSON; version 3 wrote only JSON, which
/// still reads, so a version-3 directory upgrades in place by being marked 4, and a version-3
/// binary refuses it from then on instead of failing on a binary send. Version 3 moved the
/// facts into the journal (`journal/*.facts`, see `fact_log.rs`); version 2 kept them in
/// redb's `facts` table, which a start still reads (and compacts away).
pub const SCHEMA_VERSION: u64 = 4;

/// Facts written by schema version 2 and earlier, read once at start and compacted away.
const FACTS: TableDefinition<u64, &[u8]> = TableDefinition::new("facts");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Each org's state as of its last compaction (`OrgSnapshot` JSON), which the facts then follow.
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
/// For each snapshot, the number of the last fact it reflects: the org's facts numbered up to
/// it are skipped on replay (a compaction while running leaves some of them in the journal).
const SNAPSHOT_AT: TableDefinition<&str, u64> = TableDefinition::new("snapshot_at");

/// How long the writer waits for more facts before it commits a batch, unless they arrive at
/// [`BUSY_FACTS_PER_SEC`] or faster ([`gather_after`]).
const GATHER: Duration = Duration::from_micros(250);

/// How long it waits while facts arrive at [`BUSY_FACTS_PER_SEC`] or faster: a commit costs
/// the machine about the same CPU whatever it carries (a `pwrite`, an `fdatasync`, the writer's
/// sleeps and wakes), so when facts arrive this fast fewer, larger commits cost less per call;
/// but every call waits about half the cycle, so a longer wait costs throughput. Session 13
/// chose 1 ms (at a fixed 30,000 calls/s, 1 ms instead of 250 µs took the sidecar's CPU per call
/// from 30.3 to 27.5 µs), when each commit still woke every call it made durable. Since answers
/// wait on their connection (one wake per connection per commit), 500 µs gave the same CPU per
/// call as 1 ms and more calls/s at 256 in flight (35 rounds each: 0.81× against 0.77× memory's
/// calls/s, 1.19× against 1.20× its CPU per call), and 250 µs cost CPU (1.32×): BENCHMARKS.md,
/// "The embedded store's gathering, again".
const GATHER_BUSY: Duration = Duration::from_micros(500);

/// Facts per second, over the writer's last cycle, from which it gathers for [`GATHER_BUSY`].
/// Below it, a call waits at most [`GATHER`] plus one commit.
const BUSY_FACTS_PER_SEC: u64 = 20_000;

/// How long the writer gathers before its next commit, given the facts its last cycle
/// committed and how long that cycle took (from the moment it had a fact to the end of its
/// commit).
fn gather_after(facts: u64, cycle: Duration) -> Duration {
    let micros = u64::try_from(cycle.as_micros()).unwrap_or(u64::MAX);
    if facts.saturating_mul(1_000_000) >= BUSY_FACTS_PER_SEC.saturating_mul(micros) {
        GATHER_BUSY
    } else {
        GATHER
    }
}

/// What redb reported, by the kind of call that failed: redb has one error type per kind of
/// call, and each is kept as it came (opening the file is [`StoreError::Open`]). Boxed: redb's
/// errors are large, and a store error travels through every call that may fail.
#[derive(Debug, thiserror::Error)]
pub enum RedbError {
    /// Beginning a read or write transaction failed.
    #[error(transparent)]
    Transaction(Box<redb::TransactionError>),
    /// A table could not be opened (or has another key or value type than this build's).
    #[error(transparent)]
    Table(Box<redb::TableError>),
    /// Reading or writing the file failed (I/O, corruption, out of space).
    #[error(transparent)]
    Storage(Box<redb::StorageError>),
    /// The transaction could not be made durable.
    #[error(transparent)]
    Commit(Box<redb::CommitError>),
}

impl From<redb::TransactionError> for RedbError {
    fn from(e: redb::TransactionError) -> Self {
        RedbError::Transaction(Box::new(e))
    }
}

impl From<redb::TableError> for RedbError {
    fn from(e: redb::TableError) -> Self {
        RedbError::Table(Box::new(e))
    }
}

impl From<redb::StorageError> for RedbError {
    fn from(e: redb::StorageError) -> Self {
        RedbError::Storage(Box::new(e))
    }
}

impl From<redb::CommitError> for RedbError {
    fn from(e: redb::CommitError) -> Self {
        RedbError::Commit(Box::new(e))
    }
}

/// Why the store could not be opened, replayed or written. Each variant keeps the error that
/// caused it as its `source()`; its own message says what the store was doing and where.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory cannot be created or used.
    #[error("cannot use data directory {path}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// redb refused the file: another process holds its lock, or it is unreadable or corrupt.
    #[error("store {path}: cannot open")]
    Open {
        /// The file.
        path: PathBuf,
        /// redb's reason (e.g. `DatabaseAlreadyOpen`, a corrupt header).
        source: redb::DatabaseError,
    },
    /// The database was written by a newer tiergate.
    #[error(
        "store {path} has schema version {found}; this tiergate reads up to {SCHEMA_VERSION}: refusing to touch it"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u64,
    },
    /// A redb call failed while the store was doing `during`.
    #[error("store {path}: {during}")]
    Redb {
        /// The file.
        path: PathBuf,
        /// What the store was doing, for the operator reading the message.
        during: &'static str,
        /// redb's error, of the kind of call that failed.
        source: RedbError,
    },
    /// A stored snapshot is not valid JSON for this build's `OrgSnapshot`.
    #[error("store {path}: snapshot of org {org} unreadable")]
    SnapshotDecode {
        /// The file.
        path: PathBuf,
        /// The org whose snapshot it is.
        org: String,
        /// The decoder's reason.
        source: serde_json::Error,
    },
    /// A stored snapshot was read but the engine refused to restore it.
    #[error("store {path}: snapshot of org {org} refused by the engine")]
    SnapshotRestore {
        /// The file.
        path: PathBuf,
        /// The org whose snapshot it is.
        org: String,
        /// The engine's reason.
        source: EngineError,
    },
    /// The facts' journal could not be read or written, or is corrupt.
    #[error(transparent)]
    Journal(#[from] FactLogError),
    /// A stored fact is neither a valid binary send nor valid JSON for this build's `Fact`.
    #[error("store {path}: fact {seq} unreadable")]
    FactDecode {
        /// The file.
        path: PathBuf,
        /// The fact's number.
        seq: u64,
        /// The decoder's reason.
        source: FactCodecError,
    },
    /// The engine could not give an org's snapshot for a compaction.
    #[error("snapshot of org {org} could not be taken")]
    SnapshotTake {
        /// The org.
        org: String,
        /// The engine's reason.
        source: EngineError,
    },
    /// An org's snapshot could not be encoded.
    #[error("snapshot of org {org} not encodable")]
    SnapshotEncode {
        /// The org.
        org: String,
        /// The encoder's reason.
        source: serde_json::Error,
    },
    /// A fact could not be encoded (facts are plain data: this is a bug, never ignored).
    #[error("fact {seq} not encodable")]
    FactEncode {
        /// The fact's number.
        seq: u64,
        /// The encoder's reason.
        source: serde_json::Error,
    },
    /// The writer thread could not be started, so nothing could ever be made durable.
    #[error("cannot start the store's writer thread")]
    Spawn(#[source] std::io::Error),
    /// A batch failed to commit (or a fact to encode): the writer stopped, and no change after
    /// it is acknowledged. The source is what failed, shared by every caller told of it.
    #[error("an earlier batch failed to commit: no later change is acknowledged")]
    CommitFailed(#[source] Arc<StoreError>),
    /// The writer thread is gone without a recorded failure (closed, or it panicked): no change
    /// is acknowledged.
    #[error("store {path}: the writer stopped: no later change is acknowledged")]
    WriterStopped {
        /// The file.
        path: PathBuf,
    },
}

/// Maps a redb error of any kind to [`StoreError::Redb`] for `path`, saying what the store was
/// doing.
fn redb_err<E: Into<RedbError>>(path: &Path, during: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Redb {
        path: path.to_owned(),
        during,
        source: e.into(),
    }
}

/// Facts encoded and waiting for the writer.
///
/// Each fact is encoded into the open group by the thread that records it, under this lock,
/// instead of being sent to the writer as a value: measured at 20,000 calls/s, handing owned
/// facts over a channel cost the sidecar more than the encoding (a channel node per fact, a
/// wake per fact, and the fact's strings allocated on one thread and freed on another, which
/// glibc's allocator pays for in locks and free-list work).
#[derive(Default)]
struct Pending {
    /// Whether facts are taken (the writer runs and was not closed).
    open: bool,
    /// The number the next fact gets.
    next: u64,
    /// The group the next fact goes into.
    group: Group,
    /// Groups closed by a compaction, each to be followed by a new segment starting at the
    /// number given.
    sealed: Vec<(Group, u64)>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.group.len() == 0 && self.sealed.is_empty()
    }
}

/// The pending facts and the writer's bell.
#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Rung when the first fact goes into an empty group, when a compaction seals a group, and
    /// on close.
    bell: Condvar,
}

/// An open embedded store. Hand it to the engine with [`Engine::set_journal`] after replay.
pub struct EmbeddedStore {
    path: PathBuf,
    /// The journal's directory (`journal/` beside the redb file).
    journal: PathBuf,
    db: Arc<Database>,
    shared: Arc<Shared>,
    waiters: Arc<Waiters>,
    failed: Arc<AtomicBool>,
    /// What made the writer stop, once it did: every later wait is told this.
    cause: Arc<OnceLock<Arc<StoreError>>>,
    issued: AtomicU64,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    stats: Arc<CommitStats>,
    /// Facts committed when the last compaction was stored.
    compacted_at: AtomicU64,
    /// An older store: marked with [`SCHEMA_VERSION`] once its replay has read everything,
    /// before anything is written.
    mark_after_replay: bool,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish()
    }
}

/// Snapshots taken for a compaction, not yet stored.
#[derive(Debug)]
pub struct Compaction {
    /// Facts numbered up to this are dropped.
    upto: u64,
    /// (org, the last fact its snapshot reflects, the snapshot).
    snaps: Vec<(String, u64, Vec<u8>)>,
}

impl Compaction {
    /// The last fact any of the snapshots reflects. It must be durable before the snapshots are
    /// stored: a snapshot must not keep a send whose fact, and whose caller's answer, a crash
    /// could still lose.
    pub fn reflects(&self) -> u64 {
        self.snaps.iter().map(|s| s.1).max().unwrap_or(self.upto)
    }

    /// Orgs in it.
    pub fn orgs(&self) -> usize {
        self.snaps.len()
    }
}

fn encode_snapshot(snap: &OrgSnapshot) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(snap).map_err(|source| StoreError::SnapshotEncode {
        org: snap.org_id().to_owned(),
        source,
    })
}

/// What a replay did.
#[derive(Debug, Clone, Copy)]
pub struct Recovery {
    /// Org snapshots restored.
    pub snapshots: u64,
    /// Facts replayed after them.
    pub facts: u64,
    /// How long restoring and replaying took.
    pub took: Duration,
    /// How long compacting took (snapshots written, facts dropped), when there were facts.
    pub compact: Duration,
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/tiergate.redb` and the journal's directory `dir/journal`.
    /// Refuses a newer schema, a corrupt file, or a directory another process holds (redb's
    /// lock on its file guards the journal too).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join("tiergate.redb");
        let journal = dir.join("journal");
        let db = if path.exists() {
            Database::open(&path).map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?
        } else {
            Database::create(&path).map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?
        };
        // Schema version: written once, checked every time.
        const SCHEMA: &str = "checking the schema version";
        let txn = db.begin_write().map_err(redb_err(&path, SCHEMA))?;
        let mut mark_after_replay = false;
        {
            let mut meta = txn.open_table(META).map_err(redb_err(&path, SCHEMA))?;
            let found = meta
                .get("schema_version")
                .map_err(redb_err(&path, SCHEMA))?
                .map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema { path, found: v });
                }
                Some(SCHEMA_VERSION) => {}
                // An older store, which this build reads as it is: version 1 had no snapshots,
                // version 2 kept its facts in redb, version 3's journal holds only JSON. It is
                // marked with this version once its replay has read everything, before the
                // replay's compaction or the first binary send writes anything an older binary
                // would misread: a start that fails before then leaves it as it was, for the
                // binary that wrote it.
                Some(_) => mark_after_replay = true,
                // A new store (or one whose first start ended before this mark).
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)
                        .map_err(redb_err(&path, SCHEMA))?;
                }
            }
            txn.open_table(FACTS).map_err(redb_err(&path, SCHEMA))?;
            txn.open_table(SNAPSHOTS).map_err(redb_err(&path, SCHEMA))?;
            txn.open_table(SNAPSHOT_AT)
                .map_err(redb_err(&path, SCHEMA))?;
        }
        txn.commit().map_err(redb_err(&path, SCHEMA))?;
        std::fs::create_dir_all(&journal).map_err(|source| StoreError::Dir {
            path: journal.clone(),
            source,
        })?;
        Ok(Self {
            path,
            journal,
            db: Arc::new(db),
            shared: Arc::new(Shared::default()),
            waiters: Arc::new(Waiters::default()),
            failed: Arc::new(AtomicBool::new(false)),
            cause: Arc::new(OnceLock::new()),
            issued: AtomicU64::new(0),
            writer: Mutex::new(None),
            stats: Arc::new(CommitStats::default()),
            compacted_at: AtomicU64::new(0),
            mark_after_replay,
        })
    }

    /// Opens the store in `dir`, replays it into `engine` ([`EmbeddedStore::replay`]) and
    /// makes it the engine's journal: how a process starts on its data.
    pub fn open_for(dir: &Path, engine: &Engine) -> Result<(Arc<Self>, Recovery), StoreError> {
        let store = Arc::new(Self::open(dir)?);
        let recovery = store.replay(engine)?;
        engine.set_journal(store.clone());
        Ok((store, recovery))
    }

    /// Restores every org's snapshot, replays the facts stored since, in order, each at its own
    /// time ([`Engine::apply_fact`]), then compacts (each org's state becomes its new snapshot,
    /// stored in one transaction, and then the facts are dropped) and starts the writer on a
    /// new segment. So a start replays what happened since the last start, not the whole
    /// history. A torn write at the journal's end (never acknowledged) is dropped with a
    /// warning; damage anywhere else refuses the start ([`FactLogError::Corrupt`]).
    pub fn replay(&self, engine: &Engine) -> Result<Recovery, StoreError> {
        let start = Instant::now();
        const REPLAY: &str = "reading snapshots and facts";
        let read = self.db.begin_read().map_err(redb_err(&self.path, REPLAY))?;
        let snaps = read
            .open_table(SNAPSHOTS)
            .map_err(redb_err(&self.path, REPLAY))?;
        let at_table = read
            .open_table(SNAPSHOT_AT)
            .map_err(redb_err(&self.path, REPLAY))?;
        let mut covered: HashMap<String, u64> = HashMap::new();
        for item in at_table.iter().map_err(redb_err(&self.path, REPLAY))? {
            let (k, v) = item.map_err(redb_err(&self.path, REPLAY))?;
            covered.insert(k.value().to_owned(), v.value());
        }
        drop(at_table);
        let mut snapshots = 0u64;
        for item in snaps.iter().map_err(redb_err(&self.path, REPLAY))? {
            let (k, v) = item.map_err(redb_err(&self.path, REPLAY))?;
            let snap: OrgSnapshot =
                serde_json::from_slice(v.value()).map_err(|source| StoreError::SnapshotDecode {
                    path: self.path.clone(),
                    org: k.value().to_owned(),
                    source,
                })?;
            engine
                .restore_org(snap)
                .map_err(|source| StoreError::SnapshotRestore {
                    path: self.path.clone(),
                    org: k.value().to_owned(),
                    source,
                })?;
            snapshots += 1;
        }
        drop(snaps);
        let table = read
            .open_table(FACTS)
            .map_err(redb_err(&self.path, REPLAY))?;
        // Fact numbers never go back, even when every fact was compacted away: a snapshot says
        // which numbers it covers, and a reused number would be skipped as covered.
        let mut last = covered.values().copied().max().unwrap_or(0);
        let mut rows = 0u64;
        let mut n = 0u64;
        let mut apply = |file: &Path, seq: u64, bytes: &[u8]| -> Result<(), StoreError> {
            let fact = fact_codec::decode(bytes).map_err(|source| StoreError::FactDecode {
                path: file.to_owned(),
                seq,
                source,
            })?;
            last = last.max(seq);
            rows += 1;
            if covered.get(fact.org.as_str()).is_some_and(|&at| seq <= at) {
                // Already in the org's snapshot.
                return Ok(());
            }
            if let Err(e) = engine.apply_fact(&fact) {
                // A fact the engine refuses now (e.g. a policy change made it invalid) is
                // reported and skipped, never silently dropped.
                tracing::warn!(seq, error = %e, "stored fact not applied");
            }
            n += 1;
            Ok(())
        };
        // Facts a version-2 store kept in redb come first: the journal's are all later.
        for item in table.iter().map_err(redb_err(&self.path, REPLAY))? {
            let (k, v) = item.map_err(redb_err(&self.path, REPLAY))?;
            apply(&self.path, k.value(), v.value())?;
        }
        drop(table);
        drop(read);
        let journal = self.journal.clone();
        let replayed = fact_log::replay(&self.journal, |seq, bytes| apply(&journal, seq, bytes))?;
        last = last.max(replayed.last);
        // A compaction while running may have stored sends that were waiting; their callers did
        // not survive the restart.
        engine.clear_waiters();
        let took = start.elapsed();
        if self.mark_after_replay {
            const MARK: &str = "marking the schema version";
            let txn = self.db.begin_write().map_err(redb_err(&self.path, MARK))?;
            txn.open_table(META)
                .map_err(redb_err(&self.path, MARK))?
                .insert("schema_version", SCHEMA_VERSION)
                .map_err(redb_err(&self.path, MARK))?;
            txn.commit().map_err(redb_err(&self.path, MARK))?;
        }
        let compacting = Instant::now();
        if rows > 0 {
            self.compact(engine, last)?;
        }
        self.start_writer(last + 1)?;
        Ok(Recovery {
            snapshots,
            facts: n,
            took,
            compact: compacting.elapsed(),
        })
    }

    /// Writes every org's state as its snapshot in one transaction, then drops the facts: a crash
    /// leaves either the old snapshots and facts or the new snapshots (and perhaps facts they
    /// cover, skipped on replay), never a mix. At start, before any new fact: every snapshot
    /// reflects every fact up to `last`.
    fn compact(&self, engine: &Engine, last: u64) -> Result<(), StoreError> {
        // No journal is set yet, so every snapshot's position is `last` itself.
        self.commit_compaction(&self.snapshot_all(engine, last)?)
    }

    /// Facts committed since the last compaction.
    pub fn facts_since_compaction(&self) -> u64 {
        self.stats
            .facts()
            .saturating_sub(self.compacted_at.load(Ordering::Relaxed))
    }

    /// Takes every org's snapshot, each with the journal position it reflects, while the store
    /// keeps running. Then [`EmbeddedStore::wait_durable`] for [`Compaction::reflects`] and
    /// [`EmbeddedStore::commit_compaction`].
    ///
    /// Facts are dropped only up to the position read *before* listing the orgs: an org
    /// registered later has no snapshot yet, and all its facts come after that position.
    ///
    /// The journal starts a new segment after that position, so that the segments before it,
    /// whose facts the snapshots then cover, can be removed whole.
    pub fn prepare_compaction(&self, engine: &Engine) -> Result<Compaction, StoreError> {
        let upto = {
            let mut p = self.shared.pending.lock();
            if p.open {
                // The new segment starts with the fact after `upto`.
                let group = std::mem::take(&mut p.group);
                let next = p.next;
                p.sealed.push((group, next));
                self.shared.bell.notify_one();
                next - 1
            } else {
                self.issued()
            }
        };
        self.snapshot_all(engine, upto)
    }

    /// Every org's snapshot with the journal position it reflects (at least `upto`), to drop
    /// the facts up to `upto`.
    fn snapshot_all(&self, engine: &Engine, upto: u64) -> Result<Compaction, StoreError> {
        let mut snaps = Vec::new();
        for org in engine.org_ids() {
            let (snap, at) =
                engine
                    .snapshot_org_journaled(&org)
                    .map_err(|source| StoreError::SnapshotTake {
                        org: org.clone(),
                        source,
                    })?;
            snaps.push((org, at.max(upto), encode_snapshot(&snap)?));
        }
        Ok(Compaction { upto, snaps })
    }

    /// Stores the snapshots in one transaction, then removes the journal's segments they cover
    /// whole (those before the segment [`EmbeddedStore::prepare_compaction`] started; a segment
    /// the writer has not started yet is removed by the next compaction).
    pub fn commit_compaction(&self, c: &Compaction) -> Result<(), StoreError> {
        const COMPACT: &str = "storing a compaction";
        let committed = self.stats.facts();
        let txn = self
            .db
            .begin_write()
            .map_err(redb_err(&self.path, COMPACT))?;
        {
            let mut snaps = txn
                .open_table(SNAPSHOTS)
                .map_err(redb_err(&self.path, COMPACT))?;
            let mut at = txn
                .open_table(SNAPSHOT_AT)
                .map_err(redb_err(&self.path, COMPACT))?;
            for (org, reflects, bytes) in &c.snaps {
                snaps
                    .insert(org.as_str(), bytes.as_slice())
                    .map_err(redb_err(&self.path, COMPACT))?;
                at.insert(org.as_str(), *reflects)
                    .map_err(redb_err(&self.path, COMPACT))?;
            }
            let mut facts = txn
                .open_table(FACTS)
                .map_err(redb_err(&self.path, COMPACT))?;
            facts
                .retain_in(..=c.upto, |_, _| false)
                .map_err(redb_err(&self.path, COMPACT))?;
        }
        txn.commit().map_err(redb_err(&self.path, COMPACT))?;
        fact_log::drop_covered(&self.journal, c.upto)?;
        self.compacted_at.store(committed, Ordering::Relaxed);
        self.stats.snapshot_written(c.snaps.len() as u64);
        Ok(())
    }

    /// Starts the writer thread on a new segment (every older one is covered by the snapshots
    /// now, or holds nothing intact); the journal takes facts only once it runs. A thread that
    /// cannot be started is an error here: without it nothing would ever be acknowledged.
    fn start_writer(&self, first_seq: u64) -> Result<(), StoreError> {
        fact_log::drop_all(&self.journal)?;
        let log = FactLog::create(&self.journal, first_seq)?;
        {
            let mut p = self.shared.pending.lock();
            p.open = true;
            p.next = first_seq;
        }
        let w = Writer {
            log,
            shared: self.shared.clone(),
            durable: self.waiters.clone(),
            failed: self.failed.clone(),
            cause: self.cause.clone(),
            stats: self.stats.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("tiergate-store".into())
            .spawn(move || writer(w))
            .map_err(StoreError::Spawn)?;
        *self.writer.lock() = Some(handle);
        self.issued.store(first_seq - 1, Ordering::SeqCst);
        self.waiters.advance(first_seq - 1);
        Ok(())
    }

    /// Why writing stopped: the failure the writer recorded, else that it is gone.
    fn stopped(&self) -> StoreError {
        match self.cause.get() {
            Some(cause) => StoreError::CommitFailed(cause.clone()),
            None => StoreError::WriterStopped {
                path: self.path.clone(),
            },
        }
    }

    /// Commit latencies so far.
    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }

    /// The number of the last fact handed to the store.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::SeqCst)
    }

    /// Waits until every fact up to `seq` is on disk.
    pub async fn wait_durable(&self, seq: u64) -> Result<(), StoreError> {
        std::future::poll_fn(|cx| self.poll_durable(seq, cx)).await
    }

    /// Ready once every fact up to `seq` is on disk; pending until then, `cx`'s waker woken
    /// when they are (for a task that waits inside its own poll: a connection holding answers
    /// back). An error once a commit failed or the writer stopped, even for facts already
    /// durable ([`EmbeddedStore::is_durable`] tells those).
    pub fn poll_durable(
        &self,
        seq: u64,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), StoreError>> {
        if self.failed.load(Ordering::SeqCst) {
            return std::task::Poll::Ready(Err(self.stopped()));
        }
        // Either way the writer is done; what it recorded says why.
        self.waiters
            .poll_wait(seq, cx)
            .map_err(|(WaitError::Failed | WaitError::Stopped)| self.stopped())
    }

    /// Whether every fact up to `seq` is on disk, without waiting: a failure since does not
    /// undo what was committed.
    pub fn is_durable(&self, seq: u64) -> bool {
        self.waiters.is_durable(seq)
    }

    /// Whether every batch so far committed (a failed write stops acknowledgements for good).
    pub fn is_healthy(&self) -> bool {
        !self.failed.load(Ordering::SeqCst)
    }

    /// Waits until everything handed to the store so far is on disk.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.wait_durable(self.issued()).await
    }

    /// Stops the writer after it flushed everything queued (shutdown).
    pub fn close(&self) {
        self.shared.pending.lock().open = false;
        self.shared.bell.notify_one();
        if let Some(h) = self.writer.lock().take()
            && h.join().is_err()
        {
            // Its panic message is already on stderr; the waiters were told it stopped.
            tracing::error!(path = %self.path.display(), "the store writer panicked");
        }
    }
}

impl Journal for EmbeddedStore {
    fn position(&self) -> u64 {
        self.issued()
    }

    /// Numbers the fact and encodes it into the group the writer commits next (a send's few
    /// fields, or another fact's JSON, under the org's lock: `fact_codec.rs`); the fact is
    /// dropped on the thread that made it.
    fn record(&self, fact: Fact) {
        let mut p = self.shared.pending.lock();
        let seq = p.next;
        p.next += 1;
        if !p.open {
            // Closed or failed: the fact is dropped, but it still takes a number, which never
            // becomes durable. Whoever waits for it (or holds an answer for it) learns that the
            // store stopped, instead of finding the last number taken, already durable.
            self.issued.store(seq, Ordering::SeqCst);
            return;
        }
        let was_empty = p.is_empty();
        if let Err(source) = p.group.push_with(seq, |b| fact_codec::encode(&fact, b)) {
            // Facts are plain data; encoding cannot fail, but a failure must not pass
            // silently: nothing from here on is acknowledged.
            p.open = false;
            stop_acknowledging(
                StoreError::FactEncode { seq, source },
                &self.cause,
                &self.failed,
                &self.waiters,
            );
        }
        self.issued.store(seq, Ordering::SeqCst);
        drop(p);
        if was_empty {
            // The writer waits only on an empty group; while it gathers or commits, this rings
            // no one.
            self.shared.bell.notify_one();
        }
    }
}

/// Records why writing stopped, then stops acknowledging: the cause first, so that a waiter
/// woken by the failure finds it. Only the first failure is kept: nothing is written after it.
fn stop_acknowledging(
    e: StoreError,
    cause: &OnceLock<Arc<StoreError>>,
    failed: &AtomicBool,
    waiters: &Waiters,
) {
    tracing::error!(error = %ErrorChain(&e), "no further sends are acknowledged");
    let _ = cause.set(Arc::new(e));
    failed.store(true, Ordering::SeqCst);
    waiters.fail();
}

/// The writer thread's handles on the store.
struct Writer {
    log: FactLog,
    shared: Arc<Shared>,
    durable: Arc<Waiters>,
    failed: Arc<AtomicBool>,
    cause: Arc<OnceLock<Arc<StoreError>>>,
    stats: Arc<CommitStats>,
}

/// Takes the pending group, writes it (one `pwrite`, one `fdatasync`), tells the waiters; until
/// the store is closed and nothing is pending.
fn writer(w: Writer) {
    let Writer {
        mut log,
        shared,
        durable,
        failed,
        cause,
        stats,
    } = w;
    /// Tells whoever still waits that no commit is coming, however the thread ends (a panic
    /// included).
    struct StopOnExit(Arc<Waiters>);
    impl Drop for StopOnExit {
        fn drop(&mut self) {
            self.0.stop();
        }
    }
    let _stop = StopOnExit(durable.clone());
    let fail = |e: StoreError| {
        // Failed first: a call that finds the group still open records into a group never
        // written, and its wait then fails; one that finds it closed finds the store failed.
        stop_acknowledging(e, &cause, &failed, &durable);
        shared.pending.lock().open = false;
    };
    let commit = |log: &mut FactLog, group: &mut Group| -> Result<(), StoreError> {
        if group.len() == 0 {
            return Ok(());
        }
        let (facts, last) = (group.len() as usize, group.last());
        let started = Instant::now();
        log.commit(group)?;
        stats.observe(started.elapsed(), facts);
        durable.advance(last);
        Ok(())
    };
    // The group being committed; it and the pending one swap places, so that both keep their
    // buffers.
    let mut group = Group::default();
    let mut gather = GATHER;
    loop {
        {
            let mut p = shared.pending.lock();
            while p.is_empty() && p.open {
                shared.bell.wait(&mut p);
            }
            if p.is_empty() {
                return; // closed, everything written
            }
        }
        let cycle = Instant::now();
        // Wait a moment for more: a commit costs the machine ~50 µs of CPU whatever it
        // carries, and on a busy machine that CPU is the bottleneck, not the fsync. The writer
        // sleeps rather than waits on the bell, so that the facts arriving meanwhile do not
        // each wake it (a futex wake and a context switch per fact: measured 43.7 → 39.3 µs of
        // the sidecar's CPU per call at 20,000 calls/s).
        std::thread::sleep(gather);
        let sealed = {
            let mut p = shared.pending.lock();
            std::mem::swap(&mut p.group, &mut group);
            std::mem::take(&mut p.sealed)
        };
        let facts = group.len() + sealed.iter().map(|(g, _)| g.len()).sum::<u64>();
        // Sealed groups came before the one just taken.
        for (mut g, next) in sealed {
            let step = commit(&mut log, &mut g).and_then(|()| Ok(log.rotate(next)?));
            if let Err(e) = step {
                return fail(e);
            }
        }
        let (had, next) = (group.len() > 0, group.last() + 1);
        let step = commit(&mut log, &mut group).and_then(|()| {
            // A long segment (compaction off or rare) is cut, so that a start reads it in
            // bounded pieces.
            if had && log.is_full() {
                log.rotate(next)?;
            }
            Ok(())
        });
        if let Err(e) = step {
            return fail(e);
        }
        gather = gather_after(facts, cycle.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiergate_core::{Category, Change, Policy, SendRequest, Tier};
    use tiergate_testkit::{PHONE, engine_at_t0, org};

    /// What an engine hands its journal, kept in order.
    #[derive(Default)]
    struct Collect(Mutex<Vec<Fact>>);

    impl Journal for Collect {
        fn record(&self, fact: Fact) {
            self.0.lock().push(fact);
        }
    }

    fn send(to: &str) -> SendRequest<'_> {
        SendRequest {
            org_id: "z",
            phone_number_id: PHONE,
            recipient: to,
            recipient_user_id: None,
            template_name: "t",
            category: Category::Utility,
            idempotency_key: Some(to),
        }
    }

    /// A send decided after the store closed is not acknowledged: its fact is dropped, and
    /// waiting for it (or for everything issued) fails instead of finding the last fact
    /// written.
    #[test]
    fn a_fact_recorded_after_close_is_never_reported_durable() {
        let d = std::env::temp_dir().join(format!("tiergate-closed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let (engine, _) = engine_at_t0(Policy::default());
        let (store, _) = EmbeddedStore::open_for(&d, &engine).unwrap();
        engine.put_org(org("z", Tier::Tier250)).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(store.sync()).unwrap();
        let before = store.issued();
        store.close();
        assert!(engine.decide(&send("14155550109")).unwrap().is_allowed());
        assert!(store.issued() > before, "the dropped fact took a number");
        assert!(!store.is_durable(store.issued()));
        assert!(rt.block_on(store.sync()).is_err(), "reported durable");
        drop((store, engine));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_writer_gathers_longer_only_while_facts_arrive_fast() {
        let ms = Duration::from_millis;
        // 20 facts in 1 ms is 20,000 a second: busy.
        assert_eq!(gather_after(20, ms(1)), GATHER_BUSY);
        assert_eq!(gather_after(19, ms(1)), GATHER);
        assert_eq!(gather_after(40, ms(2)), GATHER_BUSY);
        // After an idle wait (a long cycle) or a lone fact, back to the short wait.
        assert_eq!(gather_after(1, Duration::from_secs(3)), GATHER);
        // No overflow at the extremes.
        assert_eq!(gather_after(u64::MAX, Duration::MAX), GATHER_BUSY);
        assert_eq!(gather_after(1, Duration::MAX), GATHER);
    }

    fn recipients(engine: &Engine) -> u64 {
        engine.get_org("z").unwrap().usage.unique_recipients_24h
    }

    /// A version-3 directory holds only JSON facts in its journal. This build replays them,
    /// marks the store 4, and writes its own sends in binary form after them; both come back.
    #[test]
    fn a_version_3_journal_of_json_sends_replays_and_binary_sends_follow_it() {
        let d = std::env::temp_dir().join(format!("tiergate-embedded-v3-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("journal")).unwrap();
        // The facts of an org and three sends, as an engine records them.
        let (engine, _) = engine_at_t0(Policy::default());
        let collect = Arc::new(Collect::default());
        engine.set_journal(collect.clone());
        engine.put_org(org("z", Tier::Tier1K)).unwrap();
        for to in ["14155550101", "14155550102", "14155550103"] {
            assert!(engine.decide(&send(to)).unwrap().is_allowed());
        }
        let facts = std::mem::take(&mut *collect.0.lock());
        assert_eq!(facts.len(), 4);
        assert!(matches!(facts[1].change, Change::Send { .. }));
        // Written as version 3 wrote them: JSON, in a journal segment, and the version in redb.
        {
            let db = Database::create(d.join("tiergate.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema_version", 3)
                .unwrap();
            txn.commit().unwrap();
            let mut log = FactLog::create(&d.join("journal"), 1).unwrap();
            let mut group = Group::default();
            for (seq, f) in (1..).zip(&facts) {
                group
                    .push_with(seq, |b| serde_json::to_writer(b, f))
                    .unwrap();
            }
            log.commit(&mut group).unwrap();
        }
        let version = |store: &EmbeddedStore| {
            let read = store.db.begin_read().unwrap();
            let meta = read.open_table(META).unwrap();
            meta.get("schema_version").unwrap().unwrap().value()
        };
        let store = EmbeddedStore::open(&d).unwrap();
        assert_eq!(version(&store), 3, "not marked before it replayed");
        drop(store);
        let reopen = || {
            let (engine, _) = engine_at_t0(Policy::default());
            let (store, _) = EmbeddedStore::open_for(&d, &engine).unwrap();
            (store, engine)
        };
        let (store, engine) = reopen();
        assert_eq!(recipients(&engine), 3, "the JSON sends came back");
        assert!(engine.decide(&send("14155550104")).unwrap().is_allowed());
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(store.sync())
            .unwrap();
        store.close();
        drop((store, engine));
        // The new send is in the journal in binary form (the start's compaction took the rest).
        let mut stored = Vec::new();
        fact_log::replay::<FactLogError>(&d.join("journal"), |_, bytes| {
            stored.push(bytes.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0][0], fact_codec::SEND);
        let (store, engine) = reopen();
        assert_eq!(recipients(&engine), 4, "the binary send came back too");
        assert_eq!(version(&store), 4);
        store.close();
        let _ = std::fs::remove_dir_all(&d);
    }
}
