//! How the embedded store writes one fact into its journal: a send (nearly every fact a busy
//! sidecar records) as a few fixed fields and length-prefixed strings, every other fact as the
//! flat JSON every version wrote (`tiergate_core`'s `fact_wire`).
//!
//! Why not JSON for sends too: the fact is encoded under the store's lock, on the call's path,
//! and JSON was most of that work (escaping five strings, field names, numbers as text). A send
//! here is a copy of its strings and three numbers, and decoding it on replay allocates only
//! the strings. Admin changes, webhooks and reports stay JSON: they are rare, and JSON keeps
//! them readable with `strings` and open to new fields.
//!
//! The first byte tells the two apart: JSON written by this store always starts with `{`, and a
//! binary send with [`SEND`]. Journals written before schema version 4 hold only JSON and
//! replay unchanged; a version-3 binary refuses a version-4 store instead of misreading it.

use tiergate_core::{Category, Change, Fact};

/// The first byte of a send in binary form (not `{`, nor JSON whitespace).
pub(crate) const SEND: u8 = 0x01;

/// Why a stored fact could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum FactCodecError {
    /// A JSON fact that is not valid JSON for this build's `Fact`.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A record that is empty or starts with neither `{` nor [`SEND`], or a binary send that is
    /// cut short, has bytes after its last field, an unknown category or flag, or text that is
    /// not UTF-8.
    #[error("binary fact: {0}")]
    Binary(&'static str),
}

