//! Every threshold of the policy, as configuration.
//!
//! Meta changes its rules; the defaults here are SPEC §1–§2's values, and every one can be
//! overridden from the `[policy]` table of the TOML config. Unknown keys are refused so that a
//! typo never silently falls back to a default.

use serde::{Deserialize, Serialize};

use crate::error::PolicyError;
use crate::reserve::Reserves;
use crate::tier::Ladder;

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// Which phone numbers share one messaging limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierScope {
    /// Since October 2025: the business portfolio's numbers share one window.
    #[default]
    Org,
    /// Before: each phone number has its own window at the org's tier.
    PhoneNumber,
}

/// The policy's parameters. `Policy::default()` is SPEC's contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Length of the unique-recipient window (24 h).
    pub tier_window_ms: u64,
    /// Length of the template-count window (7 days).
    pub weekly_window_ms: u64,
    /// Orgs sending at most this many templates in the weekly window, counting the send being
    /// decided, pass through quality restrictions (1,000).
    pub small_sender_weekly_limit: u64,
    /// Without an escalation path an org may not go past this many templates a week (1,000).
    pub weekly_cap_without_escalation: u64,
    /// How long a RED rating may stand before the restricted tier applies (7 days).
    pub red_grace_ms: u64,
    /// How many ladder rungs the restricted tier is below the org's tier (1).
    pub restricted_tier_steps: u8,
    /// Share of every tier kept in reserve for senders outside tiergate, in percent (0).
    pub tier_headroom_percent: u8,
    /// Whether the limit is per org or per phone number.
    pub tier_scope: TierScope,
    /// The rungs tiers move along.
    pub ladder: Ladder,
    /// Whether the engine itself raises an eligible org's tier (off). Meta decides upgrades,
    /// within about 6 h and not always, so a governor that acted on its own prediction could let
    /// a sender past the limit Meta actually set. Off, eligibility is only reported
    /// (`OrgStatus::upgrade_eligible`) and the tier rises on Meta's word (webhook or admin). On
    /// is for what-if simulation.
    pub auto_upgrade: bool,
    /// Percentage of the tier limit that must be used in the weekly window to be eligible (50).
    pub upgrade_usage_percent: u8,
    /// Messages per second per phone number when the number does not say (80).
    pub default_throughput_mps: u32,
    /// The most a phone number may be configured for (1,000).
    pub max_throughput_mps: u32,
    /// How much of a second's sends a quiet number may send back to back, in percent of its
    /// rate (100: `governor`'s default for a per-second quota). A GCRA lets its burst go at once
    /// and then the rate, so at 100 % a number that was quiet may send up to about twice its
    /// rate within its first second; at 0 (a burst of one) sends are spaced evenly and no
    /// second, however it is cut, holds more than the rate. Meta does not say how it counts
    /// its per-second throughput (130429); lower this if bursts draw that error.
    pub throughput_burst_percent: u8,
    /// One message per this period from a number to one recipient (6 s).
    pub pair_rate_period_ms: u64,
    /// Messages to one recipient allowed back to back before the period applies (1).
    /// `pair_rate_period_ms × pair_rate_burst` must be at most 30 days: a pair's next free
    /// time is kept as 32 bits of milliseconds (`rate.rs`).
    pub pair_rate_burst: u32,
    /// How long an idempotency key returns its first decision (24 h).
    pub idempotency_ttl_ms: u64,
    /// Idempotency keys remembered per org; the oldest go first (100,000).
    pub idempotency_capacity: usize,
    /// How long a permit can still be reported (10 min). Outcomes arrive within seconds (the
    /// sidecar's own `SendTemplate` reports at once); the bound keeps unreported permits from
    /// holding memory.
    pub permit_ttl_ms: u64,
    /// Unreported permits remembered per org; the oldest go first (8,192).
    pub permit_capacity: usize,
    /// After an AIMD cut (130429), the rate grows back by this many msg/s … (5)
    pub aimd_recover_step_mps: u32,
    /// … every this many milliseconds (10 s).
    pub aimd_recover_interval_ms: u64,
    /// First pause of a number hit by the spam rate limit (131048); doubles per strike (60 s).
    pub number_pause_ms: u64,
    /// The longest such pause (24 h).
    pub number_pause_max_ms: u64,
    /// How long a template stays paused after error 132015 (3 h, Meta's first pause).
    pub template_pause_ms: u64,
    /// How long marketing to a recipient is backed off after error 131049 (24 h).
    pub marketing_backoff_ms: u64,
    /// Pair back-offs and marketing blocks remembered per org (100,000).
    pub backoff_capacity: usize,
    /// How long marketing to a recipient stops after error 130472, "user is part of an
    /// experiment" (7 days). Meta fails every resend while the experiment runs and does not say
    /// how long that is; a week is tiergate's interpretation, to be tuned.
    pub experiment_marketing_pause_ms: u64,
    /// How long a number is paused after error 131057, "account in maintenance" (60 s: Meta
    /// says about a minute, during a throughput upgrade).
    pub maintenance_pause_ms: u64,
    /// How long an org shows as under portfolio pacing review after its last send held for
    /// quality assessment (24 h). Meta announces the hold but not its end; this is tiergate's
    /// interpretation, to be tuned.
    pub pacing_review_ms: u64,
    /// Links between a person's ids (phone, BSUIDs) remembered per org (100,000). Beyond it a
    /// new link is not learned: the person may then count twice, never less than once.
    pub recipient_links_capacity: usize,
    /// Webhook deliveries remembered per org to drop Meta's redeliveries (100,000).
    pub webhook_dedupe_capacity: usize,
    /// How long a webhook delivery is remembered (7 days: Meta retries for up to 7 days).
    pub webhook_dedupe_ttl_ms: u64,
    /// Share of the effective tier kept for AUTHENTICATION sends, in percent (0; SPEC §2a).
    /// Orgs may override it (`OrgConfig::reserve_authentication_percent`).
    pub reserve_authentication_percent: u8,
    /// Share of the effective tier kept for UTILITY (and AUTHENTICATION) sends, in percent (0).
    pub reserve_utility_percent: u8,
    /// The most recipients one plan may list or count (100,000; SPEC §2a "Preflight").
    pub plan_max_recipients: u64,
    /// How far ahead a plan looks (30 days). A campaign that cannot finish by then (for
    /// example 100,000 recipients at 1,000 a week without an escalation path) is reported as
    /// not completing, with the rule that binds it.
    pub plan_horizon_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            tier_window_ms: DAY_MS,
            weekly_window_ms: 7 * DAY_MS,
            small_sender_weekly_limit: 1_000,
            weekly_cap_without_escalation: 1_000,
            red_grace_ms: 7 * DAY_MS,
            restricted_tier_steps: 1,
            tier_headroom_percent: 0,
            tier_scope: TierScope::Org,
            ladder: Ladder::default(),
            auto_upgrade: false,
            upgrade_usage_percent: 50,
            default_throughput_mps: 80,
            max_throughput_mps: 1_000,
            throughput_burst_percent: 100,
            pair_rate_period_ms: 6_000,
            pair_rate_burst: 1,
            idempotency_ttl_ms: DAY_MS,
            idempotency_capacity: 100_000,
            permit_ttl_ms: 10 * 60_000,
            permit_capacity: 8_192,
            aimd_recover_step_mps: 5,
            aimd_recover_interval_ms: 10_000,
            number_pause_ms: 60_000,
            number_pause_max_ms: DAY_MS,
            template_pause_ms: 3 * HOUR_MS,
            marketing_backoff_ms: DAY_MS,
            backoff_capacity: 100_000,
            experiment_marketing_pause_ms: 7 * DAY_MS,
            maintenance_pause_ms: 60_000,
            pacing_review_ms: DAY_MS,
            recipient_links_capacity: 100_000,
            webhook_dedupe_capacity: 100_000,
            webhook_dedupe_ttl_ms: 7 * DAY_MS,
            reserve_authentication_percent: 0,
            reserve_utility_percent: 0,
            plan_max_recipients: 100_000,
            plan_horizon_ms: 30 * DAY_MS,
        }
    }
}

