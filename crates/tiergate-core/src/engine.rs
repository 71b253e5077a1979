//! The engine: the policy, the clock, the registry of orgs, and the library's public API.
//!
//! Every public call reads the injected clock once, here at the edge, and passes that time
//! down; nothing below reads a clock. Changes take one route ([`Engine::execute_at`] and the
//! private `commit` in `execute.rs`), so a live call, a journal replay and a replica applying its
//! log change an org the same way. The engine does no I/O; durable stores and servers wrap it.

use std::sync::{Arc, OnceLock};

use crate::appeal::{Appeal, AppealId};
use crate::change::Change;
use crate::clock::Clock;
use crate::decision::{Decision, Permit, SendOutcome, SendRequest};
use crate::error::{EngineError, PolicyError};
use crate::escalation::EscalationPath;
use crate::id_index::{IdOwner, IdRef};
use crate::journal::{Fact, Journal};
use crate::org::{OrgConfig, OrgStatus};
use crate::org_state::{OrgSnapshot, Reaction, TierChange};
use crate::policy::Policy;
use crate::quality::QualityRating;
use crate::registry::Registry;
use crate::tier::Tier;

/// The policy engine. Share it with `Arc<Engine>`; every method takes `&self`.
pub struct Engine {
    pub(crate) policy: Policy,
    clock: Arc<dyn Clock>,
    pub(crate) registry: Registry,
    journal: OnceLock<Arc<dyn Journal>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("policy", &self.policy)
            .field("orgs", &self.registry.len())
            .finish()
    }
}

impl Engine {
    /// An engine with no orgs. The policy is validated first.
    pub fn new(policy: Policy, clock: Arc<dyn Clock>) -> Result<Self, PolicyError> {
        policy.validate()?;
        Ok(Self {
            policy,
            clock,
            registry: Registry::new(),
            journal: OnceLock::new(),
        })
    }

    /// Hands every later state change to `journal` (once; after a store replayed its facts).
    /// Returns `false` if a journal was already set.
    pub fn set_journal(&self, journal: Arc<dyn Journal>) -> bool {
        self.journal.set(journal).is_ok()
    }

    /// Records a fact if a journal is set; the closure only runs then. Called with the org's
    /// lock held, so facts reach the journal in the order they were applied.
    #[inline]
    pub(crate) fn emit(&self, fact: impl FnOnce() -> Fact) {
        if let Some(j) = self.journal.get() {
            j.record(fact());
        }
    }

