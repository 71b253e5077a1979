//! `tiergate plan`: a campaign's preflight (`SendGovernor.Plan`, SPEC §2a) as a table, JSON or
//! an SVG of the cumulative sends against the tier limit.
//!
//! Plan is on `SendGovernor`, so it carries `TIERGATE_SENDER_TOKEN` when set; `--plot` also reads
//! the org's tier limit with `GovernorAdmin.GetOrg` (`TIERGATE_ADMIN_TOKEN`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{ArgGroup, Args, ValueEnum};
use serde_json::{Value, json};
use tiergate_proto::v1 as pb;
use tiergate_proto::v1::governor_admin_client::GovernorAdminClient;
use tiergate_proto::v1::send_governor_client::SendGovernorClient;

use super::AdminOpts;
use super::admin::{authed, bearer, channel, status};
use super::output;

/// A template's category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CategoryArg {
    /// Promotional templates.
    Marketing,
    /// Transactional updates.
    Utility,
    /// One-time passcodes.
    Authentication,
}

impl CategoryArg {
    pub(super) fn pb(self) -> pb::Category {
        match self {
            CategoryArg::Marketing => pb::Category::Marketing,
            CategoryArg::Utility => pb::Category::Utility,
            CategoryArg::Authentication => pb::Category::Authentication,
        }
    }

    fn core(self) -> tiergate_core::Category {
        match self {
            CategoryArg::Marketing => tiergate_core::Category::Marketing,
            CategoryArg::Utility => tiergate_core::Category::Utility,
            CategoryArg::Authentication => tiergate_core::Category::Authentication,
        }
    }

    fn name(self) -> &'static str {
        match self {
            CategoryArg::Marketing => "MARKETING",
            CategoryArg::Utility => "UTILITY",
            CategoryArg::Authentication => "AUTHENTICATION",
        }
    }
}

/// Flags of `plan`.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("who")
        .required(true)
        .multiple(false)
        .args(["audience", "recipients"])
))]
pub struct PlanArgs {
    /// The org.
    org_id: String,
    /// The phone number id the campaign sends from.
    #[arg(long, value_name = "ID")]
    phone: String,
    /// The template.
    #[arg(long, value_name = "NAME")]
    template: String,
    /// The template's category.
    #[arg(long, value_enum, ignore_case = true)]
    category: CategoryArg,
    /// How many recipients, none of them in the 24 h window yet.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    audience: Option<u64>,
    /// The recipients, one a line (phone digits or BSUID; blank lines and `#` comments are
    /// skipped), in sending order; `-` reads standard input. Exact: recipients already in the
    /// window cost no new slot.
    #[arg(long, value_name = "FILE")]
    recipients: Option<PathBuf>,
    /// Draw the cumulative sends over time against the tier limit to this SVG.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    #[command(flatten)]
    opts: AdminOpts,
}

/// A recipient list read from `--recipients`: the entries and the line each came from.
struct List {
    /// How the file is named in messages.
    name: String,
    recipients: Vec<String>,
    /// 1-based line of each entry.
    lines: Vec<usize>,
}

impl List {
    fn read(path: &Path) -> anyhow::Result<List> {
        let (name, text) = if path == Path::new("-") {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the recipients from standard input")?;
            ("standard input".to_owned(), s)
        } else {
            let name = path.display().to_string();
            let s = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --recipients file {name}"))?;
            (name, s)
        };
        let mut list = List {
            name,
            recipients: Vec::new(),
            lines: Vec::new(),
        };
        for (i, line) in text.lines().enumerate() {
            let r = line.trim();
            if r.is_empty() || r.starts_with('#') {
                continue;
            }
            list.recipients.push(r.to_owned());
            list.lines.push(i + 1);
        }
        if list.recipients.is_empty() {
            bail!(
                "--recipients {}: no recipients (blank lines and # comments are skipped)",
                list.name
            );
        }
        Ok(list)
    }

