//! What tiergate's tests and benches share, so each constant and helper has one definition.
//!
//! Dev-only (`publish = false`): it appears under `[dev-dependencies]` and never in a
//! production crate's dependencies. Its only dependency is `tiergate-core`, so that the
//! engine's own tests can use it without building a runtime, a network stack or a database.
#![forbid(unsafe_code)]

use std::sync::Arc;

use tiergate_core::{
    Category, Engine, EscalationKind, EscalationPath, ManualClock, OrgConfig, Policy, SendRequest,
    Tier,
};

pub mod redis;
pub mod redis_cluster;
mod rng;

pub use rng::SplitMix64;

/// The instant tests start at (2023-11-14 22:13:20 UTC, in Unix milliseconds).
///
/// A fixed, realistic wall time rather than 0, so that windows that look back 24 h or 7 days
/// never reach before the epoch, and so that every test and bench that records times agrees on
/// where time begins.
pub const T0: u64 = 1_700_000_000_000;

/// One second in milliseconds, the engine's unit of time; with [`HOUR`] and [`DAY`] it makes
/// the windows tests move through (24 h, 7 days) readable.
pub const SEC: u64 = 1_000;
/// One hour in milliseconds (see [`SEC`]).
pub const HOUR: u64 = 3_600 * SEC;
/// One day in milliseconds (see [`SEC`]).
pub const DAY: u64 = 24 * HOUR;

/// The phone number id of the org [`org`] builds: short, because engine-level tests write it
/// often and never check its format against Meta's.
pub const PHONE: &str = "1001";

/// The phone number id of the org in Meta's sample webhooks under `tests/fixtures` (WABA
/// 102290129340398, +1 555 078 3881). The black-box tests register their orgs with it so that
/// the fixture payloads they post reach those orgs.
pub const FIXTURE_PHONE: &str = "106540352242922";

/// The messages per second [`org`] gives its number: high enough that throughput never decides
/// a test unless the test sets a lower rate itself.
pub const FAST_MPS: u32 = 1_000;

/// An engine with `policy` on a [`ManualClock`] stopped at [`T0`], and that clock.
///
/// Tests decide when time moves (`clock.advance`), so a rule that depends on time is checked
/// at exact boundaries and replays identically.
pub fn engine_at_t0(policy: Policy) -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::new(policy, clock.clone()).expect("a valid policy");
    (engine, clock)
}

/// An email escalation path: an org without one may not send more than
/// `Policy::weekly_cap_without_escalation` templates a week, so tests that are not about that
/// cap give their orgs this.
pub fn email() -> EscalationPath {
    EscalationPath::new(EscalationKind::Email, "help@example.com").expect("a valid email path")
}

/// An org at `tier` with one number, [`PHONE`] at [`FAST_MPS`], and an [`email`] escalation
/// path: the smallest org on which every rule except the one a test is about stays out of the
/// way. Change its fields for the rule under test.
pub fn org(org_id: &str, tier: Tier) -> OrgConfig {
    OrgConfig::new(org_id, tier)
        .with_phone(PHONE, FAST_MPS)
        .with_escalation(email())
}

/// A utility send of template `t` from `org_id`'s [`PHONE`] to `to`, without an idempotency
/// key: the send an [`org`] takes unless the test is about the send itself.
pub fn send<'a>(org_id: &'a str, to: &'a str) -> SendRequest<'a> {
    SendRequest {
        org_id,
        phone_number_id: PHONE,
        recipient: to,
        recipient_user_id: None,
        template_name: "t",
        category: Category::Utility,
        idempotency_key: None,
    }
}
