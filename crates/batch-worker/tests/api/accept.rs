//! Accepting notifications in Redis, many at once (a trigger's batch): each once, on its
//! own shard, answered in the order asked.

use crate::helpers::trigger;
use domain::keys::NOTIFY_SHARDS;
use domain::notify::Notification;
use domain::notify::accept::{AcceptOutcome, accept_many, record};
use domain::notify::model::shard_of;
use domain::testing::TestRedis;

#[tokio::test]
async fn many_notifications_are_accepted_once_each_in_their_shards_and_answered_in_order() {
    let redis = TestRedis::new();
    let (conn, keys) = (redis.conn().await, redis.keys());
    let subjects: Vec<String> = (0..40)
        .map(|i| format!("goal.converted:s:g:v{i}:d"))
        .collect();
    let notices: Vec<Notification> = subjects.iter().map(|s| trigger(s)).collect();
    let pairs: Vec<(&Notification, &str)> = notices
        .iter()
        .zip(&subjects)
        .map(|(n, s)| (n, s.as_str()))
        .collect();
    let first = accept_many(&conn, &keys, &pairs).await.expect("accepted");
    let want: Vec<AcceptOutcome> = notices
        .iter()
        .map(|n| AcceptOutcome::Accepted(n.notification_id))
        .collect();
    assert_eq!(first, want);
    // Each queued once, on its own shard's queue.
    let mut queued = 0;
    for shard in 0..NOTIFY_SHARDS {
        let messages: Vec<String> = domain::redis_client::cmd("LRANGE")
            .arg(&keys.notify_queue(shard).queue)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn.clone())
            .await
            .expect("read");
        for m in &messages {
            let n: Notification = serde_json::from_str(m).expect("a notification");
            assert_eq!(shard_of(&n.notification_id), shard);
        }
        queued += messages.len();
    }
    assert_eq!(queued, subjects.len());
    assert!(
        record(&mut conn.clone(), &keys, &notices[7].notification_id)
            .await
            .expect("read")
            .is_some()
    );
    // Again (a replayed batch), and one subject's key with another fingerprint.
    let mut again = pairs.clone();
    again[3].1 = "another request";
    let second = accept_many(&conn, &keys, &again).await.expect("answered");
    for (i, (outcome, n)) in second.iter().zip(&notices).enumerate() {
        let expected = if i == 3 {
            AcceptOutcome::KeyReused
        } else {
            AcceptOutcome::Replay(n.notification_id)
        };
        assert_eq!(*outcome, expected, "notification {i}");
    }
}
