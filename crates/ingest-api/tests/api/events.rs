use crate::helpers::{event, spawn_app, spawn_app_behind_proxy, spawn_app_with};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn post_event_queues_it_and_answers_202_with_its_id() {
    let app = spawn_app().await;
    let res = app
        .post_json("/v1/events", &event("s1", "/pricing", "u1"))
        .await;
    assert_eq!(res.status(), 202);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["success"], true);
    assert_eq!(body["accepted"], 1);
    let id = body["event_ids"][0].as_str().expect("an id").to_string();

    let queued = app.queued_events().await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0]["event_id"], id);
    assert_eq!(queued[0]["site_id"], "s1");
    assert_eq!(queued[0]["path"], "/pricing");
}

#[tokio::test]
async fn a_batch_is_queued_whole_with_one_id_per_event() {
    let app = spawn_app().await;
    let events: Vec<_> = (0..250)
        .map(|i| event("s", &format!("/p{i}"), "u"))
        .collect();
    let res = app
        .post_json("/v1/events", &json!({ "events": events }))
        .await;
    assert_eq!(res.status(), 202);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["accepted"], 250);
    assert_eq!(body["event_ids"].as_array().map(Vec::len), Some(250));
    assert_eq!(app.queued_events().await.len(), 250);
}

#[tokio::test]
async fn a_batch_with_one_bad_event_stores_nothing() {
    let app = spawn_app().await;
    let mut bad = event("s", "/", "u");
    bad["timestamp"] = json!("not a date");
    let res = app
        .post_json(
            "/v1/events",
            &json!({ "events": [event("s", "/", "u"), bad] }),
        )
        .await;
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(
        body,
        json!({
            "success": false,
            "error": "Validation failed",
            "details": ["events[1]: timestamp must be a valid ISO 8601 date string"]
        })
    );
    assert!(app.queued_events().await.is_empty());
}

#[tokio::test]
async fn every_validation_rule_is_reported_with_its_message() {
    let app = spawn_app().await;
    let long = |n: usize| "x".repeat(n);
    let cases = [
        (
            json!({}),
            vec![
                "site_id is required and must be a string",
                "event_type is required and must be a string",
                "timestamp is required and must be a string",
            ],
        ),
        (
            json!({"site_id": 1, "event_type": true, "timestamp": 5}),
            vec![
                "site_id is required and must be a string",
                "event_type is required and must be a string",
                "timestamp is required and must be a string",
            ],
        ),
        (
            json!({"site_id": "s", "event_type": "e", "timestamp": "14/11/2025"}),
            vec!["timestamp must be a valid ISO 8601 date string"],
        ),
        (
            json!({"site_id": "s", "event_type": "e", "timestamp": "2025-11-14T10:00:00Z", "path": 3, "user_id": {}}),
            vec!["path must be a string", "user_id must be a string"],
        ),
        (
            json!({"site_id": long(256), "event_type": long(101), "timestamp": "2025-11-14T10:00:00Z", "path": long(1001), "user_id": long(256)}),
            vec![
                "site_id must be at most 255 characters",
                "event_type must be at most 100 characters",
                "path must be at most 1000 characters",
                "user_id must be at most 255 characters",
            ],
        ),
        (
            json!({"site_id": "s", "event_type": "e", "timestamp": "2025-11-14T10:00:00Z", "event_id": "x", "props": "y"}),
            vec![
                "event_id must be a valid UUID",
                "props must be a JSON object",
            ],
        ),
    ];
    for (body, expected) in cases {
        let res = app.post_json("/v1/events", &body).await;
        assert_eq!(res.status(), 400, "{body}");
        let got: serde_json::Value = res.json().await.expect("json");
        assert_eq!(got["error"], "Validation failed");
        assert_eq!(got["details"], json!(expected), "{body}");
    }
    assert!(app.queued_events().await.is_empty());
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let app = spawn_app().await;
    let res = app
        .post_raw("/v1/events", "application/json", "{\"site_id\": ")
        .await;
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["success"], false);
    assert_eq!(body["error"], "Invalid JSON body");
}

