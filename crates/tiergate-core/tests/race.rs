//! Many threads racing for the last slots of one org's tier: never more than the tier.

use std::sync::{Arc, Barrier};
use std::thread;

use tiergate_core::*;
use tiergate_testkit::T0;

#[test]
fn last_slot_race_never_over_allows() {
    for round in 0..20u64 {
        let clock = Arc::new(ManualClock::new(T0));
        let engine = Arc::new(
            Engine::new(
                Policy {
                    auto_upgrade: false,
                    ..Policy::default()
                },
                clock,
            )
            .unwrap(),
        );
        let path = EscalationPath::new(EscalationKind::Phone, "+4915112345678").unwrap();
        engine
            .put_org(
                OrgConfig::new("race", Tier::Tier250)
                    .with_phone("1", 1_000)
                    .with_phone("2", 1_000)
                    .with_escalation(path),
            )
            .unwrap();
        let threads = 8;
        let per_thread = 100u64;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads as u64)
            .map(|t| {
                let engine = engine.clone();
                let barrier = barrier.clone();
                thread::spawn(move || {
                    barrier.wait();
                    let mut allowed = 0u64;
                    for i in 0..per_thread {
                        let r = (round * 10_000 + t * per_thread + i).to_string();
                        let d = engine
                            .decide(&SendRequest {
                                org_id: "race",
                                phone_number_id: if t % 2 == 0 { "1" } else { "2" },
                                recipient: &r,
                                recipient_user_id: None,
                                template_name: "t",
                                category: Category::Utility,
                                idempotency_key: None,
                            })
                            .unwrap();
                        match d.reason {
                            None => allowed += 1,
                            Some(DenyReason::TierLimit) | Some(DenyReason::Throughput) => {}
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    allowed
                })
            })
            .collect();
        let allowed: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let st = engine.get_org("race").unwrap();
        assert_eq!(st.usage.unique_recipients_24h, allowed);
        // 800 distinct recipients compete for 250 slots; throughput is 1,000/s per number with
        // a full burst, so the window must end exactly full.
        assert_eq!(allowed, 250, "round {round}");
    }
}
