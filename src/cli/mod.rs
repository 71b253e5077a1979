//! The command line: `serve`, `check-config`, the admin subcommands, `plan`, `send` and
//! `report`.

mod admin;
mod load;
mod output;
mod plan;
mod send;
mod serve;
mod sim;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// tiergate: a template send-rate governor for the WhatsApp Business Platform.
#[derive(Debug, Parser)]
#[command(name = "tiergate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sidecar: gRPC (SendGovernor, GovernorAdmin, health, reflection) and HTTP.
    Serve(serve::ServeArgs),
    /// Check a config file and report every problem with its key and line.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Register, update, show and list orgs.
    #[command(subcommand)]
    Org(admin::OrgCmd),
    /// Set or clear an org's human escalation path.
    #[command(subcommand)]
    Escalation(admin::EscalationCmd),
    /// Change an org's quality rating.
    #[command(subcommand)]
    Rating(admin::RatingCmd),
    /// Ask for a tier change (increases are held without an escalation path).
    #[command(subcommand)]
    Tier(admin::TierCmd),
    /// File and resolve appeals against a low rating.
    #[command(subcommand)]
    Appeal(admin::AppealCmd),
    /// Block or unblock an org's account (rule 3).
    #[command(subcommand)]
    Account(admin::AccountCmd),
    /// Require or clear "marketing only through the Marketing Messages API" (131063).
    #[command(subcommand)]
    MarketingApi(admin::MarketingApiCmd),
    /// Pause, disable or reinstate one of an org's templates (rule 4).
    #[command(subcommand)]
    Template(admin::TemplateCmd),
    /// Move a `--manual-clock` server's clock forward.
    #[command(subcommand)]
    Clock(admin::ClockCmd),
    /// Preflight a campaign: how much goes now, when the rest can go, and which rule binds it.
    Plan(plan::PlanArgs),
    /// Ask to send one template (SendGovernor.Acquire): ALLOW with a permit, or DENY (exit 3).
    Send(send::SendArgs),
    /// Report what happened to an allowed send (SendGovernor.Report) and get the advice.
    Report(send::ReportArgs),
    /// Load-test a sidecar's SendGovernor.Acquire and report throughput and latency.
    Loadgen(load::LoadgenArgs),
    /// Replay a trace through the policy offline and report what it would allow and deny.
    Simulate(sim::SimulateArgs),
    /// Generate a synthetic trace (JSONL) for `simulate`.
    TraceGen(sim::TraceGenArgs),
    /// Serve the transport floor: tiergate's proto, every Acquire answered ALLOW.
    EchoServe {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:50061")]
        grpc_addr: String,
    },
}

/// Options every admin subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct AdminOpts {
    /// The sidecar's gRPC address.
    #[arg(
        long,
        global = true,
        env = "TIERGATE_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub addr: String,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Runs one command; the exit code says whether it worked.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::CheckConfig { file } => serve::check_config(&file),
        Command::Org(c) => admin::org(c).await,
        Command::Escalation(c) => admin::escalation(c).await,
        Command::Rating(c) => admin::rating(c).await,
        Command::Tier(c) => admin::tier(c).await,
        Command::Appeal(c) => admin::appeal(c).await,
        Command::Account(c) => admin::account(c).await,
        Command::MarketingApi(c) => admin::marketing_api(c).await,
        Command::Template(c) => admin::template(c).await,
        Command::Clock(c) => admin::clock(c).await,
        Command::Plan(a) => plan::plan(a).await,
        Command::Send(a) => send::send(a).await,
        Command::Report(a) => send::report(a).await,
        Command::Loadgen(a) => load::loadgen(a).await,
        Command::Simulate(a) => sim::simulate(a),
        Command::TraceGen(a) => sim::trace_gen(a),
        Command::EchoServe { grpc_addr } => load::echo(&grpc_addr).await,
    }
}
