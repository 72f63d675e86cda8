use crate::helpers::{spawn_app, spawn_app_with};
use domain::config::Secret;
use serde_json::json;

#[tokio::test]
async fn the_compat_alias_answers_the_seed_flow_exactly() {
    let app = spawn_app().await;
    app.seed_flow("site-abc-123").await;
    let (status, body) = app
        .get_json("/api/stats?site_id=site-abc-123&date=2025-11-14")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "site_id": "site-abc-123",
            "date": "2025-11-14",
            "total_views": 3,
            "unique_users": 2,
            "top_paths": [{"path": "/pricing", "views": 2}, {"path": "/", "views": 1}]
        })
    );
    let (_, all_time) = app.get_json("/api/stats?site_id=site-abc-123").await;
    assert_eq!(all_time["date"], "all-time");
    assert_eq!(all_time["total_views"], 3);
}

#[tokio::test]
async fn compat_errors_keep_the_seed_messages() {
    let app = spawn_app().await;
    for path in ["/api/stats", "/v1/stats", "/api/stats?site_id="] {
        let (status, body) = app.get_json(path).await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(
            body,
            json!({"success": false, "error": "site_id query parameter is required"})
        );
    }
    for date in ["14-11-2025", "2025-02-30", "2025-1-1", "today"] {
        let (status, body) = app
            .get_json(&format!("/api/stats?site_id=s&date={date}"))
            .await;
        assert_eq!(status, 400, "{date}");
        assert_eq!(
            body,
            json!({"success": false, "error": "Invalid date format. Use YYYY-MM-DD"})
        );
    }
}

#[tokio::test]
async fn an_unknown_site_gives_zeros_not_404() {
    let app = spawn_app().await;
    let (status, body) = app
        .get_json("/v1/stats?site_id=nobody&date=2025-11-14")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["total_views"], 0);
    assert_eq!(body["unique_users"], 0);
    assert_eq!(body["top_paths"], json!([]));
}

#[tokio::test]
async fn ranges_sum_days_and_count_each_user_once() {
    let app = spawn_app().await;
    app.sql(
        "INSERT INTO rollup_hourly VALUES ('r', 'page_view', '2025-11-01T10:00:00Z', 5), ('r', 'page_view', '2025-11-02T23:00:00Z', 7), ('r', 'page_view', '2025-11-03T00:00:00Z', 100);
         INSERT INTO daily_visitors VALUES ('r', 'page_view', '2025-11-01', 'a', 1), ('r', 'page_view', '2025-11-02', 'a', 1), ('r', 'page_view', '2025-11-02', 'b', 1), ('r', 'page_view', '2025-11-03', 'c', 1);
         INSERT INTO rollup_hourly_paths (site_id, event_type, bucket, path_key, path, views) VALUES ('r', 'page_view', '2025-11-01T12:00:00Z', md5('/b')::uuid, '/b', 3), ('r', 'page_view', '2025-11-02T12:00:00Z', md5('/a')::uuid, '/a', 3), ('r', 'page_view', '2025-11-02T12:00:00Z', md5('/c')::uuid, '/c', 1), ('r', 'page_view', '2025-11-03T12:00:00Z', md5('/z')::uuid, '/z', 100);",
    )
    .await;
    let (status, body) = app
        .get_json("/v1/stats?site_id=r&from=2025-11-01&to=2025-11-02")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total_views"], 12);
    assert_eq!(body["unique_users"], 2);
    assert_eq!(body["date"], "2025-11-01/2025-11-02");
    // Ties by views are broken by path, ascending.
    assert_eq!(
        body["top_paths"],
        json!([{"path": "/a", "views": 3}, {"path": "/b", "views": 3}, {"path": "/c", "views": 1}])
    );

    let (_, limited) = app
        .get_json("/v1/stats?site_id=r&from=2025-11-01T00:00:00Z&to=2025-11-03T00:00:00Z&limit=1")
        .await;
    assert_eq!(limited["total_views"], 12, "an instant `to` is exclusive");
    assert_eq!(limited["top_paths"], json!([{"path": "/a", "views": 3}]));
}

