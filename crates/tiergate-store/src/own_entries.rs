//! The commands of this replica's latest entries, so that Redis need not send them back.
//!
//! An append returns the entries of its partition that the caller has not applied yet, and
//! while one round is in Redis the next one gathers: so nearly every round found the round
//! before it, this replica's own entry, in its answer, and decoded that entry's commands from
//! JSON again although it had just sent them (8 % of the sidecar's CPU on one Redis at 256
//! calls in flight; BENCHMARKS, "Redis: own entries not sent back"). Each round now names the
//! own entries it still holds here, by id; the script leaves their commands out of its answer
//! (an empty `c`), and the answer is completed from here. Since session 14 the script does not
//! read them either: it reads the log between them, so that Redis neither copies their commands
//! nor hashes them as it hands them to Lua (BENCHMARKS, "Session 14": "Own entries not read").
//!
//! A round takes a copy of the list when it is built ([`OwnEntries::recent`]) and completes its
//! answer from that copy, so an entry the list drops meanwhile is still at hand; an own entry
//! not named (older, or appended by a round still in flight) comes back whole.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tiergate_core::Command;

use crate::redis_log::LogId;

/// Own entries kept per partition: the rounds a caller can lag behind by, in practice one or
/// two; more are read back whole.
const KEEP: usize = 8;

/// An entry's id and its commands, as this replica appended them.
pub(crate) type OwnEntry = (LogId, Arc<Vec<Command>>);

/// This replica's latest entries, per partition. Bounded: [`KEEP`] per partition, and
/// partitions are at most 1,024.
#[derive(Debug, Default)]
pub(crate) struct OwnEntries {
    by_partition: Mutex<HashMap<u32, VecDeque<OwnEntry>>>,
}

impl OwnEntries {
    /// Remembers that entry `id` of `partition` holds `commands`.
    pub(crate) fn record(&self, partition: u32, id: LogId, commands: Arc<Vec<Command>>) {
        let mut map = self.by_partition.lock();
        let kept = map.entry(partition).or_default();
        if kept.len() == KEEP {
            kept.pop_front();
        }
        kept.push_back((id, commands));
    }

    /// The own entries of `partition` held now, for a round to name and to complete its answer
    /// from.
    pub(crate) fn recent(&self, partition: u32) -> Vec<OwnEntry> {
        self.by_partition
            .lock()
            .get(&partition)
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The ids of `known` after `after` (only those can be in the answer), as the script takes
/// them: separated by commas, empty for none.
pub(crate) fn names(known: &[OwnEntry], after: LogId) -> String {
    let mut s = String::new();
    for (id, _) in known.iter().filter(|(id, _)| *id > after) {
        if !s.is_empty() {
            s.push(',');
        }
        s.push_str(&id.to_string());
    }
    s
}

/// The commands of entry `id` in `known`.
pub(crate) fn find(known: &[OwnEntry], id: LogId) -> Option<Arc<Vec<Command>>> {
    known.iter().find(|(k, _)| *k == id).map(|(_, c)| c.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> LogId {
        LogId { ms, n: 0 }
    }

    #[test]
    fn keeps_the_latest_per_partition() {
        let own = OwnEntries::default();
        for ms in 1..=20 {
            own.record(ms as u32 % 2, id(ms), Arc::new(Vec::new()));
        }
        let even = own.recent(0);
        assert_eq!(even.len(), KEEP);
        assert_eq!(even.first().map(|e| e.0), Some(id(6)));
        assert_eq!(even.last().map(|e| e.0), Some(id(20)));
        assert_eq!(names(&even[..2], LogId::default()), "6-0,8-0");
        assert_eq!(names(&even, id(16)), "18-0,20-0");
        assert!(find(&even, id(8)).is_some());
        assert!(find(&even, id(4)).is_none());
        assert!(own.recent(7).is_empty());
        assert_eq!(names(&[], LogId::default()), "");
    }
}
