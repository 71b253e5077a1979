//! A compaction while facts keep coming: the facts recorded between the position a compaction
//! drops up to and an org's snapshot are already in the snapshot, so the next start must skip
//! them. A fact applied twice shows here: each 131048 adds exactly one spam strike.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{open, strikes};
use tiergate_core::*;

#[test]
fn facts_recorded_during_a_compaction_are_applied_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for round in 0..3 {
        let dir = std::env::temp_dir().join(format!(
            "tiergate-compaction-{}-{round}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let (store, engine) = open(&dir);
        // Orgs are snapshotted in id order: many before "z", so facts of "z" keep coming
        // between the position read first and the moment "z" is snapshotted.
        for i in 0..300 {
            engine
                .put_org(OrgConfig::new(format!("a{i:03}"), Tier::Tier1K))
                .unwrap();
        }
        engine
            .put_org(OrgConfig::new("z", Tier::Tier1K).with_phone("1", 80))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let applied = Arc::new(AtomicU64::new(0));
        let hammer = {
            let (engine, stop, applied) = (engine.clone(), stop.clone(), applied.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) && applied.load(Ordering::SeqCst) < 20_000 {
                    engine
                        .feedback("z", Some("1"), None, None, 131_048)
                        .unwrap();
                    applied.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        while applied.load(Ordering::SeqCst) < 50 {
            std::thread::yield_now();
        }
        let c = store.prepare_compaction(&engine).unwrap();
        rt.block_on(store.wait_durable(c.reflects())).unwrap();
        store.commit_compaction(&c).unwrap();
        stop.store(true, Ordering::SeqCst);
        hammer.join().unwrap();
        rt.block_on(store.sync()).unwrap();
        let want = strikes(&engine);
        assert_eq!(want, applied.load(Ordering::SeqCst));
        store.close();
        drop((store, engine));
        let (store, engine) = open(&dir);
        assert_eq!(strikes(&engine), want, "round {round}");
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
