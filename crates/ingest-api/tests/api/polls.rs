use crate::helpers::{ADMIN_TOKEN, spawn_app, spawn_app_with};
use futures_util::StreamExt;
use serde_json::json;

#[tokio::test]
async fn creating_a_poll_needs_the_admin_token() {
    let app = spawn_app().await;
    let body = json!({"question": "Tabs or spaces?", "options": ["tabs", "spaces"]});
    let url = format!("{}/v1/polls", app.address);
    assert_eq!(
        app.client
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("sent")
            .status(),
        401
    );
    let wrong = app
        .client
        .post(&url)
        .bearer_auth("nope")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.headers()["www-authenticate"], "Bearer");
    let res = app
        .client
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 201);
    let created: serde_json::Value = res.json().await.expect("json");
    assert_eq!(created["question"], "Tabs or spaces?");
    assert_eq!(
        created["options"],
        json!([{"id": "o1", "label": "tabs"}, {"id": "o2", "label": "spaces"}])
    );
    assert_eq!(created["closes_at"], serde_json::Value::Null);
}

#[tokio::test]
async fn an_unconfigured_admin_token_authorises_nobody() {
    let app = spawn_app_with(|c| c.ingest.admin_token = domain::config::Secret::default()).await;
    let res = app
        .client
        .post(format!("{}/v1/polls", app.address))
        .header("authorization", "Bearer ")
        .json(&json!({"question": "q", "options": ["a", "b"]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn invalid_polls_are_400_with_every_problem() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(format!("{}/v1/polls", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"options": ["only one"]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"], "invalid_body");
    assert_eq!(body["details"].as_array().map(Vec::len), Some(2), "{body}");
}

#[tokio::test]
async fn a_vote_is_counted_and_answered_with_the_new_tally() {
    let app = spawn_app().await;
    app.mark_restored().await;
    let (poll, opts) = app.create_poll(&["a", "b"]).await;
    let res = app.vote(&poll, &opts[1], "alice").await;
    assert_eq!(res.status(), 202);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(
        body,
        json!({"status": "accepted", "seq": 1, "tally": {"o1": 0, "o2": 1}, "total": 1})
    );
    let second: serde_json::Value = app
        .vote(&poll, &opts[0], "bob")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (second["seq"].as_i64(), second["total"].as_i64()),
        (Some(2), Some(2))
    );
}

#[tokio::test]
async fn the_refusals_have_their_documented_statuses() {
    let app = spawn_app().await;
    app.mark_restored().await;
    let (poll, opts) = app.create_poll(&["a", "b"]).await;
    assert_eq!(app.vote(&poll, &opts[0], "u1").await.status(), 202);

    let dup = app.vote(&poll, &opts[1], "u1").await;
    assert_eq!(dup.status(), 409);
    assert_eq!(
        dup.json::<serde_json::Value>().await.expect("json"),
        json!({"error": "duplicate_vote"})
    );
    assert_eq!(app.vote("no-such-poll", "o1", "u2").await.status(), 404);
    let unknown = app.vote(&poll, "o9", "u3").await;
    assert_eq!(unknown.status(), 422);
    assert_eq!(
        unknown.json::<serde_json::Value>().await.expect("json")["error"],
        "unknown_option"
    );
    let bad = app
        .post_json(&format!("/v1/polls/{poll}/votes"), &json!({"option_id": 1}))
        .await;
    assert_eq!(bad.status(), 400);

    let close = app
        .client
        .post(format!("{}/v1/polls/{poll}/close", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(close.status(), 200);
    let closed = app.vote(&poll, &opts[0], "u4").await;
    assert_eq!(closed.status(), 410);
    assert_eq!(
        closed.json::<serde_json::Value>().await.expect("json")["error"],
        "poll_closed"
    );
    let unauthorised_close = app
        .client
        .post(format!("{}/v1/polls/{poll}/close", app.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(unauthorised_close.status(), 401);
    assert_eq!(
        app.tally(&poll).await["o1"],
        1,
        "only the first vote counted"
    );
}

#[tokio::test]
async fn an_idempotency_key_reused_for_another_vote_is_refused_and_counts_nothing() {
    let app = spawn_app().await;
    app.mark_restored().await;
    let (poll, opts) = app.create_poll(&["a", "b"]).await;
    let send = |user: &'static str, option: &str, key: &'static str| {
        app.client
            .post(format!("{}/v1/polls/{poll}/votes", app.address))
            .header("idempotency-key", key)
            .json(&json!({"option_id": option, "user_id": user}))
            .send()
    };
    assert_eq!(
        send("alice", &opts[0], "k").await.expect("sent").status(),
        202
    );
    for (user, option, what) in [
        ("bob", opts[0].as_str(), "another user"),
        ("alice", opts[1].as_str(), "another option"),
        ("bob", "no-such-option", "an unknown option"),
    ] {
        let res = send(user, option, "k").await.expect("sent");
        assert_eq!(res.status(), 422, "the key reused by {what}");
        let body: serde_json::Value = res.json().await.expect("json");
        assert_eq!(body["error"], "idempotency_key_reused", "{what}");
    }
    assert_eq!(
        app.tally(&poll).await.values().sum::<i64>(),
        1,
        "only alice's vote is counted"
    );
    assert_eq!(
        app.vote(&poll, &opts[1], "bob").await.status(),
        202,
        "bob never voted: his own vote is counted"
    );
    let close = app
        .client
        .post(format!("{}/v1/polls/{poll}/close", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(close.status(), 200);
    assert_eq!(
        send("carol", &opts[0], "k").await.expect("sent").status(),
        422,
        "the key reused by another user after the close"
    );
    assert_eq!(
        send("alice", &opts[0], "k").await.expect("sent").status(),
        202,
        "alice's own retry still gets her original answer"
    );
    assert_eq!(app.tally(&poll).await.values().sum::<i64>(), 2);
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_gets_the_original_answer() {
    let app = spawn_app().await;
    app.mark_restored().await;
    let (poll, opts) = app.create_poll(&["a", "b"]).await;
    let send = |user: &'static str, key: Option<&'static str>| {
        let mut req = app
            .client
            .post(format!("{}/v1/polls/{poll}/votes", app.address))
            .json(&json!({"option_id": opts[0], "user_id": user}));
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        req.send()
    };
    let first = send("carol", Some("k-1")).await.expect("sent");
    assert_eq!(first.status(), 202);
    let first_body = first.text().await.expect("body");
    app.vote(&poll, &opts[1], "dave").await; // the poll moves on meanwhile
    let retry = send("carol", Some("k-1")).await.expect("sent");
    assert_eq!(retry.status(), 202);
    assert_eq!(
        retry.text().await.expect("body"),
        first_body,
        "the original answer, not the current tally"
    );
    assert_eq!(
        send("carol", None).await.expect("sent").status(),
        409,
        "without the key it is a second vote"
    );
    assert_eq!(app.tally(&poll).await.values().sum::<i64>(), 2);
}

#[tokio::test]
async fn without_the_restored_marker_unknown_polls_are_503_not_404() {
    let app = spawn_app().await;
    let res = app.vote("maybe-lost", "o1", "u").await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    // A poll Redis still has is voted on normally.
    let (poll, opts) = app.create_poll(&["a", "b"]).await;
    assert_eq!(app.vote(&poll, &opts[0], "u").await.status(), 202);
}

#[tokio::test]
async fn the_compat_alias_keeps_the_seed_shapes() {
    let app = spawn_app().await;
    app.mark_restored().await;
    let (poll, opts) = app.create_poll(&["a", "b"]).await;
    let vote = json!({"pollId": poll, "optionId": opts[0], "userId": "erin", "timestamp": 1_763_114_400_000_i64, "idempotencyKey": "seed-1"});
    let res = app.post_json("/api/vote", &vote).await;
    assert_eq!(res.status(), 202);
    assert_eq!(
        res.json::<serde_json::Value>().await.expect("json"),
        json!({"status": "accepted"})
    );
    let retry = app.post_json("/api/vote", &vote).await;
    assert_eq!(retry.status(), 202, "same idempotency key");
    let mut again = vote.clone();
    again["idempotencyKey"] = json!("seed-2");
    let dup = app.post_json("/api/vote", &again).await;
    assert_eq!(dup.status(), 409);
    assert_eq!(
        dup.json::<serde_json::Value>().await.expect("json"),
        json!({"error": "Duplicate vote"})
    );
    assert_eq!(
        app.post_json("/api/vote", &json!({"pollId": poll}))
            .await
            .status(),
        400
    );
}

#[tokio::test]
async fn a_thousand_concurrent_requests_from_two_hundred_users_count_two_hundred() {
    let app = spawn_app().await;
    app.mark_restored().await;
    let (poll, opts) = app.create_poll(&["a", "b", "c"]).await;
    let requests = (0..1000).map(|i| {
        let user = format!("user-{}", i % 200);
        let option = opts[(i / 200) % 3].clone();
        let url = format!("{}/v1/polls/{poll}/votes", app.address);
        let client = app.client.clone();
        async move {
            client
                .post(url)
                .json(&json!({"option_id": option, "user_id": user}))
                .send()
                .await
                .expect("sent")
                .status()
                .as_u16()
        }
    });
    let statuses: Vec<u16> = futures_util::stream::iter(requests)
        .buffer_unordered(200)
        .collect()
        .await;
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 200);
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 800);
    let tally = app.tally(&poll).await;
    assert_eq!(tally.values().sum::<i64>(), 200);
    let queued: u64 = {
        let mut conn = app.redis.conn().await;
        domain::redis_client::cmd("LLEN")
            .arg(app.redis.keys().poll(&poll).queue)
            .query_async(&mut conn)
            .await
            .expect("LLEN")
    };
    assert_eq!(
        queued, 201,
        "one definition and 200 votes queued for PostgreSQL"
    );
}

#[tokio::test]
async fn votes_past_the_per_poll_rate_get_429() {
    let app = spawn_app_with(|c| {
        c.ingest.vote_rate_limit_per_poll_per_s = 1;
        c.ingest.vote_rate_limit_per_poll_burst = 2;
    })
    .await;
    app.mark_restored().await;
    let (poll, opts) = app.create_poll(&["a", "b"]).await;
    assert_eq!(app.vote(&poll, &opts[0], "a").await.status(), 202);
    assert_eq!(app.vote(&poll, &opts[0], "b").await.status(), 202);
    let limited = app.vote(&poll, &opts[0], "c").await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let (other, other_opts) = app.create_poll(&["a", "b"]).await;
    assert_eq!(
        app.vote(&other, &other_opts[0], "c").await.status(),
        202,
        "other polls unaffected"
    );
}

#[tokio::test]
async fn an_over_long_poll_id_is_refused_before_it_keys_the_per_poll_limiter() {
    let app = spawn_app_with(|c| {
        c.ingest.vote_rate_limit_per_poll_per_s = 1;
        c.ingest.vote_rate_limit_per_poll_burst = 1;
    })
    .await;
    app.mark_restored().await;
    let long_id = "p".repeat(10_000);
    for attempt in 0..3 {
        let res = app.vote(&long_id, "o1", &format!("u{attempt}")).await;
        assert_eq!(
            res.status(),
            404,
            "attempt {attempt}: never a limiter bucket, so never 429"
        );
    }
}

#[tokio::test]
async fn api_vote_is_rate_limited_before_its_body_is_read() {
    let app = spawn_app_with(|c| {
        c.ingest.vote_rate_limit_per_ip_per_s = 1;
        c.ingest.vote_rate_limit_per_ip_burst = 1;
    })
    .await;
    let send = || {
        app.client
            .post(format!("{}/api/vote", app.address))
            .header("content-type", "application/json")
            .body("not json")
            .send()
    };
    assert_eq!(send().await.expect("sent").status(), 400);
    assert_eq!(
        send().await.expect("sent").status(),
        429,
        "over the limit: refused before the body is parsed"
    );
}

#[tokio::test]
async fn a_vote_body_is_limited_to_kilobytes() {
    let app = spawn_app().await;
    app.mark_restored().await;
    let (poll, opts) = app.create_poll(&["a", "b"]).await;
    let res = app
        .client
        .post(format!("{}/v1/polls/{poll}/votes", app.address))
        .json(&json!({"option_id": opts[0], "user_id": "u", "pad": "x".repeat(20_000)}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 413);
    assert_eq!(app.tally(&poll).await.values().sum::<i64>(), 0);
}

#[tokio::test]
async fn the_compat_alias_checks_its_timestamp() {
    let app = spawn_app().await;
    app.mark_restored().await;
    let (poll, opts) = app.create_poll(&["a", "b"]).await;
    let vote = |user: &str, timestamp: serde_json::Value| json!({"pollId": poll, "optionId": opts[0], "userId": user, "timestamp": timestamp});
    for (n, bad) in [
        json!("garbage"),
        json!(-1),
        json!(1e300),
        json!(true),
        json!({"ms": 1}),
        json!("2025-13-40T00:00:00Z"),
    ]
    .into_iter()
    .enumerate()
    {
        let res = app
            .post_json("/api/vote", &vote(&format!("bad{n}"), bad.clone()))
            .await;
        assert_eq!(res.status(), 400, "timestamp {bad}");
        let body: serde_json::Value = res.json().await.expect("json");
        assert!(
            body["details"][0]
                .as_str()
                .unwrap_or_default()
                .starts_with("timestamp must be"),
            "{body}"
        );
    }
    assert_eq!(
        app.tally(&poll).await.values().sum::<i64>(),
        0,
        "none counted"
    );
    for (n, good) in [
        json!(1_763_114_400_000_i64),
        json!(1_763_114_400_000.5),
        json!("2025-11-14T10:00:00Z"),
        serde_json::Value::Null,
    ]
    .into_iter()
    .enumerate()
    {
        let res = app
            .post_json("/api/vote", &vote(&format!("good{n}"), good.clone()))
            .await;
        assert_eq!(res.status(), 202, "timestamp {good}");
    }
    assert_eq!(app.tally(&poll).await.values().sum::<i64>(), 4);
}
