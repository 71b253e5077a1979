//! An org's whole state as a value: what a replicated log keeps instead of its history.
//!
//! A log that only grows makes a replica's start, and Redis's memory, grow with traffic. With a
//! snapshot of an org as of one log entry, the entries before it can go: a replica that starts
//! (or falls behind) restores the snapshot and applies only what came after. The snapshot holds
//! everything a later decision can read (windows, the weekly log, GCRA cells, permits,
//! idempotency keys, feedback, appeals, pauses), so a restored org decides exactly as the
//! original would (`tests/snapshot.rs`).

use serde::{Deserialize, Serialize};

use crate::appeal::Appeal;
use crate::backoff::Backoffs;
use crate::deliveries::Deliveries;
use crate::idempotency::{IdempotencyCache, IdempotencyState};
use crate::links::Links;
use crate::number::{NumberFeedback, PhoneSlot};
use crate::org::{OrgConfig, PhoneNumberConfig};
use crate::permit_ledger::PermitLedger;
use crate::policy::Policy;
use crate::rate::{GcraState, PairRate, PairState};
use crate::send_log::SendLog;
use crate::tier::Tier;
use crate::wait_queue::WaitQueue;
use crate::window::Windows;

use super::OrgState;

/// One org's state, serialisable. Opaque: take one with
/// [`crate::Engine::snapshot_org`], give it back with [`crate::Engine::restore_org`].
#[derive(Debug, Serialize, Deserialize)]
pub struct OrgSnapshot {
    config: OrgConfig,
    phones: Vec<PhoneSnapshot>,
    windows: Vec<Vec<(u64, u64)>>,
    log: SendLog,
    pair: PairState,
    ledger: PermitLedger,
    idem: IdempotencyState,
    pending_tier: Option<Tier>,
    flagged_since: Option<u64>,
    account_restricted: bool,
    paused: Vec<(String, Option<u64>)>,
    pair_backoff: Vec<((u16, u64), (u64, u8))>,
    marketing_block: Vec<(u64, (u64, u8))>,
    appeals: Vec<Appeal>,
    appeals_filed: u64,
    sends_total: u64,
    last_now: u64,
    // Added after the first snapshots were written: absent means "not set".
    #[serde(default)]
    marketing_api_required: bool,
    #[serde(default)]
    limit_reduced: bool,
    #[serde(default)]
    pacing_held_at: Option<u64>,
    #[serde(default)]
    upgrade_eligible_since: Option<u64>,
    #[serde(default)]
    deliveries: Deliveries,
    /// BSUID links as (BSUID key, person key).
    #[serde(default)]
    links: Vec<(u64, u64)>,
    /// The class (category) each window entry's slot was taken with, aligned with `windows`.
    #[serde(default)]
    window_classes: Vec<Vec<u8>>,
    /// Waiting sends: with Redis the queue is ordered by the log, so a replica that restores a
    /// snapshot must see the same queue as one that applied the entries before it.
    #[serde(default)]
    waiters: WaitQueue,
}

#[derive(Debug, Serialize, Deserialize)]
struct PhoneSnapshot {
    config: PhoneNumberConfig,
    active: bool,
    throughput: GcraState,
    feedback: NumberFeedback,
}

impl OrgSnapshot {
    /// The org it is a snapshot of.
    pub fn org_id(&self) -> &str {
        &self.config.org_id
    }

    /// The org's config as of the snapshot (for the id index).
    pub fn config(&self) -> &OrgConfig {
        &self.config
    }

    /// Recipients held in its windows: a measure of its size.
    pub fn recipients(&self) -> usize {
        self.windows.iter().map(Vec::len).sum()
    }
}

impl OrgState {
    /// The state as a snapshot (at the org's own time: taking one moves nothing).
    pub(crate) fn snapshot(&self) -> OrgSnapshot {
        let mut paused: Vec<(String, Option<u64>)> = self
            .paused
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        paused.sort();
        OrgSnapshot {
            config: self.config.clone(),
            phones: self
                .phones
                .iter()
                .map(|p| {
                    let (throughput, feedback) = p.state();
                    PhoneSnapshot {
                        config: p.config.clone(),
                        active: p.active,
                        throughput,
                        feedback,
                    }
                })
                .collect(),
            windows: self.windows.entries(),
            log: self.log.clone(),
            pair: self.pair.state(),
            ledger: self.ledger.clone(),
            idem: self.idem.state(),
            pending_tier: self.pending_tier,
            flagged_since: self.flagged_since,
            account_restricted: self.account_restricted,
            paused,
            pair_backoff: self.pair_backoff.entries(),
            marketing_block: self.marketing_block.entries(),
            appeals: self.appeals.iter().cloned().collect(),
            appeals_filed: self.appeals_filed,
            sends_total: self.sends_total,
            last_now: self.last_now,
            marketing_api_required: self.marketing_api_required,
            limit_reduced: self.limit_reduced,
            pacing_held_at: self.pacing_held_at,
            upgrade_eligible_since: self.upgrade_eligible_since,
            deliveries: self.deliveries.clone(),
            links: self.links.entries(),
            window_classes: self.windows.classes(),
            waiters: self.waiters.clone(),
        }
    }

    /// The state a snapshot kept.
    pub(crate) fn from_snapshot(snap: OrgSnapshot, policy: &Policy) -> OrgState {
        let mut st = OrgState::new(snap.config.clone(), policy, snap.last_now);
        st.phones = snap
            .phones
            .into_iter()
            .map(|p| PhoneSlot::restore(p.config, p.active, p.throughput, p.feedback, policy))
            .collect();
        st.phone_index.clear();
        for (i, p) in st.phones.iter().enumerate() {
            if p.active {
                st.phone_index.insert(p.key, i as u16);
            }
        }
        st.first_phone = st.phones.first().filter(|p| p.active).map(|p| p.key);
        st.config = snap.config;
        st.windows = Windows::from_entries(&snap.windows, &snap.window_classes);
        st.log = snap.log;
        st.pair = PairRate::restore(
            policy.pair_rate_period_ms,
            policy.pair_rate_burst,
            snap.pair,
            snap.last_now,
        );
        st.ledger = snap.ledger;
        st.idem = IdempotencyCache::restore(snap.idem);
        st.pending_tier = snap.pending_tier;
        st.flagged_since = snap.flagged_since;
        st.account_restricted = snap.account_restricted;
        st.paused = snap
            .paused
            .into_iter()
            .map(|(k, v)| (k.into_boxed_str(), v))
            .collect();
        st.pair_backoff = Backoffs::from_entries(snap.pair_backoff);
        st.marketing_block = Backoffs::from_entries(snap.marketing_block);
        st.appeals = snap.appeals.into_iter().collect();
        st.appeals_filed = snap.appeals_filed;
        st.sends_total = snap.sends_total;
        st.marketing_api_required = snap.marketing_api_required;
        st.limit_reduced = snap.limit_reduced;
        st.pacing_held_at = snap.pacing_held_at;
        st.upgrade_eligible_since = snap.upgrade_eligible_since;
        st.deliveries = snap.deliveries;
        st.links = Links::from_entries(snap.links);
        st.waiters = snap.waiters;
        st.last_now = snap.last_now;
        st
    }
}
