//! The HTTP port: probes, metrics and WhatsApp webhooks.
//!
//! * `/healthz`: 200 while the process serves.
//! * `/readyz`: 200 while it accepts sends; 503 once shutdown has begun, or while the state
//!   store cannot take changes (Redis unreachable, an embedded write failed).
//! * `/metrics`: Prometheus text.
//! * `/` and `/orgs/{org_id}`: the operators' status pages ([`crate::status`]).
//! * `GET /webhooks/whatsapp`: Meta's verification handshake.
//! * `POST /webhooks/whatsapp`: signed notifications, verified, parsed, then applied change by
//!   change (each counted by field and result: applied, held, unknown_id, ignored, duplicate,
//!   unreadable, rejected, store_unavailable).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use subtle::ConstantTimeEq;
use tiergate_store::ErrorChain;
use tiergate_webhook::{Outcome, parse};

use crate::metrics::Metrics;
use crate::webhook::{apply, signature};

/// Whether the sidecar should receive traffic.
#[derive(Debug, Default, Clone)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Whether ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Webhook settings.
#[derive(Debug, Clone, Default)]
pub struct WebhookConfig {
    /// The app secret that signs POSTs; without it every POST is refused.
    pub secret: Option<String>,
    /// The token Meta echoes in the GET handshake.
    pub verify_token: Option<String>,
    /// Largest body accepted.
    pub max_body_bytes: usize,
}

/// Everything the HTTP handlers need.
#[derive(Clone)]
pub struct HttpState {
    /// Readiness.
    pub ready: Readiness,
    /// Where webhook changes go (and are acknowledged only once they are durable).
    pub gate: crate::gate::Gate,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Webhook settings.
    pub webhook: Arc<WebhookConfig>,
    /// The status pages' view (`/`, `/orgs/{org_id}`).
    pub status: crate::status::StatusState,
    /// Alerts, when `[alerts] url` is set (their counters go into `/metrics`).
    pub alerts: Option<Arc<crate::alerts::Alerts>>,
}

/// The HTTP routes.
pub fn router(state: HttpState) -> Router {
    let limit = state.webhook.max_body_bytes;
    let status = Router::new()
        .route("/", get(crate::status::index))
        .route("/orgs/{org_id}", get(crate::status::org))
        .with_state(state.status.clone());
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/webhooks/whatsapp",
            get(verify_handshake)
                .post(receive)
                .layer(DefaultBodyLimit::max(limit)),
        )
        .with_state(state)
        .merge(status)
}

async fn readyz(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    if !s.ready.is_ready() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        )
    } else if !s.gate.is_ready() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: state store unavailable\n",
        )
    } else {
        (StatusCode::OK, "ready\n")
    }
}

async fn metrics(State(s): State<HttpState>) -> Response {
    let mut body = s.metrics.render(&s.gate);
    if let Some(a) = &s.alerts {
        crate::metrics::render_alerts(&mut body, &a.stats);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn verify_handshake(
    State(s): State<HttpState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (Some(expected), Some(mode), Some(token), Some(challenge)) = (
        s.webhook.verify_token.as_deref(),
        q.get("hub.mode"),
        q.get("hub.verify_token"),
        q.get("hub.challenge"),
    ) else {
        return (StatusCode::FORBIDDEN, "verification refused\n").into_response();
    };
    let token_ok: bool = token.as_bytes().ct_eq(expected.as_bytes()).into();
    if mode == "subscribe" && token_ok && challenge.len() <= 256 {
        (StatusCode::OK, challenge.clone()).into_response()
    } else {
        (StatusCode::FORBIDDEN, "verification refused\n").into_response()
    }
}

async fn receive(State(s): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = s.webhook.secret.as_deref() else {
        s.metrics.webhook_request("no_secret");
        tracing::warn!("webhook refused: TIERGATE_WEBHOOK_SECRET is not set");
        return (StatusCode::UNAUTHORIZED, "webhook secret not configured\n").into_response();
    };
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if !signature::verify(secret.as_bytes(), &body, sig) {
        s.metrics.webhook_request("bad_signature");
        return (
            StatusCode::UNAUTHORIZED,
            "missing or wrong X-Hub-Signature-256\n",
        )
            .into_response();
    }
    let changes = match parse::parse(&body) {
        Ok(c) => c,
        Err(e) => {
            s.metrics.webhook_request("malformed");
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    let (outcomes, summary) = apply::apply(&s.gate, &changes).await;
    for (c, o) in changes.iter().zip(&outcomes) {
        s.metrics.webhook_change(c.change.field(), o.label());
        if let Outcome::Reacted(r) = o
            && *r != tiergate_core::Reaction::None
        {
            s.metrics.reaction(r.label());
        }
    }
    // A change is answered "unknown id" (and never sent again) only if the store could be
    // asked for orgs other replicas registered: a lookup that could not ask logged it and read
    // the id as unknown.
    let looked = if outcomes.contains(&Outcome::UnknownId) {
        s.gate.discover().await
    } else {
        Ok(())
    };
    let failed = s.gate.flush().await.and(looked).err();
    if let Some(e) = &failed {
        tracing::warn!(error = %ErrorChain(e), "webhook not acknowledged");
    }
    let store_failed = failed.is_some_and(|e| e.is_store());
    if store_failed || outcomes.contains(&Outcome::StoreUnavailable) {
        // WhatsApp retries a webhook it did not get a 200 for: the changes come again.
        s.metrics.webhook_request("store_unavailable");
        return (StatusCode::SERVICE_UNAVAILABLE, "state store unavailable\n").into_response();
    }
    s.metrics.webhook_request("ok");
    // A struct of counts always serializes; an empty body would still be a 200 WhatsApp keeps.
    let body = serde_json::to_string(&summary).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
