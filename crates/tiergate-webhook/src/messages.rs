//! The `messages` and `user_id_update` fields: statuses, the ids a person is known by, and
//! business-scoped user ids (BSUIDs, 2026).
//!
//! One `messages` value holds many things, each read on its own: a status that cannot be read
//! is one [`Change::Unreadable`], and the statuses and contacts beside it still apply.
//!
//! * a status with `errors[]`: one [`Change::SendError`] per code;
//! * a status `held_for_quality_assessment`: [`Change::PacingHeld`];
//! * any other status (sent, delivered, read, …): nothing, as the governor counts sends when
//!   they are acquired;
//! * a contact naming a person by more than one id (`wa_id`, `user_id`, `parent_user_id`):
//!   [`Change::RecipientIds`].
//!
//! Meta's 2026 shapes are read tolerantly (the README of the fixtures says why): ids are checked
//! for shape, unknown keys are skipped, and `user_id_update` is read as a list of updates or as
//! one update.

use serde_json::Value;
use tiergate_core::RecipientKey;

use crate::key::DeliveryKey;
use crate::parse::{Change, Parsed, id_string, quote, unreadable};

/// The status Meta gives a send it holds for quality assessment (portfolio pacing).
pub const HELD_FOR_QUALITY_ASSESSMENT: &str = "held_for_quality_assessment";

/// Which of the two BSUID shapes an id must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bsuid {
    /// A person's id in one business portfolio: `CC.digits` (e.g. `US.13491208655302741918`).
    User,
    /// The id shared by a parent business's portfolios: `CC.ENT.digits`.
    Parent,
}

/// Checks `s` is a BSUID of `kind`: the core's own check of the shape
/// ([`tiergate_core::Bsuid::parse`], so a webhook and a send accept the same ids), and the `ENT.`
/// that tells a parent id from a person's.
fn bsuid(s: &str, kind: Bsuid, what: &str) -> Result<String, String> {
    let bad = || format!("{what} {} is not a business-scoped user id", quote(s));
    tiergate_core::Bsuid::parse("user_id", s).map_err(|_| bad())?;
    let parent = s.get(3..).is_some_and(|rest| rest.starts_with("ENT."));
    if parent == (kind == Bsuid::Parent) {
        Ok(s.to_owned())
    } else {
        Err(bad())
    }
}

/// A phone id (`wa_id`, `recipient_id`): digits as the core takes them.
fn phone(s: &str, what: &str) -> Result<String, String> {
    RecipientKey::parse(s)
        .map(|_| s.to_owned())
        .map_err(|_| format!("{what} {} is not a phone number id", quote(s)))
}

/// An optional string under `key`: absent or null is `None`, anything but a string an error.
fn opt_str<'a>(v: &'a Value, key: &str, what: &str) -> Result<Option<&'a str>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{what}.{key} must be a string")),
    }
}

/// `metadata.phone_number_id`, when given.
fn phone_number_id(v: &Value) -> Result<Option<String>, String> {
    match v.pointer("/metadata/phone_number_id") {
        None | Some(Value::Null) => Ok(None),
        Some(p) => id_string(p, "metadata.phone_number_id").map(Some),
    }
}

/// `v[key]` as a list: absent or null is empty, anything but an array an error.
fn list<'a>(v: &'a Value, key: &str) -> Result<&'a [Value], String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(format!("{key} must be an array")),
    }
}

