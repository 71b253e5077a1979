//! How a replica writes the commands of one Redis log entry (its `c` field): a send to decide
//! (nearly every command a busy sidecar appends) as a category byte and length-prefixed
//! strings, every other command as its JSON.
//!
//! Why not JSON for all of it: Redis pays for every byte of an entry several times. It reads it
//! from the socket, copies it into the script, where Redis 7 hashes every byte of a string it
//! hands to Lua, copies it back into the stream, and writes it to its append-only file, with an
//! `fsync` under `appendfsync always`. A send's JSON was ~134 bytes of field names, quotes and
//! `null`s around ~40 bytes of ids; in binary it is ~45. Redis spent 12 % less CPU per script
//! call under the sidecar at 256 calls in flight, and 15–22 % less replaying rounds of 87 sends
//! on its own (BENCHMARKS.md, "Redis: the log's commands in binary"). The sidecar also encodes
//! a send without escaping five strings.
//!
//! The first byte of the field tells the forms apart: an entry written as JSON (by every build
//! before this one) starts with `[`; a binary one with [`ENTRY`], then how many records it
//! holds (so that an entry cut between two records is refused, not read as fewer). Entries of
//! either form are read, so a log that still holds JSON entries from before an upgrade replays
//! unchanged. A build before this one cannot read a binary entry: it answers `INTERNAL` for
//! that partition instead of misreading it (`docs/storage.md`, "Upgrading replicas").

use tiergate_core::Command;

use crate::fact_codec::{category_code, category_of};

/// The first byte of a binary entry (not `[`, nor JSON whitespace).
pub(crate) const ENTRY: u8 = 0x01;
/// A record: a send to decide, answered at once (no wait ticket).
const DECIDE: u8 = 0x01;
/// A record: any other command, as its JSON.
const JSON: u8 = 0x02;

/// How a replica writes its entries (`server.redis_log_format`). Every build from this one on
/// reads both; builds before it read only [`LogFormat::Json`], which is what a replica of this
/// build writes while older replicas still share its Redis (`docs/storage.md`, "Upgrading
/// replicas").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Sends in binary, other commands as JSON records: a third of the bytes.
    #[default]
    Binary,
    /// A JSON array of commands, as every build before this one wrote.
    Json,
}

/// Why an entry's commands could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum CommandCodecError {
    /// A JSON entry or record that is not valid JSON for this build's `Command`.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// An entry that is empty or starts with neither `[` nor [`ENTRY`]; a binary entry whose
    /// records are not as many as it says (cut short, or bytes after the last), or one of
    /// whose records has an unknown tag, category or flag, a length over 32 bits, or text
    /// that is not UTF-8.
    #[error("binary entry: {0}")]
    Binary(&'static str),
}

/// Appends `command`'s record in `format` to `out`, a record of an entry that [`entry`] then
/// frames.
pub(crate) fn encode(
    command: &Command,
    format: LogFormat,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    if format == LogFormat::Json {
        return serde_json::to_writer(out, command);
    }
    if let Command::Decide {
        org,
        phone,
        recipient,
        user_id,
        template,
        category,
        key,
        wait: None,
    } = command
    {
        out.push(DECIDE);
        out.push(category_code(Some(*category)));
        // Presence of the two optional strings, one bit each.
        out.push(u8::from(user_id.is_some()) | (u8::from(key.is_some()) << 1));
        for s in [Some(org), Some(phone), Some(recipient), user_id.as_ref()]
            .into_iter()
            .flatten()
            .chain(std::iter::once(template))
            .chain(key.as_ref())
        {
            bytes(s.as_bytes(), out);
        }
        return Ok(());
    }
    out.push(JSON);
    let json = serde_json::to_vec(command)?;
    bytes(&json, out);
    Ok(())
}

/// The `c` field of an entry holding `records` (each from [`encode`]) in order: [`ENTRY`],
/// how many records (LEB128), the records. The count makes an entry cut between two records
/// fail to read instead of reading as fewer commands.
///
/// In [`LogFormat::Json`], the records (each a command's JSON) as one JSON array.
pub(crate) fn entry(records: &[Vec<u8>], format: LogFormat) -> Vec<u8> {
    if format == LogFormat::Json {
        let mut out = vec![b'['];
        out.extend_from_slice(&records.join(&b','));
        out.push(b']');
        return out;
    }
    let mut out = vec![ENTRY];
    leb128(records.len() as u64, &mut out);
    for r in records {
        out.extend_from_slice(r);
    }
    out
}