/// Appends `fact`'s stored form to `out`. A send whose strings do not fit 16-bit lengths (the
/// engine's ids are far shorter, but the journal does not rely on it) is written as JSON.
pub(crate) fn encode(fact: &Fact, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    if let Change::Send {
        phone,
        recipient,
        user_id,
        key,
        seq,
        category,
    } = &fact.change
    {
        let strings = [
            Some(fact.org.as_str()),
            Some(phone.as_str()),
            Some(recipient.as_str()),
            user_id.as_deref(),
            key.as_deref(),
        ];
        if strings
            .iter()
            .flatten()
            .all(|s| s.len() <= usize::from(u16::MAX))
        {
            out.push(SEND);
            out.extend_from_slice(&fact.at.to_le_bytes());
            out.extend_from_slice(&seq.to_le_bytes());
            out.push(category_code(*category));
            // Presence of the two optional strings, one bit each.
            out.push(u8::from(user_id.is_some()) | (u8::from(key.is_some()) << 1));
            for s in strings.into_iter().flatten() {
                out.extend_from_slice(&(s.len() as u16).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            return Ok(());
        }
    }
    serde_json::to_writer(out, fact)
}

/// Reads one stored fact, JSON or binary.
pub(crate) fn decode(bytes: &[u8]) -> Result<Fact, FactCodecError> {
    match bytes.first() {
        Some(&SEND) => decode_send(&bytes[1..]),
        Some(b'{') => Ok(serde_json::from_slice(bytes)?),
        Some(_) => Err(FactCodecError::Binary("unknown tag")),
        None => Err(FactCodecError::Binary("empty")),
    }
}

fn decode_send(b: &[u8]) -> Result<Fact, FactCodecError> {
    let mut r = Reader(b);
    let at = r.u64()?;
    let seq = r.u64()?;
    let category = category_of(r.u8()?).ok_or(FactCodecError::Binary("unknown category"))?;
    let present = r.u8()?;
    if present & !0b11 != 0 {
        return Err(FactCodecError::Binary("unknown flags"));
    }
    let org = r.string()?;
    let phone = r.string()?;
    let recipient = r.string()?;
    let user_id = if present & 1 != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let key = if present & 2 != 0 {
        Some(r.string()?)
    } else {
        None
    };
    if !r.0.is_empty() {
        return Err(FactCodecError::Binary("bytes after the last field"));
    }
    Ok(Fact {
        at,
        org,
        change: Change::Send {
            phone,
            recipient,
            user_id,
            key,
            seq,
            category,
        },
    })
}

/// A send's category as one byte (0: none). Spelled out, so that reordering the enum cannot
/// change what stored bytes mean; the Redis log's sends use the same bytes (`command_codec.rs`).
pub(crate) fn category_code(c: Option<Category>) -> u8 {
    match c {
        None => 0,
        Some(Category::Marketing) => 1,
        Some(Category::Utility) => 2,
        Some(Category::Authentication) => 3,
    }
}

/// The category a byte of [`category_code`] stands for; `None` for a byte it never writes.
pub(crate) fn category_of(code: u8) -> Option<Option<Category>> {
    Some(match code {
        0 => None,
        1 => Some(Category::Marketing),
        2 => Some(Category::Utility),
        3 => Some(Category::Authentication),
        _ => return None,
    })
}

/// The unread rest of a binary fact.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], FactCodecError> {
        if self.0.len() < n {
            return Err(FactCodecError::Binary("cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FactCodecError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, FactCodecError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes taken")))
    }

    fn string(&mut self) -> Result<String, FactCodecError> {
        let len = self.take(2)?;
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        let text = std::str::from_utf8(self.take(len)?)
            .map_err(|_| FactCodecError::Binary("text that is not UTF-8"))?;
        Ok(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiergate_core::{QualityRating, SendOutcome};

    fn send(user_id: Option<&str>, key: Option<&str>, category: Option<Category>) -> Fact {
        Fact::new(
            1_767_225_600_123,
            "acme",
            Change::Send {
                phone: "1555000111".into(),
                recipient: "+14155550100".into(),
                user_id: user_id.map(Into::into),
                key: key.map(Into::into),
                seq: 8_192,
                category,
            },
        )
    }

    fn round_trip(f: &Fact) -> Vec<u8> {
        let mut b = Vec::new();
        encode(f, &mut b).unwrap();
        assert_eq!(&decode(&b).unwrap(), f);
        b
    }

    #[test]
    fn every_shape_of_send_comes_back_and_is_binary() {
        for user_id in [None, Some("US.13491208655302741918")] {
            for key in [None, Some("k-1")] {
                for category in [
                    None,
                    Some(Category::Marketing),
                    Some(Category::Utility),
                    Some(Category::Authentication),
                ] {
                    let b = round_trip(&send(user_id, key, category));
                    assert_eq!(b[0], SEND);
                }
            }
        }
        // Empty strings too (a send may name no phone recipient, only a BSUID).
        let mut f = send(Some("US.1"), None, None);
        if let Change::Send { recipient, .. } = &mut f.change {
            recipient.clear();
        }
        round_trip(&f);
    }

    #[test]
    fn other_facts_stay_json_and_old_json_sends_still_read() {
        let facts = [
            Fact::new(
                5,
                "acme",
                Change::Report {
                    seq: 3,
                    outcome: SendOutcome::NotSent,
                },
            ),
            Fact::new(
                6,
                "acme",
                Change::Rating {
                    rating: QualityRating::Red,
                },
            ),
        ];
        for f in &facts {
            let b = round_trip(f);
            assert_eq!(b[0], b'{');
        }
        // A send as schema 3 wrote it, byte for byte.
        let json = br#"{"fact":"send","at":1767225600123,"org":"acme","phone":"1555000111","recipient":"+14155550100","key":"k","seq":8192,"category":"UTILITY"}"#;
        assert_eq!(
            decode(json).unwrap(),
            send(None, Some("k"), Some(Category::Utility))
        );
    }

    #[test]
    fn a_string_too_long_for_16_bits_falls_back_to_json() {
        let longest = "k".repeat(usize::from(u16::MAX));
        assert_eq!(round_trip(&send(None, Some(&longest), None))[0], SEND);
        let long = "k".repeat(usize::from(u16::MAX) + 1);
        assert_eq!(round_trip(&send(None, Some(&long), None))[0], b'{');
    }

    #[test]
    fn damaged_binary_sends_are_refused_never_misread() {
        let mut good = Vec::new();
        encode(&send(Some("US.1"), Some("k"), None), &mut good).unwrap();
        for cut in 1..good.len() {
            assert!(
                matches!(decode(&good[..cut]), Err(FactCodecError::Binary(_))),
                "cut at {cut}"
            );
        }
        for record in [&[][..], b"[1]", b" {}", &[0x02, 0, 0]] {
            assert!(
                matches!(decode(record), Err(FactCodecError::Binary(_))),
                "{record:?}"
            );
        }
        let mut extra = good.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
        let mut category = good.clone();
        category[17] = 9;
        assert!(decode(&category).is_err());
        let mut flags = good.clone();
        flags[18] = 0b100;
        assert!(decode(&flags).is_err());
        let mut text = good;
        let org_at = 1 + 8 + 8 + 1 + 1 + 2;
        text[org_at] = 0xff;
        assert!(decode(&text).is_err());
    }
}
