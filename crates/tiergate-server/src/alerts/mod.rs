//! Alerts: an org's state turning bad (or back) is POSTed to `[alerts] url` as JSON, signed like
//! Meta signs webhooks (`X-Tiergate-Signature-256: sha256=<HMAC-SHA256 of the body with
//! [alerts] secret>`).
//!
//! * **What fires** ([`detect`]): a watcher compares every org's conditions with the last ones
//!   seen, every `check_ms`: rating changed (both ways), grace ends within 24 h, restricted,
//!   template paused or disabled, account or number restricted, tier applied or held for an
//!   escalation path, window at 80 % and full, marketing API required, pacing review.
//! * **At least once**: alerts wait in an outbox, oldest first, until the receiver answers 2xx;
//!   a failure is retried with exponential back-off (1 s doubling, up to `max_backoff_ms`). The
//!   outbox is bounded (`max_queue`; when full the oldest alert is dropped and counted). A
//!   receiver that hangs costs the sender task its `timeout_ms`, never a decision.
//! * **Across restarts**: the outbox and the conditions seen are kept: in `alerts.json` in the
//!   data directory (embedded store; written whole, to a temporary file, fsynced, renamed), or in
//!   Redis. With Redis one replica at a time holds a lease and alone watches and sends, so each
//!   alert is sent by one replica; another takes over within the lease's time if it dies.
//!   In memory (`--store memory`) they live as long as the process.

pub mod detect;

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tiergate_store::ErrorChain;
use tokio::sync::Notify;

use crate::config::AlertsSection;
use crate::gate::Gate;
use crate::webhook::signature;
use detect::Alert;

/// The header that carries the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Tiergate-Signature-256";
const LEASE_KEY: &str = "tg:alerts:leader";
const BOOK_KEY: &str = "tg:alerts:book";

/// What is kept across restarts: the alerts not yet delivered and each org's conditions.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Book {
    outbox: VecDeque<Alert>,
    seen: BTreeMap<String, BTreeSet<String>>,
    next: u64,
}

