//! The engine: the registry of orgs and the public API of the library.
//!
//! Orgs live in a sharded map (`dashmap`), each behind its own mutex, so decisions for different
//! orgs run in parallel and decisions for one org are serialised (exact last-slot races). The
//! engine reads its injected clock once per call and does no I/O; durable stores and servers
//! wrap it.

use std::sync::{Arc, OnceLock};

use compact_str::CompactString;
use dashmap::DashMap;
use parking_lot::Mutex;

use crate::appeal::{Appeal, AppealId, validate_evidence};
use crate::clock::Clock;
use crate::command::{Command, Outcome};
use crate::decide::CheckedSend;
use crate::decision::{Decision, Permit, SendOutcome, SendRequest};
use crate::error::{EngineError, PolicyError, ValidationError};
use crate::escalation::EscalationPath;
use crate::feedback::Reaction;
use crate::id_index::{IdIndex, IdOwner, IdRef};
use crate::journal::{Fact, Journal};
use crate::org::{OrgConfig, OrgStatus};
use crate::org_state::OrgState;
use crate::policy::Policy;
use crate::quality::QualityRating;
use crate::snapshot::OrgSnapshot;
use crate::tier::Tier;
use crate::tier_change::TierChange;
use crate::validate::{self, RecipientKey};

/// Keys are inline strings (org ids up to 24 bytes need no heap), so a lookup compares the key
/// in the table's own memory instead of chasing a pointer per probe.
type OrgMap = DashMap<CompactString, Mutex<OrgState>, foldhash::fast::RandomState>;

