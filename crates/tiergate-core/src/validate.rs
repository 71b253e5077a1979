//! Validation of the identifiers that arrive with every send.
//!
//! Everything here runs on the hot path, so it is allocation-free. A recipient is turned into a
//! [`RecipientKey`], an exact 64-bit encoding of its digits: windows hold 8 bytes per recipient
//! instead of a string, and no two recipients can ever collide.

use crate::error::ValidationError;

/// Longest org id, in bytes.
pub const MAX_ORG_ID_LEN: usize = 64;
/// Longest phone number id (Meta's are ~15 digits).
pub const MAX_PHONE_NUMBER_ID_LEN: usize = 32;
/// Longest recipient: E.164 numbers have at most 15 digits.
pub const MAX_RECIPIENT_DIGITS: usize = 15;
/// Longest template name Meta accepts.
pub const MAX_TEMPLATE_NAME_LEN: usize = 512;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// A recipient's WhatsApp id (digits of its phone number), encoded exactly as `1` followed by its
/// digits read as an integer, so `"0123"` and `"123"` stay distinct.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct RecipientKey(pub u64);

impl RecipientKey {
    /// Parses a recipient: 1 to 15 ASCII digits, nothing else (no `+`, no spaces).
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        if s.is_empty() {
            return Err(ValidationError::new("recipient", "must not be empty"));
        }
        if s.len() > MAX_RECIPIENT_DIGITS {
            return Err(ValidationError::new(
                "recipient",
                format!(
                    "at most {MAX_RECIPIENT_DIGITS} digits (E.164), got {}",
                    s.len()
                ),
            ));
        }
        let mut v: u64 = 1;
        for b in s.bytes() {
            if !b.is_ascii_digit() {
                return Err(ValidationError::new(
                    "recipient",
                    "must be digits only (the WhatsApp id, e.g. 4915112345678, without +)",
                ));
            }
            v = v * 10 + u64::from(b - b'0');
        }
        Ok(RecipientKey(v))
    }

    /// The digits this key was parsed from.
    pub fn digits(self) -> String {
        let s = self.0.to_string();
        s[1..].to_owned()
    }
}

/// An org id: 1 to 64 of `A-Z a-z 0-9 _ - .` (Meta's business portfolio ids are digits; BSPs
/// often use their own slugs).
pub fn org_id(s: &str) -> Result<&str, ValidationError> {
    token("org_id", s, MAX_ORG_ID_LEN, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
    })
}

/// A phone number id or WABA id: 1 to 32 digits, as Meta issues them.
pub fn numeric_id<'a>(field: &'static str, s: &'a str) -> Result<&'a str, ValidationError> {
    token(field, s, MAX_PHONE_NUMBER_ID_LEN, |b| b.is_ascii_digit())
}

/// A phone number id as an exact integer (`1` followed by its digits), so that finding an org's
/// number compares two integers instead of chasing a string pointer.
pub fn phone_key(s: &str) -> Result<u128, ValidationError> {
    numeric_id("phone_number_id", s)?;
    Ok(s.bytes().fold(1u128, |v, b| v * 10 + u128::from(b - b'0')))
}

/// A template name: Meta allows lowercase letters, digits and underscores, up to 512.
pub fn template_name(s: &str) -> Result<&str, ValidationError> {
    token("template_name", s, MAX_TEMPLATE_NAME_LEN, |b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
    })
}

/// An idempotency key: printable ASCII without spaces, up to 128.
pub fn idempotency_key(s: &str) -> Result<&str, ValidationError> {
    token("idempotency_key", s, MAX_IDEMPOTENCY_KEY_LEN, |b| {
        b.is_ascii_graphic()
    })
}

fn token<'a>(
    field: &'static str,
    s: &'a str,
    max: usize,
    ok: impl Fn(u8) -> bool,
) -> Result<&'a str, ValidationError> {
    if s.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(ValidationError::new(
            field,
            format!("at most {max} bytes, got {}", s.len()),
        ));
    }
    if let Some(bad) = s.bytes().find(|&b| !ok(b)) {
        return Err(ValidationError::new(
            field,
            format!(
                "contains a character that is not allowed: {:?}",
                bad as char
            ),
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipient_keys_are_exact() {
        let a = RecipientKey::parse("0123").unwrap();
        let b = RecipientKey::parse("123").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.digits(), "0123");
        assert_eq!(
            RecipientKey::parse("999999999999999").unwrap().digits(),
            "999999999999999"
        );
        assert!(RecipientKey::parse("").is_err());
        assert!(RecipientKey::parse("+4915").is_err());
        assert!(RecipientKey::parse("1234567890123456").is_err());
        assert!(RecipientKey::parse("12a").is_err());
    }

    #[test]
    fn ids_and_names() {
        assert!(org_id("acme-bsp.eu_1").is_ok());
        assert!(org_id("acme:1").is_err());
        assert!(org_id(&"a".repeat(65)).is_err());
        assert!(numeric_id("phone_number_id", "106540352242922").is_ok());
        assert!(numeric_id("phone_number_id", "10654x").is_err());
        assert_ne!(phone_key("0123").unwrap(), phone_key("123").unwrap());
        assert!(phone_key(&"9".repeat(32)).is_ok());
        assert!(phone_key(&"9".repeat(33)).is_err());
        assert!(template_name("order_update_v2").is_ok());
        assert!(template_name("Order Update").is_err());
        assert!(idempotency_key("k-1/2").is_ok());
        assert!(idempotency_key("a b").is_err());
    }
}
