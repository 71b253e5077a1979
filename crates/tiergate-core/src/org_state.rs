//! One org's live state, guarded by one mutex in the engine.
//!
//! Everything a decision reads or writes for an org lives here, so one lock acquisition makes a
//! decision atomic: two threads racing for the last slot of a tier are serialised and only one
//! wins. Memory is bounded by the tier (windows, send log) and by explicit per-org capacities
//! (permits, idempotency keys, pauses, appeals).

use std::collections::VecDeque;
use std::sync::Arc;

use hashbrown::HashMap;

use crate::appeal::{Appeal, AppealId, AppealStatus};
use crate::clock::DecisionClock;
use crate::decision::Usage;
use crate::error::{EngineError, ValidationError};
use crate::escalation::EscalationPath;
use crate::feedback::{Backoffs, NumberFeedback};
use crate::idempotency::IdempotencyCache;
use crate::org::{
    MAX_PHONE_NUMBERS, NumberStatus, OrgConfig, OrgStatus, PhoneNumberConfig, TemplatePause,
};
use crate::permit_ledger::PermitLedger;
use crate::policy::{Policy, TierScope};
use crate::quality::QualityRating;
use crate::rate::{PairRate, Throughput};
use crate::send_log::SendLog;
use crate::validate;
use crate::window::RecipientWindow;

/// Appeals kept per org (the newest).
const APPEALS_KEPT: usize = 8;
/// Paused or disabled templates tracked per org.
pub const MAX_PAUSED_TEMPLATES: usize = 1_024;
/// Phone slots per org, counting numbers that were removed (their windows live on until they
/// empty, so a removed number cannot be re-added to dodge its window).
const MAX_PHONE_SLOTS: usize = 2 * MAX_PHONE_NUMBERS;

/// An org's windows: the first inline (it is the only one in `org` scope, and a decision should
/// not chase a pointer to reach it), more for `phone_number` scope.
#[derive(Debug, Default)]
pub(crate) struct Windows {
    first: RecipientWindow,
    rest: Vec<RecipientWindow>,
}

impl Windows {
    /// Each window's (recipient, last send), oldest first: what a snapshot keeps.
    pub(crate) fn entries(&self) -> Vec<Vec<(u64, u64)>> {
        self.iter()
            .map(|w| w.iter().map(|(k, t)| (k.0, t)).collect())
            .collect()
    }

