//! Applying parsed webhook changes, each to the org whose id it names, through the [`Gate`]
//! like any admin change (so they are durable, or replicated, before the 200).
//!
//! What a change means is [`tiergate_webhook::Plan`]'s; this is only the asynchronous loop
//! around it: resolve the ids through the gate, apply the plan's facts through the gate, and
//! turn a store that cannot take them into [`Outcome::StoreUnavailable`] (answered 503).

use tiergate_webhook::plan::{self, Named, Plan};
use tiergate_webhook::{Outcome, Summary, parse};

use crate::gate::Gate;

/// Applies one change.
pub async fn apply_one(gate: &Gate, change: &parse::Change) -> Outcome {
    let mut named = None;
    for id in plan::ids(change) {
        if let Some(owner) = gate.lookup(id).await {
            named = Some(Named { id, owner });
            break;
        }
    }
    let engine = gate.engine();
    let mut plan = Plan::new(change, named, engine.policy(), engine.clock().now_ms());
    while let Some(fact) = plan.next_fact() {
        match gate.apply_unflushed(fact).await {
            Ok(answer) => plan.answered(&answer),
            Err(e) if e.is_store() => plan.store_unavailable(),
            Err(e) => plan.refused(e.to_string()),
        }
    }
    plan.outcome()
}

/// Applies every change; returns each outcome (for metrics) and the totals.
pub async fn apply(gate: &Gate, changes: &[parse::Change]) -> (Vec<Outcome>, Summary) {
    let mut summary = Summary::default();
    let mut outcomes = Vec::with_capacity(changes.len());
    for c in changes {
        let o = apply_one(gate, c).await;
        if let Outcome::Rejected(why) = &o {
            tracing::warn!(field = c.field(), why, "webhook change refused");
        }
        summary.add(&o);
        outcomes.push(o);
    }
    (outcomes, summary)
}
