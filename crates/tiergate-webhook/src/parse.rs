//! The webhook body, parsed completely before anything is applied.
//!
//! WhatsApp retries a body it was not answered 200 for, so a body must be applied whole or not at
//! all: every change is checked here before [`crate::plan`] maps any of them.
//! Field names follow Meta's webhook reference. Unknown `field`s are kept as
//! [`Change::Ignored`] (counted, answered 200); a body that is not a WhatsApp Business Account
//! notification, or a known field whose value lacks what the governor needs, is an error and
//! nothing from that body is applied.

use serde::Deserialize;
use serde_json::Value;
use tiergate_core::Tier;

/// Most changes one body may carry: a bound on the work one signed request can cause.
pub const MAX_CHANGES: usize = 1_000;

/// Why a body was refused (HTTP 400): the first field that lacks what the governor needs, so
/// whoever configured the webhook can see which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// The events of `phone_number_quality_update`: which one decides whether the rating changes,
/// the number's throughput is raised, or only the reported limit is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QualityEvent {
    /// Legacy: rated low quality.
    Flagged,
    /// Legacy: the flag was lifted.
    Unflagged,
    /// The messaging limit went up.
    Upgrade,
    /// The messaging limit went down.
    Downgrade,
    /// A number is being onboarded with a limit.
    Onboarding,
    /// The number's throughput was raised (to 1,000 msg/s).
    ThroughputUpgrade,
}

/// One change, ready to map to engine facts ([`crate::Plan`]). Each carries the ids that say
/// which org it is for ([`crate::plan::ids`]) and only the values the governor acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `phone_number_quality_update`.
    PhoneQuality {
        /// The WABA (`entry[].id`): names the org when the number does not.
        waba_id: String,
        /// `display_phone_number`: names the number, and through it the org, first.
        display_phone_number: String,
        /// `event`: what happened to the rating or the throughput.
        event: QualityEvent,
        /// `current_limit`, when given: the tier WhatsApp now holds the number to.
        current_limit: Option<Tier>,
    },
    /// `business_capability_update`: the portfolio's messaging limit.
    Capability {
        /// The WABA, which names the org.
        waba_id: String,
        /// The limit as a tier: requested like any tier change, so an increase is gated.
        limit: Tier,
    },
    /// `account_update`.
    Account {
        /// The WABA, which names the org.
        waba_id: String,
        /// `Some(true)`: restrict; `Some(false)`: reinstate; `None`: nothing to do.
        restrict: Option<bool>,
    },
    /// `message_template_status_update`.
    TemplateStatus {
        /// The WABA, which names the org.
        waba_id: String,
        /// The template's name: pauses are per template.
        template_name: String,
        /// What happened, and so how long sends of it are refused.
        status: TemplateStatus,
    },
    /// `message_template_quality_update` (noted; WhatsApp pauses by a status update).
    TemplateQuality {
        /// The WABA, which names the org.
        waba_id: String,
        /// The template's name. Not acted on (WhatsApp pauses by a status update), kept so the
        /// change reads whole in logs and tests.
        template_name: String,
        /// The new score (GREEN, YELLOW, RED, UNKNOWN); likewise not acted on.
        new_score: String,
    },
    /// A `messages` status carrying WhatsApp error codes.
    SendError {
        /// The WABA the notification came under (the number names the org).
        waba_id: String,
        /// `metadata.phone_number_id`: the sending number, which names the org and is the one
        /// throughput cuts and pauses apply to.
        phone_number_id: String,
        /// `statuses[].recipient_id`: the pair that pair-rate back-off applies to.
        recipient: Option<String>,
        /// `statuses[].errors[].code`: which reaction applies.
        code: i32,
    },
    /// A field the governor does not use.
    Ignored {
        /// The field's name (at most 64 characters), counted by name in metrics.
        field: String,
    },
}

