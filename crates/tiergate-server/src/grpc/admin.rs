//! `tiergate.v1.GovernorAdmin`: orgs, escalation paths, ratings, tiers, appeals, the clock.
//!
//! Every request is validated completely before the engine is called, and each engine call
//! changes one org under its lock, so a rejected call changes nothing.

use std::sync::Arc;

use tiergate_core::{AppealId, Change, Fact, ManualClock, OrgStatus, TierChange};
use tiergate_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::gate::Gate;

/// The admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    gate: Gate,
    manual_clock: Option<Arc<ManualClock>>,
}

impl AdminService {
    /// A service over `gate`; `manual_clock` enables `AdvanceClock`.
    pub fn new(gate: Gate, manual_clock: Option<Arc<ManualClock>>) -> Self {
        Self { gate, manual_clock }
    }

    /// Applies a change that answers with the org; returns once it is durable (or replicated).
    async fn org_change(&self, fact: Fact) -> Result<OrgStatus, Status> {
        self.gate
            .apply(fact)
            .await?
            .into_org()
            .map_err(convert::status)
    }

    async fn org_reply(&self, fact: Fact) -> Rpc<pb::Org> {
        let st = self.org_change(fact).await?;
        Ok(Response::new(convert::org_pb(&st)))
    }

    async fn appeal_change(&self, fact: Fact) -> Rpc<pb::Appeal> {
        let a = self.gate.apply(fact).await?.into_appeal();
        Ok(Response::new(convert::appeal_pb(
            &a.map_err(convert::status)?,
        )))
    }

    async fn tier_change(&self, fact: Fact) -> Result<TierChange, Status> {
        self.gate
            .apply(fact)
            .await?
            .into_tier()
            .map_err(convert::status)
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
        let st = self.org_change(Fact::put_org(0, cfg)).await?;
        tracing::info!(org_id = %st.config.org_id, tier = %st.config.tier, "org registered");
        Ok(Response::new(convert::org_pb(&st)))
    }

    async fn get_org(&self, request: Request<pb::GetOrgRequest>) -> Rpc<pb::Org> {
        let id = convert::required("org_id", &request.get_ref().org_id)?;
        let st = self.gate.org(id).await?;
        Ok(Response::new(convert::org_pb(&st)))
    }

    async fn list_orgs(&self, _request: Request<pb::ListOrgsRequest>) -> Rpc<pb::ListOrgsResponse> {
        let orgs = self
            .gate
            .orgs()
            .await?
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
        self.org_reply(Fact::new(0, id.to_owned(), Change::EscalationSet { path }))
            .await
    }

    async fn clear_escalation_path(
        &self,
        request: Request<pb::ClearEscalationPathRequest>,
    ) -> Rpc<pb::Org> {
        let id = convert::required("org_id", &request.get_ref().org_id)?;
        self.org_reply(Fact::new(0, id.to_owned(), Change::EscalationCleared))
            .await
    }

    async fn set_quality_rating(
        &self,
        request: Request<pb::SetQualityRatingRequest>,
    ) -> Rpc<pb::Org> {
        let r = request.get_ref();
        let id = convert::required("org_id", &r.org_id)?;
        let rating = convert::rating("rating", r.rating, false)?;
        self.org_reply(Fact::new(0, id.to_owned(), Change::Rating { rating }))
            .await
    }

    async fn request_tier_change(
        &self,
        request: Request<pb::RequestTierChangeRequest>,
    ) -> Rpc<pb::TierChangeResponse> {
        let r = request.get_ref();
        let id = convert::required("org_id", &r.org_id)?;
        let target = convert::tier("target_tier", r.target_tier)?;
        let c = self
            .tier_change(Fact::new(
                0,
                id.to_owned(),
                Change::TierRequest { tier: target },
            ))
            .await?;
        Ok(Response::new(pb::TierChangeResponse {
            applied: c.applied,
            tier: convert::tier_pb(c.tier) as i32,
            pending_tier: c
                .pending_tier
                .map_or(pb::Tier::Unspecified, convert::tier_pb) as i32,
            held_reason: convert::reason_pb(c.held_reason) as i32,
        }))
    }

    async fn file_appeal(&self, request: Request<pb::FileAppealRequest>) -> Rpc<pb::Appeal> {
        let r = request.get_ref();
        let id = convert::required("org_id", &r.org_id)?;
        self.appeal_change(Fact::new(
            0,
            id.to_owned(),
            Change::AppealFiled {
                evidence: r.evidence.clone(),
            },
        ))
        .await
    }

    async fn resolve_appeal(&self, request: Request<pb::ResolveAppealRequest>) -> Rpc<pb::Appeal> {
        let r = request.get_ref();
        let id: AppealId = convert::required("appeal_id", &r.appeal_id)?
            .parse()
            .map_err(|e: tiergate_core::ValidationError| Status::invalid_argument(e.to_string()))?;
        self.appeal_change(Fact::new(
            0,
            id.org_id,
            Change::AppealResolved {
                n: id.n,
                approved: r.approved,
            },
        ))
        .await
    }

    async fn set_marketing_api_required(
        &self,
        request: Request<pb::SetMarketingApiRequiredRequest>,
    ) -> Rpc<pb::Org> {
        let r = request.get_ref();
        let id = convert::required("org_id", &r.org_id)?;
        let change = Change::MarketingApiRequired {
            required: r.required,
        };
        let reply = self.org_reply(Fact::new(0, id, change)).await?;
        tracing::info!(
            org_id = id,
            required = r.required,
            "marketing through the Marketing Messages API"
        );
        Ok(reply)
    }

    async fn set_account_restricted(
        &self,
        request: Request<pb::SetAccountRestrictedRequest>,
    ) -> Rpc<pb::Org> {
        let r = request.get_ref();
        let id = convert::required("org_id", &r.org_id)?;
        let reply = self
            .org_reply(Fact::new(
                0,
                id.to_owned(),
                Change::AccountRestricted {
                    restricted: r.restricted,
                },
            ))
            .await?;
        tracing::info!(
            org_id = id,
            restricted = r.restricted,
            "account restriction set"
        );
        Ok(reply)
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
        self.org_reply(Fact::new(
            0,
            id.to_owned(),
            Change::TemplatePaused {
                template: r.template_name.clone(),
                until,
            },
        ))
        .await
    }

    async fn reinstate_template(
        &self,
        request: Request<pb::ReinstateTemplateRequest>,
    ) -> Rpc<pb::Org> {
        let r = request.get_ref();
        let id = convert::required("org_id", &r.org_id)?;
        self.org_reply(Fact::new(
            0,
            id.to_owned(),
            Change::TemplateReinstated {
                template: r.template_name.clone(),
            },
        ))
        .await
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
        // Waiting sends sleep on the real clock: tell them time moved.
        self.gate.signals().poke_all();
        Ok(Response::new(pb::AdvanceClockResponse {
            now_unix_ms: now as i64,
        }))
    }
}
