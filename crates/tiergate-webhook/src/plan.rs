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
//! **Redeliveries apply once.** A change that asks for any fact asks first for
//! `WebhookDelivery` with its [`parse::DeliveryKey`]; the org answers whether it applied that
//! key before, and a change it did is [`Outcome::Duplicate`] with nothing after it. The memory
//! is the org's own (bounded, journaled, replicated), so a restart or another replica drops the
//! same redelivery. A change that applies nothing (an ignored field, an unknown id, a status
//! without errors, `TIER_NOT_SET`) spends no key: there is nothing to repeat, and keying every
//! delivered status would fill the org's memory and the journal for nothing.
//!
//! The mapping holds WhatsApp's meaning of each field: a rating change comes before the limit
//! reported with it, and that limit is applied only if the rating was; a reported limit is a tier
//! request, so an increase still passes the escalation gate; a paused template is paused until
//! `now` plus the pause WhatsApp announced (or the policy's); a throughput upgrade raises the
//! number to the policy's ceiling; a send held for quality assessment marks the org as under
//! pacing review; an error code is fed back with the recipient's phone when the status names
//! one.

use tiergate_core::{Fact, IdOwner, IdRef, Policy, QualityRating, Reaction};

use crate::fact;
use crate::outcome::Outcome;
use crate::parse::{self, QualityEvent, TemplateStatus};

/// The ids `change` names, in the order the mapping consults them. The first one an org holds
/// decides the change's org (a display number before its WABA, because it also names the number
/// a throughput upgrade raises), so a shell whose lookups cost something stops at the first hit.
/// A change applied to no org (ignored, unreadable, a BSUID link) names none.
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
        }
        | parse::Change::PacingHeld {
            phone_number_id, ..
        } => (Some(IdRef::PhoneNumberId(phone_number_id)), None),
        // A person's ids are the org's that owns the number the notification came for (or,
        // without one, its WABA's).
        parse::Change::RecipientIds {
            waba_id,
            phone_number_id,
            ..
        }
        | parse::Change::UserIdUpdate {
            waba_id,
            phone_number_id,
            ..
        } => (
            phone_number_id.as_deref().map(IdRef::PhoneNumberId),
            Some(IdRef::Waba(waba_id)),
        ),
        // Applied to no org, so no lookup is spent on them.
        parse::Change::Ignored { .. } | parse::Change::Unreadable { .. } => (None, None),
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
    /// The delivery key: the first time, the change goes on; again, it is a duplicate.
    Delivery,
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
            (Judge::Delivery, tiergate_core::Outcome::Delivery { first: true }) => Outcome::Applied,
            (Judge::Delivery, tiergate_core::Outcome::Delivery { first: false }) => {
                Outcome::Duplicate
            }
            (Judge::Delivery, _) => {
                Outcome::Rejected("the engine did not answer the delivery key".into())
            }
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
/// [`Outcome::Applied`], the delivery key first. See the module docs for the loop.
#[derive(Debug, Clone)]
pub struct Plan {
    steps: std::vec::IntoIter<Step>,
    /// The judge of the fact handed out last, until the shell says what became of it.
    pending: Option<Judge>,
    outcome: Outcome,
    /// The org whose delivery key must go first, until [`Plan::new`] puts it there.
    org: Option<String>,
}

impl Plan {
    /// Maps a parsed change to its facts, its delivery key first (see the module docs). `named`
    /// is what resolving [`ids`] of `parsed.change` found, `policy` the engine's (a throughput
    /// upgrade raises a number to `max_throughput_mps`, a pause without a length lasts
    /// `template_pause_ms`), and `now` the engine's time, from which a pause runs.
    pub fn new(
        parsed: &parse::Parsed,
        named: Option<Named<'_>>,
        policy: &Policy,
        now: u64,
    ) -> Self {
        let mut plan = Self::map(&parsed.change, named, policy, now);
        if let Some(org) = plan.org.take() {
            // Nothing else of the change applies unless the org has not applied it before.
            let key = Step {
                fact: fact::delivery(&org, parsed.key.as_str()),
                judge: Judge::Delivery,
            };
            let steps: Vec<Step> = std::iter::once(key).chain(plan.steps).collect();
            plan.steps = steps.into_iter();
        }
        plan
    }

