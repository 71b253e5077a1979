//! What each parsed change does to a real engine, driven the way both shells drive a plan; and
//! the plan's own rules (ids in order, nothing after a fact that did not apply).
//!
//! The tests look at the engine's state and the outcomes, never at the facts themselves, so they
//! hold whatever shape `Fact` takes.

use std::sync::Arc;

use serde_json::{Value, json};
use tiergate_core::{
    Command, Engine, EscalationKind, EscalationPath, IdOwner, IdRef, ManualClock, OrgConfig,
    Policy, QualityRating, Reaction, Tier,
};
use tiergate_webhook::{Named, Outcome, Plan, Summary, parse, plan};

const WABA: &str = "102290129340398";
const PHONE: &str = "106540352242922";
const DISPLAY: &str = "+1 555-078-3881";
const NOW: u64 = 1_700_000_000_000;
const HOUR_MS: u64 = 3_600_000;

fn engine(escalation: bool) -> Engine {
    let engine = Engine::new(Policy::default(), Arc::new(ManualClock::new(NOW))).unwrap();
    let mut org = OrgConfig::new("acme", Tier::Tier250).with_phone(PHONE, 80);
    org.waba_ids.push(WABA.into());
    org.phone_numbers[0].display_phone_number = DISPLAY.into();
    if escalation {
        let path = EscalationPath::new(EscalationKind::Email, "help@example.com").unwrap();
        org = org.with_escalation(path);
    }
    engine.put_org(org).unwrap();
    engine
}

fn body(waba: &str, changes: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"object": "whatsapp_business_account",
        "entry": [{"id": waba, "time": 1, "changes": changes}]}))
    .unwrap()
}

/// The simulator's loop: resolve, then apply each fact the plan hands out.
fn drive(engine: &Engine, body: &[u8]) -> Vec<Outcome> {
    let mut out = Vec::new();
    for change in parse::parse(body).unwrap() {
        let named = plan::resolve(&change, |id| engine.lookup_id(id));
        let mut plan = Plan::new(&change, named, engine.policy(), NOW);
        while let Some(fact) = plan.next_fact() {
            let answer = engine
                .check_fact(&fact)
                .and_then(|()| engine.execute(&Command::Apply { fact }));
            match answer {
                Ok(a) => plan.answered(&a),
                Err(e) => plan.refused(e.to_string()),
            }
        }
        out.push(plan.outcome());
    }
    out
}

fn quality(event: &str, limit: Option<&str>) -> Value {
    json!({"field": "phone_number_quality_update",
        "value": {"display_phone_number": DISPLAY, "event": event, "current_limit": limit}})
}

#[test]
fn flagged_sets_red_then_the_reported_limit_passes_the_gate() {
    let e = engine(false);
    let got = drive(&e, &body(WABA, vec![quality("FLAGGED", Some("TIER_2K"))]));
    assert_eq!(got, [Outcome::Held]);
    let st = e.get_org("acme").unwrap();
    assert_eq!(st.config.quality_rating, QualityRating::Red);
    assert_eq!(st.config.tier, Tier::Tier250);
    assert_eq!(st.pending_tier, Some(Tier::Tier2K));

    let e = engine(true);
    let got = drive(&e, &body(WABA, vec![quality("UNFLAGGED", Some("TIER_2K"))]));
    assert_eq!(got, [Outcome::Applied]);
    assert_eq!(e.get_org("acme").unwrap().config.tier, Tier::Tier2K);
}

#[test]
fn a_decrease_applies_at_once_and_an_event_without_a_limit_changes_nothing() {
    let e = engine(false);
    let got = drive(
        &e,
        &body(
            WABA,
            vec![
                quality("DOWNGRADE", Some("TIER_50")),
                quality("UPGRADE", None),
            ],
        ),
    );
    assert_eq!(got, [Outcome::Applied, Outcome::Applied]);
    assert_eq!(e.get_org("acme").unwrap().config.tier, Tier::Tier50);
}

#[test]
fn throughput_upgrade_raises_the_displayed_number_to_the_policy_ceiling() {
    let e = engine(false);
    let got = drive(&e, &body(WABA, vec![quality("THROUGHPUT_UPGRADE", None)]));
    assert_eq!(got, [Outcome::Applied]);
    let st = e.get_org("acme").unwrap();
    assert_eq!(st.numbers[0].effective_mps, e.policy().max_throughput_mps);
}

#[test]
fn throughput_upgrade_for_a_number_no_org_shows_is_unknown_even_if_the_waba_is_known() {
    let e = engine(false);
    let change = json!({"field": "phone_number_quality_update",
        "value": {"display_phone_number": "15550000000", "event": "THROUGHPUT_UPGRADE",
                  "current_limit": "TIER_50"}});
    assert_eq!(drive(&e, &body(WABA, vec![change])), [Outcome::UnknownId]);
    // Nothing after it applied: the limit stays.
    assert_eq!(e.get_org("acme").unwrap().config.tier, Tier::Tier250);
}

