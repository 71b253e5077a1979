//! What a caller asks and what the engine answers.

use compact_str::CompactString;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::quality::QualityRating;
use crate::tier::Tier;

/// A template's category, as Meta classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Category {
    /// Promotional templates.
    Marketing,
    /// Transactional updates.
    Utility,
    /// One-time passcodes.
    Authentication,
}

impl FromStr for Category {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let up = s.trim().to_ascii_uppercase();
        match up.strip_prefix("CATEGORY_").unwrap_or(&up) {
            "MARKETING" => Ok(Category::Marketing),
            "UTILITY" => Ok(Category::Utility),
            "AUTHENTICATION" => Ok(Category::Authentication),
            _ => Err(ValidationError::new(
                "category",
                format!("{s:?} is not MARKETING, UTILITY or AUTHENTICATION"),
            )),
        }
    }
}

/// One template send to decide. Borrowed, so the hot path allocates nothing to ask.
#[derive(Debug, Clone, Copy)]
pub struct SendRequest<'a> {
    /// The org (business portfolio).
    pub org_id: &'a str,
    /// The sending phone number's id.
    pub phone_number_id: &'a str,
    /// The recipient: its WhatsApp id (phone digits), or a business-scoped user id (BSUID) for
    /// senders that put one where a phone goes. May be empty when `recipient_user_id` is given.
    pub recipient: &'a str,
    /// The recipient's business-scoped user id or parent BSUID (2026), when the send names
    /// one. With a phone in `recipient`, the two are the same person from then on.
    pub recipient_user_id: Option<&'a str>,
    /// The template's name.
    pub template_name: &'a str,
    /// The template's category.
    pub category: Category,
    /// Same key within the idempotency TTL → same answer, counted once.
    pub idempotency_key: Option<&'a str>,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Send now; the send was recorded.
    Allow,
    /// Do not send; nothing was recorded.
    Deny,
}

/// Why a send was denied, in SPEC §2's decision order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DenyReason {
    /// Rule 3: the account or number is blocked (368, 131031, or by an admin).
    AccountRestricted,
    /// Rule 4: the template is paused (retry when the pause ends) or disabled.
    TemplatePaused,
    /// After rule 4: a marketing template to a recipient who opted out of marketing (131050) or
    /// hit the per-user marketing cap (131049). Not in SPEC's list; added with the feedback
    /// from error codes.
    RecipientMarketingLimit,
    /// After rule 4: a marketing template from an org whose marketing Meta disabled on the Cloud
    /// API (error 131063; send it through the Marketing Messages API), until an admin clears it.
    MarketingApiRequired,
    /// Rule 5: no escalation path and no template ever sent: templates cannot start.
    EscalationPathRequired,
    /// Rule 6: no escalation path and this send would pass the weekly cap.
    WeeklyCapWithoutEscalation,
    /// Rule 7: RED past its grace, not a small sender, and the restricted tier is full.
    QualityRestricted,
    /// Rule 8: a new recipient and the 24 h unique-recipient window is full.
    TierLimit,
    /// Rule 8b (SPEC §2a): a new recipient of a category whose share of the effective tier is
    /// used up; the rest is kept for AUTHENTICATION (and UTILITY) sends.
    CategoryReserve,
    /// Rule 9: the phone number is over its messages per second.
    Throughput,
    /// Rule 10: this recipient was messaged from this number too recently.
    PairRate,
}

impl DenyReason {
    /// Every reason, in decision order.
    pub const ALL: [DenyReason; 11] = [
        DenyReason::AccountRestricted,
        DenyReason::TemplatePaused,
        DenyReason::RecipientMarketingLimit,
        DenyReason::MarketingApiRequired,
        DenyReason::EscalationPathRequired,
        DenyReason::WeeklyCapWithoutEscalation,
        DenyReason::QualityRestricted,
        DenyReason::TierLimit,
        DenyReason::CategoryReserve,
        DenyReason::Throughput,
        DenyReason::PairRate,
    ];

