//! The one way the servers change or read state, whatever the store.
//!
//! * memory: straight into the engine;
//! * embedded: into the engine, whose journal feeds the store; a call that changed state answers
//!   only once the store committed it (group commit), and calls that changed nothing do not wait.
//!   An Acquire or a Report does not wait in its own task: its connection holds its answer
//!   until the commit ([`Gate::decide_held`], `tiergate_transport::hold`), and with it whatever
//!   that connection answers next, changed or not;
//! * redis: through the org's command log ([`Replica`]), which orders the call among every
//!   replica's and applies it here. When Redis cannot be reached, senders get
//!   [`GateError::StoreUnavailable`] (`on_store_error = "deny"`, the default) or an uncounted
//!   ALLOW (`"allow"`); admin calls always get the error. A Redis that lost its data
//!   ([`GateError::StoreLost`]) is refused whatever `on_store_error` says.
//!
//! gRPC handlers and webhooks call only this, so every backend runs the same code above it.
//! Failures are [`GateError`]s, turned into a gRPC status in one place (`convert`).

use std::collections::HashSet;
use std::sync::Arc;

use tiergate_core::{
    BatchError, Change, Command, Decision, Engine, EngineError, Fact, IdOwner, IdRef, Next,
    OrgStatus, Outcome, Plan, SendOutcome, SendRequest, Verdict, WaitStep, WaitTicket,
};
use tiergate_store::{EmbeddedStore, ErrorChain, Health, RedisStoreError, RedisTopology, Replica};

use crate::config::OnStoreError;
use crate::error::GateError;
use crate::signals::Signals;

/// Where the state lives.
#[derive(Debug, Clone)]
enum Backend {
    /// The engine alone, or with the embedded store as its journal.
    Local(Option<Arc<EmbeddedStore>>),
    /// Shared with other replicas through Redis.
    Redis(Arc<Replica>),
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Gate {
    engine: Arc<Engine>,
    backend: Backend,
    on_error: OnStoreError,
    signals: Arc<Signals>,
}

/// A store error as the gate's, logged once here with its whole cause chain.
fn store_failed(e: impl Into<GateError>) -> GateError {
    let e = e.into();
    tracing::error!(error = %ErrorChain(&e), "state store failed");
    e
}

/// Whether a change may let a waiting send go sooner than its retry-after said: a slot given
/// back, a pause lifted, a tier raised, a config or rating changed. Sent reports, error codes
/// and webhook bookkeeping only ever hold sends back, so they wake nobody.
fn may_free(change: &Change) -> bool {
    !matches!(
        change,
        Change::Report {
            outcome: SendOutcome::Sent | SendOutcome::Rejected { .. },
            ..
        } | Change::Feedback { .. }
            | Change::WebhookDelivery { .. }
            | Change::PacingHeld
            | Change::AppealFiled { .. }
            | Change::RecipientIds { .. }
            | Change::Send { .. }
    )
}

/// Item `index` of a batch refused by the engine, its field named as the item's
/// (`sends[3].recipient`).
fn item_error(index: usize, error: EngineError) -> GateError {
    BatchError::at(index, error).into()
}

impl Gate {
    /// State in this process only (`embedded` = `None`: memory).
    pub fn local(engine: Arc<Engine>, embedded: Option<Arc<EmbeddedStore>>) -> Self {
        Self {
            engine,
            backend: Backend::Local(embedded),
            on_error: OnStoreError::Deny,
            signals: Arc::default(),
        }
    }

    /// State shared through Redis. Changes other replicas made that may free something wake
    /// this process's waiting sends as the replica applies them.
    pub fn redis(replica: Arc<Replica>, on_error: OnStoreError) -> Self {
        let signals: Arc<Signals> = Arc::default();
        let heard = signals.clone();
        replica.observe(Box::new(move |cmd| {
            if let Command::Apply { fact } = cmd
                && may_free(&fact.change)
            {
                heard.poke(&fact.org);
            }
        }));
        Self {
            engine: replica.engine().clone(),
            backend: Backend::Redis(replica),
            on_error,
            signals,
        }
    }

