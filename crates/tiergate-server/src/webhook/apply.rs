//! Applying parsed webhook changes, each to the org whose id it names, through the
//! [`Gate`] like any admin change (so they are durable, or replicated, before the 200).
//!
//! An upgrade arriving here passes the same escalation gate as any other tier increase.

use serde::Serialize;
use tiergate_core::{Fact, IdRef, QualityRating, Reaction, Tier};

use crate::error::GateError;
use crate::gate::Gate;

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
    /// The state store could not take it; the webhook is answered 503 so WhatsApp retries.
    StoreUnavailable,
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
            Outcome::StoreUnavailable => "store_unavailable",
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
            Outcome::Rejected(_) | Outcome::StoreUnavailable => self.rejected += 1,
        }
    }
}

fn failed(e: GateError) -> Outcome {
    if e.is_store() {
        Outcome::StoreUnavailable
    } else {
        Outcome::Rejected(e.to_string())
    }
}

async fn tier_change(gate: &Gate, org: &str, tier: Tier) -> Outcome {
    let fact = Fact::TierRequest {
        at: 0,
        org: org.to_owned(),
        tier,
    };
    match gate.apply_unflushed(fact).await {
        Ok(tiergate_core::Outcome::Tier(c)) if c.applied => Outcome::Applied,
        Ok(_) => Outcome::Held,
        Err(e) => failed(e),
    }
}

async fn done(gate: &Gate, fact: Fact) -> Outcome {
    match gate.apply_unflushed(fact).await {
        Ok(_) => Outcome::Applied,
        Err(e) => failed(e),
    }
}

/// Applies one change.
pub async fn apply_one(gate: &Gate, change: &Change) -> Outcome {
    let org_of = async |waba: &str| gate.lookup(IdRef::Waba(waba)).await.map(|o| o.org_id);
    match change {
        Change::Ignored { .. } => Outcome::Ignored,
        Change::PhoneQuality {
            waba_id,
            display_phone_number,
            event,
            current_limit,
        } => {
            let number = gate
                .lookup(IdRef::DisplayNumber(display_phone_number))
                .await;
            let org = match number.as_ref() {
                Some(n) => Some(n.org_id.clone()),
                None => org_of(waba_id).await,
            };
            let Some(org) = org else {
                return Outcome::UnknownId;
            };
            let rating = |rating| Fact::Rating {
                at: 0,
                org: org.clone(),
                rating,
            };
            let mut outcome = match event {
                QualityEvent::Flagged => done(gate, rating(QualityRating::Red)).await,
                QualityEvent::Unflagged => done(gate, rating(QualityRating::Green)).await,
                QualityEvent::ThroughputUpgrade => match number.and_then(|n| n.phone_number_id) {
                    Some(phone) => {
                        let fact = Fact::NumberThroughput {
                            at: 0,
                            org: org.clone(),
                            phone,
                            mps: gate.engine().policy().max_throughput_mps,
                        };
                        done(gate, fact).await
                    }
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
                outcome = tier_change(gate, &org, *t).await;
            }
            outcome
        }
        Change::Capability { waba_id, limit } => match org_of(waba_id).await {
            Some(org) => tier_change(gate, &org, *limit).await,
            None => Outcome::UnknownId,
        },
        Change::Account { waba_id, restrict } => match (org_of(waba_id).await, restrict) {
            (None, _) => Outcome::UnknownId,
            (Some(_), None) => Outcome::Applied,
            (Some(org), Some(r)) => {
                let fact = Fact::AccountRestricted {
                    at: 0,
                    org,
                    restricted: *r,
                };
                done(gate, fact).await
            }
        },
        Change::TemplateStatus {
            waba_id,
            template_name,
            status,
        } => {
            let Some(org) = org_of(waba_id).await else {
                return Outcome::UnknownId;
            };
            let now = gate.engine().clock().now_ms();
            let pause = |until| Fact::TemplatePaused {
                at: 0,
                org: org.clone(),
                template: template_name.clone(),
                until,
            };
            match status {
                TemplateStatus::Paused(ms) => {
                    let ms = ms.unwrap_or(gate.engine().policy().template_pause_ms);
                    done(gate, pause(Some(now + ms))).await
                }
                TemplateStatus::Disabled => done(gate, pause(None)).await,
                TemplateStatus::Reinstated => {
                    let fact = Fact::TemplateReinstated {
                        at: 0,
                        org: org.clone(),
                        template: template_name.clone(),
                    };
                    done(gate, fact).await
                }
                TemplateStatus::Other => Outcome::Applied,
            }
        }
        Change::TemplateQuality { waba_id, .. } => match org_of(waba_id).await {
            Some(_) => Outcome::Applied,
            None => Outcome::UnknownId,
        },
        Change::SendError {
            phone_number_id,
            recipient,
            code,
            ..
        } => {
            let Some(owner) = gate.lookup(IdRef::PhoneNumberId(phone_number_id)).await else {
                return Outcome::UnknownId;
            };
            let fact = Fact::Feedback {
                at: 0,
                org: owner.org_id,
                phone: Some(phone_number_id.clone()),
                recipient: recipient.clone(),
                template: None,
                code: *code,
            };
            match gate.apply_unflushed(fact).await {
                Ok(tiergate_core::Outcome::Reaction(Reaction::Incomplete)) => {
                    Outcome::Rejected("needs more than a status carries".into())
                }
                Ok(tiergate_core::Outcome::Reaction(r)) => Outcome::Reacted(r),
                Ok(_) => Outcome::Applied,
                Err(e) => failed(e),
            }
        }
    }
}

/// Applies every change; returns each outcome (for metrics) and the totals.
pub async fn apply(gate: &Gate, changes: &[Change]) -> (Vec<Outcome>, Summary) {
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
