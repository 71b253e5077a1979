//! tiergate: a template send-rate governor for the WhatsApp Business Platform.
//!
//! This facade re-exports the policy engine ([`tiergate_core`]) for senders that embed it.
#![forbid(unsafe_code)]
#![doc = include_str!("../README.md")]

pub use tiergate_core::*;
