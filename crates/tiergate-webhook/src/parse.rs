//! The webhook body, parsed change by change before anything is applied.
//!
//! Meta retries a delivery it was not answered 200 for, for up to 7 days, and a retry carries
//! the same bytes: refusing a body because one change in it cannot be read would lose every
//! readable change beside it and gain nothing. So (SPEC §5):
//!
//! * a body that is not JSON, not a `whatsapp_business_account` notification (an object whose
//!   `entry` is an array), or over [`MAX_CHANGES`], is refused whole ([`ParseError`], HTTP 400);
//! * inside a notification, each change is read on its own: one that lacks what the governor
//!   needs, or carries a value it does not know (an unknown event, a limit such as `1234`),
//!   becomes [`Change::Unreadable`] with the reason, counted and logged by the shell, and the
//!   others apply;
//! * a `field` the governor does not use is [`Change::Ignored`] (counted by name).
//!
//! Field names follow Meta's webhook reference, old and 2026 names alike (see [`LIMIT_KEYS`]).
//! Every change carries a [`DeliveryKey`] so a redelivery is applied once ([`crate::Plan`]).

use serde_json::Value;
use tiergate_core::Tier;

pub use crate::key::DeliveryKey;
use crate::messages;

/// Most changes one body may carry: a bound on the work one signed request can cause.
pub const MAX_CHANGES: usize = 1_000;

/// Longest field name kept (in metrics labels and logs); longer names are cut.
pub const MAX_FIELD_LEN: usize = 64;

/// Where a messaging limit may be, first match wins: the 2026 names, then the older ones.
/// `whatsapp_business_manager_messaging_limit` replaces `messaging_limit_tier` and
/// `max_daily_conversations_per_business` replaces `max_daily_conversation_per_phone` and
/// `phone_number_quality_update`'s `current_limit` (removed by Meta in February 2026); a body
/// from either side of the change reads the same.
pub const LIMIT_KEYS: [&str; 5] = [
    "whatsapp_business_manager_messaging_limit",
    "max_daily_conversations_per_business",
    "current_limit",
    "messaging_limit_tier",
    "max_daily_conversation_per_phone",
];

/// Why a whole body was refused (HTTP 400): it is not a WhatsApp Business Account notification
/// at all, or is too big to apply, so whoever configured the webhook can see which. A change
/// that cannot be read is not an error but a [`Change::Unreadable`].
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

