//! The transport floor: a server with tiergate's proto that answers every `Acquire` (and every
//! item of an `AcquireBatch`) with ALLOW and decides nothing. Loadgen against it measures gRPC,
//! HTTP/2 and the client alone, so the sidecar's figures can be read as a ratio to it.

use std::future::Future;
use std::net::SocketAddr;

use tiergate_proto::v1 as pb;
use tiergate_proto::v1::send_governor_server::{SendGovernor, SendGovernorServer};
use tonic::{Request, Response, Status};

/// The echo's answer to any send.
fn allow(r: &pb::AcquireRequest) -> pb::AcquireResponse {
    pb::AcquireResponse {
        verdict: pb::Verdict::Allow as i32,
        reason: pb::DenyReason::Unspecified as i32,
        retry_after_ms: 0,
        permit_id: format!("{}:0", r.org_id),
        usage: Some(pb::Usage::default()),
    }
}

/// Always ALLOW.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

#[tonic::async_trait]
impl SendGovernor for Echo {
    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        Ok(Response::new(allow(&request.into_inner())))
    }

    async fn acquire_batch(
        &self,
        request: Request<pb::AcquireBatchRequest>,
    ) -> Result<Response<pb::AcquireBatchResponse>, Status> {
        let r = request.into_inner();
        Ok(Response::new(pb::AcquireBatchResponse {
            results: r.sends.iter().map(allow).collect(),
        }))
    }

    async fn report(
        &self,
        _request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        Ok(Response::new(pb::ReportResponse::default()))
    }

    async fn send_template(
        &self,
        _request: Request<pb::SendTemplateRequest>,
    ) -> Result<Response<pb::SendTemplateResponse>, Status> {
        Err(Status::unimplemented(
            "the echo server only answers Acquire",
        ))
    }

    async fn plan(
        &self,
        _request: Request<pb::PlanRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        Err(Status::unimplemented(
            "the echo server only answers Acquire",
        ))
    }
}

/// Serves the echo on `addr` until `shutdown`; `on_bound` gets the bound address.
pub async fn serve(
    addr: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    on_bound(listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(SendGovernorServer::new(Echo))
        .serve_with_incoming_shutdown(
            // The sidecar's sockets (no Nagle, writes coalesced): the floor is measured on
            // the same transport.
            tiergate_transport::incoming(listener, None),
            shutdown,
        )
        .await?;
    Ok(())
}
