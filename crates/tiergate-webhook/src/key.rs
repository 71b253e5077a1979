//! Delivery keys: what names one webhook change across Meta's redeliveries.
//!
//! Meta retries a webhook it was not answered 200 for (and sometimes one it was) for up to 7
//! days, so the same change can arrive again long after it was applied. Each change gets a key
//! that a redelivery reproduces exactly and a different change does not:
//!
//! * a `messages` status: its message id (`statuses[].id`), its status and the error code the
//!   change is for, under the sending number (a status without an id is keyed by its content);
//! * any other change: its WABA, field, value and the entry's `time`, when given.
//!
//! The parts are hashed with SHA-256 over a canonical form (object keys sorted, every part
//! length-prefixed), so a key is 66 bytes whatever the body holds, always within
//! [`tiergate_core::MAX_DELIVERY_KEY_LEN`], and does not depend on how the JSON was laid out.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// One change's delivery key: answered `first: false` by the org once it applied the same key
/// (`tiergate_core::Change::WebhookDelivery`). A `messages` status is named by its message id,
/// status and error code under the sending number; any other change by its WABA, field, value
/// and the entry's `time`. Built only by the parser, as SHA-256 over a canonical form, so it is
/// always 66 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryKey(String);

impl DeliveryKey {
    /// The key as the core takes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of a `messages` status change: the status's id, its status and `code` (the
    /// error the change is for; `None` for a status without one, such as a held send).
    pub(crate) fn status(phone_number_id: &str, status: &Value, code: Option<i32>) -> Self {
        let mut h = Hasher::new();
        h.part(b"status");
        h.part(phone_number_id.as_bytes());
        match status.get("id").and_then(Value::as_str) {
            Some(id) => h.part(id.as_bytes()),
            // No message id: the whole status (its timestamp included) names it.
            None => h.value(status),
        }
        let state = status.get("status").and_then(Value::as_str).unwrap_or("");
        h.part(state.as_bytes());
        match code {
            Some(c) => h.part(c.to_string().as_bytes()),
            None => h.part(b""),
        }
        h.finish("s:")
    }

    /// The key of any other change: its WABA, field, value (or the part of it the change is
    /// for) and the entry's `time`, which tells two identical events apart.
    pub(crate) fn content(waba_id: &str, field: &str, value: &Value, time: &Value) -> Self {
        let mut h = Hasher::new();
        h.part(b"change");
        h.part(waba_id.as_bytes());
        h.part(field.as_bytes());
        h.value(value);
        h.value(time);
        h.finish("c:")
    }
}

impl std::fmt::Display for DeliveryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 over length-prefixed parts, so no two sequences of parts hash alike by accident.
struct Hasher(Sha256);

impl Hasher {
    fn new() -> Self {
        Hasher(Sha256::new())
    }

    fn part(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    /// A JSON value in canonical form: a type tag, then its content; object keys in sorted
    /// order. Recursion is bounded by `serde_json`'s nesting limit (128).
    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.part(b"n"),
            Value::Bool(b) => self.part(if *b { b"t" } else { b"f" }),
            Value::Number(n) => {
                self.part(b"#");
                self.part(n.to_string().as_bytes());
            }
            Value::String(s) => {
                self.part(b"s");
                self.part(s.as_bytes());
            }
            Value::Array(a) => {
                self.part(b"[");
                self.part(&(a.len() as u64).to_le_bytes());
                a.iter().for_each(|x| self.value(x));
            }
            Value::Object(o) => {
                self.part(b"{");
                self.part(&(o.len() as u64).to_le_bytes());
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort_unstable();
                for k in keys {
                    self.part(k.as_bytes());
                    if let Some(x) = o.get(k) {
                        self.value(x);
                    }
                }
            }
        }
    }

    fn finish(self, prefix: &str) -> DeliveryKey {
        DeliveryKey(format!("{prefix}{}", hex::encode(self.0.finalize())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn layout_does_not_matter_content_does() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":[true,null,"x"]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{ "b": [true, null, "x"], "a": 1 }"#).unwrap();
        let t = json!(1);
        assert_eq!(
            DeliveryKey::content("1", "f", &a, &t),
            DeliveryKey::content("1", "f", &b, &t)
        );
        assert_ne!(
            DeliveryKey::content("1", "f", &a, &t),
            DeliveryKey::content("1", "f", &a, &json!(2))
        );
        assert_ne!(
            DeliveryKey::content("1", "f", &a, &t),
            DeliveryKey::content("1", "g", &a, &t)
        );
        // Length prefixes: moving a byte between parts changes the key.
        assert_ne!(
            DeliveryKey::content("12", "f", &a, &t),
            DeliveryKey::content("1", "2f", &a, &t)
        );
    }

    #[test]
    fn a_status_is_named_by_its_id_state_and_code() {
        let s = json!({"id": "wamid.1", "status": "failed", "timestamp": "1"});
        let later = json!({"id": "wamid.1", "status": "failed", "timestamp": "2"});
        let other = json!({"id": "wamid.2", "status": "failed", "timestamp": "1"});
        let k = DeliveryKey::status("9", &s, Some(131_048));
        assert_eq!(k, DeliveryKey::status("9", &later, Some(131_048)));
        assert_ne!(k, DeliveryKey::status("9", &other, Some(131_048)));
        assert_ne!(k, DeliveryKey::status("9", &s, Some(131_056)));
        assert_ne!(k, DeliveryKey::status("9", &s, None));
        assert!(k.as_str().len() <= tiergate_core::MAX_DELIVERY_KEY_LEN);
        assert_eq!(k.as_str().len(), 2 + 64);
    }
}
