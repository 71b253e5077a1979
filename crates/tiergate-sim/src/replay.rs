//! Replaying a trace through the engine on a manual clock: parsed on one thread, replayed in
//! order on another.

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::Arc;
use std::time::Instant;

use tiergate_core::{
    AppealId, Category, Command, Engine, ManualClock, OrgConfig, Policy, SendOutcome, SendRequest,
};
use tiergate_webhook::{Plan, Summary, parse, plan};

use crate::plot::Samples;
use crate::report::{OrgStats, Report};
use crate::trace::{Line, OwnedSend, TraceOutcome};

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The policy was refused.
    #[error("policy: {0}")]
    Policy(String),
    /// A line is not a trace event.
    #[error("line {line}: {message}")]
    Line {
        /// 1-based.
        line: u64,
        /// Why.
        message: String,
    },
    /// Reading failed.
    #[error("reading the trace: {0}")]
    Io(#[from] std::io::Error),
}

/// A replay in progress.
pub struct Simulator {
    engine: Arc<Engine>,
    clock: Arc<ManualClock>,
    report: Report,
    /// Per-org counts while replaying (a hash map: one lookup per send); sorted into the report
    /// at the end.
    stats: HashMap<String, OrgStats>,
    first_t: Option<u64>,
    last_t: u64,
    plot: Option<Samples>,
    started: Instant,
    /// Orgs from the config, registered at the trace's first time.
    pending: Vec<OrgConfig>,
}

const MAX_ERRORS_KEPT: usize = 10;

/// Lines handed from the parsing thread to the replaying one at a time.
const BATCH: usize = 4_096;
/// Batches parsed ahead of the replay (memory: a few MB of sends).
const BATCHES_IN_FLIGHT: usize = 4;

/// A line as the parsing thread hands it on.
enum Parsed {
    Send {
        t: u64,
        line: u64,
        send: OwnedSend,
    },
    /// Any other event: parsed again where it is applied.
    Other {
        line: u64,
        text: String,
    },
    /// A line that is not an event: the replay stops there.
    Bad(ReplayError),
}

/// Parses one line of the trace into exactly one event.
fn parse_line(text: &str, line: u64) -> Result<Line<'_>, ReplayError> {
    let bad = |message: String| ReplayError::Line { line, message };
    let l: Line<'_> = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    if l.events() != 1 {
        return Err(bad(format!(
            "expected exactly one event, found {}",
            l.events()
        )));
    }
    Ok(l)
}

/// Reads and parses `input` into batches for the replaying thread, until the input ends, a
/// line is bad (sent on, so that it is reported in order) or the replay stopped.
fn read_batches(
    mut input: impl BufRead,
    tx: &std::sync::mpsc::SyncSender<Vec<Parsed>>,
    progress: &mut impl FnMut(u64),
) -> Result<(), ReplayError> {
    let mut buf = String::new();
    let mut line = 0u64;
    let mut read = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    let mut stop = false;
    while !stop {
        buf.clear();
        let n = match input.read_line(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                // What was read before goes on first, as a line-by-line replay would apply it.
                let _ = tx.send(batch);
                return Err(e.into());
            }
        };
        if n == 0 {
            break;
        }
        line += 1;
        read += n as u64;
        let text = buf.trim_end();
        if text.is_empty() {
            continue;
        }
        match parse_line(text, line) {
            Ok(Line {
                t, send: Some(s), ..
            }) => batch.push(Parsed::Send {
                t,
                line,
                send: OwnedSend::from(&s),
            }),
            Ok(_) => batch.push(Parsed::Other {
                line,
                text: text.to_owned(),
            }),
            Err(e) => {
                batch.push(Parsed::Bad(e));
                stop = true;
            }
        }
        if batch.len() == BATCH || stop {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if tx.send(full).is_err() {
                // The replay stopped; its error is the one to report.
                return Ok(());
            }
            progress(read);
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(batch);
    }
    progress(read);
    Ok(())
}

impl Simulator {
    /// A simulator with `policy`; `orgs` are registered at the trace's first time. Samples of
    /// `plot_org` are kept for a plot.
    pub fn new(
        policy: Policy,
        orgs: Vec<OrgConfig>,
        plot_org: Option<String>,
    ) -> Result<Self, ReplayError> {
        let clock = Arc::new(ManualClock::new(0));
        let engine = Arc::new(
            Engine::new(policy, clock.clone()).map_err(|e| ReplayError::Policy(e.to_string()))?,
        );
        let mut sim = Self {
            engine,
            clock,
            report: Report::default(),
            stats: HashMap::default(),
            first_t: None,
            last_t: 0,
            plot: plot_org.map(Samples::new),
            started: Instant::now(),
            pending: Vec::new(),
        };
        for o in &orgs {
            o.validate(sim.engine.policy().max_throughput_mps)
                .map_err(|e| ReplayError::Policy(format!("org {}: {e}", o.org_id)))?;
        }
        sim.pending = orgs;
        Ok(sim)
    }

