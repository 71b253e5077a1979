//! Acknowledging only what is on disk.
//!
//! With the embedded store, a call that changed state waits until the store has committed every
//! fact handed to it so far (its own included) before answering. Calls that changed nothing
//! (denials, reads) do not wait.

use std::sync::Arc;

use tiergate_store::EmbeddedStore;
use tonic::Status;

/// The store to wait on, if any.
pub type Durable = Option<Arc<EmbeddedStore>>;

/// Waits until the changes made so far are durable.
pub async fn sync(store: &Durable) -> Result<(), Status> {
    match store {
        None => Ok(()),
        Some(s) => s.sync().await.map_err(|e| {
            tracing::error!(error = %e, "store unavailable");
            Status::unavailable(format!("state store: {e}"))
        }),
    }
}