    /// The name without the `DENY_REASON_` prefix (metrics labels, tables).
    pub const fn name(self) -> &'static str {
        match self {
            DenyReason::AccountRestricted => "ACCOUNT_RESTRICTED",
            DenyReason::TemplatePaused => "TEMPLATE_PAUSED",
            DenyReason::RecipientMarketingLimit => "RECIPIENT_MARKETING_LIMIT",
            DenyReason::MarketingApiRequired => "MARKETING_API_REQUIRED",
            DenyReason::EscalationPathRequired => "ESCALATION_PATH_REQUIRED",
            DenyReason::WeeklyCapWithoutEscalation => "WEEKLY_CAP_WITHOUT_ESCALATION",
            DenyReason::QualityRestricted => "QUALITY_RESTRICTED",
            DenyReason::TierLimit => "TIER_LIMIT",
            DenyReason::CategoryReserve => "CATEGORY_RESERVE",
            DenyReason::Throughput => "THROUGHPUT",
            DenyReason::PairRate => "PAIR_RATE",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An org's usage as seen by one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// The effective tier now (the restricted tier while the quality restriction bites).
    pub tier: Tier,
    /// The limit rule 7/8 applied, after headroom; `None` = unlimited.
    pub tier_limit: Option<u64>,
    /// Unique recipients in the window this send counts against.
    pub unique_recipients_24h: u64,
    /// Templates sent in the weekly window.
    pub templates_7d: u64,
    /// The org's quality rating.
    pub quality_rating: QualityRating,
    /// Whether this org is a small sender that passes through quality restrictions.
    pub passthrough: bool,
    /// Whether the org is RED past its grace. The restricted tier applies when this holds and
    /// `passthrough` does not.
    pub restricted: bool,
}

/// Proof that a send was allowed; hand it back to [`crate::Engine::report`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Permit {
    /// The org that allowed it. Inline up to 24 bytes: a permit is made on every allowed send,
    /// and copying the id from the org's own state costs nothing, where a shared `Arc<str>`'s
    /// count was a cache miss and an atomic on a cold org (issue #16, a fifth of its time).
    pub org_id: CompactString,
    /// The org's sequence number of this permit.
    pub seq: u64,
}

impl fmt::Display for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.org_id, self.seq)
    }
}

impl FromStr for Permit {
    type Err = ValidationError;

    /// Parses `org_id:seq`, the form [`Display`](fmt::Display) writes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ValidationError::new("permit_id", format!("{s:?} is not a permit id"));
        let (org, seq) = s.rsplit_once(':').ok_or_else(bad)?;
        let org = crate::validate::org_id(org).map_err(|_| bad())?;
        let seq = seq.parse().map_err(|_| bad())?;
        Ok(Permit {
            org_id: CompactString::from(org),
            seq,
        })
    }
}

/// The answer to one send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Allow or deny.
    pub verdict: Verdict,
    /// Why, on a denial.
    pub reason: Option<DenyReason>,
    /// Milliseconds until retrying can succeed; 0 when waiting alone will not help.
    pub retry_after_ms: u64,
    /// On ALLOW: the permit to report the outcome with.
    pub permit: Option<Permit>,
    /// Usage after this decision.
    pub usage: Usage,
    /// Whether this is the remembered answer to an idempotency key seen before (nothing was
    /// counted this time).
    pub replayed: bool,
}

impl Decision {
    /// A denial for `reason`, retry after `retry_after_ms` (0: time does not cure it), with the
    /// usage the send was judged with.
    pub(crate) fn deny(reason: DenyReason, retry_after_ms: u64, usage: Usage) -> Decision {
        Decision {
            verdict: Verdict::Deny,
            reason: Some(reason),
            retry_after_ms,
            permit: None,
            usage,
            replayed: false,
        }
    }

    /// Whether the send may go.
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }
}

/// What happened to an allowed send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// WhatsApp accepted it.
    Sent,
    /// It never reached WhatsApp: its window slot and counts are given back.
    NotSent,
    /// WhatsApp answered with this error code; it still counts.
    Rejected {
        /// WhatsApp's error code (e.g. 131056).
        error_code: i32,
    },
}