impl Policy {
    /// Checks the values make sense together; the first problem is returned with its key.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let err = |key: &'static str, reason: &str| {
            Err(PolicyError {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.tier_window_ms == 0 || self.tier_window_ms > 10 * DAY_MS {
            // The window keeps times in 30 bits (12.4 days) to stay at 20 bytes a recipient.
            return err("tier_window_ms", "must be 1..=864,000,000 (10 days)");
        }
        if self.weekly_window_ms == 0 {
            return err("weekly_window_ms", "must be > 0");
        }
        if self.tier_headroom_percent >= 100 {
            return err("tier_headroom_percent", "must be below 100");
        }
        if self.upgrade_usage_percent == 0 || self.upgrade_usage_percent > 100 {
            return err("upgrade_usage_percent", "must be 1..=100");
        }
        if self.max_throughput_mps == 0 {
            return err("max_throughput_mps", "must be > 0");
        }
        if self.default_throughput_mps == 0 || self.default_throughput_mps > self.max_throughput_mps
        {
            return err("default_throughput_mps", "must be 1..=max_throughput_mps");
        }
        if self.pair_rate_period_ms == 0 {
            return err("pair_rate_period_ms", "must be > 0");
        }
        if self.pair_rate_burst == 0 {
            return err("pair_rate_burst", "must be > 0");
        }
        if self
            .pair_rate_period_ms
            .saturating_mul(u64::from(self.pair_rate_burst))
            > 2_592_000_000
        {
            // A pair's TAT is kept as 32 bits of milliseconds (`rate.rs`), so it may lie at
            // most this far ahead of the send that set it.
            return err(
                "pair_rate_period_ms",
                "times pair_rate_burst must be at most 2,592,000,000 (30 days)",
            );
        }
        if self.small_sender_weekly_limit > 10_000_000 {
            return err("small_sender_weekly_limit", "must be at most 10,000,000");
        }
        if self.weekly_cap_without_escalation > 10_000_000 {
            return err(
                "weekly_cap_without_escalation",
                "must be at most 10,000,000",
            );
        }
        if self.throughput_burst_percent > 100 {
            return err("throughput_burst_percent", "must be 0..=100");
        }
        if self.aimd_recover_step_mps == 0 {
            return err("aimd_recover_step_mps", "must be > 0");
        }
        if self.backoff_capacity == 0 {
            return err("backoff_capacity", "must be > 0");
        }
        if self.webhook_dedupe_capacity == 0 {
            return err("webhook_dedupe_capacity", "must be > 0");
        }
        if self.permit_capacity == 0 {
            return err("permit_capacity", "must be > 0");
        }
        if self.permit_ttl_ms == 0 || self.permit_ttl_ms > 30 * DAY_MS {
            // Permits keep their time as 32 bits of milliseconds after the oldest (49.7 days),
            // so that each is 18 bytes (issue #16).
            return err("permit_ttl_ms", "must be 1..=2,592,000,000 (30 days)");
        }
        if self.reserve_authentication_percent > 100 {
            return err("reserve_authentication_percent", "must be 0..=100");
        }
        if u16::from(self.reserve_authentication_percent) + u16::from(self.reserve_utility_percent)
            > 100
        {
            return err(
                "reserve_utility_percent",
                "reserve_authentication_percent + reserve_utility_percent must be at most 100",
            );
        }
        if self.plan_max_recipients == 0 || self.plan_max_recipients > 10_000_000 {
            return err("plan_max_recipients", "must be 1..=10,000,000");
        }
        if self.plan_horizon_ms == 0 {
            return err("plan_horizon_ms", "must be > 0");
        }
        Ok(())
    }

    /// The limit after `tier_headroom_percent` is held back; `None` = unlimited.
    pub fn with_headroom(&self, limit: Option<u64>) -> Option<u64> {
        limit.map(|l| l * u64::from(100 - self.tier_headroom_percent) / 100)
    }

    /// The burst of a number at `mps`: `throughput_burst_percent` of a second's sends, at least
    /// one.
    pub fn throughput_burst(&self, mps: u32) -> u32 {
        ((u64::from(mps) * u64::from(self.throughput_burst_percent) / 100) as u32).max(1)
    }

    /// The reserves an org gets when it does not set its own.
    pub fn reserves(&self) -> Reserves {
        Reserves {
            authentication_percent: self.reserve_authentication_percent,
            utility_percent: self.reserve_utility_percent,
        }
    }

    /// Templates in the weekly window that make an org at `limit` eligible for the next tier.
    pub fn upgrade_threshold(&self, limit: u64) -> u64 {
        (limit * u64::from(self.upgrade_usage_percent)).div_ceil(100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_spec_and_valid() {
        let p = Policy::default();
        p.validate().unwrap();
        assert_eq!(p.tier_window_ms, 86_400_000);
        assert_eq!(p.small_sender_weekly_limit, 1_000);
        assert_eq!(p.with_headroom(Some(250)), Some(250));
        let p = Policy {
            tier_headroom_percent: 20,
            ..Policy::default()
        };
        assert_eq!(p.with_headroom(Some(250)), Some(200));
        assert_eq!(p.with_headroom(None), None);
        assert_eq!(p.upgrade_threshold(250), 125);
    }

    #[test]
    fn bad_values_name_their_key() {
        let p = Policy {
            pair_rate_burst: 0,
            ..Policy::default()
        };
        assert_eq!(p.validate().unwrap_err().key, "pair_rate_burst");
    }
}
