use crate::helpers::Harness;
use batch_worker::lane::{Lane, Work};
use batch_worker::votes::VoteWork;
use domain::poll::{PollMessage, PollOption};
use domain::queue::WorkerQueue;
use domain::shutdown::CancellationToken;
use std::sync::Arc;
use std::time::Duration;

fn poll(id: &str) -> PollMessage {
    PollMessage::Poll {
        poll_id: id.into(),
        question: "Q?".into(),
        options: vec![
            PollOption {
                id: "o1".into(),
                label: "a".into(),
            },
            PollOption {
                id: "o2".into(),
                label: "b".into(),
            },
        ],
        closes_at_ms: None,
        created_at_ms: 1_763_114_400_000,
        settings: domain::poll::PollSettings::default(),
        queued_at_ms: 1_763_114_400_000,
    }
}

fn vote(n: u32, poll_id: &str, option: &str, user: &str) -> PollMessage {
    votes_for(n, poll_id, &[option], user)
}

/// Vote message `n` (its sequence number too) of `user` choosing `options`.
fn votes_for(n: u32, poll_id: &str, options: &[&str], user: &str) -> PollMessage {
    PollMessage::Vote {
        vote_id: uuid::Uuid::from_u128(u128::from(n)),
        poll_id: poll_id.into(),
        option_id: options[0].into(),
        option_ids: options.iter().map(|o| (*o).to_string()).collect(),
        user_id: user.into(),
        seq: i64::from(n),
        voted_at_ms: 1_763_114_400_000,
        queued_at_ms: 1_763_114_400_000,
        traceparent: None,
    }
}

async fn counts(h: &Harness, poll_id: &str) -> Vec<(String, Option<String>, i64)> {
    let client = h.db.pool().get().await.expect("pg");
    client
        .query("SELECT option_id, label, votes FROM poll_options WHERE poll_id = $1 ORDER BY option_id", &[&poll_id])
        .await
        .expect("query")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn votes_are_counted_once_however_often_they_are_delivered() {
    let h = Harness::new().await;
    let store = VoteWork {
        pg: h.db.pool(),
        triggers: None,
    };
    let batch = [
        poll("p"),
        vote(1, "p", "o1", "u1"),
        vote(2, "p", "o2", "u2"),
    ];
    store.write(&batch).await.expect("first delivery");
    store.write(&batch).await.expect("redelivery");
    assert_eq!(
        counts(&h, "p").await,
        vec![
            ("o1".into(), Some("a".into()), 1),
            ("o2".into(), Some("b".into()), 1)
        ]
    );
}

#[tokio::test]
async fn a_newer_vote_of_a_user_moves_their_count_and_an_older_one_changes_nothing() {
    let h = Harness::new().await;
    let store = VoteWork {
        pg: h.db.pool(),
        triggers: None,
    };
    store
        .write(&[
            poll("p"),
            vote(1, "p", "o1", "u1"),
            vote(2, "p", "o2", "u2"),
        ])
        .await
        .expect("write");
    // u1 moves to o2; then the first vote is delivered again, late.
    store
        .write(&[vote(3, "p", "o2", "u1")])
        .await
        .expect("move");
    store
        .write(&[vote(1, "p", "o1", "u1")])
        .await
        .expect("late replay");
    assert_eq!(
        counts(&h, "p").await,
        vec![
            ("o1".into(), Some("a".into()), 0),
            ("o2".into(), Some("b".into()), 2)
        ]
    );
    // Several moves in one batch: only the newest counts.
    store
        .write(&[
            vote(5, "p", "o1", "u2"),
            votes_for(7, "p", &["o1", "o2"], "u2"),
            vote(6, "p", "o2", "u2"),
        ])
        .await
        .expect("moves");
    assert_eq!(
        counts(&h, "p").await,
        vec![
            ("o1".into(), Some("a".into()), 1),
            ("o2".into(), Some("b".into()), 2)
        ]
    );
    assert_eq!(
        h.count("SELECT count(*) FROM votes WHERE poll_id = 'p'")
            .await,
        2,
        "one row per voter"
    );
}

#[tokio::test]
async fn racing_writers_of_a_vote_and_its_move_end_on_the_move() {
    // Two workers store a user's first vote and its move at the same time: whichever
    // commits first, the counts end on the move.
    for round in 0..10 {
        let h = Harness::new().await;
        let store = Arc::new(VoteWork {
            pg: h.db.pool(),
            triggers: None,
        });
        store.write(&[poll("p")]).await.expect("poll");
        let users: Vec<String> = (0..20).map(|u| format!("u{u}")).collect();
        let (a, b) = (store.clone(), store.clone());
        let firsts: Vec<PollMessage> = users
            .iter()
            .enumerate()
            .map(|(i, u)| vote(2 * i as u32 + 1, "p", "o1", u))
            .collect();
        let moves: Vec<PollMessage> = users
            .iter()
            .enumerate()
            .map(|(i, u)| vote(2 * i as u32 + 2, "p", "o2", u))
            .collect();
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { a.write(&firsts).await.map(|_| ()) }),
            tokio::spawn(async move { b.write(&moves).await.map(|_| ()) }),
        );
        r1.expect("join").expect("firsts");
        r2.expect("join").expect("moves");
        assert_eq!(
            counts(&h, "p").await,
            vec![
                ("o1".into(), Some("a".into()), 0),
                ("o2".into(), Some("b".into()), 20)
            ],
            "round {round}"
        );
    }
}

