//! Applying parsed webhook changes to the engine, each to the org whose id it names.
//!
//! An upgrade arriving here passes the same escalation gate as any other tier increase.

use serde::Serialize;
use tiergate_core::{Engine, IdRef, QualityRating, Reaction};

use super::parse::{Change, QualityEvent, TemplateStatus};

/// What became of one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The org's state changed (or was confirmed).
    Applied,
    /// An error code was applied; its reaction.
    Reacted(Reaction),
    /// A tier increase was held: the org has no escalation path.
    Held,
    /// No org holds the id the change names.
    UnknownId,
    /// A field the governor does not use.
    Ignored,
    /// The org refused it (e.g. a template name Meta would not issue).
    Rejected(String),
}

impl Outcome {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied | Outcome::Reacted(_) => "applied",
            Outcome::Held => "held",
            Outcome::UnknownId => "unknown_id",
            Outcome::Ignored => "ignored",
            Outcome::Rejected(_) => "rejected",
        }
    }
}

/// Counts of outcomes, returned to the caller as JSON.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Changes applied.
    pub applied: usize,
    /// Tier increases held for an escalation path.
    pub held: usize,
    /// Changes naming no known org.
    pub unknown_id: usize,
    /// Fields not used by the governor.
    pub ignored: usize,
    /// Changes the org refused.
    pub rejected: usize,
}

impl Summary {
    fn add(&mut self, o: &Outcome) {
        match o {
            Outcome::Applied | Outcome::Reacted(_) => self.applied += 1,
            Outcome::Held => self.held += 1,
            Outcome::UnknownId => self.unknown_id += 1,
            Outcome::Ignored => self.ignored += 1,
            Outcome::Rejected(_) => self.rejected += 1,
        }
    }
}

fn tier_change(engine: &Engine, org: &str, tier: tiergate_core::Tier) -> Outcome {
    match engine.request_tier_change(org, tier) {
        Ok(c) if c.applied => Outcome::Applied,
        Ok(_) => Outcome::Held,
        Err(e) => Outcome::Rejected(e.to_string()),
    }
}

fn done<T, E: std::fmt::Display>(r: Result<T, E>) -> Outcome {
    match r {
        Ok(_) => Outcome::Applied,
        Err(e) => Outcome::Rejected(e.to_string()),
    }
}

/// Applies one change.
pub fn apply_one(engine: &Engine, change: &Change) -> Outcome {
    let org_of = |waba: &str| engine.lookup_id(IdRef::Waba(waba)).map(|o| o.org_id);
    match change {
        Change::Ignored { .. } => Outcome::Ignored,
        Change::PhoneQuality {
            waba_id,
            display_phone_number,
            event,
            current_limit,
        } => {
            let number = engine.lookup_id(IdRef::DisplayNumber(display_phone_number));
            let Some(org) = number
                .as_ref()
                .map(|n| n.org_id.clone())
                .or_else(|| org_of(waba_id))
            else {
                return Outcome::UnknownId;
            };
            let mut outcome = match event {
                QualityEvent::Flagged => done(engine.set_quality_rating(&org, QualityRating::Red)),
                QualityEvent::Unflagged => {
                    done(engine.set_quality_rating(&org, QualityRating::Green))
                }
                QualityEvent::ThroughputUpgrade => match number.and_then(|n| n.phone_number_id) {
                    Some(p) => done(engine.set_number_throughput(
                        &org,
                        &p,
                        engine.policy().max_throughput_mps,
                    )),
                    None => Outcome::UnknownId,
                },
                QualityEvent::Upgrade | QualityEvent::Downgrade | QualityEvent::Onboarding => {
                    Outcome::Applied
                }
            };
            // The limit Meta reports is the truth; an increase still passes the gate.
            if outcome == Outcome::Applied
                && let Some(t) = current_limit
            {
                outcome = tier_change(engine, &org, *t);
            }
            outcome
        }
        Change::Capability { waba_id, limit } => match org_of(waba_id) {
            Some(org) => tier_change(engine, &org, *limit),
            None => Outcome::UnknownId,
        },
        Change::Account { waba_id, restrict } => match (org_of(waba_id), restrict) {
            (None, _) => Outcome::UnknownId,
            (Some(_), None) => Outcome::Applied,
            (Some(org), Some(r)) => done(engine.set_account_restricted(&org, *r)),
        },
        Change::TemplateStatus {
            waba_id,
            template_name,
            status,
        } => {
            let Some(org) = org_of(waba_id) else {
                return Outcome::UnknownId;
            };
            let now = engine.clock().now_ms();
            match status {
                TemplateStatus::Paused(ms) => {
                    let ms = ms.unwrap_or(engine.policy().template_pause_ms);
                    done(engine.pause_template(&org, template_name, Some(now + ms)))
                }
                TemplateStatus::Disabled => done(engine.pause_template(&org, template_name, None)),
                TemplateStatus::Reinstated => done(engine.reinstate_template(&org, template_name)),
                TemplateStatus::Other => Outcome::Applied,
            }
        }
        Change::TemplateQuality { waba_id, .. } => match org_of(waba_id) {
            Some(_) => Outcome::Applied,
            None => Outcome::UnknownId,
        },
        Change::SendError {
            phone_number_id,
            recipient,
            code,
            ..
        } => {
            let Some(owner) = engine.lookup_id(IdRef::PhoneNumberId(phone_number_id)) else {
                return Outcome::UnknownId;
            };
            match engine.feedback(
                &owner.org_id,
                Some(phone_number_id),
                recipient.as_deref(),
                None,
                *code,
            ) {
                Ok(Reaction::Incomplete) => {
                    Outcome::Rejected("needs more than a status carries".into())
                }
                Ok(r) => Outcome::Reacted(r),
                Err(e) => Outcome::Rejected(e.to_string()),
            }
        }
    }
}

/// Applies every change; returns each outcome (for metrics) and the totals.
pub fn apply(engine: &Engine, changes: &[Change]) -> (Vec<Outcome>, Summary) {
    let mut summary = Summary::default();
    let outcomes: Vec<Outcome> = changes
        .iter()
        .map(|c| {
            let o = apply_one(engine, c);
            if let Outcome::Rejected(why) = &o {
                tracing::warn!(field = c.field(), why, "webhook change refused");
            }
            summary.add(&o);
            o
        })
        .collect();
    (outcomes, summary)
}
