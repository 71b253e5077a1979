//! Replaying a trace through the engine: parsed on one thread; each org's sends replayed in
//! order, at their own times, on one of several threads that share the orgs out; every other
//! event applied on a manual clock while those threads are idle.

use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tiergate_core::{AppealId, Command, Engine, ManualClock, OrgConfig, Policy};
use tiergate_webhook::{Plan, Summary, parse, plan};

use crate::plot::Samples;
use crate::report::Report;
use crate::send_side::{Errors, SendSide, shard_of};
use crate::trace::{Line, OwnedSend};

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
    /// What sends touch (counts, errors, the plot), in one part per replaying thread of the
    /// last [`Simulator::run`] (one before); see `send_side.rs`.
    sides: Arc<Vec<Mutex<SendSide>>>,
    /// Errors of events other than sends.
    errors: Errors,
    first_t: Option<u64>,
    last_t: u64,
    started: Instant,
    /// Orgs from the config, registered at the trace's first time.
    pending: Vec<OrgConfig>,
}

/// Sends handed from the parsing thread to a replaying one at a time.
const BATCH: usize = 4_096;
/// Batches parsed ahead of each replaying thread (memory: a few MB of sends per thread).
const BATCHES_IN_FLIGHT: usize = 4;
/// Replaying threads at most.
const MAX_SHARDS: usize = 8;

/// A send as the parsing thread hands it on.
struct SendItem {
    t: u64,
    line: u64,
    send: OwnedSend,
}

/// What a replaying thread is handed.
enum ShardMsg {
    /// Sends of its orgs, in the trace's order.
    Sends(Vec<SendItem>),
    /// Answer once everything handed before is applied.
    Sync(std::sync::mpsc::Sender<()>),
}

fn lock(side: &Mutex<SendSide>) -> std::sync::MutexGuard<'_, SendSide> {
    // A replaying thread that panicked stops the read (its channel is closed) and its panic is
    // resumed by the scope; what its part holds by then is never reported.
    side.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Parses one line of the trace into exactly one event.
