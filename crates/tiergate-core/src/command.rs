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
use crate::error::EngineError;
use crate::journal::Fact;
use crate::org::OrgStatus;
use crate::org_state::{Reaction, TierChange};
use crate::wait::{WaitStep, WaitTicket};

/// One call that may change an org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Decide a send (and record it when allowed): `Acquire` and `SendTemplate`. The fields
    /// are a [`SendRequest`]'s, owned so the command can travel through a log.
    Decide {
        /// [`SendRequest::org_id`].
        org: String,
        /// [`SendRequest::phone_number_id`].
        phone: String,
        /// [`SendRequest::recipient`].
        recipient: String,
        /// [`SendRequest::recipient_user_id`] (absent in logs written before BSUIDs).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
        /// [`SendRequest::template_name`].
        template: String,
        /// [`SendRequest::category`].
        category: Category,
        /// [`SendRequest::idempotency_key`].
        key: Option<String>,
        /// A waiting send's ticket (absent: answer at once, and in logs written before waits).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait: Option<WaitTicket>,
    },
    /// End a waiting send's wait: its caller went away or its deadline passed. Logged like a
    /// decision, so every replica's queue loses it at the same point.
    Unwait {
        /// The org it waits in.
        org: String,
        /// [`WaitTicket::id`].
        waiter: u64,
    },
    /// Read an org's status at the command's time. A replica must not move an org's clock
    /// outside the log (its windows would expire at a time the others never saw), so a read
    /// that wants "now" goes through the log like a change.
    Status {
        /// The org to read.
        org: String,
    },
    /// Any other change, as the journal records it. The fact's `at` is ignored: the log's time
    /// wins, so every replica applies it at the same instant.
    Apply {
        /// The org and the change (stored in the journal's shape).
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
            user_id: req.recipient_user_id.map(str::to_owned),
            template: req.template_name.to_owned(),
            category: req.category,
            key: req.idempotency_key.map(str::to_owned),
            wait: None,
        }
    }

    /// The command for one try of a waiting send.
    pub fn decide_waiting(req: &SendRequest<'_>, ticket: WaitTicket) -> Self {
        let mut c = Command::decide(req);
        if let Command::Decide { wait, .. } = &mut c {
            *wait = Some(ticket);
        }
        c
    }

    /// Whether the command may create its org (a registration): a replicated store lets it
    /// reach the log for an org it does not know yet, and refuses every other command there.
    pub fn registers(&self) -> bool {
        matches!(
            self,
            Command::Apply {
                fact: Fact {
                    change: crate::Change::PutOrg { .. },
                    ..
                }
            }
        )
    }

    /// The org the command changes: what a replicated log is keyed by.
    pub fn org(&self) -> &str {
        match self {
            Command::Decide { org, .. } | Command::Status { org } | Command::Unwait { org, .. } => {
                org
            }
            Command::Apply { fact } => &fact.org,
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
    /// One try of a waiting send (`Decide` with a ticket).
    Wait(WaitStep),
    /// A wait ended (`Unwait`).
    Unwaited {
        /// Whether the waiter was still in the queue.
        was_waiting: bool,
    },
    /// A webhook delivery's key: `first` unless the org applied the same delivery before.
    Delivery {
        /// Whether this is the first time the org sees it.
        first: bool,
    },
}

impl Outcome {
    /// The org's status, for a change that answers with it.
    pub fn into_org(self) -> Result<OrgStatus, EngineError> {
        match self {
            Outcome::Org(s) => Ok(*s),
            _ => Err(EngineError::Internal("expected the org's status")),
        }
    }

    /// The reaction, for a report or an error code.
    pub fn into_reaction(self) -> Result<Reaction, EngineError> {
        match self {
            Outcome::Reaction(r) => Ok(r),
            _ => Err(EngineError::Internal("expected a reaction")),
        }
    }

    /// The tier change, for a tier request.
    pub fn into_tier(self) -> Result<TierChange, EngineError> {
        match self {
            Outcome::Tier(t) => Ok(t),
            _ => Err(EngineError::Internal("expected a tier change")),
        }
    }

    /// The appeal, for an appeal filed or resolved.
    pub fn into_appeal(self) -> Result<Appeal, EngineError> {
        match self {
            Outcome::Appeal(a) => Ok(a),
            _ => Err(EngineError::Internal("expected an appeal")),
        }
    }
}
