//! Changes: everything that can happen to an org besides a decision, as values.
//!
//! The engine's public calls (`report`, `set_quality_rating`, …), a replay of the embedded
//! journal and a replica applying its Redis log all turn into a [`Change`] and take one route:
//! validate it ([`Change::validate`], the only place its fields are checked), lock the org,
//! advance its clock, apply it (`OrgState::apply`, one `match`), and hand the [`crate::Fact`]
//! to the journal. A send allowed by a decision is recorded as [`Change::Send`], so replay counts
//! it without judging it again.

use crate::appeal::validate_evidence;
use crate::decision::{Category, SendOutcome};
use crate::error::{EngineError, ValidationError};
use crate::escalation::EscalationPath;
use crate::org::OrgConfig;
use crate::org_state::Recipient;
use crate::policy::Policy;
use crate::quality::QualityRating;
use crate::tier::Tier;
use crate::validate::{self, Bsuid, RecipientKey};

/// The longest webhook delivery key accepted.
pub const MAX_DELIVERY_KEY_LEN: usize = 512;

/// One change to one org. Which org, and when, is the [`crate::Fact`] envelope's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Registers the org or replaces its config. An update keeps windows and counts, and a tier
    /// increase in it passes the escalation gate like any other.
    PutOrg {
        /// The whole config; its `org_id` must be the envelope's org.
        config: OrgConfig,
    },
    /// A send the rules allowed. Replaying it counts it again without judging it.
    Send {
        /// The phone number id it was sent from.
        phone: String,
        /// The recipient, as the request gave it (a phone, a BSUID, or empty).
        recipient: String,
        /// The recipient's BSUID, when the request gave one.
        user_id: Option<String>,
        /// Its idempotency key, so a retry after a restart still finds the first answer.
        key: Option<String>,
        /// The permit number it was given; replay checks it comes out the same, which proves
        /// the replayed state matches the original.
        seq: u64,
        /// Its template's category, which the window remembers for the fill by category
        /// (`None` in facts written before category reserves: counted as unattributed).
        category: Option<Category>,
    },
    /// What happened to an allowed send (`Report`).
    Report {
        /// The permit's number within the org.
        seq: u64,
        /// Sent, not sent (its slot is given back) or rejected with a WhatsApp error code.
        outcome: SendOutcome,
    },
    /// A human escalation path is set; a held tier increase applies at once.
    EscalationSet {
        /// The validated path.
        path: EscalationPath,
    },
    /// The escalation path is removed; later increases are held again.
    EscalationCleared,
    /// A quality rating from an admin or a webhook; RED starts the grace period.
    Rating {
        /// The new rating.
        rating: QualityRating,
    },
    /// A tier asked for (admin, webhook, Meta's reported limit): decreases apply, increases
    /// pass the escalation gate.
    TierRequest {
        /// The tier asked for.
        tier: Tier,
    },
    /// The account is blocked (error 368/131031) or unblocked by an admin.
    AccountRestricted {
        /// Whether it is blocked.
        restricted: bool,
    },
    /// A template is paused until a time, or disabled until reinstated.
    TemplatePaused {
        /// The template's name.
        template: String,
        /// Paused until this time (Unix ms); `None` means disabled.
        until: Option<u64>,
    },
    /// A template's pause or disable is lifted.
    TemplateReinstated {
        /// The template's name.
        template: String,
    },
    /// An appeal against a low rating is filed; it stays pending until resolved.
    AppealFiled {
        /// What the business says in its defence.
        evidence: String,
    },
    /// An appeal is resolved; approval clears RED and the restriction.
    AppealResolved {
        /// The appeal's number within the org.
        n: u64,
        /// Whether it was approved.
        approved: bool,
    },
    /// A WhatsApp error code seen for a send (webhook, upstream answer or report); see
    /// [`crate::Reaction`] for what each code does.
    Feedback {
        /// The phone number id the send came from, when the source said.
        phone: Option<String>,
        /// The recipient, when the source said.
        recipient: Option<String>,
        /// The template, when the source said (132015/132016 need it).
        template: Option<String>,
        /// WhatsApp's error code.
        code: i32,
    },
    /// A webhook pairs a person's phone with their BSUIDs (`contacts[]`, a status): from now on
    /// sends under any of them count as one person.
    RecipientIds {
        /// The phone (`wa_id`).
        phone: String,
        /// The BSUID and/or parent BSUID (`user_id`, `parent_user_id`), at most two.
        user_ids: Vec<String>,
    },
    /// `user_id_update`: a person's BSUID changed; the new one counts as the old one did.
    UserIdChanged {
        /// The BSUID before.
        previous: String,
        /// The BSUID now.
        current: String,
    },
    /// Marketing through the Cloud API disabled by Meta (131063, via `Feedback`) or re-enabled
    /// by an admin.
    MarketingApiRequired {
        /// Whether MARKETING sends must go through the Marketing Messages API.
        required: bool,
    },
    /// Meta held one of the org's sends for quality assessment (portfolio pacing): the org shows
    /// as under review; the send stays counted.
    PacingHeld,
    /// A webhook delivery about to be applied, by its key: answered
    /// [`crate::Outcome::Delivery`] with `first: false` when the org applied it before, so the
    /// shell skips a redelivery.
    WebhookDelivery {
        /// What identifies the change across redeliveries (e.g. message id, status and code).
        key: String,
    },
    /// A number's configured rate (WhatsApp's THROUGHPUT_UPGRADE, or an operator).
    NumberThroughput {
        /// The phone number id.
        phone: String,
        /// Messages per second, `1..=policy.max_throughput_mps`.
        mps: u32,
    },
}

