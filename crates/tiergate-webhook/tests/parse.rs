//! The webhook parser never panics; a body is refused only when it is not a notification at all
//! (not JSON, not `whatsapp_business_account`, no `entry` list, too many changes); inside one,
//! a change that cannot be read is one [`parse::Change::Unreadable`] and spoils nothing beside it.

use proptest::prelude::*;
use serde_json::{Value, json};
use tiergate_core::MAX_DELIVERY_KEY_LEN;
use tiergate_webhook::parse::{self, Change, MAX_CHANGES, MAX_FIELD_LEN};

const PHONE_ID: &str = "106540352242922";

/// Changes that each read as exactly one readable change.
fn valid_change() -> impl Strategy<Value = Value> {
    prop_oneof![
        (
            prop::sample::select(vec![
                "FLAGGED",
                "UNFLAGGED",
                "UPGRADE",
                "DOWNGRADE",
                "ONBOARDING",
                "THROUGHPUT_UPGRADE"
            ]),
            prop::sample::select(vec![
                "TIER_50",
                "TIER_250",
                "TIER_1K",
                "TIER_2K",
                "TIER_10K",
                "TIER_100K",
                "TIER_UNLIMITED",
                "TIER_NOT_SET"
            ]),
            prop::sample::select(vec![
                "current_limit",
                "max_daily_conversations_per_business",
                "whatsapp_business_manager_messaging_limit"
            ]),
        )
            .prop_map(|(e, t, k)| json!({"field": "phone_number_quality_update",
                "value": {"display_phone_number": "15550783881", "event": e, k: t}})),
        (
            prop::sample::select(vec![
                json!(250),
                json!(2000),
                json!("TIER_10K"),
                json!(100000),
                json!(-1),
                json!("UNLIMITED"),
                json!("TIER_NOT_SET"),
            ]),
            prop::sample::select(vec![
                "max_daily_conversations_per_business",
                "max_daily_conversation_per_phone",
                "whatsapp_business_manager_messaging_limit",
                "messaging_limit_tier"
            ]),
        )
            .prop_map(|(l, k)| json!({"field": "business_capability_update",
                "value": {k: l, "max_phone_numbers_per_waba": 25}})),
        prop::sample::select(vec!["DISABLE", "REINSTATE", "SCHEDULE_FOR_DISABLE"])
            .prop_map(|b| json!({"field": "account_update",
                "value": {"event": "DISABLED_UPDATE", "ban_info": {"waba_ban_state": [b]}}})),
        prop::sample::select(vec![
            "PAUSED",
            "DISABLED",
            "REINSTATED",
            "UNPAUSE",
            "APPROVED"
        ])
        .prop_map(|e| json!({"field": "message_template_status_update",
                "value": {"event": e, "message_template_name": "order_shipped",
                          "other_info": {"title": "SECOND_PAUSE"}}})),
        Just(json!({"field": "message_template_quality_update",
            "value": {"new_quality_score": "RED", "message_template_name": "t"}})),
        (100i64..200_000, "[a-zA-Z0-9]{1,20}").prop_map(|(code, id)| json!({"field": "messages",
            "value": {"metadata": {"phone_number_id": PHONE_ID},
                      "statuses": [{"id": format!("wamid.{id}"), "status": "failed",
                                    "recipient_id": "16505551234", "errors": [{"code": code}]}]}})),
        // 2026: a recipient named only by its BSUID.
        Just(json!({"field": "messages",
            "value": {"metadata": {"phone_number_id": PHONE_ID},
                      "statuses": [{"id": "wamid.b", "status": "failed",
                                    "recipient_user_id": "GB.20385716640219937715",
                                    "errors": [{"code": 130472}]}]}})),
        // 2026: a send held for quality assessment.
        Just(json!({"field": "messages",
            "value": {"metadata": {"phone_number_id": PHONE_ID},
                      "statuses": [{"id": "wamid.h", "status": "held_for_quality_assessment",
                                    "recipient_id": "16505557777"}]}})),
        // 2026: a contact known by phone and BSUID.
        Just(json!({"field": "messages",
            "value": {"metadata": {"phone_number_id": PHONE_ID},
                      "contacts": [{"wa_id": "16505551234", "user_id": "US.13491208655302741918",
                                    "parent_user_id": "US.ENT.11815799212886844830"}]}})),
        Just(json!({"field": "user_id_update",
            "value": {"metadata": {"phone_number_id": PHONE_ID},
                      "user_id_update": [{"wa_id": "16505551234",
                          "user_id": {"previous": "US.1", "current": "US.2"}}]}})),
        "[a-z_]{1,20}".prop_map(|f| json!({"field": format!("x_{f}"), "value": {}})),
    ]
}