    /// Where waiting sends hear that a change to their org may have freed something.
    pub fn signals(&self) -> &Arc<Signals> {
        &self.signals
    }

    /// The engine (for observers: metrics; never for changes).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The embedded store, if that is the backend.
    pub fn embedded(&self) -> Option<&Arc<EmbeddedStore>> {
        match &self.backend {
            Backend::Local(s) => s.as_ref(),
            Backend::Redis(_) => None,
        }
    }

    /// The store's commit latencies, if it commits (embedded: transaction + fsync; Redis: the
    /// script call that appended a batch).
    pub fn commit_stats(&self) -> Option<&tiergate_store::CommitStats> {
        match &self.backend {
            Backend::Local(s) => s.as_ref().map(|s| s.stats()),
            Backend::Redis(r) => Some(r.log().stats()),
        }
    }

    /// Batches waiting for their turn in Redis, if that is the store.
    pub fn batches_waiting(&self) -> Option<usize> {
        match &self.backend {
            Backend::Redis(r) => Some(r.batches_waiting()),
            Backend::Local(_) => None,
        }
    }

    /// The Redis log, if that is the store (for jobs one replica does: alerts).
    pub fn redis_log(&self) -> Option<&tiergate_store::RedisLog> {
        match &self.backend {
            Backend::Redis(r) => Some(r.log()),
            Backend::Local(_) => None,
        }
    }

    /// Whether the store can take changes (for `/readyz`).
    pub fn is_ready(&self) -> bool {
        match &self.backend {
            Backend::Local(Some(s)) => s.is_healthy(),
            Backend::Local(None) => true,
            Backend::Redis(r) => r.health() == Health::Up,
        }
    }

    /// The store's name, for logs and metrics.
    pub fn store_name(&self) -> &'static str {
        match &self.backend {
            Backend::Local(None) => "memory",
            Backend::Local(Some(_)) => "embedded",
            Backend::Redis(r) => match r.log().topology() {
                RedisTopology::Single => "redis",
                RedisTopology::Cluster => "redis-cluster",
            },
        }
    }

    /// Waits until every change applied so far is durable (after [`Gate::apply_unflushed`]).
    pub async fn flush(&self) -> Result<(), GateError> {
        match &self.backend {
            Backend::Local(Some(s)) => s.sync().await.map_err(store_failed),
            _ => Ok(()),
        }
    }

    async fn replicated(
        &self,
        r: &Replica,
        cmd: &Command,
    ) -> Result<Result<Outcome, EngineError>, RedisStoreError> {
        let org = cmd.org();
        let creates = cmd.registers();
        // An unknown org is refused before anything is written: unknown ids grow nothing.
        if !creates && !r.discover(org).await? {
            return Ok(Err(EngineError::UnknownOrg(org.to_owned())));
        }
        r.execute(cmd).await
    }

    /// Decides one send (SPEC §2), recording it when allowed.
    pub async fn decide(&self, req: &SendRequest<'_>) -> Result<Decision, GateError> {
        self.decide_held(req, None).await
    }

    /// Decides one send like [`Gate::decide`], except on the embedded store with a `hold`
    /// (the connection the answer goes out on holds it back, `tiergate_transport::hold`):
    /// then an allowed send does not wait for its commit here, it marks `hold` with the
    /// store's last fact, and the connection sends the answer once that is durable
    /// ([`Gate::settle`]).
    pub async fn decide_held(
        &self,
        req: &SendRequest<'_>,
        hold: Option<&tiergate_transport::Hold>,
    ) -> Result<Decision, GateError> {
        match &self.backend {
            Backend::Local(_) => {
                let d = self.engine.decide(req)?;
                if d.is_allowed() {
                    self.settle(hold).await?;
                }
                Ok(d)
            }
            Backend::Redis(r) => match self.replicated_send(r, req, &Command::decide(req)).await? {
                Outcome::Decision(d) => Ok(d),
                other => Err(GateError::Unexpected {
                    call: "decide",
                    outcome: format!("{other:?}"),
                }),
            },
        }
    }

