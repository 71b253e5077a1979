//! Batches of sends (SPEC §2a "Batches"): many decisions in one call, each exactly as a lone
//! [`Engine::decide`] would give it, in order.
//!
//! Every item is checked before any is decided (its fields, its org, its number), so a batch
//! with a malformed item or an unknown org fails whole and records nothing; the error names the
//! item (`sends[3].recipient`). Then the items are decided one after another at one `now`: the
//! same rules, idempotency keys, permits and facts as lone calls, so a batch equals its items
//! in sequence (the oracle test sends batches too).

use crate::decision::{Decision, SendRequest};
use crate::engine::Engine;
use crate::error::EngineError;

/// Why a batch was refused: which item, and its error. Nothing was decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sends[{index}]: {error}")]
pub struct BatchError {
    /// The item's position in the batch.
    pub index: usize,
    /// Its error; a field error names the item's field (`sends[3].recipient`).
    pub error: EngineError,
}

impl BatchError {
    /// Item `index`'s `error`, a field error renamed as the item's (`sends[3].recipient`).
    pub fn at(index: usize, error: EngineError) -> Self {
        let error = match error {
            EngineError::Invalid(v) => {
                let field = format!("sends[{index}].{}", v.field);
                EngineError::Invalid(v.on(field))
            }
            other => other,
        };
        BatchError { index, error }
    }
}

impl Engine {
    /// Checks every item of `sends` (fields, org, number) without deciding any: the first
    /// that fails refuses the batch. A replicated store asks this before it orders a batch.
    pub fn check_batch(&self, sends: &[SendRequest<'_>]) -> Result<(), BatchError> {
        for (i, send) in sends.iter().enumerate() {
            self.check_send(send).map_err(|e| BatchError::at(i, e))?;
        }
        Ok(())
    }

    /// Decides `sends` in order now. See [`Engine::decide_batch_at`].
    pub fn decide_batch(&self, sends: &[SendRequest<'_>]) -> Result<Vec<Decision>, BatchError> {
        self.decide_batch_at(sends, self.clock().now_ms())
    }

    /// Checks every item of `sends`, then decides them in order at `now`, as lone calls at
    /// `now` would be. An item refused after the check (its number removed by a concurrent
    /// `PutOrg` in between) fails the batch at that item; the items before it stand.
    pub fn decide_batch_at(
        &self,
        sends: &[SendRequest<'_>],
        now: u64,
    ) -> Result<Vec<Decision>, BatchError> {
        self.check_batch(sends)?;
        sends
            .iter()
            .enumerate()
            .map(|(i, send)| self.decide_at(send, now).map_err(|e| BatchError::at(i, e)))
            .collect()
    }
}
