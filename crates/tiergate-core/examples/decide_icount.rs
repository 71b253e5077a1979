//! Instructions per decision, counted rather than timed: the repeat-recipient case of
//! `benches/decide.rs` (a TIER_100K org holding 100,000 recipients, each send to one of them).
//!
//! Shared machines make nanoseconds noisy; instruction counts repeat exactly. Run it twice under
//! callgrind and subtract, so the setup cancels out:
//!
//! ```sh
//! cargo build --release --example decide_icount -p tiergate-core
//! for n in 0 100000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg-$n target/release/examples/decide_icount $n 2>&1 | grep Collected
//! done   # (second − first) / 100,000 = instructions per decision
//! ```
use std::sync::Arc;
use tiergate_core::*;

fn main() {
    let n: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let engine = Engine::new(
        Policy {
            // As the benches ran before auto-upgrade became opt-in, so figures stay comparable.
            auto_upgrade: true,
            ..Policy::default()
        },
        clock.clone(),
    )
    .unwrap();
    let path = EscalationPath::new(EscalationKind::WebForm, "https://example.com/help").unwrap();
    engine
        .put_org(
            OrgConfig::new("big", Tier::Tier100K)
                .with_phone("1", 1_000)
                .with_escalation(path),
        )
        .unwrap();
    let rs: Vec<String> = (0..100_000u64)
        .map(|i| (4_915_100_000_000 + i).to_string())
        .collect();
    for r in &rs {
        clock.advance(1);
        assert!(engine.decide(&send(r)).unwrap().is_allowed());
    }
    let mut allowed = 0;
    for i in 0..n {
        clock.advance(1);
        allowed += engine
            .decide(&send(&rs[i % rs.len()]))
            .unwrap()
            .is_allowed() as usize;
    }
    assert_eq!(allowed, n);
}

fn send(r: &str) -> SendRequest<'_> {
    SendRequest {
        org_id: "big",
        phone_number_id: "1",
        recipient: r,
        recipient_user_id: None,
        template_name: "order_update",
        category: Category::Utility,
        idempotency_key: None,
    }
}
