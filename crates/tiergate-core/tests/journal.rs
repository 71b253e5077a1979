//! Facts replayed into a fresh engine rebuild the same state: what a durable store relies on.

use std::sync::{Arc, Mutex};

use tiergate_core::*;
use tiergate_testkit::T0;

#[derive(Default)]
struct Collect(Mutex<Vec<Fact>>);

impl Journal for Collect {
    fn record(&self, fact: Fact) {
        self.0.lock().unwrap().push(fact);
    }
}

fn send<'a>(org: &'a str, phone: &'a str, to: &'a str, key: Option<&'a str>) -> SendRequest<'a> {
    SendRequest {
        org_id: org,
        phone_number_id: phone,
        recipient: to,
        recipient_user_id: None,
        template_name: "t",
        category: Category::Marketing,
        idempotency_key: key,
    }
}

#[test]
fn replayed_facts_rebuild_the_same_state() {
    let clock = Arc::new(ManualClock::new(T0));
    let policy = Policy {
        weekly_cap_without_escalation: 40,
        // The engine's own upgrades make tier changes that the replay must reproduce.
        auto_upgrade: true,
        ..Policy::default()
    };
    let live = Engine::new(policy.clone(), clock.clone()).unwrap();
    let journal = Arc::new(Collect::default());
    assert!(live.set_journal(journal.clone()));
    let email = EscalationPath::new(EscalationKind::Email, "a@b.co").unwrap();
    let mut a = OrgConfig::new("a", Tier::Tier250).with_phone("1", 50);
    a.has_template_history = true;
    live.put_org(a).unwrap();
    live.put_org(
        OrgConfig::new("b", Tier::Tier50)
            .with_phone("2", 1_000)
            .with_escalation(email.clone()),
    )
    .unwrap();
    let mut permits = Vec::new();
    for i in 0..300u64 {
        clock.advance(if i % 50 == 0 { 3_600_000 } else { 7 });
        let to = (1_000 + i % 120).to_string();
        let key = (i % 9 == 0).then(|| format!("k{}", i % 27));
        // Every 5th send also names the person's BSUID, so links are journaled too.
        let user = format!("US.{}", 5_000 + i % 120);
        for (org, phone) in [("a", "1"), ("b", "2")] {
            let req = SendRequest {
                recipient_user_id: (i % 5 == 0).then_some(user.as_str()),
                ..send(org, phone, &to, key.as_deref())
            };
            let d = live.decide(&req).unwrap();
            if let Some(p) = d.permit.filter(|_| !d.replayed) {
                permits.push(p);
            }
        }
        match i {
            40 => drop(live.set_quality_rating("b", QualityRating::Red).unwrap()),
            60 => drop(live.request_tier_change("a", Tier::Tier2K).unwrap()),
            80 => drop(live.set_escalation_path("a", email.clone()).unwrap()),
            90 => drop(live.file_appeal("b", "evidence").unwrap()),
            95 => drop(
                live.resolve_appeal(&"b:appeal:1".parse().unwrap(), true)
                    .unwrap(),
            ),
            120 => drop(
                live.pause_template("a", "t", Some(clock.now_ms() + 60_000))
                    .unwrap(),
            ),
            150 => drop(
                live.feedback("b", Some("2"), Some("1005"), None, 131_056)
                    .unwrap(),
            ),
            170 => drop(live.clear_escalation_path("a").unwrap()),
            200 => drop(live.set_account_restricted("b", true).unwrap()),
            210 => drop(live.set_account_restricted("b", false).unwrap()),
            _ => {}
        }
        if i % 13 == 0
            && let Some(p) = permits.pop()
        {
            let outcome = if i % 2 == 0 {
                SendOutcome::NotSent
            } else {
                SendOutcome::Rejected {
                    error_code: 130_429,
                }
            };
            let _ = live.report(&p, outcome);
        }
    }
    let facts = journal.0.lock().unwrap().clone();
    assert!(facts.len() > 300, "{} facts", facts.len());

    // Replay into a fresh engine, each fact at its own time: the engine's clock stays at 0
    // throughout, so the time can only come from the facts.
    let replay_clock = Arc::new(ManualClock::new(0));
    let restored = Engine::new(policy, replay_clock.clone()).unwrap();
    for f in &facts {
        let json = serde_json_roundtrip(f);
        restored
            .apply_fact(&json)
            .unwrap_or_else(|e| panic!("{f:?}: {e}"));
    }
    replay_clock.advance_to(clock.now_ms());
    for org in ["a", "b"] {
        assert_eq!(
            live.get_org(org).unwrap(),
            restored.get_org(org).unwrap(),
            "org {org}"
        );
    }
    // And they go on deciding alike.
    for i in 0..200u64 {
        clock.advance(3);
        replay_clock.advance(3);
        let to = (900 + i).to_string();
        // Every other one by BSUID alone: it counts as the phone it was linked to, or apart.
        let user = format!("US.{}", 5_000 + i % 120);
        for (org, phone) in [("a", "1"), ("b", "2")] {
            let req = if i % 2 == 0 {
                SendRequest {
                    recipient: "",
                    recipient_user_id: Some(&user),
                    ..send(org, phone, &to, None)
                }
            } else {
                send(org, phone, &to, None)
            };
            let x = live.decide(&req).unwrap();
            let y = restored.decide(&req).unwrap();
            assert_eq!(
                (x.reason, x.retry_after_ms, x.permit),
                (y.reason, y.retry_after_ms, y.permit)
            );
        }
    }
}

/// Facts travel through a store as text; make sure they survive it.
fn serde_json_roundtrip(f: &Fact) -> Fact {
    let s = serde_json::to_string(f).unwrap();
    serde_json::from_str(&s).unwrap()
}
