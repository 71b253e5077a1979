//! WhatsApp webhooks: verify, parse, apply.
//!
//! A POST is verified first (HMAC-SHA256 of the raw body with the app secret), then parsed
//! completely, and only then applied: a bad signature or a malformed body changes nothing.
//! Changes naming ids no org holds are counted and answered 200, so WhatsApp does not retry
//! them forever.
//!
//! Parsing and what each change means live in `tiergate-webhook`, shared with the simulator;
//! the signature (a transport concern) and the loop through the [`crate::gate::Gate`] live here.

pub mod apply;
pub mod signature;
