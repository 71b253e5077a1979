//! Criterion benches of campaign preflight (SPEC §2a), per recipient planned, on an org whose
//! 24 h window holds 100,000 recipients (issue #12's target: ≤ 2 µs per recipient). The copy
//! of the org a plan runs on is part of every iteration, as it is of every call.
//!
//! `cargo bench --bench plan`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tiergate::*;
use tiergate_testkit::engine_at_t0;

const WINDOW: u64 = 100_000;

fn path() -> EscalationPath {
    EscalationPath::new(EscalationKind::WebForm, "https://example.com/help").unwrap()
}

fn phone(i: u64) -> String {
    (4_915_100_000_000 + i).to_string()
}

/// An engine with org "big" at `tier` whose window holds [`WINDOW`] recipients (phones 0 to
/// 99,999), sent 1 ms apart from one number at 1,000 msg/s.
fn org_with_full_window(tier: Tier) -> Engine {
    let (engine, clock) = engine_at_t0(Policy::default());
    engine
        .put_org(
            OrgConfig::new("big", tier)
                .with_phone("1", 1_000)
                .with_escalation(path()),
        )
        .unwrap();
    for i in 0..WINDOW {
        clock.advance(1);
        let r = phone(i);
        let d = engine
            .decide(&SendRequest {
                org_id: "big",
                phone_number_id: "1",
                recipient: &r,
                recipient_user_id: None,
                template_name: "order_update",
                category: Category::Utility,
                idempotency_key: None,
            })
            .unwrap();
        assert!(d.is_allowed());
    }
    // Past the pair rate of the last sends, so that only the rules under test bind.
    clock.advance(10_000);
    engine
}

fn bench(c: &mut Criterion, name: &str, engine: &Engine, audience: Audience<'_>, n: u64) {
    let req = PlanRequest {
        org_id: "big",
        phone_number_id: "1",
        template_name: "spring_sale",
        category: Category::Marketing,
        audience,
    };
    let p = engine.plan(&req).unwrap();
    assert_eq!(p.planned(), n, "{name}: every recipient planned");
    let mut g = c.benchmark_group("plan");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(n));
    g.bench_function(name, |b| b.iter(|| black_box(engine.plan(&req).unwrap())));
    g.finish();
}

/// 100,000 listed recipients, half already in the window, on an unlimited org: the number's
/// 1,000 msg/s binds (a wave per millisecond).
fn list_100k(c: &mut Criterion) {
    let engine = org_with_full_window(Tier::Unlimited);
    let list: Vec<String> = (WINDOW / 2..WINDOW + WINDOW / 2).map(phone).collect();
    let refs: Vec<&str> = list.iter().map(String::as_str).collect();
    bench(
        c,
        "list_100k_on_100k_window",
        &engine,
        Audience::Recipients(&refs),
        WINDOW,
    );
}

/// 100,000 new recipients on a TIER_100K org whose window is full: every send waits for a
/// slot to free (the tier binds), so each recipient is decided twice.
fn audience_100k_full_tier(c: &mut Criterion) {
    let engine = org_with_full_window(Tier::Tier100K);
    bench(
        c,
        "audience_100k_on_full_100k_tier",
        &engine,
        Audience::NewRecipients(WINDOW),
        WINDOW,
    );
}

/// 1,000 listed recipients on the same org: the copy of a 100,000-recipient window dominates.
fn list_1k(c: &mut Criterion) {
    let engine = org_with_full_window(Tier::Unlimited);
    let list: Vec<String> = (WINDOW..WINDOW + 1_000).map(phone).collect();
    let refs: Vec<&str> = list.iter().map(String::as_str).collect();
    bench(
        c,
        "list_1k_on_100k_window",
        &engine,
        Audience::Recipients(&refs),
        1_000,
    );
}

criterion_group!(benches, list_100k, audience_100k_full_tier, list_1k);
criterion_main!(benches);