/// One change read from a body, with the key that names it across redeliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// What the change says.
    pub change: Change,
    /// What a redelivery of the same change reproduces ([`DeliveryKey`]); the plan applies it
    /// first so that the org drops a change it already applied.
    pub key: DeliveryKey,
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
        /// The limit reported with it ([`LIMIT_KEYS`]), when given and set: the tier WhatsApp
        /// now holds the portfolio to. `TIER_NOT_SET` is `None`: no limit, no tier change.
        current_limit: Option<Tier>,
    },
    /// `business_capability_update`: the portfolio's messaging limit.
    Capability {
        /// The WABA, which names the org.
        waba_id: String,
        /// The limit as a tier: requested like any tier change, so an increase is gated.
        /// `None` when the update sets none (`TIER_NOT_SET`, or only other capabilities such
        /// as `max_phone_numbers_per_waba`): nothing to change.
        limit: Option<Tier>,
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
    /// A `messages` status carrying WhatsApp error codes: one change per code.
    SendError {
        /// The WABA the notification came under (the number names the org).
        waba_id: String,
        /// `metadata.phone_number_id`: the sending number, which names the org and is the one
        /// throughput cuts and pauses apply to.
        phone_number_id: String,
        /// `statuses[].recipient_id`, the recipient's phone: the pair that pair-rate back-off
        /// applies to. Absent when Meta names the recipient only by its BSUID (2026).
        recipient: Option<String>,
        /// `statuses[].recipient_user_id`, the recipient's business-scoped user id (2026),
        /// checked for shape. Not passed to the core yet (it takes phone recipients only); kept
        /// so a status that names no phone says why its reaction could not apply.
        recipient_user_id: Option<String>,
        /// `statuses[].errors[].code`: which reaction applies.
        code: i32,
    },
    /// A `messages` status `held_for_quality_assessment`: Meta held one of the portfolio's
    /// sends to assess it (portfolio pacing, Dec 2025).
    PacingHeld {
        /// The WABA the notification came under.
        waba_id: String,
        /// `metadata.phone_number_id`: the sending number, which names the org.
        phone_number_id: String,
    },
    /// `messages.contacts[]` naming one person by more than one id (2026): a phone (`wa_id`)
    /// with a business-scoped user id (`user_id`) and/or its parent (`parent_user_id`). Each
    /// is checked for shape; the org then counts the person once, whichever id a send uses
    /// (`tiergate_core::Change::RecipientIds`).
    RecipientIds {
        /// The WABA the notification came under.
        waba_id: String,
        /// `metadata.phone_number_id`, when given.
        phone_number_id: Option<String>,
        /// The phone (digits), when given.
        wa_id: Option<String>,
        /// The BSUID (`CC.digits`), when given.
        user_id: Option<String>,
        /// The parent BSUID (`CC.ENT.digits`), when given.
        parent_user_id: Option<String>,
    },
    /// `user_id_update` (2026): a person's BSUID changed from `previous` to `current`; the new
    /// one counts as the old one did (`tiergate_core::Change::UserIdChanged`).
    UserIdUpdate {
        /// The WABA the notification came under.
        waba_id: String,
        /// `metadata.phone_number_id`, when given.
        phone_number_id: Option<String>,
        /// The person's phone, when given.
        wa_id: Option<String>,
        /// The BSUID that no longer names them.
        previous: String,
        /// The BSUID that does now.
        current: String,
    },
    /// A field the governor does not use.
    Ignored {
        /// The field's name (at most [`MAX_FIELD_LEN`] bytes), counted by name in metrics.
        field: String,
    },
    /// A change of a notification that could not be read: counted in metrics and logged, and
    /// answered 200 with the rest, because a retry would carry the same bytes.
    Unreadable {
        /// The field's name (at most [`MAX_FIELD_LEN`] bytes; `(missing)` without one).
        field: String,
        /// What could not be read, for the log.
        why: String,
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
            Change::SendError { .. } | Change::PacingHeld { .. } | Change::RecipientIds { .. } => {
                "messages"
            }
            Change::UserIdUpdate { .. } => "user_id_update",
            Change::Ignored { field } | Change::Unreadable { field, .. } => field,
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

const HOUR_MS: u64 = 3_600_000;

/// Longest piece of a body quoted in a reason, so a log line stays short.
const QUOTE_LEN: usize = 64;

/// `s` cut to [`QUOTE_LEN`] characters, for reasons.
pub(crate) fn quote(s: &str) -> String {
    let mut q: String = s.chars().take(QUOTE_LEN).collect();
    if q.len() < s.len() {
        q.push('…');
    }
    format!("{q:?}")
}

/// A numeric id (WABA, phone number id), as a string or a number.
pub(crate) fn id_string(v: &Value, what: &str) -> Result<String, String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_u64() => n.to_string(),
        _ => return Err(format!("{what} must be an id")),
    };
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} {} is not a numeric id", quote(&s)));
    }
    Ok(s)
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("value.{key} must be a string"))
}

/// A messaging limit as Meta writes it: a `TIER_*` name, a number of recipients as an integer
/// or a string (`2000`, `"2000"`), `UNLIMITED` or `-1` for no limit. `Ok(None)` is
/// `TIER_NOT_SET` (the number has not sent yet): no limit to apply, not an error.
pub fn limit_value(v: &Value) -> Result<Option<Tier>, String> {
    match v {
        Value::Number(n) if n.as_i64() == Some(-1) => Ok(Some(Tier::Unlimited)),
        Value::Number(n) => n
            .as_u64()
            .and_then(Tier::from_limit)
            .map(Some)
            .ok_or_else(|| format!("{n} is not a messaging limit")),
        Value::String(s) => {
            let t = s.trim();
            if t.eq_ignore_ascii_case("TIER_NOT_SET") || t.eq_ignore_ascii_case("NOT_SET") {
                Ok(None)
            } else if t == "-1" {
                Ok(Some(Tier::Unlimited))
            } else {
                t.parse::<Tier>()
                    .map(Some)
                    .map_err(|_| format!("{} is not a messaging limit", quote(s)))
            }
        }
        _ => Err("a messaging limit must be a TIER_* name or a number".into()),
    }
}