/// Reads an entry's commands, binary or JSON. An empty field is not an entry (the script sends
/// a caller's own entries back empty); the caller handles that before.
pub(crate) fn decode(field: &[u8]) -> Result<Vec<Command>, CommandCodecError> {
    match field.first() {
        Some(&ENTRY) => {
            let mut r = Reader(&field[1..]);
            let n = r.len()?;
            // Each record takes at least two bytes: a count beyond that is damage, and is not
            // allowed to size an allocation.
            if n > r.0.len() / 2 {
                return Err(CommandCodecError::Binary("more records than bytes"));
            }
            let mut commands = Vec::with_capacity(n);
            for _ in 0..n {
                commands.push(r.command()?);
            }
            if !r.0.is_empty() {
                return Err(CommandCodecError::Binary("bytes after the last record"));
            }
            Ok(commands)
        }
        Some(b'[') => Ok(serde_json::from_slice(field)?),
        Some(_) => Err(CommandCodecError::Binary("unknown tag")),
        None => Err(CommandCodecError::Binary("empty")),
    }
}

/// A length (LEB128, at most 32 bits) and then the bytes.
fn bytes(b: &[u8], out: &mut Vec<u8>) {
    leb128(b.len() as u64, out);
    out.extend_from_slice(b);
}

/// `n` in LEB128: seven bits a byte, low first, the top bit set on all but the last.
fn leb128(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            break;
        }
        out.push(low | 0x80);
    }
}

