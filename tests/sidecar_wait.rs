//! Waiting Acquire (SPEC §2a "Waiting") end to end on every store, on the real clock: callers
//! held until their send can go are answered at the number's rate and never faster; an
//! AUTHENTICATION caller goes before MARKETING callers that queued first; a caller that gives up
//! takes nothing; the queue is bounded; two Redis replicas serve one queue in one order.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;
use tiergate_core::{Change, Engine, Fact, Journal, Policy, SystemClock};
use tiergate_proto::v1 as pb;
use tonic::Code;

/// The number's rate is exact: no burst (`throughput_burst_percent = 0`), so no sliding second
/// holds more than the rate.
const EXACT: &[&str] = &["--set", "policy.throughput_burst_percent=0"];

fn org_at(org_id: &str, phone: &str, mps: u32) -> pb::Org {
    let mut o = org_on(org_id, pb::Tier::Tier1k, phone);
    o.phone_numbers[0].throughput_mps = mps;
    o
}

fn waiting(
    org_id: &str,
    phone: &str,
    recipient: u64,
    category: pb::Category,
    max_wait_ms: u64,
) -> pb::AcquireRequest {
    pb::AcquireRequest {
        org_id: org_id.into(),
        phone_number_id: phone.into(),
        template_name: "t".into(),
        category: category as i32,
        max_wait_ms,
        ..acquire(org_id, recipient)
    }
}

/// The permit's sequence number in its org: the order in which the org allowed its sends.
fn seq(r: &pb::AcquireResponse) -> u64 {
    let (_, n) = r.permit_id.split_once(':').expect("a permit");
    n.parse().unwrap()
}

/// The most events in any one-second window (half-open) of `times` (milliseconds, sorted).
fn busiest_second(times: &[u64]) -> usize {
    let mut best = 0;
    let mut j = 0;
    for i in 0..times.len() {
        while times[i] - times[j] >= 1_000 {
            j += 1;
        }
        best = best.max(i - j + 1);
    }
    best
}

/// A metric's value in `/metrics` (the first line that starts with `series`); a series that is
/// not there fails the test.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