    /// After a change this process made: on the embedded store, waits for its commit, or with
    /// a `hold` marks it with the store's last fact instead (the caller's fact was numbered
    /// before it returned, so it is at most that). A store that already failed answers with
    /// the failure at once either way. Nothing to do on memory or Redis ([`Gate::flush`]).
    ///
    /// An allowed send answered from its idempotency key (`replayed`) settles too: it
    /// acknowledges the same send, which may not be durable yet.
    async fn settle(&self, hold: Option<&tiergate_transport::Hold>) -> Result<(), GateError> {
        match (self.embedded(), hold) {
            (Some(store), Some(hold)) if store.is_healthy() => {
                hold.require(store.issued());
                Ok(())
            }
            _ => self.flush().await,
        }
    }

    /// The store's commits as a connection's held answers wait for them (the embedded store
    /// only; see [`Gate::decide_held`]).
    pub fn held_answers(&self) -> Option<Arc<dyn tiergate_transport::Durable>> {
        self.embedded()
            .map(|s| Arc::new(crate::held_answers::StoreCommits(s.clone())) as _)
    }

    /// One try of a waiting send (SPEC §2a "Waiting"; see `tiergate_core::wait`). Allowed, it
    /// is recorded and durable like [`Gate::decide`]'s. When Redis fails, the caller gets what a
    /// lone send would (`on_store_error`), answered at once.
    pub async fn decide_waiting(
        &self,
        req: &SendRequest<'_>,
        ticket: WaitTicket,
    ) -> Result<WaitStep, GateError> {
        match &self.backend {
            Backend::Local(_) => {
                let now = self.engine.clock().now_ms();
                let step = self.engine.decide_waiting_at(req, ticket, now)?;
                if step.decision.is_allowed() {
                    self.flush().await?;
                }
                Ok(step)
            }
            Backend::Redis(r) => {
                let cmd = Command::decide_waiting(req, ticket);
                match self.replicated_send(r, req, &cmd).await? {
                    Outcome::Wait(step) => Ok(step),
                    // Redis failed: the lone send's answer, at once.
                    Outcome::Decision(decision) => Ok(WaitStep {
                        at: self.engine.clock().now_ms(),
                        decision,
                        next: Next::Answer,
                        wake_followers: false,
                    }),
                    other => Err(GateError::Unexpected {
                        call: "decide_waiting",
                        outcome: format!("{other:?}"),
                    }),
                }
            }
        }
    }

    /// A send's command through the org's log: the org discovered and the send checked before
    /// anything is written. When Redis fails, what [`Gate::store_down`] answers, as a decision.
    async fn replicated_send(
        &self,
        r: &Replica,
        req: &SendRequest<'_>,
        cmd: &Command,
    ) -> Result<Outcome, GateError> {
        if let Err(e) = r.discover(req.org_id).await {
            return self.store_down(req, e).map(Outcome::Decision);
        }
        self.engine.check_send(req)?;
        match r.execute(cmd).await {
            Ok(r) => Ok(r?),
            Err(e) => self.store_down(req, e).map(Outcome::Decision),
        }
    }

    /// Ends a wait (its caller went away or its deadline passed), so it holds nobody back.
    pub async fn unwait(&self, org_id: &str, waiter: u64) -> Result<(), GateError> {
        match &self.backend {
            Backend::Local(_) => {
                let now = self.engine.clock().now_ms();
                self.engine.unwait_at(org_id, waiter, now)?;
                Ok(())
            }
            Backend::Redis(r) => {
                let cmd = Command::Unwait {
                    org: org_id.to_owned(),
                    waiter,
                };
                match r.execute(&cmd).await {
                    Ok(r) => r.map(drop).map_err(GateError::from),
                    Err(e) => Err(store_failed(e)),
                }
            }
        }
    }