    fn register(&mut self, o: OrgConfig, line: u64) -> Result<(), ReplayError> {
        let id = o.org_id.clone();
        self.engine.put_org(o).map_err(|e| ReplayError::Line {
            line,
            message: format!("org {id}: {e}"),
        })?;
        self.stats.entry(id).or_default();
        Ok(())
    }

    fn event_error(&mut self, line: u64, msg: String) {
        self.report.event_errors += 1;
        if self.report.first_errors.len() < MAX_ERRORS_KEPT {
            self.report.first_errors.push(format!("line {line}: {msg}"));
        }
    }

    /// Applies one line of the trace (`line` is its 1-based number, for errors).
    pub fn apply_line(&mut self, text: &str, line: u64) -> Result<(), ReplayError> {
        let l = parse_line(text, line)?;
        self.apply_parsed(l, line)
    }

    /// Applies one parsed line (see `parse_line`).
    fn apply_parsed(&mut self, l: Line<'_>, line: u64) -> Result<(), ReplayError> {
        let bad = |message: String| ReplayError::Line { line, message };
        if l.t < self.last_t {
            return Err(bad(format!(
                "time goes backwards ({} < {})",
                l.t, self.last_t
            )));
        }
        self.last_t = l.t;
        self.clock.advance_to(l.t);
        if self.first_t.is_none() {
            self.first_t = Some(l.t);
            for o in std::mem::take(&mut self.pending) {
                self.register(o, line)?;
            }
        }
        self.report.events += 1;
        if let Some(s) = l.send {
            self.send(&s, l.t, line);
            return Ok(());
        }
        let result: Result<(), String> = if let Some(o) = l.org {
            return self.register(o, line);
        } else if let Some(r) = l.rating {
            self.engine
                .set_quality_rating(&r.org, r.rating)
                .map(drop)
                .map_err(|e| e.to_string())
        } else if let Some(e) = l.escalation {
            match e.path {
                Some(p) => self.engine.set_escalation_path(&e.org, p),
                None => self.engine.clear_escalation_path(&e.org),
            }
            .map(drop)
            .map_err(|e| e.to_string())
        } else if let Some(t) = l.tier {
            self.engine
                .request_tier_change(&t.org, t.tier)
                .map(drop)
                .map_err(|e| e.to_string())
        } else if let Some(a) = l.appeal {
            self.engine
                .file_appeal(&a.org, &a.evidence)
                .map(drop)
                .map_err(|e| e.to_string())
        } else if let Some(r) = l.resolve_appeal {
            self.resolve_latest(&r.org, r.approved)
        } else if let Some(w) = l.webhook {
            // A change that cannot be read is answered 200 by the sidecar (the rest applies);
            // here it is also an event error, so the trace's author sees it.
            match self.webhook(w.get().as_bytes(), l.t) {
                Ok(s) if s.unreadable > 0 => Err(format!(
                    "{} webhook change(s) could not be read",
                    s.unreadable
                )),
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        } else {
            Ok(())
        };
        if let Err(e) = result {
            self.event_error(line, e);
        }
        Ok(())
    }

    /// Applies a webhook body at `t` as the sidecar does (`tiergate-webhook`'s plan, the same
    /// edge check the gate makes, then the engine), minus the signature: the trace is trusted.
    fn webhook(&self, body: &[u8], t: u64) -> Result<Summary, parse::ParseError> {
        let mut summary = Summary::default();
        for parsed in &parse::parse(body)? {
            let named = plan::resolve(&parsed.change, |id| self.engine.lookup_id(id));
            let mut plan = Plan::new(parsed, named, self.engine.policy(), t);
            while let Some(fact) = plan.next_fact() {
                let answer = self
                    .engine
                    .check_fact(&fact)
                    .and_then(|()| self.engine.execute_at(&Command::Apply { fact }, t));
                match answer {
                    Ok(answer) => plan.answered(&answer),
                    Err(e) => plan.refused(e.to_string()),
                }
            }
            summary.add(&plan.outcome());
        }
        Ok(summary)
    }

    fn resolve_latest(&mut self, org: &str, approved: bool) -> Result<(), String> {
        let st = self.engine.get_org(org).map_err(|e| e.to_string())?;
        let appeal = st
            .appeal
            .ok_or_else(|| format!("org {org} has no appeal"))?;
        let id: AppealId = appeal.appeal_id;
        self.engine
            .resolve_appeal(&id, approved)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn send(&mut self, s: &crate::trace::Send<'_>, t: u64, line: u64) {
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
        let decision = self.engine.decide(&req);
        let Some(stats) = self.stats.get_mut(s.org) else {
            // Unknown org: count it under its own name, bounded by the error list.
            self.event_error(line, format!("unknown org {:?}", s.org));
            return;
        };
        stats.sends += 1;
        let d = match decision {
            Ok(d) => d,
            Err(e) => {
                stats.errors += 1;
                let msg = e.to_string();
                self.event_error(line, msg);
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
                    let _ = self.engine.report(p, o);
                }
            }
        }
        if let Some(plot) = &mut self.plot
            && plot.org == s.org
        {
            plot.push(t, &d.usage);
        }
    }

    /// Replays every line of `input`; `progress` is told the bytes read so far.
    ///
    /// Two threads: this one reads and parses (JSON is about a third of the work), and a
    /// second replays what was parsed, in batches of [`BATCH`] lines, in the trace's order, so
    /// the result is the same as replaying line by line. Sends cross as owned values (ids
    /// inline); other events, rare, cross as their text and are parsed where they are applied.
    pub fn run(
        &mut self,
        input: impl BufRead,
        mut progress: impl FnMut(u64),
    ) -> Result<(), ReplayError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Parsed>>(BATCHES_IN_FLIGHT);
        std::thread::scope(|scope| {
            let replayer = scope.spawn(move || -> Result<(), ReplayError> {
                for batch in rx {
                    for p in batch {
                        match p {
                            Parsed::Send { t, line, send } => {
                                self.apply_parsed(Line::of_send(t, send.as_send()), line)?
                            }
                            Parsed::Other { line, text } => self.apply_line(&text, line)?,
                            Parsed::Bad(e) => return Err(e),
                        }
                    }
                }
                Ok(())
            });
            let read = read_batches(input, &tx, &mut progress);
            drop(tx);
            let replayed = replayer
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            // A replay error comes first: it names the earlier line.
            replayed.and(read)
        })
    }

