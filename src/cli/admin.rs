//! Admin subcommands: thin gRPC calls to `GovernorAdmin`, token from `TIERGATE_ADMIN_TOKEN`.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use tiergate_proto::v1 as pb;
use tiergate_proto::v1::governor_admin_client::GovernorAdminClient;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use super::AdminOpts;
use super::output;

#[derive(Debug, Subcommand)]
pub enum OrgCmd {
    /// Show one org's live status.
    Get {
        org_id: String,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// List every org.
    List {
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Register an org or update it.
    Put {
        org_id: String,
        /// TIER_250, TIER_2K, … (or 250, 2000, …).
        #[arg(long)]
        tier: String,
        /// A phone number id, optionally with its messages/s: `106540352242922:80` (repeatable).
        #[arg(long = "phone", value_name = "ID[:MPS]")]
        phones: Vec<String>,
        /// A WhatsApp Business Account id (repeatable).
        #[arg(long = "waba", value_name = "ID")]
        wabas: Vec<String>,
        /// GREEN, YELLOW, RED, UNKNOWN.
        #[arg(long)]
        rating: Option<String>,
        /// KIND:CONTACT, e.g. `email:help@example.com`.
        #[arg(long, value_name = "KIND:CONTACT")]
        escalation: Option<String>,
        /// The org sent templates before tiergate saw it.
        #[arg(long)]
        history: bool,
        #[command(flatten)]
        opts: AdminOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum EscalationCmd {
    /// Set the path: KIND is human_handoff, phone, email, web_form or in_store.
    Set {
        org_id: String,
        kind: String,
        contact: String,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Remove the path.
    Clear {
        org_id: String,
        #[command(flatten)]
        opts: AdminOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum RatingCmd {
    /// Set the rating: GREEN, YELLOW, RED or UNKNOWN.
    Set {
        org_id: String,
        rating: String,
        #[command(flatten)]
        opts: AdminOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum TierCmd {
    /// Ask for a tier.
    Request {
        org_id: String,
        tier: String,
        #[command(flatten)]
        opts: AdminOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppealCmd {
    /// File an appeal with evidence.
    File {
        org_id: String,
        evidence: String,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Approve or reject an appeal.
    Resolve {
        appeal_id: String,
        /// Approve (clears RED); without it the appeal is rejected.
        #[arg(long)]
        approve: bool,
        #[command(flatten)]
        opts: AdminOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClockCmd {
    /// Move the clock forward by a duration: `90s`, `6h`, `7d` or milliseconds.
    Advance {
        by: String,
        #[command(flatten)]
        opts: AdminOpts,
    },
}

/// A connection to the sidecar at `--addr`.
pub(super) async fn channel(opts: &AdminOpts) -> anyhow::Result<Channel> {
    Channel::from_shared(opts.addr.clone())
        .with_context(|| format!("bad --addr {:?}", opts.addr))?
        .connect()
        .await
        .with_context(|| format!("cannot reach tiergate at {}", opts.addr))
}

async fn client(opts: &AdminOpts) -> anyhow::Result<GovernorAdminClient<Channel>> {
    Ok(GovernorAdminClient::new(channel(opts).await?))
}

/// `msg` with `authorization: Bearer $var` when the environment variable `var` is set.
pub(super) fn bearer<T>(msg: T, var: &str) -> anyhow::Result<Request<T>> {
    let mut req = Request::new(msg);
    if let Ok(token) = std::env::var(var) {
        let v: MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .with_context(|| format!("{var} is not a valid header value"))?;
        req.metadata_mut().insert("authorization", v);
    }
    Ok(req)
}

/// A `GovernorAdmin` request, with `TIERGATE_ADMIN_TOKEN` if set.
pub(super) fn authed<T>(msg: T) -> anyhow::Result<Request<T>> {
    bearer(msg, "TIERGATE_ADMIN_TOKEN")
}

/// A gRPC error as the subcommands print it: `Code: message`.
pub(super) fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", e.code(), e.message())
}

fn parse_tier(s: &str) -> anyhow::Result<pb::Tier> {
    let t: tiergate_core::Tier = s.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(tiergate_server::convert::tier_pb(t))
}

fn parse_rating(s: &str) -> anyhow::Result<pb::QualityRating> {
    let r: tiergate_core::QualityRating = s.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(tiergate_server::convert::rating_pb(r))
}

fn parse_escalation(kind: &str, contact: &str) -> anyhow::Result<pb::EscalationPath> {
    let kind = match kind.to_ascii_lowercase().replace('-', "_").as_str() {
        "human_handoff" | "handoff" => pb::EscalationKind::HumanHandoff,
        "phone" => pb::EscalationKind::Phone,
        "email" => pb::EscalationKind::Email,
        "web_form" | "webform" | "url" => pb::EscalationKind::WebForm,
        "in_store" | "store" => pb::EscalationKind::InStore,
        other => bail!("{other:?} is not human_handoff, phone, email, web_form or in_store"),
    };
    Ok(pb::EscalationPath {
        kind: kind as i32,
        contact: contact.to_owned(),
    })
}

fn duration_ms(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a duration"))?;
    let mult = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("{s:?}: unit must be ms, s, m, h or d"),
    };
    n.checked_mul(mult).context("duration too large")
}

pub async fn org(cmd: OrgCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        OrgCmd::Get { org_id, opts } => {
            let org = client(&opts)
                .await?
                .get_org(authed(pb::GetOrgRequest { org_id })?)
                .await
                .map_err(status)?
                .into_inner();
            output::org(&org, opts.json);
        }
        OrgCmd::List { opts } => {
            let orgs = client(&opts)
                .await?
                .list_orgs(authed(pb::ListOrgsRequest {})?)
                .await
                .map_err(status)?
                .into_inner()
                .orgs;
            output::org_list(&orgs, opts.json);
        }
        OrgCmd::Put {
            org_id,
            tier: t,
            phones,
            wabas,
            rating: r,
            escalation: e,
            history,
            opts,
        } => {
            let phone_numbers = phones
                .iter()
                .map(|p| {
                    let (id, mps) = p.split_once(':').unwrap_or((p, "0"));
                    Ok(pb::PhoneNumber {
                        phone_number_id: id.to_owned(),
                        display_phone_number: String::new(),
                        throughput_mps: mps.parse().with_context(|| format!("--phone {p:?}"))?,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let escalation_path = e
                .as_deref()
                .map(|e| {
                    let (k, c) = e.split_once(':').context("--escalation KIND:CONTACT")?;
                    parse_escalation(k, c)
                })
                .transpose()?;
            let org = pb::Org {
                org_id,
                tier: parse_tier(&t)? as i32,
                quality_rating: r
                    .as_deref()
                    .map(parse_rating)
                    .transpose()?
                    .unwrap_or(pb::QualityRating::Unknown) as i32,
                phone_numbers,
                waba_ids: wabas,
                escalation_path,
                has_template_history: history,
                ..Default::default()
            };
            let org = client(&opts)
                .await?
                .put_org(authed(pb::PutOrgRequest { org: Some(org) })?)
                .await
                .map_err(status)?
                .into_inner();
            output::org(&org, opts.json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn escalation(cmd: EscalationCmd) -> anyhow::Result<ExitCode> {
    let org = match cmd {
        EscalationCmd::Set {
            org_id,
            kind,
            contact,
            opts,
        } => {
            let path = parse_escalation(&kind, &contact)?;
            let org = client(&opts)
                .await?
                .set_escalation_path(authed(pb::SetEscalationPathRequest {
                    org_id,
                    path: Some(path),
                })?)
                .await
                .map_err(status)?
                .into_inner();
            (org, opts.json)
        }
        EscalationCmd::Clear { org_id, opts } => {
            let org = client(&opts)
                .await?
                .clear_escalation_path(authed(pb::ClearEscalationPathRequest { org_id })?)
                .await
                .map_err(status)?
                .into_inner();
            (org, opts.json)
        }
    };
    output::org(&org.0, org.1);
    Ok(ExitCode::SUCCESS)
}

pub async fn rating(cmd: RatingCmd) -> anyhow::Result<ExitCode> {
    let RatingCmd::Set {
        org_id,
        rating: r,
        opts,
    } = cmd;
    let org = client(&opts)
        .await?
        .set_quality_rating(authed(pb::SetQualityRatingRequest {
            org_id,
            rating: parse_rating(&r)? as i32,
        })?)
        .await
        .map_err(status)?
        .into_inner();
    output::org(&org, opts.json);
    Ok(ExitCode::SUCCESS)
}

pub async fn tier(cmd: TierCmd) -> anyhow::Result<ExitCode> {
    let TierCmd::Request {
        org_id,
        tier: t,
        opts,
    } = cmd;
    let r = client(&opts)
        .await?
        .request_tier_change(authed(pb::RequestTierChangeRequest {
            org_id,
            target_tier: parse_tier(&t)? as i32,
        })?)
        .await
        .map_err(status)?
        .into_inner();
    output::tier_change(&r, opts.json);
    Ok(ExitCode::SUCCESS)
}

pub async fn appeal(cmd: AppealCmd) -> anyhow::Result<ExitCode> {
    let (a, json) = match cmd {
        AppealCmd::File {
            org_id,
            evidence,
            opts,
        } => (
            client(&opts)
                .await?
                .file_appeal(authed(pb::FileAppealRequest { org_id, evidence })?)
                .await
                .map_err(status)?
                .into_inner(),
            opts.json,
        ),
        AppealCmd::Resolve {
            appeal_id,
            approve,
            opts,
        } => (
            client(&opts)
                .await?
                .resolve_appeal(authed(pb::ResolveAppealRequest {
                    appeal_id,
                    approved: approve,
                })?)
                .await
                .map_err(status)?
                .into_inner(),
            opts.json,
        ),
    };
    output::appeal(&a, json);
    Ok(ExitCode::SUCCESS)
}

pub async fn clock(cmd: ClockCmd) -> anyhow::Result<ExitCode> {
    let ClockCmd::Advance { by, opts } = cmd;
    let r = client(&opts)
        .await?
        .advance_clock(authed(pb::AdvanceClockRequest {
            millis: duration_ms(&by)?,
        })?)
        .await
        .map_err(status)?
        .into_inner();
    if opts.json {
        println!("{}", serde_json::json!({ "now_unix_ms": r.now_unix_ms }));
    } else {
        println!("now_unix_ms  {}", r.now_unix_ms);
    }
    Ok(ExitCode::SUCCESS)
}
