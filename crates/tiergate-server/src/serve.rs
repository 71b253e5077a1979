//! `tiergate serve`: one gRPC port (both services, health, reflection) and one HTTP port.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tiergate_core::{Clock, Engine, ManualClock, SystemClock};
use tiergate_proto::v1::governor_admin_server::GovernorAdminServer;
use tiergate_proto::v1::send_governor_server::SendGovernorServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;

use crate::alerts::{Alerts, AlertsError};
use crate::auth::BearerAuth;
use crate::config::{Config, StoreKind};
use crate::error::GateError;
use crate::gate::Gate;
use crate::grpc::{AdminService, GovernorService};
use crate::http::{HttpState, Readiness, WebhookConfig, router};
use crate::metrics::Metrics;
use crate::status::StatusState;
use crate::status::history::Activity;
use crate::too_large::{Limit, TooLarge};
use crate::upstream::Upstream;
use crate::wait_room::{WaitLimits, WaitRoom};
use tiergate_core::Fact;
use tiergate_store::{EmbeddedStore, ErrorChain, RedisLog, RedisOptions, RedisTopology, Replica};

/// Why the server did not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The embedded store could not be opened or replayed (its message names the file).
    #[error(transparent)]
    Store(#[from] tiergate_store::StoreError),
    /// Redis could not be reached or read at start.
    #[error("--store redis / redis-cluster")]
    Redis(#[from] tiergate_store::RedisStoreError),
    /// Admin would be reachable from other machines without a token.
    #[error(
        "refusing to serve the admin API on non-loopback {0} without a token: set TIERGATE_ADMIN_TOKEN"
    )]
    AdminExposed(SocketAddr),
    /// An address could not be parsed or bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The policy in the config was refused by the engine.
    #[error(transparent)]
    Policy(#[from] tiergate_core::PolicyError),
    /// Alerts could not start.
    #[error(transparent)]
    Alerts(#[from] AlertsError),
    /// An org in the config could not be registered (refused by the engine, or the store
    /// failed).
    #[error("org {org}")]
    Org {
        /// The org's id.
        org: String,
        /// Why (boxed: a start-up error is rare, and keeps every `Result` small).
        source: Box<GateError>,
    },
    /// The upstream (Cloud API) client could not be built.
    #[error("upstream client")]
    Upstream(#[source] reqwest::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// Reflection could not be built.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Addresses actually bound (ports may have been 0).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// The gRPC address.
    pub grpc: SocketAddr,
    /// The HTTP address.
    pub http: SocketAddr,
}

/// The engine behind its gate, and its manual clock (with `--manual-clock`).
pub struct Built {
    /// Where every change goes.
    pub gate: Gate,
    /// The manual clock, when enabled.
    pub manual: Option<Arc<ManualClock>>,
}

/// Builds the engine from a config: policy, clock, the store (its replayed facts, or the Redis
/// logs), then the config's orgs.
pub async fn build(config: &Config) -> Result<Built, ServeError> {
    if !config.server.store.is_redis() {
        return build_local(config);
    }
    let (manual, clock) = clocks(config);
    let engine = Arc::new(Engine::new(config.policy.clone(), clock)?);
    let timeout = Duration::from_millis(config.server.redis_timeout_ms);
    let opts = RedisOptions {
        url: config.server.redis_url.clone().unwrap_or_default(),
        topology: match config.server.store {
            StoreKind::RedisCluster => RedisTopology::Cluster,
            _ => RedisTopology::Single,
        },
        response_timeout: timeout,
        connect_timeout: timeout,
        replica: RedisLog::new_replica_id(),
        partitions: (config.server.redis_partitions != 0).then_some(config.server.redis_partitions),
        log_format: config.server.redis_log_format.into(),
        fill_wait: Duration::from_millis(config.server.redis_fill_wait_ms),
    };
    let started = std::time::Instant::now();
    let log = RedisLog::connect(&opts).await?;
    let replica =
        Arc::new(Replica::start(engine.clone(), log, config.server.redis_snapshot_entries).await?);
    tracing::info!(
        replica = replica.id(),
        orgs = engine.org_count(),
        took_ms = started.elapsed().as_millis() as u64,
        "state loaded from redis"
    );
    tokio::spawn(replica.clone().watch(Duration::from_millis(250)));
    let gate = Gate::redis(replica, config.server.on_store_error);
    for org in &config.orgs {
        gate.apply(Fact::put_org(0, org.clone()))
            .await
            .map_err(|source| ServeError::Org {
                org: org.org_id.clone(),
                source: Box::new(source),
            })?;
    }
    Ok(Built { gate, manual })
}

/// The engine's clock: the system's, or with `--manual-clock` one that `AdvanceClock` moves
/// (returned too, for the admin service).
fn clocks(config: &Config) -> (Option<Arc<ManualClock>>, Arc<dyn Clock>) {
    let manual = config
        .server
        .manual_clock
        .then(|| Arc::new(ManualClock::new(SystemClock.now_ms())));
    let clock: Arc<dyn Clock> = match &manual {
        Some(m) => m.clone(),
        None => Arc::new(SystemClock),
    };
    (manual, clock)
}

fn build_local(config: &Config) -> Result<Built, ServeError> {
    let (manual, clock) = clocks(config);
    let engine = Engine::new(config.policy.clone(), clock)?;
    let store = match config.server.store {
        StoreKind::Embedded => {
            let (store, r) = EmbeddedStore::open_for(&config.server.data_dir, &engine)?;
            tracing::info!(
                snapshots = r.snapshots,
                facts = r.facts,
                took_ms = r.took.as_millis() as u64,
                compact_ms = r.compact.as_millis() as u64,
                orgs = engine.org_count(),
                data_dir = %config.server.data_dir.display(),
                "state restored"
            );
            Some(store)
        }
        _ => None,
    };
    for org in &config.orgs {
        engine.put_org(org.clone()).map_err(|e| ServeError::Org {
            org: org.org_id.clone(),
            source: Box::new(e.into()),
        })?;
    }
    Ok(Built {
        gate: Gate::local(Arc::new(engine), store),
        manual,
    })
}

/// Compacts the embedded store whenever `every` facts were committed since the last time:
/// snapshots are taken (off the runtime), the facts they reflect awaited, then stored.
async fn compact_while_running(
    store: Arc<EmbeddedStore>,
    engine: Arc<Engine>,
    every: u64,
    check: Duration,
) {
    loop {
        tokio::time::sleep(check).await;
        if store.facts_since_compaction() < every {
            continue;
        }
        let started = std::time::Instant::now();
        let (s, e) = (store.clone(), engine.clone());
        let prepared = match tokio::task::spawn_blocking(move || s.prepare_compaction(&e)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::warn!(error = %ErrorChain(&e), "compaction not prepared");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "compaction task failed");
                continue;
            }
        };
        if let Err(e) = store.wait_durable(prepared.reflects()).await {
            tracing::warn!(error = %ErrorChain(&e), "compaction abandoned: the store stopped committing");
            return;
        }
        let orgs = prepared.orgs();
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.commit_compaction(&prepared)).await {
            Ok(Ok(())) => tracing::info!(
                orgs,
                took_ms = started.elapsed().as_millis() as u64,
                "store compacted"
            ),
            Ok(Err(e)) => tracing::warn!(error = %ErrorChain(&e), "compaction not stored"),
            Err(e) => tracing::warn!(error = %e, "compaction task failed"),
        }
    }
}

