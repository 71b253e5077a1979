//! Waiting sends (SPEC §2a "Waiting"): the engine's half.
//!
//! A caller that may wait hands the engine a [`WaitTicket`] with its send. The engine decides
//! the send as usual, except that a send denied for a reason time cures within the wait joins
//! the org's queue ([`crate::wait_queue`]) instead of being answered, and that a waiter may
//! take nothing a waiter ahead of it (a higher category, or an earlier arrival) is waiting for.
//! The answer, a [`WaitStep`], tells the shell what to do next: answer the caller, try again
//! after a time, or try again once a named waiter ahead has moved. The shell owns the sleeping
//! (the engine has no timers or runtime); the engine owns the order, so it is the same whatever
//! the store, and with Redis the same on every replica.

use serde::{Deserialize, Serialize};

use crate::decision::{Decision, SendRequest};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::org_state::{CheckedSend, SendFields};
use crate::wait_queue::Blocked;

/// A caller's permission to wait, sent with each try of one waiting send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitTicket {
    /// Names the waiter across its tries: unique among the org's waiters (the server draws it
    /// at random per call).
    pub id: u64,
    /// How long the caller waits at most, from its first try (the server caps it with
    /// `server.max_wait_ms`).
    pub max_wait_ms: u64,
    /// The most waiters the org may hold (`server.max_waiters_per_org`): beyond it a new
    /// waiter is answered at once. Carried by the ticket so that every replica applying the
    /// log bounds the queue identically.
    pub capacity: u32,
}

/// What the shell does after a try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Answer the caller with the decision: allowed, or denied for a reason the wait does not
    /// cure (the waiter left the queue, or never joined it).
    Answer,
    /// Denied for now; try again in `after_ms` (the decision's retry-after). The waiter keeps
    /// its place.
    Retry {
        /// When the send can go, if nothing else takes it first.
        after_ms: u64,
    },
    /// A waiter ahead (`waiter`) wants what this send would take: try again once it has moved
    /// (it tries itself in `after_ms`). The waiter keeps its place.
    Behind {
        /// The waiter ahead.
        waiter: u64,
        /// When the waiter ahead expects to try again.
        after_ms: u64,
        /// What the waiter ahead was blocked on at this try: if the shell finds it blocked on
        /// something else (or gone) before it starts listening, it has moved already.
        blocked: Blocked,
    },
}

/// The result of one try of a waiting send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitStep {
    /// The decision: ALLOW (recorded, as by [`Engine::decide`]) or the denial that holds it.
    pub decision: Decision,
    /// What to do next.
    pub next: Next,
    /// The org's time of this try (its clock, in ms): `after_ms` counts from here, so a shell
    /// whose answer came back late (a Redis round trip) still wakes on time.
    pub at: u64,
    /// Whether waiters behind this one may now get something they could not before (it left
    /// the queue, or is now blocked on something else): the shell wakes the waiters it told to
    /// wait for this one ([`Next::Behind`]).
    pub wake_followers: bool,
}

impl Engine {
    /// One try of a waiting send at `now`. See the module docs. Like [`Engine::decide_at`] it
    /// records (and journals) the send when it is allowed; a try that is not allowed changes
    /// nothing but the org's queue, which is never journaled (a restart ends every wait).
    pub fn decide_waiting_at(
        &self,
        req: &SendRequest<'_>,
        ticket: WaitTicket,
        now: u64,
    ) -> Result<WaitStep, EngineError> {
        let fields = SendFields::check(req)?;
        let org = self.registry.get(req.org_id)?;
        let mut st = org.lock();
        let send = CheckedSend::find(&st, req, fields)?;
        let now = st.advance(now);
        let step = st.decide_waiting(&self.policy, send, ticket, now);
        self.emit_send(req, &step.decision, now);
        Ok(step)
    }

    /// Ends waiter `id`'s wait in `org_id` (its caller went away or its deadline passed), so it
    /// holds nobody back. Returns whether it was waiting.
    pub fn unwait_at(&self, org_id: &str, id: u64, now: u64) -> Result<bool, EngineError> {
        self.registry.with_org(org_id, |st| {
            let now = st.advance(now);
            st.unwait(id, now)
        })
    }

    /// Whether waiter `id` still waits in `org_id`, and what blocks it (for a replica whose
    /// waiter is behind another replica's: it reads the log and asks this before trying again).
    pub fn waiter_blocked(&self, org_id: &str, id: u64) -> Option<Blocked> {
        self.registry
            .with_org(org_id, |st| st.waiter_blocked(id))
            .ok()
            .flatten()
    }

    /// How many sends wait in `org_id` (0 for an unknown org).
    pub fn waiting(&self, org_id: &str) -> usize {
        self.registry
            .with_org(org_id, |st| st.waiting())
            .unwrap_or(0)
    }

    /// Ends every wait (the embedded store calls this after a restart: no caller survived it).
    pub fn clear_waiters(&self) {
        for id in self.org_ids() {
            let _ = self.registry.with_org(&id, |st| st.clear_waiters());
        }
    }
}
