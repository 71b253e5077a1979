//! `tiergate.v1.SendGovernor`: the hot path every send passes through.

use std::sync::Arc;

use tiergate_core::{Engine, Permit, SendOutcome, SendRequest};
use tiergate_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::convert;

/// Decides sends and takes their outcomes.
#[derive(Debug, Clone)]
pub struct GovernorService {
    engine: Arc<Engine>,
}

impl GovernorService {
    /// A service over `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

#[tonic::async_trait]
impl pb::send_governor_server::SendGovernor for GovernorService {
    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let r = request.get_ref();
        let send = SendRequest {
            org_id: convert::required("org_id", &r.org_id)?,
            phone_number_id: convert::required("phone_number_id", &r.phone_number_id)?,
            recipient: convert::required("recipient", &r.recipient)?,
            template_name: convert::required("template_name", &r.template_name)?,
            category: convert::category(r.category)?,
            idempotency_key: (!r.idempotency_key.is_empty()).then_some(r.idempotency_key.as_str()),
        };
        let d = self.engine.decide(&send).map_err(convert::status)?;
        Ok(Response::new(convert::decision_pb(&d)))
    }

    async fn report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        let r = request.get_ref();
        let permit: Permit = convert::required("permit_id", &r.permit_id)?
            .parse()
            .map_err(|e: tiergate_core::ValidationError| Status::invalid_argument(e.to_string()))?;
        let outcome = match pb::SendOutcome::try_from(r.outcome) {
            Ok(pb::SendOutcome::Sent) => SendOutcome::Sent,
            Ok(pb::SendOutcome::NotSent) => SendOutcome::NotSent,
            Ok(pb::SendOutcome::Rejected) => {
                if r.error_code == 0 {
                    return Err(Status::invalid_argument(
                        "error_code: a REJECTED outcome needs WhatsApp's error code",
                    ));
                }
                SendOutcome::Rejected {
                    error_code: r.error_code,
                }
            }
            Ok(pb::SendOutcome::Unspecified) => {
                return Err(Status::invalid_argument("outcome: must be set"));
            }
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "outcome: unknown value {}",
                    r.outcome
                )));
            }
        };
        self.engine
            .report(&permit, outcome)
            .map_err(convert::status)?;
        Ok(Response::new(pb::ReportResponse {}))
    }

    async fn send_template(
        &self,
        _request: Request<pb::SendTemplateRequest>,
    ) -> Result<Response<pb::SendTemplateResponse>, Status> {
        Err(Status::unimplemented(
            "SendTemplate (forwarding to the upstream Cloud API) is not built yet; use Acquire and Report",
        ))
    }
}
