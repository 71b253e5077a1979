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

/// Bytes the engine grows by while 100,000 recipients enter one org's window, each named by
/// `ids(i)`: a phone, and maybe a BSUID.
fn bytes_per_recipient(ids: impl Fn(u64) -> (String, Option<String>)) -> f64 {
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
    let names: Vec<(String, Option<String>)> = (0..100_000u64).map(ids).collect();
    let region = Region::new(GLOBAL);
    for (r, u) in &names {
        clock.advance(10);
        let d = engine
            .decide(&SendRequest {
                org_id: "m",
                phone_number_id: "1",
                recipient: r,
                recipient_user_id: u.as_deref(),
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
    assert_eq!(
        engine.get_org("m").unwrap().usage.unique_recipients_24h,
        100_000
    );
    held as f64 / 100_000.0
}

/// One test, so the two measurements run one after the other (tests in one binary run in
/// parallel, and the allocator's counts are global).
#[test]
fn bytes_per_windowed_recipient() {
    let phone = |i: u64| (4_915_100_000_000 + i).to_string();
    let phones = bytes_per_recipient(|i| (phone(i), None));
    println!("phones only: {phones:.1} bytes per windowed recipient");
    assert!(phones <= 48.0, "{phones:.1} bytes per recipient");
    // Every recipient named by phone and BSUID: the org also keeps each link.
    let linked = bytes_per_recipient(|i| {
        (
            phone(i),
            Some(format!("US.{}", 13_491_208_655_302_741_918 - i)),
        )
    });
    println!("phone + BSUID: {linked:.1} bytes per windowed recipient");
    assert!(
        linked <= 64.0,
        "{linked:.1} bytes per recipient with a BSUID"
    );
    // Named by BSUID alone: no link is kept, the BSUID's own key is the window entry.
    let bsuids = bytes_per_recipient(|i| {
        (
            String::new(),
            Some(format!("GB.{}", 20_385_716_640_219 + i)),
        )
    });
    println!("BSUID only: {bsuids:.1} bytes per windowed recipient");
    assert!(bsuids <= 64.0, "{bsuids:.1} bytes per recipient by BSUID");
}
