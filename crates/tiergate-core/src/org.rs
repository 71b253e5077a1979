//! An org (WhatsApp business portfolio) as an operator registers it, and as the engine reports it.

use serde::{Deserialize, Serialize};

use crate::appeal::Appeal;
use crate::decision::Usage;
use crate::error::ValidationError;
use crate::escalation::EscalationPath;
use crate::policy::Policy;
use crate::quality::QualityRating;
use crate::reserve::{CategoryFill, Reserves};
use crate::tier::Tier;
use crate::validate;

/// Most phone numbers one org may register.
pub const MAX_PHONE_NUMBERS: usize = 256;
/// Most WABA ids one org may register.
pub const MAX_WABA_IDS: usize = 64;

/// One of an org's phone numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneNumberConfig {
    /// Meta's phone number id (digits).
    pub phone_number_id: String,
    /// The number as people see it (`+1 555 0100`); informational.
    #[serde(default)]
    pub display_phone_number: String,
    /// Messages per second; 0 = the policy's default.
    #[serde(default)]
    pub throughput_mps: u32,
}

impl PhoneNumberConfig {
    /// Messages per second this number is configured for: its own rate, or the policy's
    /// default when it gives 0.
    pub fn mps(&self, default_mps: u32) -> u32 {
        match self.throughput_mps {
            0 => default_mps,
            n => n,
        }
    }
}

/// What an operator registers for an org (`PutOrg`, or `[[orgs]]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgConfig {
    /// The org's id.
    pub org_id: String,
    /// Its current messaging tier on WhatsApp.
    pub tier: Tier,
    /// Its current quality rating.
    #[serde(default)]
    pub quality_rating: QualityRating,
    /// Its phone numbers.
    #[serde(default)]
    pub phone_numbers: Vec<PhoneNumberConfig>,
    /// Its WhatsApp Business Account ids (webhooks name these).
    #[serde(default)]
    pub waba_ids: Vec<String>,
    /// Its human escalation path, if it has one.
    #[serde(default)]
    pub escalation_path: Option<EscalationPath>,
    /// Whether it sent templates before tiergate saw it (lifts the start gate).
    #[serde(default)]
    pub has_template_history: bool,
    /// Its own share of the tier kept for AUTHENTICATION, in percent; `None` = the policy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_authentication_percent: Option<u8>,
    /// Its own share kept for UTILITY (and AUTHENTICATION); `None` = the policy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_utility_percent: Option<u8>,
}

impl OrgConfig {
    /// A minimal config: an org at `tier` with no numbers yet.
    pub fn new(org_id: impl Into<String>, tier: Tier) -> Self {
        Self {
            org_id: org_id.into(),
            tier,
            quality_rating: QualityRating::Unknown,
            phone_numbers: Vec::new(),
            waba_ids: Vec::new(),
            escalation_path: None,
            has_template_history: false,
            reserve_authentication_percent: None,
            reserve_utility_percent: None,
        }
    }

    /// The reserves that apply to this org: its own where it sets them, else the policy's.
    pub fn reserves(&self, policy: &Policy) -> Reserves {
        Reserves {
            authentication_percent: self
                .reserve_authentication_percent
                .unwrap_or(policy.reserve_authentication_percent),
            utility_percent: self
                .reserve_utility_percent
                .unwrap_or(policy.reserve_utility_percent),
        }
    }

    /// Adds a phone number (builder style, for tests and embedding).
    pub fn with_phone(mut self, phone_number_id: &str, throughput_mps: u32) -> Self {
        self.phone_numbers.push(PhoneNumberConfig {
            phone_number_id: phone_number_id.to_owned(),
            display_phone_number: String::new(),
            throughput_mps,
        });
        self
    }

    /// Sets the escalation path (builder style).
    pub fn with_escalation(mut self, path: EscalationPath) -> Self {
        self.escalation_path = Some(path);
        self
    }

