//! # tiergate-server: the sidecar shell around the policy engine
//!
//! Everything here is I/O and translation; every decision is the engine's
//! ([`tiergate_core::Engine`]). The modules read like the request path:
//!
//! * [`alerts`]: an org's state turning bad, POSTed (signed, at least once) to `[alerts] url`;
//! * [`config`]: the TOML file, environment and flag overrides, with line-numbered errors;
//! * [`auth`]: bearer tokens, compared in constant time;
//! * [`convert`]: wire types ↔ engine types, validating at the edge;
//! * [`grpc`]: `SendGovernor` and `GovernorAdmin`;
//! * [`gate`]: the one way state is changed or read, per store (memory, embedded, Redis):
//!   answers only once the change is committed or replicated;
//! * [`error`]: what a gate call can fail with, by kind ([`error::GateError`]);
//! * [`http`]: `/healthz`, `/readyz`, `/metrics` and `/webhooks/whatsapp`;
//! * [`status`]: the operators' status pages (`/`, `/orgs/{org_id}`): HTML, SVG, no script;
//! * [`webhook`]: signature of WhatsApp webhooks, and their application through the gate
//!   (parsing and meaning are `tiergate-webhook`'s);
//! * [`upstream`]: the Cloud API client `SendTemplate` forwards through;
//! * [`wait_room`]: waiting sends (`max_wait_ms`): who sleeps until when, and who wakes whom;
//!   [`signals`]: per-org wake-ups when a change may free something;
//! * [`too_large`]: RESOURCE_EXHAUSTED, with the limit, for a request over the size limit;
//! * [`serve`]: binds the ports and runs until shutdown.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod auth;
pub mod config;
pub mod convert;
pub mod error;
pub mod gate;
pub mod grpc;
pub mod held_answers;
pub mod http;
pub mod metrics;
pub mod serve;
pub mod signals;
pub mod status;
pub mod too_large;
pub mod upstream;
pub mod wait_room;
pub mod webhook;
