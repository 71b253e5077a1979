//! The registry of orgs: who is registered, each behind its own lock, and which org owns a
//! WhatsApp id.
//!
//! Orgs live in a sharded map (`dashmap`), each behind its own mutex, so calls for different orgs
//! run in parallel and calls for one org are serialised (exact last-slot races). Registrations
//! take one admin lock, so two orgs cannot claim the same id at once.

use compact_str::CompactString;
use dashmap::DashMap;
use parking_lot::Mutex;

use crate::change::Change;
use crate::error::EngineError;
use crate::id_index::{IdIndex, IdOwner, IdRef};
use crate::org::{OrgConfig, OrgStatus};
use crate::org_state::{OrgSnapshot, OrgState};
use crate::policy::Policy;
use crate::validate;

/// Keys are inline strings (org ids up to 24 bytes need no heap), so a lookup compares the key
/// in the table's own memory instead of chasing a pointer per probe.
type OrgMap = DashMap<CompactString, Mutex<OrgState>, foldhash::fast::RandomState>;

/// A registered org's entry, borrowed from the map.
pub(crate) type OrgRef<'a> = dashmap::mapref::one::Ref<'a, CompactString, Mutex<OrgState>>;

/// Shards of the org map (a power of two). Many, because each call takes a shard's read lock,
/// and with few shards that lock's cache line bounces between cores even for unrelated orgs.
const ORG_SHARDS: usize = 256;

/// Every registered org and the ids they claim.
pub(crate) struct Registry {
    orgs: OrgMap,
    ids: IdIndex,
    admin: Mutex<()>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Registry {
            orgs: OrgMap::with_hasher_and_shard_amount(Default::default(), ORG_SHARDS),
            ids: IdIndex::default(),
            admin: Mutex::new(()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.orgs.len()
    }

    pub(crate) fn contains(&self, org_id: &str) -> bool {
        self.orgs.contains_key(org_id)
    }

    /// Runs `f` on the org under its lock; a malformed id is `Invalid`, an unknown org is
    /// `UnknownOrg`, and neither creates anything.
    #[inline]
    pub(crate) fn with_org<R>(
        &self,
        org_id: &str,
        f: impl FnOnce(&mut OrgState) -> R,
    ) -> Result<R, EngineError> {
        validate::org_id(org_id)?;
        self.with_checked_org(org_id, f)
    }

    /// [`Registry::with_org`] for an id the caller has validated (the decision's hot path checks
    /// every field once, before it gets here).
    #[inline]
    pub(crate) fn with_checked_org<R>(
        &self,
        org_id: &str,
        f: impl FnOnce(&mut OrgState) -> R,
    ) -> Result<R, EngineError> {
        let org = self.get(org_id)?;
        let mut st = org.lock();
        Ok(f(&mut st))
    }

    /// The org's entry (its lock not taken), for the decision's hot path: locking it in the
    /// caller's frame keeps the decision from being wrapped in a second `Result` and copied.
    #[inline]
    pub(crate) fn get(&self, org_id: &str) -> Result<OrgRef<'_>, EngineError> {
        self.orgs
            .get(org_id)
            .ok_or_else(|| EngineError::UnknownOrg(org_id.to_owned()))
    }

    /// Registers `config` (validated) at `now`, or applies it to the org already registered.
    /// `applied(at)` runs under the org's lock once the change is made, with the org's time.
    pub(crate) fn put(
        &self,
        config: &OrgConfig,
        policy: &Policy,
        now: u64,
        applied: impl FnOnce(u64),
    ) -> Result<OrgStatus, EngineError> {
        let _admin = self.admin.lock();
        let old_ids = self.ids.check_claim(config)?;
        let status = match self.orgs.entry(CompactString::from(config.org_id.as_str())) {
            dashmap::Entry::Occupied(o) => {
                let mut st = o.get().lock();
                let now = st.advance(now);
                let change = Change::PutOrg {
                    config: config.clone(),
                };
                let out = st.apply(policy, &change, now)?;
                applied(now);
                out.into_org()?
            }
            dashmap::Entry::Vacant(v) => {
                let mut st = OrgState::new(config.clone(), policy, now);
                let status = st.status(policy, now);
                applied(now);
                v.insert(Mutex::new(st));
                status
            }
        };
        self.ids.claim(config, &old_ids);
        Ok(status)
    }

    /// Puts an org back in the state `snap` kept, replacing what is there; its ids are claimed
    /// as a registration would claim them (and refused the same way).
    pub(crate) fn restore(&self, snap: OrgSnapshot, policy: &Policy) -> Result<(), EngineError> {
        validate::org_id(snap.org_id())?;
        let _admin = self.admin.lock();
        let old_ids = self.ids.check_claim(snap.config())?;
        let config = snap.config().clone();
        let st = OrgState::from_snapshot(snap, policy);
        self.orgs
            .insert(CompactString::from(config.org_id.as_str()), Mutex::new(st));
        self.ids.claim(&config, &old_ids);
        Ok(())
    }

    pub(crate) fn lookup(&self, id: IdRef<'_>) -> Option<IdOwner> {
        self.ids.get(id)
    }

    /// The ids of every org, ordered.
    pub(crate) fn org_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.orgs.iter().map(|e| e.key().to_string()).collect();
        ids.sort();
        ids
    }

    /// `f` of every org, ordered by id.
    pub(crate) fn each<R>(&self, mut f: impl FnMut(&mut OrgState) -> R) -> Vec<R> {
        let mut out: Vec<(CompactString, R)> = self
            .orgs
            .iter()
            .map(|e| (e.key().clone(), f(&mut e.value().lock())))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.into_iter().map(|(_, r)| r).collect()
    }
}