    /// Checks ids, bounds and duplicates. `max_mps` is the policy's throughput ceiling.
    pub fn validate(&self, max_mps: u32) -> Result<(), ValidationError> {
        validate::org_id(&self.org_id)?;
        if self.phone_numbers.len() > MAX_PHONE_NUMBERS {
            return Err(ValidationError::new(
                "org.phone_numbers",
                format!("at most {MAX_PHONE_NUMBERS}"),
            ));
        }
        if self.waba_ids.len() > MAX_WABA_IDS {
            return Err(ValidationError::new(
                "org.waba_ids",
                format!("at most {MAX_WABA_IDS}"),
            ));
        }
        for (i, p) in self.phone_numbers.iter().enumerate() {
            validate::numeric_id("org.phone_numbers.phone_number_id", &p.phone_number_id)?;
            if p.display_phone_number.len() > 32 {
                return Err(ValidationError::new(
                    "org.phone_numbers.display_phone_number",
                    "at most 32 bytes",
                ));
            }
            if p.throughput_mps > max_mps {
                return Err(ValidationError::new(
                    "org.phone_numbers.throughput_mps",
                    format!("{} is above the maximum of {max_mps}", p.throughput_mps),
                ));
            }
            if self.phone_numbers[..i]
                .iter()
                .any(|q| q.phone_number_id == p.phone_number_id)
            {
                return Err(ValidationError::new(
                    "org.phone_numbers",
                    format!("{} is listed twice", p.phone_number_id),
                ));
            }
        }
        for w in &self.waba_ids {
            validate::numeric_id("org.waba_ids", w)?;
        }
        let a = self.reserve_authentication_percent.unwrap_or(0);
        let u = self.reserve_utility_percent.unwrap_or(0);
        if a > 100 {
            return Err(ValidationError::new(
                "org.reserve_authentication_percent",
                format!("{a} is not a percentage (0..=100)"),
            ));
        }
        if u16::from(a) + u16::from(u) > 100 {
            return Err(ValidationError::new(
                "org.reserve_utility_percent",
                format!("{a} % + {u} % kept in reserve is more than the whole tier"),
            ));
        }
        Ok(())
    }
}

/// A template the org may not send right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplatePause {
    /// The template's name.
    pub template_name: String,
    /// When the pause ends; `None` = disabled until reinstated.
    pub until_ms: Option<u64>,
}

/// A number's live state after WhatsApp's feedback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NumberStatus {
    /// The number's id, as registered in the org's config.
    pub phone_number_id: String,
    /// Messages per second now (below the configured rate after an AIMD cut).
    pub effective_mps: u32,
    /// Paused by the spam rate limit (131048) until then.
    pub paused_until_ms: Option<u64>,
}

/// An org's live state: its config plus everything the engine derived (`GetOrg`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrgStatus {
    /// The registered config, with the current tier, rating and path.
    pub config: OrgConfig,
    /// Whether a template was ever sent (config flag or a recorded send).
    pub has_template_history: bool,
    /// A tier increase held until an escalation path is set.
    pub pending_tier: Option<Tier>,
    /// Whether the quality restriction is in force (RED past its grace).
    pub restricted: bool,
    /// When the org was rated RED; `None` when not flagged.
    pub flagged_since_ms: Option<u64>,
    /// Whether the account is blocked (rule 3).
    pub account_restricted: bool,
    /// Usage now, as the next send to a new recipient would see it.
    pub usage: Usage,
    /// The latest appeal.
    pub appeal: Option<Appeal>,
    /// Templates paused or disabled.
    pub paused_templates: Vec<TemplatePause>,
    /// Each active number's rate and pause.
    pub numbers: Vec<NumberStatus>,
    /// Pairs backed off after error 131056.
    pub pair_backoffs: usize,
    /// Recipients not marketed to now (131049, 131050, 130472).
    pub marketing_blocked_recipients: usize,
    /// Whether the org meets Meta's conditions for the next tier (quality not RED, at least
    /// `upgrade_usage_percent` of its limit used in 7 days). Meta decides; the tier does not
    /// change until it says so (unless `policy.auto_upgrade`).
    pub upgrade_eligible: bool,
    /// Since when it has been eligible.
    pub upgrade_eligible_since_ms: Option<u64>,
    /// Meta disabled marketing on the Cloud API for this business (131063): MARKETING sends are
    /// denied until an admin clears it.
    pub marketing_api_required: bool,
    /// Meta reduced the limit (131064): the restricted tier applies until Meta's next limit.
    pub limit_reduced: bool,
    /// Whether Meta is holding the org's sends for quality assessment (portfolio pacing).
    pub pacing_review: bool,
    /// When Meta last held one of its sends.
    pub pacing_held_at_ms: Option<u64>,
    /// The category reserves in force (the org's own, else the policy's).
    pub reserves: Reserves,
    /// The fullest window's recipients by the category that took their slot.
    pub fill: CategoryFill,
}
