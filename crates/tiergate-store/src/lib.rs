//! # tiergate-store: state that survives a restart
//!
//! The engine hands every state change to a [`tiergate_core::Journal`] while it holds the org's
//! lock. [`EmbeddedStore`] appends those facts to a journal of segment files (`fact_log.rs`) from
//! one writer thread that commits them in groups (group commit: one `pwrite` and one `fdatasync`
//! per group, not per send), keeps each org's snapshot in redb, and a caller
//! acknowledges an ALLOW only once [`EmbeddedStore::wait_durable`] says its batch is on disk.
//! On start the facts are replayed in order through [`tiergate_core::Engine::apply_fact`], each at
//! its own time, which rebuilds windows, counts, ratings, pending tiers,
//! appeals, pauses and idempotency keys exactly.
//!
//! [`Replica`] is the other backend: several sidecars share one budget through Redis, where each
//! partition of the orgs has a log of commands that every replica applies in the same order (see
//! `replica.rs`).
//!
//! The database stores a schema version; a newer, unreadable or corrupt one is refused with a
//! clear error, never reset, and so is a journal damaged anywhere but in its last, unacknowledged
//! write. A second process on the same directory is refused by redb's lock.
#![forbid(unsafe_code)]

mod append;
mod chain;
mod cluster_router;
mod command_codec;
mod commit_stats;
mod embedded;
mod fact_codec;
mod fact_log;
mod gather;
mod migrate;
mod own_entries;
mod partition;
mod redis_conn;
mod redis_log;
mod replica;
mod slot;
mod waiters;

pub use chain::ErrorChain;
pub use command_codec::{CommandCodecError, LogFormat};
pub use commit_stats::{COMMIT_BUCKETS, CommitStats};
pub use embedded::{Compaction, EmbeddedStore, RedbError, SCHEMA_VERSION, StoreError};
pub use fact_codec::FactCodecError;
pub use fact_log::FactLogError;
pub use partition::{CLUSTER_PARTITIONS, PartitionKeys, SINGLE_PARTITIONS, partition_of};
pub use redis_conn::RedisTopology;
pub use redis_log::{
    APPEND, Appended, Entry, LogId, MAX_PARTITIONS, POINTS, Page, READ, REDIS_SCHEMA_VERSION,
    RedisLog, RedisOptions, RedisStoreError, SNAP_READ, SNAP_STORE, TRIM,
};
pub use replica::{Health, Replica};
pub use slot::hash_slot;
