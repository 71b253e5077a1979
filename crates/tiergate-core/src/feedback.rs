//! Reactions to WhatsApp's answers: what each error code changes.
//!
//! Error codes arrive three ways (a `SendTemplate` forwarded upstream, a `Report` with
//! `REJECTED`, a `messages` status webhook) and all land here, so that every source has the same
//! effect:
//!
//! | code | reaction |
//! | --- | --- |
//! | 130429 | cut the number's rate in half (AIMD), then recover step by step |
//! | 131056 | back that pair off 4^X seconds (X = consecutive hits, capped) |
//! | 131048 | pause the number, doubling with each strike (spam rate limit) |
//! | 368, 131031 | account restricted until an admin clears it |
//! | 132015 / 132016 | the template is paused / disabled |
//! | 131050 | stop marketing to the recipient (opted out) |
//! | 131049 | back off marketing to the recipient |
//!
//! State is bounded: pair back-offs and marketing blocks live in capped maps, pruned when they
//! fill.

use hashbrown::HashMap;
use serde::Serialize;

use crate::org_state::OrgState;
use crate::policy::Policy;
use crate::rate::Throughput;
use crate::validate::RecipientKey;

/// Throughput cut (error 130429).
pub const ERR_THROUGHPUT: i32 = 130_429;
/// Pair rate hit (131056).
pub const ERR_PAIR_RATE: i32 = 131_056;
/// Spam rate limit: the number is restricted (131048).
pub const ERR_SPAM_RATE: i32 = 131_048;
/// Per-user marketing cap (131049).
pub const ERR_MARKETING_CAP: i32 = 131_049;
/// The recipient opted out of marketing (131050).
pub const ERR_MARKETING_OPT_OUT: i32 = 131_050;
/// Account blocked (368).
pub const ERR_ACCOUNT_BLOCKED: i32 = 368;
/// Account locked (131031).
pub const ERR_ACCOUNT_LOCKED: i32 = 131_031;
/// Template paused (132015).
pub const ERR_TEMPLATE_PAUSED: i32 = 132_015;
/// Template disabled (132016).
pub const ERR_TEMPLATE_DISABLED: i32 = 132_016;

const MAX_PAIR_BACKOFF_X: u8 = 5;
const MAX_SPAM_STRIKES: u32 = 10;

/// What an error code did, for logs, metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reaction {
    /// The number's rate was cut to this many messages per second.
    ThroughputCut(u32),
    /// The pair is backed off for this many milliseconds.
    PairBackoff(u64),
    /// The number is paused for this many milliseconds.
    NumberPaused(u64),
    /// The account is restricted until an admin clears it.
    AccountRestricted,
    /// The template was paused for this many milliseconds.
    TemplatePaused(u64),
    /// The template was disabled.
    TemplateDisabled,
    /// Marketing to the recipient stops.
    MarketingStopped,
    /// Marketing to the recipient is backed off for this many milliseconds.
    MarketingBackoff(u64),
    /// The code needs information this source did not carry (e.g. a template name).
    Incomplete,
    /// The code changes nothing.
    None,
}

impl Reaction {
    /// A stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Reaction::ThroughputCut(_) => "throughput_cut",
            Reaction::PairBackoff(_) => "pair_backoff",
            Reaction::NumberPaused(_) => "number_paused",
            Reaction::AccountRestricted => "account_restricted",
            Reaction::TemplatePaused(_) => "template_paused",
            Reaction::TemplateDisabled => "template_disabled",
            Reaction::MarketingStopped => "marketing_stopped",
            Reaction::MarketingBackoff(_) => "marketing_backoff",
            Reaction::Incomplete => "incomplete",
            Reaction::None => "none",
        }
    }
}

/// Per-number feedback state.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct NumberFeedback {
    /// The rate after the last 130429 and when it was cut; `None` when at full rate.
    pub(crate) cut: Option<(u32, u64)>,
    /// The rate the limiter was built for.
    pub(crate) built_mps: u32,
    /// Paused (131048) until this time.
    pub(crate) paused_until: u64,
    pub(crate) spam_strikes: u32,
}

/// A capped map of per-recipient (or per-pair) back-offs: until when, and how many hits.
#[derive(Debug, Default)]
pub(crate) struct Backoffs<K: std::hash::Hash + Eq> {
    map: HashMap<K, (u64, u8), foldhash::fast::RandomState>,
}

impl<K: std::hash::Hash + Eq + Copy> Backoffs<K> {
    /// Until when `k` is backed off, if it is at `now`.
    #[inline]
    pub(crate) fn until(&self, k: &K, now: u64) -> Option<u64> {
        if self.map.is_empty() {
            return None;
        }
        self.map.get(k).map(|&(u, _)| u).filter(|&u| u > now)
    }

    /// Records a hit; `wait(hits_before)` gives the back-off. Returns the wait.
    pub(crate) fn hit(&mut self, k: K, now: u64, cap: usize, wait: impl Fn(u8) -> u64) -> u64 {
        if self.map.len() >= cap && !self.map.contains_key(&k) {
            self.map.retain(|_, (u, _)| *u > now);
            if self.map.len() >= cap {
                // Still full of live entries: drop the one that ends first.
                if let Some(first) = self
                    .map
                    .iter()
                    .min_by_key(|(_, (u, _))| *u)
                    .map(|(k, _)| *k)
                {
                    self.map.remove(&first);
                }
            }
        }
        let (_, hits) = self.map.get(&k).copied().unwrap_or((0, 0));
        let ms = wait(hits);
        self.map
            .insert(k, (now.saturating_add(ms), hits.saturating_add(1)));
        ms
    }

