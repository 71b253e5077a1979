//! WhatsApp webhooks: verify, parse, apply.
//!
//! A POST is verified first (HMAC-SHA256 of the raw body with the app secret), then parsed
//! completely, and only then applied: a bad signature, or a body that is not JSON or not a
//! WhatsApp Business Account notification, changes nothing. Inside a notification, changes
//! naming ids no org holds, changes that cannot be read and redeliveries of changes already
//! applied are counted and answered 200 with the rest, so WhatsApp does not retry them for days.
//!
//! Parsing and what each change means live in `tiergate-webhook`, shared with the simulator;
//! the signature (a transport concern) and the loop through the [`crate::gate::Gate`] live here.

pub mod apply;
pub mod signature;
