//! What the store's tests share: an embedded store replayed into an engine on a manual clock,
//! and an org's spam strikes (each 131048 adds exactly one, so a fact lost or applied twice
//! shows in the count).

use std::path::Path;
use std::sync::Arc;

use tiergate_core::{Engine, ManualClock, Policy};
use tiergate_store::EmbeddedStore;
use tiergate_testkit::T0;

/// The store in `dir`, replayed into a new engine that journals to it.
pub fn open(dir: &Path) -> (Arc<EmbeddedStore>, Arc<Engine>) {
    let engine = Arc::new(Engine::new(Policy::default(), Arc::new(ManualClock::new(T0))).unwrap());
    let (store, _) = EmbeddedStore::open_for(dir, &engine).unwrap();
    (store, engine)
}

/// Org `z`'s first number's spam strikes.
pub fn strikes(engine: &Engine) -> u64 {
    let snap = serde_json::to_value(engine.snapshot_org("z").unwrap()).unwrap();
    snap["phones"][0]["feedback"]["spam_strikes"]
        .as_u64()
        .unwrap()
}