/// Reads a `messages` value into `out`.
pub(crate) fn messages(waba_id: &str, v: &Value, out: &mut Vec<Parsed>) {
    const F: &str = "messages";
    let whole = || DeliveryKey::content(waba_id, F, v, &Value::Null);
    let phone_id = match phone_number_id(v) {
        Ok(p) => p,
        Err(why) => return out.push(unreadable(F, format!("{F}: {why}"), whole())),
    };
    match list(v, "contacts") {
        Ok(contacts) => {
            for c in contacts {
                let key = DeliveryKey::content(waba_id, "messages.contacts", c, &Value::Null);
                match contact(waba_id, phone_id.as_deref(), c) {
                    Ok(Some(change)) => out.push(Parsed { change, key }),
                    Ok(None) => {}
                    Err(why) => out.push(unreadable(F, format!("{F}: {why}"), key)),
                }
            }
        }
        Err(why) => out.push(unreadable(F, format!("{F}: {why}"), whole())),
    }
    match list(v, "statuses") {
        Ok(statuses) => {
            for s in statuses {
                // A status naming its recipient by phone and BSUID pairs them like a contact.
                let ids = serde_json::json!({
                    "wa_id": s.get("recipient_id"),
                    "user_id": s.get("recipient_user_id"),
                    "parent_user_id": s.get("recipient_parent_user_id"),
                });
                let key =
                    DeliveryKey::content(waba_id, "messages.statuses.ids", &ids, &Value::Null);
                match contact(waba_id, phone_id.as_deref(), &ids) {
                    // The same pairing as a contact beside it says nothing new.
                    Ok(Some(change)) if out.iter().any(|p| p.change == change) => {}
                    Ok(Some(change)) => out.push(Parsed { change, key }),
                    Ok(None) => {}
                    // A bad id is the status's to report (once), if it carries anything else.
                    Err(_) => {}
                }
                status(waba_id, phone_id.as_deref(), s, out);
            }
        }
        Err(why) => out.push(unreadable(F, format!("{F}: {why}"), whole())),
    }
}

/// One contact: a [`Change::RecipientIds`] when it names the person by more than one id (a
/// contact with only a phone teaches nothing).
fn contact(waba_id: &str, phone_id: Option<&str>, c: &Value) -> Result<Option<Change>, String> {
    const W: &str = "contacts[]";
    let wa_id = opt_str(c, "wa_id", W)?
        .map(|s| phone(s, "contacts[].wa_id"))
        .transpose()?;
    let user_id = opt_str(c, "user_id", W)?
        .map(|s| bsuid(s, Bsuid::User, "contacts[].user_id"))
        .transpose()?;
    let parent_user_id = opt_str(c, "parent_user_id", W)?
        .map(|s| bsuid(s, Bsuid::Parent, "contacts[].parent_user_id"))
        .transpose()?;
    let ids = [wa_id.is_some(), user_id.is_some(), parent_user_id.is_some()];
    if ids.iter().filter(|&&x| x).count() < 2 {
        return Ok(None);
    }
    Ok(Some(Change::RecipientIds {
        waba_id: waba_id.to_owned(),
        phone_number_id: phone_id.map(str::to_owned),
        wa_id,
        user_id,
        parent_user_id,
    }))
}

/// One status: its error codes and whether Meta held it. A status that cannot be read is one
/// unreadable change; an error code that cannot be read is one too, beside the others.
fn status(waba_id: &str, phone_id: Option<&str>, s: &Value, out: &mut Vec<Parsed>) {
    const F: &str = "messages";
    let unreadable_status = |why: String, out: &mut Vec<Parsed>| {
        let key = DeliveryKey::status(phone_id.unwrap_or(""), s, None);
        out.push(unreadable(F, format!("{F}: {why}"), key));
    };
    let held = s.get("status").and_then(Value::as_str) == Some(HELD_FOR_QUALITY_ASSESSMENT);
    let errors = match list(s, "errors") {
        Ok(e) => e,
        Err(why) => return unreadable_status(format!("statuses[].{why}"), out),
    };
    if !held && errors.is_empty() {
        return;
    }
    let Some(phone_id) = phone_id else {
        return unreadable_status("metadata.phone_number_id missing".into(), out);
    };
    let ids = opt_str(s, "recipient_id", "statuses[]").and_then(|r| {
        let r = r.map(|r| phone(r, "statuses[].recipient_id")).transpose()?;
        let u = opt_str(s, "recipient_user_id", "statuses[]")?
            .map(|u| bsuid(u, Bsuid::User, "statuses[].recipient_user_id"))
            .transpose()?;
        Ok((r, u))
    });
    let (recipient, recipient_user_id) = match ids {
        Ok(ids) => ids,
        Err(why) => return unreadable_status(why, out),
    };
    if held {
        out.push(Parsed {
            change: Change::PacingHeld {
                waba_id: waba_id.to_owned(),
                phone_number_id: phone_id.to_owned(),
            },
            key: DeliveryKey::status(phone_id, s, None),
        });
    }
    for e in errors {
        let code = e
            .get("code")
            .and_then(Value::as_i64)
            .and_then(|c| i32::try_from(c).ok());
        let Some(code) = code else {
            unreadable_status("statuses[].errors[].code must be an integer".into(), out);
            continue;
        };
        out.push(Parsed {
            change: Change::SendError {
                waba_id: waba_id.to_owned(),
                phone_number_id: phone_id.to_owned(),
                recipient: recipient.clone(),
                recipient_user_id: recipient_user_id.clone(),
                code,
            },
            key: DeliveryKey::status(phone_id, s, Some(code)),
        });
    }
}

