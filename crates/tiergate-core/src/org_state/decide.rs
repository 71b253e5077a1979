//! The decision order of SPEC §2, applied to one org under its lock, and the undo of a send
//! that never reached WhatsApp.
//!
//! The first rule that denies wins. Rules 1–2 (malformed input, unknown org or number) are
//! errors raised by the engine before it gets here; rules 3–10 are below, in order; rule 11
//! records the send, in the same critical section as the decision.

use crate::decision::{
    Category, Decision, DenyReason, Permit, SendOutcome, SendRequest, Usage, Verdict,
};
use crate::error::EngineError;
use crate::permit_ledger::{NotReportable, PermitRecord};
use crate::policy::Policy;
use crate::reserve;
use crate::validate::{self, RecipientKey};

use crate::window::{Found, Touch};

use super::{OrgState, Reaction, Recipient};

/// A send whose fields were validated and whose phone number was found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckedSend<'a> {
    pub(crate) slot: u16,
    /// The person the send counts under (window entry, pair cell, marketing blocks).
    pub(crate) recipient: RecipientKey,
    /// The ids the send named, so an allowed send teaches the org which ids are one person.
    pub(crate) to: Recipient,
    pub(crate) template_name: &'a str,
    pub(crate) category: Category,
    pub(crate) idempotency_key: Option<&'a str>,
}

/// What a send that passed rules 3–8b carries to the rates and the record: its window, what
/// the window holds of its recipient, and the usage it was judged with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Passed {
    w: usize,
    found: Found,
    usage: Usage,
}

/// A request's fields, checked (rule 1) before its org is locked: its number's key and its
/// recipient's ids, parsed once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendFields {
    phone: u128,
    to: Recipient,
}

impl SendFields {
    /// Checks every field of `req`, the org id first.
    pub(crate) fn check(req: &SendRequest<'_>) -> Result<Self, EngineError> {
        validate::org_id(req.org_id)?;
        let phone = validate::phone_key(req.phone_number_id)?;
        let to = Recipient::parse(req.recipient, req.recipient_user_id)?;
        validate::template_name(req.template_name)?;
        if let Some(k) = req.idempotency_key {
            validate::idempotency_key(k)?;
        }
        Ok(SendFields { phone, to })
    }
}

impl<'a> CheckedSend<'a> {
    /// Finds the number of a request whose `fields` were checked in `st` (rule 2). Decisions,
    /// pre-checks and replays all come through here, so a send is validated one way.
    pub(crate) fn find(
        st: &OrgState,
        req: &SendRequest<'a>,
        fields: SendFields,
    ) -> Result<Self, EngineError> {
        Ok(CheckedSend {
            slot: st.slot_of(req.phone_number_id, fields.phone)?,
            recipient: st.person(&fields.to),
            to: fields.to,
            template_name: req.template_name,
            category: req.category,
            idempotency_key: req.idempotency_key,
        })
    }
}

impl OrgState {
    /// Brings what a send reads up to `now` (an advanced time): its window, the weekly log,
    /// permits and, when the send has a key, idempotency keys. Returns the window and the weekly
    /// cutoff.
    fn catch_up(&mut self, policy: &Policy, send: &CheckedSend<'_>, now: u64) -> (usize, u64) {
        let w = self.window_of(policy, send.slot);
        let cutoff7 = now.saturating_sub(policy.weekly_window_ms);
        self.windows[w].expire(now.saturating_sub(policy.tier_window_ms));
        self.log.expire(cutoff7);
        self.ledger.expire(now.saturating_sub(policy.permit_ttl_ms));
        if send.idempotency_key.is_some() {
            self.idem
                .expire(now.saturating_sub(policy.idempotency_ttl_ms));
        }
        (w, cutoff7)
    }

    /// Decides one send at `now` (an advanced time) and records it when allowed.
    pub(crate) fn decide(&mut self, policy: &Policy, send: CheckedSend<'_>, now: u64) -> Decision {
        match self.standing_rules(policy, &send, now) {
            Ok(passed) => self.rate_rules_and_record(policy, send, passed, now),
            Err(d) => d,
        }
    }

