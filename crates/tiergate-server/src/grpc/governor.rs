//! `tiergate.v1.SendGovernor`: the hot path every send passes through.

use std::sync::Arc;

use std::time::Instant;

use serde_json::Value;
use tiergate_core::{
    Advice, Audience, Change, Decision, Fact, Outcome, Permit, PlanRequest, Reaction, SendOutcome,
    SendRequest, advise,
};
use tiergate_proto::v1 as pb;
use tiergate_store::ErrorChain;
use tiergate_transport::{ConnectionInfo, Hold};
use tonic::transport::server::TcpConnectInfo;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::error::GateError;
use crate::gate::Gate;
use crate::metrics::Metrics;
use crate::status::history::Activity;
use crate::upstream::{TemplateMessage, Upstream, UpstreamResult};
use crate::wait_room::{OwnedSend, WaitRoom};

/// Decides sends and takes their outcomes.
#[derive(Debug, Clone)]
pub struct GovernorService {
    gate: Gate,
    metrics: Arc<Metrics>,
    upstream: Option<Arc<Upstream>>,
    waits: Arc<WaitRoom>,
    activity: Option<Arc<Activity>>,
    max_batch: usize,
}

/// `server.max_batch` unless configured.
const DEFAULT_MAX_BATCH: usize = 1_000;

