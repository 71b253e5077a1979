//! What a sender should do about a WhatsApp error code (SPEC §2a, "Advice").
//!
//! Every sender used to keep its own list of which codes to retry and when; most got some
//! wrong (retrying 130472 forever, giving up on 131056). The engine already knows what each
//! code did ([`Reaction`]), so the answer to "what now?" is derived here, once, from the code
//! and that reaction, and the sidecar hands it to whoever reported or forwarded the send.
//!
//! | code | advice | `retry_after_ms` |
//! | --- | --- | --- |
//! | 130429 throughput | [`Advice::RetryAfter`] | one message's interval at the cut rate (`⌈1000 / mps⌉`) |
//! | 131056 pair rate | [`Advice::RetryAfter`] | the pair's back-off |
//! | 131057 maintenance | [`Advice::RetryAfter`] | the number's maintenance pause |
//! | 131048 spam rate limit | [`Advice::RetryAfter`] | the number's pause |
//! | 131049 per-user marketing limit | [`Advice::RetryAfter`] | the recipient's marketing back-off (24 h) |
//! | 131064 limit reduced | [`Advice::RetryAfter`] | until a slot of the reduced limit frees (0: one is free now) |
//! | 130472, 131050, 131062 | [`Advice::DoNotRetry`] | 0 |
//! | 132015, 132016 | [`Advice::TemplatePaused`] | 0 |
//! | 368, 131031 | [`Advice::StopSending`] | 0 |
//! | 131063 | [`Advice::UseMarketingApi`] | 0 |
//! | anything else | [`Advice::Unspecified`] | 0 |
//!
//! `retry_after_ms` is only ever non-zero with `RetryAfter`, and is 0 there too when the
//! reaction could not say (a source that did not name the number, say): the caller then learns
//! the wait from its next `Acquire`, which denies with an exact retry-after.

use serde::Serialize;

use crate::org_state::{
    ERR_ACCOUNT_BLOCKED, ERR_ACCOUNT_LOCKED, ERR_BSUID_UNSUPPORTED, ERR_LIMIT_REDUCED,
    ERR_MAINTENANCE, ERR_MARKETING_API_REQUIRED, ERR_MARKETING_CAP, ERR_MARKETING_EXPERIMENT,
    ERR_MARKETING_OPT_OUT, ERR_PAIR_RATE, ERR_SPAM_RATE, ERR_TEMPLATE_DISABLED,
    ERR_TEMPLATE_PAUSED, ERR_THROUGHPUT, Reaction,
};

/// What the caller should do about the error code it got, so that it need not know Meta's
/// codes itself. The wire enum `tiergate.v1.Advice` mirrors it name for name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Advice {
    /// tiergate does not know the code: the caller decides.
    Unspecified,
    /// Send again, after `retry_after_ms` (the number, the pair or the recipient is held back
    /// for a while; the message itself was fine).
    RetryAfter,
    /// Never resend this message to this recipient as it is: every resend fails the same way
    /// (opted out, in a marketing experiment, a BSUID where Meta needs a phone number).
    DoNotRetry,
    /// The template is paused or disabled; send another template or wait for Meta to lift it.
    TemplatePaused,
    /// The account is blocked or locked: stop all sends until an admin clears it.
    StopSending,
    /// Marketing is off on the Cloud API for this business: send marketing through the
    /// Marketing Messages API instead.
    UseMarketingApi,
}

impl Advice {
    /// Every advice, in the order of SPEC §2a's enum.
    pub const ALL: [Advice; 6] = [
        Advice::Unspecified,
        Advice::RetryAfter,
        Advice::DoNotRetry,
        Advice::TemplatePaused,
        Advice::StopSending,
        Advice::UseMarketingApi,
    ];

    /// A stable label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Advice::Unspecified => "unspecified",
            Advice::RetryAfter => "retry_after",
            Advice::DoNotRetry => "do_not_retry",
            Advice::TemplatePaused => "template_paused",
            Advice::StopSending => "stop_sending",
            Advice::UseMarketingApi => "use_marketing_api",
        }
    }
}

/// The advice for WhatsApp error `code`, given the `reaction` the engine had to it, and how
/// many milliseconds to wait before retrying (0 unless the advice is [`Advice::RetryAfter`];
/// see the module's table).
///
/// Pure: the same code and reaction always give the same answer, whichever source (a Report,
/// a forwarded send) the code came from. The reaction supplies only the wait; a reaction that
/// does not belong to the code (e.g. [`Reaction::Incomplete`]) leaves the advice as the code
/// says and the wait at 0.
pub fn advise(code: i32, reaction: Reaction) -> (Advice, u64) {
    match code {
        ERR_THROUGHPUT | ERR_PAIR_RATE | ERR_MAINTENANCE | ERR_SPAM_RATE | ERR_MARKETING_CAP
        | ERR_LIMIT_REDUCED => (Advice::RetryAfter, retry_after(code, reaction)),
        ERR_MARKETING_EXPERIMENT | ERR_MARKETING_OPT_OUT | ERR_BSUID_UNSUPPORTED => {
            (Advice::DoNotRetry, 0)
        }
        ERR_TEMPLATE_PAUSED | ERR_TEMPLATE_DISABLED => (Advice::TemplatePaused, 0),
        ERR_ACCOUNT_BLOCKED | ERR_ACCOUNT_LOCKED => (Advice::StopSending, 0),
        ERR_MARKETING_API_REQUIRED => (Advice::UseMarketingApi, 0),
        _ => (Advice::Unspecified, 0),
    }
}