/// The limit `v` reports under any of [`LIMIT_KEYS`] (first non-null wins): `Ok(None)` when
/// none is given or it is not set.
fn reported_limit(v: &Value) -> Result<Option<Tier>, String> {
    match LIMIT_KEYS
        .iter()
        .find_map(|k| v.get(*k).filter(|l| !l.is_null()).map(|l| (*k, l)))
    {
        Some((k, l)) => limit_value(l).map_err(|e| format!("value.{k}: {e}")),
        None => Ok(None),
    }
}

/// `field` cut to [`MAX_FIELD_LEN`] bytes (on a character boundary).
fn field_name(field: &str) -> String {
    let mut end = field.len().min(MAX_FIELD_LEN);
    while !field.is_char_boundary(end) {
        end -= 1;
    }
    field[..end].to_owned()
}

/// An [`Change::Unreadable`] for `field`, keyed by its content like any change.
pub(crate) fn unreadable(field: &str, why: String, key: DeliveryKey) -> Parsed {
    Parsed {
        change: Change::Unreadable {
            field: field_name(field),
            why,
        },
        key,
    }
}

/// Parses a whole body. The body is refused only when it is not a notification at all (see the
/// module docs); every change inside one is returned, read or [`Change::Unreadable`].
pub fn parse(body: &[u8]) -> Result<Vec<Parsed>, ParseError> {
    let body: Value =
        serde_json::from_slice(body).map_err(|e| ParseError(format!("malformed JSON: {e}")))?;
    match body.get("object") {
        Some(Value::String(o)) if o == "whatsapp_business_account" => {}
        Some(Value::String(o)) => {
            return Err(ParseError(format!(
                "object {} is not whatsapp_business_account",
                quote(o)
            )));
        }
        _ => {
            return Err(ParseError(
                "not a webhook notification: object must be \"whatsapp_business_account\"".into(),
            ));
        }
    }
    let entries = body
        .get("entry")
        .and_then(Value::as_array)
        .ok_or_else(|| ParseError("entry must be an array".into()))?;
    // A malformed entry counts as one change: it becomes one unreadable change.
    let total: usize = entries
        .iter()
        .map(|e| match e.get("changes") {
            None | Some(Value::Null) => 0,
            Some(Value::Array(c)) => c.len(),
            Some(_) => 1,
        })
        .sum();
    if total > MAX_CHANGES {
        return Err(ParseError(format!(
            "{total} changes in one body; at most {MAX_CHANGES}"
        )));
    }
    let mut out = Vec::with_capacity(total);
    for entry in entries {
        read_entry(entry, &mut out);
    }
    Ok(out)
}

fn read_entry(entry: &Value, out: &mut Vec<Parsed>) {
    let time = entry.get("time").unwrap_or(&Value::Null);
    let changes = match entry.get("changes") {
        None | Some(Value::Null) => return,
        Some(Value::Array(c)) => c,
        Some(other) => {
            let key = DeliveryKey::content("", "entry", other, time);
            out.push(unreadable(
                "entry",
                "entry.changes must be an array".into(),
                key,
            ));
            return;
        }
    };
    let waba_id = entry
        .get("id")
        .ok_or_else(|| "entry.id missing".to_owned())
        .and_then(|id| id_string(id, "entry.id"));
    for c in changes {
        let field = c.get("field").and_then(Value::as_str);
        let value = c.get("value").unwrap_or(&Value::Null);
        let (Some(field), Ok(waba_id)) = (field, waba_id.as_deref()) else {
            let why = match &waba_id {
                Err(why) => why.clone(),
                Ok(_) => "changes[].field must be a string".into(),
            };
            let key = DeliveryKey::content("", "", c, time);
            out.push(unreadable(field.unwrap_or("(missing)"), why, key));
            continue;
        };
        let key = || DeliveryKey::content(waba_id, field, value, time);
        let read = match field {
            "messages" => {
                messages::messages(waba_id, value, out);
                Ok(None)
            }
            "user_id_update" => {
                messages::user_id_update(waba_id, value, time, out);
                Ok(None)
            }
            _ => read_change(waba_id, field, value).map(Some),
        };
        match read {
            Ok(Some(change)) => out.push(Parsed { change, key: key() }),
            Ok(None) => {}
            Err(why) => out.push(unreadable(field, format!("{field}: {why}"), key())),
        }
    }
}

