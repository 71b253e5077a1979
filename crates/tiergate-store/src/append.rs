//! How a batch of appends reaches Redis: one script call on one Redis; on a cluster, one call
//! per master.
//!
//! A cluster refuses a script whose *declared* keys hash to different slots, and with 1,000
//! orgs over 16,384 slots a batch split by slot is nearly one call per append (measured: 36,815
//! script calls on one master for ~37,000 decisions; one call per master made that 3,628, and
//! the p99 42 → 8 ms; Redis's CPU per decision did not move). So on a cluster the
//! appends bound for one master go in one call of [`APPEND_ON_NODE`], which declares one key
//! (for routing) and takes every org's keys as arguments. Redis lets a script without flags
//! touch keys of several slots as long as this node serves them, and refuses a key whose slot
//! it does not serve (moved, or migrating and the key already gone) with an error the script
//! catches per append: such an append is not written there, and is sent again alone, by slot
//! (with `MOVED`/`ASK` followed by the router). An append is written by one call or the other,
//! never both.

use std::sync::Arc;

use redis::{Script, Value};

use crate::redis_conn::RedisConn;
use crate::redis_log::{PAGE, RedisStoreError, log_key, snap_key};

/// [`crate::APPEND`] for the appends of one master, each org's keys passed as arguments.
///
/// KEYS: one key of the first append's slot (where the call is routed). ARGV: the replica id,
/// the page size, then per append its log key, snapshot key, proposed ms, command JSON and
/// `after` (as in `APPEND`). Returns per append `{id, entries}` or `{id, false}` as `APPEND`
/// does, or `false` when it was not written (its slot is not served here, or any other error
/// of its `XADD`: nothing was written for it), or `{'lost', false}` as `APPEND` does. Like
/// every script of the store it runs after the helpers (`id_less`, `xadd`,
/// `append_at_latest`) the store puts before each one.
pub const APPEND_ON_NODE: &str = r#"
local replica, page = ARGV[1], ARGV[2]
local out, last = {}, {}
local function msg(e)
  if type(e) == 'table' then return tostring(e.err) end
  return tostring(e)