/// Changes that each read as exactly one unreadable change.
fn invalid_change() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"field": "phone_number_quality_update", "value": {"event": "FLAGGED"}})),
        Just(json!({"field": "phone_number_quality_update",
            "value": {"display_phone_number": "1", "event": "EXPLODED"}})),
        Just(json!({"field": "business_capability_update",
            "value": {"max_daily_conversations_per_business": 1234}})),
        Just(json!({"field": "business_capability_update",
            "value": {"whatsapp_business_manager_messaging_limit": "TIER_42"}})),
        Just(json!({"field": "account_update", "value": {"event": "DISABLED_UPDATE"}})),
        Just(json!({"field": "messages", "value": {"statuses": [{"errors": [{"code": 1}]}]}})),
        Just(
            json!({"field": "messages", "value": {"metadata": {"phone_number_id": "1"},
            "statuses": [{"errors": [{"code": "x"}]}]}})
        ),
        Just(
            json!({"field": "messages", "value": {"metadata": {"phone_number_id": "1"},
            "statuses": [{"recipient_user_id": "not-a-bsuid", "errors": [{"code": 130472}]}]}})
        ),
        Just(json!({"field": "user_id_update",
            "value": {"user_id_update": [{"user_id": {"previous": "US.1"}}]}})),
        Just(json!({"field": 7, "value": {}})),
    ]
}

fn body(changes: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "time": 1, "changes": changes}]}))
    .unwrap()
}

/// Whether a body may be refused whole: only when it is not a notification at all.
fn refusable(bytes: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return true;
    };
    if v.get("object").and_then(Value::as_str) != Some("whatsapp_business_account") {
        return true;
    }
    let Some(entries) = v.get("entry").and_then(Value::as_array) else {
        return true;
    };
    let total: usize = entries
        .iter()
        .map(|e| match e.get("changes") {
            None | Some(Value::Null) => 0,
            Some(Value::Array(c)) => c.len(),
            Some(_) => 1,
        })
        .sum();
    total > MAX_CHANGES
}

fn is_unreadable(p: &parse::Parsed) -> bool {
    matches!(p.change, Change::Unreadable { .. })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse::parse(&bytes);
    }

    /// A mutated body is refused whole only for a reason that concerns the whole body;
    /// otherwise every change comes back, read or unreadable, keyed within the core's bound.
    #[test]
    fn mutated_bodies_are_refused_whole_or_read_change_by_change(
        changes in proptest::collection::vec(valid_change(), 0..8),
        cut in 0usize..4096, byte in any::<u8>()) {
        let mut b = body(changes);
        if !b.is_empty() {
            let i = cut % b.len();
            b[i] = byte;
        }
        match parse::parse(&b) {
            Err(_) => prop_assert!(refusable(&b), "refused a notification: {}",
                String::from_utf8_lossy(&b)),
            Ok(items) => {
                prop_assert!(!refusable(&b));
                for p in &items {
                    prop_assert!(p.key.as_str().len() <= MAX_DELIVERY_KEY_LEN);
                    prop_assert!(p.change.field().len() <= MAX_FIELD_LEN);
                }
            }
        }
    }

    /// One change that cannot be read is one unreadable change, in its place; every readable
    /// change beside it reads exactly as without it, key included.
    #[test]
    fn one_bad_change_spoils_nothing(changes in proptest::collection::vec(valid_change(), 0..12),
                                     bad in invalid_change(), at in 0usize..13) {
        let n = changes.len();
        let parsed = parse::parse(&body(changes.clone())).unwrap();
        prop_assert_eq!(parsed.len(), n);
        prop_assert!(!parsed.iter().any(is_unreadable), "{:?}", parsed);
        let known = parsed
            .iter()
            .all(|p| !matches!(&p.change, Change::Ignored { field } if !field.starts_with("x_")));
        prop_assert!(known, "a known field was ignored");

        let at = at.min(n);
        let mut with_bad = changes;
        with_bad.insert(at, bad);
        let mut got = parse::parse(&body(with_bad)).unwrap();
        prop_assert_eq!(got.len(), n + 1);
        prop_assert!(is_unreadable(&got[at]), "{:?}", got[at]);
        got.remove(at);
        prop_assert_eq!(got, parsed);
    }
}

#[test]
fn too_many_changes_are_refused() {
    let changes = vec![json!({"field": "x", "value": {}}); 1_001];
    assert!(parse::parse(&body(changes)).is_err());
    let changes = vec![json!({"field": "x", "value": {}}); 1_000];
    assert_eq!(parse::parse(&body(changes)).unwrap().len(), 1_000);
}

