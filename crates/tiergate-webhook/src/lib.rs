//! # tiergate-webhook: what a WhatsApp webhook asks of the engine
//!
//! The sidecar (`POST /webhooks/whatsapp`) and the simulator (`webhook` lines of a trace) must
//! treat a webhook exactly alike, and only one of them has a network, a store and an async
//! runtime. So everything between the body's bytes and the engine's answers lives here, pure and
//! synchronous, and each shell keeps only its loop:
//!
//! * [`parse`]: the whole body parsed before anything applies; refused whole only when it is
//!   not a notification at all, otherwise each change read on its own (one that cannot be read
//!   is counted and answered 200 with the rest) and given a delivery key;
//! * [`plan`]: which ids a change names ([`plan::ids`]), and, once the shell has resolved them,
//!   the engine facts to apply, one at a time ([`Plan`]), each judged by the engine's answer,
//!   the change's delivery key first so that Meta's redeliveries apply once;
//! * [`outcome`]: what became of each change ([`Outcome`]) and the counts answered to WhatsApp
//!   ([`Summary`]).
//!
//! Signature verification and HTTP stay in the server: they are about the transport, not about
//! what a change means.
//!
//! ```
//! use std::sync::Arc;
//! use tiergate_core::{Command, Engine, ManualClock, OrgConfig, Policy, Tier};
//! use tiergate_webhook::{Plan, parse, plan};
//!
//! let engine = Engine::new(Policy::default(), Arc::new(ManualClock::new(0))).unwrap();
//! let mut org = OrgConfig::new("acme", Tier::Tier250);
//! org.waba_ids.push("102290129340398".into());
//! engine.put_org(org).unwrap();
//!
//! let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398",
//!     "changes":[{"field":"account_update","value":{"event":"ACCOUNT_VIOLATION"}}]}]}"#;
//! for parsed in parse::parse(body).unwrap() {
//!     let named = plan::resolve(&parsed.change, |id| engine.lookup_id(id));
//!     let mut plan = Plan::new(&parsed, named, engine.policy(), 0);
//!     while let Some(fact) = plan.next_fact() {
//!         match engine.execute(&Command::Apply { fact }) {
//!             Ok(answer) => plan.answered(&answer),
//!             Err(e) => plan.refused(e.to_string()),
//!         }
//!     }
//!     assert_eq!(plan.outcome(), tiergate_webhook::Outcome::Applied);
//! }
//! assert!(engine.get_org("acme").unwrap().account_restricted);
//! ```
#![forbid(unsafe_code)]

mod fact;
mod key;
mod messages;
pub mod outcome;
pub mod parse;
pub mod plan;

pub use outcome::{Outcome, Summary};
pub use plan::{Named, Plan};