    /// The change's own facts, without the delivery key.
    fn map(change: &parse::Change, named: Option<Named<'_>>, policy: &Policy, now: u64) -> Self {
        if let Some(outcome) = Self::for_no_org(change) {
            return Self::settled(outcome);
        }
        let Some(named) = named else {
            return Self::settled(Outcome::UnknownId);
        };
        let org = named.owner.org_id.as_str();
        let plan = |steps: Vec<Step>| Self::steps(org, steps);
        match change {
            parse::Change::Ignored { .. } | parse::Change::Unreadable { .. } => {
                Self::settled(Self::for_no_org(change).unwrap_or(Outcome::Ignored))
            }
            // From now on the org counts the person once, whichever id a send uses.
            parse::Change::RecipientIds {
                wa_id,
                user_id,
                parent_user_id,
                ..
            } => {
                let users: Vec<String> = user_id.iter().chain(parent_user_id).cloned().collect();
                match wa_id {
                    Some(phone) if !users.is_empty() => {
                        Self::idempotent(vec![Step::done(fact::recipient_ids(org, phone, users))])
                    }
                    // Two BSUIDs without a phone: nothing a send keys by yet; noted.
                    _ => Self::settled(Outcome::Ignored),
                }
            }
            parse::Change::UserIdUpdate {
                previous, current, ..
            } => Self::idempotent(vec![Step::done(fact::user_id_changed(
                org, previous, current,
            ))]),
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
                plan(steps)
            }
            parse::Change::Capability { limit, .. } => match limit {
                Some(limit) => plan(vec![Step {
                    fact: fact::tier_request(org, *limit),
                    judge: Judge::Tier,
                }]),
                // TIER_NOT_SET, or no messaging limit in the update: no tier to ask for.
                None => Self::settled(Outcome::Ignored),
            },
            parse::Change::Account { restrict, .. } => match restrict {
                Some(r) => plan(vec![Step::done(fact::account_restricted(org, *r))]),
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
                plan(vec![Step::done(fact)])
            }
            // Noted only: WhatsApp pauses a template by a status update, which comes separately.
            parse::Change::TemplateQuality { .. } => Self::settled(Outcome::Applied),
            // The recipient is the phone (`recipient_id`) when the status gives one, else its
            // BSUID (`recipient_user_id`): the core counts both as the same person once linked.
            parse::Change::SendError {
                phone_number_id,
                recipient,
                recipient_user_id,
                code,
                ..
            } => {
                let to = recipient.as_deref().or(recipient_user_id.as_deref());
                plan(vec![Step {
                    fact: fact::feedback(org, phone_number_id, to, *code),
                    judge: Judge::Reaction,
                }])
            }
            parse::Change::PacingHeld { .. } => plan(vec![Step::done(fact::pacing_held(org))]),
        }
    }

    /// The outcome of a change applied to no org, whatever its ids name.
    fn for_no_org(change: &parse::Change) -> Option<Outcome> {
        match change {
            parse::Change::Ignored { .. } => Some(Outcome::Ignored),
            parse::Change::Unreadable { why, .. } => Some(Outcome::Unreadable(why.clone())),
            _ => None,
        }
    }

    /// A change whose outcome is known without applying anything.
    fn settled(outcome: Outcome) -> Self {
        Plan {
            steps: Vec::new().into_iter(),
            pending: None,
            outcome,
            org: None,
        }
    }

    /// A change that takes if its facts do. An empty list is a change that needs nothing (and
    /// so no delivery key); otherwise `org`'s key goes first ([`Plan::new`]).
    fn steps(org: &str, steps: Vec<Step>) -> Self {
        Plan {
            org: (!steps.is_empty()).then(|| org.to_owned()),
            steps: steps.into_iter(),
            pending: None,
            outcome: Outcome::Applied,
        }
    }

    /// A change whose facts are idempotent (learning that ids are one person): applying a
    /// redelivery again changes nothing, so no delivery key is spent on it. Statuses pair ids on
    /// every delivery, and a key for each would fill the org's delivery memory and journal.
    fn idempotent(steps: Vec<Step>) -> Self {
        Plan {
            org: None,
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
