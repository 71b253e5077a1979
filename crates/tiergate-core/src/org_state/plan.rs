//! A campaign run forward on a copy of the org: the simulation behind [`crate::Engine::plan`].

use crate::decision::{Category, DenyReason};
use crate::plan::{Plan, Wave};
use crate::policy::Policy;
use crate::validate::RecipientKey;

use super::{CheckedSend, OrgState, Recipient};

/// Who a plan sends to, parsed.
#[derive(Debug)]
pub(crate) enum PlanTargets {
    /// These recipients, in order.
    List(Vec<Recipient>),
    /// This many new recipients.
    New(u64),
}

impl PlanTargets {
    fn len(&self) -> u64 {
        match self {
            PlanTargets::List(v) => v.len() as u64,
            PlanTargets::New(n) => *n,
        }
    }
}

/// Keys of the made-up recipients of an `audience_size` plan: bit 62 set, bit 63 clear. A phone's
/// key is below 2⁵¹ and an unlinked BSUID's has bit 63 set, so none is ever in a window.
const NEW_RECIPIENT_BASE: u64 = 1 << 62;

impl OrgState {
    /// A copy of everything a decision reads, for a plan to spend. What only reports, replays
    /// and webhooks read (permits, idempotency keys, deliveries, appeals) is left empty: a plan
    /// sends without keys and reports nothing.
    pub(crate) fn plan_copy(&self) -> OrgState {
        OrgState {
            id: self.id.clone(),
            config: self.config.clone(),
            phones: self.phones.clone(),
            phone_index: self.phone_index.clone(),
            first_phone: self.first_phone,
            windows: self.windows.clone(),
            log: self.log.clone(),
            pair: self.pair.clone(),
            ledger: Default::default(),
            idem: Default::default(),
            pending_tier: self.pending_tier,
            flagged_since: self.flagged_since,
            account_restricted: self.account_restricted,
            paused: self.paused.clone(),
            pair_backoff: self.pair_backoff.clone(),
            marketing_block: self.marketing_block.clone(),
            appeals: Default::default(),
            appeals_filed: self.appeals_filed,
            sends_total: self.sends_total,
            last_now: self.last_now,
            marketing_api_required: self.marketing_api_required,
            limit_reduced: self.limit_reduced,
            pacing_held_at: self.pacing_held_at,
            upgrade_eligible_since: self.upgrade_eligible_since,
            upgrade_at: self.upgrade_at,
            deliveries: Default::default(),
            links: self.links.clone(),
            // A plan assumes nothing else is sent meanwhile, waiters included.
            waiters: Default::default(),
        }
    }

    /// Runs the campaign on this (copied) org from `now`: each recipient is decided in order at
    /// the earliest time the rules allow, waiting out every denial that time cures, up to
    /// `policy.plan_horizon_ms`.
    pub(crate) fn plan(
        &mut self,
        policy: &Policy,
        slot: u16,
        template_name: &str,
        category: Category,
        targets: &PlanTargets,
        now: u64,
    ) -> Plan {
        let mut t = self.advance(now);
        let start = t;
        let horizon = start.saturating_add(policy.plan_horizon_ms);
        let mut plan = Plan {
            planned_at_ms: start,
            ..Plan::default()
        };
        let mut waited = [0u64; DenyReason::ALL.len()];

        if let PlanTargets::List(list) = targets {
            let w = self.window_of(policy, slot);
            self.windows[w].expire(t.saturating_sub(policy.tier_window_ms));
            let window = &self.windows[w];
            plan.already_counted = list
                .iter()
                .filter(|to| window.lookup(self.person(to)).is_member())
                .count() as u64;
        }

        let n = targets.len();
        'campaign: for i in 0..n {
            let to = match targets {
                PlanTargets::List(list) => list[i as usize],
                PlanTargets::New(_) => Recipient::anonymous(RecipientKey(NEW_RECIPIENT_BASE | i)),
            };
            loop {
                let send = CheckedSend {
                    slot,
                    recipient: self.person(&to),
                    to,
                    template_name,
                    category,
                    idempotency_key: None,
                };
                let d = self.decide(policy, send, t);
                let Some(reason) = d.reason.filter(|_| !d.is_allowed()) else {
                    match plan.waves.last_mut() {
                        Some(w) if w.at_ms == t => w.count += 1,
                        _ => plan.waves.push(Wave { at_ms: t, count: 1 }),
                    }
                    break;
                };
                if reason == DenyReason::RecipientMarketingLimit {
                    plan.never.push(i as u32);
                    break;
                }
                let retry = d.retry_after_ms;
                if retry == 0 || t.saturating_add(retry) > horizon {
                    plan.binding = Some(reason);
                    plan.unplanned = n - i;
                    break 'campaign;
                }
                waited[reason_index(reason)] += retry;
                t = self.advance(t + retry);
            }
        }

        plan.allowed_now = plan
            .waves
            .first()
            .filter(|w| w.at_ms == start)
            .map_or(0, |w| w.count);
        plan.waited_ms = DenyReason::ALL
            .iter()
            .zip(waited)
            .filter(|(_, ms)| *ms > 0)
            .map(|(r, ms)| (*r, ms))
            .collect();
        if plan.unplanned == 0 {
            plan.completes_at_ms = Some(plan.waves.last().map_or(start, |w| w.at_ms));
            // The rule waited on longest (the first in decision order on a tie).
            plan.binding = plan
                .waited_ms
                .iter()
                .rev()
                .max_by_key(|(_, ms)| *ms)
                .map(|(r, _)| *r);
        }
        plan
    }
}

fn reason_index(r: DenyReason) -> usize {
    DenyReason::ALL.iter().position(|&x| x == r).unwrap_or(0)
}
