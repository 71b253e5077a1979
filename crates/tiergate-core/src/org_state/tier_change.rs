//! Tier changes and the escalation gate.
//!
//! Whatever asks for a higher tier (automatic eligibility, an admin, a WhatsApp UPGRADE webhook)
//! goes through [`OrgState::change_tier`]: without an escalation path the increase is held as
//! pending and reported with `ESCALATION_PATH_REQUIRED`, and it is applied the moment a valid path
//! is set. Decreases always apply at once.

use serde::Serialize;

use crate::decision::DenyReason;
use crate::policy::Policy;
use crate::quality::QualityRating;
use crate::tier::Tier;

use super::OrgState;

/// The result of asking for a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TierChange {
    /// Whether the org is now at the requested tier.
    pub applied: bool,
    /// The org's tier after the request.
    pub tier: Tier,
    /// The increase waiting for an escalation path, if any.
    pub pending_tier: Option<Tier>,
    /// Why the request was held, when it was.
    pub held_reason: Option<DenyReason>,
}

impl OrgState {
    /// Moves the org toward `target`: decreases apply, increases pass the escalation gate.
    pub(super) fn change_tier(&mut self, target: Tier, policy: &Policy) -> TierChange {
        // Any word on the limit ends a 131064 reduction: Meta's next limit is the truth.
        self.limit_reduced = false;
        let applied = if target > self.config.tier && self.config.escalation_path.is_none() {
            self.pending_tier = Some(self.pending_tier.map_or(target, |p| p.max(target)));
            false
        } else {
            self.config.tier = target;
            if self.pending_tier.is_some_and(|p| p <= target) {
                self.pending_tier = None;
            }
            self.resize_log(policy);
            true
        };
        TierChange {
            applied,
            tier: self.config.tier,
            pending_tier: self.pending_tier,
            held_reason: (!applied).then_some(DenyReason::EscalationPathRequired),
        }
    }

    /// Meta's upgrade conditions: quality not RED and at least `upgrade_usage_percent` of the
    /// limit used in the weekly window, with a rung above. Tracks since when they hold; only
    /// with `policy.auto_upgrade` (a what-if setting) does the engine act on them itself,
    /// through the same gate as any increase, and only on a decision (`act`), never on a read.
    #[inline]
    pub(super) fn track_upgrade(&mut self, policy: &Policy, now: u64, act: bool) {
        let eligible = self.config.quality_rating != QualityRating::Red
            && self.upgrade_at.is_some_and(|k| {
                let cutoff7 = now.saturating_sub(policy.weekly_window_ms);
                self.log.at_least(k, cutoff7)
            });
        if !eligible {
            self.upgrade_eligible_since = None;
            return;
        }
        self.upgrade_eligible_since.get_or_insert(now);
        if !policy.auto_upgrade || !act {
            return;
        }
        if let Some(next) = policy.ladder.next_above(self.config.tier)
            && self.pending_tier.is_none_or(|p| p < next)
        {
            self.change_tier(next, policy);
            self.upgrade_eligible_since = None;
        }
    }
}
