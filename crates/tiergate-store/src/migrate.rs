//! From Redis schema version 1 (one log per org) to version 2 (partitioned logs).
//!
//! Run by the first version-2 sidecar that finds version-1 keys, before it appends anything,
//! with every version-1 sidecar stopped (`docs/storage.md`, "Versioning"). It holds the lease
//! `tg:migrating` meanwhile (a second version-2 sidecar starting then is refused with
//! [`RedisStoreError::Migrating`] and may simply be started again). Steps, each safe to repeat
//! if the sidecar stops half-way:
//!
//! 1. every registered org's version-1 log (its snapshot and entries) is applied to the engine;
//! 2. each org's state is stored as its version-2 snapshot, as of entry `0-1` of its
//!    partition, and each partition's log is created with its checkpoint at `0-1` (so the log
//!    starts empty, after every snapshot);
//! 3. the schema key says 2;
//! 4. the version-1 keys are renamed (`…:log` → `…:log.v1`, `…:snap` → `…:snap.v1`): a
//!    version-1 sidecar still running finds its orgs' logs gone and stops (its appends use
//!    `NOMKSTREAM`, so it calls the store lost) instead of deciding alone; one started later
//!    refuses the newer schema. A mark (`tg:v1-left`) set before step 3 and cleared after the
//!    last rename makes the next start finish the renames if a sidecar stopped in between. The
//!    renamed keys are left for the operator to delete.
//!
//! A migration holds the lease `tg:migrating` and checks the schema again once it has it (a
//! sidecar that finished meanwhile leaves nothing to do); its snapshots never replace a newer
//! one than its own.

use std::time::Duration;

use redis::{AsyncCommands, Script, Value};
use tiergate_core::{Command, Engine, OrgSnapshot};

use crate::redis_log::{LogId, RedisLog, RedisStoreError, SCHEMA_KEY, script, text};

/// Version 1's `READ`: an org's log after `after`, atomically with the snapshot that replaced
/// its older entries. KEYS: log, snapshot. ARGV: after, until, page size.
const V1_READ: &str = r#"
local after = ARGV[1]
local snap = redis.call('HMGET', KEYS[2], 'id', 'state')
if snap[1] and id_less(after, snap[1]) then
  return {snap[1], snap[2], redis.call('XRANGE', KEYS[1], '(' .. snap[1], ARGV[2], 'COUNT', ARGV[3])}
end
return {false, false, redis.call('XRANGE', KEYS[1], '(' .. after, ARGV[2], 'COUNT', ARGV[3])}
"#;

/// Stores a migrated snapshot unless the org already has a newer one than the migration's
/// (a checkpoint after a migration that finished while this one ran).
/// KEYS: positions, snapshots. ARGV: org, state.
const V1_STORE: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cur ~= '0-1' then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], '0-1')
return 1
"#;

/// The lease a migration holds.
const MIGRATING: &str = "tg:migrating";

/// Set while version-1 keys are left to rename (from just before the schema says 2 until the
/// last rename), so that a sidecar stopped in between finishes the renames at its next start.
const V1_LEFT: &str = "tg:v1-left";

/// How long the lease lasts without being renewed (a sidecar killed mid-way leaves it).
const LEASE: Duration = Duration::from_secs(60);

/// The entry every migrated snapshot is as of, and each partition's first checkpoint.
const START: LogId = LogId { ms: 0, n: 1 };

/// The scripts a migration calls (loaded with the others).
pub(crate) fn scripts() -> Vec<Script> {
    vec![script(V1_READ), script(V1_STORE)]
}

fn v1_log(org: &str) -> String {
    format!("tg:{{{org}}}:log")
}

fn v1_snap(org: &str) -> String {
    format!("tg:{{{org}}}:snap")
}