#[tokio::test]
async fn votes_and_closes_that_overtake_the_poll_definition_still_land() {
    let h = Harness::new().await;
    let store = VoteWork {
        pg: h.db.pool(),
        triggers: None,
    };
    store
        .write(&[vote(1, "late", "o2", "u1")])
        .await
        .expect("vote first");
    store
        .write(&[PollMessage::Close {
            poll_id: "late".into(),
            closed_at_ms: 1_763_114_500_000,
            queued_at_ms: 1_763_114_500_000,
        }])
        .await
        .expect("close");
    store.write(&[poll("late")]).await.expect("definition last");
    assert_eq!(
        counts(&h, "late").await,
        vec![
            ("o1".into(), Some("a".into()), 0),
            ("o2".into(), Some("b".into()), 1)
        ]
    );
    let client = h.db.pool().get().await.expect("pg");
    let row = client
        .query_one(
            "SELECT question, closed_at IS NOT NULL FROM polls WHERE poll_id = 'late'",
            &[],
        )
        .await
        .expect("poll");
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, bool>(1)),
        ("Q?".to_string(), true)
    );
}

#[tokio::test]
async fn a_vote_lane_drains_every_shard_queue() {
    let h = Harness::new().await;
    let keys = h.keys();
    let mut conn = h.redis.conn().await;
    let mut expected = 0;
    for shard in 0..domain::keys::VOTE_SHARDS {
        let id = format!("poll-of-shard-{shard}");
        let items = vec![serde_json::to_vec(&poll(&id)).expect("json")];
        domain::queue::push(&mut conn, &keys.vote_queue(shard), &items)
            .await
            .expect("push");
        expected += 1;
    }
    let sources = (0..domain::keys::VOTE_SHARDS)
        .map(|s| WorkerQueue::new(keys.vote_queue(s), "v"))
        .collect();
    let redis = domain::redis::connection(&h.redis.config).expect("redis");
    let blocking =
        domain::redis::blocking_pool(&h.redis.config, 1, Duration::from_secs(2)).expect("redis");
    let mut lane = Lane::new(
        sources,
        Arc::new(VoteWork {
            pg: h.db.pool(),
            triggers: None,
        }),
        redis,
        blocking,
        h.settings.clone(),
    );
    let outcome = lane
        .run_one_batch(&CancellationToken::new())
        .await
        .expect("batch");
    assert_eq!(outcome.claimed, expected);
    assert_eq!(
        h.count("SELECT count(*) FROM polls").await,
        i64::try_from(expected).unwrap_or(0)
    );
}
