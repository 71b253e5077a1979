//! Applying parsed webhook changes, each to the org whose id it names, through the [`Gate`]
//! like any admin change (so they are durable, or replicated, before the 200).
//!
//! What a change means is [`tiergate_webhook::Plan`]'s; this is only the asynchronous loop
//! around it: resolve the ids through the gate, apply the plan's facts through the gate, and
//! turn a store that cannot take them into [`Outcome::StoreUnavailable`] (answered 503).
//!
//! Each change's delivery key is the first fact its plan hands out, so a redelivery that the
//! org (or, with Redis, any replica) already applied stops there as [`Outcome::Duplicate`].
//! With Redis the key and the change are separate commands: a store that fails between them
//! leaves the key recorded and the change not, and Meta's retry is then a duplicate (closing
//! that needs the two in one replicated command, in the core).

use tiergate_webhook::plan::{self, Named, Plan};
use tiergate_webhook::{Outcome, Summary, parse};

use crate::gate::Gate;

/// Applies one change.
pub async fn apply_one(gate: &Gate, parsed: &parse::Parsed) -> Outcome {
    let mut named = None;
    for id in plan::ids(&parsed.change) {
        if let Some(owner) = gate.lookup(id).await {
            named = Some(Named { id, owner });
            break;
        }
    }
    let engine = gate.engine();
    let mut plan = Plan::new(parsed, named, engine.policy(), engine.clock().now_ms());
    while let Some(fact) = plan.next_fact() {
        match gate.apply_unflushed(fact).await {
            Ok(answer) => plan.answered(&answer),
            Err(e) if e.is_store() => plan.store_unavailable(),
            Err(e) => plan.refused(e.to_string()),
        }
    }
    plan.outcome()
}

/// Applies every change; returns each outcome (for metrics) and the totals. A change that was
/// refused or could not be read is logged with its reason (the rest still apply).
pub async fn apply(gate: &Gate, changes: &[parse::Parsed]) -> (Vec<Outcome>, Summary) {
    let mut summary = Summary::default();
    let mut outcomes = Vec::with_capacity(changes.len());
    for c in changes {
        let o = apply_one(gate, c).await;
        match &o {
            Outcome::Rejected(why) => {
                tracing::warn!(field = c.change.field(), why, "webhook change refused");
            }
            Outcome::Unreadable(why) => {
                tracing::warn!(field = c.change.field(), why, "webhook change unreadable");
            }
            Outcome::Duplicate => {
                tracing::debug!(field = c.change.field(), key = %c.key, "webhook redelivery");
            }
            _ => {}
        }
        summary.add(&o);
        outcomes.push(o);
    }
    (outcomes, summary)
}
