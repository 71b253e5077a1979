//! `GateError`: everything a [`crate::gate::Gate`] call can fail with, typed, so that handlers
//! decide by kind (a sender let through on `on_store_error = "allow"`, a webhook answered 503)
//! and the gRPC status is chosen in one place (`impl From<GateError> for Status` in
//! [`crate::convert`]).

use tiergate_core::{BatchError, EngineError};
use tiergate_store::{RedisStoreError, StoreError};

/// Why a [`crate::gate::Gate`] call failed.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The engine refused the call (malformed input, unknown org, permit or appeal, a
    /// conflict). Nothing changed; the same call fails the same way on every replica.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The engine refused item `index` of a batch (`AcquireBatch`): the whole batch is
    /// refused. A field error already names the item's field (`sends[3].recipient`).
    #[error("sends[{index}]: {error}")]
    Item {
        /// The item's position in the batch.
        index: usize,
        /// Its error.
        error: EngineError,
    },
    /// The store could not take or confirm the change (Redis unreachable, an embedded commit
    /// failed): the caller may try again, here or on another sidecar, once it is back.
    #[error("state store unavailable")]
    StoreUnavailable(#[source] StoreFailure),
    /// Redis lost tiergate's keys: the shared budget is gone. Every call is refused, whatever
    /// `on_store_error` says, until the sidecars are restarted.
    #[error(
        "state store lost its data (redis restarted without persistence?): restart the sidecars"
    )]
    StoreLost,
    /// The store answered something this replica cannot use (an entry or snapshot it cannot
    /// read, its own entry replaced by a snapshot before it applied it). Trying again will
    /// not help; the effect of the call may stand.
    #[error("state store inconsistent with this replica")]
    StoreInconsistent(#[source] RedisStoreError),
    /// The engine answered a call with an outcome of another kind: a bug.
    #[error("{call} gave an unexpected outcome: {outcome}")]
    Unexpected {
        /// The call (`decide`, `status`, …).
        call: &'static str,
        /// The outcome, as `Debug` text.
        outcome: String,
    },
}

/// The store error behind [`GateError::StoreUnavailable`], from whichever store is in use.
#[derive(Debug, thiserror::Error)]
pub enum StoreFailure {
    /// The embedded store (redb) stopped committing.
    #[error(transparent)]
    Embedded(#[from] StoreError),
    /// Redis could not be reached or did not answer.
    #[error(transparent)]
    Redis(#[from] RedisStoreError),
}

impl GateError {
    /// Whether the store failed (not the request): the caller's change may not be recorded,
    /// and a webhook must be answered 503 so that WhatsApp sends it again.
    pub fn is_store(&self) -> bool {
        match self {
            GateError::StoreUnavailable(_)
            | GateError::StoreLost
            | GateError::StoreInconsistent(_) => true,
            GateError::Engine(_) | GateError::Item { .. } | GateError::Unexpected { .. } => false,
        }
    }
}

impl From<RedisStoreError> for GateError {
    /// Sorts a Redis error by what the caller can do about it.
    fn from(e: RedisStoreError) -> Self {
        match e {
            RedisStoreError::Lost => GateError::StoreLost,
            e if e.is_unavailable() => GateError::StoreUnavailable(e.into()),
            e => GateError::StoreInconsistent(e),
        }
    }
}

impl From<BatchError> for GateError {
    fn from(e: BatchError) -> Self {
        GateError::Item {
            index: e.index,
            error: e.error,
        }
    }
}

impl From<StoreError> for GateError {
    /// An embedded store error after start: a commit failed or the writer stopped.
    fn from(e: StoreError) -> Self {
        GateError::StoreUnavailable(e.into())
    }
}
