use crate::helpers::{Stack, assert_rollups_match_events, post_events};
use crate::proxy::{CuttableProxy, pg_host_port, via_port};
use serde_json::json;
use std::time::Duration;

fn seed_event(path: &str, user: &str, ts: &str) -> serde_json::Value {
    json!({"site_id": "site-abc-123", "event_type": "page_view", "path": path, "user_id": user, "timestamp": ts})
}

#[tokio::test]
async fn the_seed_flow_gives_the_seed_numbers() {
    let stack = Stack::new().await;
    let ingest = stack.start("ingest-api", &[]).await;
    let _worker = stack.start("batch-worker", &[]).await;
    let stats = stack.start("stats-api", &[]).await;
    let client = reqwest::Client::new();
    for (path, user, ts) in [
        ("/", "user-123", "2025-11-14T10:00:00Z"),
        ("/pricing", "user-456", "2025-11-14T10:05:00Z"),
        ("/pricing", "user-123", "2025-11-14T10:10:00Z"),
    ] {
        let res = client
            .post(format!("{}/api/event", ingest.url()))
            .json(&seed_event(path, user, ts))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 202);
    }
    let expected = json!({
        "site_id": "site-abc-123",
        "date": "2025-11-14",
        "total_views": 3,
        "unique_users": 2,
        "top_paths": [{"path": "/pricing", "views": 2}, {"path": "/", "views": 1}]
    });
    // Within one batch window the cache must show the new numbers.
    domain::testing::eventually(
        Duration::from_secs(10),
        "stats show the three events",
        || {
            let (client, url, expected) = (
                client.clone(),
                format!(
                    "{}/api/stats?site_id=site-abc-123&date=2025-11-14",
                    stats.url()
                ),
                expected.clone(),
            );
            async move {
                let body: serde_json::Value =
                    client.get(url).send().await.ok()?.json().await.ok()?;
                (body == expected).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn the_same_event_id_posted_twice_is_stored_once() {
    let stack = Stack::new().await;
    let ingest = stack.start("ingest-api", &[]).await;
    let _worker = stack.start("batch-worker", &[]).await;
    let client = reqwest::Client::new();
    let mut e = seed_event("/", "u", "2025-11-14T10:00:00Z");
    e["event_id"] = json!("0192e4a0-0000-7000-8000-00000000beef");
    for _ in 0..2 {
        let res = client
            .post(format!("{}/v1/events", ingest.url()))
            .json(&e)
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 202);
    }
    domain::testing::eventually(Duration::from_secs(10), "both copies drained", || async {
        (stack.items_in_redis().await == 0 && stack.count("SELECT count(*) FROM events").await == 1)
            .then_some(())
    })
    .await;
    // Let a possible second write land before judging.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stack.count("SELECT count(*) FROM events").await, 1);
    assert_eq!(
        stack
            .count("SELECT sum(events)::bigint FROM rollup_hourly")
            .await,
        1
    );
}

#[tokio::test]
async fn with_postgres_cut_off_ingest_keeps_accepting_and_nothing_is_lost() {
    let stack = Stack::new().await;
    let proxy = CuttableProxy::start(pg_host_port(&stack.db.config.database_url)).await;
    let proxied = via_port(&stack.db.config.database_url, proxy.port);
    let ingest = stack.start("ingest-api", &[]).await;
    let _worker = stack
        .start(
            "batch-worker",
            &[
                ("DATABASE_URL", &proxied),
                ("BATCH_MAX_ITEMS", "500"),
                ("RETRY_MAX_MS", "500"),
                ("DATABASE_CONNECT_TIMEOUT_MS", "500"),
            ],
        )
        .await;

    let before = post_events(&ingest.url(), 20, 100, 4).await;
    proxy.cut();
    // Everything posted while PostgreSQL is away is still answered 202 (post_events
    // panics on anything else but shedding, and the queue is far below its mark).
    let during = post_events(&ingest.url(), 50, 100, 4).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        stack.items_in_redis().await > 0,
        "events wait in Redis while PostgreSQL is down"
    );
    proxy.restore();
    let after = post_events(&ingest.url(), 20, 100, 4).await;
    let total = (before + during + after) as i64;

    stack
        .wait_all_stored(
            total,
            Duration::from_secs(60),
            "everything lands once PostgreSQL is back",
        )
        .await;
    assert_rollups_match_events(&stack).await;
}

#[tokio::test]
async fn with_redis_cut_off_writes_get_503_and_everything_accepted_lands_once_it_is_back() {
    let stack = Stack::new().await;
    // The services reach Redis through the proxy; the test's own checks go direct.
    let proxy = CuttableProxy::start(pg_host_port(&stack.redis.config.redis_url)).await;
    let proxied = via_port(&stack.redis.config.redis_url, proxy.port);
    let through_proxy = [
        ("REDIS_URL", proxied.as_str()),
        ("REDIS_TIMEOUT_MS", "500"),
        ("BATCH_MAX_ITEMS", "200"),
    ];
    let ingest = stack.start("ingest-api", &through_proxy).await;
    let _worker = stack.start("batch-worker", &through_proxy).await;

    let before = post_events(&ingest.url(), 20, 50, 4).await;
    proxy.cut();
    let client = reqwest::Client::new();
    for n in 0..5 {
        // Refused at once, not hanging: the bound only catches a hang.
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            client
                .post(format!("{}/v1/events", ingest.url()))
                .json(&crate::helpers::synthetic_event(n))
                .send(),
        )
        .await
        .expect("answered while Redis is away")
        .expect("sent");
        assert_eq!(res.status(), 503);
        assert!(res.headers().contains_key("retry-after"));
    }
    let ready = client
        .get(format!("{}/readyz", ingest.url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(ready.status(), 503, "not ready without Redis");

    proxy.restore();
    // post_events retries 503s, so this also shows ingest reconnected by itself.
    let after = post_events(&ingest.url(), 20, 50, 4).await;
    let total = (before + after) as i64;
    stack
        .wait_all_stored(
            total,
            Duration::from_secs(60),
            "the worker reconnects and stores everything accepted",
        )
        .await;
    assert_rollups_match_events(&stack).await;
}

#[tokio::test]
async fn above_the_high_water_mark_ingest_sheds_and_recovers_once_the_worker_drains() {
    let stack = Stack::new().await;
    let ingest = stack
        .start("ingest-api", &[("EVENT_QUEUE_HIGH_WATER", "1000")])
        .await;
    let client = reqwest::Client::new();
    let batch: Vec<_> = (0..1000).map(crate::helpers::synthetic_event).collect();
    let res = client
        .post(format!("{}/v1/events", ingest.url()))
        .json(&json!({ "events": batch }))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 202);
    let shed = client
        .post(format!("{}/v1/events", ingest.url()))
        .json(&crate::helpers::synthetic_event(1))
        .send()
        .await
        .expect("sent");
    assert_eq!(shed.status(), 503);
    assert!(shed.headers().contains_key("retry-after"));

    let _worker = stack.start("batch-worker", &[]).await;
    domain::testing::eventually(Duration::from_secs(20), "ingest accepts again", || {
        let (client, url) = (client.clone(), format!("{}/v1/events", ingest.url()));
        async move {
            let r = client
                .post(url)
                .json(&crate::helpers::synthetic_event(2))
                .send()
                .await
                .ok()?;
            (r.status() == 202).then_some(())
        }
    })
    .await;
    domain::testing::eventually(Duration::from_secs(20), "all stored", || async {
        (stack.count("SELECT count(*) FROM events").await == 1001).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sigterm_stops_every_service_cleanly() {
    let stack = Stack::new().await;
    for name in ["ingest-api", "batch-worker", "stats-api", "sse-gateway"] {
        let service = stack.start(name, &[]).await;
        let status = service.terminate().await;
        assert!(status.success(), "{name} exited with {status}");
    }
}
