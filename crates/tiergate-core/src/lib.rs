//! # tiergate-core: the policy engine
//!
//! Decides whether one WhatsApp template send may go out now, records it when it may, and
//! explains every refusal with a reason and, where waiting helps, an exact retry-after. It keeps
//! a business inside WhatsApp's messaging tier (unique recipients in a moving 24 h), throughput
//! and pair rate, and applies the quality-rating and human-escalation-path policy.
//!
//! The crate has no I/O and no async runtime. Time comes from an injected [`Clock`], read once
//! per call at the edge and passed down as an argument (`*_at` methods take it directly); servers,
//! stores and webhooks are shells around [`Engine`].
//!
//! ```
//! use std::sync::Arc;
//! use tiergate_core::*;
//!
//! let clock = Arc::new(ManualClock::new(1_700_000_000_000));
//! let engine = Engine::new(Policy::default(), clock.clone()).unwrap();
//! let path = EscalationPath::new(EscalationKind::Email, "help@example.com").unwrap();
//! engine
//!     .put_org(OrgConfig::new("acme", Tier::Tier250).with_phone("1065", 80).with_escalation(path))
//!     .unwrap();
//! let send = SendRequest {
//!     org_id: "acme",
//!     phone_number_id: "1065",
//!     recipient: "4915112345678",
//!     recipient_user_id: None,
//!     template_name: "order_update",
//!     category: Category::Utility,
//!     idempotency_key: None,
//! };
//! let d = engine.decide(&send).unwrap();
//! assert!(d.is_allowed());
//! // The same recipient again within 6 s: pair rate.
//! let d = engine.decide(&send).unwrap();
//! assert_eq!(d.reason, Some(DenyReason::PairRate));
//! assert_eq!(d.retry_after_ms, 6_000);
//! ```

#![forbid(unsafe_code)]

mod advice;
mod appeal;
mod backoff;
mod batch;
mod change;
mod clock;
mod command;
mod decision;
mod deliveries;
mod engine;
mod error;
mod escalation;
mod execute;
mod fact_wire;
mod halves;
mod id_index;
mod idempotency;
mod journal;
mod links;
mod number;
mod org;
mod org_state;
mod permit_ledger;
mod plan;
mod policy;
mod quality;
mod rate;
mod registry;
mod reserve;
mod send_log;
mod tier;
mod validate;
mod wait;
mod wait_queue;
mod window;

pub use advice::{Advice, advise};
pub use appeal::{Appeal, AppealId, AppealStatus, MAX_EVIDENCE_LEN};
pub use batch::BatchError;
pub use change::{Change, MAX_DELIVERY_KEY_LEN};
pub use clock::{Clock, ManualClock, SystemClock, rfc3339};
pub use command::{Command, Outcome};
pub use decision::{
    Category, Decision, DenyReason, Permit, SendOutcome, SendRequest, Usage, Verdict,
};
pub use engine::Engine;
pub use error::{EngineError, PolicyError, ValidationError};
pub use escalation::{EscalationKind, EscalationPath, MAX_CONTACT_LEN};
pub use id_index::{IdOwner, IdRef};
pub use journal::{Fact, Journal};
pub use org::{NumberStatus, OrgConfig, OrgStatus, PhoneNumberConfig, TemplatePause};
pub use org_state::{OrgSnapshot, Reaction, TierChange};
pub use plan::{Audience, Plan, PlanRequest, Wave};
pub use policy::{Policy, TierScope};
pub use quality::QualityRating;
pub use reserve::{CategoryFill, Reserves};
pub use send_log::SendLog;
pub use tier::{Ladder, Tier};
pub use validate::{Bsuid, RecipientKey};
pub use wait::{Next, WaitStep, WaitTicket};
pub use wait_queue::Blocked;
pub use window::{Found, RecipientWindow, Touch};
