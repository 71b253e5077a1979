//! What replaying a send touches besides the engine: the org's counts, the errors, the plotted
//! org's samples. A replay splits it by org over its threads (`shard_of`), each thread deciding
//! its orgs' sends at each send's own time, and merges the parts for the report.

use std::collections::HashMap;
use std::hash::BuildHasher;

use tiergate_core::{Category, Engine, SendOutcome, SendRequest};

use crate::plot::Samples;
use crate::report::OrgStats;
use crate::trace::{Send, TraceOutcome};

/// Errors kept for the report, besides their count.
pub(crate) const MAX_ERRORS_KEPT: usize = 10;

/// Event errors: how many, and the first few with their line numbers.
#[derive(Debug, Default)]
pub(crate) struct Errors {
    pub(crate) count: u64,
    /// (line, message), in line order.
    pub(crate) first: Vec<(u64, String)>,
}

impl Errors {
    pub(crate) fn push(&mut self, line: u64, message: String) {
        self.count += 1;
        if self.first.len() < MAX_ERRORS_KEPT {
            self.first.push((line, message));
        }
    }

    /// Adds another part's errors: the first few of both are the first few of the whole.
    pub(crate) fn merge(&mut self, other: &Errors) {
        self.count += other.count;
        self.first.extend(other.first.iter().cloned());
        self.first.sort_by_key(|e| e.0);
        self.first.truncate(MAX_ERRORS_KEPT);
    }
}

/// The part of a replay that the sends of some orgs touch.
#[derive(Debug, Default)]
pub(crate) struct SendSide {
    /// Per-org counts (a hash map: one lookup per send, with foldhash as the engine's registry
    /// uses); sorted into the report at the end.
    pub(crate) stats: HashMap<String, OrgStats, foldhash::fast::RandomState>,
    pub(crate) errors: Errors,
    pub(crate) plot: Option<Samples>,
}

/// Which of `n` parts an org belongs to. Any stable spread will do: every event of an org
/// must go to the same part, in order.
pub(crate) fn shard_of(org: &str, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    // A fixed seed: the same trace splits the same way in every run.
    (foldhash::fast::FixedState::default().hash_one(org) % n as u64) as usize
}

impl SendSide {
    /// Splits `self` into `n` parts by org (the errors stay with the first part).
    pub(crate) fn split(self, n: usize) -> Vec<SendSide> {
        let mut parts: Vec<SendSide> = (0..n).map(|_| SendSide::default()).collect();
        for (org, stats) in self.stats {
            parts[shard_of(&org, n)].stats.insert(org, stats);
        }
        if let Some(plot) = self.plot {
            let k = shard_of(&plot.org, n);
            parts[k].plot = Some(plot);
        }
        parts[0].errors = self.errors;
        parts
    }

    /// The parts made one again.
    pub(crate) fn join(parts: Vec<SendSide>) -> SendSide {
        let mut one = SendSide::default();
        for p in parts {
            one.stats.extend(p.stats);
            one.errors.merge(&p.errors);
            one.plot = one.plot.or(p.plot);
        }
        one
    }

    /// Decides one send at `t` (line `line` of the trace) and counts what happened.
    pub(crate) fn send(&mut self, engine: &Engine, s: &Send<'_>, t: u64, line: u64) {
        let category = s.category.unwrap_or(Category::Utility);
        let req = SendRequest {
            org_id: s.org,
            phone_number_id: s.phone,
            recipient: s.to,
            recipient_user_id: None,
            template_name: s.template.unwrap_or("template"),
            category,
            idempotency_key: s.key,
        };
        let decision = engine.decide_at(&req, t);
        let Some(stats) = self.stats.get_mut(s.org) else {
            // Unknown org: counted as an event error, bounded by the error list.
            self.errors.push(line, format!("unknown org {:?}", s.org));
            return;
        };
        stats.sends += 1;
        let d = match decision {
            Ok(d) => d,
            Err(e) => {
                stats.errors += 1;
                self.errors.push(line, e.to_string());
                return;
            }
        };
        if stats.last_tier.is_some_and(|t| t != d.usage.tier) {
            stats.tier_changes += 1;
        }
        stats.last_tier = Some(d.usage.tier);
        let restricted_now = d.usage.restricted && !d.usage.passthrough;
        if restricted_now && !stats.in_restriction {
            stats.restricted_periods += 1;
        }
        stats.in_restriction = restricted_now;
        match d.reason {
            Some(r) => stats.deny(r, category),
            None => {
                stats.allowed += 1;
                if d.usage.restricted && d.usage.passthrough {
                    stats.passthrough_sends += 1;
                }
                let outcome = match s.outcome {
                    None | Some(TraceOutcome::Sent) => None,
                    Some(TraceOutcome::NotSent) => {
                        stats.refunded += 1;
                        Some(SendOutcome::NotSent)
                    }
                    Some(TraceOutcome::Rejected(code)) => {
                        Some(SendOutcome::Rejected { error_code: code })
                    }
                };
                if let (Some(o), Some(p)) = (outcome, &d.permit) {
                    let _ = engine.report_at(p, o, t);
                }
            }
        }
        if let Some(plot) = &mut self.plot
            && plot.org == s.org
        {
            plot.push(t, &d.usage);
        }
    }
}
