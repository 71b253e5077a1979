//! Which partition of the Redis log an org belongs to, and where each partition's keys live.
//!
//! Redis spends most of a decision's cost on the stream entry itself, whatever the entry
//! carries (measured, BENCHMARKS "What a decision costs Redis, by log layout": 13–14 µs for the
//! `XADD` alone with one entry per command, 5.5 µs per command with one entry per call and
//! partition). So the commands of one call that fall into one partition go into one entry, and
//! a partition holds many orgs: one partition on one Redis, [`CLUSTER_PARTITIONS`] on a
//! cluster, so that the masters share the load.
//!
//! An org's partition is a fixed hash of its id (FNV-1a, 64 bits) modulo the partition count,
//! which Redis keeps (`tg:partitions`, written with the schema), so that every replica agrees.
//! Each partition's keys share one hash tag, chosen so that partition `k` of `P` falls in the
//! `k`-th of `P` equal ranges of the 16,384 slots: masters that own equal ranges get equal
//! shares of the partitions by construction, not by chance.

use crate::slot::{SLOTS, hash_slot};

/// Partitions on one Redis: everything in one log, one entry per call.
pub const SINGLE_PARTITIONS: u32 = 1;

/// Partitions on a Redis Cluster: enough to spread over the masters (3 masters get 5, 5 and 6),
/// few enough that a call's commands still share entries.
pub const CLUSTER_PARTITIONS: u32 = 16;

/// The partition of `org` among `partitions`.
pub fn partition_of(org: &str, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in org.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1))) as u32
}

/// The hash tag of partition `k` of `partitions`: `p<k>.<salt>`, the first salt whose slot is
/// in the partition's share of the slots.
fn tag(k: u32, partitions: u32) -> String {
    let p = u64::from(partitions.max(1));
    let (lo, hi) = (
        u64::from(k) * SLOTS as u64 / p,
        (u64::from(k) + 1) * SLOTS as u64 / p,
    );
    (0u32..)
        .map(|salt| format!("p{k}.{salt}"))
        .find(|t| {
            let slot = u64::from(hash_slot(t.as_bytes()));
            slot >= lo && slot < hi
        })
        .unwrap_or_else(|| format!("p{k}"))
}

/// One partition's keys; they share a hash tag, so one script may touch all of them on a
/// cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionKeys {
    /// The stream of entries, each one call's commands for this partition.
    pub log: String,
    /// Each org's snapshot (a hash: org → `OrgSnapshot` JSON).
    pub snap: String,
    /// The entry each org's snapshot is as of (a hash: org → entry id).
    pub pos: String,
    /// The entry the log was trimmed to: entries up to it are gone, their effect is in the
    /// snapshots.
    pub ckpt: String,
}

impl PartitionKeys {
    /// The keys of partition `k` of `partitions`.
    pub fn of(k: u32, partitions: u32) -> Self {
        let t = tag(k, partitions);
        PartitionKeys {
            log: format!("tg:{{{t}}}:log"),
            snap: format!("tg:{{{t}}}:snap"),
            pos: format!("tg:{{{t}}}:pos"),
            ckpt: format!("tg:{{{t}}}:ckpt"),
        }
    }

    /// Every partition's keys, by partition.
    pub fn all(partitions: u32) -> Vec<Self> {
        (0..partitions.max(1))
            .map(|k| Self::of(k, partitions))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_orgs_and_slots() {
        let keys = PartitionKeys::all(CLUSTER_PARTITIONS);
        for (k, pk) in keys.iter().enumerate() {
            let slot = hash_slot(pk.log.as_bytes()) as usize;
            let share = SLOTS / CLUSTER_PARTITIONS as usize;
            assert!(slot / share == k, "partition {k} at slot {slot}");
            for key in [&pk.snap, &pk.pos, &pk.ckpt] {
                assert_eq!(hash_slot(key.as_bytes()) as usize, slot, "{key}");
            }
        }
        let mut counts = [0u32; CLUSTER_PARTITIONS as usize];
        for i in 0..16_000 {
            counts[partition_of(&format!("org-{i}"), CLUSTER_PARTITIONS) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(partition_of("anything", SINGLE_PARTITIONS), 0);
        assert_eq!(PartitionKeys::of(0, 1), PartitionKeys::of(0, 1), "stable");
    }
}
