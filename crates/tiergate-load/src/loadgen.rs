//! `tiergate loadgen`: drives `SendGovernor.Acquire` (or `AcquireBatch`, `--batch N`) over gRPC
//! and measures it.
//!
//! Many in-flight calls over a few HTTP/2 connections, an optional target rate, a duration or a
//! call count, and orgs and recipients drawn uniformly or from a Zipf distribution. Latencies go
//! into an HDR histogram (one entry per call); the summary gives decisions/s (sends decided,
//! whichever call carried them, so single and batched runs compare), calls/s and
//! p50/p90/p99/p999.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tiergate_dist::{Dist, Rng};
use tiergate_proto::v1 as pb;
use tiergate_proto::v1::governor_admin_client::GovernorAdminClient;
use tiergate_proto::v1::send_governor_client::SendGovernorClient;
use tonic::transport::{Channel, Endpoint};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `http://host:port` of the sidecar (or the echo server).
    pub addr: String,
    /// HTTP/2 connections to open.
    pub connections: usize,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Stop after this long …
    pub duration: Option<Duration>,
    /// … or after this many calls (whichever comes first; one of them must be set).
    pub requests: Option<u64>,
    /// Target calls per second in total; `None` = as fast as possible.
    pub rate: Option<f64>,
    /// Orgs `{org_prefix}{0..orgs}`.
    pub orgs: u64,
    /// Recipients per draw space.
    pub recipients: u64,
    /// Zipf exponent for orgs (`None`: uniform).
    pub org_zipf: Option<f64>,
    /// Zipf exponent for recipients (`None`: uniform).
    pub recipient_zipf: Option<f64>,
    /// Org id prefix.
    pub org_prefix: String,
    /// Org `i` sends from phone number id `phone_base + i` (ids are unique across orgs).
    pub phone_base: u64,
    /// Seed of the draws.
    pub seed: u64,
    /// Bearer token for `SendGovernor` (and admin, for `setup`).
    pub token: Option<String>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Sends per call: `None` = one `Acquire` each; `Some(n)` = `AcquireBatch` of `n`.
    pub batch: Option<usize>,
    /// Report each allowed send's permit as sent (`Report`, `SEND_OUTCOME_SENT`) once its
    /// answer arrives, as a real sender does after WhatsApp accepted the message. Each report
    /// is a call of its own: it counts in the summary's `requests`, the rates and the
    /// latencies (`requests` above bounds the `Acquire` calls; the reports come on top).
    pub report: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            addr: "http://127.0.0.1:50051".into(),
            connections: 4,
            concurrency: 64,
            duration: Some(Duration::from_secs(10)),
            requests: None,
            rate: None,
            orgs: 100,
            recipients: 1_000_000,
            org_zipf: None,
            recipient_zipf: None,
            org_prefix: "lg-".into(),
            phone_base: 1_000_000_000,
            seed: 1,
            token: None,
            progress: false,
            batch: None,
            report: false,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Calls made.
    pub requests: u64,
    /// Sends per call (1: single `Acquire`s).
    pub batch: usize,
    /// Sends decided (answered ALLOW or DENY).
    pub decisions: u64,
    /// Sends answered ALLOW.
    pub allowed: u64,
    /// Sends answered DENY.
    pub denied: u64,
    /// Denials by reason.
    pub denied_by_reason: BTreeMap<String, u64>,
    /// Calls that failed with a gRPC error (reports included).
    pub errors: u64,
    /// `Report` calls made (`LoadConfig::report`): one per allowed send.
    pub reports: u64,
    /// Of them, those that failed with a gRPC error.
    pub report_errors: u64,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// Calls per second.
    pub throughput_rps: f64,
    /// Sends decided per second (= calls/s for single `Acquire`s).
    pub decisions_per_s: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// The slowest call.
    pub max_us: u64,
}