end
for i = 1, (#ARGV - 2) / 5 do
  local b = 5 * i - 2
  local key, snap, at, cmd, after = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  if after == '' then after = last[key] or '0-0' end
  local ok, id = xadd(key, after, at, replica, cmd)
  if not ok and string.find(msg(id), 'equal or smaller', 1, true) then
    -- The log is already later (another replica's clock is ahead): run at its latest time.
    ok, id = true, append_at_latest(key, replica, cmd)
  end
  if not ok then
    out[i] = false
  elseif not id or last[key] == 'lost' then
    last[key] = 'lost'
    out[i] = {'lost', false}
  else
    last[key] = id
    local okh, sid = pcall(redis.call, 'HGET', snap, 'id')
    if not okh or (sid and id_less(after, sid)) then
      out[i] = {id, false}
    else
      local okr, entries = pcall(redis.call, 'XRANGE', key, '(' .. after, '(' .. id, 'COUNT', page)
      if okr then out[i] = {id, entries} else out[i] = {id, false} end
    end
  end
end
return out
"#;

/// One append's arguments: its org, the time proposed, the command's JSON and the caller's
/// last applied entry (empty: the org's previous command of the same call).
#[derive(Debug)]
pub(crate) struct Item {
    pub(crate) org: String,
    pub(crate) at_ms: u64,
    pub(crate) json: String,
    pub(crate) after: String,
}

/// What one append got: its id and the entries before it (see `APPEND`), or why not.
pub(crate) type Answer = Result<(String, Value), RedisStoreError>;

/// Sends batches of appends; cheap to clone.
#[derive(Clone)]
pub(crate) struct Appender {
    pub(crate) conn: RedisConn,
    pub(crate) append: Script,
    pub(crate) on_node: Script,
    pub(crate) replica: Arc<str>,
}

impl Appender {
    /// Appends `items` (an org's in the given order, with nothing between them) and returns
    /// one answer per item, in the given order. On a cluster the masters are called at once.
    pub(crate) async fn append(&self, items: Arc<[Item]>) -> Vec<Answer> {
        let all: Vec<usize> = (0..items.len()).collect();
        if !self.conn.is_cluster() {
            return self.call(&items, &all).await;
        }
        let groups = group_by(&all, |&i| self.conn.node_of(&log_key(&items[i].org)));
        if groups.len() == 1 {
            return self.node_call(&items, &all).await;
        }
        let mut sent = tokio::task::JoinSet::new();
        for idx in groups {
            let (me, items) = (self.clone(), items.clone());
            sent.spawn(async move {
                let answers = me.node_call(&items, &idx).await;
                idx.into_iter().zip(answers).collect::<Vec<_>>()
            });
        }
        let mut out: Vec<Option<Answer>> = all.iter().map(|_| None).collect();
        while let Some(joined) = sent.join_next().await {
            // A task that panicked or was cancelled leaves its appends unanswered (below).
            for (i, a) in joined.unwrap_or_default() {
                out[i] = Some(a);
            }
        }
        out.into_iter()
            .map(|a| a.unwrap_or_else(|| Err(unanswered())))
            .collect()
    }

    /// One `APPEND` call for `idx` (on a cluster, all of one slot).
    async fn call(&self, items: &[Item], idx: &[usize]) -> Vec<Answer> {
        let sent = invoke_append(
            &self.conn,
            &self.append,
            &self.replica,
            idx.iter().map(|&i| &items[i]),
        )
        .await;
        match sent {
            Ok(r) => r.into_iter().map(Ok).collect(),
            Err(e) => idx.iter().map(|_| Err(e.duplicate())).collect(),
        }
    }

    /// The appends of one master: one `APPEND` when they share a slot, else one
    /// [`APPEND_ON_NODE`], then those it did not write (their slot is elsewhere now), by slot.
    async fn node_call(&self, items: &[Item], idx: &[usize]) -> Vec<Answer> {
        let slots = group_by(idx, |&i| self.conn.group_key(&log_key(&items[i].org)));
        if slots.len() == 1 {
            return self.call(items, idx).await;
        }
        let first = match self.on_node(items, idx).await {
            Ok(v) => v,
            Err(e) => return idx.iter().map(|_| Err(e.duplicate())).collect(),
        };
        let mut out: Vec<Option<Answer>> = first.into_iter().map(|a| a.map(Ok)).collect();
        // An append not written after one of its org's was (both share a slot, so this should
        // not happen) is not sent again: its `after` would be read as "the org's previous of
        // this call", which that other call does not hold.
        for p in 0..idx.len() {
            let org = &items[idx[p]].org;
            if out[p].is_none() && (0..p).any(|q| out[q].is_some() && items[idx[q]].org == *org) {
                out[p] = Some(Err(RedisStoreError::Protocol(format!(
                    "an append of {org} was refused after an earlier one was written"
                ))));
            }
        }
        let missed: Vec<usize> = (0..idx.len()).filter(|&p| out[p].is_none()).collect();
        if !missed.is_empty() {
            for group in group_by(&missed, |&p| {
                self.conn.group_key(&log_key(&items[idx[p]].org))
            }) {
                let of: Vec<usize> = group.iter().map(|&p| idx[p]).collect();
                for (p, a) in group.iter().zip(self.call(items, &of).await) {
                    out[*p] = Some(a);
                }
            }
            tracing::debug!(
                appends = missed.len(),
                "redis cluster: appends sent again by slot"
            );
        }
        out.into_iter()
            .map(|a| a.unwrap_or_else(|| Err(unanswered())))
            .collect()
    }

    /// One [`APPEND_ON_NODE`] call: per append, its answer, or `None` when not written there.
    async fn on_node(
        &self,
        items: &[Item],
        idx: &[usize],
    ) -> Result<Vec<Option<(String, Value)>>, RedisStoreError> {
        let Some(&first) = idx.first() else {
            return Ok(Vec::new());
        };
        let route = log_key(&items[first].org);
        let mut inv = self.on_node.prepare_invoke();
        inv.key(&route).arg(&*self.replica).arg(PAGE);
        for &i in idx {
            let it = &items[i];
            inv.arg(log_key(&it.org))
                .arg(snap_key(&it.org))
                .arg(it.at_ms)
                .arg(&it.json)
                .arg(&it.after);
        }
        let results: Vec<Value> = inv.invoke_async(&mut self.conn.on(&route)).await?;
        if results.len() != idx.len() {
            return Err(RedisStoreError::Protocol(format!(
                "{} results for {} appends",
                results.len(),
                idx.len()
            )));
        }
        results
            .into_iter()
            .map(|v| match v {
                Value::Nil | Value::Boolean(false) => Ok(None),
                Value::Array(mut pair) if pair.len() == 2 => {
                    let entries = pair.pop().unwrap_or(Value::Nil);
                    let id = match pair.pop() {
                        Some(Value::BulkString(b)) => String::from_utf8(b).ok(),
                        Some(Value::SimpleString(s)) => Some(s),
                        _ => None,
                    };
                    id.map(|id| Some((id, entries))).ok_or_else(|| {
                        RedisStoreError::Protocol("an append's id is not a string".into())
                    })
                }
                other => Err(RedisStoreError::Protocol(format!(
                    "unexpected append answer {other:?}"
                ))),
            })
            .collect()
    }
}

fn unanswered() -> RedisStoreError {
    RedisStoreError::Protocol("an append went unanswered".into())
}

/// Splits `idx` by `key`, each group in the given order, groups in the order first seen.
fn group_by<K: Eq + std::hash::Hash>(idx: &[usize], key: impl Fn(&usize) -> K) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for i in idx {
        let g = *index.entry(key(i)).or_insert_with(|| {
            out.push(Vec::new());
            out.len() - 1
        });
        out[g].push(*i);
    }
    out
}

/// Runs one `APPEND` script call for `items` (all of one slot on a cluster) and returns one
/// `(id, entries)` per item, in order.
async fn invoke_append(
    conn: &RedisConn,
    script: &Script,
    replica: &str,
    items: impl Iterator<Item = &Item>,
) -> Result<Vec<(String, Value)>, RedisStoreError> {
    let mut inv = script.prepare_invoke();
    inv.arg(replica).arg(PAGE);
    let mut n = 0;
    let mut first = None;
    for it in items {
        first.get_or_insert_with(|| log_key(&it.org));
        inv.key(log_key(&it.org))
            .key(snap_key(&it.org))
            .arg(it.at_ms)
            .arg(&it.json)
            .arg(&it.after);
        n += 1;
    }
    let Some(key) = first else {
        return Ok(Vec::new());
    };
    // `invoke_async` calls by SHA and, after a Redis restart emptied the script cache, loads
    // the script and calls again (NOSCRIPT ran nothing, so nothing runs twice).
    let results: Vec<(String, Value)> = inv.invoke_async(&mut conn.on(&key)).await?;
    if results.len() != n {
        return Err(RedisStoreError::Protocol(format!(
            "{} results for {n} appends",
            results.len()
        )));
    }
    Ok(results)
}
