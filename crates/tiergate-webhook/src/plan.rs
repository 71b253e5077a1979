//! From a parsed change to the engine facts it asks for, and from the engine's answers to the
//! change's [`Outcome`].
//!
//! A shell drives a change in two phases, neither of which waits inside this crate:
//!
//! 1. **Resolve.** [`ids`] lists the ids the change names, in the order they are consulted; the
//!    shell looks them up (the sidecar through its gate, which with Redis may first look for
//!    orgs other replicas registered) and stops at the first an org holds. [`resolve`] does
//!    this for a synchronous lookup.
//! 2. **Apply.** [`Plan::new`] maps the change, the org found, the policy and the time to the
//!    facts to apply. The shell takes them one at a time ([`Plan::next_fact`]), applies each
//!    (through the gate, or `Engine::execute_at`) and tells the plan what the engine answered;
//!    the plan judges the answer and decides whether the next fact still applies.
//!
//! The mapping holds WhatsApp's meaning of each field: a rating change comes before the limit
//! reported with it, and that limit is applied only if the rating was; a reported limit is a tier
//! request, so an increase still passes the escalation gate; a paused template is paused until
//! `now` plus the pause WhatsApp announced (or the policy's); a throughput upgrade raises the
//! number to the policy's ceiling.

use tiergate_core::{Fact, IdOwner, IdRef, Policy, QualityRating, Reaction};

use crate::fact;
use crate::outcome::Outcome;
use crate::parse::{self, QualityEvent, TemplateStatus};

/// The ids `change` names, in the order the mapping consults them. The first one an org holds
/// decides the change's org (a display number before its WABA, because it also names the number
/// a throughput upgrade raises), so a shell whose lookups cost something stops at the first hit.
/// An ignored field names none.
pub fn ids(change: &parse::Change) -> impl Iterator<Item = IdRef<'_>> {
    let (first, then) = match change {
        parse::Change::PhoneQuality {
            waba_id,
            display_phone_number,
            ..
        } => (
            Some(IdRef::DisplayNumber(display_phone_number)),
            Some(IdRef::Waba(waba_id)),
        ),
        parse::Change::Capability { waba_id, .. }
        | parse::Change::Account { waba_id, .. }
        | parse::Change::TemplateStatus { waba_id, .. }
        | parse::Change::TemplateQuality { waba_id, .. } => (Some(IdRef::Waba(waba_id)), None),
        parse::Change::SendError {
            phone_number_id, ..
        } => (Some(IdRef::PhoneNumberId(phone_number_id)), None),
        parse::Change::Ignored { .. } => (None, None),
    };
    first.into_iter().chain(then)
}

/// The org a change is about: the first of its [`ids`] an org holds, and who holds it. `None`
/// in its place means no org holds any of them, and the change is [`Outcome::UnknownId`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named<'a> {
    /// The id that resolved. Which kind it is matters: only a display number also names the
    /// number a throughput upgrade is for.
    pub id: IdRef<'a>,
    /// Who holds it, as the shell's lookup found it.
    pub owner: IdOwner,
}

/// Resolves `change`'s ids with a synchronous lookup (such as `Engine::lookup_id`), stopping at
/// the first an org holds, as [`ids`] allows. An asynchronous shell writes the same loop itself.
pub fn resolve<'a>(
    change: &'a parse::Change,
    mut lookup: impl FnMut(IdRef<'a>) -> Option<IdOwner>,
) -> Option<Named<'a>> {
    ids(change).find_map(|id| lookup(id).map(|owner| Named { id, owner }))
}

/// How the engine's answer to one fact is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judge {
    /// Any answer means the change took.
    Done,
    /// A tier request: applied, or held by the escalation gate.
    Tier,
    /// An error code: its reaction, unless it needed more than a status carries.
    Reaction,
}

impl Judge {
    fn judge(self, answer: &tiergate_core::Outcome) -> Outcome {
        match (self, answer) {
            (Judge::Done, _) => Outcome::Applied,
            (Judge::Tier, tiergate_core::Outcome::Tier(c)) if c.applied => Outcome::Applied,
            (Judge::Tier, _) => Outcome::Held,
            (Judge::Reaction, tiergate_core::Outcome::Reaction(Reaction::Incomplete)) => {
                Outcome::Rejected("needs more than a status carries".into())
            }
            (Judge::Reaction, tiergate_core::Outcome::Reaction(r)) => Outcome::Reacted(*r),
            (Judge::Reaction, _) => Outcome::Applied,
        }
    }
}

#[derive(Debug, Clone)]
struct Step {
    fact: Fact,
    judge: Judge,
}

impl Step {
    fn done(fact: Fact) -> Self {
        Step {
            fact,
            judge: Judge::Done,
        }
    }
}

/// One change's facts, applied in order by the shell: each only while every one before it was
/// [`Outcome::Applied`]. See the module docs for the loop.
#[derive(Debug, Clone)]
pub struct Plan {
    steps: std::vec::IntoIter<Step>,
    /// The judge of the fact handed out last, until the shell says what became of it.
    pending: Option<Judge>,
    outcome: Outcome,
}