thread_local! {
    /// The time [`Engine::execute_at`] runs a command at, on this thread.
    static AT_MS: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

fn org_outcome(st: OrgStatus) -> Outcome {
    Outcome::Org(Box::new(st))
}

/// Shards of the org map (a power of two).
const ORG_SHARDS: usize = 256;

/// The policy engine. Share it with `Arc<Engine>`; every method takes `&self`.
pub struct Engine {
    policy: Policy,
    clock: Arc<dyn Clock>,
    orgs: OrgMap,
    ids: IdIndex,
    admin: Mutex<()>,
    journal: OnceLock<Arc<dyn Journal>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("policy", &self.policy)
            .field("orgs", &self.orgs.len())
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
            // Many shards: each decision takes a shard's read lock, and with few shards the
            // lock's cache line bounces between cores even for unrelated orgs.
            orgs: OrgMap::with_hasher_and_shard_amount(Default::default(), ORG_SHARDS),
            ids: IdIndex::default(),
            admin: Mutex::new(()),
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
    fn emit(&self, fact: impl FnOnce() -> Fact) {
        if let Some(j) = self.journal.get() {
            j.record(fact());
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The clock the engine reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Number of registered orgs.
    pub fn org_count(&self) -> usize {
        self.orgs.len()
    }

    /// Decides one send and, when it is allowed, records it (SPEC §2 rules 1–11).
    ///
    /// Malformed fields give [`EngineError::Invalid`]; an unknown org or number gives
    /// `UnknownOrg` / `UnknownPhoneNumber` and creates no state. A denial is `Ok`.
    pub fn decide(&self, req: &SendRequest<'_>) -> Result<Decision, EngineError> {
        validate::org_id(req.org_id)?;
        let phone = validate::phone_key(req.phone_number_id)?;
        let recipient = RecipientKey::parse(req.recipient)?;
        validate::template_name(req.template_name)?;
        if let Some(k) = req.idempotency_key {
            validate::idempotency_key(k)?;
        }
        let now = self.now();
        let org = self
            .orgs
            .get(req.org_id)
            .ok_or_else(|| EngineError::UnknownOrg(req.org_id.to_owned()))?;
        let mut st = org.lock();
        let slot = st.slot_of(req.phone_number_id, phone)?;
        let send = CheckedSend {
            slot,
            recipient,
            template_name: req.template_name,
            category: req.category,
            idempotency_key: req.idempotency_key,
        };
        let d = st.decide(&self.policy, send, now);
        if d.is_allowed() && !d.replayed {
            self.emit(|| Fact::Send {
                at: st.last_now,
                org: req.org_id.to_owned(),
                phone: req.phone_number_id.to_owned(),
                recipient: req.recipient.to_owned(),
                key: req.idempotency_key.map(str::to_owned),
                seq: d.permit.as_ref().map_or(0, |p| p.seq),
            });
        }
        Ok(d)
    }

    /// Checks a send without deciding it: its fields, its org and its number. A replicated
    /// store asks this before it orders a send in its log, so that malformed sends and unknown
    /// ids never reach the log (or grow it).
    pub fn check_send(&self, req: &SendRequest<'_>) -> Result<(), EngineError> {
        validate::org_id(req.org_id)?;
        let phone = validate::phone_key(req.phone_number_id)?;
        RecipientKey::parse(req.recipient)?;
        validate::template_name(req.template_name)?;
        if let Some(k) = req.idempotency_key {
            validate::idempotency_key(k)?;
        }
        let org = self
            .orgs
            .get(req.org_id)
            .ok_or_else(|| EngineError::UnknownOrg(req.org_id.to_owned()))?;
        org.lock().slot_of(req.phone_number_id, phone).map(drop)
    }

    /// Checks what a fact's fields must satisfy, without applying it: a replicated store asks
    /// this before it writes the fact to its log, so a malformed change never reaches the log.
    pub fn check_fact(&self, fact: &Fact) -> Result<(), EngineError> {
        validate::org_id(fact.org())?;
        match fact {
            Fact::PutOrg { org, .. } => org.validate(self.policy.max_throughput_mps)?,
            Fact::TemplatePaused { template, .. } | Fact::TemplateReinstated { template, .. } => {
                validate::template_name(template).map(drop)?
            }
            Fact::AppealFiled { evidence, .. } => validate_evidence(evidence)?,
            Fact::Feedback {
                phone,
                recipient,
                template,
                ..
            } => {
                if let Some(p) = phone {
                    validate::phone_key(p)?;
                }
                if let Some(r) = recipient {
                    RecipientKey::parse(r)?;
                }
                if let Some(t) = template {
                    validate::template_name(t)?;
                }
            }
            Fact::NumberThroughput { phone, mps, .. } => {
                validate::phone_key(phone)?;
                if *mps == 0 || *mps > self.policy.max_throughput_mps {
                    return Err(ValidationError::new(
                        "throughput_mps",
                        format!("must be 1..={}", self.policy.max_throughput_mps),
                    )
                    .into());
                }
            }
            Fact::Send {
                phone, recipient, ..
            } => {
                validate::phone_key(phone)?;
                RecipientKey::parse(recipient)?;
            }
            Fact::Report { .. }
            | Fact::EscalationSet { .. }
            | Fact::EscalationCleared { .. }
            | Fact::Rating { .. }
            | Fact::TierRequest { .. }
            | Fact::AccountRestricted { .. }
            | Fact::AppealResolved { .. } => {}
        }
        Ok(())
    }

    /// The org's whole state as of the last call that touched it (its clock is not moved).
    pub fn snapshot_org(&self, org_id: &str) -> Result<OrgSnapshot, EngineError> {
        self.with_org(org_id, |st, _| st.snapshot())
    }

    /// The org's snapshot and the journal's position at that instant (read under the org's
    /// lock): every fact of the org numbered up to it is in the snapshot, every later one is
    /// not. What a store compacting while it runs needs.
    pub fn snapshot_org_journaled(&self, org_id: &str) -> Result<(OrgSnapshot, u64), EngineError> {
        self.with_org(org_id, |st, _| {
            let at = self.journal.get().map_or(0, |j| j.position());
            (st.snapshot(), at)
        })
    }

    /// Puts an org back in the state `snap` kept, replacing what is there. The org's ids are
    /// claimed as a registration would (and refused the same way).
    pub fn restore_org(&self, snap: OrgSnapshot) -> Result<(), EngineError> {
        validate::org_id(snap.org_id())?;
        let _admin = self.admin.lock();
        let old_ids = self.ids.check_claim(snap.config())?;
        let config = snap.config().clone();
        let st = OrgState::from_snapshot(snap, &self.policy);
        self.orgs
            .insert(CompactString::from(config.org_id.as_str()), Mutex::new(st));
        self.ids.claim(&config, &old_ids);
        Ok(())
    }

    /// Whether an org is registered.
    pub fn has_org(&self, org_id: &str) -> bool {
        self.orgs.contains_key(org_id)
    }

    /// Replays a recorded send: counts it exactly as it was counted, without judging it again
    /// (the rules already allowed it once). For stores restoring their facts.
    fn restore_send(
        &self,
        org_id: &str,
        phone_number_id: &str,
        recipient: &str,
        key: Option<&str>,
        seq: u64,
    ) -> Result<(), EngineError> {
        let phone = validate::phone_key(phone_number_id)?;
        let recipient = RecipientKey::parse(recipient)?;
        let now = self.now();
        self.with_org(org_id, |st, policy| {
            let slot = st.slot_of(phone_number_id, phone)?;
            let send = CheckedSend {
                slot,
                recipient,
                template_name: "restored",
                category: crate::decision::Category::Utility,
                idempotency_key: key,
            };
            let got = st.restore(policy, send, now);
            if got != seq {
                return Err(EngineError::Invalid(ValidationError::new(
                    "fact.seq",
                    format!("replayed permit {got} where the journal says {seq}"),
                )));
            }
            Ok(())
        })?
    }

    /// Applies one fact from a journal, on a clock the caller set to the fact's time.
    pub fn apply_fact(&self, fact: &Fact) -> Result<(), EngineError> {
        self.apply(fact).map(drop)
    }

    /// Runs one command at `at_ms` instead of the clock's time, and returns its answer. A
    /// replicated store applies its log through this: the same log gives every replica the same
    /// answers and the same state. Time is per thread, so other calls are not affected.
    pub fn execute_at(&self, cmd: &Command, at_ms: u64) -> Result<Outcome, EngineError> {
        struct Reset(Option<u64>);
        impl Drop for Reset {
            fn drop(&mut self) {
                AT_MS.with(|c| c.set(self.0));
            }
        }
        let _reset = Reset(AT_MS.with(|c| c.replace(Some(at_ms))));
        self.execute(cmd)
    }

    /// Runs one command now, and returns its answer.
    pub fn execute(&self, cmd: &Command) -> Result<Outcome, EngineError> {
        match cmd {
            Command::Decide {
                org,
                phone,
                recipient,
                template,
                category,
                key,
            } => self
                .decide(&SendRequest {
                    org_id: org,
                    phone_number_id: phone,
                    recipient,
                    template_name: template,
                    category: *category,
                    idempotency_key: key.as_deref(),
                })
                .map(Outcome::Decision),
            Command::Status { org } => self.get_org(org).map(org_outcome),
            Command::Apply { fact } => self.apply(fact),
        }
    }

    /// The time a call uses: the command's when [`Engine::execute_at`] set one, else the clock's.
    #[inline]
    fn now(&self) -> u64 {
        AT_MS
            .with(std::cell::Cell::get)
            .unwrap_or_else(|| self.clock.now_ms())
    }

    fn apply(&self, fact: &Fact) -> Result<Outcome, EngineError> {
        match fact {
            Fact::PutOrg { org, .. } => self.put_org(org.clone()).map(org_outcome),
            Fact::Send {
                org,
                phone,
                recipient,
                key,
                seq,
                ..
            } => self
                .restore_send(org, phone, recipient, key.as_deref(), *seq)
                .map(|()| Outcome::Restored),
            Fact::Report {
                org, seq, outcome, ..
            } => {
                let outcome = match outcome {
                    None => SendOutcome::Sent,
                    Some(0) => SendOutcome::NotSent,
                    Some(code) => SendOutcome::Rejected { error_code: *code },
                };
                let permit = Permit {
                    org_id: Arc::from(org.as_str()),
                    seq: *seq,
                };
                self.report(&permit, outcome).map(Outcome::Reaction)
            }
            Fact::EscalationSet { org, path, .. } => {
                self.set_escalation_path(org, path.clone()).map(org_outcome)
            }
            Fact::EscalationCleared { org, .. } => self.clear_escalation_path(org).map(org_outcome),
            Fact::Rating { org, rating, .. } => {
                self.set_quality_rating(org, *rating).map(org_outcome)
            }
            Fact::TierRequest { org, tier, .. } => {
                self.request_tier_change(org, *tier).map(Outcome::Tier)
            }
            Fact::AccountRestricted {
                org, restricted, ..
            } => self
                .set_account_restricted(org, *restricted)
                .map(org_outcome),
            Fact::TemplatePaused {
                org,
                template,
                until,
                ..
            } => self.pause_template(org, template, *until).map(org_outcome),
            Fact::TemplateReinstated { org, template, .. } => {
                self.reinstate_template(org, template).map(org_outcome)
            }
            Fact::AppealFiled { org, evidence, .. } => {
                self.file_appeal(org, evidence).map(Outcome::Appeal)
            }
            Fact::AppealResolved {
                org, n, approved, ..
            } => {
                let id = AppealId {
                    org_id: org.clone(),
                    n: *n,
                };
                self.resolve_appeal(&id, *approved).map(Outcome::Appeal)
            }
            Fact::Feedback {
                org,
                phone,
                recipient,
                template,
                code,
                ..
            } => self
                .feedback(
                    org,
                    phone.as_deref(),
                    recipient.as_deref(),
                    template.as_deref(),
                    *code,
                )
                .map(Outcome::Reaction),
            Fact::NumberThroughput {
                org, phone, mps, ..
            } => self
                .set_number_throughput(org, phone, *mps)
                .map(org_outcome),
        }
    }

    /// Records what happened to an allowed send. `NotSent` gives back its window slot and counts;
    /// `Rejected` applies the error code's reaction (see [`crate::Reaction`]); reporting twice is
    /// refused so nothing is refunded or punished twice.
    pub fn report(&self, permit: &Permit, outcome: SendOutcome) -> Result<Reaction, EngineError> {
        let now = self.now();
        self.with_org(&permit.org_id, |st, policy| {
            let r = st.report(policy, permit, outcome, now)?;
            self.emit(|| Fact::Report {
                at: st.last_now,
                org: permit.org_id.to_string(),
                seq: permit.seq,
                outcome: Fact::outcome(outcome),
            });
            Ok(r)
        })?
    }

    /// Registers an org, or updates it. An update keeps the org's windows and counts; a tier
    /// increase in it passes the escalation gate like any other.
    pub fn put_org(&self, config: OrgConfig) -> Result<OrgStatus, EngineError> {
        config.validate(self.policy.max_throughput_mps)?;
        // One registration at a time, so two orgs cannot claim the same id at once.
        let _admin = self.admin.lock();
        let old_ids = self.ids.check_claim(&config)?;
        let now = self.now();
        let entry = self.orgs.entry(CompactString::from(config.org_id.as_str()));
        let status = match entry {
            dashmap::Entry::Occupied(o) => {
                let mut st = o.get().lock();
                st.check_phones(&config.phone_numbers)?;
                let now = st.advance(now);
                st.update(config.clone(), &self.policy, now);
                self.emit(|| Fact::PutOrg {
                    at: now,
                    org: config.clone(),
                });
                st.status(&self.policy, now)
            }
            dashmap::Entry::Vacant(v) => {
                let mut st = OrgState::new(config.clone(), &self.policy, now);
                let status = st.status(&self.policy, now);
                self.emit(|| Fact::PutOrg {
                    at: now,
                    org: config.clone(),
                });
                v.insert(Mutex::new(st));
                status
            }
        };
        self.ids.claim(&config, &old_ids);
        Ok(status)
    }

    /// The org (and number) a WhatsApp id belongs to: what webhooks name.
    pub fn lookup_id(&self, id: IdRef<'_>) -> Option<IdOwner> {
        self.ids.get(id)
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
        let phone = phone_number_id.map(validate::phone_key).transpose()?;
        let recipient = recipient.map(RecipientKey::parse).transpose()?;
        if let Some(t) = template_name {
            validate::template_name(t)?;
        }
        let now = self.now();
        self.with_org(org_id, |st, policy| {
            let slot = match (phone_number_id, phone) {
                (Some(id), Some(key)) => Some(st.slot_of(id, key)?),
                _ => None,
            };
            let r = st.feedback(policy, slot, recipient, template_name, error_code, now);
            self.emit(|| Fact::Feedback {
                at: st.last_now,
                org: org_id.to_owned(),
                phone: phone_number_id.map(str::to_owned),
                recipient: recipient.map(RecipientKey::digits),
                template: template_name.map(str::to_owned),
                code: error_code,
            });
            Ok(r)
        })?
    }

    /// Sets a number's messages per second (e.g. WhatsApp's THROUGHPUT_UPGRADE to 1,000).
    pub fn set_number_throughput(
        &self,
        org_id: &str,
        phone_number_id: &str,
        mps: u32,
    ) -> Result<OrgStatus, EngineError> {
        let key = validate::phone_key(phone_number_id)?;
        if mps == 0 || mps > self.policy.max_throughput_mps {
            return Err(ValidationError::new(
                "throughput_mps",
                format!("must be 1..={}", self.policy.max_throughput_mps),
            )
            .into());
        }
        let now = self.now();
        self.with_org(org_id, |st, policy| {
            let slot = st.slot_of(phone_number_id, key)?;
            let now = st.advance(now);
            let mut phones = st.config.phone_numbers.clone();
            for p in &mut phones {
                if p.phone_number_id == st.phones[slot as usize].config.phone_number_id {
                    p.throughput_mps = mps;
                }
            }
            st.set_phones(phones, policy);
            self.emit(|| Fact::NumberThroughput {
                at: now,
                org: org_id.to_owned(),
                phone: phone_number_id.to_owned(),
                mps,
            });
            Ok(st.status(policy, now))
        })?
    }

    /// An org's live status.
    pub fn get_org(&self, org_id: &str) -> Result<OrgStatus, EngineError> {
        let now = self.now();
        self.with_org(org_id, |st, policy| st.status(policy, now))
    }

    /// An org's status as of the last call that touched it, without moving its clock: for
    /// observers (metrics) of a replica whose time must come only from its log.
    pub fn peek_org(&self, org_id: &str) -> Result<OrgStatus, EngineError> {
        self.with_org(org_id, |st, policy| {
            let t = st.last_now;
            st.status(policy, t)
        })
    }

    /// The ids of every org, ordered.
    pub fn org_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.orgs.iter().map(|e| e.key().to_string()).collect();
        ids.sort();
        ids
    }

    /// Every org's status, ordered by id.
    pub fn list_orgs(&self) -> Vec<OrgStatus> {
        let now = self.now();
        let mut out: Vec<OrgStatus> = self
            .orgs
            .iter()
            .map(|e| e.value().lock().status(&self.policy, now))
            .collect();
        out.sort_by(|a, b| a.config.org_id.cmp(&b.config.org_id));
        out
    }

    /// Sets the org's escalation path; a held tier increase is applied at once.
    pub fn set_escalation_path(
        &self,
        org_id: &str,
        path: EscalationPath,
    ) -> Result<OrgStatus, EngineError> {
        let now = self.now();
        self.with_org(org_id, |st, policy| {
            self.emit(|| Fact::EscalationSet {
                at: now,
                org: org_id.to_owned(),
                path: path.clone(),
            });
            st.set_escalation_path(path, policy);
            st.status(policy, now)
        })
    }

    /// Removes the org's escalation path.
    pub fn clear_escalation_path(&self, org_id: &str) -> Result<OrgStatus, EngineError> {
        let now = self.now();
        self.with_org(org_id, |st, policy| {
            st.config.escalation_path = None;
            self.emit(|| Fact::EscalationCleared {
                at: now,
                org: org_id.to_owned(),
            });
            st.status(policy, now)
        })
    }

    /// Changes the quality rating (admin, or a webhook). RED starts the grace period.
    pub fn set_quality_rating(
        &self,
        org_id: &str,
        rating: QualityRating,
    ) -> Result<OrgStatus, EngineError> {
        let now = self.now();
        self.with_org(org_id, |st, policy| {
            let now = st.advance(now);
            st.set_quality_rating(rating, now);
            self.emit(|| Fact::Rating {
                at: now,
                org: org_id.to_owned(),
                rating,
            });
            st.status(policy, now)
        })
    }

    /// Asks for a tier: decreases apply, increases are held while there is no escalation path.
    pub fn request_tier_change(
        &self,
        org_id: &str,
        target: Tier,
    ) -> Result<TierChange, EngineError> {
        let now = self.now();
        self.with_org(org_id, |st, policy| {
            self.emit(|| Fact::TierRequest {
                at: now,
                org: org_id.to_owned(),
                tier: target,
            });
            st.change_tier(target, policy)
        })
    }

    /// Blocks or unblocks the account (rule 3): error codes 368 and 131031, or an admin.
    pub fn set_account_restricted(
        &self,
        org_id: &str,
        restricted: bool,
    ) -> Result<OrgStatus, EngineError> {
        let now = self.now();
        self.with_org(org_id, |st, policy| {
            st.account_restricted = restricted;
            self.emit(|| Fact::AccountRestricted {
                at: now,
                org: org_id.to_owned(),
                restricted,
            });
            st.status(policy, now)
        })
    }

    /// Pauses a template until `until_ms`, or disables it (`None`) until reinstated (rule 4).
    pub fn pause_template(
        &self,
        org_id: &str,
        template_name: &str,
        until_ms: Option<u64>,
    ) -> Result<OrgStatus, EngineError> {
        validate::template_name(template_name)?;
        let now = self.now();
        self.with_org(org_id, |st, policy| {
            let now = st.advance(now);
            st.pause_template(template_name, until_ms, now)?;
            self.emit(|| Fact::TemplatePaused {
                at: now,
                org: org_id.to_owned(),
                template: template_name.to_owned(),
                until: until_ms,
            });
            Ok(st.status(policy, now))
        })?
    }

    /// Lifts a pause or a disable.
    pub fn reinstate_template(
        &self,
        org_id: &str,
        template_name: &str,
    ) -> Result<OrgStatus, EngineError> {
        validate::template_name(template_name)?;
        let now = self.now();
        self.with_org(org_id, |st, policy| {
            st.paused.remove(template_name);
            self.emit(|| Fact::TemplateReinstated {
                at: now,
                org: org_id.to_owned(),
                template: template_name.to_owned(),
            });
            st.status(policy, now)
        })
    }

    /// Files an appeal against a low rating; it is pending until resolved.
    pub fn file_appeal(&self, org_id: &str, evidence: &str) -> Result<Appeal, EngineError> {
        validate_evidence(evidence)?;
        let now = self.now();
        self.with_org(org_id, |st, _| {
            let now = st.advance(now);
            let a = st.file_appeal(evidence, now)?;
            self.emit(|| Fact::AppealFiled {
                at: now,
                org: org_id.to_owned(),
                evidence: evidence.to_owned(),
            });
            Ok(a)
        })?
    }

    /// Resolves an appeal. Approval clears RED and the restriction; rejection changes nothing.
    pub fn resolve_appeal(&self, id: &AppealId, approved: bool) -> Result<Appeal, EngineError> {
        let now = self.now();
        self.with_org(&id.org_id, |st, _| {
            let a = st.resolve_appeal(id, approved)?;
            self.emit(|| Fact::AppealResolved {
                at: now,
                org: id.org_id.clone(),
                n: id.n,
                approved,
            });
            Ok(a)
        })
        .map_err(|e| match e {
            EngineError::UnknownOrg(_) => EngineError::UnknownAppeal(id.to_string()),
            e => e,
        })?
    }

    /// An appeal by id.
    pub fn get_appeal(&self, id: &AppealId) -> Result<Appeal, EngineError> {
        self.with_org(&id.org_id, |st, _| st.appeal(id.n).cloned())
            .ok()
            .flatten()
            .ok_or_else(|| EngineError::UnknownAppeal(id.to_string()))
    }

    fn with_org<R>(
        &self,
        org_id: &str,
        f: impl FnOnce(&mut OrgState, &Policy) -> R,
    ) -> Result<R, EngineError> {
        validate::org_id(org_id)?;
        let org = self
            .orgs
            .get(org_id)
            .ok_or_else(|| EngineError::UnknownOrg(org_id.to_owned()))?;
        let mut st = org.lock();
        Ok(f(&mut st, &self.policy))
    }
}
