//! Which alerts an org's state calls for: its *conditions* now (RED, a paused template, a full
//! window, …) compared with the last ones seen. An alert fires when a condition starts (and for
//! the rating and the tier, when the value changes, both ways). Pure: the watcher hands it what
//! the engine shows and the time.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tiergate_core::{OrgStatus, QualityRating};

/// Every kind of alert, by the name `[alerts] events` uses.
pub const KINDS: [&str; 13] = [
    "rating_changed",
    "grace_ends_soon",
    "restricted",
    "template_paused",
    "template_disabled",
    "account_restricted",
    "number_restricted",
    "tier_applied",
    "tier_held",
    "window_80",
    "window_full",
    "marketing_api_required",
    "pacing_review",
];

/// One alert, as it is delivered (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique per alert; a receiver that sees an id twice (at-least-once delivery) drops it.
    pub id: String,
    /// One of [`KINDS`].
    pub kind: String,
    /// The org.
    pub org_id: String,
    /// What it is about: the new rating, the template, the number, the tier (may be empty).
    pub subject: String,
    /// The previous value, for a change (rating, tier).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    /// When tiergate saw it (the engine's clock, Unix ms).
    pub at_unix_ms: u64,
    /// One line for a person.
    pub text: String,
}

/// An org's conditions as `kind:subject` strings (`rating:RED`, `template_paused:promo`).
pub fn conditions(st: &OrgStatus, red_grace_ms: u64, now: u64) -> BTreeSet<String> {
    let mut c = BTreeSet::new();
    c.insert(format!(
        "rating_changed:{}",
        st.config.quality_rating.name()
    ));
    c.insert(format!("tier_applied:{}", st.config.tier.name()));
    if st.config.quality_rating == QualityRating::Red
        && !st.restricted
        && let Some(since) = st.flagged_since_ms
        && since.saturating_add(red_grace_ms).saturating_sub(now) <= 86_400_000
    {
        c.insert("grace_ends_soon:".into());
    }
    if st.restricted {
        c.insert("restricted:".into());
    }
    for p in &st.paused_templates {
        match p.until_ms {
            None => c.insert(format!("template_disabled:{}", p.template_name)),
            Some(u) if u > now => c.insert(format!("template_paused:{}", p.template_name)),
            Some(_) => false,
        };
    }
    if st.account_restricted {
        c.insert("account_restricted:".into());
    }
    for n in &st.numbers {
        if n.paused_until_ms.is_some_and(|u| u > now) {
            c.insert(format!("number_restricted:{}", n.phone_number_id));
        }
    }
    if let Some(t) = st.pending_tier
        && st.config.escalation_path.is_none()
    {
        c.insert(format!("tier_held:{}", t.name()));
    }
    if let Some(l) = st.usage.tier_limit.filter(|&l| l > 0) {
        let fill = st.usage.unique_recipients_24h;
        if fill >= l {
            c.insert("window_full:".into());
        }
        if fill.saturating_mul(100) >= l.saturating_mul(80) {
            c.insert("window_80:".into());
        }
    }
    if st.marketing_api_required {
        c.insert("marketing_api_required:".into());
    }
    if st.pacing_review {
        c.insert("pacing_review:".into());
    }
    c
}

/// The alerts from `prev` (`None`: the org is new here) to `now_c`, as `(kind, subject, from)`.
/// A new org's rating and tier are its baseline, not a change (a RED one still alerts, with no
/// `from`: it may have turned RED before the first look); its other conditions do alert.
pub fn changes(
    prev: Option<&BTreeSet<String>>,
    now_c: &BTreeSet<String>,
) -> Vec<(String, String, String)> {
    let empty = BTreeSet::new();
    let before = prev.unwrap_or(&empty);
    let mut out = Vec::new();
    for c in now_c.difference(before) {
        let (kind, subject) = c.split_once(':').unwrap_or((c, ""));
        let from = match kind {
            "rating_changed" | "tier_applied" => {
                match before
                    .iter()
                    .find_map(|p| p.strip_prefix(kind).and_then(|r| r.strip_prefix(':')))
                {
                    Some(old) => old.to_owned(),
                    None if kind == "rating_changed" && subject == "RED" => String::new(),
                    // A baseline: nothing changed.
                    None => continue,
                }
            }
            _ => String::new(),
        };
        out.push((kind.to_owned(), subject.to_owned(), from));
    }
    out
}

/// The line a person reads for an alert.
pub fn text(kind: &str, org_id: &str, subject: &str, from: &str) -> String {
    match kind {
        "rating_changed" => format!("{org_id}: quality rating changed from {from} to {subject}"),
        "grace_ends_soon" => format!(
            "{org_id}: RED for almost 7 days: the restricted tier applies within 24 h unless the rating recovers"
        ),
        "restricted" => format!("{org_id}: restricted: RED past its grace, the lower tier applies"),
        "template_paused" => format!("{org_id}: template {subject} paused"),
        "template_disabled" => format!("{org_id}: template {subject} disabled"),
        "account_restricted" => format!("{org_id}: account restricted: every send is denied"),
        "number_restricted" => format!("{org_id}: number {subject} paused"),
        "tier_applied" => format!("{org_id}: tier changed from {from} to {subject}"),
        "tier_held" => format!("{org_id}: tier increase to {subject} held: no escalation path"),
        "window_80" => format!("{org_id}: 24 h window at 80 % of its limit"),
        "window_full" => format!("{org_id}: 24 h window full: new recipients are denied"),
        "marketing_api_required" => {
            format!("{org_id}: marketing must go through the Marketing Messages API (131063)")
        }
        "pacing_review" => {
            format!("{org_id}: Meta holds sends for quality assessment (pacing review)")
        }
        _ => format!("{org_id}: {kind} {subject}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_change_alerts_once_and_a_baseline_not_at_all() {
        let a = set(&["rating_changed:GREEN", "tier_applied:TIER_250"]);
        assert!(changes(None, &a).is_empty(), "a new org's baseline");
        let b = set(&["rating_changed:RED", "tier_applied:TIER_250", "window_80:"]);
        let got = changes(Some(&a), &b);
        assert_eq!(
            got,
            vec![
                ("rating_changed".into(), "RED".into(), "GREEN".into()),
                ("window_80".into(), String::new(), String::new()),
            ]
        );
        assert!(changes(Some(&b), &b).is_empty(), "nothing new");
        // Back to GREEN alerts too; the window dropping does not.
        let c = set(&["rating_changed:GREEN", "tier_applied:TIER_250"]);
        assert_eq!(
            changes(Some(&b), &c),
            vec![("rating_changed".into(), "GREEN".into(), "RED".into())]
        );
        // A new org that is RED already alerts, with no `from`.
        let r = set(&["rating_changed:RED", "tier_applied:TIER_250"]);
        assert_eq!(
            changes(None, &r),
            vec![("rating_changed".into(), "RED".into(), String::new())]
        );
        // A new org that is already full alerts.
        let d = set(&[
            "rating_changed:GREEN",
            "tier_applied:TIER_250",
            "window_full:",
        ]);
        assert_eq!(changes(None, &d).len(), 1);
    }
}
