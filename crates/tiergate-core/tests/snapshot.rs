//! A snapshot taken anywhere in a log, restored into a fresh engine (through JSON), answers the
//! rest of the log exactly as the original does: what lets a replicated log drop its history.

use std::sync::Arc;

use tiergate_core::*;

mod common;

use common::{T0, log};

fn engine() -> Engine {
    Engine::new(Policy::default(), Arc::new(ManualClock::new(0))).unwrap()
}

#[test]
fn a_restored_snapshot_decides_like_the_original() {
    for seed in 0..60 {
        let cmds = log(seed, 700);
        let cut = 1 + (seed as usize * 37) % (cmds.len() - 1);
        let original = engine();
        for (at, cmd) in &cmds[..cut] {
            let _ = original.execute_at(cmd, *at);
        }
        let json = serde_json::to_string(&original.snapshot_org("o").unwrap()).unwrap();
        let restored = engine();
        restored
            .restore_org(serde_json::from_str(&json).unwrap())
            .unwrap();
        for (i, (at, cmd)) in cmds[cut..].iter().enumerate() {
            assert_eq!(
                original.execute_at(cmd, *at),
                restored.execute_at(cmd, *at),
                "seed {seed}, cut {cut}, command {}: {cmd:?}",
                cut + i
            );
        }
        let end = cmds.last().map_or(T0, |c| c.0) + 1;
        let status = Command::Status { org: "o".into() };
        assert_eq!(
            original.execute_at(&status, end),
            restored.execute_at(&status, end)
        );
    }
}

#[test]
fn a_snapshot_replaces_what_was_there_and_claims_its_ids() {
    let a = engine();
    let cfg = OrgConfig::new("o", Tier::Tier250).with_phone("1", 80);
    a.execute_at(
        &Command::Apply {
            fact: Fact::put_org(0, cfg),
        },
        T0,
    )
    .unwrap();
    let snap = a.snapshot_org("o").unwrap();
    let b = engine();
    b.put_org(OrgConfig::new("o", Tier::Tier50).with_phone("2", 80))
        .unwrap();
    b.restore_org(snap).unwrap();
    assert_eq!(b.get_org("o").unwrap().config.tier, Tier::Tier250);
    assert!(b.lookup_id(IdRef::PhoneNumberId("1")).is_some());
    // Another org cannot hold the same number.
    let mut other = a.snapshot_org("o").unwrap();
    let c = engine();
    c.put_org(OrgConfig::new("p", Tier::Tier50).with_phone("1", 80))
        .unwrap();
    assert!(
        c.restore_org(std::mem::replace(&mut other, b.snapshot_org("o").unwrap()))
            .is_err()
    );
}
