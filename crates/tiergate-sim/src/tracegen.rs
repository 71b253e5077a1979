//! `tiergate trace-gen`: synthetic week-long traces.
//!
//! Orgs get tiers from the current ladder, a few have no escalation path, some are flagged RED
//! in the first hours (half of those appeal on day 8 and win on day 9, so a trace of more than
//! 7 days shows the restriction and its end), and sends arrive uniformly over the period to
//! recipients drawn (Zipf) from a pool about the size of the org's tier. The same seed gives the
//! same trace.

use std::io::Write;

use tiergate_dist::{Dist, Rng};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Orgs `org-0` …
    pub orgs: u64,
    /// Send events in total.
    pub sends: u64,
    /// Length of the trace, days.
    pub days: u64,
    /// Seed.
    pub seed: u64,
    /// Trace start, Unix ms.
    pub start_ms: u64,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            orgs: 1_000,
            sends: 2_000_000,
            days: 7,
            seed: 1,
            start_ms: 1_767_225_600_000, // 2026-01-01
        }
    }
}

const TIERS: [(&str, u64); 4] = [
    ("TIER_250", 250),
    ("TIER_2K", 2_000),
    ("TIER_10K", 10_000),
    ("TIER_100K", 100_000),
];

/// Writes a trace; returns the number of lines.
pub fn generate(cfg: &GenConfig, out: &mut impl Write) -> std::io::Result<u64> {
    let mut rng = Rng::new(cfg.seed);
    let day = 86_400_000u64;
    let span = cfg.days.max(1) * day;
    let t0 = cfg.start_ms;
    let mut lines = 0u64;
    // Orgs: weights make small tiers common and big ones rare; big orgs send more.
    let mut pools = Vec::new();
    let mut weights = Vec::new();
    for i in 0..cfg.orgs {
        let k = match rng.below(100) {
            0..=49 => 0,
            50..=84 => 1,
            85..=97 => 2,
            _ => 3,
        };
        let (tier, limit) = TIERS[k];
        let path = rng.below(100) >= 8;
        let path_json = if path {
            r#","escalation_path":{"kind":"EMAIL","contact":"help@example.com"}"#
        } else {
            ""
        };
        writeln!(
            out,
            r#"{{"t":{t0},"org":{{"org_id":"org-{i}","tier":"{tier}","has_template_history":true,"phone_numbers":[{{"phone_number_id":"{}","throughput_mps":80}}]{path_json}}}}}"#,
            1_000_000 + i
        )?;
        lines += 1;
        pools.push(Dist::new(limit * 3 / 2, Some(0.8)));
        weights.push((limit as f64).sqrt());
    }
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    let cdf: Vec<f64> = weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect();
    // Rating and appeal events at fixed moments, merged into the send stream in time order.
    let mut admin: Vec<(u64, String)> = Vec::new();
    for i in 0..cfg.orgs {
        if rng.below(100) < 6 {
            admin.push((
                // Flagged early, so that a trace longer than the 7-day grace shows restrictions.
                t0 + rng.below(day / 4),
                format!(r#""rating":{{"org":"org-{i}","rating":"RED"}}"#),
            ));
            if rng.below(2) == 0 {
                admin.push((
                    t0 + 8 * day,
                    format!(r#""appeal":{{"org":"org-{i}","evidence":"help desk added"}}"#),
                ));
                admin.push((
                    t0 + 9 * day,
                    format!(r#""resolve_appeal":{{"org":"org-{i}","approved":true}}"#),
                ));
            }
        }
    }
    admin.sort();
    let mut admin = admin.into_iter().peekable();
    let step = span as f64 / cfg.sends.max(1) as f64;
    let mut line = String::with_capacity(160);
    for n in 0..cfg.sends {
        let t = t0 + (n as f64 * step) as u64;
        while let Some((at, _)) = admin.peek() {
            if *at > t {
                break;
            }
            let (at, ev) = admin.next().unwrap_or_default();
            writeln!(out, r#"{{"t":{at},{ev}}}"#)?;
            lines += 1;
        }
        let u = rng.unit();
        let org = cdf.partition_point(|&c| c < u).min(cdf.len() - 1);
        let to = 4_915_000_000_000u64 + (org as u64) * 1_000_000 + pools[org].sample(&mut rng);
        let marketing = rng.below(3) == 0;
        line.clear();
        use std::fmt::Write as _;
        let _ = write!(
            line,
            r#"{{"t":{t},"send":{{"org":"org-{org}","phone":"{}","to":"{to}","template":"{}","category":"{}"{}}}}}"#,
            1_000_000 + org,
            if marketing { "promo" } else { "order_update" },
            if marketing { "MARKETING" } else { "UTILITY" },
            if rng.below(1_000) == 0 {
                r#","outcome":"not_sent""#
            } else {
                ""
            },
        );
        writeln!(out, "{line}")?;
        lines += 1;
    }
    // Events past the end of the period (appeals of a short trace) are left out.
    for (at, ev) in admin.filter(|(at, _)| *at < t0 + span) {
        writeln!(out, r#"{{"t":{at},{ev}}}"#)?;
        lines += 1;
    }
    Ok(lines)
}