#[test]
fn template_pauses_run_from_now() {
    let e = engine(false);
    let status = |event: &str, name: &str, title: Option<&str>| {
        json!({"field": "message_template_status_update", "value": {"event": event,
            "message_template_name": name, "other_info": {"title": title}}})
    };
    let got = drive(
        &e,
        &body(
            WABA,
            vec![
                status("PAUSED", "second", Some("SECOND_PAUSE")),
                status("PAUSED", "default", None),
                status("DISABLED", "gone", None),
                status("APPROVED", "new", None),
            ],
        ),
    );
    assert_eq!(got, vec![Outcome::Applied; 4]);
    let pauses = e.get_org("acme").unwrap().paused_templates;
    let until = |name: &str| {
        pauses
            .iter()
            .find(|p| p.template_name == name)
            .map(|p| p.until_ms)
    };
    assert_eq!(until("second"), Some(Some(NOW + 6 * HOUR_MS)));
    assert_eq!(
        until("default"),
        Some(Some(NOW + e.policy().template_pause_ms))
    );
    assert_eq!(until("gone"), Some(None));
    assert_eq!(until("new"), None);

    let got = drive(&e, &body(WABA, vec![status("REINSTATED", "gone", None)]));
    assert_eq!(got, [Outcome::Applied]);
    assert_eq!(e.get_org("acme").unwrap().paused_templates.len(), 2);
}

#[test]
fn account_and_capability_updates() {
    let e = engine(false);
    let got = drive(
        &e,
        &body(
            WABA,
            vec![
                json!({"field": "business_capability_update",
                    "value": {"max_daily_conversations_per_business": 2000}}),
                json!({"field": "account_update", "value": {"event": "ACCOUNT_VIOLATION"}}),
                json!({"field": "account_update", "value": {"event": "PARTNER_ADDED"}}),
                json!({"field": "message_template_quality_update",
                    "value": {"new_quality_score": "RED", "message_template_name": "t"}}),
            ],
        ),
    );
    assert_eq!(
        got,
        [
            Outcome::Held,
            Outcome::Applied,
            Outcome::Applied,
            Outcome::Applied
        ]
    );
    assert!(e.get_org("acme").unwrap().account_restricted);
}

#[test]
fn send_errors_react_or_are_refused_when_a_status_is_not_enough() {
    let e = engine(false);
    let error = |code: i32| {
        json!({"field": "messages", "value": {"metadata": {"phone_number_id": PHONE},
            "statuses": [{"recipient_id": "16505551234", "errors": [{"code": code}]}]}})
    };
    // 131056: pair rate; 132015: a paused template, which a status does not name.
    let got = drive(&e, &body(WABA, vec![error(131_056), error(132_015)]));
    assert!(
        matches!(got[0], Outcome::Reacted(Reaction::PairBackoff(_))),
        "{got:?}"
    );
    assert!(matches!(got[1], Outcome::Rejected(_)), "{got:?}");
    let mut summary = Summary::default();
    got.iter().for_each(|o| summary.add(o));
    assert_eq!((summary.applied, summary.rejected), (1, 1));
}

#[test]
fn unknown_ids_and_ignored_fields_apply_nothing() {
    let e = engine(false);
    let got = drive(
        &e,
        &body(
            "999",
            vec![
                json!({"field": "account_update", "value": {"event": "ACCOUNT_VIOLATION"}}),
                json!({"field": "something_new", "value": {}}),
            ],
        ),
    );
    assert_eq!(got, [Outcome::UnknownId, Outcome::Ignored]);
    assert!(!e.get_org("acme").unwrap().account_restricted);
}

#[test]
fn ids_are_consulted_in_order_and_resolving_stops_at_the_first_hit() {
    let changes = parse::parse(&body(WABA, vec![quality("FLAGGED", None)])).unwrap();
    let ids: Vec<_> = plan::ids(&changes[0]).collect();
    assert_eq!(ids, [IdRef::DisplayNumber(DISPLAY), IdRef::Waba(WABA)]);

    let mut asked = Vec::new();
    let named = plan::resolve(&changes[0], |id| {
        asked.push(id);
        Some(IdOwner {
            org_id: "acme".into(),
            phone_number_id: Some(PHONE.into()),
        })
    });
    assert_eq!(asked, [IdRef::DisplayNumber(DISPLAY)]);
    assert_eq!(named.unwrap().id, IdRef::DisplayNumber(DISPLAY));

    let ignored = parse::parse(&body(WABA, vec![json!({"field": "x", "value": {}})])).unwrap();
    assert_eq!(plan::ids(&ignored[0]).count(), 0);
}

#[test]
fn nothing_follows_a_fact_that_did_not_apply() {
    let changes = parse::parse(&body(WABA, vec![quality("FLAGGED", Some("TIER_2K"))])).unwrap();
    let named = || {
        Some(Named {
            id: IdRef::Waba(WABA),
            owner: IdOwner {
                org_id: "acme".into(),
                phone_number_id: None,
            },
        })
    };
    let policy = Policy::default();

    let mut p = Plan::new(&changes[0], named(), &policy, NOW);
    assert!(p.next_fact().is_some());
    p.refused("no such org");
    assert!(p.next_fact().is_none());
    assert_eq!(p.outcome(), Outcome::Rejected("no such org".into()));

    let mut p = Plan::new(&changes[0], named(), &policy, NOW);
    assert!(p.next_fact().is_some());
    p.store_unavailable();
    assert!(p.next_fact().is_none());
    assert_eq!(p.outcome(), Outcome::StoreUnavailable);

    // Both facts when the first applies.
    let mut p = Plan::new(&changes[0], named(), &policy, NOW);
    let mut n = 0;
    while p.next_fact().is_some() {
        n += 1;
        p.answered(&tiergate_core::Outcome::Restored);
    }
    assert_eq!(n, 2);
    assert_eq!(p.outcome(), Outcome::Held);
}