    /// Gives back the slot of a send allowed for a caller that went away meanwhile (a NOT_SENT
    /// report of its permit), so the caller takes nothing.
    pub async fn give_back(&self, d: &Decision) -> Result<(), GateError> {
        let Some(permit) = d.permit.as_ref().filter(|_| !d.replayed) else {
            return Ok(());
        };
        let change = Change::Report {
            seq: permit.seq,
            outcome: SendOutcome::NotSent,
        };
        self.apply(Fact::new(0, permit.org_id.to_string(), change))
            .await
            .map(drop)
    }

    /// Brings an org up to the end of its log without writing (Redis), so that what this
    /// replica knows of other replicas' waiters is current. Nothing to do for the other stores.
    pub async fn sync(&self, org_id: &str) -> Result<(), GateError> {
        match &self.backend {
            Backend::Redis(r) => r.sync(org_id).await.map(drop).map_err(store_failed),
            Backend::Local(_) => Ok(()),
        }
    }

    /// Decides a batch of sends (SPEC §2a), each as a lone [`Gate::decide`] would, in order.
    /// Every item is checked first: a malformed item or unknown org refuses the batch
    /// ([`GateError::Item`]) and records nothing.
    ///
    /// * memory, embedded: the engine's batch; the embedded store then commits once for the
    ///   whole batch (one group commit) before anything is answered (on the connection, with
    ///   [`Gate::decide_batch_held`]);
    /// * redis: every org is discovered and every item checked before anything is appended;
    ///   then all items go to their orgs' logs in one script call (an org's items in batch
    ///   order, nothing between them) and come back in request order. When Redis fails,
    ///   every item gets what a lone send would (`on_store_error`).
    pub async fn decide_batch(
        &self,
        sends: &[SendRequest<'_>],
    ) -> Result<Vec<Decision>, GateError> {
        self.decide_batch_held(sends, None).await
    }

    /// Decides a batch like [`Gate::decide_batch`], except on the embedded store with a
    /// `hold`: then a batch with an allowed item does not wait for its commit here, it marks
    /// `hold` with the store's last fact, and the connection sends the answer once that is
    /// durable, as for a lone send ([`Gate::decide_held`]).
    pub async fn decide_batch_held(
        &self,
        sends: &[SendRequest<'_>],
        hold: Option<&tiergate_transport::Hold>,
    ) -> Result<Vec<Decision>, GateError> {
        match &self.backend {
            Backend::Local(_) => {
                let ds = self.engine.decide_batch(sends)?;
                // Replays too: see `settle`.
                if ds.iter().any(Decision::is_allowed) {
                    self.settle(hold).await?;
                }
                Ok(ds)
            }
            Backend::Redis(r) => {
                let mut known: HashSet<&str> = HashSet::new();
                for send in sends {
                    if known.insert(send.org_id)
                        && let Err(e) = r.discover(send.org_id).await
                    {
                        return self.store_down_batch(sends, e);
                    }
                }
                self.engine.check_batch(sends)?;
                let commands: Vec<Command> = sends.iter().map(Command::decide).collect();
                let results = match r.execute_many(&commands).await {
                    Ok(results) => results,
                    Err(e) => return self.store_down_batch(sends, e),
                };
                results
                    .into_iter()
                    .enumerate()
                    .map(|(index, r)| match r {
                        Ok(Outcome::Decision(d)) => Ok(d),
                        Ok(other) => Err(GateError::Unexpected {
                            call: "decide",
                            outcome: format!("{other:?}"),
                        }),
                        Err(error) => Err(item_error(index, error)),
                    })
                    .collect()
            }
        }
    }

    /// [`Gate::store_down`] for a batch: every item's uncounted ALLOW, or the error.
    fn store_down_batch(
        &self,
        sends: &[SendRequest<'_>],
        e: RedisStoreError,
    ) -> Result<Vec<Decision>, GateError> {
        let e = GateError::from(e);
        if !matches!(e, GateError::StoreUnavailable(_)) || self.on_error == OnStoreError::Deny {
            return Err(store_failed(e));
        }
        let mut out = Vec::with_capacity(sends.len());
        for send in sends {
            match self.uncounted(send) {
                Some(d) => out.push(d),
                None => return Err(store_failed(e)),
            }
        }
        tracing::warn!(error = %ErrorChain(&e), sends = sends.len(), "state store unavailable: allowing a batch uncounted (on_store_error = allow)");
        Ok(out)
    }

    /// An uncounted ALLOW with the last usage this replica saw of the org, if it knows it
    /// (its clock must not move outside the log).
    fn uncounted(&self, req: &SendRequest<'_>) -> Option<Decision> {
        let usage = self.engine.peek_org(req.org_id).ok()?.usage;
        Some(Decision {
            verdict: Verdict::Allow,
            reason: None,
            retry_after_ms: 0,
            permit: None,
            usage,
            replayed: false,
        })
    }

    /// A sender's answer when Redis failed: with `on_store_error = "allow"`, an uncounted ALLOW
    /// while Redis is unreachable (never when it lost its data or answered something
    /// unusable); otherwise the error.
    fn store_down(&self, req: &SendRequest<'_>, e: RedisStoreError) -> Result<Decision, GateError> {
        let e = GateError::from(e);
        if !matches!(e, GateError::StoreUnavailable(_)) {
            return Err(store_failed(e));
        }
        match (self.on_error, self.uncounted(req)) {
            (OnStoreError::Deny, _) | (_, None) => Err(store_failed(e)),
            (OnStoreError::Allow, Some(d)) => {
                tracing::warn!(error = %ErrorChain(&e), "state store unavailable: allowing uncounted (on_store_error = allow)");
                Ok(d)
            }
        }
    }

    /// Applies a change (anything but a send) and answers once it is durable or replicated.
    pub async fn apply(&self, fact: Fact) -> Result<Outcome, GateError> {
        self.apply_held(fact, None).await
    }

    /// Applies a change like [`Gate::apply`], except on the embedded store with a `hold`
    /// (see [`Gate::decide_held`]): then it does not wait for the commit here, it marks `hold`
    /// and the connection sends the answer once the change is durable.
    pub async fn apply_held(
        &self,
        fact: Fact,
        hold: Option<&tiergate_transport::Hold>,
    ) -> Result<Outcome, GateError> {
        let r = self.apply_unflushed(fact).await?;
        self.settle(hold).await?;
        Ok(r)
    }

    /// Applies a change without waiting for the embedded store's commit, so a batch (a webhook
    /// with many changes) waits for one commit at the end ([`Gate::flush`]). With Redis the
    /// change is replicated before this returns.
    pub async fn apply_unflushed(&self, fact: Fact) -> Result<Outcome, GateError> {
        self.engine.check_fact(&fact)?;
        let may_free = may_free(&fact.change);
        let cmd = Command::Apply { fact };
        let out = match &self.backend {
            Backend::Local(_) => self.engine.execute(&cmd)?,
            Backend::Redis(r) => match self.replicated(r, &cmd).await {
                Ok(r) => r?,
                Err(e) => return Err(store_failed(e)),
            },
        };
        if may_free {
            self.signals.poke(cmd.org());
        }
        Ok(out)
    }

    /// An org's status now.
    pub async fn org(&self, org_id: &str) -> Result<OrgStatus, GateError> {
        match &self.backend {
            Backend::Local(_) => Ok(self.engine.get_org(org_id)?),
            Backend::Redis(r) => {
                let cmd = Command::Status {
                    org: org_id.to_owned(),
                };
                match self.replicated(r, &cmd).await {
                    Ok(Ok(Outcome::Org(st))) => Ok(*st),
                    Ok(Ok(other)) => Err(GateError::Unexpected {
                        call: "status",
                        outcome: format!("{other:?}"),
                    }),
                    Ok(Err(e)) => Err(e.into()),
                    Err(e) => Err(store_failed(e)),
                }
            }
        }
    }

    /// Plans a campaign (SPEC §2a) on every store without writing anything: with Redis the
    /// replica first reads the org's log to its end, so the plan sees every committed call.
    /// `plan` runs on a blocking thread: a 100,000-recipient plan takes tens of milliseconds
    /// of CPU, which must not stall the runtime's workers that serve sends.
    pub async fn plan<F>(&self, org_id: &str, plan: F) -> Result<Plan, GateError>
    where
        F: FnOnce(&Engine) -> Result<Plan, EngineError> + Send + 'static,
    {
        if let Backend::Redis(r) = &self.backend {
            match r.sync(org_id).await {
                Ok(true) => {}
                Ok(false) => return Err(EngineError::UnknownOrg(org_id.to_owned()).into()),
                Err(e) => return Err(store_failed(e)),
            }
        }
        let engine = self.engine.clone();
        match tokio::task::spawn_blocking(move || plan(&engine)).await {
            Ok(r) => Ok(r?),
            Err(e) => Err(GateError::Unexpected {
                call: "plan",
                outcome: e.to_string(),
            }),
        }
    }

    /// Every org's status now, ordered by id.
    pub async fn orgs(&self) -> Result<Vec<OrgStatus>, GateError> {
        match &self.backend {
            Backend::Local(_) => Ok(self.engine.list_orgs()),
            Backend::Redis(r) => {
                r.discover_all().await.map_err(store_failed)?;
                let mut out = Vec::new();
                for id in self.engine.org_ids() {
                    out.push(self.org(&id).await?);
                }
                Ok(out)
            }
        }
    }

    /// Every org's status as this process last saw it, without touching the store: for
    /// `/metrics`, which must neither wait on Redis nor move a replica's clocks.
    pub fn observe_orgs(&self) -> Vec<OrgStatus> {
        match &self.backend {
            Backend::Local(_) => self.engine.list_orgs(),
            Backend::Redis(_) => self
                .engine
                .org_ids()
                .iter()
                .filter_map(|id| self.engine.peek_org(id).ok())
                .collect(),
        }
    }

    /// The org a WhatsApp id belongs to. With Redis, an id not known here makes the replica
    /// look for orgs other replicas registered; if Redis cannot be asked, the id reads as
    /// unknown (logged): a caller that must tell "unknown" from "not found yet" asks
    /// [`Gate::discover`] afterwards, as the webhook handler does.
    pub async fn lookup(&self, id: IdRef<'_>) -> Option<IdOwner> {
        if let Some(o) = self.engine.lookup_id(id) {
            return Some(o);
        }
        if let Backend::Redis(_) = &self.backend {
            if let Err(e) = self.discover().await {
                tracing::warn!(error = %ErrorChain(&e), "could not look for new orgs");
            }
            return self.engine.lookup_id(id);
        }
        None
    }

    /// Brings every org up to the end of its log without writing (Redis: what a job that looks
    /// at every org, such as alerts, asks first); nothing to do for the other stores.
    pub async fn sync_all(&self) -> Result<(), GateError> {
        if let Backend::Redis(r) = &self.backend {
            r.discover_all().await.map_err(store_failed)?;
            for id in self.engine.org_ids() {
                r.sync(&id).await.map_err(store_failed)?;
            }
        }
        Ok(())
    }

    /// Loads the orgs other replicas registered since the last look (Redis; nothing to do for
    /// the other stores, which hold every org here).
    pub async fn discover(&self) -> Result<(), GateError> {
        match &self.backend {
            Backend::Redis(r) => Ok(r.discover_all().await?),
            Backend::Local(_) => Ok(()),
        }
    }

    /// Closes the store (flushes the embedded store's last batch).
    pub fn close(&self) {
        if let Backend::Local(Some(s)) = &self.backend {
            s.close();
        }
    }
}
