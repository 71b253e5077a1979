//! What a replay found, per org and in total.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
use tiergate_core::{Category, DenyReason, Tier};

/// Sends a category reserve held back (CATEGORY_RESERVE denials), by the category of the send.
/// AUTHENTICATION may fill the whole tier, so no reserve ever holds it back.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ReserveHeld {
    /// MARKETING sends kept out of the UTILITY and AUTHENTICATION reserves.
    pub marketing: u64,
    /// UTILITY sends kept out of the AUTHENTICATION reserve.
    pub utility: u64,
}

impl ReserveHeld {
    /// Both together.
    pub fn total(&self) -> u64 {
        self.marketing + self.utility
    }
}

/// Counts for one org (or all).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct OrgStats {
    /// Send events.
    pub sends: u64,
    /// Allowed.
    pub allowed: u64,
    /// Denied.
    pub denied: u64,
    /// Denials by reason.
    pub denied_by_reason: BTreeMap<String, u64>,
    /// Send errors (unknown org or number, malformed fields).
    pub errors: u64,
    /// Changes of the effective tier seen by consecutive sends (upgrades, decreases, the
    /// restricted tier coming and going).
    pub tier_changes: u64,
    /// Times the restricted tier started to apply.
    pub restricted_periods: u64,
    /// Allowed sends of an org RED past its grace that passed through as a small sender.
    pub passthrough_sends: u64,
    /// Sends given back (NOT_SENT).
    pub refunded: u64,
    /// Sends the category reserves held back, by category (the CATEGORY_RESERVE denials of
    /// `denied_by_reason`, split).
    pub reserve_held: ReserveHeld,
    #[serde(skip)]
    pub(crate) last_tier: Option<Tier>,
    #[serde(skip)]
    pub(crate) in_restriction: bool,
}

impl OrgStats {
    pub(crate) fn deny(&mut self, r: DenyReason, category: Category) {
        self.denied += 1;
        if r == DenyReason::CategoryReserve {
            match category {
                Category::Marketing => self.reserve_held.marketing += 1,
                Category::Utility => self.reserve_held.utility += 1,
                // Never held back by a reserve; still counted under its reason.
                Category::Authentication => {}
            }
        }
        *self
            .denied_by_reason
            .entry(r.name().to_owned())
            .or_default() += 1;
    }

    fn add(&mut self, o: &OrgStats) {
        self.sends += o.sends;
        self.allowed += o.allowed;
        self.denied += o.denied;
        self.errors += o.errors;
        self.tier_changes += o.tier_changes;
        self.restricted_periods += o.restricted_periods;
        self.passthrough_sends += o.passthrough_sends;
        self.refunded += o.refunded;
        self.reserve_held.marketing += o.reserve_held.marketing;
        self.reserve_held.utility += o.reserve_held.utility;
        for (k, v) in &o.denied_by_reason {
            *self.denied_by_reason.entry(k.clone()).or_default() += v;
        }
    }
}

/// The result of one replay.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Events replayed.
    pub events: u64,
    /// Other events that failed (unknown org, bad appeal, …), with the first few messages.
    pub event_errors: u64,
    /// The first few event errors, with their line numbers.
    pub first_errors: Vec<String>,
    /// Trace time covered, hours.
    pub trace_hours: f64,
    /// Wall time of the replay, seconds.
    pub elapsed_s: f64,
    /// Events per second of wall time.
    pub events_per_s: f64,
    /// All orgs together.
    pub total: OrgStats,
    /// Per org.
    pub orgs: BTreeMap<String, OrgStats>,
}

impl Report {
    pub(crate) fn finish(&mut self) {
        let mut total = OrgStats::default();
        for o in self.orgs.values() {
            total.add(o);
        }
        self.total = total;
    }

    /// A table: the `max_rows` orgs with the most sends, then the total.
    pub fn table(&self, max_rows: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} events over {:.1} h of trace in {:.2} s ({:.2} M events/s); {} event errors",
            self.events,
            self.trace_hours,
            self.elapsed_s,
            self.events_per_s / 1e6,
            self.event_errors
        );
        let mut orgs: Vec<_> = self.orgs.iter().collect();
        orgs.sort_by(|a, b| b.1.sends.cmp(&a.1.sends).then_with(|| a.0.cmp(b.0)));
        let head = [
            "ORG",
            "SENDS",
            "ALLOWED",
            "DENIED",
            "TIER_LIMIT",
            "QUALITY",
            "WEEKLY_CAP",
            "NO_PATH",
            "THROUGHPUT",
            "PAIR",
            "RSV_MKT",
            "RSV_UTIL",
            "OTHER",
            "TIER_CHG",
            "RESTRICTED",
            "PASSTHRU",
        ];
        let row = |name: &str, s: &OrgStats| {
            let r = |k: &str| s.denied_by_reason.get(k).copied().unwrap_or(0);
            let named = r("TIER_LIMIT")
                + r("QUALITY_RESTRICTED")
                + r("WEEKLY_CAP_WITHOUT_ESCALATION")
                + r("ESCALATION_PATH_REQUIRED")
                + r("THROUGHPUT")
                + r("PAIR_RATE")
                + s.reserve_held.total();
            vec![
                name.to_owned(),
                s.sends.to_string(),
                s.allowed.to_string(),
                s.denied.to_string(),
                r("TIER_LIMIT").to_string(),
                r("QUALITY_RESTRICTED").to_string(),
                r("WEEKLY_CAP_WITHOUT_ESCALATION").to_string(),
                r("ESCALATION_PATH_REQUIRED").to_string(),
                r("THROUGHPUT").to_string(),
                r("PAIR_RATE").to_string(),
                s.reserve_held.marketing.to_string(),
                s.reserve_held.utility.to_string(),
                (s.denied - named + s.errors).to_string(),
                s.tier_changes.to_string(),
                s.restricted_periods.to_string(),
                s.passthrough_sends.to_string(),
            ]
        };
        let mut rows: Vec<Vec<String>> = vec![head.iter().map(|h| (*h).to_owned()).collect()];
        for (name, s) in orgs.iter().take(max_rows) {
            rows.push(row(name, s));
        }
        if orgs.len() > max_rows {
            rows.push(vec![format!("… {} more", orgs.len() - max_rows)]);
        }
        rows.push(row("TOTAL", &self.total));
        let cols = head.len();
        let w: Vec<usize> = (0..cols)
            .map(|c| {
                rows.iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for r in rows {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == 0 {
                        format!("{c:<w$}", w = w[i])
                    } else {
                        format!("{c:>w$}", w = w[i])
                    }
                })
                .collect();
            let _ = writeln!(out, "{}", line.join("  "));
        }
        let held = self.total.reserve_held;
        if held.total() > 0 {
            let _ = writeln!(
                out,
                "category reserves held back {} MARKETING and {} UTILITY sends (RSV_MKT, RSV_UTIL)",
                held.marketing, held.utility
            );
        }
        out
    }
}
