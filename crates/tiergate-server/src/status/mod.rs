//! The operators' status page on the HTTP port (`GET /`, `GET /orgs/{org_id}`): every org at a
//! glance, and one org's last day.
//!
//! Plain server-rendered HTML and CSS (no script, no build step, no CDN), refreshing itself. It
//! reads what this process knows of each org without touching the store ([`Gate::observe_orgs`],
//! the same view `/metrics` has), so a slow store never slows it and it never slows a send.
//! With an admin token configured the page asks for it: HTTP Basic, any user name, the token as
//! the password. Every string it shows is escaped ([`html::esc`]). The table pages
//! (`?page=N`, [`PAGE_SIZE`] orgs a page) and sorts (`?sort=fill|org|tier|rating|sends|denials`,
//! `&desc=1`).

pub mod chart;
pub mod history;
pub mod html;

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use subtle::ConstantTimeEq;
use tiergate_core::{OrgStatus, QualityRating, rfc3339};

use crate::gate::Gate;
use history::{Activity, Sample};
use html::{badge, esc, fill_bar, page, span};

/// Orgs a page of the table shows.
pub const PAGE_SIZE: usize = 200;
/// How often the pages reload themselves, in seconds.
const REFRESH_S: u32 = 15;

/// What the status pages read.
#[derive(Clone)]
pub struct StatusState {
    /// Where the orgs are read (never written).
    pub gate: Gate,
    /// Denials and fill over time.
    pub activity: Arc<Activity>,
    /// The admin token, if one is set: the pages then require it.
    pub admin_token: Option<String>,
}

/// Whether the request carries the admin token as HTTP Basic's password (or none is needed).
fn authorized(s: &StatusState, headers: &HeaderMap) -> bool {
    let Some(token) = s.admin_token.as_deref() else {
        return true;
    };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    if encoded.len() > 1_024 {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Some(i) = decoded.iter().position(|&b| b == b':') else {
        return false;
    };
    decoded[i + 1..].ct_eq(token.as_bytes()).into()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            r#"Basic realm="tiergate", charset="UTF-8""#,
        )],
        "the status page needs the admin token (HTTP Basic: any user name, the token as password)\n",
    )
        .into_response()
}

fn rating_badge(r: QualityRating) -> String {
    match r {
        QualityRating::Green => badge("green", "GREEN"),
        QualityRating::Yellow => badge("yellow", "YELLOW"),
        QualityRating::Red => badge("red", "RED"),
        QualityRating::Unknown => badge("grey", "UNKNOWN"),
    }
}

/// The RED grace, as a countdown or the restriction in force.
fn grace(st: &OrgStatus, red_grace_ms: u64, now: u64) -> String {
    if st.restricted {
        return badge("red", "RESTRICTED");
    }
    match st.flagged_since_ms {
        Some(since) if st.config.quality_rating == QualityRating::Red => {
            let ends = since.saturating_add(red_grace_ms);
            format!(
                r#"<span class="grace" data-ends="{ends}">restricted in {}</span>"#,
                span(ends.saturating_sub(now))
            )
        }
        _ => String::new(),
    }
}

/// Restrictions, pauses and reviews in force, as badges.
fn warnings(st: &OrgStatus, now: u64) -> String {
    let mut out = String::new();
    if st.account_restricted {
        out.push_str(&badge("red", "ACCOUNT RESTRICTED"));
    }
    for n in &st.numbers {
        if let Some(until) = n.paused_until_ms.filter(|&u| u > now) {
            out.push_str(&badge(
                "red",
                &format!("number {} paused {}", n.phone_number_id, span(until - now)),
            ));
        }
    }
    for p in &st.paused_templates {
        let text = match p.until_ms {
            None => format!("template {} disabled", p.template_name),
            Some(u) => format!(
                "template {} paused {}",
                p.template_name,
                span(u.saturating_sub(now))
            ),
        };
        out.push_str(&badge("yellow", &text));
    }
    if st.marketing_api_required {
        out.push_str(&badge("yellow", "MARKETING API REQUIRED"));
    }
    if st.limit_reduced {
        out.push_str(&badge("yellow", "LIMIT REDUCED"));
    }
    if st.pacing_review {
        out.push_str(&badge("blue", "PACING REVIEW"));
    }
    out
}