    /// The journal's position (0 without one).
    pub(crate) fn journal_position(&self) -> u64 {
        self.journal.get().map_or(0, |j| j.position())
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The clock the engine reads (once per call, at the edge).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The time a call made now runs at.
    #[inline]
    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Number of registered orgs.
    pub fn org_count(&self) -> usize {
        self.registry.len()
    }

    /// Whether an org is registered.
    pub fn has_org(&self, org_id: &str) -> bool {
        self.registry.contains(org_id)
    }

    /// Decides one send now and, when it is allowed, records it (SPEC §2 rules 1–11).
    ///
    /// Malformed fields give [`EngineError::Invalid`]; an unknown org or number gives
    /// `UnknownOrg` / `UnknownPhoneNumber` and creates no state. A denial is `Ok`.
    pub fn decide(&self, req: &SendRequest<'_>) -> Result<Decision, EngineError> {
        self.decide_at(req, self.now())
    }

    /// Records what happened to an allowed send. `NotSent` gives back its window slot and counts;
    /// `Rejected` applies the error code's reaction (see [`crate::Reaction`]); reporting twice is
    /// refused so nothing is refunded or punished twice.
    pub fn report(&self, permit: &Permit, outcome: SendOutcome) -> Result<Reaction, EngineError> {
        self.report_at(permit, outcome, self.now())
    }

    /// [`Engine::report`] at `now` instead of the clock's time: a replay that runs orgs on
    /// several threads gives each call its own event's time (as [`Engine::decide_at`] does).
    pub fn report_at(
        &self,
        permit: &Permit,
        outcome: SendOutcome,
        now: u64,
    ) -> Result<Reaction, EngineError> {
        let change = Change::Report {
            seq: permit.seq,
            outcome,
        };
        self.commit(&permit.org_id, &change, now)?.into_reaction()
    }

    /// Registers an org, or updates it. An update keeps the org's windows and counts; a tier
    /// increase in it passes the escalation gate like any other.
    pub fn put_org(&self, config: OrgConfig) -> Result<OrgStatus, EngineError> {
        let org = config.org_id.clone();
        self.change(&org, Change::PutOrg { config })?.into_org()
    }

    /// Applies a WhatsApp error code seen for a send of `org_id` (from a webhook or an upstream
    /// answer). Returns what it changed.
    pub fn feedback(
        &self,
        org_id: &str,
        phone_number_id: Option<&str>,
        recipient: Option<&str>,
        template_name: Option<&str>,
        error_code: i32,
    ) -> Result<Reaction, EngineError> {
        let change = Change::Feedback {
            phone: phone_number_id.map(str::to_owned),
            recipient: recipient.map(str::to_owned),
            template: template_name.map(str::to_owned),
            code: error_code,
        };
        self.change(org_id, change)?.into_reaction()
    }

    /// Sets a number's messages per second (e.g. WhatsApp's THROUGHPUT_UPGRADE to 1,000).
    pub fn set_number_throughput(
        &self,
        org_id: &str,
        phone_number_id: &str,
        mps: u32,
    ) -> Result<OrgStatus, EngineError> {
        let change = Change::NumberThroughput {
            phone: phone_number_id.to_owned(),
            mps,
        };
        self.change(org_id, change)?.into_org()
    }

    /// Sets the org's escalation path; a held tier increase is applied at once.
    pub fn set_escalation_path(
        &self,
        org_id: &str,
        path: EscalationPath,
    ) -> Result<OrgStatus, EngineError> {
        self.change(org_id, Change::EscalationSet { path })?
            .into_org()
    }

    /// Removes the org's escalation path.
    pub fn clear_escalation_path(&self, org_id: &str) -> Result<OrgStatus, EngineError> {
        self.change(org_id, Change::EscalationCleared)?.into_org()
    }

    /// Changes the quality rating (admin, or a webhook). RED starts the grace period.
    pub fn set_quality_rating(
        &self,
        org_id: &str,
        rating: QualityRating,
    ) -> Result<OrgStatus, EngineError> {
        self.change(org_id, Change::Rating { rating })?.into_org()
    }

    /// Asks for a tier: decreases apply, increases are held while there is no escalation path.
    pub fn request_tier_change(
        &self,
        org_id: &str,
        target: Tier,
    ) -> Result<TierChange, EngineError> {
        self.change(org_id, Change::TierRequest { tier: target })?
            .into_tier()
    }

    /// Blocks or unblocks the account (rule 3): error codes 368 and 131031, or an admin.
    pub fn set_account_restricted(
        &self,
        org_id: &str,
        restricted: bool,
    ) -> Result<OrgStatus, EngineError> {
        self.change(org_id, Change::AccountRestricted { restricted })?
            .into_org()
    }

    /// Re-enables (or disables) the org's MARKETING sends on the Cloud API: after error 131063
    /// they are denied with `MARKETING_API_REQUIRED` until an admin clears it here.
    pub fn set_marketing_api_required(
        &self,
        org_id: &str,
        required: bool,
    ) -> Result<OrgStatus, EngineError> {
        self.change(org_id, Change::MarketingApiRequired { required })?
            .into_org()
    }

    /// Pauses a template until `until_ms`, or disables it (`None`) until reinstated (rule 4).
    pub fn pause_template(
        &self,
        org_id: &str,
        template_name: &str,
        until_ms: Option<u64>,
    ) -> Result<OrgStatus, EngineError> {
        let change = Change::TemplatePaused {
            template: template_name.to_owned(),
            until: until_ms,
        };
        self.change(org_id, change)?.into_org()
    }

    /// Lifts a pause or a disable.
    pub fn reinstate_template(
        &self,
        org_id: &str,
        template_name: &str,
    ) -> Result<OrgStatus, EngineError> {
        let change = Change::TemplateReinstated {
            template: template_name.to_owned(),
        };
        self.change(org_id, change)?.into_org()
    }

    /// Files an appeal against a low rating; it is pending until resolved.
    pub fn file_appeal(&self, org_id: &str, evidence: &str) -> Result<Appeal, EngineError> {
        let change = Change::AppealFiled {
            evidence: evidence.to_owned(),
        };
        self.change(org_id, change)?.into_appeal()
    }

    /// Resolves an appeal. Approval clears RED and the restriction; rejection changes nothing.
    pub fn resolve_appeal(&self, id: &AppealId, approved: bool) -> Result<Appeal, EngineError> {
        let change = Change::AppealResolved { n: id.n, approved };
        self.change(&id.org_id, change)
            .map_err(|e| match e {
                EngineError::UnknownOrg(_) => EngineError::UnknownAppeal(id.to_string()),
                e => e,
            })?
            .into_appeal()
    }

    /// An appeal by id.
    pub fn get_appeal(&self, id: &AppealId) -> Result<Appeal, EngineError> {
        self.registry
            .with_org(&id.org_id, |st| st.appeal(id.n).cloned())
            .ok()
            .flatten()
            .ok_or_else(|| EngineError::UnknownAppeal(id.to_string()))
    }

    /// An org's live status now.
    pub fn get_org(&self, org_id: &str) -> Result<OrgStatus, EngineError> {
        self.status_at(org_id, self.now())
    }

    /// An org's status as of the last call that touched it, without moving its clock: for
    /// observers (metrics) of a replica whose time must come only from its log.
    pub fn peek_org(&self, org_id: &str) -> Result<OrgStatus, EngineError> {
        self.registry.with_org(org_id, |st| {
            let t = st.last_now();
            st.status(&self.policy, t)
        })
    }

    /// Every org's status now, ordered by id.
    pub fn list_orgs(&self) -> Vec<OrgStatus> {
        let now = self.now();
        self.registry.each(|st| {
            let now = st.advance(now);
            st.status(&self.policy, now)
        })
    }

    /// The ids of every org, ordered.
    pub fn org_ids(&self) -> Vec<String> {
        self.registry.org_ids()
    }

    /// The org (and number) a WhatsApp id belongs to: what webhooks name.
    pub fn lookup_id(&self, id: IdRef<'_>) -> Option<IdOwner> {
        self.registry.lookup(id)
    }

    /// The org's whole state as of the last call that touched it (its clock is not moved).
    pub fn snapshot_org(&self, org_id: &str) -> Result<OrgSnapshot, EngineError> {
        self.registry.with_org(org_id, |st| st.snapshot())
    }

    /// The org's snapshot and the journal's position at that instant (read under the org's
    /// lock): every fact of the org numbered up to it is in the snapshot, every later one is
    /// not. What a store compacting while it runs needs.
    pub fn snapshot_org_journaled(&self, org_id: &str) -> Result<(OrgSnapshot, u64), EngineError> {
        self.registry
            .with_org(org_id, |st| (st.snapshot(), self.journal_position()))
    }

    /// Puts an org back in the state `snap` kept, replacing what is there. The org's ids are
    /// claimed as a registration would (and refused the same way).
    pub fn restore_org(&self, snap: OrgSnapshot) -> Result<(), EngineError> {
        self.registry.restore(snap, &self.policy)
    }

    /// A change to `org_id` made now.
    fn change(&self, org_id: &str, change: Change) -> Result<crate::Outcome, EngineError> {
        self.commit(org_id, &change, self.now())
    }
}
