//! `tiergate send` and `tiergate report`: one `SendGovernor.Acquire` and one
//! `SendGovernor.Report` from the shell, to try the governor without writing a client.
//!
//! Both are on `SendGovernor`, so they carry `TIERGATE_SENDER_TOKEN` when set. `send` exits 3
//! on a DENY (after printing it), so that scripts can tell an ALLOW from a DENY by the status.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, ValueEnum};
use serde_json::json;
use tiergate_proto::v1 as pb;
use tiergate_proto::v1::send_governor_client::SendGovernorClient;

use super::AdminOpts;
use super::admin::{bearer, channel, status};
use super::output;
use super::plan::{CategoryArg, reason_name};

/// The exit status of a `send` that was denied.
pub const EXIT_DENY: u8 = 3;

/// Flags of `send`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when the send is allowed (its permit_id goes to \
    `tiergate report`), 3 when it is denied (the verdict is printed all the same), 1 when the \
    call fails (the server's error, e.g. InvalidArgument naming the field, on standard error), \
    2 for a usage error."
)]
pub struct SendArgs {
    /// The org.
    org_id: String,
    /// The phone number id the template goes from.
    #[arg(long, value_name = "ID")]
    phone: String,
    /// The recipient: WhatsApp id (phone digits) or a BSUID (CC.digits).
    #[arg(long, value_name = "RECIPIENT", required_unless_present = "user_id")]
    to: Option<String>,
    /// The template.
    #[arg(long, value_name = "NAME")]
    template: String,
    /// The template's category.
    #[arg(long, value_enum, ignore_case = true)]
    category: CategoryArg,
    /// The recipient's business-scoped user id (BSUID or parent BSUID); with --to, the two are
    /// one person from then on.
    #[arg(long, value_name = "BSUID")]
    user_id: Option<String>,
    /// An idempotency key: the same key within 24 h returns the first ALLOW and counts nothing
    /// twice.
    #[arg(long, value_name = "K")]
    key: Option<String>,
    /// Let the server hold the call up to this long (`5s`, `1500ms`) when the send is denied
    /// for a reason time cures (throughput, pair rate, a tier slot, a pause ending): it answers
    /// ALLOW the moment the send can go (`max_wait_ms`; the server caps it at
    /// `server.max_wait_ms`). Without it the answer comes at once.
    #[arg(long, value_name = "DURATION", value_parser = wait_ms)]
    wait: Option<u64>,
    #[command(flatten)]
    opts: AdminOpts,
}

/// What happened to a permitted send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutcomeArg {
    /// WhatsApp accepted the message.
    Sent,
    /// The message never reached WhatsApp: its slot and counts are given back.
    NotSent,
    /// WhatsApp answered with an error code (--code).
    Rejected,
}

impl OutcomeArg {
    fn pb(self) -> pb::SendOutcome {
        match self {
            OutcomeArg::Sent => pb::SendOutcome::Sent,
            OutcomeArg::NotSent => pb::SendOutcome::NotSent,
            OutcomeArg::Rejected => pb::SendOutcome::Rejected,
        }
    }

    fn name(self) -> &'static str {
        match self {
            OutcomeArg::Sent => "SENT",
            OutcomeArg::NotSent => "NOT_SENT",
            OutcomeArg::Rejected => "REJECTED",
        }
    }
}

/// Flags of `report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The permit_id of an allowed `send`.
    permit_id: String,
    /// What happened to the send.
    #[arg(value_enum)]
    outcome: OutcomeArg,
    /// WhatsApp's error code (with `rejected`, and only with it), e.g. 131049.
    #[arg(
        long,
        value_name = "N",
        required_if_eq("outcome", "rejected"),
        value_parser = clap::value_parser!(i32).range(1..)
    )]
    code: Option<i32>,
    #[command(flatten)]
    opts: AdminOpts,
}

/// A wait as a person reads it, rounded up to what is shown (a retry sooner would fail):
/// `250 ms`, `6 s`, `2 min 5 s`, `23 h 59 min`, `3 d 4 h`.
pub fn human_ms(ms: u64) -> String {
    const S: u64 = 1_000;
    const MIN: u64 = 60 * S;
    const H: u64 = 60 * MIN;
    let pair = |a: u64, an: &str, b: u64, bn: &str| {
        if b == 0 {
            format!("{a} {an}")
        } else {
            format!("{a} {an} {b} {bn}")
        }
    };
    if ms < S {
        return format!("{ms} ms");
    }
    let s = ms.div_ceil(S);
    if s < 60 {
        return format!("{s} s");
    }
    if s < 3_600 {
        return pair(s / 60, "min", s % 60, "s");
    }
    let m = ms.div_ceil(MIN);
    if m < 48 * 60 {
        return pair(m / 60, "h", m % 60, "min");
    }
    let h = ms.div_ceil(H);
    pair(h / 24, "d", h % 24, "h")
}

/// An advice by its SPEC name (`RETRY_AFTER`); `None` for UNSPECIFIED.
fn advice_name(v: i32) -> Option<String> {
    match pb::Advice::try_from(v) {
        Ok(pb::Advice::Unspecified) => None,
        Ok(a) => Some(
            a.as_str_name()
                .strip_prefix("ADVICE_")
                .unwrap_or(a.as_str_name())
                .to_owned(),
        ),
        Err(_) => Some(v.to_string()),
    }
}

fn verdict_name(v: i32) -> String {
    match pb::Verdict::try_from(v) {
        Ok(pb::Verdict::Allow) => "ALLOW".to_owned(),
        Ok(pb::Verdict::Deny) => "DENY".to_owned(),
        Ok(pb::Verdict::Unspecified) => "UNSPECIFIED".to_owned(),
        Err(_) => v.to_string(),
    }
}

