//! Campaign preflight (SPEC §2a): how much of a campaign fits now, when the rest can go, and
//! what binds it, before the first send.
//!
//! A plan is the decision order itself, run ahead of time on a copy of the org: each recipient
//! is decided in list order at the earliest time the rules allow, and a denial that time cures
//! (throughput, pair rate, a tier or reserve slot freeing, the weekly cap, a pause ending) moves
//! the copy's time to its retry-after. Because the copy runs the same code the live engine runs,
//! every rule that changes with time (a RED grace ending mid-campaign, an AIMD cut recovering, a
//! template pause ending) is taken into account as it will be, and a plan followed exactly meets
//! no denial (`tests/plan.rs` proves it on random orgs and campaigns). The live org is locked
//! only while it is copied, and is not changed.
//!
//! What a plan assumes (tiergate's interpretation, each the conservative reading):
//! * no upgrade: the tier rises when Meta says so, not because the plan would make the org
//!   eligible, so `policy.auto_upgrade` is off in a plan;
//! * nothing else is sent meanwhile: other traffic on the org makes the plan optimistic;
//! * a recipient held back from marketing (opted out, in an experiment, at the per-user limit)
//!   is skipped (`never`), not waited for: the list keeps its order and the campaign does not
//!   stall on one person;
//! * a campaign that cannot finish within `policy.plan_horizon_ms` (30 days) does not complete.

use crate::decision::{Category, DenyReason};
use crate::engine::Engine;
use crate::error::{EngineError, ValidationError};
use crate::org_state::{PlanTargets, Recipient};
use crate::validate;

/// Who a campaign goes to.
#[derive(Debug, Clone, Copy)]
pub enum Audience<'a> {
    /// These recipients, in this order: each a phone (wa_id digits) or a BSUID. Exact:
    /// recipients already in the window (or linked to one who is) cost no new slot.
    Recipients(&'a [&'a str]),
    /// This many recipients, none of them in the window yet.
    NewRecipients(u64),
}

/// A campaign to plan.
#[derive(Debug, Clone, Copy)]
pub struct PlanRequest<'a> {
    /// The org.
    pub org_id: &'a str,
    /// The number it sends from.
    pub phone_number_id: &'a str,
    /// The template.
    pub template_name: &'a str,
    /// The template's category (reserves and marketing rules depend on it).
    pub category: Category,
    /// The recipients.
    pub audience: Audience<'a>,
}

/// One step of a plan: the next `count` recipients go at `at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Wave {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// How many.
    pub count: u64,
}

/// How a campaign would go if sent now.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    /// When the plan was made (the org's time: never before any time it saw).
    pub planned_at_ms: u64,
    /// Recipients that may go now.
    pub allowed_now: u64,
    /// In time order; wave k takes the next `count` recipients (skipping `never`).
    pub waves: Vec<Wave>,
    /// When the last wave goes; `None` when the campaign cannot complete.
    pub completes_at_ms: Option<u64>,
    /// The rule that binds the campaign: the one that cannot be waited out when it does not
    /// complete, else the one whose waits add up to the most time; `None` when all go now.
    pub binding: Option<DenyReason>,
    /// Listed recipients already counted in the window when planned.
    pub already_counted: u64,
    /// Positions (0-based) of listed recipients that cannot be sent in this campaign.
    pub never: Vec<u32>,
    /// Recipients no wave holds because the campaign cannot complete.
    pub unplanned: u64,
    /// Milliseconds the campaign waits on each rule, in decision order (`DenyReason::ALL`).
    pub waited_ms: Vec<(DenyReason, u64)>,
}

impl Plan {
    /// Recipients the waves hold.
    pub fn planned(&self) -> u64 {
        self.waves.iter().map(|w| w.count).sum()
    }
}

impl Engine {
    /// Plans a campaign now. See [`Engine::plan_at`].
    pub fn plan(&self, req: &PlanRequest<'_>) -> Result<Plan, EngineError> {
        self.plan_at(req, self.clock().now_ms())
    }

    /// Plans a campaign at `now` without changing anything: every field is checked (the list
    /// item by item, named `recipients[i]`), the org is copied under its lock, and the copy is
    /// run forward in time. See the module's documentation for what a plan assumes.
    pub fn plan_at(&self, req: &PlanRequest<'_>, now: u64) -> Result<Plan, EngineError> {
        validate::org_id(req.org_id)?;
        let phone = validate::phone_key(req.phone_number_id)?;
        validate::template_name(req.template_name)?;
        let max = self.policy.plan_max_recipients;
        let targets = match req.audience {
            Audience::Recipients([]) => {
                return Err(ValidationError::new(
                    "recipients",
                    "must not be empty (or give audience_size instead)",
                )
                .into());
            }
            Audience::Recipients(list) if list.len() as u64 > max => {
                return Err(ValidationError::new(
                    "recipients",
                    format!("{} recipients; a plan takes at most {max}", list.len()),
                )
                .into());
            }
            Audience::Recipients(list) => PlanTargets::List(
                list.iter()
                    .enumerate()
                    .map(|(i, r)| {
                        Recipient::parse(r, None).map_err(|e| match e {
                            EngineError::Invalid(v) => v.on(format!("recipients[{i}]")).into(),
                            other => other,
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Audience::NewRecipients(0) => {
                return Err(ValidationError::new(
                    "audience_size",
                    "must be > 0 (or list the recipients instead)",
                )
                .into());
            }
            Audience::NewRecipients(n) if n > max => {
                return Err(ValidationError::new(
                    "audience_size",
                    format!("{n} recipients; a plan takes at most {max}"),
                )
                .into());
            }
            Audience::NewRecipients(n) => PlanTargets::New(n),
        };
        let (mut copy, slot) = self.registry.with_org(req.org_id, |st| {
            let slot = st.slot_of(req.phone_number_id, phone)?;
            Ok::<_, EngineError>((st.plan_copy(), slot))
        })??;
        let policy = crate::Policy {
            auto_upgrade: false,
            ..self.policy.clone()
        };
        Ok(copy.plan(
            &policy,
            slot,
            req.template_name,
            req.category,
            &targets,
            now,
        ))
    }
}