    /// Rules 3–8b at `now` (an advanced time): everything but the rates, which take their cell
    /// when they pass. `Err` is the answer (a denial, or the first answer to a replayed
    /// idempotency key); nothing is taken either way, so a waiting send may ask this and then
    /// step back behind another waiter.
    #[inline(always)]
    pub(crate) fn standing_rules(
        &mut self,
        policy: &Policy,
        send: &CheckedSend<'_>,
        now: u64,
    ) -> Result<Passed, Decision> {
        // On a cold org each of these is a cache miss (issue #16); asked for together here they
        // overlap with each other and with the window's, instead of each stalling in its turn.
        std::hint::black_box((
            self.phones[send.slot as usize].paused_until(),
            self.ledger.touch_tail(),
            self.log.touch_tail(),
            self.pair.touch(send.slot, send.recipient.0),
        ));
        let (w, cutoff7) = self.catch_up(policy, send, now);
        // The window's lookup is three dependent misses on a cold org (index group, index slot,
        // node). It is made as soon as the window has expired, so that the rules below run
        // while it is on its way; nothing before rule 7 changes the window, so it stays valid.
        let found = self.windows[w].lookup(send.recipient);
        if let Some(key) = send.idempotency_key {
            if let Some(first) = self.idem.get(key) {
                return Err(Decision {
                    replayed: true,
                    ..first.clone()
                });
            }
        }
        self.track_upgrade(policy, now, true);

        let (usage, restricted) = self.standing(policy, w, now);
        let deny = |reason, retry_after_ms| Decision::deny(reason, retry_after_ms, usage);

        // 3. account or number blocked
        if self.account_restricted {
            return Err(deny(DenyReason::AccountRestricted, 0));
        }
        let paused_until = self.phones[send.slot as usize].paused_until();
        if paused_until > now {
            return Err(deny(DenyReason::AccountRestricted, paused_until - now));
        }
        // 4. template paused or disabled
        if !self.paused.is_empty()
            && let Some(&until) = self.paused.get(send.template_name)
        {
            match until {
                None => return Err(deny(DenyReason::TemplatePaused, 0)),
                Some(u) if u > now => return Err(deny(DenyReason::TemplatePaused, u - now)),
                Some(_) => {
                    self.paused.remove(send.template_name);
                }
            }
        }
        // 4b. marketing to a recipient who opted out or hit the per-user cap
        if send.category == Category::Marketing
            && let Some(until) = self.marketing_block.until(&send.recipient.0, now)
        {
            let retry = if until >= u64::MAX / 4 {
                0
            } else {
                until - now
            };
            return Err(deny(DenyReason::RecipientMarketingLimit, retry));
        }
        // 4c. marketing that Meta wants sent through the Marketing Messages API (131063)
        if send.category == Category::Marketing && self.marketing_api_required {
            return Err(deny(DenyReason::MarketingApiRequired, 0));
        }
        let no_path = self.config.escalation_path.is_none();
        // 5. no escalation path and no template ever sent
        if no_path && !self.has_history() {
            return Err(deny(DenyReason::EscalationPathRequired, 0));
        }
        // 6. no escalation path and this send would pass the weekly cap
        let cap = policy.weekly_cap_without_escalation;
        if no_path && self.log.at_least(cap, cutoff7) {
            let retry = self.log.until_fewer_than(cap, now, policy.weekly_window_ms);
            return Err(deny(DenyReason::WeeklyCapWithoutEscalation, retry));
        }
        // 7 and 8. a new recipient against the effective (maybe restricted) tier
        let window = &self.windows[w];
        debug_assert_eq!(
            found,
            window.lookup(send.recipient),
            "rules 3–6 must not change the window"
        );
        if let Some(limit) = usage.tier_limit
            && window.len() >= limit
            && !found.is_member()
        {
            // When the window holds more than the limit (a reduced or restricted tier), a slot
            // frees only once the excess has left, not when the oldest does; at the limit this
            // is the oldest (O(1)).
            let retry = window
                .below_at(limit)
                .map_or(0, |t| (t + policy.tier_window_ms).saturating_sub(now));
            let reason = if restricted {
                DenyReason::QualityRestricted
            } else {
                DenyReason::TierLimit
            };
            return Err(deny(reason, retry));
        }
        // 8b. a new recipient of a category over its share of the effective tier (SPEC §2a)
        if let Some(limit) = usage.tier_limit
            && !found.is_member()
            && send.category != Category::Authentication
        {
            let reserves = self.config.reserves(policy);
            if !reserves.is_none() {
                let share = reserves.share(send.category, limit);
                if window.len() >= share {
                    let retry = window
                        .below_at(share)
                        .map_or(0, |t| (t + policy.tier_window_ms).saturating_sub(now));
                    return Err(deny(DenyReason::CategoryReserve, retry));
                }
            }
        }
        Ok(Passed { w, found, usage })
    }

