//! Appends on a real Redis Cluster (three masters of the test's own) through the store's own
//! client: the appends bound for one master go in one script call whatever their partitions'
//! slots, one entry per partition, and an entry whose slot moved behind the client's back is
//! sent again alone, written once.

use std::time::Duration;

use tiergate_core::Command;
use tiergate_store::{
    CLUSTER_PARTITIONS, LogId, PartitionKeys, RedisLog, RedisOptions, RedisTopology, hash_slot,
    partition_of,
};
use tiergate_testkit::redis::or_skip;
use tiergate_testkit::redis_cluster::RedisCluster;

/// The kit's cluster, or `None` (said) when Redis is not installed and not required.
fn cluster(name: &str) -> Option<RedisCluster> {
    or_skip(RedisCluster::start(name))
}

/// The log of `org`'s partition on a cluster.
fn log_key(org: &str) -> String {
    PartitionKeys::of(partition_of(org, CLUSTER_PARTITIONS), CLUSTER_PARTITIONS).log
}

/// The store's log on the cluster `c`, as a sidecar on `--store redis-cluster` opens it.
async fn log_on(c: &RedisCluster) -> RedisLog {
    RedisLog::connect(&RedisOptions {
        url: c.urls(),
        topology: RedisTopology::Cluster,
        response_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        replica: "test".into(),
        partitions: None,
        log_format: Default::default(),
        fill_wait: RedisOptions::FILL_WAIT,
    })
    .await
    .unwrap()
}

/// A cheap command that is valid in a log.
fn unwait(org: &str, waiter: u64) -> Command {
    Command::Unwait {
        org: org.into(),
        waiter,
    }
}

/// `cmdstat_evalsha` calls on master `i`.
fn evalsha_calls(c: &RedisCluster, i: usize) -> u64 {
    let stats = c.cli(i, &["INFO", "commandstats"]).unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_per_master_and_a_moved_slot_sent_again() {
    let Some(c) = cluster("appends") else {
        return;
    };
    let log = log_on(&c).await;
    // Four orgs of master 0, each in its own partition (so on its own slot).
    let mut orgs: Vec<String> = Vec::new();
    for i in 0.. {
        let o = format!("org-{i}");
        let slot = c.slot_of(&log_key(&o)).unwrap();
        if c.owner_of_slot(slot).unwrap() == 0
            && orgs.iter().all(|p| c.slot_of(&log_key(p)).unwrap() != slot)
        {
            orgs.push(o);
        }
        if orgs.len() == 4 {
            break;
        }
    }
    // The client learned the slot map at connect; the last org's partition's slot now moves to
    // master 1 behind its back.
    let moved = c.slot_of(&log_key(&orgs[3])).unwrap();
    c.migrate_slot(moved, 0, 1, Duration::ZERO).unwrap();
    let before = [evalsha_calls(&c, 0), evalsha_calls(&c, 1)];

    let commands: Vec<Command> = orgs
        .iter()
        .flat_map(|o| [unwait(o, 1), unwait(o, 2)])
        .collect();
    let appended = log
        .append_many(&commands, 1_000, |_| LogId::default())
        .await
        .unwrap();

    // Every org's two commands in one entry, in order, written once, on the master that serves
    // its partition now.
    for (n, o) in orgs.iter().enumerate() {
        let (first, second) = (&appended[2 * n], &appended[2 * n + 1]);
        assert_eq!(first.id, second.id, "{o}: one entry");
        assert_eq!((first.index, second.index), (0, 1), "{o}: in order");
        let own = second.entries.last().expect("its own entry");
        assert_eq!(own.id, second.id, "{o}");
        assert_eq!(*own.commands, vec![unwait(o, 1), unwait(o, 2)], "{o}");
        let master = if n == 3 { 1 } else { 0 };
        let len = c.cli(master, &["XLEN", &log_key(o)]).unwrap();
        assert_eq!(len, "1", "{o} on master {master}");
    }
    // Master 0's three partitions went in one call (plus, at most, the NOSCRIPT one that
    // loaded the script there); by slot they would have been three.
    let calls0 = evalsha_calls(&c, 0) - before[0];
    assert!(calls0 <= 2, "master 0 served {calls0} script calls");
    assert!(
        evalsha_calls(&c, 1) > before[1],
        "the moved org was sent to master 1"
    );
}

#[test]
fn the_clients_slot_of_a_key_is_redis_clusters() {
    let Some(c) = cluster("keyslot") else {
        return;
    };
    // Org ids as the engine allows them, and keys with odd braces: the first `{…}` that is not
    // empty is the tag, else the whole key.
    let mut keys: Vec<String> = (0..200).map(|i| log_key(&format!("org-{i}"))).collect();
    keys.extend(
        PartitionKeys::all(CLUSTER_PARTITIONS)
            .into_iter()
            .flat_map(|k| [k.log, k.snap, k.pos, k.ckpt]),
    );
    keys.extend(
        [
            "tg:schema",
            "tg:orgs",
            "foo{}{bar}",
            "foo{{bar}}zap",
            "a{b}c{d}",
            "{",
            "}{x}",
            "",
        ]
        .map(String::from),
    );
    for k in keys {
        assert_eq!(hash_slot(k.as_bytes()), c.slot_of(&k).unwrap(), "{k:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ask_to_a_master_without_the_scripts_loads_them_there() {
    let Some(c) = cluster("ask-noscript") else {
        return;
    };
    let c = std::sync::Arc::new(c);
    let log = log_on(&c).await;
    let org = (0..)
        .map(|i| format!("ask-{i}"))
        .find(|o| c.owner_of_slot(c.slot_of(&log_key(o)).unwrap()).unwrap() == 0)
        .unwrap();
    let first = log
        .append(&unwait(&org, 1), 1_000, LogId::default())
        .await
        .unwrap();
    // Master 1 has never run a script of the store's.
    let sha = redis::Script::new(tiergate_store::APPEND)
        .get_hash()
        .to_owned();
    let none = c.cli(1, &["SCRIPT", "EXISTS", &sha]).unwrap();
    assert_eq!(none, "0", "master 1 has no scripts yet");
    // The partition's slot moves to master 1 by hand, slowly: its one key (the log) leaves at
    // ~1 s, the slot is handed over at ~2 s. An append in between meets ASK, then NOSCRIPT on
    // master 1.
    let slot = c.slot_of(&log_key(&org)).unwrap();
    let mover = {
        let c = c.clone();
        std::thread::spawn(move || c.migrate_slot(slot, 0, 1, Duration::from_millis(1_000)))
    };
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let second = log
        .append(&unwait(&org, 2), 2_000, first.id)
        .await
        .expect("the append follows ASK and loads the scripts on master 1");
    assert_eq!(second.entries.last().map(|e| e.id), Some(second.id));
    mover.join().unwrap().unwrap();
    assert_eq!(c.owner_of_slot(slot).unwrap(), 1);
    // Both entries are there, on master 1.
    assert_eq!(c.cli(1, &["XLEN", &log_key(&org)]).unwrap(), "2");
}