    /// Where `recipients[i]` of an error message is in the file.
    fn locate(&self, msg: &str) -> Option<String> {
        let (_, rest) = msg.split_once("recipients[")?;
        let i: usize = rest.split_once(']')?.0.parse().ok()?;
        let line = self.lines.get(i)?;
        Some(format!("recipients[{i}] is line {line} of {}", self.name))
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(super) use tiergate_core::rfc3339;

/// A time relative to now: `now`, `+50ms`, `+1d 2h`, `+23h 59m 59.5s`.
fn delta(ms: i64) -> String {
    if ms == 0 {
        return "now".to_owned();
    }
    let sign = if ms < 0 { '-' } else { '+' };
    let a = ms.unsigned_abs();
    let (d, h, m, s, milli) = (
        a / 86_400_000,
        a / 3_600_000 % 24,
        a / 60_000 % 60,
        a / 1_000 % 60,
        a % 1_000,
    );
    let mut parts = Vec::new();
    if d > 0 {
        parts.push(format!("{d}d"));
    }
    if h > 0 {
        parts.push(format!("{h}h"));
    }
    if m > 0 {
        parts.push(format!("{m}m"));
    }
    match (s, milli) {
        (0, 0) => {}
        (0, ms) if parts.is_empty() => parts.push(format!("{ms}ms")),
        (s, 0) => parts.push(format!("{s}s")),
        (s, ms) => parts.push(format!("{s}.{ms:03}s")),
    }
    format!("{sign}{}", parts.join(" "))
}

/// A deny reason by its SPEC name (`TIER_LIMIT`); `None` for UNSPECIFIED.
pub(super) fn reason_name(v: i32) -> Option<String> {
    match pb::DenyReason::try_from(v) {
        Ok(pb::DenyReason::Unspecified) => None,
        Ok(r) => Some(
            r.as_str_name()
                .strip_prefix("DENY_REASON_")
                .unwrap_or(r.as_str_name())
                .to_owned(),
        ),
        Err(_) => Some(v.to_string()),
    }
}

/// Waves printed in full up to this many; past it, the first and last few.
const WAVES_IN_FULL: usize = 40;
const WAVES_HEAD: usize = 20;
const WAVES_TAIL: usize = 10;

pub async fn plan(a: PlanArgs) -> anyhow::Result<ExitCode> {
    // The list first: a file that cannot be read fails before any connection.
    let list = a.recipients.as_deref().map(List::read).transpose()?;
    let channel = channel(&a.opts).await?;
    let req = pb::PlanRequest {
        org_id: a.org_id.clone(),
        phone_number_id: a.phone.clone(),
        template_name: a.template.clone(),
        category: a.category.pb() as i32,
        recipients: list
            .as_ref()
            .map(|l| l.recipients.clone())
            .unwrap_or_default(),
        audience_size: a.audience.unwrap_or(0),
    };
    let size = list
        .as_ref()
        .map_or(req.audience_size, |l| l.recipients.len() as u64);
    let local_now = now_ms();
    let p = SendGovernorClient::new(channel.clone())
        .plan(bearer(req, "TIERGATE_SENDER_TOKEN")?)
        .await
        .map_err(
            |e| match list.as_ref().and_then(|l| l.locate(e.message())) {
                Some(hint) => anyhow::anyhow!("{:?}: {} ({hint})", e.code(), e.message()),
                None => status(e),
            },
        )?
        .into_inner();
    // The server's clock is the one that counts (it may be a manual clock): the plan says when
    // it was made; a server too old to say leaves this machine's clock to stand in.
    let now = match p.planned_at_unix_ms {
        t if t > 0 => t,
        _ => local_now,
    };
    let never_lines: Option<Vec<usize>> = list.as_ref().map(|l| {
        p.never_indexes
            .iter()
            .filter_map(|&i| l.lines.get(i as usize).copied())
            .collect()
    });

    if a.opts.json {
        let mut v = json!({
            "org_id": a.org_id,
            "allowed_now": p.allowed_now,
            "waves": p.waves.iter().map(|w| json!({
                "at_unix_ms": w.at_unix_ms,
                "count": w.count,
            })).collect::<Vec<_>>(),
            "completes_at_unix_ms": p.completes_at_unix_ms,
            "binding": reason_name(p.binding),
            "already_counted": p.already_counted,
            "never": p.never,
            "never_indexes": p.never_indexes,
            "unplanned": p.unplanned,
            "planned_at_unix_ms": p.planned_at_unix_ms,
        });
        if let (Some(lines), Value::Object(m)) = (&never_lines, &mut v) {
            m.insert("never_lines".into(), json!(lines));
        }
        println!("{v}");
    } else {
        table(&a, &p, now, size, list.as_ref(), never_lines.as_deref());
    }

    if let Some(svg) = &a.plot {
        let limit = match GovernorAdminClient::new(channel)
            .get_org(authed(pb::GetOrgRequest {
                org_id: a.org_id.clone(),
            })?)
            .await
        {
            Ok(o) => o.into_inner(),
            Err(e) => {
                eprintln!(
                    "tiergate: the tier limit is left off the plot: GetOrg: {}",
                    status(e)
                );
                pb::Org::default()
            }
        };
        let usage = limit.usage.unwrap_or_default();
        let tier_limit = (usage.tier_limit > 0).then_some(usage.tier_limit);
        let share = match (tier_limit, limit.reserves_in_force) {
            (Some(l), Some(r)) if a.category != CategoryArg::Authentication => {
                let reserves = tiergate_core::Reserves {
                    authentication_percent: r.authentication_percent.min(100) as u8,
                    utility_percent: r.utility_percent.min(100) as u8,
                };
                let share = reserves.share(a.category.core(), l);
                (share < l).then(|| {
                    (
                        format!(
                            "{} share (reserves: {} % AUTHENTICATION, {} % UTILITY)",
                            a.category.name(),
                            reserves.authentication_percent,
                            reserves.utility_percent
                        ),
                        share,
                    )
                })
            }
            _ => None,
        };
        let waves: Vec<(u64, u64)> = p
            .waves
            .iter()
            .map(|w| (w.at_unix_ms.saturating_sub(now).max(0) as u64, w.count))
            .collect();
        let title = format!(
            "tiergate plan: org {}, {} ({}), {size} recipients",
            a.org_id,
            a.template,
            a.category.name()
        );
        tiergate_sim::plot::PlanChart {
            title: &title,
            waves: &waves,
            tier_limit,
            share,
        }
        .draw(svg)
        .map_err(|e| anyhow::anyhow!("plot {}: {e}", svg.display()))?;
        let note = format!("plot of {} waves written to {}", waves.len(), svg.display());
        // Standard output stays one JSON document with --json.
        if a.opts.json {
            eprintln!("{note}");
        } else {
            println!("{note}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn table(
    a: &PlanArgs,
    p: &pb::PlanResponse,
    now: i64,
    size: u64,
    list: Option<&List>,
    never_lines: Option<&[usize]>,
) {
    let audience = match list {
        Some(l) => format!("{size} recipients from {}", l.name),
        None => format!("{size} new recipients"),
    };
    let completes = if p.completes_at_unix_ms == 0 {
        "never: the campaign cannot complete within the plan horizon".to_owned()
    } else {
        format!(
            "{} ({})",
            rfc3339(p.completes_at_unix_ms),
            delta(p.completes_at_unix_ms - now)
        )
    };
    let never = match never_lines {
        Some(lines) if !lines.is_empty() => {
            const SHOWN: usize = 20;
            let mut shown: Vec<String> = lines.iter().take(SHOWN).map(|l| l.to_string()).collect();
            if lines.len() > SHOWN {
                shown.push(format!("… {} more", lines.len() - SHOWN));
            }
            format!("{} (lines {})", p.never, shown.join(", "))
        }
        _ => p.never.to_string(),
    };
    output::lines(&[
        ("org_id", a.org_id.clone()),
        ("phone_number_id", a.phone.clone()),
        (
            "template",
            format!("{} ({})", a.template, a.category.name()),
        ),
        ("audience", audience),
        ("allowed_now", p.allowed_now.to_string()),
        ("completes_at", completes),
        (
            "binding",
            reason_name(p.binding).unwrap_or_else(|| "none (everything goes now)".to_owned()),
        ),
        ("already_counted", p.already_counted.to_string()),
        ("never", never),
        ("unplanned", p.unplanned.to_string()),
        ("waves", p.waves.len().to_string()),
    ]);
    if p.waves.is_empty() {
        return;
    }
    println!();
    let mut cumulative = 0u64;
    let mut rows: Vec<[String; 5]> = Vec::with_capacity(p.waves.len().min(WAVES_IN_FULL + 1));
    let elide = p.waves.len() > WAVES_IN_FULL;
    for (i, w) in p.waves.iter().enumerate() {
        cumulative += w.count;
        let shown = !elide || i < WAVES_HEAD || i >= p.waves.len() - WAVES_TAIL;
        if !shown {
            if i == WAVES_HEAD {
                rows.push([
                    String::new(),
                    format!("… {} more waves", p.waves.len() - WAVES_HEAD - WAVES_TAIL),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
            }
            continue;
        }
        rows.push([
            (i + 1).to_string(),
            rfc3339(w.at_unix_ms),
            delta(w.at_unix_ms - now),
            w.count.to_string(),
            cumulative.to_string(),
        ]);
    }
    let head = ["WAVE", "AT (UTC)", "FROM NOW", "COUNT", "CUMULATIVE"];
    let mut width = head.map(|h| h.chars().count());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    // Numbers right-aligned, text left; the elision line is not padded into the columns.
    let right = [true, false, false, true, true];
    let print = |cells: &[String]| {
        let line: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if right[i] {
                    format!("{c:>w$}", w = width[i])
                } else {
                    format!("{c:<w$}", w = width[i])
                }
            })
            .collect();
        println!("{}", line.join("  ").trim_end());
    };
    print(&head.map(str::to_owned));
    for r in &rows {
        if r[0].is_empty() {
            println!("{:>w$}  {}", "", r[1], w = width[0]);
        } else {
            print(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_read_well() {
        assert_eq!(delta(0), "now");
        assert_eq!(delta(50), "+50ms");
        assert_eq!(delta(86_400_000), "+1d");
        assert_eq!(delta(86_400_000 - 500), "+23h 59m 59.500s");
        assert_eq!(delta(3_600_000 + 2_000), "+1h 2s");
        assert_eq!(delta(-60_000), "-1m");
    }
}