/// The wait a RETRY_AFTER code's reaction carries; 0 when it carries none.
fn retry_after(code: i32, reaction: Reaction) -> u64 {
    match (code, reaction) {
        // The AIMD cut has no pause: the number may send again as soon as the next message
        // fits its halved rate, one interval of the cut rate.
        (ERR_THROUGHPUT, Reaction::ThroughputCut(mps)) => 1_000u64.div_ceil(u64::from(mps.max(1))),
        (ERR_PAIR_RATE, Reaction::PairBackoff(ms))
        | (ERR_MAINTENANCE, Reaction::NumberMaintenance(ms))
        | (ERR_SPAM_RATE, Reaction::NumberPaused(ms))
        | (ERR_MARKETING_CAP, Reaction::MarketingBackoff(ms))
        | (ERR_LIMIT_REDUCED, Reaction::LimitReduced(ms)) => ms,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;

    #[test]
    fn every_known_code_has_its_advice() {
        let cases: [(i32, Reaction, Advice, u64); 16] = [
            (130_429, Reaction::ThroughputCut(40), Advice::RetryAfter, 25),
            (130_429, Reaction::ThroughputCut(3), Advice::RetryAfter, 334),
            (
                131_056,
                Reaction::PairBackoff(4_000),
                Advice::RetryAfter,
                4_000,
            ),
            (
                131_057,
                Reaction::NumberMaintenance(60_000),
                Advice::RetryAfter,
                60_000,
            ),
            (
                131_048,
                Reaction::NumberPaused(120_000),
                Advice::RetryAfter,
                120_000,
            ),
            (
                131_049,
                Reaction::MarketingBackoff(24 * H),
                Advice::RetryAfter,
                24 * H,
            ),
            (
                131_064,
                Reaction::LimitReduced(5 * H),
                Advice::RetryAfter,
                5 * H,
            ),
            (
                130_472,
                Reaction::MarketingExperiment(168 * H),
                Advice::DoNotRetry,
                0,
            ),
            (131_050, Reaction::MarketingStopped, Advice::DoNotRetry, 0),
            (131_062, Reaction::BsuidUnsupported, Advice::DoNotRetry, 0),
            (
                132_015,
                Reaction::TemplatePaused(3 * H),
                Advice::TemplatePaused,
                0,
            ),
            (
                132_016,
                Reaction::TemplateDisabled,
                Advice::TemplatePaused,
                0,
            ),
            (368, Reaction::AccountRestricted, Advice::StopSending, 0),
            (131_031, Reaction::AccountRestricted, Advice::StopSending, 0),
            (
                131_063,
                Reaction::MarketingApiRequired,
                Advice::UseMarketingApi,
                0,
            ),
            (131_000, Reaction::None, Advice::Unspecified, 0),
        ];
        for (code, reaction, advice, ms) in cases {
            assert_eq!(advise(code, reaction), (advice, ms), "{code} {reaction:?}");
        }
    }

    #[test]
    fn unknown_codes_are_unspecified() {
        for code in [0, -1, 1, 100, 131_026, 131_047, i32::MIN, i32::MAX] {
            assert_eq!(advise(code, Reaction::None), (Advice::Unspecified, 0));
        }
    }

    #[test]
    fn an_incomplete_reaction_keeps_the_advice_without_a_wait() {
        // e.g. a Report of 132015 (no template name) or a webhook that named no number
        assert_eq!(
            advise(132_015, Reaction::Incomplete),
            (Advice::TemplatePaused, 0)
        );
        for code in [130_429, 131_056, 131_057, 131_048, 131_049, 131_064] {
            assert_eq!(advise(code, Reaction::Incomplete), (Advice::RetryAfter, 0));
        }
        assert_eq!(
            advise(131_050, Reaction::Incomplete),
            (Advice::DoNotRetry, 0)
        );
    }

    #[test]
    fn a_wait_is_only_taken_from_the_code_s_own_reaction() {
        assert_eq!(
            advise(131_056, Reaction::NumberPaused(60_000)),
            (Advice::RetryAfter, 0)
        );
        assert_eq!(
            advise(132_015, Reaction::TemplatePaused(3 * H)),
            (Advice::TemplatePaused, 0)
        );
        // a cut to 0 msg/s cannot happen (the cut floors at 1); it must not divide by zero
        assert_eq!(
            advise(130_429, Reaction::ThroughputCut(0)),
            (Advice::RetryAfter, 1_000)
        );
    }

    #[test]
    fn labels_are_distinct() {
        let all = Advice::ALL;
        let labels: std::collections::HashSet<_> = all.iter().map(|a| a.label()).collect();
        assert_eq!(labels.len(), all.len());
    }
}
