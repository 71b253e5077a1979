//! Human escalation paths: the thing the seed policy is about.
//!
//! WhatsApp accepts a hand-off to human operators, a phone number, an email address, a web
//! support form, or (retail) an in-store visit. A path is only worth something if a person can
//! use it, so each kind's contact is validated: E.164 phone, email, https URL, non-empty text.

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// Longest contact accepted, in bytes.
pub const MAX_CONTACT_LEN: usize = 512;

/// How a user reaches a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EscalationKind {
    /// The conversation is handed to human operators; contact names the queue or team.
    HumanHandoff,
    /// A phone number in E.164 form (`+4915112345678`).
    Phone,
    /// An email address.
    Email,
    /// A web support form at an https URL.
    WebForm,
    /// An in-store visit (retail); contact says where.
    InStore,
}

/// A validated escalation path. Construct it with [`EscalationPath::new`], so an invalid one
/// cannot exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EscalationPath {
    kind: EscalationKind,
    contact: String,
}

impl EscalationPath {
    /// Validates `contact` for `kind`. Surrounding whitespace is trimmed.
    pub fn new(kind: EscalationKind, contact: &str) -> Result<Self, ValidationError> {
        let contact = contact.trim();
        let err = |why: String| Err(ValidationError::new("path.contact", why));
        if contact.is_empty() {
            return err(format!("a {kind:?} escalation path needs a contact"));
        }
        if contact.len() > MAX_CONTACT_LEN {
            return err(format!("longer than {MAX_CONTACT_LEN} bytes"));
        }
        if contact.chars().any(char::is_control) {
            return err("contains control characters".into());
        }
        match kind {
            EscalationKind::HumanHandoff | EscalationKind::InStore => {}
            EscalationKind::Phone => {
                if !is_e164(contact) {
                    return err(format!(
                        "{contact:?} is not an E.164 phone number (+ then 8 to 15 digits, no leading 0)"
                    ));
                }
            }
            EscalationKind::Email => {
                if !is_email(contact) {
                    return err(format!("{contact:?} is not an email address"));
                }
            }
            EscalationKind::WebForm => match url::Url::parse(contact) {
                Ok(u) if u.scheme() == "https" && u.host_str().is_some_and(|h| !h.is_empty()) => {}
                _ => return err(format!("{contact:?} is not an https URL")),
            },
        }
        Ok(Self {
            kind,
            contact: contact.to_owned(),
        })
    }

    /// The kind of path.
    pub fn kind(&self) -> EscalationKind {
        self.kind
    }

    /// The validated contact.
    pub fn contact(&self) -> &str {
        &self.contact
    }
}

impl<'de> Deserialize<'de> for EscalationPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            kind: EscalationKind,
            contact: String,
        }
        let raw = Raw::deserialize(d)?;
        EscalationPath::new(raw.kind, &raw.contact).map_err(serde::de::Error::custom)
    }
}

fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    !local.is_empty()
        && local.len() <= 64
        && !local.contains(char::is_whitespace)
        && !local.contains('@')
        && domain.contains('.')
        && domain.split('.').all(label_ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use EscalationKind::*;

    #[test]
    fn validates_each_kind() {
        assert!(EscalationPath::new(Phone, "+4915112345678").is_ok());
        assert!(EscalationPath::new(Phone, "4915112345678").is_err());
        assert!(EscalationPath::new(Phone, "+0123456789").is_err());
        assert!(EscalationPath::new(Phone, "+49 151").is_err());
        assert!(EscalationPath::new(Email, "help@example.com").is_ok());
        assert!(EscalationPath::new(Email, "help@localhost").is_err());
        assert!(EscalationPath::new(Email, "a b@example.com").is_err());
        assert!(EscalationPath::new(WebForm, "https://example.com/help").is_ok());
        assert!(EscalationPath::new(WebForm, "http://example.com/help").is_err());
        assert!(EscalationPath::new(WebForm, "not a url").is_err());
        assert!(EscalationPath::new(HumanHandoff, "support-queue").is_ok());
        assert!(EscalationPath::new(HumanHandoff, "   ").is_err());
        assert!(EscalationPath::new(InStore, "Any branch, Mon-Sat").is_ok());
        assert!(EscalationPath::new(InStore, &"x".repeat(513)).is_err());
        let e = EscalationPath::new(Email, "nope").unwrap_err();
        assert_eq!(e.field, "path.contact");
    }
}