    /// The entries, for a snapshot.
    pub(crate) fn entries(&self) -> Vec<(K, (u64, u8))> {
        self.map.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Back-offs holding `entries` (from a snapshot).
    pub(crate) fn from_entries(entries: Vec<(K, (u64, u8))>) -> Self {
        Self {
            map: entries.into_iter().collect(),
        }
    }

    pub(crate) fn live(&self, now: u64) -> usize {
        self.map.values().filter(|(u, _)| *u > now).count()
    }
}

impl OrgState {
    /// Applies one WhatsApp error code seen for a send from phone `slot` to `recipient`.
    pub(crate) fn feedback(
        &mut self,
        policy: &Policy,
        slot: Option<u16>,
        recipient: Option<RecipientKey>,
        template: Option<&str>,
        code: i32,
        now: u64,
    ) -> Reaction {
        let now = self.advance(now);
        match code {
            ERR_THROUGHPUT => {
                let Some(s) = slot else {
                    return Reaction::Incomplete;
                };
                let configured = self.configured_mps(policy, s);
                let current = self.effective_mps(policy, s, now);
                let cut = (current / 2).max(1);
                let fb = &mut self.phones[s as usize].feedback;
                fb.cut = (cut < configured).then_some((cut, now));
                Reaction::ThroughputCut(cut)
            }
            ERR_PAIR_RATE => {
                let (Some(s), Some(r)) = (slot, recipient) else {
                    return Reaction::Incomplete;
                };
                let ms = self
                    .pair_backoff
                    .hit((s, r.0), now, policy.backoff_capacity, |x| {
                        1_000 * 4u64.pow(u32::from(x.min(MAX_PAIR_BACKOFF_X)))
                    });
                Reaction::PairBackoff(ms)
            }
            ERR_SPAM_RATE => {
                let Some(s) = slot else {
                    return Reaction::Incomplete;
                };
                let fb = &mut self.phones[s as usize].feedback;
                let ms = policy
                    .number_pause_ms
                    .saturating_mul(1 << fb.spam_strikes.min(MAX_SPAM_STRIKES))
                    .min(policy.number_pause_max_ms);
                fb.spam_strikes += 1;
                fb.paused_until = now.saturating_add(ms);
                Reaction::NumberPaused(ms)
            }
            ERR_ACCOUNT_BLOCKED | ERR_ACCOUNT_LOCKED => {
                self.account_restricted = true;
                Reaction::AccountRestricted
            }
            ERR_TEMPLATE_PAUSED | ERR_TEMPLATE_DISABLED => {
                let Some(t) = template else {
                    return Reaction::Incomplete;
                };
                let (until, reaction) = if code == ERR_TEMPLATE_PAUSED {
                    let ms = policy.template_pause_ms;
                    (Some(now + ms), Reaction::TemplatePaused(ms))
                } else {
                    (None, Reaction::TemplateDisabled)
                };
                match self.pause_template(t, until, now) {
                    Ok(()) => reaction,
                    Err(_) => Reaction::Incomplete,
                }
            }
            ERR_MARKETING_OPT_OUT | ERR_MARKETING_CAP => {
                let Some(r) = recipient else {
                    return Reaction::Incomplete;
                };
                let opt_out = code == ERR_MARKETING_OPT_OUT;
                let ms = self
                    .marketing_block
                    .hit(r.0, now, policy.backoff_capacity, |_| {
                        if opt_out {
                            u64::MAX / 2
                        } else {
                            policy.marketing_backoff_ms
                        }
                    });
                if opt_out {
                    Reaction::MarketingStopped
                } else {
                    Reaction::MarketingBackoff(ms)
                }
            }
            _ => Reaction::None,
        }
    }

    pub(crate) fn configured_mps(&self, policy: &Policy, slot: u16) -> u32 {
        self.phones[slot as usize]
            .config
            .mps(policy.default_throughput_mps)
    }

    /// The number's rate now: its configured rate, or the AIMD-cut rate recovering by
    /// `aimd_recover_step_mps` every `aimd_recover_interval_ms`.
    pub(crate) fn effective_mps(&self, policy: &Policy, slot: u16, now: u64) -> u32 {
        let configured = self.configured_mps(policy, slot);
        match self.phones[slot as usize].feedback.cut {
            None => configured,
            Some((cut, at)) => {
                let steps = now.saturating_sub(at) / policy.aimd_recover_interval_ms.max(1);
                let mps = u64::from(cut)
                    .saturating_add(steps.saturating_mul(u64::from(policy.aimd_recover_step_mps)));
                mps.min(u64::from(configured)) as u32
            }
        }
    }

    /// Rebuilds the number's limiter when AIMD moved its rate; clears a fully recovered cut.
    #[inline]
    pub(crate) fn refresh_throughput(&mut self, policy: &Policy, slot: u16, now: u64) {
        if self.phones[slot as usize].feedback.cut.is_none() {
            return;
        }
        let mps = self.effective_mps(policy, slot, now);
        let configured = self.configured_mps(policy, slot);
        let p = &mut self.phones[slot as usize];
        if mps >= configured {
            p.feedback.cut = None;
        }
        if p.feedback.built_mps != mps {
            p.throughput = Throughput::new(mps);
            p.feedback.built_mps = mps;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoffs_grow_and_stay_bounded() {
        let mut b: Backoffs<u64> = Backoffs::default();
        let w = |x: u8| 1_000 * 4u64.pow(u32::from(x));
        assert_eq!(b.hit(7, 0, 2, w), 1_000);
        assert_eq!(b.hit(7, 0, 2, w), 4_000);
        assert_eq!(b.until(&7, 0), Some(4_000));
        assert_eq!(b.until(&7, 4_000), None);
        b.hit(8, 0, 2, w);
        b.hit(9, 0, 2, w);
        assert!(b.map.len() <= 2);
        assert_eq!(b.live(0), 2);
    }
}