    /// Rules 9–11 for a send that passed [`OrgState::standing_rules`]: the rates (each takes
    /// its cell when it passes), then the send is recorded.
    #[inline(always)]
    pub(crate) fn rate_rules_and_record(
        &mut self,
        policy: &Policy,
        send: CheckedSend<'_>,
        passed: Passed,
        now: u64,
    ) -> Decision {
        let Passed { w, found, usage } = passed;
        let deny = |reason, retry_after_ms| Decision::deny(reason, retry_after_ms, usage);
        // 9. throughput of the number (at its AIMD rate after a 130429)
        if let Err(ms) = self.phones[send.slot as usize].check_throughput(policy, now) {
            return deny(DenyReason::Throughput, ms);
        }
        // 10. pair rate, and WhatsApp's own back-off after a 131056
        if let Some(until) = self.pair_backoff.until(&(send.slot, send.recipient.0), now) {
            return deny(DenyReason::PairRate, until - now);
        }
        if let Err(ms) = self.pair.check(send.slot, send.recipient.0, now) {
            return deny(DenyReason::PairRate, ms);
        }
        // 11. allow, and record
        let class = reserve::class_of(send.category);
        self.record(policy, send, class, w, found, usage, now)
    }

    /// Counts a send that was allowed before (a replayed fact) without judging it again; the
    /// GCRA cells it used are taken again. Returns the permit's sequence number.
    /// `class` is the window class its slot is shown under (see `reserve::class_of`).
    pub(crate) fn restore(
        &mut self,
        policy: &Policy,
        send: CheckedSend<'_>,
        class: u8,
        now: u64,
    ) -> u64 {
        let (w, _) = self.catch_up(policy, &send, now);
        self.track_upgrade(policy, now, true);
        let (usage, _) = self.standing(policy, w, now);
        // The send was allowed once; a cell it finds taken now (a replay may see a rate the
        // original did not, e.g. after a config change) does not undo it, so the answers are
        // deliberately not used.
        let _ = self.phones[send.slot as usize].check_throughput(policy, now);
        let _ = self.pair.check(send.slot, send.recipient.0, now);
        let found = self.windows[w].lookup(send.recipient);
        let d = self.record(policy, send, class, w, found, usage, now);
        d.permit.map_or(0, |p| p.seq)
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        policy: &Policy,
        send: CheckedSend<'_>,
        class: u8,
        w: usize,
        found: Found,
        mut usage: Usage,
        now: u64,
    ) -> Decision {
        let prev_ts = match self.windows[w].touch_found(send.recipient, found, now, class) {
            Touch::New => None,
            Touch::Refreshed { prev_ts } => Some(prev_ts),
        };
        self.log.push(now);
        self.sends_total += 1;
        self.learn(&send.to, send.recipient, policy.recipient_links_capacity);
        let seq = self.ledger.push(
            PermitRecord {
                at: now,
                recipient: send.recipient,
                prev_ts,
                window: w as u16,
                slot: send.slot,
            },
            send.idempotency_key,
            policy.permit_capacity,
        );
        // Tier and pass-through stay as judged for this send; the counts now include it.
        usage.unique_recipients_24h = self.windows[w].len();
        usage.templates_7d += 1;
        let decision = Decision {
            verdict: Verdict::Allow,
            reason: None,
            retry_after_ms: 0,
            permit: Some(Permit {
                org_id: self.id.clone(),
                seq,
            }),
            usage,
            replayed: false,
        };
        if let Some(key) = send.idempotency_key {
            self.idem
                .insert(key, now, decision.clone(), policy.idempotency_capacity);
        }
        decision
    }

    /// Records the outcome of permit `seq`. NOT_SENT gives back the window slot and the counts.
    pub(super) fn report(
        &mut self,
        policy: &Policy,
        seq: u64,
        outcome: SendOutcome,
        now: u64,
    ) -> Result<Reaction, EngineError> {
        self.ledger.expire(now.saturating_sub(policy.permit_ttl_ms));
        let org_id = self.id.clone();
        let permit = || Permit { org_id, seq }.to_string();
        let rec = match self.ledger.report(seq) {
            Err(NotReportable::Unknown) => return Err(EngineError::UnknownPermit(permit())),
            Err(NotReportable::AlreadyReported) => {
                return Err(EngineError::PermitAlreadyReported(permit()));
            }
            Ok(r) => r,
        };
        match outcome {
            SendOutcome::Sent => return Ok(Reaction::None),
            SendOutcome::Rejected { error_code } => {
                let r = self.feedback(
                    policy,
                    Some(rec.slot),
                    Some(rec.recipient),
                    None,
                    error_code,
                    now,
                );
                return Ok(r);
            }
            SendOutcome::NotSent => {}
        }
        let cutoff = now.saturating_sub(policy.tier_window_ms);
        let undone =
            self.windows[rec.window as usize].undo(rec.recipient, rec.at, rec.prev_ts, cutoff);
        if !undone {
            self.ledger.relink_after_undo(seq, &rec);
        }
        self.log.remove(rec.at);
        self.sends_total = self.sends_total.saturating_sub(1);
        if let Some(key) = self.ledger.key_of(seq) {
            self.idem.forget(key, seq);
        }
        Ok(Reaction::None)
    }
}
