//! One org's live state, guarded by one mutex in the engine.
//!
//! Everything a decision reads or writes for an org lives here, so one lock acquisition makes a
//! decision atomic: two threads racing for the last slot of a tier are serialised and only one
//! wins. Memory is bounded by the tier (windows, send log) and by explicit per-org capacities
//! (permits, idempotency keys, pauses, appeals).

use std::collections::VecDeque;

use hashbrown::HashMap;

use crate::appeal::Appeal;
use crate::backoff::Backoffs;
use crate::decision::Usage;
use crate::deliveries::Deliveries;
use crate::error::ValidationError;
use crate::escalation::EscalationPath;
use crate::idempotency::IdempotencyCache;
use crate::links::Links;
use crate::number::PhoneSlot;
use crate::org::{MAX_PHONE_NUMBERS, NumberStatus, OrgConfig, OrgStatus, TemplatePause};
use crate::permit_ledger::PermitLedger;
use crate::policy::{Policy, TierScope};
use crate::quality::QualityRating;
use crate::rate::PairRate;
use crate::reserve::CategoryFill;
use crate::send_log::SendLog;
use crate::wait_queue::WaitQueue;
use crate::window::Windows;

mod appeals;
mod apply;
mod decide;
mod feedback;
mod numbers;
mod people;
mod plan;
mod snapshot;
mod tier_change;
mod wait;

pub(crate) use decide::{CheckedSend, SendFields};
pub use feedback::Reaction;
pub(crate) use feedback::{
    ERR_ACCOUNT_BLOCKED, ERR_ACCOUNT_LOCKED, ERR_BSUID_UNSUPPORTED, ERR_LIMIT_REDUCED,
    ERR_MAINTENANCE, ERR_MARKETING_API_REQUIRED, ERR_MARKETING_CAP, ERR_MARKETING_EXPERIMENT,
    ERR_MARKETING_OPT_OUT, ERR_PAIR_RATE, ERR_SPAM_RATE, ERR_TEMPLATE_DISABLED,
    ERR_TEMPLATE_PAUSED, ERR_THROUGHPUT,
};
pub(crate) use people::Recipient;
pub(crate) use plan::PlanTargets;
pub use snapshot::OrgSnapshot;
pub use tier_change::TierChange;

/// Paused or disabled templates tracked per org.
pub const MAX_PAUSED_TEMPLATES: usize = 1_024;
/// Phone slots per org, counting numbers that were removed (their windows live on until they
/// empty, so a removed number cannot be re-added to dodge its window).
const MAX_PHONE_SLOTS: usize = 2 * MAX_PHONE_NUMBERS;

