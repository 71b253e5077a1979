//! The gRPC services: thin translations between `tiergate.v1` and the engine.

mod admin;
mod governor;

pub use admin::AdminService;
pub use governor::GovernorService;
