//! Every engine fact a webhook can ask for, built here and nowhere else in this crate.
//!
//! The shells apply facts as commands, and a command's time is the log's or the engine's, so
//! `at` is left 0. Keeping the constructors together means a change to `Fact`'s shape touches
//! these lines only.

use tiergate_core::{Change, Fact, QualityRating, Tier};

pub(crate) fn rating(org: &str, rating: QualityRating) -> Fact {
    Fact::new(0, org, Change::Rating { rating })
}

pub(crate) fn tier_request(org: &str, tier: Tier) -> Fact {
    Fact::new(0, org, Change::TierRequest { tier })
}

pub(crate) fn number_throughput(org: &str, phone: &str, mps: u32) -> Fact {
    Fact::new(
        0,
        org,
        Change::NumberThroughput {
            phone: phone.to_owned(),
            mps,
        },
    )
}

pub(crate) fn account_restricted(org: &str, restricted: bool) -> Fact {
    Fact::new(0, org, Change::AccountRestricted { restricted })
}

pub(crate) fn template_paused(org: &str, template: &str, until: Option<u64>) -> Fact {
    Fact::new(
        0,
        org,
        Change::TemplatePaused {
            template: template.to_owned(),
            until,
        },
    )
}

pub(crate) fn template_reinstated(org: &str, template: &str) -> Fact {
    Fact::new(
        0,
        org,
        Change::TemplateReinstated {
            template: template.to_owned(),
        },
    )
}

pub(crate) fn feedback(org: &str, phone: &str, recipient: Option<&str>, code: i32) -> Fact {
    Fact::new(
        0,
        org,
        Change::Feedback {
            phone: Some(phone.to_owned()),
            recipient: recipient.map(str::to_owned),
            template: None,
            code,
        },
    )
}

pub(crate) fn delivery(org: &str, key: &str) -> Fact {
    Fact::new(
        0,
        org,
        Change::WebhookDelivery {
            key: key.to_owned(),
        },
    )
}

pub(crate) fn recipient_ids(org: &str, phone: &str, user_ids: Vec<String>) -> Fact {
    Fact::new(
        0,
        org,
        Change::RecipientIds {
            phone: phone.to_owned(),
            user_ids,
        },
    )
}

pub(crate) fn user_id_changed(org: &str, previous: &str, current: &str) -> Fact {
    Fact::new(
        0,
        org,
        Change::UserIdChanged {
            previous: previous.to_owned(),
            current: current.to_owned(),
        },
    )
}

pub(crate) fn pacing_held(org: &str) -> Fact {
    Fact::new(0, org, Change::PacingHeld)
}
