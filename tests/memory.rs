//! Bytes the engine holds per recipient in a 24 h window (SPEC §6: ≤ 48), counted by an
//! instrumented global allocator. The whole engine's growth is counted (window, index, send log,
//! pair-rate state, permits), not just the window structure. Alone in its test binary so
//! that no other test's allocations are counted.

use std::alloc::System;
use std::sync::Arc;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tiergate::*;
use tiergate_testkit::{T0, email};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn bytes_per_windowed_recipient() {
    let clock = Arc::new(ManualClock::new(T0));
    let policy = Policy {
        // Permits are reported within seconds in practice; keep the ledger from dominating.
        permit_ttl_ms: 60_000,
        ..Policy::default()
    };
    let engine = Engine::new(policy, clock.clone()).unwrap();
    engine
        .put_org(
            OrgConfig::new("m", Tier::Tier100K)
                .with_phone("1", 1_000)
                .with_escalation(email()),
        )
        .unwrap();
    let names: Vec<String> = (0..100_000u64)
        .map(|i| (4_915_100_000_000 + i).to_string())
        .collect();
    let region = Region::new(GLOBAL);
    for r in &names {
        clock.advance(10);
        let d = engine
            .decide(&SendRequest {
                org_id: "m",
                phone_number_id: "1",
                recipient: r,
                recipient_user_id: None,
                template_name: "t",
                category: Category::Utility,
                idempotency_key: None,
            })
            .unwrap();
        assert!(d.is_allowed());
    }
    let stats = region.change();
    // stats_alloc already books a realloc's growth in bytes_allocated.
    let held = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64;
    let per = held as f64 / 100_000.0;
    println!("engine holds {held} bytes for 100,000 windowed recipients: {per:.1} bytes each");
    assert_eq!(
        engine.get_org("m").unwrap().usage.unique_recipients_24h,
        100_000
    );
    assert!(per <= 48.0, "{per:.1} bytes per recipient");
}
