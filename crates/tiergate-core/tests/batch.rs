//! Batches (SPEC §2a): a malformed item or an unknown org refuses the whole batch, naming the
//! item, and records nothing. (That a batch decides like its items in sequence is the oracle's
//! job: `tests/oracle.rs` sends batches.)

use tiergate_core::*;
use tiergate_testkit::{engine_at_t0, org, send};

#[test]
fn a_batch_decides_in_order_with_permits_in_sequence() {
    let (engine, _clock) = engine_at_t0(Policy::default());
    engine.put_org(org("o", Tier::Tier250)).unwrap();
    let ds = engine
        .decide_batch(&[send("o", "111"), send("o", "222"), send("o", "111")])
        .unwrap();
    let seqs: Vec<_> = ds
        .iter()
        .map(|d| d.permit.as_ref().map(|p| p.seq))
        .collect();
    assert_eq!(seqs, vec![Some(0), Some(1), None]);
    assert_eq!(ds[2].reason, Some(DenyReason::PairRate));
}

#[test]
fn a_bad_item_refuses_the_batch_by_name_and_records_nothing() {
    let (engine, _clock) = engine_at_t0(Policy::default());
    engine.put_org(org("o", Tier::Tier250)).unwrap();
    let before = format!("{:?}", engine.snapshot_org("o").unwrap());
    let e = engine
        .decide_batch(&[send("o", "111"), send("o", "+49")])
        .unwrap_err();
    assert_eq!(e.index, 1);
    match &e.error {
        EngineError::Invalid(v) => assert_eq!(v.field, "sends[1].recipient"),
        other => panic!("{other:?}"),
    }
    let e = engine
        .decide_batch(&[send("o", "111"), send("nobody", "222")])
        .unwrap_err();
    assert_eq!(e.index, 1);
    assert!(matches!(e.error, EngineError::UnknownOrg(_)));
    assert_eq!(format!("{:?}", engine.snapshot_org("o").unwrap()), before);
    assert_eq!(engine.org_count(), 1);
}
