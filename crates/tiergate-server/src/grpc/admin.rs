//! `tiergate.v1.GovernorAdmin`: orgs, escalation paths, ratings, tiers, appeals, the clock.
//!
//! Every request is validated completely before the engine is called, and each engine call
//! changes one org under its lock, so a rejected call changes nothing.

use std::sync::Arc;

use tiergate_core::{AppealId, Engine, ManualClock};
use tiergate_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::durable::{self, Durable};

/// The admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    engine: Arc<Engine>,
    manual_clock: Option<Arc<ManualClock>>,
    store: Durable,
}

impl AdminService {
    /// A service over `engine`; `manual_clock` enables `AdvanceClock`.
    pub fn new(
        engine: Arc<Engine>,
        manual_clock: Option<Arc<ManualClock>>,
        store: Durable,
    ) -> Self {
        Self {
            engine,
            manual_clock,
            store,
        }
    }

    /// Answers once the change is durable.
    async fn durable<T>(&self, v: T) -> Rpc<T> {
        durable::sync(&self.store).await?;
        Ok(Response::new(v))
    }
}

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::governor_admin_server::GovernorAdmin for AdminService {
    async fn put_org(&self, request: Request<pb::PutOrgRequest>) -> Rpc<pb::Org> {
        let org = request
            .get_ref()
            .org
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("org: must be set"))?;
        let cfg = convert::org_config(org)?;
        let st = self.engine.put_org(cfg).map_err(convert::status)?;
        tracing::info!(org_id = %st.config.org_id, tier = %st.config.tier, "org registered");
        self.durable(convert::org_pb(&st)).await
    }

    async fn get_org(&self, request: Request<pb::GetOrgRequest>) -> Rpc<pb::Org> {
        let id = convert::required("org_id", &request.get_ref().org_id)?;
        let st = self.engine.get_org(id).map_err(convert::status)?;
        Ok(Response::new(convert::org_pb(&st)))
    }

    async fn list_orgs(&self, _request: Request<pb::ListOrgsRequest>) -> Rpc<pb::ListOrgsResponse> {
        let orgs = self
            .engine
            .list_orgs()
            .iter()
            .map(convert::org_pb)
            .collect();
        Ok(Response::new(pb::ListOrgsResponse { orgs }))
    }

    async fn set_escalation_path(
        &self,
        request: Request<pb::SetEscalationPathRequest>,
    ) -> Rpc<pb::Org> {
        let r = request.get_ref();
        let id = convert::required("org_id", &r.org_id)?;
        let path = r
            .path
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("path: must be set"))?;
        let path = convert::escalation("path", path)?;
        let st = self
            .engine
            .set_escalation_path(id, path)
            .map_err(convert::status)?;
        self.durable(convert::org_pb(&st)).await
    }

    async fn clear_escalation_path(
        &self,
        request: Request<pb::ClearEscalationPathRequest>,
    ) -> Rpc<pb::Org> {
        let id = convert::required("org_id", &request.get_ref().org_id)?;
        let st = self
            .engine
            .clear_escalation_path(id)
            .map_err(convert::status)?;
        self.durable(convert::org_pb(&st)).await
    }

    async fn set_quality_rating(
        &self,
        request: Request<pb::SetQualityRatingRequest>,
    ) -> Rpc<pb::Org> {
        let r = request.get_ref();
        let id = convert::required("org_id", &r.org_id)?;
        let rating = convert::rating("rating", r.rating, false)?;
        let st = self
            .engine
            .set_quality_rating(id, rating)
            .map_err(convert::status)?;
        self.durable(convert::org_pb(&st)).await
    }

    async fn request_tier_change(
        &self,
        request: Request<pb::RequestTierChangeRequest>,
    ) -> Rpc<pb::TierChangeResponse> {
        let r = request.get_ref();
        let id = convert::required("org_id", &r.org_id)?;
        let target = convert::tier("target_tier", r.target_tier)?;
        let c = self
            .engine
            .request_tier_change(id, target)
            .map_err(convert::status)?;
        self.durable(pb::TierChangeResponse {
            applied: c.applied,
            tier: convert::tier_pb(c.tier) as i32,
            pending_tier: c
                .pending_tier
                .map_or(pb::Tier::Unspecified, convert::tier_pb) as i32,
            held_reason: convert::reason_pb(c.held_reason) as i32,
        })
        .await
    }

    async fn file_appeal(&self, request: Request<pb::FileAppealRequest>) -> Rpc<pb::Appeal> {
        let r = request.get_ref();
        let id = convert::required("org_id", &r.org_id)?;
        let a = self
            .engine
            .file_appeal(id, &r.evidence)
            .map_err(convert::status)?;
        self.durable(convert::appeal_pb(&a)).await
    }

    async fn resolve_appeal(&self, request: Request<pb::ResolveAppealRequest>) -> Rpc<pb::Appeal> {
        let r = request.get_ref();
        let id: AppealId = convert::required("appeal_id", &r.appeal_id)?
            .parse()
            .map_err(|e: tiergate_core::ValidationError| Status::invalid_argument(e.to_string()))?;
        let a = self
            .engine
            .resolve_appeal(&id, r.approved)
            .map_err(convert::status)?;
        self.durable(convert::appeal_pb(&a)).await
    }

    async fn set_account_restricted(
        &self,
        request: Request<pb::SetAccountRestrictedRequest>,
    ) -> Rpc<pb::Org> {
        let r = request.get_ref();
        let id = convert::required("org_id", &r.org_id)?;
        let st = self
            .engine
            .set_account_restricted(id, r.restricted)
            .map_err(convert::status)?;
        tracing::info!(
            org_id = id,
            restricted = r.restricted,
            "account restriction set"
        );
        self.durable(convert::org_pb(&st)).await
    }

    async fn pause_template(&self, request: Request<pb::PauseTemplateRequest>) -> Rpc<pb::Org> {
        let r = request.get_ref();
        let id = convert::required("org_id", &r.org_id)?;
        let until = match r.until_unix_ms {
            0 => None,
            t if t > 0 => Some(t as u64),
            _ => {
                return Err(Status::invalid_argument(
                    "until_unix_ms: must not be negative",
                ));
            }
        };
        let st = self
            .engine
            .pause_template(id, &r.template_name, until)
            .map_err(convert::status)?;
        self.durable(convert::org_pb(&st)).await
    }

    async fn reinstate_template(
        &self,
        request: Request<pb::ReinstateTemplateRequest>,
    ) -> Rpc<pb::Org> {
        let r = request.get_ref();
        let id = convert::required("org_id", &r.org_id)?;
        let st = self
            .engine
            .reinstate_template(id, &r.template_name)
            .map_err(convert::status)?;
        self.durable(convert::org_pb(&st)).await
    }

    async fn advance_clock(
        &self,
        request: Request<pb::AdvanceClockRequest>,
    ) -> Rpc<pb::AdvanceClockResponse> {
        let clock = self.manual_clock.as_ref().ok_or_else(|| {
            Status::failed_precondition("AdvanceClock needs the server started with --manual-clock")
        })?;
        let ms = request.get_ref().millis;
        if ms > 366 * 86_400_000 {
            return Err(Status::invalid_argument(
                "millis: at most one year at a time",
            ));
        }
        let now = clock.advance(ms);
        Ok(Response::new(pb::AdvanceClockResponse {
            now_unix_ms: now as i64,
        }))
    }
}
