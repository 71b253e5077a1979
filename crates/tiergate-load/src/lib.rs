//! # tiergate-load: load generation and the transport floor
//!
//! * [`loadgen`]: gRPC load against `SendGovernor.Acquire`, with an HDR latency histogram;
//! * [`echo`]: a server that always answers ALLOW, the floor the sidecar is compared with;
//! * [`dist`]: seeded uniform and Zipf draws.
#![forbid(unsafe_code)]

pub mod dist;
pub mod echo;
pub mod loadgen;
