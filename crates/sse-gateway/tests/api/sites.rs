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

async fn register(gw: &crate::helpers::TestGateway, site: &str, public: bool) {
    let mut conn = gw.conn().await;
    domain::site_registry::marker::set_restored(&mut conn, &gw.keys)
        .await
        .expect("marker");
    let new = domain::site_registry::NewSite {
        site_id: site.into(),
        domains: vec![],
        timezone: "UTC".into(),
        public,
    };
    domain::site_registry::create(&mut conn, &gw.keys, &new, chrono::Utc::now())
        .await
        .expect("create");
}

async fn status_of(gw: &crate::helpers::TestGateway, path_and_query: &str) -> u16 {
    // Only the status matters: an open stream is dropped unread.
    reqwest::get(format!("{}{path_and_query}", gw.address))
        .await
        .expect("sent")
        .status()
        .as_u16()
}

#[tokio::test]
async fn with_private_stats_a_site_stream_needs_a_signed_token_unless_the_site_is_public() {
    let secret = "stream-secret";
    let gw = spawn_gateway(|c| {
        c.gateway.stats_token = domain::config::Secret::new("stats");
        c.gateway.stream_token_secret = domain::config::Secret::new(secret);
    })
    .await;
    register(&gw, "pub", true).await;
    register(&gw, "priv", false).await;
    let now = chrono::Utc::now().timestamp();
    let token = |scope: &str, exp: i64| domain::stream_token::mint(secret.as_bytes(), scope, exp);
    assert_eq!(status_of(&gw, "/v1/sites/pub/stream").await, 200);
    assert_eq!(status_of(&gw, "/v1/sites/priv/stream").await, 401);
    let good = token("site:priv", now + 60);
    assert_eq!(
        status_of(&gw, &format!("/v1/sites/priv/stream?token={good}")).await,
        200
    );
    let expired = token("site:priv", now - 1);
    assert_eq!(
        status_of(&gw, &format!("/v1/sites/priv/stream?token={expired}")).await,
        403
    );
    let other_site = token("site:pub", now + 60);
    assert_eq!(
        status_of(&gw, &format!("/v1/sites/priv/stream?token={other_site}")).await,
        403
    );
    let forged = domain::stream_token::mint(b"guess", "site:priv", now + 60);
    assert_eq!(
        status_of(&gw, &format!("/v1/sites/priv/stream?token={forged}")).await,
        403
    );
    assert_eq!(
        status_of(&gw, "/v1/sites/priv/stream?token=garbage").await,
        403
    );
}

#[tokio::test]
async fn with_open_stats_every_site_stream_is_open() {
    let gw = spawn_gateway(|_| {}).await;
    register(&gw, "priv", false).await;
    assert_eq!(status_of(&gw, "/v1/sites/priv/stream").await, 200);
}
