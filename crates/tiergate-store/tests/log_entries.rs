//! What a replica writes into a Redis log entry, and what it reads back (`command_codec.rs`):
//! sends in binary, other commands as JSON records; entries that builds before it wrote as a
//! JSON array still apply; an entry it cannot read is an error, never a misread command.

mod redis_common;

use redis::AsyncCommands;
use redis_common::{client, log_as};
use tiergate_core::{Category, Command};
use tiergate_store::{LogFormat, LogId, RedisLog, RedisStoreError};
use tiergate_testkit::redis::{RedisServer, or_skip};

/// A Redis of the test's own, two binary replicas on it (`mine`, `other`), and a connection to
/// look at what they wrote.
async fn two_replicas(
    name: &str,
) -> Option<(
    RedisServer,
    RedisLog,
    RedisLog,
    redis::aio::MultiplexedConnection,
)> {
    let redis = or_skip(RedisServer::start(name))?;
    let mine = log_as(&redis, "mine", LogFormat::Binary).await;
    let other = log_as(&redis, "other", LogFormat::Binary).await;
    let con = client(&redis).await;
    Some((redis, mine, other, con))
}

fn decide(org: &str, recipient: &str, key: Option<&str>) -> Command {
    Command::Decide {
        org: org.into(),
        phone: "1555000111".into(),
        recipient: recipient.into(),
        user_id: None,
        template: "order_update".into(),
        category: Category::Utility,
        key: key.map(Into::into),
        wait: None,
    }
}

/// A stream entry as `XRANGE` gives it: its id and its fields.
type RawEntry = (String, Vec<(String, Vec<u8>)>);

/// The `c` field of every entry of the one partition's log, in order.
async fn fields(con: &mut redis::aio::MultiplexedConnection) -> (String, Vec<Vec<u8>>) {
    let keys: Vec<String> = con.keys("tg:*:log").await.unwrap();
    assert_eq!(keys.len(), 1, "one Redis, one partition: {keys:?}");
    let entries: Vec<RawEntry> = con.xrange_all(&keys[0]).await.unwrap();
    let c = entries
        .into_iter()
        .map(|(_, kv)| kv.into_iter().find(|(k, _)| k == "c").unwrap().1)
        .collect();
    (keys[0].clone(), c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_are_logged_in_binary_and_json_entries_of_older_builds_still_apply() {
    let Some((_redis, mine, other, mut con)) = two_replicas("log-entries").await else {
        return;
    };
    let never = |_| LogId::default();

    let first = vec![
        decide("acme", "+14155550100", None),
        decide("globex", "+14155550101", Some("k-1")),
        Command::Status { org: "acme".into() },
    ];
    mine.append_many(&first, 1_000, never).await.unwrap();
    let (log, c) = fields(&mut con).await;
    assert_eq!(c.len(), 1);
    assert_eq!(c[0][0], 0x01, "a binary entry");
    let json = serde_json::to_vec(&first).unwrap();
    assert!(
        c[0].len() * 2 < json.len(),
        "{} bytes against {} as JSON",
        c[0].len(),
        json.len()
    );

    // An entry as a replica of an earlier build appends it: a JSON array of commands.
    let older = vec![decide("initech", "+14155550102", None)];
    let _: String = con
        .xadd(
            &log,
            "*",
            &[
                ("r", "older".as_bytes()),
                ("c", &serde_json::to_vec(&older).unwrap()),
            ],
        )
        .await
        .unwrap();

    // Another replica reads both, and its own.
    let last = vec![decide("acme", "+14155550103", None)];
    let got = other.append_many(&last, 1_000, never).await.unwrap();
    let entries = &got[0].entries;
    let read: Vec<(&str, &Vec<Command>)> = entries
        .iter()
        .map(|e| (e.replica.as_str(), &*e.commands))
        .collect();
    assert_eq!(
        read,
        vec![("mine", &first), ("older", &older), ("other", &last)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_this_build_cannot_read_is_an_error_not_a_command() {
    let Some((_redis, mine, other, mut con)) = two_replicas("log-entries-bad").await else {
        return;
    };
    let never = |_| LogId::default();
    mine.append_many(&[decide("acme", "+14155550100", None)], 1_000, never)
        .await
        .unwrap();
    let (log, _) = fields(&mut con).await;
    // One record of a tag this build does not know, as a newer build might write.
    let _: String = con
        .xadd(
            &log,
            "*",
            &[("r", &b"newer"[..]), ("c", &[0x01, 0x01, 0x07, 0x00][..])],
        )
        .await
        .unwrap();
    let err = other
        .append_many(&[decide("acme", "+14155550101", None)], 1_000, never)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RedisStoreError::Entry { .. }),
        "{err:?}: {err}"
    );
    // A lone append (the batcher's path, whose error is copied to each caller of a round)
    // keeps the reason.
    let err = other
        .append(
            &decide("acme", "+14155550102", None),
            1_000,
            LogId::default(),
        )
        .await
        .unwrap_err();
    let said = tiergate_store::ErrorChain(&err).to_string();
    assert!(said.contains("unknown record"), "{said}");
}

/// A replica set to JSON (`server.redis_log_format = "json"`, for a rolling upgrade) writes
/// the JSON array earlier builds read, and reads the binary entries of the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_set_to_json_writes_what_earlier_builds_read() {
    let Some(redis) = or_skip(RedisServer::start("log-entries-json")) else {
        return;
    };
    let binary = log_as(&redis, "binary", LogFormat::Binary).await;
    let json = log_as(&redis, "json", LogFormat::Json).await;
    let mut con = client(&redis).await;
    let never = |_| LogId::default();
    let first = vec![decide("acme", "+14155550100", Some("k-1"))];
    binary.append_many(&first, 1_000, never).await.unwrap();
    let second = vec![
        decide("globex", "+14155550101", None),
        Command::Status { org: "acme".into() },
    ];
    let got = json.append_many(&second, 1_000, never).await.unwrap();
    let (_, c) = fields(&mut con).await;
    assert_eq!(c[0][0], 0x01, "the binary replica's entry");
    assert_eq!(
        c[1],
        serde_json::to_vec(&second).unwrap(),
        "the JSON replica's entry, as earlier builds wrote it"
    );
    let read: Vec<&Vec<Command>> = got[0].entries.iter().map(|e| &*e.commands).collect();
    assert_eq!(read, vec![&first, &second]);
}
