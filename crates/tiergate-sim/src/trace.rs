//! The trace format: one JSON object per line, a time and one event.
//!
//! ```text
//! {"t":1700000000000,"org":{"org_id":"acme","tier":"TIER_250","phone_numbers":[{"phone_number_id":"1"}]}}
//! {"t":1700000000100,"send":{"org":"acme","phone":"1","to":"4915112345678","template":"promo","category":"MARKETING"}}
//! {"t":1700000000200,"send":{"org":"acme","phone":"1","to":"4915112345679","outcome":"not_sent"}}
//! {"t":1700000000300,"rating":{"org":"acme","rating":"RED"}}
//! {"t":1700000000400,"escalation":{"org":"acme","path":{"kind":"EMAIL","contact":"help@example.com"}}}
//! {"t":1700000000500,"escalation":{"org":"acme","path":null}}
//! {"t":1700000000600,"tier":{"org":"acme","tier":"TIER_2K"}}
//! {"t":1700000000700,"appeal":{"org":"acme","evidence":"we added a help desk"}}
//! {"t":1700000000800,"resolve_appeal":{"org":"acme","approved":true}}
//! {"t":1700000000900,"webhook":{"object":"whatsapp_business_account","entry":[…]}}
//! ```
//!
//! `t` is Unix milliseconds and never decreases. The event key names the event; a line with
//! none or several is an error. Strings of `send` are borrowed from the line when parsed, and
//! cross to the replaying threads inline ([`OwnedSend`]: ids up to 24 bytes), so replaying
//! allocates nothing per send. `docs/trace-format.md` documents every field.

use compact_str::CompactString;
use serde::Deserialize;
use serde_json::value::RawValue;
use tiergate_core::{Category, EscalationPath, OrgConfig, QualityRating, Tier};

/// What happened to an allowed send (default: sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceOutcome {
    /// WhatsApp accepted it.
    Sent,
    /// It never reached WhatsApp: the slot is given back.
    NotSent,
    /// WhatsApp answered with this error code.
    Rejected(i32),
}

/// One template send.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Send<'a> {
    /// The org.
    #[serde(borrow)]
    pub org: &'a str,
    /// The phone number id.
    #[serde(borrow)]
    pub phone: &'a str,
    /// The recipient.
    #[serde(borrow)]
    pub to: &'a str,
    /// The template (default `template`).
    #[serde(borrow, default)]
    pub template: Option<&'a str>,
    /// The category (default UTILITY).
    #[serde(default)]
    pub category: Option<Category>,
    /// What happened when allowed.
    #[serde(default)]
    pub outcome: Option<TraceOutcome>,
    /// An idempotency key.
    #[serde(borrow, default)]
    pub key: Option<&'a str>,
}

/// A [`Send`] that owns its strings (inline up to 24 bytes, so ids and template names need no
/// allocation), to carry a parsed send from the thread that parses to the one that replays.
#[derive(Debug, Clone)]
pub struct OwnedSend {
    org: CompactString,
    phone: CompactString,
    to: CompactString,
    template: Option<CompactString>,
    category: Option<Category>,
    outcome: Option<TraceOutcome>,
    key: Option<CompactString>,
}

impl From<&Send<'_>> for OwnedSend {
    fn from(s: &Send<'_>) -> Self {
        OwnedSend {
            org: s.org.into(),
            phone: s.phone.into(),
            to: s.to.into(),
            template: s.template.map(Into::into),
            category: s.category,
            outcome: s.outcome,
            key: s.key.map(Into::into),
        }
    }
}

impl OwnedSend {
    /// The send, borrowed again.
    pub fn as_send(&self) -> Send<'_> {
        Send {
            org: &self.org,
            phone: &self.phone,
            to: &self.to,
            template: self.template.as_deref(),
            category: self.category,
            outcome: self.outcome,
            key: self.key.as_deref(),
        }
    }
}

/// `{"org": …, "rating": …}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatingEvent {
    /// The org.
    pub org: String,
    /// The new rating.
    pub rating: QualityRating,
}

/// `{"org": …, "path": … | null}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationEvent {
    /// The org.
    pub org: String,
    /// The path; `null` clears it.
    pub path: Option<EscalationPath>,
}

/// `{"org": …, "tier": …}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierEvent {
    /// The org.
    pub org: String,
    /// The requested tier (increases pass the escalation gate).
    pub tier: Tier,
}

/// `{"org": …, "evidence": …}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppealEvent {
    /// The org.
    pub org: String,
    /// The evidence.
    pub evidence: String,
}

/// `{"org": …, "approved": …}`: resolves the org's latest appeal.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveEvent {
    /// The org.
    pub org: String,
    /// Approve or reject.
    pub approved: bool,
}

/// One line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line<'a> {
    /// Unix milliseconds.
    pub t: u64,
    /// A send.
    #[serde(borrow, default)]
    pub send: Option<Send<'a>>,
    /// Register or update an org.
    #[serde(default)]
    pub org: Option<OrgConfig>,
    /// A rating change.
    #[serde(default)]
    pub rating: Option<RatingEvent>,
    /// An escalation path set or cleared.
    #[serde(default)]
    pub escalation: Option<EscalationEvent>,
    /// A tier request.
    #[serde(default)]
    pub tier: Option<TierEvent>,
    /// An appeal filed.
    #[serde(default)]
    pub appeal: Option<AppealEvent>,
    /// The latest appeal resolved.
    #[serde(default)]
    pub resolve_appeal: Option<ResolveEvent>,
    /// A webhook body, applied as if POSTed (no signature: the trace is trusted).
    #[serde(borrow, default)]
    pub webhook: Option<&'a RawValue>,
}

impl<'a> Line<'a> {
    /// A line carrying only `send` at `t`.
    pub fn of_send(t: u64, send: Send<'a>) -> Self {
        Line {
            t,
            send: Some(send),
            org: None,
            rating: None,
            escalation: None,
            tier: None,
            appeal: None,
            resolve_appeal: None,
            webhook: None,
        }
    }

    /// How many events the line carries (must be 1).
    pub fn events(&self) -> usize {
        usize::from(self.send.is_some())
            + usize::from(self.org.is_some())
            + usize::from(self.rating.is_some())
            + usize::from(self.escalation.is_some())
            + usize::from(self.tier.is_some())
            + usize::from(self.appeal.is_some())
            + usize::from(self.resolve_appeal.is_some())
            + usize::from(self.webhook.is_some())
    }
}
