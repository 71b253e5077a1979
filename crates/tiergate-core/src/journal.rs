//! Facts: the engine's state changes, for a store to keep and replay.
//!
//! The engine does no I/O, but a durable store must see every change in the order the engine
//! applied it. So the engine hands each change, while it still holds the org's lock, to an
//! injected [`Journal`]: a [`Fact`] says when (the org's time, after it advanced), which org and
//! what [`Change`]. The store writes it (in batches, one fsync per batch) and replays the facts in
//! order on restart through [`crate::Engine::apply_fact`], which applies each at its own time
//! through the same route the live call took. Denials change nothing and produce no fact.

use serde::Deserialize;

use crate::change::Change;
use crate::error::{EngineError, ValidationError};
use crate::org::OrgConfig;
use crate::policy::Policy;
use crate::validate;

/// One state change of one org, at the time the engine applied it.
///
/// Serialized as JSON in the shape earlier versions wrote (`{"fact": "send", "at": …, "org": …}`),
/// so a data directory or a Redis log written before the envelope still replays. (The embedded
/// store writes sends in a binary form of its own since its schema 4, and reads both.)
///
/// Written through `fact_wire.rs` (`Serialize` is implemented there): the facts a store writes
/// most, sends and reports, by reference; the rest through an owned copy in the stored shape.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "crate::fact_wire::WireFact")]
pub struct Fact {
    /// When the change was applied: the org's time in Unix ms (never earlier than any time
    /// the org saw before).
    pub at: u64,
    /// The org it changed.
    pub org: String,
    /// What changed.
    pub change: Change,
}

impl Fact {
    /// A fact of `change` to `org` at `at`.
    pub fn new(at: u64, org: impl Into<String>, change: Change) -> Self {
        Fact {
            at,
            org: org.into(),
            change,
        }
    }

    /// The fact of registering (or updating) an org: its org is the config's.
    pub fn put_org(at: u64, config: OrgConfig) -> Self {
        Fact {
            at,
            org: config.org_id.clone(),
            change: Change::PutOrg { config },
        }
    }

    /// Checks the envelope and the change without applying them: a well-formed org id, a
    /// registration for the org it names, and [`Change::validate`].
    pub fn validate(&self, policy: &Policy) -> Result<(), EngineError> {
        validate_envelope(&self.org, &self.change, policy)
    }
}

/// [`Fact::validate`] for a change not (yet) in an envelope.
pub(crate) fn validate_envelope(
    org: &str,
    change: &Change,
    policy: &Policy,
) -> Result<(), EngineError> {
    validate::org_id(org)?;
    if let Change::PutOrg { config } = change
        && config.org_id != org
    {
        return Err(ValidationError::new(
            "org.org_id",
            format!("{:?} is not the fact's org {org:?}", config.org_id),
        )
        .into());
    }
    change.validate(policy)
}

/// Where the engine hands its facts. Called under an org's lock: it must be quick and must not
/// call back into the engine.
pub trait Journal: Send + Sync {
    /// Records one fact, in order.
    fn record(&self, fact: Fact);

    /// The number of the last fact recorded (0 for a journal that does not number them). Read
    /// under an org's lock, it says which of that org's facts a snapshot taken there reflects.
    fn position(&self) -> u64 {
        0
    }
}
