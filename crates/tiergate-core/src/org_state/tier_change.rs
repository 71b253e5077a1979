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

    /// Automatic eligibility: quality not RED and at least `upgrade_usage_percent` of the limit
    /// sent in the weekly window → the next rung, through the same gate.
    pub(super) fn maybe_auto_upgrade(&mut self, policy: &Policy, now: u64) {
        if !policy.auto_upgrade || self.config.quality_rating == QualityRating::Red {
            return;
        }
        let (Some(limit), Some(next)) = (
            self.config.tier.limit(),
            policy.ladder.next_above(self.config.tier),
        ) else {
            return;
        };
        if self.pending_tier.is_some_and(|p| p >= next) {
            return;
        }
        let cutoff7 = now.saturating_sub(policy.weekly_window_ms);
        if self.log.at_least(policy.upgrade_threshold(limit), cutoff7) {
            self.change_tier(next, policy);
        }
    }
}
