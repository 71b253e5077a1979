//! How a round of appends reaches Redis: one script call on one Redis; on a cluster, one call
//! per master.
//!
//! A round is one entry per partition ([`Pack`]). On a cluster the packs bound for one master go
//! in one [`crate::APPEND`] call, which declares one key (for routing) and takes every
//! partition's keys as arguments: Redis lets a script without flags touch keys of several
//! slots as long as this node serves them, and refuses a key whose slot it does not serve
//! (moved, or migrating and the key already gone) with an error the script catches per pack.
//! Such a pack is not written there, and is sent again alone (with `MOVED`/`ASK` followed by
//! the router). A pack is written by one call or the other, never both. A call declares only
//! its first log key: while a migration has split a partition's keys between two masters, the
//! log decides where the call runs, and a checkpoint key the script cannot read there makes it
//! answer "read the log" (`{id, false}`) rather than fail. (Measured before partitions, with
//! one call per slot and 1,000 orgs: one call per append; one call per master made that 10×
//! fewer, BENCHMARKS "Redis Cluster".)

use std::sync::Arc;

use redis::{Script, Value};

use crate::own_entries::OwnEntries;
use crate::redis_conn::RedisConn;
use crate::redis_log::{PAGE, RedisStoreError, text};

/// One partition's entry of a round: its keys, the time proposed, its commands (an entry of `command_codec.rs`),
/// the caller's last applied entry of the partition, and the ids of the caller's own entries
/// there whose commands it holds (`own_entries.rs`).
#[derive(Debug)]
pub(crate) struct Pack {
    pub(crate) log: String,
    pub(crate) ckpt: String,
    pub(crate) at_ms: u64,
    pub(crate) cmds: Vec<u8>,
    pub(crate) after: String,
    pub(crate) known: String,
}

/// What one pack got: its entry's id (or `lost`) and the entries before it (see `APPEND`), or
/// why not.
pub(crate) type Answer = Result<(String, Value), RedisStoreError>;

/// Sends rounds of packs; cheap to clone.
#[derive(Clone)]
pub(crate) struct Appender {
    pub(crate) conn: RedisConn,
    pub(crate) append: Script,
    pub(crate) replica: Arc<str>,
    /// This replica's latest entries, shared by every route an append takes.
    pub(crate) own: Arc<OwnEntries>,
    /// How this replica writes its commands into entries (`command_codec.rs`).
    pub(crate) format: crate::command_codec::LogFormat,
}

/// One pack's answer as the script gave it: written (`{id, entries}`, `{'lost', false}`), or
/// not (`{'err', message}`).
enum Reply {
    Written(String, Value),
    NotWritten(String),
}

impl Appender {
    /// Appends `packs` and returns one answer per pack, in the given order. On a cluster the
    /// masters are called at once.
    pub(crate) async fn append(&self, packs: Arc<[Pack]>) -> Vec<Answer> {
        let all: Vec<usize> = (0..packs.len()).collect();
        if !self.conn.is_cluster() {
            return self.call(&packs, &all).await;
        }
        let groups = group_by(&all, |&i| self.conn.node_of(&packs[i].log));
        if groups.len() == 1 {
            return self.node_call(&packs, &all).await;
        }
        let mut sent = tokio::task::JoinSet::new();
        for idx in groups {
            let (me, packs) = (self.clone(), packs.clone());
            sent.spawn(async move {
                let answers = me.node_call(&packs, &idx).await;
                idx.into_iter().zip(answers).collect::<Vec<_>>()
            });
        }
        let mut out: Vec<Option<Answer>> = all.iter().map(|_| None).collect();
        while let Some(joined) = sent.join_next().await {
            // A task that panicked or was cancelled leaves its packs unanswered (below).
            for (i, a) in joined.unwrap_or_default() {
                out[i] = Some(a);
            }
        }
        out.into_iter()
            .map(|a| a.unwrap_or_else(|| Err(unanswered())))
            .collect()
    }

    /// One call for `idx`; a pack not written is an error (on one Redis nothing else could
    /// take it; alone on a cluster, its slot was where the call went).
    async fn call(&self, packs: &[Pack], idx: &[usize]) -> Vec<Answer> {
        match self.invoke(packs, idx).await {
            Ok(replies) => replies
                .into_iter()
                .map(|r| match r {
                    Reply::Written(id, entries) => Ok((id, entries)),
                    Reply::NotWritten(why) => Err(RedisStoreError::Protocol(format!(
                        "redis refused an append: {why}"
                    ))),
                })
                .collect(),
            Err(e) => idx.iter().map(|_| Err(e.duplicate())).collect(),
        }
    }

    /// The packs of one master: one call, then those it did not write (their slot is
    /// elsewhere now), each alone.
    async fn node_call(&self, packs: &[Pack], idx: &[usize]) -> Vec<Answer> {
        if idx.len() == 1 {
            return self.call(packs, idx).await;
        }
        let first = match self.invoke(packs, idx).await {
            Ok(v) => v,
            Err(e) => return idx.iter().map(|_| Err(e.duplicate())).collect(),
        };
        let mut out = Vec::with_capacity(idx.len());
        let mut again = 0;
        for (&i, reply) in idx.iter().zip(first) {
            out.push(match reply {
                Reply::Written(id, entries) => Ok((id, entries)),
                Reply::NotWritten(_) => {
                    again += 1;
                    self.call(packs, &[i])
                        .await
                        .pop()
                        .unwrap_or_else(|| Err(unanswered()))
                }
            });
        }
        if again > 0 {
            tracing::debug!(appends = again, "redis cluster: appends sent again by slot");
        }
        out
    }

    /// One `APPEND` call for `idx`, routed by (and declaring) the first pack's log key.
    async fn invoke(&self, packs: &[Pack], idx: &[usize]) -> Result<Vec<Reply>, RedisStoreError> {
        let Some(&first) = idx.first() else {
            return Ok(Vec::new());
        };
        let route = &packs[first].log;
        let mut inv = self.append.prepare_invoke();
        inv.key(route);
        inv.arg(&*self.replica).arg(PAGE);
        for &i in idx {
            let p = &packs[i];
            inv.arg(&p.log)
                .arg(&p.ckpt)
                .arg(p.at_ms)
                .arg(&p.cmds)
                .arg(&p.after)
                .arg(&p.known);
        }
        // `invoke_async` calls by SHA and, after a Redis restart emptied the script cache,
        // loads the script and calls again (NOSCRIPT ran nothing, so nothing runs twice).
        let results: Vec<Value> = inv.invoke_async(&mut self.conn.on(route)).await?;
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
                Value::Array(mut pair) if pair.len() == 2 => {
                    let second = pair.pop().unwrap_or(Value::Nil);
                    let first = text(&pair[0]).map_err(|_| {
                        RedisStoreError::Protocol("an append's id is not a string".into())
                    })?;
                    if first == "err" {
                        Ok(Reply::NotWritten(text(&second).unwrap_or_default()))
                    } else {
                        Ok(Reply::Written(first, second))
                    }
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
pub(crate) fn group_by<K: Eq + std::hash::Hash>(
    idx: &[usize],
    key: impl Fn(&usize) -> K,
) -> Vec<Vec<usize>> {
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