fn pending(st: &OrgStatus) -> String {
    match st.pending_tier {
        Some(t) if st.config.escalation_path.is_none() => {
            badge("yellow", &format!("{} held: no escalation path", t.name()))
        }
        Some(t) => badge("blue", &format!("{} pending", t.name())),
        None => String::new(),
    }
}

fn escalation(st: &OrgStatus) -> String {
    match &st.config.escalation_path {
        Some(p) => esc(p.contact()),
        None => badge("red", "none"),
    }
}

fn fill_pct(st: &OrgStatus) -> u64 {
    match st.usage.tier_limit {
        Some(l) if l > 0 => st.usage.unique_recipients_24h.saturating_mul(1_000) / l,
        _ => 0,
    }
}

fn rating_rank(r: QualityRating) -> u8 {
    match r {
        QualityRating::Red => 0,
        QualityRating::Yellow => 1,
        QualityRating::Unknown => 2,
        QualityRating::Green => 3,
    }
}

/// `GET /`: every org, sortable and paged.
pub async fn index(
    State(s): State<StatusState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let engine = s.gate.engine().clone();
    let now = engine.clock().now_ms();
    let red_grace_ms = engine.policy().red_grace_ms;
    let mut orgs = s.gate.observe_orgs();
    let sort = q.get("sort").map_or("fill", String::as_str);
    let desc = q.get("desc").is_some_and(|v| v == "1");
    match sort {
        "org" => orgs.sort_by(|a, b| a.config.org_id.cmp(&b.config.org_id)),
        "tier" => orgs.sort_by_key(|o| {
            (
                o.usage.tier_limit.unwrap_or(u64::MAX),
                o.config.org_id.clone(),
            )
        }),
        "rating" => orgs.sort_by_key(|o| {
            (
                rating_rank(o.config.quality_rating),
                o.config.org_id.clone(),
            )
        }),
        "sends" => orgs.sort_by_key(|o| (u64::MAX - o.usage.templates_7d, o.config.org_id.clone())),
        "denials" => orgs.sort_by_cached_key(|o| {
            (
                u64::MAX - s.activity.denials_24h(&o.config.org_id),
                o.config.org_id.clone(),
            )
        }),
        _ => orgs.sort_by_key(|o| (u64::MAX - fill_pct(o), o.config.org_id.clone())),
    }
    if desc {
        orgs.reverse();
    }
    let total = orgs.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page_no = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, pages);
    let shown = &orgs[((page_no - 1) * PAGE_SIZE).min(total)..(page_no * PAGE_SIZE).min(total)];
    let sort_link = |key: &str, label: &str| {
        let flip = if key == sort && !desc {
            "&amp;desc=1"
        } else {
            ""
        };
        format!(r#"<a href="/?sort={key}{flip}">{label}</a>"#)
    };
    let mut body = String::new();
    // Writing to a String cannot fail (here and below).
    let _ = write!(
        body,
        r#"<h1>tiergate</h1><p class="muted">{total} orgs · store {} ({}) · {} waiting sends · refreshed every {REFRESH_S} s · server time <span id="now" data-ms="{now}">{}</span></p>"#,
        s.gate.store_name(),
        if s.gate.is_ready() { "up" } else { "DOWN" },
        shown
            .iter()
            .map(|o| engine.waiting(&o.config.org_id))
            .sum::<usize>(),
        rfc3339(now as i64),
    );
    let _ = write!(
        body,
        "<table id=\"orgs\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>pending tier</th><th>escalation path</th><th>warnings</th><th>{}</th><th>{}</th><th>waiting</th></tr></thead><tbody>",
        sort_link("org", "org"),
        sort_link("tier", "tier"),
        sort_link("fill", "window fill (24 h) · M / U / A"),
        sort_link("rating", "rating"),
        sort_link("sends", "templates 7 d"),
        sort_link("denials", "denials 24 h"),
    );
    for o in shown {
        let id = esc(&o.config.org_id);
        let _ = write!(
            body,
            r#"<tr data-org="{id}"><td><a href="/orgs/{id}">{id}</a></td><td>{}</td><td>{} <span class="muted num" title="by category: marketing / utility / authentication">{} / {} / {}</span></td><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            o.usage.tier.name(),
            fill_bar(o.usage.unique_recipients_24h, o.usage.tier_limit),
            o.fill.marketing,
            o.fill.utility,
            o.fill.authentication,
            rating_badge(o.config.quality_rating),
            grace(o, red_grace_ms, now),
            pending(o),
            escalation(o),
            warnings(o, now),
            o.usage.templates_7d,
            s.activity.denials_24h(&o.config.org_id),
            engine.waiting(&o.config.org_id),
        );
    }
    body.push_str("</tbody></table>");
    if pages > 1 {
        let _ = write!(body, r#"<div class="pager">"#);
        for p in 1..=pages {
            if p == page_no {
                let _ = write!(body, "<span>page {p}</span>");
            } else {
                let d = if desc { "&amp;desc=1" } else { "" };
                let _ = write!(
                    body,
                    r#"<a href="/?sort={}{d}&amp;page={p}">{p}</a>"#,
                    esc(sort)
                );
            }
        }
        body.push_str("</div>");
    }
    Html(page("tiergate status", REFRESH_S, &body)).into_response()
}

/// `GET /orgs/{org_id}`: one org, with its last day as a chart.
pub async fn org(
    State(s): State<StatusState>,
    headers: HeaderMap,
    Path(org_id): Path<String>,
) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let engine = s.gate.engine().clone();
    let Ok(st) = engine.peek_org(&org_id) else {
        let body = format!(
            r#"<h1>no such org</h1><p>{} is not registered. <a href="/">All orgs</a></p>"#,
            esc(&org_id.chars().take(128).collect::<String>())
        );
        return (StatusCode::NOT_FOUND, Html(page("not found", 60, &body))).into_response();
    };
    let now = engine.clock().now_ms();
    let red_grace_ms = engine.policy().red_grace_ms;
    let id = esc(&st.config.org_id);
    let (mut samples, open) = s.activity.history(&st.config.org_id);
    samples.push(Sample {
        at_ms: now,
        fill: st.usage.unique_recipients_24h,
        limit: st.usage.tier_limit,
        denials: open,
    });
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<p><a href="/">← all orgs</a></p><h1>{id} {}</h1><dl>"#,
        rating_badge(st.config.quality_rating)
    );
    let mut row = |k: &str, v: String| {
        let _ = write!(body, "<dt>{k}</dt><dd>{v}</dd>");
    };
    row(
        "tier",
        format!(
            "{} (effective limit {})",
            st.usage.tier.name(),
            st.usage
                .tier_limit
                .map_or("unlimited".to_owned(), |l| l.to_string())
        ),
    );
    row(
        "window fill (24 h)",
        fill_bar(st.usage.unique_recipients_24h, st.usage.tier_limit),
    );
    row(
        "by category",
        format!(
            "marketing {} · utility {} · authentication {} · unattributed {}",
            st.fill.marketing, st.fill.utility, st.fill.authentication, st.fill.unattributed
        ),
    );
    row("templates (7 d)", st.usage.templates_7d.to_string());
    row("RED grace", grace(&st, red_grace_ms, now));
    row("pending tier", pending(&st));
    row("escalation path", escalation(&st));
    row("warnings", warnings(&st, now));
    row(
        "numbers",
        st.numbers
            .iter()
            .map(|n| format!("{} ({} msg/s)", esc(&n.phone_number_id), n.effective_mps))
            .collect::<Vec<_>>()
            .join(", "),
    );
    row(
        "appeal",
        st.appeal.as_ref().map_or(String::new(), |a| {
            format!(
                r#"{:?}: <span class="evidence">{}</span>"#,
                a.status,
                esc(&a.evidence)
            )
        }),
    );
    row(
        "waiting sends",
        engine.waiting(&st.config.org_id).to_string(),
    );
    body.push_str("</dl><h2>Last 24 h</h2>");
    body.push_str(&chart::svg(
        &samples,
        s.activity.bucket_ms(),
        s.activity.slots(),
    ));
    Html(page(
        &format!("tiergate · {}", st.config.org_id),
        REFRESH_S,
        &body,
    ))
    .into_response()
}