fn wait_ms(s: &str) -> Result<u64, String> {
    super::admin::duration_ms(s).map_err(|e| e.to_string())
}

pub async fn send(a: SendArgs) -> anyhow::Result<ExitCode> {
    let req = pb::AcquireRequest {
        org_id: a.org_id.clone(),
        phone_number_id: a.phone.clone(),
        recipient: a.to.clone().unwrap_or_default(),
        template_name: a.template.clone(),
        category: a.category.pb() as i32,
        idempotency_key: a.key.clone().unwrap_or_default(),
        recipient_user_id: a.user_id.clone().unwrap_or_default(),
        max_wait_ms: a.wait.unwrap_or(0),
    };
    let r = SendGovernorClient::new(channel(&a.opts).await?)
        .acquire(bearer(req, "TIERGATE_SENDER_TOKEN")?)
        .await
        .map_err(status)?
        .into_inner();
    let denied = r.verdict == pb::Verdict::Deny as i32;
    if a.opts.json {
        println!(
            "{}",
            json!({
                "verdict": verdict_name(r.verdict),
                "reason": reason_name(r.reason),
                "retry_after_ms": r.retry_after_ms,
                "permit_id": (!r.permit_id.is_empty()).then_some(&r.permit_id),
                "usage": output::usage_json(r.usage),
            })
        );
    } else {
        let u = r.usage.unwrap_or_default();
        let retry_after = match (denied, r.retry_after_ms) {
            (false, 0) => "none".to_owned(),
            (true, 0) => "none: waiting alone will not help".to_owned(),
            (_, ms) => human_ms(ms),
        };
        output::lines(&[
            ("verdict", verdict_name(r.verdict)),
            (
                "reason",
                reason_name(r.reason).unwrap_or_else(|| "none".to_owned()),
            ),
            ("retry_after", retry_after),
            (
                "permit_id",
                if r.permit_id.is_empty() {
                    "none".to_owned()
                } else {
                    r.permit_id.clone()
                },
            ),
            ("tier", output::tier(u.tier)),
            (
                "tier_limit",
                if u.tier_limit == 0 {
                    "unlimited".to_owned()
                } else {
                    u.tier_limit.to_string()
                },
            ),
            ("unique_recipients_24h", u.unique_recipients_24h.to_string()),
            ("templates_7d", u.templates_7d.to_string()),
            ("quality_rating", output::rating(u.quality_rating)),
            ("passthrough", u.passthrough.to_string()),
            ("restricted", u.restricted.to_string()),
        ]);
    }
    Ok(if denied {
        ExitCode::from(EXIT_DENY)
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn report(a: ReportArgs) -> anyhow::Result<ExitCode> {
    if a.code.is_some() && a.outcome != OutcomeArg::Rejected {
        bail!("--code is WhatsApp's error code of a rejected send: give it with `rejected` only");
    }
    let req = pb::ReportRequest {
        permit_id: a.permit_id.clone(),
        outcome: a.outcome.pb() as i32,
        error_code: a.code.unwrap_or(0),
    };
    let r = SendGovernorClient::new(channel(&a.opts).await?)
        .report(bearer(req, "TIERGATE_SENDER_TOKEN")?)
        .await
        .map_err(status)?
        .into_inner();
    let advice = advice_name(r.advice);
    if a.opts.json {
        println!(
            "{}",
            json!({
                "permit_id": a.permit_id,
                "outcome": a.outcome.name(),
                "error_code": a.code,
                "advice": advice,
                "retry_after_ms": r.retry_after_ms,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    let outcome = match a.code {
        Some(code) => format!("{} (error {code})", a.outcome.name()),
        None => a.outcome.name().to_owned(),
    };
    let advice_text = match (&advice, a.outcome) {
        (Some(name), _) => name.clone(),
        (None, OutcomeArg::Rejected) => {
            "none: tiergate does not know this code, the caller decides".to_owned()
        }
        (None, _) => "none".to_owned(),
    };
    let retry_after = match (r.advice == pb::Advice::RetryAfter as i32, r.retry_after_ms) {
        (true, 0) => "not known here: the next send says it".to_owned(),
        (false, 0) => "none".to_owned(),
        (_, ms) => human_ms(ms),
    };
    output::lines(&[
        ("permit_id", a.permit_id.clone()),
        ("outcome", outcome),
        ("advice", advice_text),
        ("retry_after", retry_after),
    ]);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_well_and_round_up() {
        assert_eq!(human_ms(0), "0 ms");
        assert_eq!(human_ms(250), "250 ms");
        assert_eq!(human_ms(1_000), "1 s");
        assert_eq!(human_ms(5_001), "6 s");
        assert_eq!(human_ms(6_000), "6 s");
        assert_eq!(human_ms(59_500), "1 min");
        assert_eq!(human_ms(60_001), "1 min 1 s");
        assert_eq!(human_ms(125_000), "2 min 5 s");
        assert_eq!(human_ms(3_599_500), "1 h");
        assert_eq!(human_ms(3_600_001), "1 h 1 min");
        assert_eq!(human_ms(86_340_000), "23 h 59 min");
        assert_eq!(human_ms(86_399_500), "24 h");
        assert_eq!(human_ms(86_400_000), "24 h");
        assert_eq!(human_ms(2 * 86_400_000 - 60_000), "47 h 59 min");
        assert_eq!(human_ms(2 * 86_400_000), "2 d");
        assert_eq!(human_ms(3 * 86_400_000 + 4 * 3_600_000), "3 d 4 h");
        assert_eq!(human_ms(7 * 86_400_000), "7 d");
    }
}
