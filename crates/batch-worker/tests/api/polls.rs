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
        queued_at_ms: 1_763_114_400_000,
    }
}

fn vote(n: u32, poll_id: &str, option: &str, user: &str) -> PollMessage {
    PollMessage::Vote {
        vote_id: uuid::Uuid::from_u128(u128::from(n)),
        poll_id: poll_id.into(),
        option_id: option.into(),
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
    let store = VoteWork { pg: h.db.pool() };
    let batch = [
        poll("p"),
        vote(1, "p", "o1", "u1"),
        vote(2, "p", "o2", "u2"),
    ];
    store.write(&batch).await.expect("first delivery");
    store.write(&batch).await.expect("redelivery");
    // A second vote of u1 with another id (it cannot come from Redis, but must not count).
    store
        .write(&[vote(3, "p", "o2", "u1")])
        .await
        .expect("write");
    assert_eq!(
        counts(&h, "p").await,
        vec![
            ("o1".into(), Some("a".into()), 1),
            ("o2".into(), Some("b".into()), 1)
        ]
    );
}

#[tokio::test]
async fn votes_and_closes_that_overtake_the_poll_definition_still_land() {
    let h = Harness::new().await;
    let store = VoteWork { pg: h.db.pool() };
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
    let redis = domain::redis::connection_manager(&h.redis.config).expect("redis");
    let blocking =
        domain::redis::blocking_pool(&h.redis.config, 1, Duration::from_secs(2)).expect("redis");
    let mut lane = Lane::new(
        sources,
        Arc::new(VoteWork { pg: h.db.pool() }),
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
