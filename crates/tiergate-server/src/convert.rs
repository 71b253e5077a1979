//! Translation between the wire types of `tiergate.v1` and the engine's types.
//!
//! Validation happens here, at the edge: an unknown enum value, an UNSPECIFIED tier or a bad
//! contact become `INVALID_ARGUMENT` naming the field, before anything reaches the engine.

use tiergate_core as core;
use tiergate_proto::v1 as pb;
use tiergate_store::ErrorChain;
use tonic::Status;

use crate::error::GateError;

/// Maps an engine error to its gRPC status, keeping the engine's message (field and reason).
pub fn status(e: core::EngineError) -> Status {
    use core::EngineError::*;
    let msg = e.to_string();
    match e {
        Invalid(v) => Status::invalid_argument(v.to_string()),
        UnknownOrg(_) | UnknownPhoneNumber { .. } | UnknownPermit(_) | UnknownAppeal(_) => {
            Status::not_found(msg)
        }
        PermitAlreadyReported(_) | AppealConflict(_) => Status::failed_precondition(msg),
        Internal(_) => Status::internal(msg),
    }
}

/// The status of a batch refused at item `index`, naming the item's field: an unknown org
/// `sends[i].org_id`, an unknown number `sends[i].phone_number_id`; a field error already
/// names it (`sends[i].recipient`).
pub fn item_status(index: usize, e: core::EngineError) -> Status {
    use core::EngineError::*;
    match e {
        Invalid(_) => status(e),
        UnknownOrg(_) => Status::not_found(format!("sends[{index}].org_id: {e}")),
        UnknownPhoneNumber { .. } => {
            Status::not_found(format!("sends[{index}].phone_number_id: {e}"))
        }
        e => {
            let s = status(e);
            Status::new(s.code(), format!("sends[{index}]: {}", s.message()))
        }
    }
}

/// The one mapping of a gate error to its gRPC status: the engine's as [`status`]; a store that
/// cannot be reached, or lost its data, `UNAVAILABLE` (try again, here or elsewhere); a store
/// this replica cannot read, or an outcome of the wrong kind, `INTERNAL` (trying again will not
/// help). The message carries the whole cause chain.
impl From<GateError> for Status {
    fn from(e: GateError) -> Self {
        match e {
            GateError::Engine(e) => status(e),
            GateError::Item { index, error } => item_status(index, error),
            GateError::StoreUnavailable(_) | GateError::StoreLost => {
                Status::unavailable(ErrorChain(&e).to_string())
            }
            GateError::StoreInconsistent(_) | GateError::Unexpected { .. } => {
                Status::internal(ErrorChain(&e).to_string())
            }
        }
    }
}

fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

/// A category; UNSPECIFIED and unknown values are refused.
pub fn category(v: i32) -> Result<core::Category, Status> {
    match pb::Category::try_from(v) {
        Ok(pb::Category::Marketing) => Ok(core::Category::Marketing),
        Ok(pb::Category::Utility) => Ok(core::Category::Utility),
        Ok(pb::Category::Authentication) => Ok(core::Category::Authentication),
        Ok(pb::Category::Unspecified) => Err(invalid("category", "must be set")),
        Err(_) => Err(invalid("category", format!("unknown value {v}"))),
    }
}

/// A tier; UNSPECIFIED and unknown values are refused.
pub fn tier(field: &str, v: i32) -> Result<core::Tier, Status> {
    use core::Tier::*;
    Ok(match pb::Tier::try_from(v) {
        Ok(pb::Tier::Tier50) => Tier50,
        Ok(pb::Tier::Tier250) => Tier250,
        Ok(pb::Tier::Tier1k) => Tier1K,
        Ok(pb::Tier::Tier2k) => Tier2K,
        Ok(pb::Tier::Tier10k) => Tier10K,
        Ok(pb::Tier::Tier100k) => Tier100K,
        Ok(pb::Tier::Unlimited) => Unlimited,
        Ok(pb::Tier::Unspecified) => return Err(invalid(field, "must be set (TIER_UNSPECIFIED)")),
        Err(_) => return Err(invalid(field, format!("unknown value {v}"))),
    })
}

