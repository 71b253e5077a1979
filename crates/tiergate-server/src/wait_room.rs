//! Waiting sends on the server (SPEC §2a "Waiting"): the sleeping half.
//!
//! The engine keeps each org's queue and says, at every try, whether a send goes, waits for a
//! time, or waits behind another waiter (`tiergate_core::wait`). This module does the waiting
//! without a timer per waiter per millisecond:
//!
//! * a waiter told to retry after a time (the head of its line) sleeps until then, or until a
//!   change to its org may have freed something ([`Signals`]);
//! * a waiter behind another waiter of this process sleeps until that one moves (leaves the
//!   queue, or becomes blocked on something else): no timer at all. So a line of 200 waiters
//!   on one number costs one try when a slot opens (the head's) and one when the head leaves
//!   (the next one's, which then sleeps until its own slot);
//! * a waiter behind another replica's (Redis) cannot hear it move: it sleeps until that one is
//!   due, then reads the org's log (no write) and tries only once that one left or changed,
//!   polling every `server.wait_poll_ms` meanwhile.
//!
//! Each try runs in a task of its own, so a caller that goes away cannot cut a try in half. A
//! caller that goes away, or whose deadline passes, leaves the queue (an `Unwait`); if it went
//! away just as its send was allowed, the slot is given back (a NOT_SENT report): it takes
//! nothing.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tiergate_core::{Blocked, Category, Decision, Next, SendRequest, WaitTicket};
use tiergate_store::ErrorChain;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::error::GateError;
use crate::gate::Gate;
use crate::metrics::Metrics;

/// `server.max_wait_ms` unless configured.
pub const DEFAULT_MAX_WAIT_MS: u64 = 30_000;
/// `server.max_waiters_per_org` unless configured.
pub const DEFAULT_MAX_WAITERS_PER_ORG: u32 = 10_000;
/// `server.wait_poll_ms` unless configured.
pub const DEFAULT_WAIT_POLL_MS: u64 = 10;

/// A send's fields, owned, so that its tries can outlive the call that asked.
#[derive(Debug, Clone)]
pub struct OwnedSend {
    org_id: String,
    phone_number_id: String,
    recipient: String,
    recipient_user_id: Option<String>,
    template_name: String,
    category: Category,
    idempotency_key: Option<String>,
}

impl OwnedSend {
    /// A copy of `req`.
    pub fn new(req: &SendRequest<'_>) -> Self {
        OwnedSend {
            org_id: req.org_id.to_owned(),
            phone_number_id: req.phone_number_id.to_owned(),
            recipient: req.recipient.to_owned(),
            recipient_user_id: req.recipient_user_id.map(str::to_owned),
            template_name: req.template_name.to_owned(),
            category: req.category,
            idempotency_key: req.idempotency_key.map(str::to_owned),
        }
    }

    /// The request, borrowed.
    pub fn request(&self) -> SendRequest<'_> {
        SendRequest {
            org_id: &self.org_id,
            phone_number_id: &self.phone_number_id,
            recipient: &self.recipient,
            recipient_user_id: self.recipient_user_id.as_deref(),
            template_name: &self.template_name,
            category: self.category,
            idempotency_key: self.idempotency_key.as_deref(),
        }
    }
}

/// The waiting room's limits (`[server]` config).
#[derive(Debug, Clone, Copy)]
pub struct WaitLimits {
    /// The longest wait a caller may ask for (longer ones are cut to it).
    pub max_wait: Duration,
    /// The most waiters one org may hold (beyond it: answered at once).
    pub max_waiters_per_org: u32,
    /// How often a waiter behind another replica's reads the log while that one is due.
    pub poll: Duration,
}

