//! Since schema version 3 the facts are in the journal (`journal/*.facts`), not in redb. A
//! version-2 directory, whose facts are in redb's `facts` table, must start with every fact
//! applied once, become the current version (4: sends in binary form), and go on from there; a
//! store of a newer version is refused untouched; and a compaction must remove the journal's
//! segments its snapshots cover. Each 131048 adds exactly one spam strike, so a fact lost or
//! applied twice shows in the count.
mod common;

use std::path::Path;

use common::{open, strikes};
use redb::{Database, ReadableDatabase, TableDefinition};
use tiergate_core::*;
use tiergate_store::{EmbeddedStore, SCHEMA_VERSION};
use tiergate_testkit::T0;

const FACTS: TableDefinition<u64, &[u8]> = TableDefinition::new("facts");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tiergate-upgrade-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn strike(at: u64) -> Fact {
    Fact::new(
        at,
        "z",
        Change::Feedback {
            phone: Some("1".into()),
            recipient: None,
            template: None,
            code: 131_048,
        },
    )
}

/// A directory as another build left it: `version` in redb's `meta` table and, when there are
/// any, `facts` in its `facts` table, numbered from 1 (where version 2 kept them).
fn store_of_version(d: &Path, version: u64, facts: &[Vec<u8>]) {
    let db = Database::create(d.join("tiergate.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", version)
            .unwrap();
        if !facts.is_empty() {
            let mut table = txn.open_table(FACTS).unwrap();
            for (seq, f) in (1u64..).zip(facts) {
                table.insert(seq, f.as_slice()).unwrap();
            }
        }
    }
    txn.commit().unwrap();
}

/// Org `z`'s registration, as JSON.
fn put_org_z() -> Vec<u8> {
    let org = Fact::put_org(T0, OrgConfig::new("z", Tier::Tier1K).with_phone("1", 80));
    serde_json::to_vec(&org).unwrap()
}

fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".facts")
        })
        .count()
}

#[test]
fn a_version_2_store_replays_its_facts_once_and_becomes_the_current_version() {
    let d = dir("v2");
    // A version-2 directory as that build wrote it: facts in redb, numbered from 1.
    let mut facts = vec![put_org_z()];
    facts.extend((2..=6).map(|seq| serde_json::to_vec(&strike(T0 + seq)).unwrap()));
    store_of_version(&d, 2, &facts);
    let (store, engine) = open(&d);
    assert_eq!(strikes(&engine), 5, "the five stored strikes, each once");
    for _ in 0..2 {
        engine
            .feedback("z", Some("1"), None, None, 131_048)
            .unwrap();
    }
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(store.sync())
        .unwrap();
    store.close();
    drop((store, engine));
    assert_eq!(version_of(&d), SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 4);
    {
        let db = Database::open(d.join("tiergate.redb")).unwrap();
        let read = db.begin_read().unwrap();
        let facts = read.open_table(FACTS).unwrap();
        assert_eq!(
            redb::ReadableTableMetadata::len(&facts).unwrap(),
            0,
            "version 2's facts are compacted away"
        );
    }
    let (store, engine) = open(&d);
    assert_eq!(
        strikes(&engine),
        7,
        "the two later strikes came back from the journal"
    );
    store.close();
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_compaction_removes_the_segments_its_snapshots_cover() {
    let d = dir("segments");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (store, engine) = open(&d);
    engine
        .put_org(OrgConfig::new("z", Tier::Tier1K).with_phone("1", 80))
        .unwrap();
    let compact = |store: &EmbeddedStore, engine: &Engine| {
        let c = store.prepare_compaction(engine).unwrap();
        rt.block_on(store.wait_durable(c.reflects())).unwrap();
        store.commit_compaction(&c).unwrap();
    };
    for round in 1..=3u64 {
        for _ in 0..10 {
            engine
                .feedback("z", Some("1"), None, None, 131_048)
                .unwrap();
        }
        rt.block_on(store.sync()).unwrap();
        compact(&store, &engine);
        assert!(
            segments(&d) <= 2,
            "round {round}: {} segments after a compaction",
            segments(&d)
        );
    }
    // A compaction with nothing new since: the writer's segment holds facts the snapshots
    // cover, and the next compaction removes every older one.
    rt.block_on(store.sync()).unwrap();
    compact(&store, &engine);
    engine
        .feedback("z", Some("1"), None, None, 131_048)
        .unwrap();
    rt.block_on(store.sync()).unwrap();
    compact(&store, &engine);
    assert!(segments(&d) <= 2, "{} segments", segments(&d));
    store.close();
    drop((store, engine));
    let (store, engine) = open(&d);
    assert_eq!(strikes(&engine), 31);
    assert_eq!(
        segments(&d),
        1,
        "a start leaves only the segment it writes to"
    );
    store.close();
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_store_of_a_newer_version_is_refused_and_keeps_its_version() {
    let d = dir("newer");
    store_of_version(&d, SCHEMA_VERSION + 1, &[]);
    let err = EmbeddedStore::open(&d).unwrap_err();
    assert!(
        matches!(err, tiergate_store::StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "{err}"
    );
    // Its version is as it was (redb may rewrite its own header on open; the data stays).
    assert_eq!(version_of(&d), SCHEMA_VERSION + 1);
}

/// The version a store's `meta` table holds.
fn version_of(d: &Path) -> u64 {
    let db = Database::open(d.join("tiergate.redb")).unwrap();
    let read = db.begin_read().unwrap();
    let meta = read.open_table(META).unwrap();
    meta.get("schema_version").unwrap().unwrap().value()
}

#[test]
fn a_version_2_store_whose_replay_fails_keeps_its_version_and_its_facts() {
    let d = dir("v2-damaged");
    store_of_version(&d, 2, &[put_org_z(), b"{\"damaged".to_vec()]);
    let store = EmbeddedStore::open(&d).unwrap();
    drop(store);
    assert_eq!(version_of(&d), 2, "opening alone does not mark it");
    let store = EmbeddedStore::open(&d).unwrap();
    let (engine, _clock) = tiergate_testkit::engine_at_t0(Policy::default());
    let err = store.replay(&engine).unwrap_err();
    assert!(
        matches!(err, tiergate_store::StoreError::FactDecode { seq: 2, .. }),
        "{err}"
    );
    drop(store);
    assert_eq!(version_of(&d), 2, "left for the binary that wrote it");
    let db = Database::open(d.join("tiergate.redb")).unwrap();
    let read = db.begin_read().unwrap();
    let facts = read.open_table(FACTS).unwrap();
    assert_eq!(
        redb::ReadableTableMetadata::len(&facts).unwrap(),
        2,
        "nothing was compacted away"
    );
    drop((facts, read, db));
    let _ = std::fs::remove_dir_all(&d);
}
