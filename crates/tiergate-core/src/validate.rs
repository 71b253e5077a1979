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

/// Most digits in a business-scoped user id (Meta's are 20; the bound keeps the encoding exact).
pub const MAX_BSUID_DIGITS: usize = 32;

/// A business-scoped user id (BSUID, since 31 March 2026): `CC.digits`, or a parent BSUID
/// `CC.ENT.digits`, where `CC` is an ISO country code (two capital letters). Encoded exactly in
/// 128 bits (country, the `ENT` flag, then `1` followed by the digits, as for phones), so two
/// different ids never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bsuid(pub u128);

impl Bsuid {
    /// Parses a BSUID or parent BSUID, naming `field` in the error.
    pub fn parse(field: &'static str, s: &str) -> Result<Self, ValidationError> {
        let bad = |why: &str| {
            Err(ValidationError::new(
                field,
                format!(
                    "{why}: a business-scoped user id is CC.digits or CC.ENT.digits \
                     (e.g. US.13491208655302741918), at most {MAX_BSUID_DIGITS} digits"
                ),
            ))
        };
        let b = s.as_bytes();
        if b.len() < 4 || !b[0].is_ascii_uppercase() || !b[1].is_ascii_uppercase() || b[2] != b'.' {
            return bad("no country code");
        }
        let (ent, digits) = match s[3..].strip_prefix("ENT.") {
            Some(rest) => (1u128, rest),
            None => (0u128, &s[3..]),
        };
        if digits.is_empty() || digits.len() > MAX_BSUID_DIGITS {
            return bad("wrong number of digits");
        }
        let mut v: u128 = 1;
        for d in digits.bytes() {
            if !d.is_ascii_digit() {
                return bad("not digits after the country code");
            }
            v = v * 10 + u128::from(d - b'0');
        }
        let cc = (u128::from(b[0] - b'A') << 5) | u128::from(b[1] - b'A');
        Ok(Bsuid((cc << 118) | (ent << 117) | v))
    }

    /// Whether `s` looks like a BSUID rather than a phone number (it starts with a letter), so
    /// a sender that put one where a phone goes gets the BSUID's rules and errors.
    pub fn looks_like(s: &str) -> bool {
        s.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
    }

    /// The key this id counts under while it is linked to no phone: a fixed 63-bit mix of the
    /// id with the top bit set. Phone keys stay below 2^54, so the two never meet; two BSUIDs
    /// share a key only on a 63-bit hash collision.
    pub fn unlinked_key(self) -> RecipientKey {
        let mix = |mut z: u64| {
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let h = mix(mix(self.0 as u64) ^ (self.0 >> 64) as u64);
        RecipientKey(h | (1 << 63))
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