impl Default for WaitLimits {
    fn default() -> Self {
        WaitLimits {
            max_wait: Duration::from_millis(DEFAULT_MAX_WAIT_MS),
            max_waiters_per_org: DEFAULT_MAX_WAITERS_PER_ORG,
            poll: Duration::from_millis(DEFAULT_WAIT_POLL_MS),
        }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct WaitRoom {
    gate: Gate,
    metrics: Arc<Metrics>,
    limits: WaitLimits,
    /// This process's waiters: each one's "I moved" signal, for those behind it.
    local: Mutex<HashMap<u64, Arc<Notify>>>,
    /// Random per process, so waiter ids of two replicas do not meet.
    nonce: u64,
    next: AtomicU64,
}

impl WaitRoom {
    /// A waiting room deciding through `gate`.
    pub fn new(gate: Gate, metrics: Arc<Metrics>, limits: WaitLimits) -> Arc<Self> {
        Arc::new(WaitRoom {
            gate,
            metrics,
            limits,
            local: Mutex::default(),
            nonce: RandomState::new().hash_one(std::process::id()),
            next: AtomicU64::new(0),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> WaitLimits {
        self.limits
    }

    /// How long a caller asking for `ms` may wait.
    pub fn wait_for(&self, ms: u64) -> Duration {
        Duration::from_millis(ms).min(self.limits.max_wait)
    }

    /// Decides `send`, waiting up to `wait` for a denial time cures (see the module docs).
    /// Returns the decision: ALLOW (recorded) or the denial it ended with. The tries run in a
    /// task of their own: if the returned future is dropped (the caller went away), the wait
    /// ends and nothing is taken.
    pub async fn decide(
        self: &Arc<Self>,
        send: OwnedSend,
        wait: Duration,
    ) -> Result<Decision, GateError> {
        let (tx, rx) = oneshot::channel();
        let room = self.clone();
        tokio::spawn(async move {
            let mut tx = tx;
            let started = Instant::now();
            let r = room.run(&send, wait, &mut tx).await;
            let took = started.elapsed();
            match (r, tx.is_closed()) {
                (Some(Ok(d)), false) => {
                    let ended = if d.is_allowed() { "allow" } else { "deny" };
                    room.metrics.wait_ended(ended, took);
                    if let Err(Ok(d)) = tx.send(Ok(d)) {
                        // The caller went away between the check and the send.
                        room.give_back(&d).await;
                    }
                }
                (Some(Ok(d)), true) => {
                    room.metrics.wait_ended("gone", took);
                    room.give_back(&d).await;
                }
                (Some(Err(e)), _) => {
                    let _ = tx.send(Err(e));
                }
                (None, _) => room.metrics.wait_ended("gone", took),
            }
        });
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(GateError::Unexpected {
                call: "wait",
                outcome: "the waiting task ended without an answer".into(),
            }),
        }
    }

    /// The tries of one waiting send. `None`: the caller went away (the wait was ended).
    async fn run(
        &self,
        send: &OwnedSend,
        wait: Duration,
        caller: &mut oneshot::Sender<Result<Decision, GateError>>,
    ) -> Option<Result<Decision, GateError>> {
        let id = self.waiter_id();
        let me = Arc::new(Notify::new());
        self.local_set().insert(id, me.clone());
        let org_signal = self.gate.signals().subscribe(&send.org_id);
        let ticket = WaitTicket {
            id,
            max_wait_ms: wait.as_millis() as u64,
            capacity: self.limits.max_waiters_per_org,
        };
        let deadline = Instant::now() + wait;
        let req = send.request();
        // Whether the engine may still hold it in the queue (anything but an answer).
        let mut queued = true;
        let out = loop {
            // Past the deadline one last try is made (a slot due exactly then still counts).
            let last_chance = Instant::now() >= deadline;
            // Listening before the try: a change to the org while it runs is not missed.
            let changed = org_signal.notify().notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let step = match self.gate.decide_waiting(&req, ticket).await {
                Ok(s) => s,
                Err(e) => {
                    // The engine refused the send (nothing queued), or the store failed (it
                    // may have been queued: ended below).
                    queued = e.is_store();
                    break Some(Err(e));
                }
            };
            self.metrics.wait_try();
            if step.wake_followers {
                me.notify_waiters();
            }
            let woke = match step.next {
                Next::Answer => {
                    // Answered: it left the queue (or never joined it).
                    queued = false;
                    break Some(Ok(step.decision));
                }
                Next::Retry { .. } | Next::Behind { .. } if last_chance => {
                    break Some(Ok(step.decision));
                }
                Next::Retry { after_ms } => {
                    // Counted from the try's own time, not from when its answer came back (a
                    // Redis round trip later). The clock reads whole milliseconds, rounded
                    // down, so sleeping the difference never wakes before the engine's clock
                    // reached the slot.
                    let left =
                        (step.at + after_ms).saturating_sub(self.gate.engine().clock().now_ms());
                    let until = Instant::now() + Duration::from_millis(left);
                    tokio::select! {
                        () = tokio::time::sleep_until(until.min(deadline)) => Woke::Time,
                        () = changed => Woke::Time,
                        () = caller.closed() => Woke::Gone,
                    }
                }
                Next::Behind {
                    waiter,
                    after_ms,
                    blocked,
                } => {
                    self.behind(send, waiter, &blocked, after_ms, deadline, caller)
                        .await
                }
            };
            if woke == Woke::Gone {
                break None;
            }
        };
        // Best effort: the engine also drops a waiter by itself once its wait is over.
        if queued && let Err(e) = self.gate.unwait(&send.org_id, id).await {
            tracing::warn!(org_id = %send.org_id, error = %ErrorChain(&e), "wait not ended");
        }
        self.local_set().remove(&id);
        me.notify_waiters();
        out
    }

    /// Waits behind waiter `ahead` (blocked on `blocked` at the try) until it moves, the
    /// deadline passes or the caller goes.
    async fn behind(
        &self,
        send: &OwnedSend,
        ahead: u64,
        blocked: &Blocked,
        after_ms: u64,
        deadline: Instant,
        caller: &mut oneshot::Sender<Result<Decision, GateError>>,
    ) -> Woke {
        let engine = self.gate.engine().clone();
        let moved_since_try =
            || engine.waiter_blocked(&send.org_id, ahead).as_ref() != Some(blocked);
        let local = self.local_set().get(&ahead).cloned();
        if let Some(notify) = local {
            // This process's: it says when it moves. Listen first, then check it has not moved
            // since the try, so its signal cannot slip between the two.
            let moved = notify.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if !self.local_set().contains_key(&ahead) || moved_since_try() {
                return Woke::Time;
            }
            return tokio::select! {
                () = moved => Woke::Time,
                () = tokio::time::sleep_until(deadline) => Woke::Time,
                () = caller.closed() => Woke::Gone,
            };
        }
        // Gone already (it left between the try and here): try again now.
        if moved_since_try() {
            return Woke::Time;
        }
        // Another replica's: sleep until it is due, then read the log (no write) and try only
        // once it left or is blocked on something else.
        let mut nap = Duration::from_millis(after_ms).max(self.limits.poll);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until((Instant::now() + nap).min(deadline)) => {}
                () = caller.closed() => return Woke::Gone,
            }
            if Instant::now() >= deadline {
                return Woke::Time;
            }
            if let Err(e) = self.gate.sync(&send.org_id).await {
                tracing::debug!(error = %ErrorChain(&e), "waiting: log not read");
                return Woke::Time;
            }
            if moved_since_try() {
                return Woke::Time;
            }
            nap = self.limits.poll;
        }
    }

    /// Gives back what a send allowed for a caller that went away took.
    async fn give_back(&self, d: &Decision) {
        if !d.is_allowed() {
            return;
        }
        if let Err(e) = self.gate.give_back(d).await {
            tracing::warn!(error = %ErrorChain(&e), "slot of a caller that went away not given back");
        }
    }

    fn local_set(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Notify>>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A waiter id: unique in this process, and across processes with all but certainty.
    fn waiter_id(&self) -> u64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // SplitMix64's finaliser: a bijection, so ids of one process never collide.
        let mut z = self
            .nonce
            .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Why a waiter woke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Woke {
    /// Time to try again (a time passed, something moved, or the deadline).
    Time,
    /// The caller went away.
    Gone,
}