    /// The report so far, with totals and rates.
    pub fn report(&mut self) -> Report {
        let elapsed = self.started.elapsed().as_secs_f64();
        self.report.elapsed_s = elapsed;
        self.report.events_per_s = self.report.events as f64 / elapsed.max(1e-9);
        self.report.trace_hours =
            self.last_t
                .saturating_sub(self.first_t.unwrap_or(self.last_t)) as f64
                / 3_600_000.0;
        self.report.orgs = self
            .stats
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.report.finish();
        self.report.clone()
    }

    /// The samples collected for the plot.
    pub fn samples(&self) -> Option<&Samples> {
        self.plot.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracegen::{GenConfig, generate};

    fn week(sends: u64) -> String {
        let cfg = GenConfig {
            orgs: 20,
            sends,
            days: 7,
            ..GenConfig::default()
        };
        let mut out = Vec::new();
        generate(&cfg, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn by_line(trace: &str) -> (Report, Option<String>) {
        let mut sim = Simulator::new(Policy::default(), Vec::new(), None).unwrap();
        let mut err = None;
        for (i, text) in trace.lines().enumerate() {
            if text.trim().is_empty() {
                continue;
            }
            if let Err(e) = sim.apply_line(text.trim_end(), i as u64 + 1) {
                err = Some(e.to_string());
                break;
            }
        }
        (sim.report(), err)
    }

    fn piped(trace: &str) -> (Report, Option<String>) {
        let mut sim = Simulator::new(Policy::default(), Vec::new(), None).unwrap();
        let err = sim
            .run(trace.as_bytes(), |_| {})
            .err()
            .map(|e| e.to_string());
        (sim.report(), err)
    }

    /// The two-thread replay gives what replaying line by line gives, over many batches.
    #[test]
    fn the_pipeline_replays_as_line_by_line() {
        let trace = week(30_000);
        assert!(trace.lines().count() > 5 * BATCH);
        let (a, ea) = by_line(&trace);
        let (b, eb) = piped(&trace);
        assert_eq!((ea, eb), (None, None));
        assert_eq!(a.events, b.events);
        assert_eq!(a.orgs, b.orgs);
        assert_eq!(a.total.sends, 30_000);
    }

    /// A bad line stops both at that line, after everything before it was applied.
    #[test]
    fn a_bad_line_stops_the_pipeline_where_it_is() {
        let mut lines: Vec<&str> = Vec::new();
        let trace = week(12_000);
        lines.extend(trace.lines().take(2 * BATCH + 17));
        lines.push("{\"t\":1,\"nonsense\":true}");
        lines.extend(trace.lines().skip(2 * BATCH + 17));
        let bad = lines.join("\n");
        let (a, ea) = by_line(&bad);
        let (b, eb) = piped(&bad);
        let line = format!("line {}", 2 * BATCH + 18);
        assert!(ea.as_deref().is_some_and(|e| e.contains(&line)), "{ea:?}");
        assert_eq!(ea, eb);
        assert_eq!(a.events, (2 * BATCH + 17) as u64);
        assert_eq!((a.events, &a.orgs), (b.events, &b.orgs));
    }
}
