//! Commands: every call that may change an org, as a value.
//!
//! A replicated store (Redis) cannot share the engine's memory, so it shares the *order* of the
//! calls instead: each replica appends a [`Command`] to the org's log and every replica applies
//! the log in order through [`crate::Engine::execute_at`], at the time the log gave the entry.
//! The engine is deterministic given its state, the command and the time, so every replica
//! reaches the same decision for the same entry and holds the same windows, counts and permits.

use serde::{Deserialize, Serialize};

use crate::appeal::Appeal;
use crate::decision::{Category, Decision, SendRequest};
use crate::feedback::Reaction;
use crate::journal::Fact;
use crate::org::OrgStatus;
use crate::tier_change::TierChange;

/// One call that may change an org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Decide a send (and record it when allowed): `Acquire` and `SendTemplate`.
    Decide {
        /// The org.
        org: String,
        /// The phone number id.
        phone: String,
        /// The recipient.
        recipient: String,
        /// The template.
        template: String,
        /// The template's category.
        category: Category,
        /// The idempotency key.
        key: Option<String>,
    },
    /// Read an org's status at the command's time. A replica must not move an org's clock
    /// outside the log (its windows would expire at a time the others never saw), so a read
    /// that wants "now" goes through the log like a change.
    Status {
        /// The org.
        org: String,
    },
    /// Any other change, in the journal's own terms (its `at` is ignored: the log's time wins).
    Apply {
        /// The change.
        fact: Fact,
    },
}

impl Command {
    /// The command for a send request.
    pub fn decide(req: &SendRequest<'_>) -> Self {
        Command::Decide {
            org: req.org_id.to_owned(),
            phone: req.phone_number_id.to_owned(),
            recipient: req.recipient.to_owned(),
            template: req.template_name.to_owned(),
            category: req.category,
            key: req.idempotency_key.map(str::to_owned),
        }
    }

    /// The org the command changes: what a replicated log is keyed by.
    pub fn org(&self) -> &str {
        match self {
            Command::Decide { org, .. } | Command::Status { org } => org,
            Command::Apply { fact } => fact.org(),
        }
    }
}

/// What applying a command returned: the answer the caller of the original RPC waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A decision (`Decide`).
    Decision(Decision),
    /// The reaction to a report or an error code.
    Reaction(Reaction),
    /// The org after an admin change.
    Org(Box<OrgStatus>),
    /// A tier request's result.
    Tier(TierChange),
    /// An appeal filed or resolved.
    Appeal(Appeal),
    /// A recorded send replayed.
    Restored,
}