fn parse_line(text: &str, line: u64) -> Result<Line<'_>, ReplayError> {
    if let Some((t, send)) = crate::send_line::send_line(text) {
        return Ok(Line::of_send(t, send));
    }
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
        let side = SendSide {
            plot: plot_org.map(Samples::new),
            ..SendSide::default()
        };
        let mut sim = Self {
            engine,
            clock,
            report: Report::default(),
            sides: Arc::new(vec![Mutex::new(side)]),
            errors: Errors::default(),
            first_t: None,
            last_t: 0,
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
        let k = shard_of(&id, self.sides.len());
        lock(&self.sides[k]).stats.entry(id).or_default();
        Ok(())
    }

    /// Applies one line of the trace (`line` is its 1-based number, for errors).
    pub fn apply_line(&mut self, text: &str, line: u64) -> Result<(), ReplayError> {
        let l = parse_line(text, line)?;
        if let Some(s) = &l.send {
            self.begin(l.t, line)?;
            let k = shard_of(s.org, self.sides.len());
            lock(&self.sides[k]).send(&self.engine, s, l.t, line);
            return Ok(());
        }
        self.apply_other(l, line)
    }

    /// What every event does first: time must not go backwards; the first one registers the
    /// config's orgs; every one is counted.
    fn begin(&mut self, t: u64, line: u64) -> Result<(), ReplayError> {
        if t < self.last_t {
            return Err(ReplayError::Line {
                line,
                message: format!("time goes backwards ({t} < {})", self.last_t),
            });
        }
        self.last_t = t;
        self.clock.advance_to(t);
        if self.first_t.is_none() {
            self.first_t = Some(t);
            for o in std::mem::take(&mut self.pending) {
                self.register(o, line)?;
            }
        }
        self.report.events += 1;
        Ok(())
    }

    /// Applies a parsed line other than a send, on the engine's clock set to its time. The
    /// replaying threads must be idle: it may register an org in their parts.
    fn apply_other(&mut self, l: Line<'_>, line: u64) -> Result<(), ReplayError> {
        self.begin(l.t, line)?;
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
            self.errors.push(line, e);
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

    /// Replays every line of `input`; `progress` is told the bytes read so far.
    ///
    /// This thread reads and parses; the sends go, in batches of [`BATCH`], to replaying
    /// threads (twice the cores, at most [`MAX_SHARDS`]), each owning a share of the orgs
    /// (`send_side::shard_of`) and deciding each send at its own time, so every org's events
    /// are applied in the trace's order as a line-by-line replay applies them. Orgs do not
    /// share state in the engine, so the result is the same. Any other event (an org, a
    /// rating, a webhook, …; rare) waits until the replaying threads applied everything
    /// before it, and is applied here.
    pub fn run(
        &mut self,
        input: impl BufRead,
        progress: impl FnMut(u64),
    ) -> Result<(), ReplayError> {
        // Twice the cores: orgs differ in traffic, and with more, smaller shares the busiest
        // thread holds less of the work (measured on 2 cores: 1.36–1.47 M events/s with two,
        // 1.75–2.07 M with four).
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        self.run_on(2 * cores, input, progress)
    }

    /// [`Simulator::run`] with `threads` replaying threads (1 to [`MAX_SHARDS`]).
    pub fn run_on(
        &mut self,
        threads: usize,
        input: impl BufRead,
        mut progress: impl FnMut(u64),
    ) -> Result<(), ReplayError> {
        let n = threads.clamp(1, MAX_SHARDS);
        let parts = Arc::get_mut(&mut self.sides)
            .map(std::mem::take)
            .expect("no replaying thread outlives `run`");
        let one = SendSide::join(
            parts
                .into_iter()
                .map(|m| {
                    m.into_inner()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                })
                .collect(),
        );
        self.sides = Arc::new(one.split(n).into_iter().map(Mutex::new).collect());
        let engine = self.engine.clone();
        std::thread::scope(|scope| {
            let mut txs = Vec::with_capacity(n);
            let mut threads = Vec::with_capacity(n);
            for k in 0..n {
                let (tx, rx) = std::sync::mpsc::sync_channel::<ShardMsg>(BATCHES_IN_FLIGHT);
                let (engine, sides) = (&engine, self.sides.clone());
                threads.push(scope.spawn(move || {
                    for msg in rx {
                        match msg {
                            ShardMsg::Sends(items) => {
                                let mut side = lock(&sides[k]);
                                // By reference: moving each send out of the batch was 4 % of
                                // a replay (`memmove`).
                                for it in &items {
                                    side.send(engine, &it.send.as_send(), it.t, it.line);
                                }
                            }
                            ShardMsg::Sync(done) => {
                                let _ = done.send(());
                            }
                        }
                    }
                }));
                txs.push(tx);
            }
            let read = self.read_and_dispatch(input, &txs, &mut progress);
            drop(txs);
            for t in threads {
                t.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            }
            read
        })
    }

    /// The parsing side of [`Simulator::run`]: reads `input`, hands each send to its org's
    /// replaying thread, and applies every other event once they are idle. Returns at the end
    /// of the input or at the first bad line, with everything before it handed on.
    fn read_and_dispatch(
        &mut self,
        mut input: impl BufRead,
        txs: &[std::sync::mpsc::SyncSender<ShardMsg>],
        progress: &mut impl FnMut(u64),
    ) -> Result<(), ReplayError> {
        let n = txs.len();
        let mut batches: Vec<Vec<SendItem>> = (0..n).map(|_| Vec::with_capacity(BATCH)).collect();
        // Hands every batch on. `false`: a replaying thread is gone, which only a panic does;
        // the read stops at once and the scope resumes the panic.
        let flush = |batches: &mut Vec<Vec<SendItem>>| -> bool {
            batches.iter_mut().zip(txs).all(|(b, tx)| {
                b.is_empty()
                    || tx
                        .send(ShardMsg::Sends(std::mem::replace(
                            b,
                            Vec::with_capacity(BATCH),
                        )))
                        .is_ok()
            })
        };
        let idle = |batches: &mut Vec<Vec<SendItem>>| -> bool {
            if !flush(batches) {
                return false;
            }
            let (done, wait) = std::sync::mpsc::channel();
            for tx in txs {
                if tx.send(ShardMsg::Sync(done.clone())).is_err() {
                    return false;
                }
            }
            drop(done);
            (0..txs.len()).all(|_| wait.recv().is_ok())
        };
        let mut buf = String::new();
        let mut line = 0u64;
        let mut read = 0u64;
        let mut since_progress = 0usize;
        // Whether a send was handed on since the replaying threads were last idle: a run of
        // other events (the orgs at the start, a burst of webhooks) waits for them once.
        let mut busy = false;
        // Ends at the end of the input or at the first bad line; either way what was read
        // before is handed on below, as a line-by-line replay would have applied it.
        let outcome = loop {
            buf.clear();
            let got = match input.read_line(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(got) => got,
                Err(e) => break Err(e.into()),
            };
            line += 1;
            read += got as u64;
            let text = buf.trim_end();
            if text.is_empty() {
                continue;
            }
            let parsed = match parse_line(text, line) {
                Ok(l) => l,
                Err(e) => break Err(e),
            };
            match parsed.send {
                Some(s) => {
                    if let Err(e) = self.begin(parsed.t, line) {
                        break Err(e);
                    }
                    let k = shard_of(s.org, n);
                    busy = true;
                    batches[k].push(SendItem {
                        t: parsed.t,
                        line,
                        send: OwnedSend::from(&s),
                    });
                    if batches[k].len() == BATCH {
                        let full = std::mem::replace(&mut batches[k], Vec::with_capacity(BATCH));
                        if txs[k].send(ShardMsg::Sends(full)).is_err() {
                            return Ok(()); // a replaying thread panicked: see `flush`
                        }
                    }
                }
                None => {
                    // Every other event waits for the replaying threads: it may register an
                    // org (in their parts) or resolve ids of any org. A trace with many such
                    // lines between sends (webhooks, say) pays a wait for each such run.
                    if busy && !idle(&mut batches) {
                        return Ok(()); // a replaying thread panicked: see `flush`
                    }
                    busy = false;
                    if let Err(e) = self.apply_other(parsed, line) {
                        break Err(e);
                    }
                }
            }
            since_progress += 1;
            if since_progress == BATCH {
                since_progress = 0;
                progress(read);
            }
        };
        flush(&mut batches);
        progress(read);
        outcome
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
        let mut errors = Errors::default();
        errors.merge(&self.errors);
        let mut orgs = Vec::new();
        for side in self.sides.iter() {
            let side = lock(side);
            errors.merge(&side.errors);
            orgs.extend(side.stats.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        self.report.event_errors = errors.count;
        self.report.first_errors = errors
            .first
            .into_iter()
            .map(|(line, msg)| format!("line {line}: {msg}"))
            .collect();
        self.report.orgs = orgs.into_iter().collect();
        self.report.finish();
        self.report.clone()
    }

    /// The samples collected for the plot.
    pub fn samples(&self) -> Option<Samples> {
        self.sides.iter().find_map(|m| lock(m).plot.clone())
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

    /// The trace through [`Simulator::run_on`] with `threads` replaying threads.
    fn piped_on(threads: usize, trace: &str) -> (Report, Option<String>) {
        let mut sim = Simulator::new(Policy::default(), Vec::new(), None).unwrap();
        let err = sim
            .run_on(threads, trace.as_bytes(), |_| {})
            .err()
            .map(|e| e.to_string());
        (sim.report(), err)
    }

    fn piped(trace: &str) -> (Report, Option<String>) {
        piped_on(3, trace)
    }

    /// The pipelined replay gives what replaying line by line gives, over many batches.
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

    /// Orgs split over several replaying threads, with events other than sends between their
    /// sends and errors in many places: the report is the line-by-line one, errors in line
    /// order included, whatever the number of threads.
    #[test]
    fn any_number_of_threads_replays_as_line_by_line() {
        let trace = week(20_000);
        let mut lines: Vec<String> = Vec::new();
        for (i, l) in trace.lines().enumerate() {
            lines.push(l.to_owned());
            if i > 100 && i % 997 == 0 {
                let t: u64 = l[5..l.find(',').unwrap()].parse().unwrap();
                // An unknown org (an error on whichever thread it hashes to), a rating and a
                // tier request for known orgs, between the sends.
                lines.push(format!(
                    r#"{{"t":{t},"send":{{"org":"nobody-{i}","phone":"1","to":"2"}}}}"#
                ));
                lines.push(format!(
                    r#"{{"t":{t},"rating":{{"org":"org-{}","rating":"RED"}}}}"#,
                    i % 20
                ));
                lines.push(format!(
                    r#"{{"t":{t},"tier":{{"org":"org-{}","tier":"TIER_250"}}}}"#,
                    (i + 7) % 20
                ));
            }
        }
        // An org registered half way: its sends before are errors, after are decided.
        let half = lines.len() / 2;
        let t_half: u64 = {
            let l = &lines[half];
            l[5..l.find(',').unwrap()].parse().unwrap()
        };
        let late_send = |i: usize| {
            format!(r#"{{"t":{t_half},"send":{{"org":"late","phone":"9","to":"4915{i:09}"}}}}"#)
        };
        let mut late: Vec<String> = (0..5).map(late_send).collect();
        late.push(format!(
            r#"{{"t":{t_half},"org":{{"org_id":"late","tier":"TIER_250","has_template_history":true,"phone_numbers":[{{"phone_number_id":"9","throughput_mps":80}}],"escalation_path":{{"kind":"EMAIL","contact":"help@example.com"}}}}}}"#
        ));
        late.extend((5..300).map(late_send));
        lines.splice(half..half, late);
        let trace = lines.join("\n");
        let run = |threads: Option<usize>| {
            let mut sim =
                Simulator::new(Policy::default(), Vec::new(), Some("org-3".into())).unwrap();
            let err = match threads {
                None => trace
                    .lines()
                    .enumerate()
                    .try_for_each(|(i, l)| sim.apply_line(l, i as u64 + 1)),
                Some(n) => sim.run_on(n, trace.as_bytes(), |_| {}),
            };
            assert!(err.is_ok(), "{err:?}");
            let samples = format!("{:?}", sim.samples());
            (sim.report(), samples)
        };
        let (a, samples) = run(None);
        assert!(a.event_errors > 10, "{}", a.event_errors);
        assert!(
            a.orgs.get("late").is_some_and(|o| o.allowed > 0),
            "{:?}",
            a.orgs.get("late")
        );
        assert!(samples.len() > 100, "{samples}");
        for threads in [1, 2, 3, 5] {
            let (b, b_samples) = run(Some(threads));
            assert_eq!(
                (a.events, a.event_errors, &a.first_errors, &a.orgs, &a.total),
                (b.events, b.event_errors, &b.first_errors, &b.orgs, &b.total),
                "{threads} threads"
            );
            assert_eq!(a.trace_hours, b.trace_hours);
            assert_eq!(samples, b_samples, "{threads} threads");
        }
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