/// The wire value of a tier.
pub fn tier_pb(t: core::Tier) -> pb::Tier {
    use core::Tier::*;
    match t {
        Tier50 => pb::Tier::Tier50,
        Tier250 => pb::Tier::Tier250,
        Tier1K => pb::Tier::Tier1k,
        Tier2K => pb::Tier::Tier2k,
        Tier10K => pb::Tier::Tier10k,
        Tier100K => pb::Tier::Tier100k,
        Unlimited => pb::Tier::Unlimited,
    }
}

/// A rating; UNSPECIFIED means "not given" and maps to UNKNOWN only where `default_unknown`.
pub fn rating(field: &str, v: i32, default_unknown: bool) -> Result<core::QualityRating, Status> {
    use core::QualityRating::*;
    Ok(match pb::QualityRating::try_from(v) {
        Ok(pb::QualityRating::Green) => Green,
        Ok(pb::QualityRating::Yellow) => Yellow,
        Ok(pb::QualityRating::Red) => Red,
        Ok(pb::QualityRating::Unknown) => Unknown,
        Ok(pb::QualityRating::Unspecified) if default_unknown => Unknown,
        Ok(pb::QualityRating::Unspecified) => return Err(invalid(field, "must be set")),
        Err(_) => return Err(invalid(field, format!("unknown value {v}"))),
    })
}

/// The wire value of a rating.
pub fn rating_pb(r: core::QualityRating) -> pb::QualityRating {
    use core::QualityRating::*;
    match r {
        Green => pb::QualityRating::Green,
        Yellow => pb::QualityRating::Yellow,
        Red => pb::QualityRating::Red,
        Unknown => pb::QualityRating::Unknown,
    }
}

/// An escalation path, validated by kind.
pub fn escalation(field: &str, p: &pb::EscalationPath) -> Result<core::EscalationPath, Status> {
    use core::EscalationKind::*;
    let kind = match pb::EscalationKind::try_from(p.kind) {
        Ok(pb::EscalationKind::HumanHandoff) => HumanHandoff,
        Ok(pb::EscalationKind::Phone) => Phone,
        Ok(pb::EscalationKind::Email) => Email,
        Ok(pb::EscalationKind::WebForm) => WebForm,
        Ok(pb::EscalationKind::InStore) => InStore,
        Ok(pb::EscalationKind::Unspecified) => {
            return Err(invalid(&format!("{field}.kind"), "must be set"));
        }
        Err(_) => {
            return Err(invalid(
                &format!("{field}.kind"),
                format!("unknown value {}", p.kind),
            ));
        }
    };
    core::EscalationPath::new(kind, &p.contact)
        .map_err(|e| invalid(&format!("{field}.contact"), e.reason))
}

fn escalation_pb(p: &core::EscalationPath) -> pb::EscalationPath {
    use core::EscalationKind::*;
    let kind = match p.kind() {
        HumanHandoff => pb::EscalationKind::HumanHandoff,
        Phone => pb::EscalationKind::Phone,
        Email => pb::EscalationKind::Email,
        WebForm => pb::EscalationKind::WebForm,
        InStore => pb::EscalationKind::InStore,
    };
    pb::EscalationPath {
        kind: kind as i32,
        contact: p.contact().to_owned(),
    }
}