/// The unread rest of a binary entry.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CommandCodecError> {
        if self.0.len() < n {
            return Err(CommandCodecError::Binary("cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, CommandCodecError> {
        Ok(self.take(1)?[0])
    }

    fn len(&mut self) -> Result<usize, CommandCodecError> {
        let mut n: u64 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.u8()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= u32::MAX as usize)
                    .ok_or(CommandCodecError::Binary("length too large"));
            }
        }
        Err(CommandCodecError::Binary("length too long"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], CommandCodecError> {
        let n = self.len()?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, CommandCodecError> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_owned)
            .map_err(|_| CommandCodecError::Binary("text that is not UTF-8"))
    }

    fn command(&mut self) -> Result<Command, CommandCodecError> {
        match self.u8()? {
            DECIDE => {
                // A command always has a category: "none" (0) is damage here.
                let Some(Some(category)) = category_of(self.u8()?) else {
                    return Err(CommandCodecError::Binary("unknown category"));
                };
                let present = self.u8()?;
                if present & !0b11 != 0 {
                    return Err(CommandCodecError::Binary("unknown flags"));
                }
                let org = self.string()?;
                let phone = self.string()?;
                let recipient = self.string()?;
                let user_id = (present & 1 != 0).then(|| self.string()).transpose()?;
                let template = self.string()?;
                let key = (present & 2 != 0).then(|| self.string()).transpose()?;
                Ok(Command::Decide {
                    org,
                    phone,
                    recipient,
                    user_id,
                    template,
                    category,
                    key,
                    wait: None,
                })
            }
            JSON => Ok(serde_json::from_slice(self.bytes()?)?),
            _ => Err(CommandCodecError::Binary("unknown record")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiergate_core::{Category, Fact, WaitTicket};

    fn decide(user_id: Option<&str>, key: Option<&str>, category: Category) -> Command {
        Command::Decide {
            org: "acme".into(),
            phone: "1555000111".into(),
            recipient: "+14155550100".into(),
            user_id: user_id.map(Into::into),
            template: "order_update".into(),
            category,
            key: key.map(Into::into),
            wait: None,
        }
    }

    fn packed_as(commands: &[Command], format: LogFormat) -> Vec<u8> {
        let records: Vec<Vec<u8>> = commands
            .iter()
            .map(|c| {
                let mut r = Vec::new();
                encode(c, format, &mut r).unwrap();
                r
            })
            .collect();
        entry(&records, format)
    }

    fn packed(commands: &[Command]) -> Vec<u8> {
        packed_as(commands, LogFormat::Binary)
    }

    fn every_shape() -> Vec<Command> {
        let mut all = Vec::new();
        for user_id in [None, Some("US.13491208655302741918")] {
            for key in [None, Some("k-1")] {
                for category in [
                    Category::Marketing,
                    Category::Utility,
                    Category::Authentication,
                ] {
                    all.push(decide(user_id, key, category));
                }
            }
        }
        all
    }

    #[test]
    fn every_shape_of_send_comes_back_in_binary_and_small() {
        for c in every_shape() {
            let mut r = Vec::new();
            encode(&c, LogFormat::Binary, &mut r).unwrap();
            assert_eq!(r[0], DECIDE, "{c:?}");
            let json = serde_json::to_vec(&c).unwrap();
            assert!(
                r.len() * 2 < json.len(),
                "{} against {}",
                r.len(),
                json.len()
            );
        }
        let all = every_shape();
        assert_eq!(decode(&packed(&all)).unwrap(), all);
        // Empty strings, and a string longer than one length byte holds.
        let mut c = decide(Some("US.1"), Some(&"k".repeat(70_000)), Category::Utility);
        if let Command::Decide { recipient, .. } = &mut c {
            recipient.clear();
        }
        assert_eq!(decode(&packed(&[c.clone()])).unwrap(), vec![c]);
    }

    #[test]
    fn other_commands_travel_as_json_records_among_binary_ones() {
        let mut waiting = decide(None, None, Category::Marketing);
        if let Command::Decide { wait, .. } = &mut waiting {
            *wait = Some(WaitTicket {
                id: 7,
                max_wait_ms: 1_000,
                capacity: 64,
            });
        }
        let all = vec![
            decide(None, Some("k"), Category::Utility),
            waiting,
            Command::Status { org: "acme".into() },
            Command::Unwait {
                org: "acme".into(),
                waiter: 7,
            },
            Command::Apply {
                fact: Fact::new(
                    5,
                    "acme",
                    tiergate_core::Change::Rating {
                        rating: tiergate_core::QualityRating::Red,
                    },
                ),
            },
            decide(Some("US.1"), None, Category::Authentication),
        ];
        let b = packed(&all);
        assert_eq!(b[0], ENTRY);
        assert_eq!(decode(&b).unwrap(), all);
    }

    /// In JSON, an entry is exactly what builds before this one wrote (which they can read).
    #[test]
    fn a_json_entry_is_the_array_earlier_builds_wrote() {
        let all = every_shape();
        let b = packed_as(&all, LogFormat::Json);
        assert_eq!(b, serde_json::to_vec(&all).unwrap());
        assert_eq!(decode(&b).unwrap(), all);
        assert_eq!(packed_as(&[], LogFormat::Json), b"[]");
        assert_eq!(decode(b"[]").unwrap(), vec![]);
    }

    #[test]
    fn entries_written_as_json_before_still_read() {
        // A round of two sends as the builds before this one wrote it, byte for byte.
        let json = br#"[{"cmd":"decide","org":"acme","phone":"1555000111","recipient":"+14155550100","template":"order_update","category":"UTILITY","key":null},{"cmd":"decide","org":"acme","phone":"1555000111","recipient":"+14155550100","template":"order_update","category":"MARKETING","key":"k-1"}]"#;
        assert_eq!(
            decode(json).unwrap(),
            vec![
                decide(None, None, Category::Utility),
                decide(None, Some("k-1"), Category::Marketing)
            ]
        );
    }

    #[test]
    fn damaged_entries_are_refused_never_misread() {
        let one = decide(Some("US.1"), Some("k"), Category::Utility);
        let good = packed(std::slice::from_ref(&one));
        assert_eq!(good[1], 1, "one record");
        // Every cut, the one between the tag and the count included, is refused.
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        // So is an entry of two cut between them, and one with a record more than it says.
        let two = packed(&[one.clone(), one.clone()]);
        // `two` is `good` with a count of 2 and the record once more: the first ends where
        // `good` does.
        assert!(matches!(
            decode(&two[..good.len()]),
            Err(CommandCodecError::Binary("cut short"))
        ));
        let mut extra = good.clone();
        extra.extend_from_slice(&good[2..]);
        assert!(matches!(
            decode(&extra),
            Err(CommandCodecError::Binary("bytes after the last record"))
        ));
        assert_eq!(decode(&two).unwrap(), vec![one.clone(), one]);
        assert_eq!(
            decode(&[ENTRY, 0]).unwrap(),
            vec![],
            "an entry of no commands"
        );
        // A count no bytes could hold is refused before anything is allocated for it.
        assert!(matches!(
            decode(&[ENTRY, 0xff, 0xff, 0xff, 0xff, 0x0f, DECIDE]),
            Err(CommandCodecError::Binary("more records than bytes"))
        ));
        for field in [&b"{}"[..], b" [", &[0x02, 0x01], &[ENTRY, 1, 0x09, 0]] {
            assert!(decode(field).is_err(), "{field:?}");
        }
        // good: ENTRY, count, DECIDE, category, flags, the org's length (1 byte), "acme", ...
        let mut category = good.clone();
        category[3] = 9;
        assert!(matches!(
            decode(&category),
            Err(CommandCodecError::Binary("unknown category"))
        ));
        let mut flags = good.clone();
        flags[4] = 0b100;
        assert!(matches!(
            decode(&flags),
            Err(CommandCodecError::Binary("unknown flags"))
        ));
        let mut text = good.clone();
        text[6] = 0xff; // the org's first byte (after its one length byte)
        assert!(matches!(
            decode(&text),
            Err(CommandCodecError::Binary("text that is not UTF-8"))
        ));
        let mut length = good;
        // The org's length: 0xff continues into "a" (0x61), a two-byte length of 12,543, more
        // than is left.
        length[5] = 0xff;
        assert!(matches!(
            decode(&length),
            Err(CommandCodecError::Binary("cut short"))
        ));
        // A length of more than five bytes is refused, not wrapped around.
        assert!(matches!(
            decode(&[ENTRY, 1, JSON, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(CommandCodecError::Binary("length too long"))
        ));
    }
}