impl GovernorService {
    /// A service over `gate`, counting into `metrics`; `SendTemplate` forwards to `upstream`;
    /// sends that may wait wait in `waits`.
    pub fn new(
        gate: Gate,
        metrics: Arc<Metrics>,
        upstream: Option<Arc<Upstream>>,
        waits: Arc<WaitRoom>,
    ) -> Self {
        Self {
            gate,
            metrics,
            upstream,
            waits,
            activity: None,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }

    /// Counts denials per org for the status page.
    pub fn with_activity(mut self, activity: Arc<Activity>) -> Self {
        self.activity = Some(activity);
        self
    }

    /// A decision of `org_id`'s, for the status page (denials only: an allowed send shows in
    /// the window's fill).
    fn observe(&self, org_id: &str, d: &Decision) {
        if let (Some(a), Some(reason)) = (&self.activity, d.reason) {
            a.denied(org_id, reason);
        }
    }

    /// Takes at most `n` sends in one `AcquireBatch` (`server.max_batch`).
    pub fn with_max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Decides a batch; each decision is counted as a lone Acquire's, with the batch's latency
    /// (what its caller waited; with the connection's `hold`, as for [`Self::decide`], the
    /// decisions' alone).
    async fn decide_batch(
        &self,
        sends: &[SendRequest<'_>],
        hold: Option<&Hold>,
    ) -> Result<Vec<Decision>, GateError> {
        let start = Instant::now();
        let ds = self.gate.decide_batch_held(sends, hold).await?;
        let took = start.elapsed();
        for (d, send) in ds.iter().zip(sends) {
            self.metrics.decision(d, took);
            self.observe(send.org_id, d);
        }
        Ok(ds)
    }

    /// Decides (and, when allowed, records durably) one send; with `max_wait_ms` > 0, waits
    /// for a denial time cures (SPEC §2a "Waiting"; see `wait_room`). With the `hold` of the
    /// connection the answer goes out on, a lone decision does not wait for its commit: the
    /// connection holds the answer until then ([`Gate::decide_held`]); its latency, as counted
    /// here, is then the decision's alone.
    async fn decide(
        &self,
        send: &SendRequest<'_>,
        max_wait_ms: u64,
        hold: Option<&Hold>,
    ) -> Result<Decision, GateError> {
        let wait = self.waits.wait_for(max_wait_ms);
        let start = Instant::now();
        let d = if wait.is_zero() {
            self.gate.decide_held(send, hold).await?
        } else {
            self.waits.decide(OwnedSend::new(send), wait).await?
        };
        self.metrics.decision(&d, start.elapsed());
        self.observe(send.org_id, &d);
        Ok(d)
    }

    /// Applies a change and returns the reaction it caused (with a `hold`, its durability
    /// is waited for on the connection: [`Gate::apply_held`]).
    async fn reaction(&self, fact: Fact, hold: Option<&Hold>) -> Result<Reaction, GateError> {
        match self.gate.apply_held(fact, hold).await? {
            Outcome::Reaction(r) => Ok(r),
            other => Err(GateError::Unexpected {
                call: "feedback",
                outcome: format!("{other:?}"),
            }),
        }
    }

    async fn react(
        &self,
        permit: &Permit,
        outcome: SendOutcome,
        hold: Option<&Hold>,
    ) -> Result<Reaction, GateError> {
        let fact = Fact::new(
            0,
            permit.org_id.to_string(),
            Change::Report {
                seq: permit.seq,
                outcome,
            },
        );
        let reaction = self.reaction(fact, hold).await?;
        if reaction != Reaction::None {
            self.metrics.reaction(reaction.label());
            tracing::info!(permit = %permit, ?outcome, reaction = reaction.label(), "feedback");
        }
        Ok(reaction)
    }
}

/// Where the call's answer is held until what it acknowledges is durable, if its connection
/// does that (`tiergate_transport::incoming` on the embedded store).
fn held<T>(request: &Request<T>) -> Option<&Hold> {
    request
        .extensions()
        .get::<ConnectionInfo<TcpConnectInfo>>()
        .and_then(|c| c.hold.as_ref())
}

/// The send both `Acquire` and `SendTemplate` carry, checked at the edge.
macro_rules! send_request {
    ($r:expr) => {
        SendRequest {
            org_id: convert::required("org_id", &$r.org_id)?,
            phone_number_id: convert::required("phone_number_id", &$r.phone_number_id)?,
            // Either may be empty (not both): the engine names the field that is wrong.
            recipient: &$r.recipient,
            recipient_user_id: (!$r.recipient_user_id.is_empty())
                .then_some($r.recipient_user_id.as_str()),
            template_name: convert::required("template_name", &$r.template_name)?,
            category: convert::category($r.category)?,
            idempotency_key: (!$r.idempotency_key.is_empty())
                .then_some($r.idempotency_key.as_str()),
        }
    };
}

/// Item `index` of a batch, checked at the edge like a lone Acquire; its errors name the item's
/// field (`sends[3].org_id`).
#[allow(clippy::result_large_err)]
fn batch_item(index: usize, r: &pb::AcquireRequest) -> Result<SendRequest<'_>, Status> {
    let item = || -> Result<SendRequest<'_>, Status> {
        if r.max_wait_ms > 0 {
            return Err(Status::invalid_argument(
                "max_wait_ms: a batch is answered at once (wait with single Acquire calls)",
            ));
        }
        Ok(send_request!(r))
    };
    item().map_err(|s| Status::new(s.code(), format!("sends[{index}].{}", s.message())))
}

#[allow(clippy::result_large_err)]
fn language_code(s: &str) -> Result<&str, Status> {
    if s.is_empty()
        || s.len() > 16
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'-')
    {
        return Err(Status::invalid_argument(
            "language_code: a template language such as en_US",
        ));
    }
    Ok(s)
}

#[allow(clippy::result_large_err)]
fn components(s: &str) -> Result<Value, Status> {
    if s.trim().is_empty() {
        return Ok(Value::Null);
    }
    match serde_json::from_str::<Value>(s) {
        Ok(v @ Value::Array(_)) => Ok(v),
        Ok(_) => Err(Status::invalid_argument(
            "components_json: must be the template's components array",
        )),
        Err(e) => Err(Status::invalid_argument(format!(
            "components_json: not JSON: {e}"
        ))),
    }
}

