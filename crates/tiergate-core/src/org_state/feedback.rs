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
//! | 130472 | stop marketing to the recipient for `experiment_marketing_pause_ms` (2026) |
//! | 131062 | nothing to change; the caller must not retry with the BSUID (2026) |
//! | 131063 | deny the org's MARKETING until an admin clears it (2026) |
//! | 131064 | the restricted tier until Meta's next limit; says when a slot of it frees (2026) |
//! | 131057 | pause the number for `maintenance_pause_ms` (2026) |
//!
//! State is bounded: pair back-offs and marketing blocks live in capped maps, pruned when they
//! fill.

use serde::Serialize;

use crate::policy::Policy;
use crate::validate::RecipientKey;

use super::OrgState;

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
/// 2026: the user is part of a marketing experiment; every resend fails (130472).
pub const ERR_MARKETING_EXPERIMENT: i32 = 130_472;
/// 2026: a BSUID recipient is not supported for this message (131062).
pub const ERR_BSUID_UNSUPPORTED: i32 = 131_062;
/// 2026: marketing is disabled on the Cloud API for this business (131063).
pub const ERR_MARKETING_API_REQUIRED: i32 = 131_063;
/// 2026: the limit was reduced for template-classification violations (131064).
pub const ERR_LIMIT_REDUCED: i32 = 131_064;
/// 2026: the account is in maintenance (a throughput upgrade, about a minute) (131057).
pub const ERR_MAINTENANCE: i32 = 131_057;

const MAX_PAIR_BACKOFF_X: u8 = 5;

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
    /// Marketing to the recipient stops for this many milliseconds: they are in one of Meta's
    /// marketing experiments (130472), where every resend fails.
    MarketingExperiment(u64),
    /// The send named a BSUID where Meta needs a phone number (131062); nothing changes, but
    /// the caller must not retry it with the BSUID.
    BsuidUnsupported,
    /// The org's marketing goes through the Marketing Messages API from now on (131063).
    MarketingApiRequired,
    /// Meta reduced the limit (131064): the restricted tier applies until its next limit. The
    /// value is how many milliseconds until a slot of the reduced limit frees (recipients
    /// leaving the window, if no new one is counted meanwhile); 0 when one is free now, or when
    /// no wait frees one (a limit of 0 after headroom).
    LimitReduced(u64),
    /// The number is in maintenance for this many milliseconds (131057).
    NumberMaintenance(u64),
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
            Reaction::MarketingExperiment(_) => "marketing_experiment",
            Reaction::BsuidUnsupported => "bsuid_unsupported",
            Reaction::MarketingApiRequired => "marketing_api_required",
            Reaction::LimitReduced(_) => "limit_reduced",
            Reaction::NumberMaintenance(_) => "number_maintenance",
            Reaction::Incomplete => "incomplete",
            Reaction::None => "none",
        }
    }
}

impl OrgState {
    /// Applies one WhatsApp error code seen for a send from phone `slot` to `recipient`.
    pub(super) fn feedback(
        &mut self,
        policy: &Policy,
        slot: Option<u16>,
        recipient: Option<RecipientKey>,
        template: Option<&str>,
        code: i32,
        now: u64,
    ) -> Reaction {
        match code {
            ERR_THROUGHPUT => {
                let Some(s) = slot else {
                    return Reaction::Incomplete;
                };
                Reaction::ThroughputCut(self.phones[s as usize].cut_throughput(policy, now))
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
                Reaction::NumberPaused(self.phones[s as usize].pause_for_spam(policy, now))
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
            ERR_MARKETING_EXPERIMENT => {
                let Some(r) = recipient else {
                    return Reaction::Incomplete;
                };
                let ms = policy.experiment_marketing_pause_ms;
                self.marketing_block
                    .hit(r.0, now, policy.backoff_capacity, |_| ms);
                Reaction::MarketingExperiment(ms)
            }
            ERR_BSUID_UNSUPPORTED => Reaction::BsuidUnsupported,
            ERR_MARKETING_API_REQUIRED => {
                self.set_marketing_api_required(true);
                Reaction::MarketingApiRequired
            }
            ERR_LIMIT_REDUCED => {
                self.limit_reduced = true;
                Reaction::LimitReduced(self.until_slot_frees(policy, slot, now))
            }
            ERR_MAINTENANCE => {
                let Some(s) = slot else {
                    return Reaction::Incomplete;
                };
                let ms = policy.maintenance_pause_ms;
                self.phones[s as usize].pause_for(now, ms);
                Reaction::NumberMaintenance(ms)
            }
            _ => Reaction::None,
        }
    }
}

impl OrgState {
    /// Milliseconds until the window that `slot` counts against (the fullest one when the
    /// source did not say which number sent) holds fewer recipients than its effective limit;
    /// 0 when it does now or waiting cannot help.
    fn until_slot_frees(&mut self, policy: &Policy, slot: Option<u16>, now: u64) -> u64 {
        let w = match slot {
            Some(s) => self.window_of(policy, s),
            None => self.windows.fullest(),
        };
        self.windows[w].expire(now.saturating_sub(policy.tier_window_ms));
        let Some(limit) = self.standing(policy, w, now).0.tier_limit else {
            return 0;
        };
        self.windows[w].below_at(limit).map_or(0, |ts| {
            ts.saturating_add(policy.tier_window_ms).saturating_sub(now)
        })
    }
}