/// Where the book is kept.
#[derive(Debug)]
enum Keeper {
    Memory,
    File(PathBuf),
    Redis,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct AlertStats {
    /// Alerts the receiver took.
    pub delivered: AtomicU64,
    /// Attempts that failed (each retried).
    pub failed: AtomicU64,
    /// Alerts dropped because the outbox was full.
    pub dropped: AtomicU64,
    /// Alerts waiting now.
    pub queued: AtomicU64,
}

/// See the module docs.
#[derive(Debug)]
pub struct Alerts {
    gate: Gate,
    url: String,
    secret: Vec<u8>,
    events: HashSet<String>,
    check: Duration,
    max_queue: usize,
    max_backoff: Duration,
    client: reqwest::Client,
    keeper: Keeper,
    book: Mutex<Book>,
    wake: Notify,
    /// For `/metrics`.
    pub stats: AlertStats,
}

/// Why alerts could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    /// The HTTP client could not be built.
    #[error("alerts: HTTP client")]
    Client(#[source] reqwest::Error),
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Alerts {
    /// Alerts per `cfg` (which has a `url`), watching `gate`; with the embedded store the book
    /// is kept in `data_dir`.
    pub fn new(
        cfg: &AlertsSection,
        url: &str,
        gate: Gate,
        data_dir: Option<&Path>,
    ) -> Result<Arc<Self>, AlertsError> {
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(AlertsError::Client)?;
        let keeper = match (gate.redis_log().is_some(), data_dir) {
            (true, _) => Keeper::Redis,
            (false, Some(d)) => Keeper::File(d.join("alerts.json")),
            (false, None) => Keeper::Memory,
        };
        let events = if cfg.events.iter().any(|e| e == "all") {
            detect::KINDS.iter().map(|k| (*k).to_owned()).collect()
        } else {
            cfg.events.iter().cloned().collect()
        };
        Ok(Arc::new(Alerts {
            gate,
            url: url.to_owned(),
            secret: cfg.secret.clone().unwrap_or_default().into_bytes(),
            events,
            check: Duration::from_millis(cfg.check_ms),
            max_queue: cfg.max_queue,
            max_backoff: Duration::from_millis(cfg.max_backoff_ms),
            client,
            keeper,
            book: Mutex::default(),
            wake: Notify::new(),
            stats: AlertStats::default(),
        }))
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the kept book (at start, and when this replica takes the lease).
    async fn load(&self) {
        let text = match &self.keeper {
            Keeper::Memory => return,
            Keeper::File(p) => match std::fs::read_to_string(p) {
                Ok(t) => Some(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    tracing::error!(path = %p.display(), error = %e, "alerts: book not read");
                    None
                }
            },
            Keeper::Redis => match self.gate.redis_log() {
                Some(log) => log.value(BOOK_KEY).await.unwrap_or_else(|e| {
                    tracing::warn!(error = %ErrorChain(&e), "alerts: book not read");
                    None
                }),
                None => None,
            },
        };
        if let Some(t) = text {
            match serde_json::from_str::<Book>(&t) {
                Ok(b) => *self.book() = b,
                Err(e) => {
                    tracing::error!(error = %e, "alerts: kept book unreadable; starting empty")
                }
            }
        }
        self.stats
            .queued
            .store(self.book().outbox.len() as u64, Ordering::Relaxed);
    }

    /// Keeps the book (after every change).
    async fn save(&self) {
        let json = match serde_json::to_string(&*self.book()) {
            Ok(j) => j,
            Err(e) => return tracing::error!(error = %e, "alerts: book not encodable"),
        };
        self.stats
            .queued
            .store(self.book().outbox.len() as u64, Ordering::Relaxed);
        match &self.keeper {
            Keeper::Memory => {}
            Keeper::File(p) => {
                let p = p.clone();
                let r = tokio::task::spawn_blocking(move || write_atomically(&p, json.as_bytes()))
                    .await;
                if !matches!(r, Ok(Ok(()))) {
                    tracing::error!(?r, "alerts: book not written");
                }
            }
            Keeper::Redis => {
                if let Some(log) = self.gate.redis_log()
                    && let Err(e) = log.put_value(BOOK_KEY, &json).await
                {
                    tracing::warn!(error = %ErrorChain(&e), "alerts: book not written");
                }
            }
        }
    }

    /// Whether this process does the alerting now (with Redis: while it holds the lease).
    async fn leading(&self) -> bool {
        match self.gate.redis_log() {
            None => true,
            Some(log) => {
                let ttl = (self.check.as_millis() as u64 * 3).max(3_000);
                log.lease(LEASE_KEY, ttl).await.unwrap_or(false)
            }
        }
    }

    /// One look at every org: new alerts go to the outbox. Returns how many, and whether any
    /// org's conditions changed (the book must be kept).
    fn look(&self) -> (usize, bool) {
        let engine = self.gate.engine();
        let now = engine.clock().now_ms();
        let grace = engine.policy().red_grace_ms;
        let mut book = self.book();
        let mut added = 0;
        let mut changed = false;
        for st in self.gate.observe_orgs() {
            let id = st.config.org_id.clone();
            let now_c = detect::conditions(&st, grace, now);
            let found = detect::changes(book.seen.get(&id), &now_c);
            for (kind, subject, from) in found {
                if !self.events.contains(&kind) {
                    continue;
                }
                book.next += 1;
                let alert = Alert {
                    id: format!("{id}:{kind}:{now}:{}", book.next),
                    text: detect::text(&kind, &id, &subject, &from),
                    kind,
                    org_id: id.clone(),
                    subject,
                    from,
                    at_unix_ms: now,
                };
                tracing::info!(alert = %alert.text, id = %alert.id, "alert");
                book.outbox.push_back(alert);
                added += 1;
                while book.outbox.len() > self.max_queue {
                    book.outbox.pop_front();
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("alerts: outbox full, oldest alert dropped");
                }
            }
            if book.seen.get(&id) != Some(&now_c) {
                book.seen.insert(id, now_c);
                changed = true;
            }
        }
        (added, changed)
    }

    /// Watches the orgs every `check_ms` (while leading).
    async fn watch(self: Arc<Self>) {
        let mut led = false;
        let mut tick = tokio::time::interval(self.check);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let leading = self.leading().await;
            if leading && !led {
                // Taking over (or starting): what the last leader kept.
                self.load().await;
            }
            led = leading;
            if !leading {
                continue;
            }
            // With Redis, what every replica did since the last look.
            if let Err(e) = self.gate.sync_all().await {
                tracing::warn!(error = %ErrorChain(&e), "alerts: orgs not read");
                continue;
            }
            let (added, changed) = self.look();
            if changed {
                self.save().await;
            }
            if added > 0 {
                self.wake.notify_one();
            }
        }
    }

    /// Delivers the outbox, oldest first, retrying with back-off.
    async fn send(self: Arc<Self>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let next = self.book().outbox.front().cloned();
            let Some(alert) = next else {
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(self.check) => {}
                }
                continue;
            };
            if !self.leading().await {
                tokio::time::sleep(self.check).await;
                continue;
            }
            match self.post(&alert).await {
                Ok(()) => {
                    {
                        let mut b = self.book();
                        if b.outbox.front().is_some_and(|a| a.id == alert.id) {
                            b.outbox.pop_front();
                        }
                    }
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    self.save().await;
                    backoff = Duration::from_secs(1);
                }
                Err(why) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(id = %alert.id, why, retry_in = ?backoff, "alert not delivered");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
    }

    async fn post(&self, alert: &Alert) -> Result<(), String> {
        let body = serde_json::to_vec(alert).map_err(|e| e.to_string())?;
        let sig = signature::sign(&self.secret, &body);
        let r = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, sig)
            .body(body)
            .send()
            .await
            .map_err(|e| ErrorChain(&e).to_string())?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {}", r.status()))
        }
    }

    /// Starts the watcher and the sender.
    pub fn start(self: &Arc<Self>) {
        tokio::spawn(self.clone().watch());
        tokio::spawn(self.clone().send());
    }
}
