//! # tiergate-transport: how the gRPC port's connections are accepted and written
//!
//! The sidecar and the echo server that measures its transport floor (`tiergate-load`) accept
//! their connections here, so that the floor is measured on the same sockets:
//!
//! * [`incoming()`]: accepted sockets without Nagle's algorithm, each wrapped in [`Coalesced`];
//! * [`coalesce`]: the responses ready in one pass of the runtime written in one system call;
//! * [`turn`]: a task's wait until the runtime has run the tasks already ready;
//! * [`hold`]: on a durable store, answers held on their connection until the facts they
//!   acknowledge are durable, instead of each call waiting for them.
#![forbid(unsafe_code)]

pub mod coalesce;
pub mod hold;
pub mod incoming;
pub mod turn;

pub use coalesce::Coalesced;
pub use hold::{ConnectionInfo, Durable, Hold, Holding};
pub use incoming::incoming;
