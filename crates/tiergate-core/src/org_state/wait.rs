//! One try of a waiting send, under the org's lock (see `crate::wait` and `crate::wait_queue`).

use crate::decision::Decision;
use crate::policy::Policy;
use crate::wait::{Next, WaitStep, WaitTicket};
use crate::wait_queue::{Blocked, Hold, Want, rank};

use super::{CheckedSend, OrgState};

impl OrgState {
    /// Decides `send` for the waiter of `ticket` at `now` (an advanced time):
    ///
    /// 1. a waiter ahead that wants what this send would take goes first: [`Next::Behind`]
    ///    (answered at once with the denial when that one is not due before the wait ends);
    /// 2. otherwise the send is decided as a lone call would be; allowed, or denied for a
    ///    reason the wait does not cure (no retry-after, or one past the wait), it is answered
    ///    ([`Next::Answer`]) and leaves the queue;
    /// 3. denied for a reason time cures within the wait, it keeps (or takes) its place:
    ///    [`Next::Retry`].
    ///
    /// A new waiter the queue has no room for is decided as a lone call and answered.
    pub(crate) fn decide_waiting(
        &mut self,
        policy: &Policy,
        send: CheckedSend<'_>,
        ticket: WaitTicket,
        now: u64,
    ) -> WaitStep {
        self.waiters.expire(now);
        let id = ticket.id;
        let known = self.waiters.get(id).map(|w| w.until);
        let room = known.is_some() || self.waiters.len() < ticket.capacity as usize;
        let until = known.unwrap_or_else(|| now.saturating_add(ticket.max_wait_ms));
        let cures = |d: &Decision| {
            !d.is_allowed()
                && d.reason.is_some()
                && d.retry_after_ms > 0
                && now.saturating_add(d.retry_after_ms) <= until
        };
        // Rules 3–8b take nothing: a denial the wait does not cure is the answer at once.
        let standing = self.standing_rules(policy, &send, now);
        if let Err(d) = &standing
            && (!room || !cures(d))
        {
            return self.answer(id, d.clone(), now);
        }
        if !room {
            // No room to wait: decided as a lone call.
            let d = match standing {
                Ok(passed) => self.rate_rules_and_record(policy, send, passed, now),
                Err(d) => d,
            };
            return self.answer(id, d, now);
        }
        let r = rank(send.category);
        let person = send.recipient.0;
        let w = self.window_of(policy, send.slot);
        let new_recipient = !self.windows[w].lookup(send.recipient).is_member();
        let hold = |blocked, reason, due| Hold {
            blocked,
            reason,
            due,
            window: w as u16,
            new_recipient,
        };

        // 1. someone ahead goes first
        if !self.waiters.is_empty() {
            let want = Want {
                slot: send.slot,
                person,
                template: send.template_name,
                window: w as u16,
                new_recipient,
            };
            let (usage, _) = self.standing(policy, w, now);
            // The slots this send's category may still take (its share, under reserves).
            let reserves = self.config.reserves(policy);
            let free_slots = usage.tier_limit.map(|limit| {
                reserves
                    .share(send.category, limit)
                    .saturating_sub(self.windows[w].len())
            });
            let key = self.waiters.key_of(id, r);
            if let Some(ahead) = self.waiters.ahead(key, id, &want, free_slots) {
                let (waiter, reason, blocked) = (ahead.id, ahead.reason, ahead.blocked.clone());
                let after_ms = ahead.due.saturating_sub(now);
                let decision = Decision::deny(reason, after_ms.max(1), usage);
                let due = now.saturating_add(after_ms);
                if due > until {
                    // It cannot go before the one ahead, which cannot go before its due: the
                    // wait cannot suffice.
                    return self.answer(id, decision, now);
                }
                let before = self
                    .waiters
                    .hold(id, r, until, hold(blocked.clone(), reason, due));
                return WaitStep {
                    at: now,
                    decision,
                    wake_followers: before.is_some_and(|b| b != blocked),
                    next: Next::Behind {
                        waiter,
                        after_ms,
                        blocked,
                    },
                };
            }
        }

        // 2. its own turn: the rates, and the record when they pass
        let (template, slot) = (send.template_name, send.slot);
        let decision = match standing {
            Ok(passed) => self.rate_rules_and_record(policy, send, passed, now),
            Err(d) => d,
        };
        match decision.reason {
            Some(reason) if cures(&decision) => {
                // 3. wait for it
                let blocked = Blocked::of(reason, slot, person, template);
                let after_ms = decision.retry_after_ms;
                let before =
                    self.waiters
                        .hold(id, r, until, hold(blocked.clone(), reason, now + after_ms));
                WaitStep {
                    at: now,
                    decision,
                    next: Next::Retry { after_ms },
                    wake_followers: before.is_some_and(|b| b != blocked),
                }
            }
            _ => self.answer(id, decision, now),
        }
    }

    /// The answer to waiter `id`: it leaves the queue (if it was in it).
    fn answer(&mut self, id: u64, decision: Decision, now: u64) -> WaitStep {
        WaitStep {
            at: now,
            wake_followers: self.waiters.remove(id),
            decision,
            next: Next::Answer,
        }
    }

    /// Ends waiter `id`'s wait. Returns whether it was waiting.
    pub(crate) fn unwait(&mut self, id: u64, now: u64) -> bool {
        self.waiters.expire(now);
        self.waiters.remove(id)
    }

    /// What waiter `id` is blocked on, if it still waits.
    pub(crate) fn waiter_blocked(&self, id: u64) -> Option<Blocked> {
        self.waiters.get(id).map(|w| w.blocked.clone())
    }

    /// How many sends wait.
    pub(crate) fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// Ends every wait.
    pub(crate) fn clear_waiters(&mut self) {
        self.waiters.clear();
    }
}
