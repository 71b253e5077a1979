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
pub enum AccountCmd {
    /// Block the account: every send is denied ACCOUNT_RESTRICTED until `unrestrict`.
    Restrict {
        org_id: String,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Lift the block (WhatsApp's 368 and 131031 set it; only an admin clears it).
    Unrestrict {
        org_id: String,
        #[command(flatten)]
        opts: AdminOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum MarketingApiCmd {
    /// Deny MARKETING sends (MARKETING_API_REQUIRED) as after error 131063.
    Require {
        org_id: String,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// Allow MARKETING again, once the org sends its marketing through the Marketing Messages
    /// API.
    Clear {
        org_id: String,
        #[command(flatten)]
        opts: AdminOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum TemplateCmd {
    /// Pause a template until `--until`, or without it disable it until `reinstate`.
    Pause {
        org_id: String,
        template: String,
        /// When the pause ends, on the server's clock: RFC 3339 (`2026-05-01T12:00:00Z`) or
        /// Unix milliseconds.
        #[arg(long, value_name = "RFC3339|UNIX_MS")]
        until: Option<String>,
        #[command(flatten)]
        opts: AdminOpts,
    },
    /// End a template's pause or disablement.
    Reinstate {
        org_id: String,
        template: String,
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

/// A duration as people write it: `5s`, `1500ms`, `2m`, `7d` (a bare number is milliseconds).
pub(super) fn duration_ms(s: &str) -> anyhow::Result<u64> {
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

/// `--until`: Unix milliseconds, or RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`).
fn parse_until(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    let bad = || anyhow::anyhow!("--until {s:?}: not RFC 3339 (2026-05-01T12:00:00Z) or Unix ms");
    let ms = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<i64>().map_err(|_| bad())?
    } else {
        let num = |r: std::ops::Range<usize>| -> anyhow::Result<i64> {
            let t = s.get(r).ok_or_else(bad)?;
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            t.parse().map_err(|_| bad())
        };
        let b = s.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't' | b' ')
            || b[13] != b':'
            || b[16] != b':'
        {
            return Err(bad());
        }
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let mut i = 19;
        let mut milli = 0;
        if b[i] == b'.' {
            let end = s[i + 1..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(s.len(), |n| i + 1 + n);
            let frac = s
                .get(i + 1..end)
                .filter(|f| !f.is_empty())
                .ok_or_else(bad)?;
            milli = format!("{frac:0<3}")[..3]
                .parse::<i64>()
                .map_err(|_| bad())?;
            i = end;
        }
        let offset_min = match s.get(i..).ok_or_else(bad)? {
            "Z" | "z" => 0,
            o if o.len() == 6 && matches!(&o[..1], "+" | "-") && &o[3..4] == ":" => {
                let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
                if o.starts_with('-') { -m } else { m }
            }
            _ => return Err(bad()),
        };
        let days_in = [
            31,
            28 + i64::from(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)),
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        if !(1..=12).contains(&mo)
            || d < 1
            || d > days_in[(mo - 1) as usize]
            || h > 23
            || mi > 59
            || sec > 60
        {
            return Err(bad());
        }
        // Howard Hinnant's days_from_civil.
        let yy = if mo <= 2 { y - 1 } else { y };
        let era = yy.div_euclid(400);
        let yoe = yy - era * 400;
        let mp = (mo + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        ((days * 86_400 + h * 3_600 + mi * 60 + sec - offset_min * 60) * 1_000) + milli
    };
    if ms <= 0 {
        bail!("--until {s:?}: must be after 1970-01-01T00:00:00Z");
    }
    Ok(ms)
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

pub async fn account(cmd: AccountCmd) -> anyhow::Result<ExitCode> {
    let (org_id, restricted, opts) = match cmd {
        AccountCmd::Restrict { org_id, opts } => (org_id, true, opts),
        AccountCmd::Unrestrict { org_id, opts } => (org_id, false, opts),
    };
    let org = client(&opts)
        .await?
        .set_account_restricted(authed(pb::SetAccountRestrictedRequest {
            org_id,
            restricted,
        })?)
        .await
        .map_err(status)?
        .into_inner();
    output::org(&org, opts.json);
    Ok(ExitCode::SUCCESS)
}

pub async fn marketing_api(cmd: MarketingApiCmd) -> anyhow::Result<ExitCode> {
    let (org_id, required, opts) = match cmd {
        MarketingApiCmd::Require { org_id, opts } => (org_id, true, opts),
        MarketingApiCmd::Clear { org_id, opts } => (org_id, false, opts),
    };
    let org = client(&opts)
        .await?
        .set_marketing_api_required(authed(pb::SetMarketingApiRequiredRequest {
            org_id,
            required,
        })?)
        .await
        .map_err(status)?
        .into_inner();
    output::org(&org, opts.json);
    Ok(ExitCode::SUCCESS)
}

pub async fn template(cmd: TemplateCmd) -> anyhow::Result<ExitCode> {
    let (org, json) = match cmd {
        TemplateCmd::Pause {
            org_id,
            template,
            until,
            opts,
        } => {
            let until_unix_ms = until.as_deref().map(parse_until).transpose()?.unwrap_or(0);
            let org = client(&opts)
                .await?
                .pause_template(authed(pb::PauseTemplateRequest {
                    org_id,
                    template_name: template,
                    until_unix_ms,
                })?)
                .await
                .map_err(status)?
                .into_inner();
            (org, opts.json)
        }
        TemplateCmd::Reinstate {
            org_id,
            template,
            opts,
        } => {
            let org = client(&opts)
                .await?
                .reinstate_template(authed(pb::ReinstateTemplateRequest {
                    org_id,
                    template_name: template,
                })?)
                .await
                .map_err(status)?
                .into_inner();
            (org, opts.json)
        }
    };
    output::org(&org, json);
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

#[cfg(test)]
mod tests {
    use super::parse_until;

    #[test]
    fn until_as_rfc3339_or_unix_ms() {
        assert_eq!(parse_until("1795680368123").unwrap(), 1_795_680_368_123);
        assert_eq!(
            parse_until("2026-11-26T08:06:08.123Z").unwrap(),
            1_795_680_368_123
        );
        assert_eq!(
            parse_until("2026-11-26T08:06:08Z").unwrap(),
            1_795_680_368_000
        );
        assert_eq!(
            parse_until("2026-11-26T09:06:08.1+01:00").unwrap(),
            1_795_680_368_100
        );
        assert_eq!(
            parse_until("2000-02-29T00:00:00Z").unwrap(),
            951_782_400_000
        );
        for bad in [
            "",
            "0",
            "3h",
            "2026-02-29T00:00:00Z",
            "2026-11-26T08:06:08",
            "2026-11-26",
        ] {
            assert!(parse_until(bad).is_err(), "{bad:?}");
        }
    }
}
