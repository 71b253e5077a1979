//! tiergate's gRPC contract, `tiergate.v1`, generated at build time from `proto/`.
//!
//! Outside clients generate their stubs from the same file, so the names here are the ones
//! they call; the server and the CLI use these types directly.
#![forbid(unsafe_code)]

/// The `tiergate.v1` package: messages, enums, clients and servers.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("tiergate.v1");
}

/// The encoded descriptor set of `tiergate.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tiergate_v1_descriptor.bin"));