/// Migrates Redis's keys from schema `found` to this build's (see the module docs).
pub(crate) async fn migrate(
    log: &RedisLog,
    engine: &Engine,
    found: u64,
) -> Result<(), RedisStoreError> {
    if found != 1 {
        return Err(RedisStoreError::Protocol(format!(
            "redis holds schema version {found}; this tiergate migrates only from 1"
        )));
    }
    let lease_ms = LEASE.as_millis() as u64;
    if !log.lease(MIGRATING, lease_ms).await? {
        return Err(RedisStoreError::Migrating);
    }
    // Another sidecar may have finished while this one connected.
    let now: Option<String> = log.conn().on(SCHEMA_KEY).get(SCHEMA_KEY).await?;
    if now.as_deref() != Some("1") {
        let _ = log.release(MIGRATING).await;
        return Ok(());
    }
    tracing::warn!("redis holds schema version 1: migrating to partitioned logs");
    let orgs = log.orgs().await?;
    let read = script(V1_READ);
    for (i, org) in orgs.iter().enumerate() {
        load_v1(log, engine, &read, org).await?;
        if i % 64 == 63 && !log.lease(MIGRATING, lease_ms).await? {
            return Err(RedisStoreError::Migrating);
        }
    }
    let conn = log.conn();
    let store = script(V1_STORE);
    for (i, org) in orgs.iter().enumerate() {
        if i % 64 == 63 && !log.lease(MIGRATING, lease_ms).await? {
            return Err(RedisStoreError::Migrating);
        }
        if !engine.has_org(org) {
            continue;
        }
        let snap = engine
            .snapshot_org(org)
            .map_err(|source| RedisStoreError::Restore { id: START, source })?;
        let state = serde_json::to_string(&snap).map_err(|source| RedisStoreError::Json {
            what: format!("snapshot of {org}"),
            source,
        })?;
        let keys = log.keys(log.partition_of(org));
        let mut c = conn.on(&keys.log);
        // Not `SNAP_STORE`: a migration run again after a stop must replace what the first run
        // stored (as of `0-1` too), but nothing newer.
        let _: i64 = store
            .key(&keys.pos)
            .key(&keys.snap)
            .arg(org)
            .arg(state)
            .invoke_async(&mut c)
            .await?;
    }
    for p in 0..log.partitions() {
        let keys = log.keys(p);
        let mut c = conn.on(&keys.log);
        // Created once, at `0-1`, then trimmed: it exists (appends use `NOMKSTREAM`) and
        // starts after every migrated snapshot. A second run finds it there.
        let created: Result<String, _> = redis::cmd("XADD")
            .arg(&keys.log)
            .arg(START.to_string())
            .arg("r")
            .arg("migration")
            .arg("c")
            .arg("[]")
            .query_async(&mut c)
            .await;
        if let Err(e) = created
            && !e.to_string().contains("equal or smaller")
        {
            return Err(e.into());
        }
        log.trim(p, START).await?;
    }
    let () = conn.on(V1_LEFT).set(V1_LEFT, 1).await?;
    log.finish_migration().await?;
    rename_v1(log).await?;
    let _ = log.release(MIGRATING).await;
    tracing::warn!(
        orgs = orgs.len(),
        "redis migrated to schema version 2; the version-1 keys were renamed to *.v1"
    );
    Ok(())
}

/// Renames the version-1 keys of every org (`….v1`), if a migration left any to rename; once
/// all are, clears the mark. Run by every start, so that a sidecar stopped between the schema
/// change and the last rename does not leave a version-1 sidecar deciding alone.
pub(crate) async fn rename_v1(log: &RedisLog) -> Result<(), RedisStoreError> {
    let conn = log.conn();
    let left: bool = conn.on(V1_LEFT).exists(V1_LEFT).await?;
    if !left {
        return Ok(());
    }
    let mut all = true;
    for org in log.orgs().await? {
        for key in [v1_log(&org), v1_snap(&org)] {
            let mut c = conn.on(&key);
            let renamed: Result<(), _> = c.rename(&key, format!("{key}.v1")).await;
            if let Err(e) = renamed
                && !e.to_string().contains("no such key")
            {
                all = false;
                tracing::warn!(key, error = %e, "version-1 key not renamed (tried again at the next start)");
            }
        }
    }
    if all {
        let _: i64 = conn.on(V1_LEFT).del(V1_LEFT).await?;
    }
    Ok(())
}

/// Applies one org's version-1 log (its snapshot, then its entries) to `engine`.
async fn load_v1(
    log: &RedisLog,
    engine: &Engine,
    read: &Script,
    org: &str,
) -> Result<(), RedisStoreError> {
    let (key, snap_key) = (v1_log(org), v1_snap(org));
    let mut after = LogId::default();
    loop {
        let mut c = log.conn().on(&key);
        let (sid, state, entries): (Option<String>, Option<String>, Value) = read
            .key(&key)
            .key(&snap_key)
            .arg(after.to_string())
            .arg("+")
            .arg(1_024)
            .invoke_async(&mut c)
            .await?;
        if let (Some(id), Some(state)) = (sid, state) {
            let id: LogId = id.parse()?;
            let snap: OrgSnapshot =
                serde_json::from_str(&state).map_err(|source| RedisStoreError::Json {
                    what: format!("version-1 snapshot {id} of {org}"),
                    source,
                })?;
            engine
                .restore_org(snap)
                .map_err(|source| RedisStoreError::Restore { id, source })?;
            after = id;
        }
        let entries = v1_entries(entries)?;
        if entries.is_empty() {
            return Ok(());
        }
        for (id, command) in entries {
            // The engine's answer is the one every replica got when it ran; only the effect
            // matters here.
            let _ = engine.execute_at(&command, id.ms);
            after = id;
        }
    }
}

/// Version-1 entries: `[id, [r, replica, c, one command's JSON]]`.
fn v1_entries(v: Value) -> Result<Vec<(LogId, Command)>, RedisStoreError> {
    let Value::Array(items) = v else {
        return Err(RedisStoreError::Protocol(format!(
            "expected version-1 entries, got {v:?}"
        )));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(pair) = item else {
            return Err(RedisStoreError::Protocol(
                "entry is not [id, fields]".into(),
            ));
        };
        let [id, Value::Array(fields)] = pair.as_slice() else {
            return Err(RedisStoreError::Protocol(
                "entry is not [id, fields]".into(),
            ));
        };
        let id: LogId = text(id)?.parse()?;
        let mut command = None;
        for kv in fields.chunks(2) {
            if let [k, v] = kv
                && text(k)? == "c"
            {
                command = Some(
                    serde_json::from_str::<Command>(&text(v)?).map_err(|source| {
                        RedisStoreError::Json {
                            what: format!("version-1 entry {id}"),
                            source,
                        }
                    })?,
                );
            }
        }
        let command = command
            .ok_or_else(|| RedisStoreError::Protocol(format!("entry {id} lacks its command")))?;
        out.push((id, command));
    }
    Ok(out)
}