/// A field whose value is one change.
fn read_change(waba_id: &str, f: &str, v: &Value) -> Result<Change, String> {
    let waba_id = waba_id.to_owned();
    Ok(match f {
        "phone_number_quality_update" => {
            let event = match str_field(v, "event")? {
                "FLAGGED" => QualityEvent::Flagged,
                "UNFLAGGED" => QualityEvent::Unflagged,
                "UPGRADE" => QualityEvent::Upgrade,
                "DOWNGRADE" => QualityEvent::Downgrade,
                "ONBOARDING" => QualityEvent::Onboarding,
                "THROUGHPUT_UPGRADE" => QualityEvent::ThroughputUpgrade,
                other => return Err(format!("unknown event {}", quote(other))),
            };
            Change::PhoneQuality {
                display_phone_number: str_field(v, "display_phone_number")?.to_owned(),
                waba_id,
                event,
                current_limit: reported_limit(v)?,
            }
        }
        "business_capability_update" => Change::Capability {
            waba_id,
            limit: reported_limit(v)?,
        },
        "account_update" => {
            let restrict = match str_field(v, "event")? {
                "DISABLED_UPDATE" => {
                    let states = v
                        .pointer("/ban_info/waba_ban_state")
                        .and_then(Value::as_array)
                        .ok_or("ban_info.waba_ban_state missing")?;
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
            Change::Account { waba_id, restrict }
        }
        "message_template_status_update" => {
            let status = match str_field(v, "event")? {
                "PAUSED" => pause_length(v),
                "DISABLED" => TemplateStatus::Disabled,
                "REINSTATED" | "UNPAUSE" | "UNPAUSED" => TemplateStatus::Reinstated,
                _ => TemplateStatus::Other,
            };
            Change::TemplateStatus {
                waba_id,
                template_name: str_field(v, "message_template_name")?.to_owned(),
                status,
            }
        }
        "message_template_quality_update" => Change::TemplateQuality {
            waba_id,
            template_name: str_field(v, "message_template_name")?.to_owned(),
            new_score: str_field(v, "new_quality_score")?.to_owned(),
        },
        _ => Change::Ignored {
            field: field_name(f),
        },
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_old_and_new() {
        assert_eq!(limit_value(&json!(2000)), Ok(Some(Tier::Tier2K)));
        assert_eq!(limit_value(&json!("2000")), Ok(Some(Tier::Tier2K)));
        assert_eq!(limit_value(&json!("TIER_10K")), Ok(Some(Tier::Tier10K)));
        assert_eq!(limit_value(&json!("UNLIMITED")), Ok(Some(Tier::Unlimited)));
        assert_eq!(limit_value(&json!(-1)), Ok(Some(Tier::Unlimited)));
        assert_eq!(limit_value(&json!("TIER_NOT_SET")), Ok(None));
        assert!(limit_value(&json!(1234)).is_err());
        assert!(limit_value(&json!("TIER_42")).is_err());
        assert!(limit_value(&json!(true)).is_err());
        // The 2026 name wins over the old one when both are given.
        let v = json!({"max_daily_conversation_per_phone": 250,
            "whatsapp_business_manager_messaging_limit": "TIER_100K"});
        assert_eq!(reported_limit(&v), Ok(Some(Tier::Tier100K)));
        assert_eq!(reported_limit(&json!({"current_limit": null})), Ok(None));
    }

    #[test]
    fn long_field_names_are_cut_on_a_character_boundary() {
        let f = "é".repeat(40);
        assert!(field_name(&f).len() <= MAX_FIELD_LEN);
        assert!(quote(&"x".repeat(100)).len() < 80);
    }
}
