//! The engine's errors. A denial is *not* an error (it is a [`crate::Decision`]); these are the
//! calls that could not be decided at all, each mapped by the sidecar to one gRPC status.

use std::borrow::Cow;

use thiserror::Error;

/// Input that failed validation at the edge: which field, and why. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    /// The offending field, named as in the gRPC contract (`recipient`, `path.contact`, or an
    /// item of a list: `recipients[17]`).
    pub field: Cow<'static, str>,
    /// A sentence a caller can act on.
    pub reason: String,
}

impl ValidationError {
    /// A validation error on `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field: Cow::Borrowed(field),
            reason: reason.into(),
        }
    }

    /// The same error on another field: an item of a list is named by its position
    /// (`recipients[17]`), where the item's own parser knew only `recipient`.
    pub fn on(self, field: String) -> Self {
        Self {
            field: Cow::Owned(field),
            reason: self.reason,
        }
    }
}

/// Why an engine call could not be carried out. State is unchanged whenever one is returned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EngineError {
    /// Malformed input (gRPC `INVALID_ARGUMENT`).
    #[error("invalid argument: {0}")]
    Invalid(#[from] ValidationError),
    /// No org with this id is registered (gRPC `NOT_FOUND`). No state was created for it.
    #[error("unknown org {0:?}")]
    UnknownOrg(String),
    /// The org exists but has no such phone number (gRPC `NOT_FOUND`).
    #[error("org {org_id:?} has no phone number {phone_number_id:?}")]
    UnknownPhoneNumber {
        /// The org.
        org_id: String,
        /// The phone number id that was asked for.
        phone_number_id: String,
    },
    /// The permit is unknown, or so old that its record was dropped (gRPC `NOT_FOUND`).
    #[error("unknown or expired permit {0:?}")]
    UnknownPermit(String),
    /// The permit's outcome was already reported (gRPC `FAILED_PRECONDITION`): reporting twice
    /// must not refund twice.
    #[error("permit {0:?} was already reported")]
    PermitAlreadyReported(String),
    /// No appeal with this id (gRPC `NOT_FOUND`).
    #[error("unknown appeal {0:?}")]
    UnknownAppeal(String),
    /// The appeal was already resolved, or another one is pending (gRPC `FAILED_PRECONDITION`).
    #[error("{0}")]
    AppealConflict(String),
    /// An invariant of the engine broke: a change was answered with an outcome of another kind.
    /// A bug, reported instead of panicking (gRPC `INTERNAL`); the change may have been applied.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// A policy that cannot be used: which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("policy.{key}: {reason}")]
pub struct PolicyError {
    /// The policy key, as written in the TOML file.
    pub key: &'static str,
    /// Why the value is refused.
    pub reason: String,
}
