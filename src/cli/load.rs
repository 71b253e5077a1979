//! `tiergate loadgen` and `tiergate echo-serve`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tiergate_load::loadgen::{self, LoadConfig};
use tiergate_proto::v1 as pb;

/// Flags of `loadgen`.
#[derive(Debug, Args)]
pub struct LoadgenArgs {
    /// The sidecar's gRPC address.
    #[arg(long, env = "TIERGATE_ADDR", default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long: `10s`, `1m`.
    #[arg(long, default_value = "10s")]
    duration: String,
    /// Stop after this many calls instead (overrides --duration).
    #[arg(long)]
    requests: Option<u64>,
    /// Target calls per second in total (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Number of orgs (`lg-0` …).
    #[arg(long, default_value_t = 100)]
    orgs: u64,
    /// Number of distinct recipients.
    #[arg(long, default_value_t = 1_000_000)]
    recipients: u64,
    /// Zipf exponent for orgs (default uniform).
    #[arg(long)]
    org_zipf: Option<f64>,
    /// Zipf exponent for recipients (default uniform).
    #[arg(long)]
    recipient_zipf: Option<f64>,
    /// Register the orgs first (TIER_UNLIMITED, 1,000 msg/s, an escalation path).
    #[arg(long)]
    setup: bool,
    /// Seed of the draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Sends per call: `AcquireBatch` of N instead of single `Acquire`s (the summary counts
    /// decisions/s either way).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch: Option<u64>,
    /// Report each allowed send's permit as sent (`Report`), as a real sender does; the
    /// reports count as calls in the rates and latencies.
    #[arg(long)]
    report: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

fn seconds(s: &str) -> anyhow::Result<Duration> {
    let (n, mult) = if let Some(m) = s.strip_suffix('m') {
        (m, 60.0)
    } else {
        (s.strip_suffix('s').unwrap_or(s), 1.0)
    };
    let v: f64 = n.parse().with_context(|| format!("--duration {s:?}"))?;
    Ok(Duration::from_secs_f64(v * mult))
}

pub async fn loadgen(a: LoadgenArgs) -> anyhow::Result<ExitCode> {
    let cfg = LoadConfig {
        addr: a.addr,
        connections: a.connections,
        concurrency: a.concurrency,
        duration: if a.requests.is_some() {
            None
        } else {
            Some(seconds(&a.duration)?)
        },
        requests: a.requests,
        rate: a.rate,
        orgs: a.orgs,
        recipients: a.recipients,
        org_zipf: a.org_zipf,
        recipient_zipf: a.recipient_zipf,
        seed: a.seed,
        token: std::env::var("TIERGATE_SENDER_TOKEN").ok(),
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        batch: a.batch.map(|n| n as usize),
        report: a.report,
        ..LoadConfig::default()
    };
    if a.setup {
        let admin = LoadConfig {
            token: std::env::var("TIERGATE_ADMIN_TOKEN").ok(),
            ..cfg.clone()
        };
        loadgen::setup(&admin, pb::Tier::Unlimited).await?;
    }
    let s = loadgen::run(&cfg).await?;
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        print!("{}", s.text());
    }
    Ok(if s.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

pub async fn echo(addr: &str) -> anyhow::Result<ExitCode> {
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    tiergate_load::echo::serve(addr, shutdown, |a| {
        println!("tiergate echo listening grpc={a}");
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(ExitCode::SUCCESS)
}
