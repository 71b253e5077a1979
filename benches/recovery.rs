//! Restart time of the embedded store: `cargo bench --bench recovery`.
//!
//! Records `TIERGATE_RECOVERY_RECIPIENTS` (1,000,000) allowed sends to distinct recipients
//! across 10 orgs at TIER_UNLIMITED through the journal, closes the store, then opens it again
//! and times the replay that rebuilds every window (then the compaction that turns the facts
//! into snapshots), and opens it a third time to time a start from snapshots.

use std::sync::Arc;
use std::time::Instant;

use tiergate::*;
use tiergate_store::EmbeddedStore;
use tiergate_testkit::email;

fn main() {
    let n: u64 = std::env::var("TIERGATE_RECOVERY_RECIPIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("tiergate-recovery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let orgs = 10u64;
    {
        let base = SystemClock.now_ms() - 3_600_000;
        let manual = Arc::new(ManualClock::new(base));
        let engine = Engine::new(Policy::default(), manual.clone()).unwrap();
        let (store, _) = EmbeddedStore::open_for(&dir, &engine).unwrap();
        for o in 0..orgs {
            engine
                .put_org(
                    OrgConfig::new(format!("org{o}"), Tier::Unlimited)
                        .with_phone(&(1_000 + o).to_string(), 1_000)
                        .with_escalation(email()),
                )
                .unwrap();
        }
        let start = Instant::now();
        for i in 0..n {
            if i % orgs == 0 {
                manual.advance(1);
            }
            let o = i % orgs;
            let org = format!("org{o}");
            let phone = (1_000 + o).to_string();
            let to = (4_915_000_000_000 + i).to_string();
            let d = engine
                .decide(&SendRequest {
                    org_id: &org,
                    phone_number_id: &phone,
                    recipient: &to,
                    recipient_user_id: None,
                    template_name: "t",
                    category: Category::Utility,
                    idempotency_key: None,
                })
                .unwrap();
            assert!(d.is_allowed(), "{d:?}");
        }
        rt.block_on(store.sync()).unwrap();
        println!(
            "recorded {n} sends in {:.1} s (group commit)",
            start.elapsed().as_secs_f64()
        );
        store.close();
    }
    let bytes = std::fs::metadata(dir.join("tiergate.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    // The facts' journal: segment files, pre-zeroed ahead of the last write.
    let journal: u64 = std::fs::read_dir(dir.join("journal"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    println!("journal on disk: {:.1} MB", journal as f64 / 1e6);
    for pass in ["from facts", "from snapshots"] {
        let start = Instant::now();
        let store = EmbeddedStore::open(&dir).unwrap();
        let engine = Engine::new(Policy::default(), Arc::new(SystemClock)).unwrap();
        let r = store.replay(&engine).unwrap();
        let took = start.elapsed();
        let windows: u64 = engine
            .list_orgs()
            .iter()
            .map(|o| o.usage.unique_recipients_24h)
            .sum();
        let bytes_now = std::fs::metadata(dir.join("tiergate.redb"))
            .map(|m| m.len())
            .unwrap_or(0);
        println!(
            "recovery {pass}: {} snapshots + {} facts, {windows} recipients in windows, \
             {:.1} MB on disk before, restored in {:.2} s (replay {:.2} s, compaction {:.2} s), \
             {:.1} MB after",
            r.snapshots,
            r.facts,
            bytes as f64 / 1e6,
            took.as_secs_f64(),
            r.took.as_secs_f64(),
            r.compact.as_secs_f64(),
            bytes_now as f64 / 1e6,
        );
        store.close();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