impl Change {
    /// Checks every field the change carries, without touching an org. The one place a change
    /// is validated: the engine calls it before applying, and a replicated store calls it (via
    /// [`crate::Engine::check_fact`]) before a change reaches its log.
    pub fn validate(&self, policy: &Policy) -> Result<(), EngineError> {
        match self {
            Change::PutOrg { config } => config.validate(policy.max_throughput_mps)?,
            Change::Send {
                phone,
                recipient,
                user_id,
                key,
                ..
            } => {
                validate::phone_key(phone)?;
                Recipient::parse(recipient, user_id.as_deref())?;
                if let Some(k) = key {
                    validate::idempotency_key(k)?;
                }
            }
            Change::TemplatePaused { template, .. } | Change::TemplateReinstated { template } => {
                validate::template_name(template)?;
            }
            Change::AppealFiled { evidence } => validate_evidence(evidence)?,
            Change::Feedback {
                phone,
                recipient,
                template,
                ..
            } => {
                if let Some(p) = phone {
                    validate::phone_key(p)?;
                }
                if let Some(r) = recipient {
                    Recipient::parse(r, None)?;
                }
                if let Some(t) = template {
                    validate::template_name(t)?;
                }
            }
            Change::NumberThroughput { phone, mps } => {
                validate::phone_key(phone)?;
                if *mps == 0 || *mps > policy.max_throughput_mps {
                    return Err(ValidationError::new(
                        "throughput_mps",
                        format!("must be 1..={}", policy.max_throughput_mps),
                    )
                    .into());
                }
            }
            Change::RecipientIds { phone, user_ids } => {
                RecipientKey::parse(phone)?;
                if user_ids.is_empty() || user_ids.len() > 2 {
                    return Err(ValidationError::new("user_ids", "one or two BSUIDs").into());
                }
                for u in user_ids {
                    Bsuid::parse("user_ids", u)?;
                }
            }
            Change::UserIdChanged { previous, current } => {
                Bsuid::parse("previous", previous)?;
                Bsuid::parse("current", current)?;
            }
            Change::WebhookDelivery { key } => {
                if key.is_empty() || key.len() > MAX_DELIVERY_KEY_LEN {
                    return Err(ValidationError::new(
                        "delivery_key",
                        format!("must be 1..={MAX_DELIVERY_KEY_LEN} bytes"),
                    )
                    .into());
                }
            }
            Change::Report { .. }
            | Change::MarketingApiRequired { .. }
            | Change::PacingHeld
            | Change::EscalationSet { .. }
            | Change::EscalationCleared
            | Change::Rating { .. }
            | Change::TierRequest { .. }
            | Change::AccountRestricted { .. }
            | Change::AppealResolved { .. } => {}
        }
        Ok(())
    }
}