/// The wire value of a deny reason (`None`: UNSPECIFIED, on ALLOW).
pub fn reason_pb(r: Option<core::DenyReason>) -> pb::DenyReason {
    use core::DenyReason::*;
    match r {
        None => pb::DenyReason::Unspecified,
        Some(AccountRestricted) => pb::DenyReason::AccountRestricted,
        Some(TemplatePaused) => pb::DenyReason::TemplatePaused,
        Some(RecipientMarketingLimit) => pb::DenyReason::RecipientMarketingLimit,
        Some(MarketingApiRequired) => pb::DenyReason::MarketingApiRequired,
        Some(EscalationPathRequired) => pb::DenyReason::EscalationPathRequired,
        Some(WeeklyCapWithoutEscalation) => pb::DenyReason::WeeklyCapWithoutEscalation,
        Some(QualityRestricted) => pb::DenyReason::QualityRestricted,
        Some(TierLimit) => pb::DenyReason::TierLimit,
        Some(CategoryReserve) => pb::DenyReason::CategoryReserve,
        Some(Throughput) => pb::DenyReason::Throughput,
        Some(PairRate) => pb::DenyReason::PairRate,
    }
}

/// The wire value of an advice: the same names, prefixed `ADVICE_`.
pub fn advice_pb(a: core::Advice) -> pb::Advice {
    match a {
        core::Advice::Unspecified => pb::Advice::Unspecified,
        core::Advice::RetryAfter => pb::Advice::RetryAfter,
        core::Advice::DoNotRetry => pb::Advice::DoNotRetry,
        core::Advice::TemplatePaused => pb::Advice::TemplatePaused,
        core::Advice::StopSending => pb::Advice::StopSending,
        core::Advice::UseMarketingApi => pb::Advice::UseMarketingApi,
    }
}

/// Usage on the wire (`tier_limit` 0 = unlimited).
pub fn usage_pb(u: &core::Usage) -> pb::Usage {
    pb::Usage {
        tier: tier_pb(u.tier) as i32,
        tier_limit: u.tier_limit.unwrap_or(0),
        unique_recipients_24h: u.unique_recipients_24h,
        templates_7d: u.templates_7d,
        quality_rating: rating_pb(u.quality_rating) as i32,
        passthrough: u.passthrough,
        restricted: u.restricted,
    }
}

/// A decision on the wire.
pub fn decision_pb(d: &core::Decision) -> pb::AcquireResponse {
    pb::AcquireResponse {
        verdict: if d.is_allowed() {
            pb::Verdict::Allow
        } else {
            pb::Verdict::Deny
        } as i32,
        reason: reason_pb(d.reason) as i32,
        retry_after_ms: d.retry_after_ms,
        permit_id: d
            .permit
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        usage: Some(usage_pb(&d.usage)),
    }
}

/// An org registration from the wire. Read-only fields are ignored.
pub fn org_config(o: &pb::Org) -> Result<core::OrgConfig, Status> {
    let mut cfg = core::OrgConfig::new(o.org_id.clone(), tier("org.tier", o.tier)?);
    cfg.quality_rating = rating("org.quality_rating", o.quality_rating, true)?;
    cfg.phone_numbers = o
        .phone_numbers
        .iter()
        .map(|p| core::PhoneNumberConfig {
            phone_number_id: p.phone_number_id.clone(),
            display_phone_number: p.display_phone_number.clone(),
            throughput_mps: p.throughput_mps,
        })
        .collect();
    cfg.waba_ids = o.waba_ids.clone();
    cfg.escalation_path = o
        .escalation_path
        .as_ref()
        .map(|p| escalation("org.escalation_path", p))
        .transpose()?;
    cfg.has_template_history = o.has_template_history;
    cfg.reserve_authentication_percent = percent(
        "org.reserve_authentication_percent",
        o.reserve_authentication_percent,
    )?;
    cfg.reserve_utility_percent =
        percent("org.reserve_utility_percent", o.reserve_utility_percent)?;
    Ok(cfg)
}

/// An optional percentage from the wire (0..=100).
#[allow(clippy::result_large_err)]
fn percent(field: &str, v: Option<u32>) -> Result<Option<u8>, Status> {
    match v {
        None => Ok(None),
        Some(p) if p <= 100 => Ok(Some(p as u8)),
        Some(p) => Err(Status::invalid_argument(format!(
            "{field}: {p} is not a percentage (0..=100)"
        ))),
    }
}

