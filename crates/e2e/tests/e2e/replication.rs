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
}