#[tonic::async_trait]
impl pb::send_governor_server::SendGovernor for GovernorService {
    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let r = request.get_ref();
        let send = send_request!(r);
        let d = self.decide(&send, r.max_wait_ms, held(&request)).await?;
        Ok(Response::new(convert::decision_pb(&d)))
    }

    async fn acquire_batch(
        &self,
        request: Request<pb::AcquireBatchRequest>,
    ) -> Result<Response<pb::AcquireBatchResponse>, Status> {
        let r = request.get_ref();
        if r.sends.is_empty() {
            return Err(Status::invalid_argument("sends: must not be empty"));
        }
        if r.sends.len() > self.max_batch {
            return Err(Status::invalid_argument(format!(
                "sends: {} sends, more than the limit of {} (server.max_batch)",
                r.sends.len(),
                self.max_batch
            )));
        }
        let sends = r
            .sends
            .iter()
            .enumerate()
            .map(|(i, s)| batch_item(i, s))
            .collect::<Result<Vec<_>, Status>>()?;
        let ds = self.decide_batch(&sends, held(&request)).await?;
        Ok(Response::new(pb::AcquireBatchResponse {
            results: ds.iter().map(convert::decision_pb).collect(),
        }))
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
        let reaction = self.react(&permit, outcome, held(&request)).await?;
        // What the sender should do about the code, from what the engine did about it.
        let (advice, retry_after_ms) = match outcome {
            SendOutcome::Rejected { error_code } => advise(error_code, reaction),
            SendOutcome::Sent | SendOutcome::NotSent => (Advice::Unspecified, 0),
        };
        Ok(Response::new(pb::ReportResponse {
            advice: convert::advice_pb(advice) as i32,
            retry_after_ms,
        }))
    }

    async fn plan(
        &self,
        request: Request<pb::PlanRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        let r = request.into_inner();
        match (r.recipients.is_empty(), r.audience_size) {
            (false, 0) => {}
            (true, n) if n > 0 => {}
            (false, _) => {
                return Err(Status::invalid_argument(
                    "recipients, audience_size: give one of them, not both",
                ));
            }
            (true, _) => {
                return Err(Status::invalid_argument(
                    "recipients, audience_size: give the recipients or how many there are \
                     (an empty plan)",
                ));
            }
        }
        convert::required("org_id", &r.org_id)?;
        convert::required("phone_number_id", &r.phone_number_id)?;
        convert::required("template_name", &r.template_name)?;
        let category = convert::category(r.category)?;
        let org_id = r.org_id.clone();
        let plan = self
            .gate
            .plan(&org_id, move |engine| {
                let list: Vec<&str> = r.recipients.iter().map(String::as_str).collect();
                engine.plan(&PlanRequest {
                    org_id: &r.org_id,
                    phone_number_id: &r.phone_number_id,
                    template_name: &r.template_name,
                    category,
                    audience: if list.is_empty() {
                        Audience::NewRecipients(r.audience_size)
                    } else {
                        Audience::Recipients(&list)
                    },
                })
            })
            .await?;
        Ok(Response::new(convert::plan_pb(&plan)))
    }

    async fn send_template(
        &self,
        request: Request<pb::SendTemplateRequest>,
    ) -> Result<Response<pb::SendTemplateResponse>, Status> {
        let Some(upstream) = &self.upstream else {
            return Err(Status::failed_precondition(
                "SendTemplate needs an upstream: start with --upstream-url",
            ));
        };
        let r = request.get_ref();
        let send = send_request!(r);
        let language = language_code(&r.language_code)?;
        let components = components(&r.components_json)?;
        // It is sent upstream only once durable: no hold.
        let d = self.decide(&send, r.max_wait_ms, None).await?;
        let mut resp = pb::SendTemplateResponse {
            verdict: convert::decision_pb(&d).verdict,
            reason: convert::reason_pb(d.reason) as i32,
            retry_after_ms: d.retry_after_ms,
            usage: Some(convert::usage_pb(&d.usage)),
            ..Default::default()
        };
        // A denied send never reaches upstream, and neither does a replayed idempotency key:
        // the first call already forwarded it.
        let Some(permit) = d.permit.filter(|_| !d.replayed) else {
            if d.replayed {
                resp.error_title = "duplicate idempotency key: forwarded by the first call".into();
            }
            return Ok(Response::new(resp));
        };
        // `decide` answered once the send was durable: forward only what a restart remembers.
        let msg = TemplateMessage {
            phone_number_id: send.phone_number_id,
            to: send.recipient,
            user_id: send.recipient_user_id,
            template_name: send.template_name,
            language_code: language,
            components,
        };
        let result = upstream.send(send.org_id, &msg).await;
        self.metrics.upstream(result.label());
        let outcome = match &result {
            UpstreamResult::Sent { message_id, held } => {
                resp.message_id = message_id.clone();
                if *held {
                    // Portfolio pacing: Meta took the send and holds it. It stays counted (it
                    // may still go out); the org shows as under review.
                    let fact = Fact::new(0, send.org_id.to_owned(), Change::PacingHeld);
                    if let Err(e) = self.gate.apply(fact).await {
                        tracing::warn!(
                            org_id = send.org_id,
                            error = %ErrorChain(&e),
                            "pacing hold after upstream"
                        );
                    }
                }
                SendOutcome::Sent
            }
            UpstreamResult::Rejected { code, title } => {
                resp.error_code = *code;
                resp.error_title = title.clone();
                // Here the template is known too (a Report carries only the permit), so the
                // reaction goes through `feedback` with everything it may need.
                let fact = Fact::new(
                    0,
                    send.org_id.to_owned(),
                    Change::Feedback {
                        phone: Some(send.phone_number_id.to_owned()),
                        recipient: Some(send.recipient)
                            .filter(|r| !r.is_empty())
                            .or(send.recipient_user_id)
                            .map(str::to_owned),
                        template: Some(send.template_name.to_owned()),
                        code: *code,
                    },
                );
                let reaction = match self.reaction(fact, None).await {
                    Ok(r) => {
                        if r != Reaction::None {
                            self.metrics.reaction(r.label());
                        }
                        r
                    }
                    Err(e) => {
                        tracing::warn!(error = %ErrorChain(&e), "feedback after upstream");
                        // The advice still follows the code; only the wait is unknown.
                        Reaction::Incomplete
                    }
                };
                let (advice, retry_after_ms) = advise(*code, reaction);
                resp.advice = convert::advice_pb(advice) as i32;
                resp.retry_after_ms = retry_after_ms;
                SendOutcome::Sent
            }
            UpstreamResult::NotSent { reason } => {
                tracing::warn!(
                    org_id = send.org_id,
                    reason,
                    "upstream send failed; slot given back"
                );
                resp.error_title = reason.clone();
                SendOutcome::NotSent
            }
        };
        if let Err(e) = self.react(&permit, outcome, None).await {
            tracing::warn!(permit = %permit, error = %ErrorChain(&e), "report after upstream");
            // The send went out but its outcome is not recorded: the caller must know. An
            // outcome the engine refused (e.g. the permit expired meanwhile) changes nothing.
            if e.is_store() {
                return Err(e.into());
            }
        }
        Ok(Response::new(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call finds its connection's hold under the type `tiergate_transport::incoming`'s
    /// connections put in its extensions (that crate's own gRPC test checks tonic puts it
    /// there); a call on a connection without one waits in its own task.
    #[test]
    fn a_call_finds_its_connection_s_hold() {
        let info = |hold: Option<Hold>| ConnectionInfo {
            socket: TcpConnectInfo {
                local_addr: None,
                remote_addr: None,
            },
            hold,
        };
        let hold = Hold::default();
        hold.require(3);
        let mut on_held = Request::new(());
        on_held.extensions_mut().insert(info(Some(hold)));
        assert_eq!(held(&on_held).map(Hold::mark), Some(3));
        let mut on_plain = Request::new(());
        on_plain.extensions_mut().insert(info(None));
        assert!(held(&on_plain).is_none());
        assert!(held(&Request::new(())).is_none());
    }
}
