//! Inputs a hostile client sends: each gets a clear 400, never a 500.

use crate::helpers::{spawn_app, spawn_app_with};
use std::time::Duration;

#[tokio::test]
async fn a_nul_character_in_any_parameter_is_a_400_not_a_500() {
    let app = spawn_app().await;
    app.seed_flow("shop").await;
    for path in [
        "/api/stats?site_id=%00",
        "/v1/stats?site_id=shop&event_type=%00",
        "/v1/stats?site_id=sh%00op",
        "/v1/sites/%00/timeseries?metric=views",
        "/v1/sites/%00/funnels",
        "/v1/sites/shop/funnels/f?date_range=%00",
        "/v1/polls/%00",
    ] {
        let (status, body) = app.get_json(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"], "invalid_request", "{path}");
    }
    let res = app
        .client
        .post(format!("{}/grafana/query", app.address))
        .json(&serde_json::json!({
            "range": {"from": "2025-11-14T00:00:00Z", "to": "2025-11-15T00:00:00Z"},
            "targets": [{"target": "views", "refId": "A", "payload": {"site_id": "sh\u{0}op"}}]
        }))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"], "targets must not contain NUL characters");
}

#[tokio::test]
async fn a_grafana_body_over_its_limit_is_a_413() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(format!("{}/grafana/query", app.address))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"targets":[],"pad":"{}"}}"#,
            "x".repeat(300 * 1024)
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 413);
}

#[tokio::test]
async fn a_grafana_body_sent_a_byte_at_a_time_gets_408_at_the_read_deadline() {
    let app = spawn_app_with(|c| c.http.body_read_timeout_ms = 500).await;
    let addr = app.address.trim_start_matches("http://");
    let head = format!(
        "POST /grafana/query HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{"
    );
    // One byte each 100 ms, for at most 30 s, until the server answers.
    let answer =
        domain::testing::trickle_body(&app.address, &head, 300, Duration::from_millis(100)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_query_past_the_statement_timeout_is_cancelled_and_answered_503() {
    let app = spawn_app_with(|c| c.postgres.database_statement_timeout_ms = 300).await;
    app.seed_flow("shop").await;
    let (status, _) = app.get_json("/api/stats?site_id=shop").await;
    assert_eq!(status, 200);
    // Another session holds the rollups locked: the stats query waits on the lock until
    // statement_timeout cancels it (without the timeout it would wait as long as the lock).
    let (locker, conn) =
        domain::tokio_postgres::connect(&app.db.config.database_url, domain::tokio_postgres::NoTls)
            .await
            .expect("connects");
    tokio::spawn(conn);
    locker
        .batch_execute(
            "BEGIN; LOCK TABLE rollup_hourly, rollup_hourly_paths, events IN ACCESS EXCLUSIVE MODE",
        )
        .await
        .expect("locks");
    let res = tokio::time::timeout(
        Duration::from_secs(30),
        app.client
            // A question not asked before, so no cached answer serves it.
            .get(format!(
                "{}/v1/stats?site_id=shop&event_type=signup",
                app.address
            ))
            .send(),
    )
    .await
    .expect("answered while the lock is held")
    .expect("sent");
    let status = res.status();
    let retry_after = res.headers().contains_key("retry-after");
    assert_eq!(status, 503, "{}", res.text().await.unwrap_or_default());
    assert!(retry_after);
    locker.batch_execute("ROLLBACK").await.expect("unlocks");
    let (status, _) = app.get_json("/api/stats?site_id=shop").await;
    assert_eq!(status, 200, "served again once the lock is gone");
}

#[tokio::test]
async fn a_sites_cache_stays_bounded_however_many_questions_are_asked() {
    let app = spawn_app().await;
    app.seed_flow("shop").await;
    let key = app.redis.keys().site_cache("shop");
    let mut conn = app.redis.conn().await;
    let max = domain::cache::MAX_CACHED_ANSWERS_PER_SITE;
    let mut largest = 0;
    // Distinct questions: every start day of four years, each a cache entry of its own.
    let start = chrono::NaiveDate::from_ymd_opt(2022, 1, 1).expect("date");
    for day in 0..(max + 300) {
        let from = start + chrono::Duration::days(day);
        let (status, _) = app
            .get_json(&format!("/v1/stats?site_id=shop&from={from}&to=2026-12-31"))
            .await;
        assert_eq!(status, 200);
        let len: i64 = domain::redis_client::cmd("HLEN")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("HLEN");
        largest = largest.max(len);
    }
    assert!(largest <= max, "the cache hash reached {largest} entries");
    assert!(largest >= max / 2, "answers are still cached ({largest})");
}

#[tokio::test]
async fn query_sessions_run_without_jit_compilation() {
    // stats-api's pool: a scan's JIT compilation would cost more than the scan it speeds
    // up at the sizes it reads (see domain::postgres::query_pool).
    let db = domain::testing::TestDb::new().await;
    let jit = |pool: domain::deadpool_postgres::Pool| async move {
        let client = pool.get().await.expect("a connection");
        let row = client.query_one("SHOW jit", &[]).await.expect("SHOW jit");
        row.get::<_, String>(0)
    };
    // The server's default is on (PostgreSQL 12 and later).
    let queries = domain::postgres::query_pool(&db.config).expect("pool");
    assert_eq!(jit(queries).await, "off");
}

#[tokio::test]
async fn the_statements_a_connection_keeps_prepared_stay_bounded() {
    use stats_api::query::{PREPARED_PER_CONNECTION, prepared};
    let db = domain::testing::TestDb::new().await;
    let pool = domain::postgres::query_pool(&db.config).expect("stats-api's pool");
    let client = pool.get().await.expect("a connection");
    // Planned for each execution's parameters: a generic plan, chosen by estimates after
    // five executions, took 215 ms instead of 15 for a filtered breakdown (bench database).
    let mode: String = client
        .query_one("SHOW plan_cache_mode", &[])
        .await
        .expect("shown")
        .get(0);
    assert_eq!(mode, "force_custom_plan");
    // Distinct texts, as a filter with ever more values makes them.
    for i in 0..PREPARED_PER_CONNECTION * 2 + 7 {
        let statement = prepared(&client, &format!("SELECT {i}::int AS n"))
            .await
            .expect("prepared");
        let row = client.query_one(&statement, &[]).await.expect("ran");
        assert_eq!(row.get::<_, i32>(0), i32::try_from(i).expect("small"));
    }
    // PostgreSQL's own count for this session: what was cleared was also closed there.
    let held: i64 = client
        .query_one("SELECT count(*) FROM pg_prepared_statements", &[])
        .await
        .expect("counted")
        .get(0);
    assert!(
        held <= PREPARED_PER_CONNECTION as i64 + 1,
        "{held} statements prepared on one connection"
    );
    assert!(held > 0, "the last statements stay prepared");
}