/// A campaign plan on the wire (SPEC §2a).
pub fn plan_pb(p: &core::Plan) -> pb::PlanResponse {
    pb::PlanResponse {
        allowed_now: p.allowed_now,
        waves: p
            .waves
            .iter()
            .map(|w| pb::PlanWave {
                at_unix_ms: w.at_ms as i64,
                count: w.count,
            })
            .collect(),
        completes_at_unix_ms: p.completes_at_ms.map_or(0, |t| t as i64),
        binding: reason_pb(p.binding) as i32,
        already_counted: p.already_counted,
        never: p.never.len() as u64,
        never_indexes: p.never.clone(),
        unplanned: p.unplanned,
        planned_at_unix_ms: p.planned_at_ms as i64,
    }
}

/// An appeal on the wire.
pub fn appeal_pb(a: &core::Appeal) -> pb::Appeal {
    let status = match a.status {
        core::AppealStatus::Pending => pb::AppealStatus::Pending,
        core::AppealStatus::Approved => pb::AppealStatus::Approved,
        core::AppealStatus::Rejected => pb::AppealStatus::Rejected,
    };
    pb::Appeal {
        appeal_id: a.appeal_id.to_string(),
        org_id: a.appeal_id.org_id.clone(),
        status: status as i32,
        evidence: a.evidence.clone(),
        filed_at_unix_ms: a.filed_at_ms as i64,
    }
}

/// An org's live status on the wire.
pub fn org_pb(s: &core::OrgStatus) -> pb::Org {
    let c = &s.config;
    pb::Org {
        org_id: c.org_id.clone(),
        tier: tier_pb(c.tier) as i32,
        quality_rating: rating_pb(c.quality_rating) as i32,
        phone_numbers: c
            .phone_numbers
            .iter()
            .map(|p| pb::PhoneNumber {
                phone_number_id: p.phone_number_id.clone(),
                display_phone_number: p.display_phone_number.clone(),
                throughput_mps: p.throughput_mps,
            })
            .collect(),
        waba_ids: c.waba_ids.clone(),
        escalation_path: c.escalation_path.as_ref().map(escalation_pb),
        has_template_history: s.has_template_history,
        pending_tier: s.pending_tier.map_or(pb::Tier::Unspecified, tier_pb) as i32,
        restricted: s.restricted,
        flagged_since_unix_ms: s.flagged_since_ms.map_or(0, |t| t as i64),
        usage: Some(usage_pb(&s.usage)),
        appeal: s.appeal.as_ref().map(appeal_pb),
        account_restricted: s.account_restricted,
        paused_templates: s
            .paused_templates
            .iter()
            .map(|p| pb::TemplatePause {
                template_name: p.template_name.clone(),
                until_unix_ms: p.until_ms.map_or(0, |t| t as i64),
                disabled: p.until_ms.is_none(),
            })
            .collect(),
        numbers: s
            .numbers
            .iter()
            .map(|n| pb::NumberStatus {
                phone_number_id: n.phone_number_id.clone(),
                effective_mps: n.effective_mps,
                paused_until_unix_ms: n.paused_until_ms.map_or(0, |t| t as i64),
            })
            .collect(),
        pair_backoffs: s.pair_backoffs as u64,
        marketing_blocked_recipients: s.marketing_blocked_recipients as u64,
        upgrade_eligible: s.upgrade_eligible,
        upgrade_eligible_since_unix_ms: s.upgrade_eligible_since_ms.map_or(0, |t| t as i64),
        marketing_api_required: s.marketing_api_required,
        limit_reduced: s.limit_reduced,
        pacing_review: s.pacing_review,
        pacing_held_at_unix_ms: s.pacing_held_at_ms.map_or(0, |t| t as i64),
        reserve_authentication_percent: c.reserve_authentication_percent.map(u32::from),
        reserve_utility_percent: c.reserve_utility_percent.map(u32::from),
        reserves_in_force: Some(pb::Reserves {
            authentication_percent: u32::from(s.reserves.authentication_percent),
            utility_percent: u32::from(s.reserves.utility_percent),
        }),
        fill: Some(pb::CategoryFill {
            marketing: s.fill.marketing,
            utility: s.fill.utility,
            authentication: s.fill.authentication,
            unattributed: s.fill.unattributed,
        }),
    }
}