#[tokio::test]
async fn content_types_other_than_json_and_text_are_a_415() {
    let app = spawn_app().await;
    for ct in [
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "text/html",
    ] {
        let res = app
            .post_raw("/v1/events", ct, event("s", "/", "u").to_string())
            .await;
        assert_eq!(res.status(), 415, "{ct}");
    }
    let res = app
        .client
        .post(format!("{}/v1/events", app.address))
        .body(event("s", "/", "u").to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 415, "no content type");
    let ok = app
        .post_raw(
            "/v1/events",
            "application/json; charset=utf-8",
            event("s", "/", "u").to_string(),
        )
        .await;
    assert_eq!(ok.status(), 202);
}

#[tokio::test]
async fn bodies_over_the_limit_are_a_413_and_queue_nothing() {
    let app = spawn_app_with(|c| c.ingest.body_limit_bytes = 1024).await;
    let mut big = event("s", "/", "u");
    big["path"] = json!("p".repeat(900));
    big["user_id"] = json!("u".repeat(200));
    let res = app.post_json("/v1/events", &big).await;
    assert_eq!(res.status(), 413);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"], "Payload Too Large");
    // Chunked (no Content-Length) bodies are cut off too.
    let chunks: Vec<Result<String, std::io::Error>> = vec![
        Ok("{\"a\":\"".into()),
        Ok("x".repeat(2000)),
        Ok("\"}".into()),
    ];
    let res = app
        .client
        .post(format!("{}/v1/events", app.address))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 413);
    assert!(app.queued_events().await.is_empty());
}

#[tokio::test]
async fn the_same_client_over_its_rate_gets_429_with_retry_after() {
    let app = spawn_app_with(|c| {
        c.ingest.rate_limit_per_ip_per_s = 1;
        c.ingest.rate_limit_burst = 3;
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            app.post_json("/v1/events", &event("s", "/", "u"))
                .await
                .status(),
            202
        );
    }
    let res = app.post_json("/v1/events", &event("s", "/", "u")).await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(app.queued_events().await.len(), 3);
}

/// Every request's events in one shard (a request is queued whole or not at all), whatever
/// shards its concurrent neighbours' pushes took, and every shard taking pushes.
#[tokio::test]
async fn with_several_shards_each_request_stays_whole_in_one_and_every_shard_takes_pushes() {
    const SHARDS: u16 = 4;
    let app = spawn_app_with(|c| c.redis.event_queue_shards = SHARDS).await;
    let request = |r: usize| {
        let events: Vec<_> = (0..5)
            .map(|i| event("s", &format!("/r{r}/{i}"), "u"))
            .collect();
        json!({ "events": events })
    };
    let concurrent = (0..48).map(|r| {
        let (app, body) = (&app, request(r));
        async move { app.post_json("/v1/events", &body).await.status() }
    });
    for status in futures_util::future::join_all(concurrent).await {
        assert_eq!(status, 202);
    }
    // One at a time, each request is a push of its own.
    for r in 48..64 {
        assert_eq!(app.post_json("/v1/events", &request(r)).await.status(), 202);
    }

    let mut shard_of_request = std::collections::HashMap::new();
    let mut per_shard = Vec::new();
    for (shard, keys) in app.redis.keys().events_queues(SHARDS).iter().enumerate() {
        let queued = app.redis.queued_in(keys).await;
        per_shard.push(queued.len());
        for message in queued {
            let path = message["path"].as_str().expect("a path");
            let r = path.split('/').nth(1).expect("/rN/i").to_string();
            let first = *shard_of_request.entry(r.clone()).or_insert(shard);
            assert_eq!(
                first, shard,
                "request {r} split over shards {first} and {shard}"
            );
        }
    }
    assert_eq!(per_shard.iter().sum::<usize>(), 64 * 5, "{per_shard:?}");
    assert_eq!(shard_of_request.len(), 64);
    assert!(
        per_shard.iter().all(|&n| n > 0),
        "every shard takes pushes: {per_shard:?}"
    );
}