impl Plan {
    /// Maps `change` to its facts. `named` is what resolving [`ids`] found, `policy` the engine's
    /// (a throughput upgrade raises a number to `max_throughput_mps`, a pause without a length
    /// lasts `template_pause_ms`), and `now` the engine's time, from which a pause runs.
    pub fn new(
        change: &parse::Change,
        named: Option<Named<'_>>,
        policy: &Policy,
        now: u64,
    ) -> Self {
        if let parse::Change::Ignored { .. } = change {
            return Self::settled(Outcome::Ignored);
        }
        let Some(named) = named else {
            return Self::settled(Outcome::UnknownId);
        };
        let org = named.owner.org_id.as_str();
        match change {
            parse::Change::Ignored { .. } => Self::settled(Outcome::Ignored),
            parse::Change::PhoneQuality {
                event,
                current_limit,
                ..
            } => {
                let mut steps = Vec::with_capacity(2);
                match event {
                    QualityEvent::Flagged => {
                        steps.push(Step::done(fact::rating(org, QualityRating::Red)));
                    }
                    QualityEvent::Unflagged => {
                        steps.push(Step::done(fact::rating(org, QualityRating::Green)));
                    }
                    QualityEvent::ThroughputUpgrade => {
                        let phone = match named.id {
                            IdRef::DisplayNumber(_) => named.owner.phone_number_id.as_deref(),
                            IdRef::Waba(_) | IdRef::PhoneNumberId(_) => None,
                        };
                        let Some(phone) = phone else {
                            return Self::settled(Outcome::UnknownId);
                        };
                        let mps = policy.max_throughput_mps;
                        steps.push(Step::done(fact::number_throughput(org, phone, mps)));
                    }
                    QualityEvent::Upgrade | QualityEvent::Downgrade | QualityEvent::Onboarding => {}
                }
                // The limit Meta reports is the truth; an increase still passes the gate.
                if let Some(t) = current_limit {
                    steps.push(Step {
                        fact: fact::tier_request(org, *t),
                        judge: Judge::Tier,
                    });
                }
                Self::steps(steps)
            }
            parse::Change::Capability { limit, .. } => Self::steps(vec![Step {
                fact: fact::tier_request(org, *limit),
                judge: Judge::Tier,
            }]),
            parse::Change::Account { restrict, .. } => match restrict {
                Some(r) => Self::steps(vec![Step::done(fact::account_restricted(org, *r))]),
                None => Self::settled(Outcome::Applied),
            },
            parse::Change::TemplateStatus {
                template_name,
                status,
                ..
            } => {
                let fact = match status {
                    TemplateStatus::Paused(ms) => {
                        let ms = ms.unwrap_or(policy.template_pause_ms);
                        fact::template_paused(org, template_name, Some(now.saturating_add(ms)))
                    }
                    TemplateStatus::Disabled => fact::template_paused(org, template_name, None),
                    TemplateStatus::Reinstated => fact::template_reinstated(org, template_name),
                    TemplateStatus::Other => return Self::settled(Outcome::Applied),
                };
                Self::steps(vec![Step::done(fact)])
            }
            // Noted only: WhatsApp pauses a template by a status update, which comes separately.
            parse::Change::TemplateQuality { .. } => Self::settled(Outcome::Applied),
            parse::Change::SendError {
                phone_number_id,
                recipient,
                code,
                ..
            } => Self::steps(vec![Step {
                fact: fact::feedback(org, phone_number_id, recipient.as_deref(), *code),
                judge: Judge::Reaction,
            }]),
        }
    }

    /// A change whose outcome is known without applying anything.
    fn settled(outcome: Outcome) -> Self {
        Plan {
            steps: Vec::new().into_iter(),
            pending: None,
            outcome,
        }
    }

    /// A change that takes if its facts do. An empty list is a change that needs nothing.
    fn steps(steps: Vec<Step>) -> Self {
        Plan {
            steps: steps.into_iter(),
            pending: None,
            outcome: Outcome::Applied,
        }
    }

    /// The next fact to apply, or `None` once the change is settled: every fact was applied, or
    /// one was not [`Outcome::Applied`] (a rating change that failed is not followed by the
    /// limit reported with it). After each fact, call [`Plan::answered`], [`Plan::refused`] or
    /// [`Plan::store_unavailable`].
    pub fn next_fact(&mut self) -> Option<Fact> {
        debug_assert!(self.pending.is_none(), "the last fact was not answered");
        if self.outcome != Outcome::Applied {
            return None;
        }
        let step = self.steps.next()?;
        self.pending = Some(step.judge);
        Some(step.fact)
    }

    /// The engine applied the last fact and answered `answer`.
    pub fn answered(&mut self, answer: &tiergate_core::Outcome) {
        if let Some(judge) = self.pending.take() {
            self.outcome = judge.judge(answer);
        }
    }

    /// The engine (or the shell's edge validation) refused the last fact; `reason` is logged.
    pub fn refused(&mut self, reason: impl Into<String>) {
        self.pending = None;
        self.outcome = Outcome::Rejected(reason.into());
    }

    /// The shell's store could not take the last fact: nothing after it is applied, and the
    /// change is [`Outcome::StoreUnavailable`] (the sidecar answers 503, WhatsApp retries).
    pub fn store_unavailable(&mut self) {
        self.pending = None;
        self.outcome = Outcome::StoreUnavailable;
    }

    /// What became of the change, once [`Plan::next_fact`] returned `None`.
    pub fn outcome(self) -> Outcome {
        self.outcome
    }
}