/// One org's state. Its fields are its own: the engine changes it only through its methods
/// (one [`OrgState::apply`] for every [`crate::Change`]), and its topics live in child modules.
///
/// `repr(C)` keeps the fields in the order written: what every decision reads first, what
/// only some sends or admin calls read after. A decision on a cold org then touches a run of
/// adjacent cache lines that the hardware fetches in pairs, instead of lines scattered over
/// the whole struct (issue #16).
#[derive(Debug)]
#[repr(C)]
pub(crate) struct OrgState {
    // Read by every decision.
    last_now: u64,
    sends_total: u64,
    /// Slot 0's key while it is active: most orgs send from one number, and finding it here
    /// spares a decision on a cold org a dependent cache miss before anything else can start
    /// (issue #16); the slot itself is then read together with the other cold lines.
    first_phone: Option<u128>,
    phones: Vec<PhoneSlot>,
    windows: Windows,
    log: SendLog,
    ledger: PermitLedger,
    pair: PairRate,
    config: OrgConfig,
    id: compact_str::CompactString,
    paused: HashMap<Box<str>, Option<u64>, foldhash::fast::RandomState>,
    /// Pairs backed off after error 131056, by (phone slot, recipient).
    pair_backoff: Backoffs<(u16, u64)>,
    /// Recipients not to market to (131050) or to back off (131049).
    marketing_block: Backoffs<u64>,
    flagged_since: Option<u64>,
    /// Templates in the weekly window that make the org eligible for the next rung: `None` at
    /// an unlimited tier or the top rung. Follows the tier (set with it, in `resize_log`), so a
    /// decision does not walk the ladder.
    upgrade_at: Option<u64>,
    /// Since when the org meets Meta's upgrade conditions (reported, not acted on by default).
    upgrade_eligible_since: Option<u64>,
    account_restricted: bool,
    /// Meta disabled the org's marketing on the Cloud API (131063) until an admin clears it.
    marketing_api_required: bool,
    /// Meta reduced the limit (131064): the restricted tier applies until Meta's next limit.
    limit_reduced: bool,
    // Read by some sends (keys, BSUIDs, many numbers, waiting) and by webhooks and admin calls.
    phone_index: HashMap<u128, u16, foldhash::fast::RandomState>,
    idem: IdempotencyCache,
    /// BSUID (its 63-bit key) → the person key it counts under (see `people.rs`).
    links: Links,
    /// Sends waiting for what time frees (SPEC §2a "Waiting"); empty unless callers wait.
    waiters: WaitQueue,
    pending_tier: Option<crate::tier::Tier>,
    /// The last send Meta held for quality assessment (portfolio pacing).
    pacing_held_at: Option<u64>,
    /// Webhook deliveries applied (redeliveries change nothing).
    deliveries: Deliveries,
    appeals: VecDeque<Appeal>,
    appeals_filed: u64,
}

impl OrgState {
    /// A new org from a validated config.
    pub(crate) fn new(config: OrgConfig, policy: &Policy, now: u64) -> Self {
        let mut st = OrgState {
            id: compact_str::CompactString::from(config.org_id.as_str()),
            pair: PairRate::new(policy.pair_rate_period_ms, policy.pair_rate_burst),
            phones: Vec::new(),
            phone_index: HashMap::default(),
            first_phone: None,
            windows: Windows::default(),
            log: SendLog::default(),
            ledger: PermitLedger::default(),
            idem: IdempotencyCache::default(),
            pending_tier: None,
            flagged_since: (config.quality_rating == QualityRating::Red).then_some(now),
            account_restricted: false,
            paused: HashMap::default(),
            pair_backoff: Backoffs::default(),
            marketing_block: Backoffs::default(),
            appeals: VecDeque::new(),
            appeals_filed: 0,
            sends_total: 0,
            last_now: now,
            marketing_api_required: false,
            limit_reduced: false,
            pacing_held_at: None,
            upgrade_eligible_since: None,
            upgrade_at: None,
            deliveries: Deliveries::default(),
            links: Links::default(),
            waiters: WaitQueue::default(),
            config,
        };
        let phones = std::mem::take(&mut st.config.phone_numbers);
        st.set_phones(phones, policy);
        st.resize_log(policy);
        st
    }