impl Change {
    /// The webhook field, so metrics count changes by what Meta calls them.
    pub fn field(&self) -> &str {
        match self {
            Change::PhoneQuality { .. } => "phone_number_quality_update",
            Change::Capability { .. } => "business_capability_update",
            Change::Account { .. } => "account_update",
            Change::TemplateStatus { .. } => "message_template_status_update",
            Change::TemplateQuality { .. } => "message_template_quality_update",
            Change::SendError { .. } => "messages",
            Change::Ignored { field } => field,
        }
    }
}

/// A template status change, reduced to what it means for sends of the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateStatus {
    /// Paused for this long (FIRST_PAUSE 3 h, SECOND_PAUSE 6 h; `None`: the policy default).
    Paused(Option<u64>),
    /// Disabled: refused until reinstated.
    Disabled,
    /// Back in service (REINSTATED, UNPAUSE).
    Reinstated,
    /// Other events (APPROVED, REJECTED, …): nothing to do.
    Other,
}

#[derive(Deserialize)]
struct Body {
    object: String,
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    id: Value,
    #[serde(default)]
    changes: Vec<RawChange>,
}

#[derive(Deserialize)]
struct RawChange {
    field: String,
    #[serde(default)]
    value: Value,
}

const HOUR_MS: u64 = 3_600_000;

fn id_string(v: &Value, what: &str) -> Result<String, ParseError> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_u64() => n.to_string(),
        _ => return Err(ParseError(format!("{what} must be an id"))),
    };
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError(format!("{what} {s:?} is not a numeric id")));
    }
    Ok(s)
}

fn str_field<'a>(v: &'a Value, key: &str, field: &str) -> Result<&'a str, ParseError> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| ParseError(format!("{field}: value.{key} must be a string")))
}

fn tier_value(v: &Value, what: &str) -> Result<Tier, ParseError> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(Tier::from_limit)
            .ok_or_else(|| ParseError(format!("{what}: {n} is not a tier limit"))),
        Value::String(s) => s.parse().map_err(|e| ParseError(format!("{what}: {e}"))),
        _ => Err(ParseError(format!("{what} must be a tier"))),
    }
}

/// Parses a whole body. Every change is checked before any is returned.
pub fn parse(body: &[u8]) -> Result<Vec<Change>, ParseError> {
    let body: Body =
        serde_json::from_slice(body).map_err(|e| ParseError(format!("malformed JSON: {e}")))?;
    if body.object != "whatsapp_business_account" {
        return Err(ParseError(format!(
            "object {:?} is not whatsapp_business_account",
            body.object
        )));
    }
    let total: usize = body.entry.iter().map(|e| e.changes.len()).sum();
    if total > MAX_CHANGES {
        return Err(ParseError(format!(
            "{total} changes in one body; at most {MAX_CHANGES}"
        )));
    }
    let mut out = Vec::with_capacity(total);
    for entry in &body.entry {
        let waba_id = id_string(&entry.id, "entry.id")?;
        for c in &entry.changes {
            change(&waba_id, c, &mut out)?;
        }
    }
    Ok(out)
}