/// A required string field: empty means missing.
pub fn required<'a>(field: &str, v: &'a str) -> Result<&'a str, Status> {
    if v.is_empty() {
        Err(invalid(field, "must not be empty"))
    } else {
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use tiergate_core::{EngineError, ValidationError};
    use tiergate_store::{RedisStoreError, StoreError};
    use tonic::Code;

    use crate::error::GateError;

    use super::*;

    fn code(e: impl Into<GateError>) -> Code {
        Status::from(e.into()).code()
    }

    #[test]
    fn each_gate_error_maps_to_its_grpc_code() {
        let invalid = EngineError::Invalid(ValidationError::new("recipient", "not a number"));
        assert_eq!(code(invalid), Code::InvalidArgument);
        assert_eq!(code(EngineError::UnknownOrg("x".into())), Code::NotFound);
        assert_eq!(code(EngineError::UnknownPermit("p".into())), Code::NotFound);
        assert_eq!(
            code(EngineError::PermitAlreadyReported("p".into())),
            Code::FailedPrecondition
        );
        // Redis, sorted by what the caller can do: retry (unreachable), nothing (lost: refused
        // until a restart, still UNAVAILABLE to clients), or report a bug (unreadable).
        assert_eq!(code(RedisStoreError::BatcherStopped), Code::Unavailable);
        assert!(matches!(
            GateError::from(RedisStoreError::BatcherStopped),
            GateError::StoreUnavailable(_)
        ));
        assert!(matches!(
            GateError::from(RedisStoreError::Lost),
            GateError::StoreLost
        ));
        assert_eq!(code(RedisStoreError::Lost), Code::Unavailable);
        assert_eq!(
            code(RedisStoreError::Protocol("garbage".into())),
            Code::Internal
        );
        // The embedded store after start: a commit failed, or the writer is gone.
        let path = PathBuf::from("/data/tiergate.redb");
        let stopped = StoreError::WriterStopped { path: path.clone() };
        assert_eq!(code(stopped), Code::Unavailable);
        let failed = StoreError::CommitFailed(Arc::new(StoreError::WriterStopped { path }));
        assert_eq!(code(failed), Code::Unavailable);
        let unexpected = GateError::Unexpected {
            call: "decide",
            outcome: "Org(..)".into(),
        };
        assert_eq!(code(unexpected), Code::Internal);
    }

    #[test]
    fn store_errors_carry_their_cause_chain_to_the_message() {
        let inner = StoreError::WriterStopped {
            path: PathBuf::from("/data/tiergate.redb"),
        };
        let s = Status::from(GateError::from(StoreError::CommitFailed(Arc::new(inner))));
        assert_eq!(
            s.message(),
            "state store unavailable: an earlier batch failed to commit: no later change is \
             acknowledged: store /data/tiergate.redb: the writer stopped: no later change is \
             acknowledged"
        );
        // The engine's message is the engine's, as before.
        let s = Status::from(GateError::from(EngineError::UnknownOrg("acme".into())));
        assert_eq!(s.message(), "unknown org \"acme\"");
    }

    #[test]
    fn only_store_failures_count_as_store_failures() {
        assert!(GateError::from(RedisStoreError::Lost).is_store());
        assert!(GateError::from(RedisStoreError::BatcherStopped).is_store());
        assert!(GateError::from(RedisStoreError::Protocol("x".into())).is_store());
        assert!(!GateError::from(EngineError::UnknownOrg("x".into())).is_store());
    }

    #[test]
    fn advice_keeps_its_name_on_the_wire() {
        use tiergate_core::Advice;
        for a in Advice::ALL {
            let wire = advice_pb(a).as_str_name();
            assert_eq!(wire, format!("ADVICE_{}", a.label().to_uppercase()));
        }
    }
}
