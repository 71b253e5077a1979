//! Prometheus metrics, served at `/metrics` on the HTTP port.
//!
//! Counters and the latency histogram are updated on the request path; per-org gauges are read
//! from the engine at scrape time, for at most `max_orgs` orgs (the fullest windows first), so
//! the label count stays bounded however many orgs are registered.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tiergate_core::{Decision, QualityRating};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    verdict: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    field: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Every metric the sidecar exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    decision_seconds: Histogram,
    webhook_changes: Family<WebhookLabels, Counter>,
    webhook_requests: Family<ResultLabel, Counter>,
    upstream_calls: Family<ResultLabel, Counter>,
    reactions: Family<ResultLabel, Counter>,
    waits: Family<ResultLabel, Counter>,
    wait_seconds: Histogram,
    wait_tries: Counter,
    max_orgs: usize,
}

impl Metrics {
    /// A registry with every metric; per-org gauges for at most `max_orgs` orgs.
    pub fn new(max_orgs: usize) -> Arc<Self> {
        let mut registry = Registry::with_prefix("tiergate");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Send decisions by verdict and reason",
            decisions.clone(),
        );
        let decision_seconds = Histogram::new([
            1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2,
        ]);
        registry.register(
            "decision_seconds",
            "Time the engine took to decide one send",
            decision_seconds.clone(),
        );
        let webhook_changes = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhook_changes",
            "Webhook changes by field and result",
            webhook_changes.clone(),
        );
        let webhook_requests = Family::<ResultLabel, Counter>::default();
        registry.register(
            "webhook_requests",
            "Webhook POSTs by result (ok, bad_signature, malformed, too_large)",
            webhook_requests.clone(),
        );
        let upstream_calls = Family::<ResultLabel, Counter>::default();
        registry.register(
            "upstream_calls",
            "Sends forwarded upstream by result",
            upstream_calls.clone(),
        );
        let reactions = Family::<ResultLabel, Counter>::default();
        registry.register(
            "feedback_reactions",
            "Reactions to WhatsApp error codes",
            reactions.clone(),
        );
        let waits = Family::<ResultLabel, Counter>::default();
        registry.register(
            "waits",
            "Waiting sends (max_wait_ms > 0) by how they ended: allow, deny, gone (the caller went away)",
            waits.clone(),
        );
        let wait_seconds =
            Histogram::new([0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        registry.register(
            "wait_seconds",
            "How long waiting sends waited, from the call to its answer",
            wait_seconds.clone(),
        );
        let wait_tries = Counter::default();
        registry.register(
            "wait_tries",
            "Tries the engine made for waiting sends (one per wake-up: compare with tiergate_waits_total)",
            wait_tries.clone(),
        );
        Arc::new(Self {
            registry,
            waits,
            wait_seconds,
            wait_tries,
            decisions,
            decision_seconds,
            webhook_changes,
            webhook_requests,
            upstream_calls,
            reactions,
            max_orgs,
        })
    }

    /// Counts one decision and its latency.
    pub fn decision(&self, d: &Decision, took: Duration) {
        self.decisions
            .get_or_create(&DecisionLabels {
                verdict: if d.is_allowed() { "allow" } else { "deny" },
                reason: d.reason.map_or("none", |r| r.name()),
            })
            .inc();
        self.decision_seconds.observe(took.as_secs_f64());
    }

    /// Counts one applied webhook change.
    pub fn webhook_change(&self, field: &str, result: &'static str) {
        self.webhook_changes
            .get_or_create(&WebhookLabels {
                field: field.chars().take(64).collect(),
                result,
            })
            .inc();
    }

    /// Counts one webhook request.
    pub fn webhook_request(&self, result: &'static str) {
        self.webhook_requests
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts one upstream call.
    pub fn upstream(&self, result: &'static str) {
        self.upstream_calls
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts one reaction to an error code.
    pub fn reaction(&self, result: &'static str) {
        self.reactions.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts one try of a waiting send.
    pub fn wait_try(&self) {
        self.wait_tries.inc();
    }

    /// Counts a wait that ended (`allow`, `deny`, `gone`) after `took`.
    pub fn wait_ended(&self, result: &'static str, took: Duration) {
        self.waits.get_or_create(&ResultLabel { result }).inc();
        self.wait_seconds.observe(took.as_secs_f64());
    }

    /// The text exposition, with per-org gauges read from `engine` now and the store's commit
    /// latency when there is a store.
    pub fn render(&self, gate: &crate::gate::Gate) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.registry).is_err() {
            out.clear();
        }
        let mut orgs = gate.observe_orgs();
        let total = orgs.len();
        orgs.sort_by(|a, b| {
            b.usage
                .unique_recipients_24h
                .cmp(&a.usage.unique_recipients_24h)
                .then_with(|| a.config.org_id.cmp(&b.config.org_id))
        });
        orgs.truncate(self.max_orgs);
        let gauges: [(&str, &str); 7] = [
            (
                "org_tier_limit",
                "Effective tier limit (after restriction and headroom; -1 = unlimited)",
            ),
            ("org_window_fill", "Unique recipients in the 24 h window"),
            ("org_templates_7d", "Templates sent in the last 7 days"),
            (
                "org_quality_rating",
                "Quality rating (0 unknown, 1 green, 2 yellow, 3 red)",
            ),
            (
                "org_restricted",
                "1 while the quality restriction is in force",
            ),
            ("org_account_restricted", "1 while the account is blocked"),
            (
                "org_pacing_review",
                "1 while Meta holds the org's sends for quality assessment (portfolio pacing)",
            ),
        ];
        // Writing to a String cannot fail (here and below).
        for (i, (name, help)) in gauges.iter().enumerate() {
            let _ = writeln!(out, "# HELP tiergate_{name} {help}.");
            let _ = writeln!(out, "# TYPE tiergate_{name} gauge");
            for o in &orgs {
                let v: i64 = match i {
                    0 => o.usage.tier_limit.map_or(-1, |l| l as i64),
                    1 => o.usage.unique_recipients_24h as i64,
                    2 => o.usage.templates_7d as i64,
                    3 => match o.config.quality_rating {
                        QualityRating::Unknown => 0,
                        QualityRating::Green => 1,
                        QualityRating::Yellow => 2,
                        QualityRating::Red => 3,
                    },
                    4 => i64::from(o.restricted),
                    5 => i64::from(o.account_restricted),
                    _ => i64::from(o.pacing_review),
                };
                let _ = writeln!(out, "tiergate_{name}{{org=\"{}\"}} {v}", o.config.org_id);
            }
        }
        let _ = writeln!(
            out,
            "# HELP tiergate_org_window_fill_by_category Unique recipients in the 24 h window \
             by the category of the send that took their slot (SPEC §2a reserves)."
        );
        let _ = writeln!(out, "# TYPE tiergate_org_window_fill_by_category gauge");
        for o in &orgs {
            let f = o.fill;
            for (category, v) in [
                ("MARKETING", f.marketing),
                ("UTILITY", f.utility),
                ("AUTHENTICATION", f.authentication),
                ("UNATTRIBUTED", f.unattributed),
            ] {
                let _ = writeln!(
                    out,
                    "tiergate_org_window_fill_by_category{{org=\"{}\",category=\"{category}\"}} {v}",
                    o.config.org_id
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP tiergate_org_waiters Sends waiting in the org's queue (SPEC §2a; with Redis, \
             every replica's, as this one last read the log)."
        );
        let _ = writeln!(out, "# TYPE tiergate_org_waiters gauge");
        for o in &orgs {
            let _ = writeln!(
                out,
                "tiergate_org_waiters{{org=\"{}\"}} {}",
                o.config.org_id,
                gate.engine().waiting(&o.config.org_id)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tiergate_orgs Registered orgs (per-org gauges cover at most {}).",
            self.max_orgs
        );
        let _ = writeln!(out, "# TYPE tiergate_orgs gauge");
        let _ = writeln!(out, "tiergate_orgs {total}");
        let _ = writeln!(
            out,
            "# HELP tiergate_store_up 1 while the state store ({}) takes changes.",
            gate.store_name()
        );
        let _ = writeln!(out, "# TYPE tiergate_store_up gauge");
        let _ = writeln!(out, "tiergate_store_up {}", i64::from(gate.is_ready()));
        if let Some(n) = gate.batches_waiting() {
            let _ = writeln!(
                out,
                "# HELP tiergate_store_batches_waiting AcquireBatch calls waiting for their turn in Redis (two per replica are in it at once)."
            );
            let _ = writeln!(out, "# TYPE tiergate_store_batches_waiting gauge");
            let _ = writeln!(out, "tiergate_store_batches_waiting {n}");
        }
        if let Some(st) = gate.commit_stats() {
            let _ = writeln!(
                out,
                "# HELP tiergate_store_commit_seconds Latency of one group commit (embedded: write + fsync; redis: the script call)."
            );
            let _ = writeln!(out, "# TYPE tiergate_store_commit_seconds histogram");
            for (le, n) in tiergate_store::COMMIT_BUCKETS.iter().zip(st.buckets()) {
                let _ = writeln!(
                    out,
                    "tiergate_store_commit_seconds_bucket{{le=\"{le}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "tiergate_store_commit_seconds_bucket{{le=\"+Inf\"}} {}",
                st.count()
            );
            let _ = writeln!(
                out,
                "tiergate_store_commit_seconds_sum {}",
                st.sum_seconds()
            );
            let _ = writeln!(out, "tiergate_store_commit_seconds_count {}", st.count());
            let _ = writeln!(
                out,
                "# HELP tiergate_store_facts Facts (embedded) or log entries (redis) committed."
            );
            let _ = writeln!(out, "# TYPE tiergate_store_facts counter");
            let _ = writeln!(out, "tiergate_store_facts_total {}", st.facts());
            let _ = writeln!(
                out,
                "# HELP tiergate_store_snapshots Org snapshots written (each replacing the facts or log entries before it)."
            );
            let _ = writeln!(out, "# TYPE tiergate_store_snapshots counter");
            let _ = writeln!(out, "tiergate_store_snapshots_total {}", st.snapshots());
        }
        // encode_registry ends with "# EOF"; keep it last.
        if let Some(i) = out.find("# EOF\n") {
            out.replace_range(i..i + 6, "");
            out.push_str("# EOF\n");
        }
        out
    }
}

/// The alert counters, inserted before `# EOF`.
pub fn render_alerts(out: &mut String, st: &crate::alerts::AlertStats) {
    use std::sync::atomic::Ordering::Relaxed;
    let series: [(&str, &str, &str, &std::sync::atomic::AtomicU64); 4] = [
        (
            "alerts_delivered_total",
            "counter",
            "Alerts the receiver took (2xx)",
            &st.delivered,
        ),
        (
            "alerts_failed_total",
            "counter",
            "Alert deliveries that failed (each retried)",
            &st.failed,
        ),
        (
            "alerts_dropped_total",
            "counter",
            "Alerts dropped because the outbox was full",
            &st.dropped,
        ),
        (
            "alerts_queued",
            "gauge",
            "Alerts waiting for delivery",
            &st.queued,
        ),
    ];
    let mut lines = String::new();
    for (name, kind, help, v) in series {
        let base = name.trim_end_matches("_total");
        let _ = writeln!(lines, "# HELP tiergate_{base} {help}.");
        let _ = writeln!(lines, "# TYPE tiergate_{base} {kind}");
        let _ = writeln!(lines, "tiergate_{name} {}", v.load(Relaxed));
    }
    match out.find("# EOF") {
        Some(i) => out.insert_str(i, &lines),
        None => out.push_str(&lines),
    }
}
