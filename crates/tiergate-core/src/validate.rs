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
        match digits_key_u64(s.as_bytes()) {
            Some(v) => Ok(RecipientKey(v)),
            None => Err(ValidationError::new(
                "recipient",
                "must be digits only (the WhatsApp id, e.g. 4915112345678, without +)",
            )),
        }
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
    token("org_id", s, MAX_ORG_ID_LEN, ORG_ID)
}

/// A phone number id or WABA id: 1 to 32 digits, as Meta issues them.
pub fn numeric_id<'a>(field: &'static str, s: &'a str) -> Result<&'a str, ValidationError> {
    token(field, s, MAX_PHONE_NUMBER_ID_LEN, DIGIT)
}

/// A phone number id as an exact integer (`1` followed by its digits), so that finding an org's
/// number compares two integers instead of chasing a string pointer.
pub fn phone_key(s: &str) -> Result<u128, ValidationError> {
    if !s.is_empty() && s.len() <= MAX_PHONE_NUMBER_ID_LEN {
        if let Some(k) = digits_key_u128(s.as_bytes()) {
            return Ok(k);
        }
    }
    // The error, worded as every id's is (a non-empty run of at most 32 digits has a key, so
    // `numeric_id` finds what is wrong).
    Err(numeric_id("phone_number_id", s)
        .err()
        .unwrap_or_else(|| ValidationError::new("phone_number_id", "must be digits only")))
}

/// A template name: Meta allows lowercase letters, digits and underscores, up to 512.
pub fn template_name(s: &str) -> Result<&str, ValidationError> {
    token("template_name", s, MAX_TEMPLATE_NAME_LEN, TEMPLATE)
}

/// An idempotency key: printable ASCII without spaces, up to 128.
pub fn idempotency_key(s: &str) -> Result<&str, ValidationError> {
    token("idempotency_key", s, MAX_IDEMPOTENCY_KEY_LEN, GRAPHIC)
}

// What each byte may be in each kind of token, one bit per kind: a token is checked with one
// table lookup per byte instead of a chain of range comparisons. Every send checks four ids,
// and on a cold org the checks were a third of a decision's instructions (issue #16).
const ORG_ID: u8 = 1;
const DIGIT: u8 = 2;
const TEMPLATE: u8 = 4;
const GRAPHIC: u8 = 8;

static BYTE_CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut c = 0;
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') {
            c |= ORG_ID;
        }
        if b.is_ascii_digit() {
            c |= DIGIT;
        }
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' {
            c |= TEMPLATE;
        }
        if b.is_ascii_graphic() {
            c |= GRAPHIC;
        }
        t[i] = c;
        i += 1;
    }
    t
};

fn token<'a>(
    field: &'static str,
    s: &'a str,
    max: usize,
    class: u8,
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
    // Branch-free over the bytes (an AND of their classes), then one test: ids are short, so
    // stopping early at a bad byte saves nothing, and a valid id never stops.
    let all = s
        .bytes()
        .fold(class, |acc, b| acc & BYTE_CLASSES[usize::from(b)]);
    if all == 0 {
        let bad = s
            .bytes()
            .find(|&b| BYTE_CLASSES[usize::from(b)] & class == 0)
            .unwrap_or(b'?');
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

const ONES: u64 = 0x0101_0101_0101_0101;

/// Eight ASCII digits, loaded little-endian (the first digit in the lowest byte), as the
/// number they spell; `None` if any byte is not a digit. Three multiplications instead of
/// eight dependent multiply-adds ("SWAR": eight bytes in one register).
#[inline]
fn eight_digits(v: u64) -> Option<u64> {
    // Every byte's high nibble is 3, and adding 6 keeps it 3 (so the low one is at most 9).
    // No byte overflows into the next: after the first test each is at most 0x3F.
    if v & (0xF0 * ONES) != 0x30 * ONES
        || v.wrapping_add(0x06 * ONES) & (0xF0 * ONES) != 0x30 * ONES
    {
        return None;
    }
    let v = v & (0x0F * ONES);
    // Pairs of digits into 16-bit lanes, pairs of those into 32-bit lanes, then the two halves.
    let v = ((v & 0x000F_000F_000F_000F) * 10) + ((v >> 8) & 0x000F_000F_000F_000F);
    let v = ((v & 0x0000_00FF_0000_00FF) * 100) + ((v >> 16) & 0x0000_00FF_0000_00FF);
    Some(((v & 0x0000_0000_0000_FFFF) * 10_000) + (v >> 32))
}

/// `1` followed by `s`'s digits as an integer, or `None` if a byte is not a digit or there are
/// more than 18 (what fits). The callers bound the length first, with its own error.
#[inline]
fn digits_key_u64(s: &[u8]) -> Option<u64> {
    if s.len() > 18 {
        return None;
    }
    let mut v: u64 = 1;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        v = v * 100_000_000 + eight_digits(u64::from_le_bytes(b))?;
    }
    for &b in chunks.remainder() {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(b - b'0');
    }
    Some(v)
}

