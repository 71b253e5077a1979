//! What each parsed change does to a real engine, driven the way both shells drive a plan; and
//! the plan's own rules (ids in order, the delivery key first, nothing after a fact that did not
//! apply, a redelivery applied once).
//!
//! The tests look at the engine's state and the outcomes, never at the facts themselves, so they
//! hold whatever shape `Fact` takes.

use std::sync::Arc;

use serde_json::{Value, json};
use tiergate_core::{
    Category, Change, Command, DenyReason, Engine, EscalationKind, EscalationPath, IdOwner, IdRef,
    ManualClock, OrgConfig, Policy, QualityRating, Reaction, SendRequest, Tier,
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
    drive_counting(engine, body).0
}

/// [`drive`], also counting the facts the plans handed out.
fn drive_counting(engine: &Engine, body: &[u8]) -> (Vec<Outcome>, usize) {
    let mut out = Vec::new();
    let mut facts = 0;
    for parsed in parse::parse(body).unwrap() {
        let named = plan::resolve(&parsed.change, |id| engine.lookup_id(id));
        let mut plan = Plan::new(&parsed, named, engine.policy(), NOW);
        while let Some(fact) = plan.next_fact() {
            facts += 1;
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
    (out, facts)
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
    let changes: Vec<_> = changes.into_iter().map(|p| p.change).collect();
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
    assert_eq!(plan::ids(&ignored[0].change).count(), 0);
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

    // The delivery key, then both facts, when each applies.
    let mut p = Plan::new(&changes[0], named(), &policy, NOW);
    let mut n = 0;
    while let Some(fact) = p.next_fact() {
        n += 1;
        if n == 1 {
            assert!(
                matches!(fact.change, Change::WebhookDelivery { .. }),
                "{fact:?}"
            );
            p.answered(&tiergate_core::Outcome::Delivery { first: true });
        } else {
            p.answered(&tiergate_core::Outcome::Restored);
        }
    }
    assert_eq!(n, 3);
    assert_eq!(p.outcome(), Outcome::Held);

    // A key the org applied before: nothing after it.
    let mut p = Plan::new(&changes[0], named(), &policy, NOW);
    assert!(p.next_fact().is_some());
    p.answered(&tiergate_core::Outcome::Delivery { first: false });
    assert!(p.next_fact().is_none());
    assert_eq!(p.outcome(), Outcome::Duplicate);
}

fn status_error(id: &str, recipient: Option<&str>, user_id: Option<&str>, code: i32) -> Value {
    json!({"field": "messages", "value": {"metadata": {"phone_number_id": PHONE},
        "statuses": [{"id": id, "status": "failed", "timestamp": "1775005200",
                      "recipient_id": recipient, "recipient_user_id": user_id,
                      "errors": [{"code": code}]}]}})
}

fn paused_until(e: &Engine) -> Option<u64> {
    e.get_org("acme").unwrap().numbers[0].paused_until_ms
}

#[test]
fn a_redelivered_status_applies_once_and_a_distinct_one_doubles_the_pause() {
    let e = engine(false);
    let spam = body(
        WABA,
        vec![status_error("wamid.A", Some("16505551234"), None, 131_048)],
    );
    let first = drive(&e, &spam);
    assert!(
        matches!(first[0], Outcome::Reacted(Reaction::NumberPaused(_))),
        "{first:?}"
    );
    let once = paused_until(&e).expect("paused");
    let pause = once - NOW;

    // Meta delivers the same status again: the org drops it, the pause stays.
    assert_eq!(drive(&e, &spam), [Outcome::Duplicate]);
    assert_eq!(paused_until(&e), Some(once));

    // Another message failing with 131048 is a second strike: twice the pause.
    let other = body(
        WABA,
        vec![status_error("wamid.B", Some("16505551234"), None, 131_048)],
    );
    assert!(matches!(drive(&e, &other)[0], Outcome::Reacted(_)));
    assert_eq!(paused_until(&e), Some(NOW + 2 * pause));
    let mut summary = Summary::default();
    drive(&e, &spam).iter().for_each(|o| summary.add(o));
    assert_eq!((summary.duplicate, summary.applied), (1, 0));
}

#[test]
fn a_redelivered_capability_update_applies_once() {
    let e = engine(true);
    let cap = |limit: Value, time: u64| {
        serde_json::to_vec(&json!({"object": "whatsapp_business_account",
            "entry": [{"id": WABA, "time": time, "changes": [
                {"field": "business_capability_update",
                 "value": {"max_daily_conversations_per_business": limit}}]}]}))
        .unwrap()
    };
    assert_eq!(drive(&e, &cap(json!(2000), 10)), [Outcome::Applied]);
    assert_eq!(e.get_org("acme").unwrap().config.tier, Tier::Tier2K);
    // An admin lowers the tier; the redelivery of the old update must not raise it again.
    e.request_tier_change("acme", Tier::Tier250).unwrap();
    assert_eq!(drive(&e, &cap(json!(2000), 10)), [Outcome::Duplicate]);
    assert_eq!(e.get_org("acme").unwrap().config.tier, Tier::Tier250);
    // The same limit reported at another time is another update.
    assert_eq!(drive(&e, &cap(json!(2000), 11)), [Outcome::Applied]);
    assert_eq!(e.get_org("acme").unwrap().config.tier, Tier::Tier2K);
}

#[test]
fn changes_that_apply_nothing_spend_no_key() {
    let e = engine(false);
    let (got, facts) = drive_counting(
        &e,
        &body(
            "999",
            vec![json!({"field": "account_update", "value": {"event": "ACCOUNT_VIOLATION"}})],
        ),
    );
    assert_eq!((got, facts), (vec![Outcome::UnknownId], 0));
    let quiet = vec![
        json!({"field": "business_capability_update",
            "value": {"max_daily_conversations_per_business": "TIER_NOT_SET"}}),
        json!({"field": "business_capability_update", "value": {"max_phone_numbers_per_waba": 25}}),
        json!({"field": "account_update", "value": {"event": "PARTNER_ADDED"}}),
        json!({"field": "messages", "value": {"metadata": {"phone_number_id": PHONE},
            "statuses": [{"id": "wamid.D", "status": "delivered", "recipient_id": "16505551234"}]}}),
        json!({"field": "something_new", "value": {}}),
    ];
    let (got, facts) = drive_counting(&e, &body(WABA, quiet));
    assert_eq!(
        got,
        [
            Outcome::Ignored,
            Outcome::Ignored,
            Outcome::Applied,
            Outcome::Ignored
        ]
    );
    assert_eq!(facts, 0);
    assert_eq!(e.get_org("acme").unwrap().config.tier, Tier::Tier250);
}

#[test]
fn contacts_and_user_id_updates_link_a_person_s_ids() {
    let e = engine(true);
    let links = vec![
        json!({"field": "messages", "value": {"metadata": {"phone_number_id": PHONE},
            "contacts": [{"wa_id": "16505551234", "user_id": "US.13491208655302741918"}]}}),
        json!({"field": "user_id_update", "value": {"metadata": {"phone_number_id": PHONE},
            "user_id_update": [{"wa_id": "16505551234",
            "user_id": {"previous": "US.13491208655302741918", "current": "US.40917733529105862204"}}]}}),
    ];
    let got = drive(&e, &body(WABA, links));
    assert_eq!(got, [Outcome::Applied, Outcome::Applied]);
    // A send to the phone, then one to the renamed BSUID: one person in the window.
    let send = |recipient: &str, user_id: Option<&str>| {
        e.decide(&SendRequest {
            org_id: "acme",
            phone_number_id: PHONE,
            recipient,
            recipient_user_id: user_id,
            template_name: "t",
            category: Category::Utility,
            idempotency_key: None,
        })
        .unwrap()
    };
    assert!(send("16505551234", None).is_allowed());
    let d = send("", Some("US.40917733529105862204"));
    assert_eq!(d.reason, Some(DenyReason::PairRate), "the same pair: {d:?}");
    assert_eq!(e.get_org("acme").unwrap().usage.unique_recipients_24h, 1);
}

#[test]
fn unreadable_changes_leave_the_rest_applied() {
    let e = engine(false);
    let got = drive(
        &e,
        &body(
            WABA,
            vec![
                json!({"field": "business_capability_update",
                    "value": {"max_daily_conversations_per_business": "TIER_42"}}),
                json!({"field": "account_update", "value": {"event": "ACCOUNT_VIOLATION"}}),
            ],
        ),
    );
    assert!(
        matches!(&got[0], Outcome::Unreadable(why) if why.contains("TIER_42")),
        "{got:?}"
    );
    assert_eq!(got[1], Outcome::Applied);
    assert!(e.get_org("acme").unwrap().account_restricted);
    assert_eq!(got[0].label(), "unreadable");
}

#[test]
fn a_held_send_puts_the_org_under_pacing_review_once() {
    let e = engine(false);
    let held = body(
        WABA,
        vec![
            json!({"field": "messages", "value": {"metadata": {"phone_number_id": PHONE},
            "statuses": [{"id": "wamid.H", "status": "held_for_quality_assessment",
                          "timestamp": "1775002000", "recipient_id": "16505557777",
                          "recipient_user_id": "US.58201937746512093381"}]}}),
        ],
    );
    assert!(!e.get_org("acme").unwrap().pacing_review);
    // The status pairs the phone and BSUID (idempotent, no key), then the hold applies.
    assert_eq!(drive(&e, &held), [Outcome::Applied, Outcome::Applied]);
    let st = e.get_org("acme").unwrap();
    assert!(st.pacing_review);
    assert_eq!(st.pacing_held_at_ms, Some(NOW));
    assert_eq!(drive(&e, &held), [Outcome::Applied, Outcome::Duplicate]);
}

#[test]
fn a_2026_code_reaches_the_engine_with_the_phone_and_says_why_without_one() {
    let e = engine(false);
    // Both ids: the phone is the recipient, the experiment blocks its marketing.
    let both = body(
        WABA,
        vec![status_error(
            "wamid.E1",
            Some("16505551234"),
            Some("US.13491208655302741918"),
            130_472,
        )],
    );
    let got = drive(&e, &both);
    assert!(
        matches!(
            got[..],
            [
                Outcome::Applied,
                Outcome::Reacted(Reaction::MarketingExperiment(_))
            ]
        ),
        "{got:?}"
    );
    // Only a BSUID: the BSUID is the recipient (the person it counts under).
    let bsuid_only = body(
        WABA,
        vec![status_error(
            "wamid.E2",
            None,
            Some("GB.20385716640219937715"),
            130_472,
        )],
    );
    let got = drive(&e, &bsuid_only);
    assert!(
        matches!(got[0], Outcome::Reacted(Reaction::MarketingExperiment(_))),
        "{got:?}"
    );
    // A number-wide code needs no recipient: it applies with a BSUID-only status.
    let maintenance = body(
        WABA,
        vec![status_error(
            "wamid.E3",
            None,
            Some("GB.20385716640219937715"),
            131_057,
        )],
    );
    let got = drive(&e, &maintenance);
    assert!(
        matches!(got[0], Outcome::Reacted(Reaction::NumberMaintenance(_))),
        "{got:?}"
    );
}
