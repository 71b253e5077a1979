//! # tiergate-load: load generation and the transport floor
//!
//! * [`loadgen`]: gRPC load against `SendGovernor.Acquire`, with an HDR latency histogram;
//! * [`echo`]: a server that always answers ALLOW, the floor the sidecar is compared with.
//!
//! Orgs and recipients are drawn from `tiergate-dist`, shared with the trace generator.
#![forbid(unsafe_code)]

pub mod echo;
pub mod loadgen;
