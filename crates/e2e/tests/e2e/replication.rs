//! `REDIS_WAIT_REPLICAS`: an event is acknowledged only once that many replicas hold it.
//! On the cluster of the second configuration (a replica per master) events are accepted;
//! on a Redis without replicas they are refused with 503 `not_replicated`, yet queued (a
//! retry with the same event id is stored once).

use crate::helpers::Stack;
use serde_json::{Value, json};

#[tokio::test]
async fn events_wait_for_replicas_when_asked_and_say_so_when_there_are_none() {
    let stack = Stack::new().await;
    let cluster = domain::redis::is_cluster_url(&stack.redis.config.redis_url);
    let ingest = stack
        .start(
            "ingest-api",
            &[
                ("REDIS_WAIT_REPLICAS", "1"),
                ("REDIS_WAIT_TIMEOUT_MS", "300"),
            ],
        )
        .await;
    let event = json!({
        "site_id": "replicated.test", "event_type": "page_view",
        "event_id": uuid::Uuid::new_v4(), "timestamp": "2025-11-14T10:00:00Z",
    });
    let res = reqwest::Client::new()
        .post(format!("{}/v1/events", ingest.url()))
        .json(&event)
        .send()
        .await
        .expect("ingest");
    let status = res.status().as_u16();
    let retry_after = res.headers().get("retry-after").cloned();
    let body: Value = res.json().await.expect("json");
    if cluster {
        assert_eq!(status, 202, "a replica per master acknowledges: {body}");
    } else {
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("not_replicated")),
            "{body}"
        );
        assert!(retry_after.is_some());
        assert!(body.to_string().contains("0 of 1 replicas"), "{body}");
    }
    // Either way the event is in the queue, once.
    assert_eq!(stack.items_in_redis().await, 1);

    // A vote too: counted by its script, then confirmed by the replicas (or not).
    let _worker = stack.start("batch-worker", &[]).await;
    let client = reqwest::Client::new();
    let poll: Value = client
        .post(format!("{}/v1/polls", ingest.url()))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&json!({"question": "Replicated?", "options": ["yes", "no"]}))
        .send()
        .await
        .expect("ingest")
        .json()
        .await
        .expect("json");
    let vote_url = format!(
        "{}/v1/polls/{}/votes",
        ingest.url(),
        poll["poll_id"].as_str().expect("id")
    );
    let answer = domain::testing::eventually(
        std::time::Duration::from_secs(20),
        "the poll is open for votes",
        || async {
            let res = client
                .post(&vote_url)
                .json(&json!({"option_id": poll["options"][0]["id"], "user_id": "u1"}))
                .send()
                .await
                .expect("ingest");
            let status = res.status().as_u16();
            let body: Value = res.json().await.expect("json");
            // 503 restoring until the worker has vouched for the poll shards.
            (body["error"] != "restoring").then_some((status, body))
        },
    )
    .await;
    if cluster {
        assert_eq!(answer.0, 202, "{}", answer.1);
    } else {
        assert_eq!(
            (answer.0, answer.1["error"].as_str()),
            (503, Some("not_replicated")),
            "{}",
            answer.1
        );
    }
}
