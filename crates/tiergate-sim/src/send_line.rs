//! The common line of a trace, a send, read without serde.
//!
//! Nearly every line of a trace is `{"t":…,"send":{…}}` with plain string values, and reading it
//! through serde's derived `Line` (eight optional events, each field matched by name) was about a
//! third of a replay's work. This reads exactly that shape, fields in any order, and gives up
//! (`None`) on anything else: whitespace, escapes, `null`, numbers other than plain digits, an
//! unknown or repeated field, a category or outcome it does not spell exactly as serde does. The
//! caller then parses the line with serde as before, so an unusual line gets the same value or
//! the same error it always did. The tests check that the two agree on the lines this accepts,
//! edge cases and a generated trace's sends.

use tiergate_core::Category;

use crate::trace::{Send, TraceOutcome};

/// `{"t":T,"send":{…}}` read as (T, the send), or `None` to let serde read it.
pub(crate) fn send_line(text: &str) -> Option<(u64, Send<'_>)> {
    let rest = text.strip_prefix(r#"{"t":"#)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    // JSON has no leading zeros; 19 digits always fit a u64.
    if digits == 0 || digits > 19 || (digits > 1 && rest.starts_with('0')) {
        return None;
    }
    let t: u64 = rest[..digits].parse().ok()?;
    let mut rest = rest[digits..].strip_prefix(r#","send":{"#)?;
    let (mut org, mut phone, mut to) = (None, None, None);
    let (mut template, mut key) = (None, None);
    let (mut category, mut outcome) = (None, None);
    loop {
        let (name, r) = string(rest)?;
        let (value, r) = string(r.strip_prefix(':')?)?;
        match name {
            "org" => set(&mut org, value)?,
            "phone" => set(&mut phone, value)?,
            "to" => set(&mut to, value)?,
            "template" => set(&mut template, value)?,
            "key" => set(&mut key, value)?,
            "category" if category.is_none() => {
                category = Some(match value {
                    "MARKETING" => Category::Marketing,
                    "UTILITY" => Category::Utility,
                    "AUTHENTICATION" => Category::Authentication,
                    _ => return None,
                })
            }
            "outcome" if outcome.is_none() => {
                outcome = Some(match value {
                    "sent" => TraceOutcome::Sent,
                    "not_sent" => TraceOutcome::NotSent,
                    _ => return None,
                })
            }
            _ => return None,
        }
        if let Some(r) = r.strip_prefix(',') {
            rest = r;
            continue;
        }
        if r != "}}" {
            return None;
        }
        break;
    }
    Some((
        t,
        Send {
            org: org?,
            phone: phone?,
            to: to?,
            template,
            category,
            outcome,
            key,
        },
    ))
}

/// Fills an empty field; a field given twice is left to serde (which refuses it).
fn set<'a>(slot: &mut Option<&'a str>, value: &'a str) -> Option<()> {
    slot.is_none().then(|| *slot = Some(value))
}

/// A JSON string without escapes or control characters at the start of `s`, and what follows.
fn string(s: &str) -> Option<(&str, &str)> {
    let s = s.strip_prefix('"')?;
    let end = s
        .bytes()
        .position(|b| b == b'"' || b == b'\\' || b < 0x20)?;
    (s.as_bytes()[end] == b'"').then(|| (&s[..end], &s[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Line;

    /// What serde reads from `text`, as the fast path would give it.
    fn serde(text: &str) -> Option<String> {
        let l: Line<'_> = serde_json::from_str(text).ok()?;
        (l.events() == 1).then_some(())?;
        l.send.map(|s| format!("{:?}", (l.t, s)))
    }

    fn check(text: &str) -> bool {
        let fast = send_line(text).map(|s| format!("{s:?}"));
        if let Some(f) = &fast {
            assert_eq!(Some(f.clone()), serde(text), "{text}");
        }
        fast.is_some()
    }

    #[test]
    fn accepts_the_common_shape_exactly_as_serde_reads_it() {
        for text in [
            r#"{"t":1767225600000,"send":{"org":"org-459","phone":"1000459","to":"4915459000638","template":"order_update","category":"UTILITY"}}"#,
            r#"{"t":0,"send":{"org":"o","phone":"1","to":"2"}}"#,
            r#"{"t":5,"send":{"to":"2","org":"o","phone":"1","key":"k-1","outcome":"not_sent","category":"MARKETING"}}"#,
            r#"{"t":5,"send":{"org":"o","phone":"1","to":"2","outcome":"sent","category":"AUTHENTICATION","template":"otp"}}"#,
            r#"{"t":5,"send":{"org":"ö","phone":"1","to":"2"}}"#,
        ] {
            assert!(check(text), "{text}");
        }
    }

    #[test]
    fn leaves_everything_else_to_serde() {
        for text in [
            r#"{"t":01,"send":{"org":"o","phone":"1","to":"2"}}"#,
            r#"{"t":1.0,"send":{"org":"o","phone":"1","to":"2"}}"#,
            r#"{"t":99999999999999999999,"send":{"org":"o","phone":"1","to":"2"}}"#,
            r#"{"t": 1,"send":{"org":"o","phone":"1","to":"2"}}"#,
            r#"{"send":{"org":"o","phone":"1","to":"2"},"t":1}"#,
            r#"{"t":1,"send":{"org":"o","phone":"1","to":"2"},"org":null}"#,
            r#"{"t":1,"send":{"org":"o","org":"p","phone":"1","to":"2"}}"#,
            r#"{"t":1,"send":{"org":"o\"","phone":"1","to":"2"}}"#,
            r#"{"t":1,"send":{"org":"o","phone":"1","to":"2","template":null}}"#,
            r#"{"t":1,"send":{"org":"o","phone":"1","to":"2","category":"utility"}}"#,
            r#"{"t":1,"send":{"org":"o","phone":"1","to":"2","outcome":{"rejected":131049}}}"#,
            r#"{"t":1,"send":{"org":"o","phone":"1","to":"2","extra":"x"}}"#,
            r#"{"t":1,"send":{"org":"o","phone":"1"}}"#,
            r#"{"t":1,"send":{"org":"o","phone":"1","to":"2"}} "#,
            r#"{"t":1,"send":{"org":"o","phone":"1","to":"2"}}x"#,
            "{\"t\":1,\"send\":{\"org\":\"o\t\",\"phone\":\"1\",\"to\":\"2\"}}",
            r#"{"t":1,"send":{}}"#,
            r#"{"t":1,"send":{"org":"o","phone":"1","to":"2","#,
        ] {
            assert!(!check(text), "{text}");
        }
    }

    #[test]
    fn agrees_with_serde_on_a_generated_week() {
        let cfg = crate::tracegen::GenConfig {
            orgs: 20,
            sends: 20_000,
            days: 1,
            ..Default::default()
        };
        let mut out = Vec::new();
        crate::tracegen::generate(&cfg, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let (mut fast, mut sends) = (0, 0);
        for line in text.lines() {
            sends += usize::from(line.contains(r#""send":"#));
            fast += usize::from(check(line));
        }
        assert!(sends > 10_000);
        assert_eq!(fast, sends, "every generated send takes the fast path");
    }
}