    /// Time as this org sees it: never earlier than any time it saw before, so its windows stay
    /// ordered even if the wall clock steps back. Every call that reaches the org passes its
    /// time through here first, under the org's lock, and uses only the result.
    #[inline]
    pub(crate) fn advance(&mut self, now: u64) -> u64 {
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    /// The latest time the org has seen: where an observer that must not move its clock reads
    /// it (metrics of a replica, snapshots).
    pub(crate) fn last_now(&self) -> u64 {
        self.last_now
    }

    fn has_history(&self) -> bool {
        self.config.has_template_history || self.sends_total > 0
    }

    /// The window a send from phone `slot` counts in.
    #[inline]
    fn window_of(&self, policy: &Policy, slot: u16) -> usize {
        match policy.tier_scope {
            TierScope::Org => 0,
            TierScope::PhoneNumber => slot as usize,
        }
    }

    /// Whether the quality restriction is in force: RED for at least the grace period.
    fn is_restricted(&self, policy: &Policy, now: u64) -> bool {
        self.config.quality_rating == QualityRating::Red
            && self
                .flagged_since
                .is_some_and(|f| now >= f.saturating_add(policy.red_grace_ms))
    }

    /// The log must answer every threshold the policy asks about for the current tier, and the
    /// upgrade threshold follows the tier. Called whenever the tier is set.
    fn resize_log(&mut self, policy: &Policy) {
        self.upgrade_at = match (
            self.config.tier.limit(),
            policy.ladder.next_above(self.config.tier),
        ) {
            (Some(limit), Some(_)) => Some(policy.upgrade_threshold(limit)),
            _ => None,
        };
        // Eligibility is reported even when the engine does not act on it.
        let upgrade = self
            .config
            .tier
            .limit()
            .map_or(0, |l| policy.upgrade_threshold(l));
        let max = policy
            .small_sender_weekly_limit
            .max(policy.weekly_cap_without_escalation)
            .max(upgrade);
        self.log.set_max_threshold(max);
    }

    /// Applies a new config to an existing org. The caller validated it; tier increases pass
    /// the same escalation gate as every other increase.
    fn update(&mut self, mut cfg: OrgConfig, policy: &Policy, now: u64) {
        let phones = std::mem::take(&mut cfg.phone_numbers);
        self.set_phones(phones, policy);
        self.config.waba_ids = cfg.waba_ids;
        self.config.has_template_history = cfg.has_template_history;
        self.config.reserve_authentication_percent = cfg.reserve_authentication_percent;
        self.config.reserve_utility_percent = cfg.reserve_utility_percent;
        match cfg.escalation_path {
            Some(p) => self.set_escalation_path(p, policy),
            None => self.config.escalation_path = None,
        }
        self.set_quality_rating(cfg.quality_rating, now);
        self.change_tier(cfg.tier, policy);
    }

    /// Sets a validated path; a held tier increase is applied at once.
    fn set_escalation_path(&mut self, path: EscalationPath, policy: &Policy) {
        self.config.escalation_path = Some(path);
        if let Some(p) = self.pending_tier.take()
            && p > self.config.tier
        {
            self.config.tier = p;
            self.resize_log(policy);
        }
    }

    /// Removes the escalation path (later increases are held again).
    fn clear_escalation_path(&mut self) {
        self.config.escalation_path = None;
    }

    /// Blocks or unblocks the whole account (rule 3).
    fn set_account_restricted(&mut self, restricted: bool) {
        self.account_restricted = restricted;
    }

    /// A rating change. Turning RED starts the grace period; leaving RED ends the flag.
    fn set_quality_rating(&mut self, rating: QualityRating, now: u64) {
        if rating == QualityRating::Red {
            if self.config.quality_rating != QualityRating::Red || self.flagged_since.is_none() {
                self.flagged_since = Some(now);
            }
        } else {
            self.flagged_since = None;
        }
        self.config.quality_rating = rating;
    }

    /// Pauses `template` until `until` (`None`: disabled until reinstated).
    fn pause_template(
        &mut self,
        template: &str,
        until: Option<u64>,
        now: u64,
    ) -> Result<(), ValidationError> {
        self.paused.retain(|_, u| u.is_none_or(|u| u > now));
        if self.paused.len() >= MAX_PAUSED_TEMPLATES && !self.paused.contains_key(template) {
            return Err(ValidationError::new(
                "template_name",
                format!("this org already has {MAX_PAUSED_TEMPLATES} paused templates"),
            ));
        }
        self.paused.insert(template.into(), until);
        Ok(())
    }

    /// Sets or clears "marketing only through the Marketing Messages API" (131063 / an admin).
    fn set_marketing_api_required(&mut self, required: bool) {
        self.marketing_api_required = required;
    }

    /// Notes a send Meta held for quality assessment (portfolio pacing). Held sends stay counted
    /// as sent: Meta releases them in batches or fails them (132015), which arrives on its own.
    fn note_pacing_hold(&mut self, now: u64) {
        self.pacing_held_at = Some(now);
    }

    /// Whether the org is under portfolio pacing review at `now`.
    fn pacing_review(&self, policy: &Policy, now: u64) -> bool {
        self.pacing_held_at
            .is_some_and(|at| now < at.saturating_add(policy.pacing_review_ms))
    }

    /// Lifts a template's pause or disable.
    fn reinstate_template(&mut self, template: &str) {
        self.paused.remove(template);
    }

    /// Brings every window and log up to `now`.
    fn expire_all(&mut self, policy: &Policy, now: u64) {
        self.windows
            .expire_all(now.saturating_sub(policy.tier_window_ms));
        self.log.expire(now.saturating_sub(policy.weekly_window_ms));
        self.idem
            .expire(now.saturating_sub(policy.idempotency_ttl_ms));
        self.ledger.expire(now.saturating_sub(policy.permit_ttl_ms));
        self.paused.retain(|_, u| u.is_none_or(|u| u > now));
    }

    /// Usage as the next send to window `w` would see it, and whether the quality restriction
    /// applies to that send (RED past its grace and not a small sender).
    fn standing(&self, policy: &Policy, w: usize, now: u64) -> (Usage, bool) {
        let cutoff7 = now.saturating_sub(policy.weekly_window_ms);
        let passthrough = !self.log.at_least(policy.small_sender_weekly_limit, cutoff7);
        let red_past_grace = self.is_restricted(policy, now);
        let restricted = red_past_grace && !passthrough;
        // 131064: Meta itself set a lower limit; small senders do not pass through it.
        let tier = if restricted || self.limit_reduced {
            policy
                .ladder
                .step_down(self.config.tier, policy.restricted_tier_steps)
        } else {
            self.config.tier
        };
        let usage = Usage {
            tier,
            tier_limit: policy.with_headroom(tier.limit()),
            unique_recipients_24h: self.windows[w].len(),
            templates_7d: self.log.count(cutoff7),
            quality_rating: self.config.quality_rating,
            passthrough,
            restricted: red_past_grace,
        };
        (usage, restricted)
    }

    /// What `GetOrg` shows at `now` (an advanced time).
    pub(crate) fn status(&mut self, policy: &Policy, now: u64) -> OrgStatus {
        self.expire_all(policy, now);
        self.track_upgrade(policy, now, false);
        let fullest = self.windows.fullest();
        let mut paused: Vec<TemplatePause> = self
            .paused
            .iter()
            .map(|(k, v)| TemplatePause {
                template_name: k.to_string(),
                until_ms: *v,
            })
            .collect();
        paused.sort_by(|a, b| a.template_name.cmp(&b.template_name));
        OrgStatus {
            config: self.config.clone(),
            has_template_history: self.has_history(),
            pending_tier: self.pending_tier,
            restricted: self.is_restricted(policy, now),
            flagged_since_ms: self.flagged_since,
            account_restricted: self.account_restricted,
            usage: self.standing(policy, fullest, now).0,
            appeal: self.appeals.back().cloned(),
            paused_templates: paused,
            numbers: self
                .phones
                .iter()
                .filter(|p| p.active)
                .map(|p| NumberStatus {
                    phone_number_id: p.config.phone_number_id.clone(),
                    effective_mps: p.effective_mps(policy, now),
                    paused_until_ms: Some(p.paused_until()).filter(|&u| u > now),
                })
                .collect(),
            pair_backoffs: self.pair_backoff.live(now),
            marketing_blocked_recipients: self.marketing_block.live(now),
            upgrade_eligible: self.upgrade_eligible_since.is_some(),
            upgrade_eligible_since_ms: self.upgrade_eligible_since,
            marketing_api_required: self.marketing_api_required,
            limit_reduced: self.limit_reduced,
            pacing_review: self.pacing_review(policy, now),
            pacing_held_at_ms: self.pacing_held_at,
            reserves: self.config.reserves(policy),
            fill: CategoryFill::from_classes(self.windows[fullest].class_counts()),
        }
    }
}
