//! The one route for time and facts: commands and changes applied at a given time.
//!
//! A live call ([`Engine::decide`], [`Engine::report`], …) reads the clock once and comes here
//! with that time. A journal replay comes here with each fact's own time
//! ([`Engine::apply_fact`]), and a replica with the time its log gave each entry
//! ([`Engine::execute_at`]). From here on the time is an argument: the org advances its own
//! clock to it (never backwards) and every rule, window and GCRA check uses that one value.

use crate::change::Change;
use crate::command::{Command, Outcome};
use crate::decision::{Decision, SendRequest};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::journal::{Fact, validate_envelope};
use crate::org::OrgStatus;
use crate::org_state::{CheckedSend, SendFields};

impl Engine {
    /// Runs one command at `at_ms`, and returns its answer. A replicated store applies its log
    /// through this: the same log gives every replica the same answers and the same state,
    /// whatever its own clock says.
    pub fn execute_at(&self, cmd: &Command, at_ms: u64) -> Result<Outcome, EngineError> {
        match cmd {
            Command::Decide {
                org,
                phone,
                recipient,
                user_id,
                template,
                category,
                key,
                wait,
            } => {
                let req = SendRequest {
                    org_id: org,
                    phone_number_id: phone,
                    recipient,
                    recipient_user_id: user_id.as_deref(),
                    template_name: template,
                    category: *category,
                    idempotency_key: key.as_deref(),
                };
                match wait {
                    None => self.decide_at(&req, at_ms).map(Outcome::Decision),
                    Some(ticket) => self
                        .decide_waiting_at(&req, *ticket, at_ms)
                        .map(Outcome::Wait),
                }
            }
            Command::Unwait { org, waiter } => self
                .unwait_at(org, *waiter, at_ms)
                .map(|was| Outcome::Unwaited { was_waiting: was }),
            Command::Status { org } => self
                .status_at(org, at_ms)
                .map(|s| Outcome::Org(Box::new(s))),
            Command::Apply { fact } => self.commit(&fact.org, &fact.change, at_ms),
        }
    }

    /// Runs one command now (the clock's time), and returns its answer.
    pub fn execute(&self, cmd: &Command) -> Result<Outcome, EngineError> {
        self.execute_at(cmd, self.clock().now_ms())
    }

    /// Applies one fact from a journal at its own time, as the live call applied it.
    pub fn apply_fact(&self, fact: &Fact) -> Result<Outcome, EngineError> {
        self.commit(&fact.org, &fact.change, fact.at)
    }

    /// Checks what a fact's fields must satisfy, without applying it: a replicated store asks
    /// this before it writes the fact to its log, so a malformed change never reaches the log.
    pub fn check_fact(&self, fact: &Fact) -> Result<(), EngineError> {
        fact.validate(&self.policy)
    }

    /// Checks a send without deciding it: its fields, its org and its number. A replicated
    /// store asks this before it orders a send in its log, so that malformed sends and unknown
    /// ids never reach the log (or grow it).
    pub fn check_send(&self, req: &SendRequest<'_>) -> Result<(), EngineError> {
        let fields = SendFields::check(req)?;
        self.registry.with_checked_org(req.org_id, |st| {
            CheckedSend::find(st, req, fields).map(drop)
        })?
    }

    /// Decides one send at `now` and, when it is allowed, records it. See [`Engine::decide`].
    pub fn decide_at(&self, req: &SendRequest<'_>, now: u64) -> Result<Decision, EngineError> {
        let fields = SendFields::check(req)?;
        let org = self.registry.get(req.org_id)?;
        let mut st = org.lock();
        let send = CheckedSend::find(&st, req, fields)?;
        let now = st.advance(now);
        let d = st.decide(&self.policy, send, now);
        self.emit_send(req, &d, now);
        Ok(d)
    }

    /// Journals the send of `d` when `d` allowed it now (not a replay), under the org's lock.
    #[inline]
    pub(crate) fn emit_send(&self, req: &SendRequest<'_>, d: &Decision, now: u64) {
        if d.is_allowed() && !d.replayed {
            self.emit(|| {
                let change = Change::Send {
                    phone: req.phone_number_id.to_owned(),
                    recipient: req.recipient.to_owned(),
                    user_id: req.recipient_user_id.map(str::to_owned),
                    key: req.idempotency_key.map(str::to_owned),
                    seq: d.permit.as_ref().map_or(0, |p| p.seq),
                    category: Some(req.category),
                };
                Fact::new(now, req.org_id, change)
            });
        }
    }

    /// An org's status at `now` (expiring what ended by then).
    pub fn status_at(&self, org_id: &str, now: u64) -> Result<OrgStatus, EngineError> {
        self.registry.with_org(org_id, |st| {
            let now = st.advance(now);
            st.status(&self.policy, now)
        })
    }

    /// The route every change takes: validated once, applied to the org under its lock at its
    /// advanced time, and journaled at that time only if it was applied.
    pub(crate) fn commit(
        &self,
        org_id: &str,
        change: &Change,
        now: u64,
    ) -> Result<Outcome, EngineError> {
        let fact = || Fact::new(now, org_id, change.clone());
        validate_envelope(org_id, change, &self.policy)?;
        if let Change::PutOrg { config } = change {
            // Registration may create the org, so it goes through the registry; the fact is
            // emitted at the org's time under its lock all the same.
            let status = self.registry.put(config, &self.policy, now, |at| {
                self.emit(|| Fact { at, ..fact() })
            })?;
            return Ok(Outcome::Org(Box::new(status)));
        }
        self.registry.with_org(org_id, |st| {
            let now = st.advance(now);
            let out = st.apply(&self.policy, change, now)?;
            self.emit(|| Fact { at: now, ..fact() });
            Ok(out)
        })?
    }
}
