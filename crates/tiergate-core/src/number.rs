//! One phone number of an org: its config, its throughput limiter and what WhatsApp's answers
//! did to it (an AIMD rate cut after 130429, a pause after 131048).
//!
//! Throughput and the feedback that moves it live together because the limiter is rebuilt
//! whenever the effective rate changes: a cut halves it, and it recovers step by step.

use serde::{Deserialize, Serialize};

use crate::org::PhoneNumberConfig;
use crate::policy::Policy;
use crate::rate::{GcraState, Throughput};
use crate::validate;

/// Spam-rate strikes counted before the pause stops doubling.
const MAX_SPAM_STRIKES: u32 = 10;

/// What WhatsApp's answers did to one number; kept in snapshots.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct NumberFeedback {
    /// The rate after the last 130429 and when it was cut; `None` when at full rate.
    pub(crate) cut: Option<(u32, u64)>,
    /// The rate the limiter was built for.
    pub(crate) built_mps: u32,
    /// Paused (131048) until this time.
    pub(crate) paused_until: u64,
    pub(crate) spam_strikes: u32,
}

/// One number's slot. Slots are never reused: a removed number keeps its slot (inactive), so its
/// window lives on until it empties and re-adding it cannot dodge its window.
#[derive(Debug, Clone)]
pub(crate) struct PhoneSlot {
    /// [`validate::phone_key`] of the id.
    pub(crate) key: u128,
    pub(crate) config: PhoneNumberConfig,
    pub(crate) active: bool,
    throughput: Throughput,
    feedback: NumberFeedback,
}

impl PhoneSlot {
    /// A new, active slot for a validated number.
    pub(crate) fn new(config: PhoneNumberConfig, policy: &Policy) -> Self {
        let mps = config.mps(policy.default_throughput_mps);
        PhoneSlot {
            key: validate::phone_key(&config.phone_number_id).unwrap_or_default(),
            config,
            active: true,
            throughput: Throughput::new(mps, policy.throughput_burst(mps)),
            feedback: NumberFeedback {
                built_mps: mps,
                ..NumberFeedback::default()
            },
        }
    }

    /// A slot as a snapshot kept it.
    pub(crate) fn restore(
        config: PhoneNumberConfig,
        active: bool,
        throughput: GcraState,
        feedback: NumberFeedback,
        policy: &Policy,
    ) -> Self {
        let mps = feedback.built_mps;
        PhoneSlot {
            key: validate::phone_key(&config.phone_number_id).unwrap_or_default(),
            throughput: Throughput::restore(mps, policy.throughput_burst(mps), throughput),
            config,
            active,
            feedback,
        }
    }

    /// Its limiter's and feedback's state, for a snapshot.
    pub(crate) fn state(&self) -> (GcraState, NumberFeedback) {
        (self.throughput.state(), self.feedback.clone())
    }

    /// Reactivates the slot with `config`. A changed configured rate starts a fresh limiter and
    /// drops any AIMD cut (the operator's new rate wins).
    pub(crate) fn reconfigure(&mut self, config: &PhoneNumberConfig, policy: &Policy) {
        if self.config.throughput_mps != config.throughput_mps {
            let mps = config.mps(policy.default_throughput_mps);
            self.throughput = Throughput::new(mps, policy.throughput_burst(mps));
            self.feedback.cut = None;
            self.feedback.built_mps = mps;
        }
        self.config = config.clone();
        self.active = true;
    }

    /// The rate the operator configured (or the policy's default).
    pub(crate) fn configured_mps(&self, policy: &Policy) -> u32 {
        self.config.mps(policy.default_throughput_mps)
    }

    /// The number's rate at `now`: its configured rate, or the AIMD-cut rate recovering by
    /// `aimd_recover_step_mps` every `aimd_recover_interval_ms`.
    pub(crate) fn effective_mps(&self, policy: &Policy, now: u64) -> u32 {
        let configured = self.configured_mps(policy);
        match self.feedback.cut {
            None => configured,
            Some((cut, at)) => {
                let steps = now.saturating_sub(at) / policy.aimd_recover_interval_ms.max(1);
                let mps = u64::from(cut)
                    .saturating_add(steps.saturating_mul(u64::from(policy.aimd_recover_step_mps)));
                mps.min(u64::from(configured)) as u32
            }
        }
    }

    /// Until when the number is paused (131048); in the past when it is not.
    #[inline]
    pub(crate) fn paused_until(&self) -> u64 {
        self.feedback.paused_until
    }

    /// Rule 9 at `now`: `Ok` and one cell used, or the milliseconds until one is free. The
    /// limiter is rebuilt first if AIMD moved the rate.
    #[inline]
    pub(crate) fn check_throughput(&mut self, policy: &Policy, now: u64) -> Result<(), u64> {
        self.refresh_throughput(policy, now);
        self.throughput.check(now)
    }

    /// Rebuilds the limiter when AIMD moved its rate; clears a fully recovered cut.
    #[inline]
    fn refresh_throughput(&mut self, policy: &Policy, now: u64) {
        if self.feedback.cut.is_none() {
            return;
        }
        let mps = self.effective_mps(policy, now);
        if mps >= self.configured_mps(policy) {
            self.feedback.cut = None;
        }
        if self.feedback.built_mps != mps {
            self.throughput = Throughput::new(mps, policy.throughput_burst(mps));
            self.feedback.built_mps = mps;
        }
    }

    /// 130429: halves the current rate (at least 1 msg/s). Returns the new rate.
    pub(crate) fn cut_throughput(&mut self, policy: &Policy, now: u64) -> u32 {
        let cut = (self.effective_mps(policy, now) / 2).max(1);
        self.feedback.cut = (cut < self.configured_mps(policy)).then_some((cut, now));
        cut
    }

    /// Pauses the number until at least `now + ms` (131057 maintenance); no strike counted.
    pub(crate) fn pause_for(&mut self, now: u64, ms: u64) {
        let until = now.saturating_add(ms);
        self.feedback.paused_until = self.feedback.paused_until.max(until);
    }

    /// 131048: pauses the number, doubling with each strike up to the policy's maximum.
    /// Returns the pause in milliseconds.
    pub(crate) fn pause_for_spam(&mut self, policy: &Policy, now: u64) -> u64 {
        let fb = &mut self.feedback;
        let ms = policy
            .number_pause_ms
            .saturating_mul(1 << fb.spam_strikes.min(MAX_SPAM_STRIKES))
            .min(policy.number_pause_max_ms);
        fb.spam_strikes += 1;
        fb.paused_until = now.saturating_add(ms);
        ms
    }
}