#[tokio::test]
async fn bad_parameters_are_400_with_a_reason() {
    let app = spawn_app().await;
    for (query, needle) in [
        ("site_id=s&from=nope", "from must be"),
        (
            "site_id=s&from=2025-11-03&to=2025-11-01",
            "from must not be after to",
        ),
        (
            "site_id=s&date=2025-11-03&from=2025-11-01",
            "either date or from/to",
        ),
        ("site_id=s&limit=0", "limit must be"),
        ("site_id=s&limit=abc", "limit must be"),
    ] {
        let (status, body) = app.get_json(&format!("/v1/stats?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert!(
            body["error"].as_str().unwrap_or_default().contains(needle),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn other_event_types_are_counted_on_request() {
    let app = spawn_app().await;
    app.sql("INSERT INTO rollup_hourly VALUES ('e', 'click', '2025-11-14T10:00:00Z', 4), ('e', 'page_view', '2025-11-14T10:00:00Z', 1);").await;
    let (_, views) = app.get_json("/v1/stats?site_id=e&date=2025-11-14").await;
    let (_, clicks) = app
        .get_json("/v1/stats?site_id=e&date=2025-11-14&event_type=click")
        .await;
    assert_eq!(
        (
            views["total_views"].as_i64(),
            clicks["total_views"].as_i64()
        ),
        (Some(1), Some(4))
    );
}

#[tokio::test]
async fn answers_are_cached_until_the_worker_bumps_the_site() {
    let app = spawn_app().await;
    app.seed_flow("c").await;
    let (_, first) = app.get_json("/v1/stats?site_id=c&date=2025-11-14").await;
    assert_eq!(first["total_views"], 3);
    // Changed behind the cache's back: the cached answer stands...
    app.sql("UPDATE rollup_hourly SET events = 10 WHERE site_id = 'c'")
        .await;
    let (_, cached) = app.get_json("/v1/stats?site_id=c&date=2025-11-14").await;
    assert_eq!(cached["total_views"], 3);
    // ...until a commit bumps the site's generation.
    app.bump("c").await;
    let (_, fresh) = app.get_json("/v1/stats?site_id=c&date=2025-11-14").await;
    assert_eq!(fresh["total_views"], 10);
}

#[tokio::test]
async fn with_a_stats_token_requests_need_it() {
    let app = spawn_app_with(|c| c.stats.stats_token = Secret::new("t0k")).await;
    assert_eq!(app.get("/v1/stats?site_id=s").await.status(), 401);
    assert_eq!(app.get("/api/stats?site_id=s").await.status(), 401);
    let wrong = app
        .client
        .get(format!("{}/v1/stats?site_id=s", app.address))
        .bearer_auth("nope")
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.headers()["www-authenticate"], "Bearer");
    let right = app
        .client
        .get(format!("{}/v1/stats?site_id=s", app.address))
        .bearer_auth("t0k")
        .send()
        .await
        .expect("sent");
    assert_eq!(right.status(), 200);
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "operational routes stay open"
    );
}

#[tokio::test]
async fn with_postgres_unreachable_reads_answer_503() {
    let app = spawn_app_with(|c| {
        c.postgres.database_url = "postgres://postgres@127.0.0.1:1/x".into();
        c.postgres.database_connect_timeout_ms = 300;
    })
    .await;
    let res = app.get("/v1/stats?site_id=s").await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(app.get("/readyz").await.status(), 503);
}

/// 500 distinct visitors over three days, 300 a day.
async fn big_site(app: &crate::helpers::TestApp) {
    app.visitors_on("big", "2025-11-14", 0..300).await;
    app.visitors_on("big", "2025-11-15", 100..400).await;
    app.visitors_on("big", "2025-11-16", 200..500).await;
}

fn close_to(value: &serde_json::Value, expected: f64) -> bool {
    value
        .as_f64()
        .is_some_and(|v| (v - expected).abs() <= expected * 0.02)
}

#[tokio::test]
async fn long_ranges_past_the_exact_limit_are_estimated_and_say_so() {
    let app = spawn_app_with(|c| c.stats.exact_distinct_max_rows = 500).await;
    big_site(&app).await;
    app.visitors_on("small", "2025-11-14", 0..10).await;
    app.visitors_on("small", "2025-11-15", 5..15).await;

    let (status, body) = app
        .get_json("/v1/stats?site_id=big&from=2025-11-14&to=2025-11-16")
        .await;
    assert_eq!(status, 200);
    assert!(close_to(&body["unique_users"], 500.0), "{body}");
    assert_eq!(body["unique_users_estimated"], true);
    let (_, all_time) = app.get_json("/api/stats?site_id=big").await;
    assert!(close_to(&all_time["unique_users"], 500.0), "{all_time}");
    assert_eq!(all_time["unique_users_estimated"], true);

    // A single day is an exact count; so is a range under the limit.
    let (_, day) = app.get_json("/v1/stats?site_id=big&date=2025-11-15").await;
    assert_eq!(day["unique_users"], 300);
    assert!(day.get("unique_users_estimated").is_none(), "{day}");
    let (_, small) = app
        .get_json("/v1/stats?site_id=small&from=2025-11-14&to=2025-11-15")
        .await;
    assert_eq!(small["unique_users"], 15);
    assert!(small.get("unique_users_estimated").is_none(), "{small}");

    let (_, exact) = {
        let app = spawn_app_with(|c| c.stats.exact_distinct_max_rows = 0).await;
        big_site(&app).await;
        app.get_json("/v1/stats?site_id=big").await
    };
    assert_eq!(exact["unique_users"], 500, "0 always counts exactly");
    assert!(exact.get("unique_users_estimated").is_none());
}

#[tokio::test]
async fn a_day_sketch_not_known_complete_is_rebuilt_from_postgres() {
    let app = spawn_app_with(|c| c.stats.exact_distinct_max_rows = 500).await;
    big_site(&app).await;
    // What the worker leaves after Redis restarted mid-day: a sketch of recent visitors
    // only, and no marker.
    let keys = app.redis.keys();
    let mut conn = app.redis.conn().await;
    let _: i64 = domain::redis_client::cmd("PFADD")
        .arg(keys.site_day_visitors("big", "page_view", "2025-11-14"))
        .arg(&["user-1", "user-2"])
        .query_async(&mut conn)
        .await
        .expect("PFADD");

    let (_, body) = app.get_json("/v1/stats?site_id=big").await;
    assert!(close_to(&body["unique_users"], 500.0), "{body}");
    let marker: Option<String> = domain::redis_client::cmd("GET")
        .arg(keys.site_day_visitors_complete("big", "page_view", "2025-11-14"))
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert!(marker.is_some(), "the rebuilt day is marked complete");
    let day_count: i64 = domain::redis_client::cmd("PFCOUNT")
        .arg(keys.site_day_visitors("big", "page_view", "2025-11-14"))
        .query_async(&mut conn)
        .await
        .expect("PFCOUNT");
    assert!((297..=303).contains(&day_count), "{day_count}");

    // Later visitors of a day already complete reach the estimate as the worker stores
    // them: rows in PostgreSQL, and the same visitors added to the day's sketch.
    app.sql(
        "INSERT INTO daily_visitors SELECT 'big', 'page_view', '2025-11-16', 'user-' || u, 1024
         FROM generate_series(500, 599) AS u",
    )
    .await;
    let _: i64 = domain::redis_client::cmd("PFADD")
        .arg(keys.site_day_visitors("big", "page_view", "2025-11-16"))
        .arg((500..600).map(|u| format!("user-{u}")).collect::<Vec<_>>())
        .query_async(&mut conn)
        .await
        .expect("PFADD");
    app.bump("big").await;
    let (_, body) = app.get_json("/v1/stats?site_id=big").await;
    assert!(close_to(&body["unique_users"], 600.0), "{body}");
}