#[tokio::test]
async fn above_the_high_water_mark_ingest_sheds_with_503_and_recovers() {
    let app = spawn_app_with(|c| c.ingest.event_queue_high_water = 5).await;
    let batch: Vec<_> = (0..5).map(|_| event("s", "/", "u")).collect();
    assert_eq!(
        app.post_json("/v1/events", &json!({ "events": batch }))
            .await
            .status(),
        202
    );

    let res = app.post_json("/v1/events", &event("s", "/", "u")).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(
        app.queued_events().await.len(),
        5,
        "nothing queued while shedding"
    );

    // The worker drains the queue: ingestion resumes without a restart, once the
    // background poll (every 250 ms) sees it. The deadline only bounds a failure.
    let mut conn = app.redis.conn().await;
    for keys in app.redis.events_queues() {
        let _: () = domain::redis_client::cmd("DEL")
            .arg(&keys.queue)
            .query_async(&mut conn)
            .await
            .expect("DEL");
    }
    domain::testing::eventually(Duration::from_secs(30), "ingest accepts again", || async {
        (app.post_json("/v1/events", &event("s", "/", "u"))
            .await
            .status()
            == 202)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn with_redis_down_writes_answer_503_with_retry_after() {
    let app = spawn_app_with(|c| c.redis.redis_url = "redis://127.0.0.1:1".into()).await;
    let res = app.post_json("/v1/events", &event("s", "/", "u")).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"], "Queue unavailable, retry later");
}

#[tokio::test]
async fn the_compat_alias_keeps_the_seed_shapes() {
    let app = spawn_app().await;
    let res = app.post_json("/api/event", &event("s", "/", "u")).await;
    assert_eq!(res.status(), 202);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(
        body,
        json!({"success": true, "message": "Event received and queued for processing"})
    );

    let res = app
        .post_json(
            "/api/event",
            &json!({"site_id": "s", "event_type": "page_view", "timestamp": "bad"}),
        )
        .await;
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(
        body,
        json!({"success": false, "error": "Validation failed", "details": ["timestamp must be a valid ISO 8601 date string"]})
    );
    assert_eq!(app.queued_events().await.len(), 1);
}

#[tokio::test]
async fn client_event_ids_are_kept_so_retries_can_be_deduplicated() {
    let app = spawn_app().await;
    let mut e = event("s", "/", "u");
    e["event_id"] = json!("0192e4a0-0000-7000-8000-0000000000aa");
    let body: serde_json::Value = app
        .post_json("/v1/events", &e)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        body["event_ids"],
        json!(["0192e4a0-0000-7000-8000-0000000000aa"])
    );
}

#[tokio::test]
async fn an_incoming_traceparent_travels_in_the_queued_message() {
    let app = spawn_app().await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let res = app
        .client
        .post(format!("{}/v1/events", app.address))
        .header("traceparent", tp)
        .json(&event("s", "/", "u"))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 202);
    assert_eq!(app.queued_events().await[0]["traceparent"], tp);
}

#[tokio::test]
async fn a_batch_of_a_hundred_thousand_empty_events_is_refused_after_the_first_thousand() {
    let app = spawn_app().await;
    // Parsing every one would hold 100,000 parsed events (each some hundred bytes) at once.
    let body = format!(r#"{{"events":[{}]}}"#, vec!["{}"; 100_000].join(","));
    let res = app
        .post_raw("/v1/events", "application/json", body.into_bytes())
        .await;
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(
        body["details"],
        json!(["events must contain at most 1000 events"])
    );
    assert!(app.queued_events().await.is_empty(), "nothing queued");
}

#[tokio::test]
async fn ipv6_clients_share_a_bucket_per_64_network() {
    let app = spawn_app_behind_proxy(|c| {
        c.ingest.rate_limit_per_ip_per_s = 1;
        c.ingest.rate_limit_burst = 3;
    })
    .await;
    let post = |ip: String| {
        let app = &app;
        async move {
            app.client
                .post(format!("{}/v1/events", app.address))
                .header("x-forwarded-for", ip)
                .json(&event("s", "/", "u"))
                .send()
                .await
                .expect("sent")
                .status()
        }
    };
    // A new address of the same /64 for every request: still one client.
    let mut statuses = Vec::new();
    for i in 1..=5 {
        statuses.push(post(format!("2001:db8:7:9::{i:x}")).await.as_u16());
    }
    assert_eq!(statuses, [202, 202, 202, 429, 429]);
    assert_eq!(
        post("2001:db8:7:a::1".into()).await,
        202,
        "the next /64 is another client"
    );
}
