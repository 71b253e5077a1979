//! Instructions per decision, counted rather than timed, for the single-threaded cases of
//! `benches/decide.rs`:
//!
//! - `repeat`: a TIER_100K org holding 100,000 recipients, each send to one of them;
//! - `new`: every send to a new recipient, 60 s window (steady state: each send expires one);
//! - `passthrough`: a RED org past its grace sending under 1,000 a (scaled, 1 s) week;
//! - `busy`: an unlimited org sending every 4 minutes for weeks (its weekly log full, the
//!   total from hourly buckets);
//! - `cold`: 10,000 orgs in rotation, every decision on a cold org (issue #16), which is also
//!   the one to profile with `perf record` for where the cache misses are. `ORGS=1000` runs
//!   it on fewer orgs (whose state then fits in the L3 cache: how much of a cold decision is
//!   the memory it misses).
//!
//! The policy is the bench's (`Policy::default()` plus the scenario's override); a third
//! argument `au` forces `auto_upgrade: true` (the default before it became opt-in).
//!
//! Shared machines make nanoseconds noisy; instruction counts nearly repeat (hash seeds vary
//! per process, so take the median of a few runs). Count only the measured loop:
//!
//! ```sh
//! cargo build --release --example decide_icount -p tiergate-core
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg --toggle-collect='*measured*' \
//!   target/release/examples/decide_icount repeat 100000 2>&1 | grep Collected
//! # Collected / 100,000 = instructions per decision (repeat | new | passthrough)
//! ```
use std::sync::Arc;
use tiergate_core::*;

const MAX: usize = 100_000_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap();
    let n: usize = args.next().unwrap().parse().unwrap();
    assert!(n <= MAX);
    let au = args.next().as_deref() == Some("au");
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let mut policy = Policy::default();
    if au {
        policy.auto_upgrade = true;
    }
    let path = EscalationPath::new(EscalationKind::WebForm, "https://example.com/help").unwrap();
    let allowed = match scenario.as_str() {
        "repeat" => {
            let engine = Engine::new(policy, clock.clone()).unwrap();
            engine
                .put_org(
                    OrgConfig::new("big", Tier::Tier100K)
                        .with_phone("1", 1_000)
                        .with_escalation(path),
                )
                .unwrap();
            let rs = recipients(0, 100_000);
            for r in &rs {
                clock.advance(1);
                assert!(engine.decide(&send("big", r)).unwrap().is_allowed());
            }
            measured(n, &mut |i| {
                clock.advance(1);
                engine
                    .decide(&send("big", &rs[i % rs.len()]))
                    .unwrap()
                    .is_allowed()
            })
        }
        "new" => {
            policy.tier_window_ms = 60_000;
            let engine = Engine::new(policy, clock.clone()).unwrap();
            engine
                .put_org(
                    OrgConfig::new("grow", Tier::Tier100K)
                        .with_phone("1", 1_000)
                        .with_escalation(path),
                )
                .unwrap();
            // The same strings in both runs, so that making them cancels out.
            let warm = 70_000;
            assert!(n <= 100_000);
            let rs = recipients(0, (warm + n) as u64);
            for r in &rs[..warm] {
                clock.advance(1);
                assert!(engine.decide(&send("grow", r)).unwrap().is_allowed());
            }
            measured(n, &mut |i| {
                clock.advance(1);
                engine
                    .decide(&send("grow", &rs[warm + i]))
                    .unwrap()
                    .is_allowed()
            })
        }
        "passthrough" => {
            policy.weekly_window_ms = 1_000;
            let engine = Engine::new(policy, clock.clone()).unwrap();
            let mut cfg = OrgConfig::new("small", Tier::Tier10K)
                .with_phone("1", 1_000)
                .with_escalation(path);
            cfg.quality_rating = QualityRating::Red;
            engine.put_org(cfg).unwrap();
            clock.advance(8 * 86_400_000);
            let rs = recipients(0, 5_000);
            let mut i = 0;
            for _ in 0..10_000 {
                clock.advance(2);
                i = (i + 1) % rs.len();
                assert!(engine.decide(&send("small", &rs[i])).unwrap().is_allowed());
            }
            measured(n, &mut |_| {
                clock.advance(2);
                i = (i + 1) % rs.len();
                let d = engine.decide(&send("small", &rs[i])).unwrap();
                d.is_allowed() && d.usage.passthrough
            })
        }
        "busy" => {
            // A busy sender's week: an unlimited org sending every 4 minutes, so its weekly log
            // is full (it keeps 2,024 times) and the total comes from ~170 hourly buckets.
            let engine = Engine::new(policy, clock.clone()).unwrap();
            engine
                .put_org(
                    OrgConfig::new("busy", Tier::Unlimited)
                        .with_phone("1", 1_000)
                        .with_escalation(path),
                )
                .unwrap();
            let rs = recipients(0, 3_000);
            for i in 0..2_100 {
                clock.advance(240_000);
                assert!(
                    engine
                        .decide(&send("busy", &rs[i % 3_000]))
                        .unwrap()
                        .is_allowed()
                );
            }
            measured(n, &mut |i| {
                clock.advance(240_000);
                engine
                    .decide(&send("busy", &rs[(2_100 + i) % 3_000]))
                    .unwrap()
                    .is_allowed()
            })
        }
        "cold" => {
            // benches/decide.rs's cold path: 10,000 orgs at TIER_10K, each its own number,
            // 64 recipients revisited, every decision on another org. Time moves 1 ms per
            // 1,000 decisions (the bench's system clock moves about that fast).
            policy.pair_rate_period_ms = 10;
            let engine = Engine::new(policy, clock.clone()).unwrap();
            let norgs: usize =
                std::env::var("ORGS").map_or(10_000, |v| v.parse::<usize>().unwrap().max(1));
            let orgs: Vec<String> = (0..norgs).map(|i| format!("cold{i}")).collect();
            let phones: Vec<String> = (0..norgs).map(|i| (2_000_000 + i).to_string()).collect();
            for (o, p) in orgs.iter().zip(&phones) {
                engine
                    .put_org(
                        OrgConfig::new(o.as_str(), Tier::Tier10K)
                            .with_phone(p, 1_000)
                            .with_escalation(path.clone()),
                    )
                    .unwrap();
            }
            let rs = recipients(0, 64);
            let one = |i: usize| {
                if i % 1_000 == 0 {
                    clock.advance(1);
                }
                let o = i % norgs;
                let r = &rs[(i / norgs) % 64];
                let mut req = send(&orgs[o], r);
                req.phone_number_id = &phones[o];
                engine.decide(&req).unwrap().is_allowed()
            };
            // Every org holds its 64 recipients before the count starts.
            for i in 0..64 * norgs {
                assert!(one(i));
            }
            measured(n, &mut |i| one(64 * norgs + i))
        }
        s => panic!("unknown scenario {s}"),
    };
    assert_eq!(allowed, n);
}

/// The decisions counted: run callgrind with `--toggle-collect='*measured*'` to count only
/// these, setup excluded.
#[inline(never)]
fn measured(n: usize, decide: &mut dyn FnMut(usize) -> bool) -> usize {
    (0..n).filter(|&i| decide(i)).count()
}

fn recipients(from: u64, to: u64) -> Vec<String> {
    (from..to)
        .map(|i| (4_915_100_000_000 + i).to_string())
        .collect()
}

fn send<'a>(org: &'a str, r: &'a str) -> SendRequest<'a> {
    SendRequest {
        org_id: org,
        phone_number_id: "1",
        recipient: r,
        recipient_user_id: None,
        template_name: "order_update",
        category: Category::Utility,
        idempotency_key: None,
    }
}
