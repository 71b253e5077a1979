//! What became of each change, and the counts a webhook is answered with.
//!
//! Both shells judge a change the same way, so the sidecar's `/metrics` labels, its JSON answer
//! and the simulator's counts mean the same thing.

use serde::Serialize;
use tiergate_core::Reaction;

/// What became of one change. WhatsApp is answered 200 for every outcome but
/// [`Outcome::StoreUnavailable`]: retrying a change an org refused, no org holds, or that could
/// not be read would only repeat it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The org's state changed, or already was what the change reports.
    Applied,
    /// An error code was applied; the reaction is kept so the server can count it by kind.
    Reacted(Reaction),
    /// A tier increase was held by the escalation gate: the org has no escalation path, so
    /// the increase waits like any other (an upgrade webhook is no way around the gate).
    Held,
    /// No org holds the id the change names: counted, not retried, and nothing is created.
    UnknownId,
    /// A field the governor does not act on; counted so new fields show up in metrics. Also a
    /// change with nothing to act on: a capability update that sets no messaging limit
    /// (`TIER_NOT_SET`), or a contact naming two BSUIDs but no phone.
    Ignored,
    /// The org already applied this change (same delivery key): Meta redelivered it, and
    /// applying it again would repeat its effect (a second pause, a doubled back-off).
    Duplicate,
    /// The change could not be read (its reason is logged); the rest of the body applied.
    Unreadable(String),
    /// The org refused the change (e.g. a template name Meta would not issue, or an error code
    /// that needs more than a status carries); the reason is logged.
    Rejected(String),
    /// The shell's state store could not take the change. Only a shell with a store reports
    /// this ([`crate::Plan::store_unavailable`]); the server answers 503 so WhatsApp retries.
    StoreUnavailable,
}

impl Outcome {
    /// A stable label for metrics: a counter's label values must not change between releases.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied | Outcome::Reacted(_) => "applied",
            Outcome::Held => "held",
            Outcome::UnknownId => "unknown_id",
            Outcome::Ignored => "ignored",
            Outcome::Duplicate => "duplicate",
            Outcome::Unreadable(_) => "unreadable",
            Outcome::Rejected(_) => "rejected",
            Outcome::StoreUnavailable => "store_unavailable",
        }
    }
}

/// Counts of outcomes for one body, answered to the caller as JSON so a sender of test
/// webhooks can see what each did without reading the server's logs.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Changes that changed (or confirmed) an org's state, reactions included.
    pub applied: usize,
    /// Tier increases held for an escalation path.
    pub held: usize,
    /// Changes naming an id no org holds.
    pub unknown_id: usize,
    /// Fields the governor does not act on.
    pub ignored: usize,
    /// Redeliveries of changes the org already applied.
    pub duplicate: usize,
    /// Changes that could not be read.
    pub unreadable: usize,
    /// Changes the org refused, or the store could not take.
    pub rejected: usize,
}

impl Summary {
    /// Counts one outcome.
    pub fn add(&mut self, o: &Outcome) {
        match o {
            Outcome::Applied | Outcome::Reacted(_) => self.applied += 1,
            Outcome::Held => self.held += 1,
            Outcome::UnknownId => self.unknown_id += 1,
            Outcome::Ignored => self.ignored += 1,
            Outcome::Duplicate => self.duplicate += 1,
            Outcome::Unreadable(_) => self.unreadable += 1,
            Outcome::Rejected(_) | Outcome::StoreUnavailable => self.rejected += 1,
        }
    }
}
