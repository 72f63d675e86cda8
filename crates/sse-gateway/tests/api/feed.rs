//! A user's notification feed stream: live items, exact resume after a gap, the unread
//! count, and the feed token.

use crate::helpers::{SseClient, TestGateway, spawn_gateway};
use domain::notify::{ChannelKind, Notification};
use std::time::Duration;

const SECRET: &str = "feed-test-secret";

async fn gateway() -> TestGateway {
    spawn_gateway(|c| {
        c.gateway.stream_token_secret = domain::config::Secret::new(SECRET);
    })
    .await
}

fn token(user: &str, expires_in: i64) -> String {
    domain::stream_token::mint(
        SECRET.as_bytes(),
        &domain::stream_token::feed_scope(user),
        chrono::Utc::now().timestamp() + expires_in,
    )
}

impl TestGateway {
    /// Appends a new notification titled `title` to `users`' feeds, as the fan-out does
    /// (the record in Redis, then the append that publishes it).
    async fn notify(&self, users: &[&str], title: &str) -> uuid::Uuid {
        let n = Notification {
            notification_id: uuid::Uuid::now_v7(),
            event_type: "notification".into(),
            title: title.into(),
            body: "b".into(),
            html: None,
            data: serde_json::Value::Null,
            channels: vec![ChannelKind::InApp],
            priority: Default::default(),
            recipients: users
                .iter()
                .map(|u| domain::notify::Recipient {
                    user_id: (*u).into(),
                    ..Default::default()
                })
                .collect(),
            topic: None,
            created_at_ms: chrono::Utc::now().timestamp_millis(),
            queued_at_ms: 0,
            idempotency_key: None,
            traceparent: None,
        };
        let mut conn = self.conn().await;
        let outcome = domain::notify::accept::accept(&mut conn, &self.keys, &n, "fp")
            .await
            .expect("accept");
        assert!(matches!(
            outcome,
            domain::notify::accept::AcceptOutcome::Accepted(_)
        ));
        for user in users {
            // One feed shard per call, as the fan-out groups them.
            domain::notify::feed::append(&mut conn, &self.keys, &n.record(), &[user], 1)
                .await
                .expect("append");
        }
        n.notification_id
    }

    fn feed_url(&self, user: &str, token: &str) -> String {
        format!("{}/v1/users/{user}/feed/stream?token={token}", self.address)
    }
}

#[tokio::test]
async fn a_browser_that_missed_fifty_items_resumes_with_exactly_those_then_gets_live_ones() {
    let gw = gateway().await;
    gw.notify(&["ann"], "first").await;
    let url = gw.feed_url("ann", &token("ann", 600));
    let mut stream = SseClient::connect(&url, None).await;
    let first = stream
        .next_event(Duration::from_secs(5))
        .await
        .expect("snapshot");
    assert_eq!(first.event, "snapshot");
    assert_eq!(
        (first.data["seq"].clone(), first.data["unread"].clone()),
        (1.into(), 1.into())
    );
    assert_eq!(first.data["items"][0]["notification"]["title"], "first");
    let live = gw.notify(&["ann", "bob"], "live").await;
    let e = stream
        .next_event(Duration::from_secs(5))
        .await
        .expect("a live item");
    assert_eq!((e.event.as_str(), e.id), ("notification", Some(2)));
    assert_eq!(e.data["notification"]["id"], live.to_string());
    assert_eq!(e.data["unread"], 2);
    let last_id = e.raw_id.clone().expect("an id");
    drop(stream);

    let mut missed = Vec::new();
    for i in 0..50 {
        missed.push(gw.notify(&["ann"], &format!("missed {i}")).await);
    }
    let mut resumed = SseClient::connect_raw(&url, Some(&last_id)).await;
    for (i, id) in missed.iter().enumerate() {
        let e = resumed
            .next_event(Duration::from_secs(5))
            .await
            .expect("a missed item");
        assert_eq!(e.event, "notification", "no snapshot: the gap is replayed");
        assert_eq!(e.id, Some(3 + i as i64));
        assert_eq!(e.data["notification"]["id"], id.to_string());
    }
    let after = gw.notify(&["ann"], "after").await;
    let e = resumed
        .next_event(Duration::from_secs(5))
        .await
        .expect("live again");
    assert_eq!(
        (e.id, e.data["notification"]["id"].clone()),
        (Some(53), after.to_string().into())
    );
    assert!(
        resumed
            .next_event(Duration::from_millis(300))
            .await
            .is_none(),
        "nothing twice"
    );
}

#[tokio::test]
async fn a_read_mark_sends_the_new_unread_count_to_the_users_streams() {
    let gw = gateway().await;
    let a = gw.notify(&["cat"], "a").await;
    gw.notify(&["cat"], "b").await;
    let mut stream = SseClient::connect(&gw.feed_url("cat", &token("cat", 600)), None).await;
    assert_eq!(
        stream
            .next_event(Duration::from_secs(5))
            .await
            .expect("snapshot")
            .data["unread"],
        2
    );
    let mut conn = gw.conn().await;
    domain::notify::feed::mark_read(
        &mut conn,
        &gw.keys,
        "cat",
        &domain::notify::feed::ReadMark::Ids(vec![a]),
        1,
    )
    .await
    .expect("mark");
    let e = stream
        .next_event(Duration::from_secs(5))
        .await
        .expect("unread");
    assert_eq!(
        (e.event.as_str(), e.data["unread"].clone()),
        ("unread", 1.into())
    );
}

#[tokio::test]
async fn a_feed_needs_its_users_token_unexpired() {
    let gw = gateway().await;
    let client = reqwest::Client::new();
    let status = |url: String| {
        let client = client.clone();
        async move {
            client
                .get(url)
                .send()
                .await
                .expect("sent")
                .status()
                .as_u16()
        }
    };
    let base = format!("{}/v1/users/dan/feed/stream", gw.address);
    assert_eq!(status(base.clone()).await, 401, "no token");
    assert_eq!(
        status(format!("{base}?token={}", token("eve", 600))).await,
        403,
        "another user's"
    );
    assert_eq!(
        status(format!("{base}?token={}", token("dan", -5))).await,
        403,
        "expired"
    );
    assert_eq!(
        status(format!("{base}?token=v1.garbage")).await,
        403,
        "malformed"
    );
    let multi = format!("{}/v1/stream?topics=feed:dan", gw.address);
    assert_eq!(
        status(multi.clone()).await,
        401,
        "the multiplexed stream asks the same"
    );
    let mut ok = SseClient::connect(&format!("{multi}&tokens={}", token("dan", 600)), None).await;
    let e = ok
        .next_event(Duration::from_secs(5))
        .await
        .expect("snapshot");
    assert_eq!(
        (e.event.as_str(), e.data["topic"].clone()),
        ("snapshot", "feed:dan".into())
    );
}

#[tokio::test]
async fn a_feed_older_than_what_redis_keeps_resumes_with_a_snapshot() {
    let gw = gateway().await;
    gw.notify(&["fay"], "one").await;
    let url = gw.feed_url("fay", &token("fay", 600));
    // An id from another epoch (Redis lost the feed since) gets a snapshot, not a replay.
    let mut s = SseClient::connect_raw(&url, Some("12345.1")).await;
    let e = s
        .next_event(Duration::from_secs(5))
        .await
        .expect("snapshot");
    assert_eq!(e.event, "snapshot");
}
