//! How admin answers are printed: aligned `key  value` lines and tables, or JSON (`--json`).

use serde_json::{Value, json};
use tiergate_proto::v1 as pb;

fn name<E: TryFrom<i32>>(v: i32, f: impl Fn(&E) -> &'static str) -> String {
    E::try_from(v)
        .ok()
        .map_or_else(|| v.to_string(), |e| f(&e).to_owned())
}

pub(super) fn tier(v: i32) -> String {
    if v == pb::Tier::Unspecified as i32 {
        return "-".to_owned();
    }
    name(v, pb::Tier::as_str_name)
}

pub(super) fn rating(v: i32) -> String {
    name(v, pb::QualityRating::as_str_name).replace("QUALITY_RATING_", "")
}

fn escalation(p: &Option<pb::EscalationPath>) -> String {
    p.as_ref().map_or("none".to_owned(), |p| {
        format!(
            "{} {}",
            name(p.kind, pb::EscalationKind::as_str_name),
            p.contact
        )
    })
}

/// `name (disabled), name (until RFC 3339)`, or `none`.
fn paused_templates(p: &[pb::TemplatePause]) -> String {
    if p.is_empty() {
        return "none".to_owned();
    }
    p.iter()
        .map(|t| {
            if t.disabled || t.until_unix_ms == 0 {
                format!("{} (disabled)", t.template_name)
            } else {
                format!(
                    "{} (until {})",
                    t.template_name,
                    super::plan::rfc3339(t.until_unix_ms)
                )
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn usage_json(u: Option<pb::Usage>) -> Value {
    let u = u.unwrap_or_default();
    json!({
        "tier": tier(u.tier),
        "tier_limit": u.tier_limit,
        "unique_recipients_24h": u.unique_recipients_24h,
        "templates_7d": u.templates_7d,
        "quality_rating": rating(u.quality_rating),
        "passthrough": u.passthrough,
        "restricted": u.restricted,
    })
}

fn appeal_json(a: &pb::Appeal) -> Value {
    json!({
        "appeal_id": a.appeal_id,
        "org_id": a.org_id,
        "status": name(a.status, pb::AppealStatus::as_str_name),
        "evidence": a.evidence,
        "filed_at_unix_ms": a.filed_at_unix_ms,
    })
}

fn org_json(o: &pb::Org) -> Value {
    json!({
        "org_id": o.org_id,
        "tier": tier(o.tier),
        "quality_rating": rating(o.quality_rating),
        "phone_numbers": o.phone_numbers.iter().map(|p| json!({
            "phone_number_id": p.phone_number_id,
            "display_phone_number": p.display_phone_number,
            "throughput_mps": p.throughput_mps,
        })).collect::<Vec<_>>(),
        "waba_ids": o.waba_ids,
        "escalation_path": o.escalation_path.as_ref().map(|p| json!({
            "kind": name(p.kind, pb::EscalationKind::as_str_name),
            "contact": p.contact,
        })),
        "has_template_history": o.has_template_history,
        "pending_tier": tier(o.pending_tier),
        "restricted": o.restricted,
        "flagged_since_unix_ms": o.flagged_since_unix_ms,
        "account_restricted": o.account_restricted,
        "marketing_api_required": o.marketing_api_required,
        "paused_templates": o.paused_templates.iter().map(|p| json!({
            "template_name": p.template_name,
            "until_unix_ms": p.until_unix_ms,
            "disabled": p.disabled,
        })).collect::<Vec<_>>(),
        "usage": usage_json(o.usage),
        "appeal": o.appeal.as_ref().map(appeal_json),
    })
}

pub(super) fn lines(rows: &[(&str, String)]) {
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<w$}  {v}");
    }
}

/// One org.
pub fn org(o: &pb::Org, json: bool) {
    if json {
        println!("{}", org_json(o));
        return;
    }
    let u = o.usage.unwrap_or_default();
    let limit = if u.tier_limit == 0 {
        "unlimited".to_owned()
    } else {
        u.tier_limit.to_string()
    };
    lines(&[
        ("org_id", o.org_id.clone()),
        ("tier", tier(o.tier)),
        ("pending_tier", tier(o.pending_tier)),
        (
            "effective_tier",
            format!("{} (limit {limit})", tier(u.tier)),
        ),
        ("quality_rating", rating(o.quality_rating)),
        ("flagged_since_unix_ms", o.flagged_since_unix_ms.to_string()),
        ("restricted", o.restricted.to_string()),
        ("account_restricted", o.account_restricted.to_string()),
        (
            "marketing_api_required",
            o.marketing_api_required.to_string(),
        ),
        ("paused_templates", paused_templates(&o.paused_templates)),
        ("escalation_path", escalation(&o.escalation_path)),
        ("has_template_history", o.has_template_history.to_string()),
        ("unique_recipients_24h", u.unique_recipients_24h.to_string()),
        ("templates_7d", u.templates_7d.to_string()),
        ("passthrough", u.passthrough.to_string()),
        (
            "phone_numbers",
            o.phone_numbers
                .iter()
                .map(|p| format!("{} ({} mps)", p.phone_number_id, p.throughput_mps))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("waba_ids", o.waba_ids.join(", ")),
        (
            "appeal",
            o.appeal.as_ref().map_or("none".to_owned(), |a| {
                format!(
                    "{} {}",
                    a.appeal_id,
                    name(a.status, pb::AppealStatus::as_str_name)
                )
            }),
        ),
    ]);
}

/// Every org, one per row.
pub fn org_list(orgs: &[pb::Org], json: bool) {
    if json {
        println!("{}", Value::Array(orgs.iter().map(org_json).collect()));
        return;
    }
    let rows: Vec<[String; 7]> = orgs
        .iter()
        .map(|o| {
            let u = o.usage.unwrap_or_default();
            [
                o.org_id.clone(),
                tier(o.tier),
                rating(o.quality_rating),
                tier(o.pending_tier),
                o.restricted.to_string(),
                format!(
                    "{}/{}",
                    u.unique_recipients_24h,
                    if u.tier_limit == 0 {
                        "∞".to_owned()
                    } else {
                        u.tier_limit.to_string()
                    }
                ),
                escalation(&o.escalation_path),
            ]
        })
        .collect();
    let head = [
        "ORG",
        "TIER",
        "RATING",
        "PENDING",
        "RESTRICTED",
        "WINDOW",
        "ESCALATION",
    ];
    let mut w = head.map(|h| h.chars().count());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let print = |cells: Vec<&str>| {
        let line: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    };
    print(head.to_vec());
    for r in &rows {
        print(r.iter().map(String::as_str).collect());
    }
}

/// The answer to a tier request.
pub fn tier_change(r: &pb::TierChangeResponse, json: bool) {
    let held = name(r.held_reason, pb::DenyReason::as_str_name);
    if json {
        println!(
            "{}",
            json!({ "applied": r.applied, "tier": tier(r.tier), "pending_tier": tier(r.pending_tier), "held_reason": held })
        );
        return;
    }
    lines(&[
        ("applied", r.applied.to_string()),
        ("tier", tier(r.tier)),
        ("pending_tier", tier(r.pending_tier)),
        ("held_reason", held),
    ]);
}

/// One appeal.
pub fn appeal(a: &pb::Appeal, json: bool) {
    if json {
        println!("{}", appeal_json(a));
        return;
    }
    lines(&[
        ("appeal_id", a.appeal_id.clone()),
        ("org_id", a.org_id.clone()),
        ("status", name(a.status, pb::AppealStatus::as_str_name)),
        ("evidence", a.evidence.clone()),
    ]);
}
