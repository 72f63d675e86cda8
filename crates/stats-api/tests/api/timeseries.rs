use crate::helpers::spawn_app;
use serde_json::json;

#[tokio::test]
async fn hourly_views_are_zero_filled() {
    let app = spawn_app().await;
    app.seed_flow("ts").await;
    let (status, body) = app
        .get_json("/v1/sites/ts/timeseries?metric=views&interval=hour&from=2025-11-14T09:00:00Z&to=2025-11-14T12:00:00Z")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!([
            {"t": "2025-11-14T09:00:00Z", "value": 0},
            {"t": "2025-11-14T10:00:00Z", "value": 3},
            {"t": "2025-11-14T11:00:00Z", "value": 0},
        ])
    );
}

#[tokio::test]
async fn minute_and_day_intervals_and_epoch_millisecond_bounds_work() {
    let app = spawn_app().await;
    app.seed_flow("ts").await;
    // 2025-11-14T10:00:00Z .. 10:06:00Z in epoch ms, as Grafana's Infinity sends them.
    let (_, minutes) = app
        .get_json("/v1/sites/ts/timeseries?interval=minute&from=1763114400000&to=1763114760000")
        .await;
    let values: Vec<i64> = minutes
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["value"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(values, vec![1, 0, 0, 0, 0, 1]);
    let (_, days) = app
        .get_json("/v1/sites/ts/timeseries?interval=day&from=2025-11-13&to=2025-11-14")
        .await;
    assert_eq!(
        days,
        json!([{"t": "2025-11-13T00:00:00Z", "value": 0}, {"t": "2025-11-14T00:00:00Z", "value": 3}])
    );
}

#[tokio::test]
async fn visitors_per_hour_come_from_the_hour_bitmap() {
    let app = spawn_app().await;
    // a: hours 10 and 11; b: hour 11.
    app.sql(&format!(
        "INSERT INTO daily_visitors VALUES ('v', 'page_view', '2025-11-14', 'a', {}), ('v', 'page_view', '2025-11-14', 'b', {});",
        (1 << 10) | (1 << 11),
        1 << 11
    ))
    .await;
    let (_, hours) = app
        .get_json("/v1/sites/v/timeseries?metric=visitors&interval=hour&from=2025-11-14T10:00:00Z&to=2025-11-14T12:00:00Z")
        .await;
    assert_eq!(
        hours,
        json!([{"t": "2025-11-14T10:00:00Z", "value": 1}, {"t": "2025-11-14T11:00:00Z", "value": 2}])
    );
    let (_, days) = app
        .get_json(
            "/v1/sites/v/timeseries?metric=visitors&interval=day&from=2025-11-14&to=2025-11-14",
        )
        .await;
    assert_eq!(days, json!([{"t": "2025-11-14T00:00:00Z", "value": 2}]));
}

#[tokio::test]
async fn events_count_every_type_unless_one_is_named() {
    let app = spawn_app().await;
    app.sql("INSERT INTO rollup_hourly VALUES ('e', 'click', '2025-11-14T10:00:00Z', 4), ('e', 'page_view', '2025-11-14T10:00:00Z', 1);").await;
    let q = "interval=hour&from=2025-11-14T10:00:00Z&to=2025-11-14T11:00:00Z";
    let (_, all) = app
        .get_json(&format!("/v1/sites/e/timeseries?metric=events&{q}"))
        .await;
    let (_, clicks) = app
        .get_json(&format!(
            "/v1/sites/e/timeseries?metric=events&event_type=click&{q}"
        ))
        .await;
    assert_eq!(
        (all[0]["value"].as_i64(), clicks[0]["value"].as_i64()),
        (Some(5), Some(4))
    );
}

#[tokio::test]
async fn unsupported_or_huge_requests_are_400() {
    let app = spawn_app().await;
    for (query, needle) in [
        (
            "metric=visitors&interval=minute",
            "visitors are kept per hour",
        ),
        ("metric=bananas", "metric must be one of"),
        ("interval=week", "interval must be one of"),
        ("interval=minute&from=2020-01-01&to=2025-01-01", "buckets"),
        (
            "from=2025-11-14T12:00:00Z&to=2025-11-14T10:00:00Z",
            "from must be before to",
        ),
    ] {
        let (status, body) = app
            .get_json(&format!("/v1/sites/x/timeseries?{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap_or_default().contains(needle),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn without_bounds_the_last_day_by_hour_is_returned() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/v1/sites/x/timeseries").await;
    assert_eq!(status, 200);
    assert_eq!(body.as_array().map(Vec::len), Some(24));
}