#[test]
fn only_a_body_that_is_no_notification_is_refused() {
    for bad in [
        &b"{not json"[..],
        br#"{"object":"page","entry":[]}"#,
        br#"{"entry":[]}"#,
        br#"{"object":"whatsapp_business_account","entry":{}}"#,
        br#"[1,2]"#,
    ] {
        assert!(
            parse::parse(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    // An entry without a usable id: its changes are unreadable, the next entry's are read.
    let b = br#"{"object":"whatsapp_business_account","entry":[
        {"id":"abc","changes":[{"field":"account_update","value":{"event":"ACCOUNT_VIOLATION"}}]},
        {"id":"1","changes":{"oops":1}},
        {"id":"2","changes":[{"field":"account_update","value":{"event":"ACCOUNT_VIOLATION"}}]}]}"#;
    let got = parse::parse(b).unwrap();
    assert_eq!(got.len(), 3);
    assert!(
        matches!(&got[0].change, Change::Unreadable { field, .. } if field == "account_update")
    );
    assert!(matches!(&got[1].change, Change::Unreadable { field, .. } if field == "entry"));
    assert_eq!(
        got[2].change,
        Change::Account {
            waba_id: "2".into(),
            restrict: Some(true)
        }
    );
}

#[test]
fn one_status_out_of_many_unreadable() {
    let b = body(vec![json!({"field": "messages", "value": {
    "metadata": {"phone_number_id": PHONE_ID},
    "statuses": [
        {"id": "wamid.1", "status": "failed", "recipient_id": "16505551234",
         "errors": [{"code": 131048}, {"code": "x"}, {"code": 131056}]},
        {"id": "wamid.2", "status": "failed", "recipient_id": "+1 650", "errors": [{"code": 1}]},
        {"id": "wamid.3", "status": "delivered", "recipient_id": "16505551234"}
    ]}})]);
    let got = parse::parse(&b).unwrap();
    let kinds: Vec<_> = got
        .iter()
        .map(|p| match &p.change {
            Change::SendError { code, .. } => format!("error {code}"),
            Change::Unreadable { .. } => "unreadable".into(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "error 131048",
            "unreadable",
            "error 131056",
            "unreadable" // wamid.2: a recipient_id that is no phone
        ]
    );
    // Two codes of one status are two changes, with two keys.
    assert_ne!(got[0].key, got[2].key);
}

fn fixture(name: &str) -> Vec<u8> {
    let p = format!(
        "{}/../../tests/fixtures/webhooks/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

#[test]
fn every_fixture_reads_without_an_unreadable_change() {
    let dir = format!(
        "{}/../../tests/fixtures/webhooks",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".json") {
            continue;
        }
        let got = parse::parse(&fixture(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!got.iter().any(is_unreadable), "{name}: {got:?}");
        n += 1;
    }
    assert!(n >= 12, "{n} fixtures");
}

#[test]
fn the_2026_fixtures_read_as_meant() {
    let got = parse::parse(&fixture("status_delivered_bsuid.json")).unwrap();
    assert_eq!(
        got.iter().map(|p| p.change.clone()).collect::<Vec<_>>(),
        [Change::RecipientIds {
            waba_id: "102290129340398".into(),
            phone_number_id: Some(PHONE_ID.into()),
            wa_id: Some("16505551234".into()),
            user_id: Some("US.13491208655302741918".into()),
            parent_user_id: Some("US.ENT.11815799212886844830".into()),
        }],
        "a delivered status applies nothing; the contact's ids are read"
    );

    let got = parse::parse(&fixture("status_failed_experiment_bsuid.json")).unwrap();
    assert_eq!(
        got[0].change,
        Change::SendError {
            waba_id: "102290129340398".into(),
            phone_number_id: PHONE_ID.into(),
            recipient: None,
            recipient_user_id: Some("GB.20385716640219937715".into()),
            code: 130_472,
        }
    );

    // A held status: the org is under pacing review, and the status pairs its phone and BSUID.
    let got = parse::parse(&fixture("status_held_for_quality_assessment.json")).unwrap();
    assert_eq!(
        got.iter().map(|p| p.change.clone()).collect::<Vec<_>>(),
        [
            Change::RecipientIds {
                waba_id: "102290129340398".into(),
                phone_number_id: Some(PHONE_ID.into()),
                wa_id: Some("16505557777".into()),
                user_id: Some("US.58201937746512093381".into()),
                parent_user_id: None,
            },
            Change::PacingHeld {
                waba_id: "102290129340398".into(),
                phone_number_id: PHONE_ID.into(),
            }
        ]
    );

    let got = parse::parse(&fixture("user_id_update.json")).unwrap();
    assert_eq!(
        got[0].change,
        Change::UserIdUpdate {
            waba_id: "102290129340398".into(),
            phone_number_id: Some(PHONE_ID.into()),
            wa_id: Some("16505551234".into()),
            previous: "US.13491208655302741918".into(),
            current: "US.40917733529105862204".into(),
        }
    );

    let got = parse::parse(&fixture("business_capability_update.json")).unwrap();
    assert_eq!(
        got[0].change,
        Change::Capability {
            waba_id: "102290129340398".into(),
            limit: Some(tiergate_core::Tier::Tier2K),
        }
    );
}

#[test]
fn a_redelivery_has_the_same_key_and_another_change_does_not() {
    let a = parse::parse(&fixture("status_failed_pair_rate.json")).unwrap();
    // The same bytes re-serialized with another layout: still the same change.
    let v: Value = serde_json::from_slice(&fixture("status_failed_pair_rate.json")).unwrap();
    let b = parse::parse(serde_json::to_string_pretty(&v).unwrap().as_bytes()).unwrap();
    assert_eq!(a, b);
    let c = parse::parse(&fixture("status_failed_experiment_bsuid.json")).unwrap();
    assert_ne!(a[0].key, c[0].key);
}