fn change(waba_id: &str, c: &RawChange, out: &mut Vec<Change>) -> Result<(), ParseError> {
    let v = &c.value;
    let f = c.field.as_str();
    let waba_id = waba_id.to_owned();
    match f {
        "phone_number_quality_update" => {
            let event = match str_field(v, "event", f)? {
                "FLAGGED" => QualityEvent::Flagged,
                "UNFLAGGED" => QualityEvent::Unflagged,
                "UPGRADE" => QualityEvent::Upgrade,
                "DOWNGRADE" => QualityEvent::Downgrade,
                "ONBOARDING" => QualityEvent::Onboarding,
                "THROUGHPUT_UPGRADE" => QualityEvent::ThroughputUpgrade,
                other => return Err(ParseError(format!("{f}: unknown event {other:?}"))),
            };
            let current_limit = v
                .get("current_limit")
                .filter(|l| !l.is_null())
                .map(|l| tier_value(l, "current_limit"))
                .transpose()?;
            out.push(Change::PhoneQuality {
                waba_id,
                display_phone_number: str_field(v, "display_phone_number", f)?.to_owned(),
                event,
                current_limit,
            });
        }
        "business_capability_update" => {
            let limit = [
                "max_daily_conversations_per_business",
                "max_daily_conversation_per_phone",
            ]
            .iter()
            .find_map(|k| v.get(*k))
            .ok_or_else(|| ParseError(format!("{f}: no messaging limit in value")))?;
            out.push(Change::Capability {
                waba_id,
                limit: tier_value(limit, "messaging limit")?,
            });
        }
        "account_update" => {
            let event = str_field(v, "event", f)?;
            let restrict = match event {
                "DISABLED_UPDATE" => {
                    let states = v
                        .pointer("/ban_info/waba_ban_state")
                        .and_then(Value::as_array)
                        .ok_or_else(|| {
                            ParseError(format!("{f}: ban_info.waba_ban_state missing"))
                        })?;
                    let has = |s: &str| states.iter().any(|x| x.as_str() == Some(s));
                    if has("DISABLE") {
                        Some(true)
                    } else if has("REINSTATE") {
                        Some(false)
                    } else {
                        None
                    }
                }
                "ACCOUNT_VIOLATION" => Some(true),
                _ => None,
            };
            out.push(Change::Account { waba_id, restrict });
        }
        "message_template_status_update" => {
            let status = match str_field(v, "event", f)? {
                "PAUSED" => Change::pause_length(v),
                "DISABLED" => TemplateStatus::Disabled,
                "REINSTATED" | "UNPAUSE" | "UNPAUSED" => TemplateStatus::Reinstated,
                _ => TemplateStatus::Other,
            };
            out.push(Change::TemplateStatus {
                waba_id,
                template_name: str_field(v, "message_template_name", f)?.to_owned(),
                status,
            });
        }
        "message_template_quality_update" => out.push(Change::TemplateQuality {
            waba_id,
            template_name: str_field(v, "message_template_name", f)?.to_owned(),
            new_score: str_field(v, "new_quality_score", f)?.to_owned(),
        }),
        "messages" => {
            let phone_number_id = v
                .pointer("/metadata/phone_number_id")
                .map(|p| id_string(p, "metadata.phone_number_id"))
                .transpose()?;
            let statuses = v.get("statuses").and_then(Value::as_array);
            for s in statuses.into_iter().flatten() {
                let Some(errors) = s.get("errors").and_then(Value::as_array) else {
                    continue;
                };
                let phone_number_id = phone_number_id.clone().ok_or_else(|| {
                    ParseError("messages: metadata.phone_number_id missing".into())
                })?;
                let recipient = s
                    .get("recipient_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                for e in errors {
                    let code = e
                        .get("code")
                        .and_then(Value::as_i64)
                        .and_then(|c| i32::try_from(c).ok())
                        .ok_or_else(|| {
                            ParseError("messages: errors[].code must be an integer".into())
                        })?;
                    out.push(Change::SendError {
                        waba_id: waba_id.clone(),
                        phone_number_id: phone_number_id.clone(),
                        recipient: recipient.clone(),
                        code,
                    });
                }
            }
        }
        _ => out.push(Change::Ignored {
            field: c.field.chars().take(64).collect(),
        }),
    }
    Ok(())
}

impl Change {
    fn pause_length(v: &Value) -> TemplateStatus {
        let title = v
            .pointer("/other_info/title")
            .and_then(Value::as_str)
            .unwrap_or_default();
        TemplateStatus::Paused(match title {
            "FIRST_PAUSE" => Some(3 * HOUR_MS),
            "SECOND_PAUSE" => Some(6 * HOUR_MS),
            _ => None,
        })
    }
}
