//! Facts: the engine's state changes, for a store to keep and replay.
//!
//! The engine does no I/O, but a durable store must see every change in the order the engine
//! applied it. So the engine hands each change, while it still holds the org's lock, to an
//! injected [`Journal`]; the store writes it (in batches, with one fsync per batch) and replays
//! the facts in order on restart through [`crate::Engine::apply_fact`], on a clock set to each
//! fact's time. Denials change nothing and produce no fact.

use serde::{Deserialize, Serialize};

use crate::decision::SendOutcome;
use crate::escalation::EscalationPath;
use crate::org::OrgConfig;
use crate::quality::QualityRating;
use crate::tier::Tier;

/// One state change, with the time the engine applied it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
pub enum Fact {
    /// An org registered or updated.
    PutOrg {
        /// When.
        at: u64,
        /// The config.
        org: OrgConfig,
    },
    /// An allowed send, recorded.
    Send {
        /// When.
        at: u64,
        /// The org.
        org: String,
        /// The phone number id.
        phone: String,
        /// The recipient.
        recipient: String,
        /// Its idempotency key.
        key: Option<String>,
        /// The permit's sequence number (replay checks it comes out the same).
        seq: u64,
    },
    /// An outcome reported for a permit.
    Report {
        /// When.
        at: u64,
        /// The org.
        org: String,
        /// The permit's sequence number.
        seq: u64,
        /// `None`: sent; `Some(0)`: not sent; `Some(code)`: rejected with a WhatsApp code.
        outcome: Option<i32>,
    },
    /// An escalation path set.
    EscalationSet {
        /// When.
        at: u64,
        /// The org.
        org: String,
        /// The path.
        path: EscalationPath,
    },
    /// The escalation path cleared.
    EscalationCleared {
        /// When.
        at: u64,
        /// The org.
        org: String,
    },
    /// A rating change.
    Rating {
        /// When.
        at: u64,
        /// The org.
        org: String,
        /// The rating.
        rating: QualityRating,
    },
    /// A tier request.
    TierRequest {
        /// When.
        at: u64,
        /// The org.
        org: String,
        /// The tier asked for.
        tier: Tier,
    },
    /// The account blocked or unblocked.
    AccountRestricted {
        /// When.
        at: u64,
        /// The org.
        org: String,
        /// Blocked?
        restricted: bool,
    },
    /// A template paused (`until`) or disabled (`None`).
    TemplatePaused {
        /// When.
        at: u64,
        /// The org.
        org: String,
        /// The template.
        template: String,
        /// Until when.
        until: Option<u64>,
    },
    /// A template reinstated.
    TemplateReinstated {
        /// When.
        at: u64,
        /// The org.
        org: String,
        /// The template.
        template: String,
    },
    /// An appeal filed.
    AppealFiled {
        /// When.
        at: u64,
        /// The org.
        org: String,
        /// The evidence.
        evidence: String,
    },
    /// An appeal resolved.
    AppealResolved {
        /// When.
        at: u64,
        /// The org.
        org: String,
        /// The appeal's number within the org.
        n: u64,
        /// Approved?
        approved: bool,
    },
    /// A WhatsApp error code applied.
    Feedback {
        /// When.
        at: u64,
        /// The org.
        org: String,
        /// The number, if known.
        phone: Option<String>,
        /// The recipient, if known.
        recipient: Option<String>,
        /// The template, if known.
        template: Option<String>,
        /// The code.
        code: i32,
    },
    /// A number's throughput set.
    NumberThroughput {
        /// When.
        at: u64,
        /// The org.
        org: String,
        /// The number.
        phone: String,
        /// Messages per second.
        mps: u32,
    },
}

impl Fact {
    /// When the fact happened.
    pub fn at(&self) -> u64 {
        match self {
            Fact::PutOrg { at, .. }
            | Fact::Send { at, .. }
            | Fact::Report { at, .. }
            | Fact::EscalationSet { at, .. }
            | Fact::EscalationCleared { at, .. }
            | Fact::Rating { at, .. }
            | Fact::TierRequest { at, .. }
            | Fact::AccountRestricted { at, .. }
            | Fact::TemplatePaused { at, .. }
            | Fact::TemplateReinstated { at, .. }
            | Fact::AppealFiled { at, .. }
            | Fact::AppealResolved { at, .. }
            | Fact::Feedback { at, .. }
            | Fact::NumberThroughput { at, .. } => *at,
        }
    }

    /// The org the fact changes.
    pub fn org(&self) -> &str {
        match self {
            Fact::PutOrg { org, .. } => &org.org_id,
            Fact::Send { org, .. }
            | Fact::Report { org, .. }
            | Fact::EscalationSet { org, .. }
            | Fact::EscalationCleared { org, .. }
            | Fact::Rating { org, .. }
            | Fact::TierRequest { org, .. }
            | Fact::AccountRestricted { org, .. }
            | Fact::TemplatePaused { org, .. }
            | Fact::TemplateReinstated { org, .. }
            | Fact::AppealFiled { org, .. }
            | Fact::AppealResolved { org, .. }
            | Fact::Feedback { org, .. }
            | Fact::NumberThroughput { org, .. } => org,
        }
    }

    /// A report's outcome as a fact stores it.
    pub fn outcome(o: SendOutcome) -> Option<i32> {
        match o {
            SendOutcome::Sent => None,
            SendOutcome::NotSent => Some(0),
            SendOutcome::Rejected { error_code } => Some(error_code),
        }
    }
}

/// Where the engine hands its facts. Called under an org's lock: it must be quick and must not
/// call back into the engine.
pub trait Journal: Send + Sync {
    /// Records one fact, in order.
    fn record(&self, fact: Fact);

    /// The number of the last fact recorded (0 for a journal that does not number them). Read
    /// under an org's lock, it says which of that org's facts a snapshot taken there reflects.
    fn position(&self) -> u64 {
        0
    }
}
