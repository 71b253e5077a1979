//! The webhook parser never panics, and a body is accepted whole or not at all.

use proptest::prelude::*;
use serde_json::{Value, json};
use tiergate_webhook::parse;

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
                "TIER_UNLIMITED"
            ]),
        )
            .prop_map(|(e, t)| json!({"field": "phone_number_quality_update",
                "value": {"display_phone_number": "15550783881", "event": e, "current_limit": t}})),
        prop::sample::select(vec![
            json!(250),
            json!(2000),
            json!("TIER_10K"),
            json!(100000)
        ])
        .prop_map(|l| json!({"field": "business_capability_update",
                "value": {"max_daily_conversations_per_business": l}})),
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
        (100i64..200_000).prop_map(|code| json!({"field": "messages",
            "value": {"metadata": {"phone_number_id": "106540352242922"},
                      "statuses": [{"recipient_id": "16505551234", "errors": [{"code": code}]}]}})),
        "[a-z_]{1,20}".prop_map(|f| json!({"field": format!("x_{f}"), "value": {}})),
    ]
}

fn invalid_change() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"field": "phone_number_quality_update", "value": {"event": "FLAGGED"}})),
        Just(json!({"field": "phone_number_quality_update",
            "value": {"display_phone_number": "1", "event": "EXPLODED"}})),
        Just(json!({"field": "business_capability_update",
            "value": {"max_daily_conversations_per_business": 1234}})),
        Just(json!({"field": "account_update", "value": {"event": "DISABLED_UPDATE"}})),
        Just(json!({"field": "messages", "value": {"statuses": [{"errors": [{"code": 1}]}]}})),
        Just(
            json!({"field": "messages", "value": {"metadata": {"phone_number_id": "1"},
            "statuses": [{"errors": [{"code": "x"}]}]}})
        ),
    ]
}

fn body(changes: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "time": 1, "changes": changes}]}))
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse::parse(&bytes);
    }

    #[test]
    fn mutated_bodies_never_panic(changes in proptest::collection::vec(valid_change(), 0..8),
                                  cut in 0usize..4096, byte in any::<u8>()) {
        let mut b = body(changes);
        if !b.is_empty() {
            let i = cut % b.len();
            b[i] = byte;
        }
        let _ = parse::parse(&b);
    }

    #[test]
    fn whole_or_nothing(changes in proptest::collection::vec(valid_change(), 0..12),
                        bad in invalid_change(), at in 0usize..13) {
        let n = changes.len();
        let parsed = parse::parse(&body(changes.clone())).unwrap();
        prop_assert_eq!(parsed.len(), n);
        let known = parsed
            .iter()
            .all(|c| !matches!(c, parse::Change::Ignored { field } if !field.starts_with("x_")));
        prop_assert!(known, "a known field was ignored");
        let mut with_bad = changes;
        with_bad.insert(at.min(n), bad);
        prop_assert!(parse::parse(&body(with_bad)).is_err());
    }
}

#[test]
fn too_many_changes_are_refused() {
    let changes = vec![json!({"field": "x", "value": {}}); 1_001];
    assert!(parse::parse(&body(changes)).is_err());
    let changes = vec![json!({"field": "x", "value": {}}); 1_000];
    assert_eq!(parse::parse(&body(changes)).unwrap().len(), 1_000);
}