impl Summary {
    /// A human-readable block.
    pub fn text(&self) -> String {
        let mut reasons: Vec<String> = self
            .denied_by_reason
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if reasons.is_empty() {
            reasons.push("-".into());
        }
        format!(
            "requests     {} (batch {}; {} of them reports, {} failed)\nthroughput   {:.0} decisions/s, {:.0} calls/s over {:.2} s\nallowed      {}\ndenied       {} ({})\nerrors       {}\nlatency µs   p50 {}  p90 {}  p99 {}  p999 {}  max {}  (per call)\n",
            self.requests,
            self.batch,
            self.reports,
            self.report_errors,
            self.decisions_per_s,
            self.throughput_rps,
            self.elapsed_s,
            self.allowed,
            self.denied,
            reasons.join(", "),
            self.errors,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.max_us
        )
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The address is not a URI.
    #[error("bad address {0:?}")]
    Addr(String),
    /// No connection could be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// Neither a duration nor a call count.
    #[error("give a duration or a number of requests")]
    Unbounded,
    /// Registering the orgs failed.
    #[error("setup: {0}")]
    Setup(tonic::Status),
}

fn request<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token
        && let Ok(v) = format!("Bearer {t}").parse()
    {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

async fn channels(cfg: &LoadConfig) -> Result<Vec<Channel>, LoadError> {
    let ep =
        Endpoint::from_shared(cfg.addr.clone()).map_err(|_| LoadError::Addr(cfg.addr.clone()))?;
    let mut out = Vec::new();
    for _ in 0..cfg.connections.max(1) {
        out.push(ep.connect().await.map_err(|source| LoadError::Connect {
            addr: cfg.addr.clone(),
            source,
        })?);
    }
    Ok(out)
}

/// Registers the orgs the run draws from, at `tier` with a fast number and an escalation path.
/// A server without the admin service (the echo server) is left as it is.
pub async fn setup(cfg: &LoadConfig, tier: pb::Tier) -> Result<(), LoadError> {
    let ch = channels(&LoadConfig {
        connections: 1,
        ..cfg.clone()
    })
    .await?;
    let mut admin = GovernorAdminClient::new(ch[0].clone());
    for i in 0..cfg.orgs {
        let org = pb::Org {
            org_id: format!("{}{i}", cfg.org_prefix),
            tier: tier as i32,
            phone_numbers: vec![pb::PhoneNumber {
                phone_number_id: (cfg.phone_base + i).to_string(),
                display_phone_number: String::new(),
                throughput_mps: 1_000,
            }],
            escalation_path: Some(pb::EscalationPath {
                kind: pb::EscalationKind::Email as i32,
                contact: "loadgen@example.com".into(),
            }),
            ..Default::default()
        };
        match admin
            .put_org(request(
                pb::PutOrgRequest { org: Some(org) },
                cfg.token.as_deref(),
            ))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::Unimplemented => return Ok(()),
            Err(s) => return Err(LoadError::Setup(s)),
        }
    }
    Ok(())
}

struct Shared {
    issued: AtomicU64,
    done: AtomicU64,
    stop: AtomicBool,
}

/// Runs the load and returns its summary.
pub async fn run(cfg: &LoadConfig) -> Result<Summary, LoadError> {
    if cfg.duration.is_none() && cfg.requests.is_none() {
        return Err(LoadError::Unbounded);
    }
    let chans = channels(cfg).await?;
    let orgs = Arc::new(Dist::new(cfg.orgs, cfg.org_zipf));
    let recips = Arc::new(Dist::new(cfg.recipients, cfg.recipient_zipf));
    let shared = Arc::new(Shared {
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let workers = cfg.concurrency.max(1);
    let per_worker_interval = cfg
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(workers as f64 / r));
    let bar = cfg.progress.then(|| {
        let bar = match cfg.requests {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::new(cfg.duration.map_or(0, |d| d.as_secs())),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let start = Instant::now();
    let mut handles = Vec::new();
    for w in 0..workers {
        let mut client = SendGovernorClient::new(chans[w % chans.len()].clone());
        let (orgs, recips, shared) = (orgs.clone(), recips.clone(), shared.clone());
        let cfg = cfg.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = Rng::new(cfg.seed.wrapping_add(w as u64 * 7919));
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let mut s = Summary::default();
            let mut tick = per_worker_interval.map(tokio::time::interval);
            loop {
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Some(n) = cfg.requests
                    && shared.issued.fetch_add(1, Ordering::Relaxed) >= n
                {
                    break;
                }
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let mut send = || {
                    let org = orgs.sample(&mut rng);
                    let to = 4_910_000_000_000 + recips.sample(&mut rng);
                    pb::AcquireRequest {
                        org_id: format!("{}{org}", cfg.org_prefix),
                        phone_number_id: (cfg.phone_base + org).to_string(),
                        recipient: to.to_string(),
                        template_name: "loadgen".into(),
                        category: pb::Category::Utility as i32,
                        idempotency_key: String::new(),
                        recipient_user_id: String::new(),
                        max_wait_ms: 0,
                    }
                };
                let t0 = Instant::now();
                let r = match cfg.batch {
                    None => client
                        .acquire(request(send(), cfg.token.as_deref()))
                        .await
                        .map(|r| vec![r.into_inner()]),
                    Some(n) => {
                        let sends = (0..n.max(1)).map(|_| send()).collect();
                        let req = pb::AcquireBatchRequest { sends };
                        client
                            .acquire_batch(request(req, cfg.token.as_deref()))
                            .await
                            .map(|r| r.into_inner().results)
                    }
                };
                let us = t0.elapsed().as_micros().max(1) as u64;
                let _ = hist.record(us.min(60_000_000));
                s.requests += 1;
                let mut sent = Vec::new();
                match r {
                    Ok(results) => {
                        for resp in results {
                            s.decisions += 1;
                            if resp.verdict == pb::Verdict::Allow as i32 {
                                s.allowed += 1;
                                if cfg.report {
                                    sent.push(resp.permit_id);
                                }
                            } else {
                                s.denied += 1;
                                let name = pb::DenyReason::try_from(resp.reason)
                                    .map_or("UNKNOWN", |r| r.as_str_name());
                                *s.denied_by_reason.entry(name.to_owned()).or_default() += 1;
                            }
                        }
                    }
                    Err(_) => s.errors += 1,
                }
                for permit_id in sent {
                    let req = pb::ReportRequest {
                        permit_id,
                        outcome: pb::SendOutcome::Sent as i32,
                        error_code: 0,
                    };
                    let t0 = Instant::now();
                    let r = client.report(request(req, cfg.token.as_deref())).await;
                    let us = t0.elapsed().as_micros().max(1) as u64;
                    let _ = hist.record(us.min(60_000_000));
                    s.requests += 1;
                    s.reports += 1;
                    if r.is_err() {
                        s.errors += 1;
                        s.report_errors += 1;
                    }
                }
                shared.done.fetch_add(1, Ordering::Relaxed);
            }
            (s, hist)
        }));
    }
    // Stop on the deadline; tick the progress bar meanwhile.
    let deadline = cfg.duration.map(|d| start + d);
    loop {
        let finished = handles.iter().all(|h| h.is_finished());
        if let Some(b) = &bar {
            match cfg.requests {
                Some(_) => b.set_position(shared.done.load(Ordering::Relaxed)),
                None => b.set_position(start.elapsed().as_secs()),
            }
            b.set_message(format!("{} calls", shared.done.load(Ordering::Relaxed)));
        }
        if finished {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            shared.stop.store(true, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut total = Summary::default();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    for h in handles {
        let Ok((s, h)) = h.await else { continue };
        let _ = hist.add(&h);
        total.requests += s.requests;
        total.decisions += s.decisions;
        total.allowed += s.allowed;
        total.denied += s.denied;
        total.errors += s.errors;
        total.reports += s.reports;
        total.report_errors += s.report_errors;
        for (k, v) in s.denied_by_reason {
            *total.denied_by_reason.entry(k).or_default() += v;
        }
    }
    total.elapsed_s = elapsed;
    total.throughput_rps = total.requests as f64 / elapsed.max(1e-9);
    total.decisions_per_s = total.decisions as f64 / elapsed.max(1e-9);
    total.batch = cfg.batch.map_or(1, |n| n.max(1));
    total.p50_us = hist.value_at_quantile(0.5);
    total.p90_us = hist.value_at_quantile(0.9);
    total.p99_us = hist.value_at_quantile(0.99);
    total.p999_us = hist.value_at_quantile(0.999);
    total.max_us = hist.max();
    Ok(total)
}