/// [`digits_key_u64`] for up to 36 digits (`None` beyond), in 128 bits: the last 18 digits and
/// the rest are each read in 64 (a 128-bit multiply per digit cost more than the whole check).
#[inline]
fn digits_key_u128(s: &[u8]) -> Option<u128> {
    const E18: u64 = 1_000_000_000_000_000_000;
    if s.len() <= 18 {
        return digits_key_u64(s).map(u128::from);
    }
    let (head, tail) = s.split_at(s.len() - 18);
    // `1` and the head's digits, then the tail's digits without their leading `1`.
    let hi = digits_key_u64(head)?;
    let lo = digits_key_u64(tail)? - E18;
    Some(u128::from(hi) * u128::from(E18) + u128::from(lo))
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

    /// The byte-at-a-time definitions the fast paths replace.
    fn slow_key(s: &str) -> Option<u128> {
        s.bytes().try_fold(1u128, |v, b| {
            b.is_ascii_digit().then(|| v * 10 + u128::from(b - b'0'))
        })
    }

    #[test]
    fn digit_keys_agree_with_the_plain_reading_for_every_byte_in_every_place() {
        // Every length up to the bound, every byte value at every position of a digit string:
        // the eight-at-a-time reading must accept exactly the digits and read them exactly.
        for len in 1..=MAX_PHONE_NUMBER_ID_LEN {
            let base: Vec<u8> = (0..len).map(|i| b"9081726354"[i % 10]).collect();
            for pos in 0..len {
                for byte in 0..=255u8 {
                    let mut v = base.clone();
                    v[pos] = byte;
                    let Ok(s) = std::str::from_utf8(&v) else {
                        continue;
                    };
                    let want = slow_key(s);
                    assert_eq!(digits_key_u128(&v), want, "{s:?}");
                    assert_eq!(phone_key(s).ok(), want, "{s:?}");
                    if len <= MAX_RECIPIENT_DIGITS {
                        assert_eq!(
                            RecipientKey::parse(s).ok().map(|k| u128::from(k.0)),
                            want,
                            "{s:?}"
                        );
                    }
                }
            }
        }
        assert_eq!(
            RecipientKey::parse("999999999999999").unwrap().0,
            1_999_999_999_999_999
        );
        assert_eq!(
            phone_key(&"9".repeat(32)).unwrap(),
            slow_key(&"9".repeat(32)).unwrap()
        );
    }

    #[test]
    fn token_classes_match_their_definitions_for_every_byte() {
        for b in 0..=255u8 {
            let Ok(s) = std::str::from_utf8(std::slice::from_ref(&b)) else {
                continue;
            };
            let s = format!("a{s}0");
            let org = s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            assert_eq!(org_id(&s).is_ok(), org, "{s:?}");
            let tpl = s
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            assert_eq!(template_name(&s).is_ok(), tpl, "{s:?}");
            assert_eq!(
                idempotency_key(&s).is_ok(),
                s.bytes().all(|b| b.is_ascii_graphic()),
                "{s:?}"
            );
            let d = format!("1{}", s.trim_start_matches('a'));
            assert_eq!(
                numeric_id("x", &d).is_ok(),
                d.bytes().all(|b| b.is_ascii_digit()),
                "{d:?}"
            );
        }
        let e = template_name("order Update").unwrap_err().to_string();
        assert!(e.contains("' '"), "{e}");
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