/// Waits until the org's queue holds a number of waiters `ok` accepts.
async fn until_waiters(s: &Sidecar, org_id: &str, ok: impl Fn(usize) -> bool) {
    let series = format!("tiergate_org_waiters{{org=\"{org_id}\"}}");
    for _ in 0..1_000 {
        if ok(metric(&s.metrics().await, &series) as usize) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{org_id}'s waiters never got there");
}

async fn until_waiting(s: &Sidecar, org_id: &str, n: usize) {
    until_waiters(s, org_id, |w| w >= n).await;
}

async fn pause(s: &Sidecar, org_id: &str, for_ms: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    s.admin()
        .pause_template(s.req(pb::PauseTemplateRequest {
            org_id: org_id.into(),
            template_name: "t".into(),
            until_unix_ms: now + for_ms as i64,
        }))
        .await
        .unwrap();
}

/// 200 callers at once on a number of 20 msg/s, each waiting up to 15 s: every one is allowed,
/// in about 10 s, at the rate. Returns the client's receipt times (ms from the start).
async fn two_hundred_callers(s: &Sidecar, org_id: &str, phone: &str) -> Vec<u64> {
    s.put_org(org_at(org_id, phone, 20)).await;
    let start = Instant::now();
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for r in 0..200u64 {
        let mut g = s.governor();
        let req = waiting(org_id, phone, 10_000 + r, pb::Category::Marketing, 15_000);
        let got = got.clone();
        tasks.push(tokio::spawn(async move {
            let resp = g.acquire(req).await.unwrap().into_inner();
            got.lock()
                .unwrap()
                .push((start.elapsed().as_millis() as u64, resp));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut got = std::mem::take(&mut *got.lock().unwrap());
    got.sort_by_key(|(t, _)| *t);
    for (_, r) in &got {
        assert!(allowed(r), "{r:?}");
    }
    let times: Vec<u64> = got.iter().map(|(t, _)| *t).collect();
    let last = *times.last().unwrap();
    let rate = 199.0 / ((last - times[0]) as f64 / 1_000.0);
    // From the second on: the first gap also holds the 200 arrivals' own tries.
    let steady = 198.0 / ((last - times[1]) as f64 / 1_000.0);
    eprintln!(
        "200 waiting callers at 20 msg/s: last allowed after {last} ms; achieved {rate:.2} msg/s \
         ({steady:.2} from the second on); busiest second seen by the client: {}",
        busiest_second(&times)
    );
    assert!(
        last < 15_000,
        "every caller is allowed within its wait ({last} ms)"
    );
    // Never faster than the rate: 199 intervals of 50 ms between the first and the last (less
    // a little for the transport: the first answer may have reached us later than the last).
    assert!(
        last - times[0] >= 199 * 50 - 50,
        "200 sends in {} ms: faster than 20/s",
        last - times[0]
    );
    // Exactly 200 sends counted, each once.
    let o = s.get_org(org_id).await;
    assert_eq!(o.usage.unwrap().templates_7d, 200);
    // One try when a slot opens and one when the line moves, per send: not a timer per waiter.
    let m = s.metrics().await;
    let tries = metric(&m, "tiergate_wait_tries_total");
    let waits = metric(&m, "tiergate_waits_total{result=\"allow\"}");
    eprintln!("{tries} tries for {waits} waits");
    assert_eq!(waits, 200.0);
    assert!(tries <= 3.0 * 200.0 + 20.0, "{tries} tries for 200 waits");
    assert_eq!(
        metric(&m, &format!("tiergate_org_waiters{{org=\"{org_id}\"}}")),
        0.0
    );
    times
}

every_backend! {
async fn two_hundred_waiting_callers_go_at_the_numbers_rate() {
    let s = start!(EXACT);
    // Receipt times carry the transport's jitter (and a stalled client bunches answers), so
    // the check per second is on the times the embedded store recorded
    // (`embedded_sends_recorded_at_the_rate`); here the whole run may not beat the rate.
    two_hundred_callers(&s, "line", "301").await;
}

async fn authentication_goes_before_fifty_waiting_marketing_callers() {
    let s = start!(EXACT);
    s.put_org(org_at("prio", "302", 100)).await;
    // Nothing can go for a while: everyone queues, then the pause ends.
    pause(&s, "prio", 4_000).await;
    let mut tasks = Vec::new();
    for r in 0..50u64 {
        let mut g = s.governor();
        let req = waiting("prio", "302", 20_000 + r, pb::Category::Marketing, 15_000);
        tasks.push(tokio::spawn(async move { g.acquire(req).await.unwrap().into_inner() }));
    }
    until_waiting(&s, "prio", 50).await;
    let mut g = s.governor();
    let auth = waiting("prio", "302", 29_999, pb::Category::Authentication, 15_000);
    let auth = tokio::spawn(async move { g.acquire(auth).await.unwrap().into_inner() });
    let auth = auth.await.unwrap();
    assert!(allowed(&auth), "{auth:?}");
    let mut marketing = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert!(allowed(&r), "{r:?}");
        marketing.push(seq(&r));
    }
    let first_marketing = *marketing.iter().min().unwrap();
    assert!(
        seq(&auth) < first_marketing,
        "authentication was allowed as #{}, after marketing #{first_marketing}",
        seq(&auth)
    );
}

async fn a_caller_that_gives_up_takes_nothing() {
    let s = start!(EXACT);
    s.put_org(org_at("quit", "303", 1)).await;
    assert!(allowed(&s.acquire_req(waiting("quit", "303", 1, pb::Category::Utility, 0)).await));
    let facts = |m: &str| (BACKEND == Backend::Embedded).then(|| metric(m, "tiergate_store_facts_total"));
    let facts_before = facts(&s.metrics().await);
    // A deadline shorter than the slot's wait: the client gives up (DEADLINE_EXCEEDED).
    let mut req = tonic::Request::new(waiting("quit", "303", 2, pb::Category::Utility, 10_000));
    req.set_timeout(Duration::from_millis(300));
    let e = s.governor().acquire(req).await.unwrap_err();
    assert!(matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled), "{e:?}");
    // A caller that disconnects: its call is dropped mid-wait (once the first has left).
    until_waiters(&s, "quit", |w| w == 0).await;
    let mut g = s.governor();
    let gone = tokio::spawn(async move {
        g.acquire(waiting("quit", "303", 3, pb::Category::Utility, 10_000)).await
    });
    until_waiting(&s, "quit", 1).await;
    gone.abort();
    // Past the slot either would have taken.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let m = s.metrics().await;
    assert_eq!(metric(&m, "tiergate_org_waiters{org=\"quit\"}"), 0.0);
    assert_eq!(metric(&m, "tiergate_waits_total{result=\"gone\"}"), 2.0);
    let o = s.get_org("quit").await.usage.unwrap();
    assert_eq!(o.templates_7d, 1, "no count");
    assert_eq!(o.unique_recipients_24h, 1, "no slot");
    assert_eq!(facts(&m), facts_before, "no fact");
    // The line is free: the next caller gets the next slot.
    let r = s.acquire_req(waiting("quit", "303", 4, pb::Category::Utility, 5_000)).await;
    assert!(allowed(&r), "{r:?}");
}

async fn a_wait_that_cannot_suffice_and_a_full_queue_answer_at_once() {
    let s = start!(&["--set", "policy.throughput_burst_percent=0", "--set", "server.max_waiters_per_org=2"]);
    s.put_org(org_at("full", "304", 100)).await;
    // The template is paused for 10 s: everyone who waits, waits.
    pause(&s, "full", 10_000).await;
    // 500 ms of patience for a 10 s pause: the denial at once, with its retry-after.
    let r = s.acquire_req(waiting("full", "304", 2, pb::Category::Utility, 500)).await;
    assert_eq!(reason(&r), pb::DenyReason::TemplatePaused, "{r:?}");
    assert!(r.retry_after_ms > 5_000, "{r:?}");
    // Two wait; the third is answered at once while they still wait.
    let mut tasks = Vec::new();
    for rcpt in [3, 4] {
        let mut g = s.governor();
        let req = waiting("full", "304", rcpt, pb::Category::Utility, 15_000);
        tasks.push(tokio::spawn(async move { g.acquire(req).await.unwrap().into_inner() }));
    }
    until_waiting(&s, "full", 2).await;
    let r = s.acquire_req(waiting("full", "304", 5, pb::Category::Utility, 15_000)).await;
    assert_eq!(reason(&r), pb::DenyReason::TemplatePaused, "{r:?}");
    assert_eq!(metric(&s.metrics().await, "tiergate_org_waiters{org=\"full\"}"), 2.0);
    // The pause lifted early: the waiters hear it and go.
    s.admin()
        .reinstate_template(s.req(pb::ReinstateTemplateRequest {
            org_id: "full".into(),
            template_name: "t".into(),
        }))
        .await
        .unwrap();
    for t in tasks {
        assert!(allowed(&t.await.unwrap()));
    }
    // A batch answers at once: a wait in it is refused, naming the item.
    let e = s
        .governor()
        .acquire_batch(pb::AcquireBatchRequest {
            sends: vec![
                waiting("full", "304", 6, pb::Category::Utility, 0),
                waiting("full", "304", 7, pb::Category::Utility, 100),
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("sends[1].max_wait_ms"), "{}", e.message());
}
}

/// Records the time of every send the store replays.
#[derive(Default)]
struct SendTimes(Mutex<Vec<u64>>);

impl Journal for SendTimes {
    fn record(&self, fact: Fact) {
        if let Change::Send { .. } = fact.change {
            self.0.lock().unwrap().push(fact.at);
        }
    }
}

/// The exact check: the embedded store records each send at the time the engine allowed it.
/// Replayed after the run, those times hold no second with more than 20.
#[tokio::test]
async fn embedded_sends_recorded_at_the_rate() {
    let dir = std::env::temp_dir().join(format!("tiergate-wait-rate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_string_lossy().into_owned();
    let mut args = vec!["--store", "embedded", "--data-dir", &d];
    args.extend_from_slice(EXACT);
    let s = Sidecar::start(&args).await;
    two_hundred_callers(&s, "exact", "305").await;
    assert!(s.terminate().await.success());
    let store = tiergate_store::EmbeddedStore::open(&dir).unwrap();
    let engine = Engine::new(Policy::default(), Arc::new(SystemClock)).unwrap();
    let times = Arc::new(SendTimes::default());
    engine.set_journal(times.clone());
    store.replay(&engine).unwrap();
    store.close();
    let mut t = times.0.lock().unwrap().clone();
    t.sort_unstable();
    assert_eq!(t.len(), 200);
    let span = t[199] - t[0];
    eprintln!(
        "recorded: 200 sends over {span} ms ({:.3} msg/s), busiest second {}",
        199_000.0 / span as f64,
        busiest_second(&t)
    );
    assert!(busiest_second(&t) <= 20, "{}", busiest_second(&t));
    assert!(span >= 199 * 50, "{span} ms: faster than 20/s");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two replicas, one queue: waiters on both, behind a pause, are served AUTHENTICATION, then
/// UTILITY, then MARKETING, whichever replica holds them. The order lives in the org's log:
/// each try is an entry, and every replica applies the entries in one order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_two_replicas_serve_one_queue_in_priority_order() {
    let Some(redis) = RedisServer::start("wait-replicas") else {
        return;
    };
    let url = redis.url();
    let mut args = vec!["--store", "redis", "--redis-url", &url];
    args.extend_from_slice(EXACT);
    let a = Arc::new(Sidecar::start(&args).await);
    let b = Arc::new(Sidecar::start(&args).await);
    a.put_org(org_at("two", "306", 50)).await;
    pause(&a, "two", 5_000).await;
    let mut marketing = Vec::new();
    for r in 0..40u64 {
        let s = if r % 2 == 0 { a.clone() } else { b.clone() };
        let req = waiting("two", "306", 40_000 + r, pb::Category::Marketing, 20_000);
        marketing.push(tokio::spawn(async move {
            s.governor().acquire(req).await.unwrap().into_inner()
        }));
    }
    until_waiting(&a, "two", 20).await;
    until_waiting(&b, "two", 20).await;
    let utility = {
        let a = a.clone();
        let req = waiting("two", "306", 49_000, pb::Category::Utility, 20_000);
        tokio::spawn(async move { a.governor().acquire(req).await.unwrap().into_inner() })
    };
    let auth = {
        let b = b.clone();
        let req = waiting("two", "306", 49_001, pb::Category::Authentication, 20_000);
        tokio::spawn(async move { b.governor().acquire(req).await.unwrap().into_inner() })
    };
    let auth = auth.await.unwrap();
    let utility = utility.await.unwrap();
    assert!(allowed(&auth) && allowed(&utility), "{auth:?} {utility:?}");
    let mut m = Vec::new();
    for t in marketing {
        let r = t.await.unwrap();
        assert!(allowed(&r), "{r:?}");
        m.push(seq(&r));
    }
    let first_marketing = *m.iter().min().unwrap();
    assert!(
        seq(&auth) < seq(&utility) && seq(&utility) < first_marketing,
        "auth #{}, utility #{}, first marketing #{first_marketing}",
        seq(&auth),
        seq(&utility)
    );
    assert_eq!(a.get_org("two").await.usage.unwrap().templates_7d, 42);
}
