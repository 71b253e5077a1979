//! A replica's own entries do not come back from Redis (`own_entries.rs`): an append that finds
//! this replica's earlier entry in its answer gets that entry without its commands, over the
//! wire, and completes it from what it sent; another replica gets the entry whole.

mod redis_common;

use redis_common::{client, log_as};
use tiergate_core::Command;
use tiergate_store::{LogFormat, LogId, RedisLog};
use tiergate_testkit::redis::{RedisServer, or_skip};

async fn log_on(redis: &RedisServer, replica: &str) -> RedisLog {
    log_as(redis, replica, LogFormat::Binary).await
}

/// 400 cheap commands with long org ids: about 29 KB of JSON in one entry.
fn commands(round: u64) -> Vec<Command> {
    (0..400)
        .map(|i| Command::Unwait {
            org: format!("an-org-with-a-rather-long-id-{i:05}"),
            waiter: round,
        })
        .collect()
}

/// Bytes Redis has written to its clients so far.
async fn bytes_out(con: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(con)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_output_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_entries_come_back_without_their_commands() {
    let Some(redis) = or_skip(RedisServer::start("own-entries")) else {
        return;
    };
    let mine = log_on(&redis, "mine").await;
    let other = log_on(&redis, "other").await;
    let mut con = client(&redis).await;
    let never = |_| LogId::default();

    let first = mine.append_many(&commands(1), 1_000, never).await.unwrap();
    let first_id = first[0].id;

    // The same replica, not having applied its first entry: the answer holds it, without its
    // 40 KB of commands on the wire, and completed here.
    let before = bytes_out(&mut con).await;
    let second = mine.append_many(&commands(2), 1_000, never).await.unwrap();
    let sent = bytes_out(&mut con).await - before;
    assert!(
        sent < 8_000,
        "{sent} bytes came back for an answer holding this replica's own entry"
    );
    let entries = &second[0].entries;
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0].id, first_id);
    assert_eq!(entries[0].replica, "mine");
    assert_eq!(*entries[0].commands, commands(1));
    assert_eq!(*entries[1].commands, commands(2));

    // Another replica gets both entries whole, and they are the same.
    let before = bytes_out(&mut con).await;
    let third = other.append_many(&commands(3), 1_000, never).await.unwrap();
    let sent = bytes_out(&mut con).await - before;
    assert!(
        sent > 50_000,
        "{sent} bytes: the other replica's entries came whole"
    );
    let entries = &third[0].entries;
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert_eq!(*entries[0].commands, commands(1));
    assert_eq!(*entries[1].commands, commands(2));
    assert_eq!(*entries[2].commands, commands(3));
    assert_eq!(entries[2].replica, "other");
}

/// One small command.
fn one(round: u64) -> Vec<Command> {
    vec![Command::Unwait {
        org: "an-org".into(),
        waiter: round,
    }]
}

/// The script reads the log between the caller's own entries (which it does not read) and
/// gives them back in their places; a page cut short between them ends the answer there, and
/// the caller reads on from its last entry. (That they are not read shows inside Redis, not in
/// the answer: `benches/redis_append_cpu.py` measures it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_entries_keep_their_places_among_others_and_across_a_page() {
    let Some(redis) = or_skip(RedisServer::start("own-entries-places")) else {
        return;
    };
    let mine = log_on(&redis, "mine").await;
    let other = log_on(&redis, "other").await;
    let never = |_| LogId::default();
    let ids = |entries: &[tiergate_store::Entry]| -> Vec<(String, u64)> {
        entries
            .iter()
            .map(|e| {
                let waiter = match &e.commands[..] {
                    [Command::Unwait { waiter, .. }] => *waiter,
                    other => panic!("{other:?}"),
                };
                (e.replica.clone(), waiter)
            })
            .collect()
    };

    // mine 1, other 2, mine 3, other 4: then mine 5, from the start.
    mine.append_many(&one(1), 1_000, never).await.unwrap();
    other.append_many(&one(2), 1_000, never).await.unwrap();
    mine.append_many(&one(3), 1_000, never).await.unwrap();
    other.append_many(&one(4), 1_000, never).await.unwrap();
    let fifth = mine.append_many(&one(5), 1_000, never).await.unwrap();
    let mine_ = |w| ("mine".to_string(), w);
    let other_ = |w| ("other".to_string(), w);
    assert_eq!(
        ids(&fifth[0].entries),
        vec![mine_(1), other_(2), mine_(3), other_(4), mine_(5)]
    );

    // Then 70 of the other's after mine 6: from the start, a page (64) ends after 58 of them.
    mine.append_many(&one(6), 1_000, never).await.unwrap();
    for w in 100..170 {
        other.append_many(&one(w), 1_000, never).await.unwrap();
    }
    let last = mine.append_many(&one(7), 1_000, never).await.unwrap();
    let got = ids(&last[0].entries);
    let mut want = vec![mine_(1), other_(2), mine_(3), other_(4), mine_(5), mine_(6)];
    want.extend((100..158).map(other_));
    assert_eq!(
        got.len(),
        64,
        "a full page, without mine 7: the rest is read on"
    );
    assert_eq!(got, want);

    // A page that fills up just before one of mine ends there too: after mine 7, mine 8, 63 of
    // the other's, mine 9; then mine 10 from mine 7 on.
    let seventh = last[0].id;
    mine.append_many(&one(8), 1_000, never).await.unwrap();
    for w in 200..263 {
        other.append_many(&one(w), 1_000, never).await.unwrap();
    }
    mine.append_many(&one(9), 1_000, never).await.unwrap();
    let tenth = mine
        .append_many(&one(10), 1_000, |_| seventh)
        .await
        .unwrap();
    let mut want = vec![mine_(8)];
    want.extend((200..263).map(other_));
    assert_eq!(ids(&tenth[0].entries), want, "mine 9 is the next page's");
}