/// Reads a `user_id_update` value into `out`: each update under `value.user_id_update[]`, or the
/// value itself when it is one update.
pub(crate) fn user_id_update(waba_id: &str, v: &Value, time: &Value, out: &mut Vec<Parsed>) {
    const F: &str = "user_id_update";
    let whole = || DeliveryKey::content(waba_id, F, v, time);
    let phone_id = match phone_number_id(v) {
        Ok(p) => p,
        Err(why) => return out.push(unreadable(F, format!("{F}: {why}"), whole())),
    };
    let one = std::slice::from_ref(v);
    let items = match v.get(F) {
        Some(Value::Array(a)) => a.as_slice(),
        None | Some(Value::Null) if v.get("user_id").is_some() => one,
        _ => {
            let why = format!("{F}: value.{F} must be a list of updates");
            return out.push(unreadable(F, why, whole()));
        }
    };
    for item in items {
        let key = DeliveryKey::content(waba_id, F, item, time);
        match update(waba_id, phone_id.as_deref(), item) {
            Ok(change) => out.push(Parsed { change, key }),
            Err(why) => out.push(unreadable(F, format!("{F}: {why}"), key)),
        }
    }
}

/// One update: `user_id.previous` → `user_id.current` (or flat `previous_user_id` /
/// `current_user_id`), both BSUIDs, and the person's `wa_id` when given.
fn update(waba_id: &str, phone_id: Option<&str>, item: &Value) -> Result<Change, String> {
    const W: &str = "user_id_update[]";
    let id = |nested: &str, flat: &str| -> Result<String, String> {
        let s = match item.pointer(&format!("/user_id/{nested}")) {
            Some(Value::String(s)) => s.as_str(),
            _ => opt_str(item, flat, W)?
                .ok_or_else(|| format!("{W}.user_id.{nested} must be a string"))?,
        };
        bsuid(s, Bsuid::User, &format!("{W}.user_id.{nested}"))
    };
    Ok(Change::UserIdUpdate {
        waba_id: waba_id.to_owned(),
        phone_number_id: phone_id.map(str::to_owned),
        wa_id: opt_str(item, "wa_id", W)?
            .map(|s| phone(s, "user_id_update[].wa_id"))
            .transpose()?,
        previous: id("previous", "previous_user_id")?,
        current: id("current", "current_user_id")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bsuid_shapes() {
        let ok = |s: &str, k| bsuid(s, k, "x").is_ok();
        assert!(ok("US.13491208655302741918", Bsuid::User));
        assert!(ok("US.ENT.11815799212886844830", Bsuid::Parent));
        assert!(!ok("US.ENT.11815799212886844830", Bsuid::User));
        assert!(!ok("US.13491208655302741918", Bsuid::Parent));
        assert!(!ok("us.1", Bsuid::User));
        assert!(!ok("US.", Bsuid::User));
        assert!(!ok("US1", Bsuid::User));
        assert!(!ok("U", Bsuid::User));
        assert!(!ok("", Bsuid::User));
        assert!(!ok("ÜS.1", Bsuid::User));
        assert!(!ok(&format!("US.{}", "1".repeat(70)), Bsuid::User));
        assert!(!ok("US.ENT.", Bsuid::Parent));
    }
}
