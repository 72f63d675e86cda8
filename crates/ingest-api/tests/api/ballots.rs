//! Votes cast together in one script call (what the ballot box does under load): each is
//! decided as if cast alone, in order, and each poll is written and published once.

use crate::helpers::spawn_app;
use domain::poll::{Ballot, Vote, VoteOutcome};
use std::time::Duration;

fn ballot(option: &str, user: &str) -> Ballot {
    Ballot {
        option_ids: vec![option.into()],
        user_id: user.into(),
    }
}

fn with_key(vote: Vote, key: &str) -> Vote {
    Vote {
        idempotency_key: Some(key.into()),
        ..vote
    }
}

fn body(outcome: &VoteOutcome) -> serde_json::Value {
    match outcome {
        VoteOutcome::Accepted(b) | VoteOutcome::Unchanged(b) | VoteOutcome::Replay(b) => {
            serde_json::from_str(b).expect("the answer is JSON")
        }
        other => panic!("no answer body: {other:?}"),
    }
}

#[tokio::test]
async fn votes_cast_in_one_call_are_each_decided_as_if_cast_alone_in_order() {
    let app = spawn_app().await;
    app.mark_restored().await;
    let keys = app.redis.keys();
    // Three polls on one vote shard (one to be closed; "moving" allows changes, "fixed"
    // does not) and one on another shard, from polls made until the shards fit.
    let mut by_shard: std::collections::HashMap<u16, Vec<String>> = Default::default();
    let (moving, closed, elsewhere) = loop {
        let id = app
            .create_poll_with(serde_json::json!({
                "question": "Which?", "options": ["a", "b", "c"], "allow_change": true
            }))
            .await;
        by_shard.entry(keys.poll(&id).shard).or_default().push(id);
        let pair = by_shard.iter().find(|(_, ids)| ids.len() >= 2);
        let other = pair.and_then(|(shard, _)| by_shard.iter().find(|(s, _)| *s != shard));
        if let (Some((_, pair)), Some((_, other))) = (pair, other) {
            break (pair[0].clone(), pair[1].clone(), other[0].clone());
        }
    };
    let fixed = loop {
        let id = app
            .create_poll_with(serde_json::json!({"question": "Fixed?", "options": ["a", "b"]}))
            .await;
        if keys.poll(&id).shard == keys.poll(&moving).shard {
            break id;
        }
    };
    app.close(&closed).await;
    let unknown = (0..)
        .map(|n| format!("no-such-poll-{n}"))
        .find(|id| keys.poll(id).shard == keys.poll(&moving).shard)
        .expect("some id is on the shard");

    // Live watchers of the moving poll.
    let channel = domain::channel::Channel::Poll(moving.clone()).name(&keys);
    let mut watched = app.redis.watch(&channel).await;

    let votes = vec![
        Vote::open(moving.as_str(), ballot("o1", "u1")),
        Vote::open(moving.as_str(), ballot("o1", "u1")),
        Vote::open(moving.as_str(), ballot("o2", "u1")),
        Vote::open(fixed.as_str(), ballot("o1", "u1")),
        Vote::open(fixed.as_str(), ballot("o2", "u1")),
        Vote::open(moving.as_str(), ballot("o9", "u2")),
        with_key(Vote::open(moving.as_str(), ballot("o3", "u3")), "k1"),
        with_key(Vote::open(moving.as_str(), ballot("o3", "u3")), "k1"),
        with_key(Vote::open(moving.as_str(), ballot("o1", "u4")), "k1"),
        Vote::open(closed.as_str(), ballot("o1", "u1")),
        Vote::open(unknown.as_str(), ballot("o1", "u1")),
        Vote::open(elsewhere.as_str(), ballot("o3", "u1")),
    ];
    let conn = app.redis.conn().await;
    let outcomes: Vec<VoteOutcome> =
        domain::poll::vote_all(&conn, &keys, &votes, chrono::Utc::now())
            .await
            .into_iter()
            .map(|o| o.expect("Redis answers"))
            .collect();

    // What each vote gets, worked out by hand.
    let answers: Vec<(&str, serde_json::Value)> = outcomes
        .iter()
        .map(|o| match o {
            VoteOutcome::Accepted(_) => ("accepted", body(o)),
            VoteOutcome::Unchanged(_) => ("unchanged", body(o)),
            VoteOutcome::Replay(_) => ("replay", body(o)),
            VoteOutcome::Duplicate => ("duplicate", serde_json::Value::Null),
            VoteOutcome::UnknownOption => ("unknown_option", serde_json::Value::Null),
            VoteOutcome::KeyReused => ("key_reused", serde_json::Value::Null),
            VoteOutcome::Closed => ("closed", serde_json::Value::Null),
            VoteOutcome::NotFound => ("not_found", serde_json::Value::Null),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let state = |status: &str, seq: i64, tally: serde_json::Value, total: i64| serde_json::json!({"status": status, "seq": seq, "tally": tally, "total": total});
    let null = serde_json::Value::Null;
    let expected = vec![
        (
            "accepted",
            state(
                "accepted",
                1,
                serde_json::json!({"o1": 1, "o2": 0, "o3": 0}),
                1,
            ),
        ),
        (
            "unchanged",
            state(
                "unchanged",
                1,
                serde_json::json!({"o1": 1, "o2": 0, "o3": 0}),
                1,
            ),
        ),
        (
            "accepted",
            state(
                "accepted",
                2,
                serde_json::json!({"o1": 0, "o2": 1, "o3": 0}),
                1,
            ),
        ),
        (
            "accepted",
            state("accepted", 1, serde_json::json!({"o1": 1, "o2": 0}), 1),
        ),
        ("duplicate", null.clone()),
        ("unknown_option", null.clone()),
        (
            "accepted",
            state(
                "accepted",
                3,
                serde_json::json!({"o1": 0, "o2": 1, "o3": 1}),
                2,
            ),
        ),
        (
            "replay",
            state(
                "accepted",
                3,
                serde_json::json!({"o1": 0, "o2": 1, "o3": 1}),
                2,
            ),
        ),
        ("key_reused", null.clone()),
        ("closed", null.clone()),
        ("not_found", null.clone()),
        (
            "accepted",
            state(
                "accepted",
                1,
                serde_json::json!({"o1": 0, "o2": 0, "o3": 1}),
                1,
            ),
        ),
    ];
    assert_eq!(answers, expected);

    // Redis holds the end state, and the queue every counted vote in order.
    let tally = app.tally(&moving).await;
    let want: std::collections::HashMap<String, i64> =
        [("o1".into(), 0), ("o2".into(), 1), ("o3".into(), 1)].into();
    assert_eq!(tally, want);
    let mut redis = app.redis.conn().await;
    let k = keys.poll(&moving);
    let voters: std::collections::HashMap<String, String> = domain::redis_client::cmd("HGETALL")
        .arg(&k.voters)
        .query_async(&mut redis)
        .await
        .expect("voters");
    let want: std::collections::HashMap<String, String> =
        [("u1".into(), "o2".into()), ("u3".into(), "o3".into())].into();
    assert_eq!(voters, want);
    let queued: Vec<String> = domain::redis_client::cmd("LRANGE")
        .arg(&k.queue)
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .expect("queue");
    let votes_queued: Vec<(String, String, i64)> = queued
        .iter()
        .rev()
        .filter_map(
            |m| match serde_json::from_str(m).expect("a queue message parses") {
                domain::poll::PollMessage::Vote {
                    poll_id,
                    user_id,
                    seq,
                    ..
                } => Some((poll_id, user_id, seq)),
                _ => None,
            },
        )
        .collect();
    assert_eq!(
        votes_queued,
        vec![
            (moving.clone(), "u1".into(), 1),
            (moving.clone(), "u1".into(), 2),
            (fixed.clone(), "u1".into(), 1),
            (moving.clone(), "u3".into(), 3),
        ]
    );

    // The watchers got the poll's state once, after the call: then the next vote's.
    domain::poll::vote(
        &conn,
        &keys,
        &Vote::open(moving.as_str(), ballot("o1", "u5")),
        chrono::Utc::now(),
    )
    .await
    .expect("vote");
    let mut published = Vec::new();
    while published.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(10), watched.recv())
            .await
            .expect("published within 10 s")
            .expect("subscription open");
        let payload: serde_json::Value = serde_json::from_str(&message).expect("JSON");
        published.push((payload["seq"].as_i64(), payload["tally"].clone()));
    }
    assert_eq!(
        published,
        vec![
            (Some(3), serde_json::json!({"o1": 0, "o2": 1, "o3": 1})),
            (Some(4), serde_json::json!({"o1": 1, "o2": 1, "o3": 1})),
        ]
    );
}
