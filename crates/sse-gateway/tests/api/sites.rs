use crate::helpers::{SseClient, spawn_gateway};
use domain::site::SiteBatchSummary;
use std::time::Duration;

#[tokio::test]
async fn a_site_stream_shows_recent_visitors_and_top_paths() {
    let gw = spawn_gateway(|c| c.gateway.site_coalesce_ms = 50).await;
    let mut client =
        SseClient::connect(&format!("{}/v1/sites/shop/stream", gw.address), None).await;
    let first = client
        .next_event(Duration::from_secs(10))
        .await
        .expect("snapshot");
    assert_eq!(first.event, "snapshot");
    assert_eq!(first.data["events_last_5m"], 0);

    // What the batch-worker does after a commit, through the same contract functions.
    let mut conn = gw.conn().await;
    let now = chrono::Utc::now().timestamp_millis();
    let summary = SiteBatchSummary {
        site_id: "shop".into(),
        at_ms: now,
        events: 12,
        page_views: 10,
        paths: vec![("/cart".into(), 7), ("/".into(), 3)],
    };
    let mut pipe = domain::redis_client::pipe();
    domain::site::add_live_visitors_in(&mut pipe, &gw.keys, "shop", &["ann", "ben", "cat"], now);
    summary.publish_in(&mut pipe, &gw.keys);
    let _: () = pipe.query_async(&mut conn).await.expect("commit effects");
    let activity = client
        .next_event(Duration::from_secs(10))
        .await
        .expect("activity");
    assert_eq!(activity.event, "activity");
    assert_eq!(activity.data["visitors_last_5m"], 3);
    assert_eq!(activity.data["events_last_5m"], 12);
    assert_eq!(
        activity.data["top_paths"][0],
        serde_json::json!({"path": "/cart", "views": 7})
    );
}