async fn bind(addr: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: addr.to_owned(),
            source,
        })
}

/// Serves until `shutdown` resolves, then stops accepting, finishes in-flight calls and returns.
/// `on_bound` is told the bound addresses once both ports listen.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(Bound),
) -> Result<(), ServeError> {
    if let Ok(addr) = config.server.grpc_addr.parse::<SocketAddr>()
        && !addr.ip().is_loopback()
        && config.auth.admin_token.is_none()
    {
        return Err(ServeError::AdminExposed(addr));
    }
    // The store first: a locked or unreadable data directory must stop us before we listen.
    let Built { gate, manual } = build(&config).await?;
    if let Some(store) = gate.embedded()
        && config.server.compact_facts > 0
    {
        tokio::spawn(compact_while_running(
            store.clone(),
            gate.engine().clone(),
            config.server.compact_facts,
            Duration::from_millis(config.server.compact_check_ms),
        ));
    }
    let grpc_listener = bind(&config.server.grpc_addr).await?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            addr: config.server.grpc_addr.clone(),
            source,
        })?;
    if !grpc_addr.ip().is_loopback() && config.auth.admin_token.is_none() {
        return Err(ServeError::AdminExposed(grpc_addr));
    }
    let http_listener = bind(&config.server.http_addr).await?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            addr: config.server.http_addr.clone(),
            source,
        })?;
    if config.auth.admin_token.is_none() {
        tracing::warn!("no admin token: the admin API is open to anyone on this machine");
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    for name in ["tiergate.v1.SendGovernor", "tiergate.v1.GovernorAdmin"] {
        health
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    fn reflection() -> tonic_reflection::server::Builder<'static> {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tiergate_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    }
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let metrics = Metrics::new(config.server.metrics_max_orgs);
    let upstream = match &config.server.upstream_url {
        Some(url) => Some(Arc::new(
            Upstream::new(
                url,
                config.auth.upstream_token.clone(),
                config.auth.org_upstream_tokens.clone(),
                Duration::from_millis(config.server.upstream_timeout_ms),
            )
            .map_err(ServeError::Upstream)?,
        )),
        None => None,
    };
    let max = config.server.max_request_bytes;
    let sender_auth = BearerAuth::new(config.auth.sender_token.as_deref(), "SendGovernor");
    let admin_auth = BearerAuth::new(config.auth.admin_token.as_deref(), "admin");
    // Over `max`, tonic's decoder refuses the request; `TooLarge` makes that RESOURCE_EXHAUSTED.
    // A plan's list of recipients and a batch of sends get their own, larger limits.
    let waits = WaitRoom::new(
        gate.clone(),
        metrics.clone(),
        WaitLimits {
            max_wait: Duration::from_millis(config.server.max_wait_ms),
            max_waiters_per_org: config.server.max_waiters_per_org,
            poll: Duration::from_millis(config.server.wait_poll_ms),
        },
    );
    let alerts = match &config.alerts.url {
        Some(url) => {
            let dir = (config.server.store == StoreKind::Embedded)
                .then_some(config.server.data_dir.as_path());
            let a = Alerts::new(&config.alerts, url, gate.clone(), dir)?;
            a.start();
            tracing::info!(url, "alerts on");
            Some(a)
        }
        None => None,
    };
    let activity = Activity::new(config.server.status_bucket_ms);
    tokio::spawn(activity.clone().run_sampler(gate.clone()));
    let governor_service = GovernorService::new(gate.clone(), metrics.clone(), upstream, waits)
        .with_max_batch(config.server.max_batch)
        .with_activity(activity.clone());
    let plan_max = config.server.max_plan_request_bytes.max(max);
    let batch_max = config.server.max_batch_request_bytes.max(max);
    let wide = |bytes: usize| {
        SendGovernorServer::new(governor_service.clone()).max_decoding_message_size(bytes)
    };
    let governor = InterceptedService::new(
        TooLarge::new(wide(max), max)
            .with_method(
                "/tiergate.v1.SendGovernor/Plan",
                wide(plan_max),
                Limit {
                    bytes: plan_max,
                    key: "server.max_plan_request_bytes",
                },
            )
            .with_method(
                "/tiergate.v1.SendGovernor/AcquireBatch",
                wide(batch_max),
                Limit {
                    bytes: batch_max,
                    key: "server.max_batch_request_bytes",
                },
            ),
        move |r| sender_auth.check(r),
    );
    let admin = InterceptedService::new(
        TooLarge::new(
            GovernorAdminServer::new(AdminService::new(gate.clone(), manual))
                .max_decoding_message_size(max),
            max,
        ),
        move |r| admin_auth.check(r),
    );

    let ready = Readiness::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        // An error means the sender is gone, which also means: stop.
        let _ = rx.wait_for(|s| *s).await;
    };

    // On the embedded store, an Acquire's or a Report's answer waits on its connection for
    // its commit, and a connection that waits a request timeout without any commit of its
    // facts ends (a limit on a stalled store, where each call used to time out alone).
    let held_answers = gate
        .held_answers()
        .map(|durable| tiergate_transport::Holding {
            durable,
            stall_limit: Some(Duration::from_millis(config.server.request_timeout_ms)),
        });
    let grpc = tonic::transport::Server::builder()
        // A waiting send may be held up to `max_wait_ms` before its decision starts.
        .timeout(Duration::from_millis(
            config
                .server
                .request_timeout_ms
                .saturating_add(config.server.max_wait_ms),
        ))
        .concurrency_limit_per_connection(1_024)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(governor)
        .add_service(admin)
        .serve_with_incoming_shutdown(
            tiergate_transport::incoming(grpc_listener, held_answers),
            stopped(stop_rx.clone()),
        );
    let http_state = HttpState {
        alerts,
        status: StatusState {
            gate: gate.clone(),
            activity,
            admin_token: config.auth.admin_token.clone(),
        },
        ready: ready.clone(),
        gate: gate.clone(),
        metrics: metrics.clone(),
        webhook: Arc::new(WebhookConfig {
            secret: config.auth.webhook_secret.clone(),
            verify_token: config.auth.webhook_verify_token.clone(),
            max_body_bytes: config.server.webhook_max_body_bytes,
        }),
    };
    let http = axum::serve(http_listener, router(http_state))
        .with_graceful_shutdown(stopped(stop_rx.clone()));

    ready.set(true);
    on_bound(Bound {
        grpc: grpc_addr,
        http: http_addr,
    });
    tracing::info!(%grpc_addr, %http_addr, orgs = gate.engine().org_count(), store = gate.store_name(), "serving");

    let ready_on_stop = ready.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight calls");
        ready_on_stop.set(false);
        health
            .set_not_serving::<SendGovernorServer<GovernorService>>()
            .await;
        // Fails only when no server is left listening: nothing to stop.
        let _ = stop_tx.send(true);
    });
    let http = tokio::spawn(async move { http.await });
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let deadline = async move {
        stopped(stop_rx).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = grpc => r?,
        () = deadline => tracing::warn!(?grace, "shutdown grace over: closing remaining connections"),
    }
    http.abort();
    // Aborted just above: its JoinError says so, nothing more.
    let _ = http.await;
    gate.close();
    tracing::info!("stopped");
    Ok(())
}