    /// Windows holding `entries` (from a snapshot); at least one.
    pub(crate) fn from_entries(entries: &[Vec<(u64, u64)>]) -> Self {
        let mut ws = entries.iter().map(|list| {
            let mut w = RecipientWindow::new();
            for &(k, t) in list {
                w.touch(crate::validate::RecipientKey(k), t);
            }
            w
        });
        Windows {
            first: ws.next().unwrap_or_default(),
            rest: ws.collect(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        1 + self.rest.len()
    }

    /// Grows to at least `n` windows.
    pub(crate) fn ensure(&mut self, n: usize) {
        if n > self.len() {
            self.rest.resize_with(n - 1, RecipientWindow::new);
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &RecipientWindow> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut RecipientWindow> {
        std::iter::once(&mut self.first).chain(self.rest.iter_mut())
    }
}

impl std::ops::Index<usize> for Windows {
    type Output = RecipientWindow;

    #[inline]
    fn index(&self, i: usize) -> &RecipientWindow {
        if i == 0 {
            &self.first
        } else {
            &self.rest[i - 1]
        }
    }
}

impl std::ops::IndexMut<usize> for Windows {
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut RecipientWindow {
        if i == 0 {
            &mut self.first
        } else {
            &mut self.rest[i - 1]
        }
    }
}

#[derive(Debug)]
pub(crate) struct PhoneSlot {
    /// [`validate::phone_key`] of the id.
    pub(crate) key: u128,
    pub(crate) config: PhoneNumberConfig,
    pub(crate) active: bool,
    pub(crate) throughput: Throughput,
    pub(crate) feedback: NumberFeedback,
}

#[derive(Debug)]
pub(crate) struct OrgState {
    pub(crate) id: Arc<str>,
    pub(crate) config: OrgConfig,
    pub(crate) phones: Vec<PhoneSlot>,
    pub(crate) phone_index: HashMap<u128, u16, foldhash::fast::RandomState>,
    pub(crate) windows: Windows,
    pub(crate) log: SendLog,
    pub(crate) pair: PairRate,
    pub(crate) ledger: PermitLedger,
    pub(crate) idem: IdempotencyCache,
    pub(crate) pending_tier: Option<crate::tier::Tier>,
    pub(crate) flagged_since: Option<u64>,
    pub(crate) account_restricted: bool,
    pub(crate) paused: HashMap<Box<str>, Option<u64>, foldhash::fast::RandomState>,
    /// Pairs backed off after error 131056, by (phone slot, recipient).
    pub(crate) pair_backoff: Backoffs<(u16, u64)>,
    /// Recipients not to market to (131050) or to back off (131049).
    pub(crate) marketing_block: Backoffs<u64>,
    pub(crate) appeals: VecDeque<Appeal>,
    pub(crate) appeals_filed: u64,
    pub(crate) sends_total: u64,
    pub(crate) last_now: u64,
}

impl OrgState {
    /// A new org from a validated config.
    pub(crate) fn new(config: OrgConfig, policy: &Policy, now: u64) -> Self {
        DecisionClock::set(now);
        let mut st = OrgState {
            id: Arc::from(config.org_id.as_str()),
            pair: PairRate::new(policy.pair_rate_period_ms, policy.pair_rate_burst),
            phones: Vec::new(),
            phone_index: HashMap::default(),
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
            config,
        };
        let phones = std::mem::take(&mut st.config.phone_numbers);
        st.set_phones(phones, policy);
        st.resize_log(policy);
        st
    }

    /// Time as this org sees it: never earlier than any time it saw before, so its windows stay
    /// ordered even if the wall clock steps back.
    #[inline]
    pub(crate) fn advance(&mut self, now: u64) -> u64 {
        self.last_now = self.last_now.max(now);
        DecisionClock::set(self.last_now);
        self.last_now
    }

    /// The slot of an active phone number. Most orgs have a handful of numbers, and scanning
    /// them touches memory the decision reads anyway; the index serves the rest.
    #[inline]
    pub(crate) fn phone_slot(&self, key: u128) -> Option<u16> {
        if self.phones.len() <= 8 {
            return self
                .phones
                .iter()
                .position(|s| s.active && s.key == key)
                .map(|i| i as u16);
        }
        self.phone_index.get(&key).copied()
    }

    /// The slot of `phone_number_id` (whose key is `key`), or the NOT_FOUND error naming it.
    pub(crate) fn slot_of(&self, phone_number_id: &str, key: u128) -> Result<u16, EngineError> {
        self.phone_slot(key)
            .ok_or_else(|| EngineError::UnknownPhoneNumber {
                org_id: self.id.to_string(),
                phone_number_id: phone_number_id.to_owned(),
            })
    }

    pub(crate) fn has_history(&self) -> bool {
        self.config.has_template_history || self.sends_total > 0
    }

    /// The window a send from phone `slot` counts in.
    #[inline]
    pub(crate) fn window_of(&self, policy: &Policy, slot: u16) -> usize {
        match policy.tier_scope {
            TierScope::Org => 0,
            TierScope::PhoneNumber => slot as usize,
        }
    }

    /// Whether the quality restriction is in force: RED for at least the grace period.
    pub(crate) fn is_restricted(&self, policy: &Policy, now: u64) -> bool {
        self.config.quality_rating == QualityRating::Red
            && self
                .flagged_since
                .is_some_and(|f| now >= f.saturating_add(policy.red_grace_ms))
    }

    /// The log must answer every threshold the policy asks about for the current tier.
    pub(crate) fn resize_log(&mut self, policy: &Policy) {
        let upgrade = match self.config.tier.limit() {
            Some(l) if policy.auto_upgrade => policy.upgrade_threshold(l),
            _ => 0,
        };
        let max = policy
            .small_sender_weekly_limit
            .max(policy.weekly_cap_without_escalation)
            .max(upgrade);
        self.log.set_max_threshold(max);
    }

    /// Checks that `phones` can replace the current numbers without running out of slots.
    pub(crate) fn check_phones(&self, phones: &[PhoneNumberConfig]) -> Result<(), ValidationError> {
        let added = phones
            .iter()
            .filter(|p| {
                !self
                    .phones
                    .iter()
                    .any(|s| s.config.phone_number_id == p.phone_number_id)
            })
            .count();
        if self.phones.len() + added > MAX_PHONE_SLOTS {
            return Err(ValidationError::new(
                "org.phone_numbers",
                format!("this org has used all {MAX_PHONE_SLOTS} phone number slots"),
            ));
        }
        Ok(())
    }

    /// Replaces the org's numbers. Existing numbers keep their slot, window and rate state.
    pub(crate) fn set_phones(&mut self, phones: Vec<PhoneNumberConfig>, policy: &Policy) {
        for s in &mut self.phones {
            s.active = false;
        }
        self.phone_index.clear();
        for p in &phones {
            let mps = p.mps(policy.default_throughput_mps);
            let existing = self
                .phones
                .iter()
                .position(|s| s.config.phone_number_id == p.phone_number_id);
            let slot = match existing {
                Some(i) => {
                    let s = &mut self.phones[i];
                    if s.config.throughput_mps != p.throughput_mps {
                        s.throughput = Throughput::new(mps);
                        s.feedback.cut = None;
                        s.feedback.built_mps = mps;
                    }
                    s.config = p.clone();
                    s.active = true;
                    i
                }
                None => {
                    self.phones.push(PhoneSlot {
                        key: validate::phone_key(&p.phone_number_id).unwrap_or_default(),
                        config: p.clone(),
                        active: true,
                        throughput: Throughput::new(mps),
                        feedback: NumberFeedback {
                            built_mps: mps,
                            ..NumberFeedback::default()
                        },
                    });
                    self.phones.len() - 1
                }
            };
            self.phone_index.insert(self.phones[slot].key, slot as u16);
        }
        if policy.tier_scope == TierScope::PhoneNumber {
            self.windows.ensure(self.phones.len());
        }
        self.config.phone_numbers = phones;
    }

    /// Applies a new config to an existing org. The caller validated it; tier increases pass
    /// the same escalation gate as every other increase.
    pub(crate) fn update(&mut self, mut cfg: OrgConfig, policy: &Policy, now: u64) {
        let phones = std::mem::take(&mut cfg.phone_numbers);
        self.set_phones(phones, policy);
        self.config.waba_ids = cfg.waba_ids;
        self.config.has_template_history = cfg.has_template_history;
        match cfg.escalation_path {
            Some(p) => self.set_escalation_path(p, policy),
            None => self.config.escalation_path = None,
        }
        self.set_quality_rating(cfg.quality_rating, now);
        self.change_tier(cfg.tier, policy);
    }

    /// Sets a validated path; a held tier increase is applied at once.
    pub(crate) fn set_escalation_path(&mut self, path: EscalationPath, policy: &Policy) {
        self.config.escalation_path = Some(path);
        if let Some(p) = self.pending_tier.take()
            && p > self.config.tier
        {
            self.config.tier = p;
            self.resize_log(policy);
        }
    }

    /// A rating change. Turning RED starts the grace period; leaving RED ends the flag.
    pub(crate) fn set_quality_rating(&mut self, rating: QualityRating, now: u64) {
        if rating == QualityRating::Red {
            if self.config.quality_rating != QualityRating::Red || self.flagged_since.is_none() {
                self.flagged_since = Some(now);
            }
        } else {
            self.flagged_since = None;
        }
        self.config.quality_rating = rating;
    }

    /// Files an appeal; one may be pending at a time.
    pub(crate) fn file_appeal(&mut self, evidence: &str, now: u64) -> Result<Appeal, EngineError> {
        if let Some(a) = self
            .appeals
            .back()
            .filter(|a| a.status == AppealStatus::Pending)
        {
            return Err(EngineError::AppealConflict(format!(
                "appeal {} is still pending",
                a.appeal_id
            )));
        }
        self.appeals_filed += 1;
        let appeal = Appeal {
            appeal_id: AppealId {
                org_id: self.id.to_string(),
                n: self.appeals_filed,
            },
            status: AppealStatus::Pending,
            evidence: evidence.trim().to_owned(),
            filed_at_ms: now,
        };
        if self.appeals.len() == APPEALS_KEPT {
            self.appeals.pop_front();
        }
        self.appeals.push_back(appeal.clone());
        Ok(appeal)
    }

    /// Resolves a pending appeal; approval clears RED and the restriction.
    pub(crate) fn resolve_appeal(
        &mut self,
        id: &AppealId,
        approved: bool,
    ) -> Result<Appeal, EngineError> {
        let a = self
            .appeals
            .iter_mut()
            .find(|a| a.appeal_id.n == id.n)
            .ok_or_else(|| EngineError::UnknownAppeal(id.to_string()))?;
        if a.status != AppealStatus::Pending {
            return Err(EngineError::AppealConflict(format!(
                "appeal {id} was already resolved"
            )));
        }
        a.status = if approved {
            AppealStatus::Approved
        } else {
            AppealStatus::Rejected
        };
        let out = a.clone();
        if approved && self.config.quality_rating == QualityRating::Red {
            self.config.quality_rating = QualityRating::Unknown;
            self.flagged_since = None;
        }
        Ok(out)
    }

    /// Pauses `template` until `until` (`None`: disabled until reinstated).
    pub(crate) fn pause_template(
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

    /// Brings every window and log up to `now`.
    pub(crate) fn expire_all(&mut self, policy: &Policy, now: u64) {
        let tier_cutoff = now.saturating_sub(policy.tier_window_ms);
        for w in self.windows.iter_mut() {
            w.expire(tier_cutoff);
        }
        self.log.expire(now.saturating_sub(policy.weekly_window_ms));
        self.idem
            .expire(now.saturating_sub(policy.idempotency_ttl_ms));
        self.ledger.expire(now.saturating_sub(policy.permit_ttl_ms));
        self.paused.retain(|_, u| u.is_none_or(|u| u > now));
    }

    /// Usage as the next send to window `w` would see it, and whether the quality restriction
    /// applies to that send (RED past its grace and not a small sender).
    pub(crate) fn standing(&self, policy: &Policy, w: usize, now: u64) -> (Usage, bool) {
        let cutoff7 = now.saturating_sub(policy.weekly_window_ms);
        let passthrough = !self.log.at_least(policy.small_sender_weekly_limit, cutoff7);
        let red_past_grace = self.is_restricted(policy, now);
        let restricted = red_past_grace && !passthrough;
        let tier = if restricted {
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

    /// A snapshot for `GetOrg`.
    pub(crate) fn status(&mut self, policy: &Policy, now: u64) -> OrgStatus {
        let now = self.advance(now);
        self.expire_all(policy, now);
        let fullest = (0..self.windows.len())
            .max_by_key(|&w| self.windows[w].len())
            .unwrap_or(0);
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
            numbers: (0..self.phones.len() as u16)
                .filter(|&s| self.phones[s as usize].active)
                .map(|s| NumberStatus {
                    phone_number_id: self.phones[s as usize].config.phone_number_id.clone(),
                    effective_mps: self.effective_mps(policy, s, now),
                    paused_until_ms: Some(self.phones[s as usize].feedback.paused_until)
                        .filter(|&u| u > now),
                })
                .collect(),
            pair_backoffs: self.pair_backoff.live(now),
            marketing_blocked_recipients: self.marketing_block.live(now),
        }
    }

    /// Finds an appeal by number (for the engine's lookup by id).
    pub(crate) fn appeal(&self, n: u64) -> Option<&Appeal> {
        self.appeals.iter().find(|a| a.appeal_id.n == n)
    }
}
