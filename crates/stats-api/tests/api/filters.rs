//! Simple filters on stored fields: exact counts from raw events over small ranges, and
//! clear refusals where that would be slow or wrong.

use crate::helpers::{spawn_app, spawn_app_with};
use serde_json::json;

/// Raw events and the rollup rows the worker would have written for them.
async fn events_with_browsers(app: &crate::helpers::TestApp) {
    app.sql(
        "INSERT INTO events (event_id, site_id, event_type, ts, path, user_id, received_at, browser, country) VALUES
             (gen_random_uuid(), 'f', 'page_view', '2025-11-14T10:00:00Z', '/a', 'u1', now(), 'Firefox', 'DE'),
             (gen_random_uuid(), 'f', 'page_view', '2025-11-14T10:10:00Z', '/b', 'u1', now(), 'Firefox', 'DE'),
             (gen_random_uuid(), 'f', 'page_view', '2025-11-14T11:00:00Z', '/a', 'u2', now(), 'Firefox', 'FR'),
             (gen_random_uuid(), 'f', 'page_view', '2025-11-14T12:00:00Z', '/a', 'u3', now(), 'Chrome', 'DE'),
             (gen_random_uuid(), 'f', 'click',     '2025-11-14T12:00:00Z', '/a', 'u3', now(), 'Firefox', 'DE');
         INSERT INTO rollup_hourly VALUES ('f', 'page_view', '2025-11-14T10:00:00Z', 2),
             ('f', 'page_view', '2025-11-14T11:00:00Z', 1), ('f', 'page_view', '2025-11-14T12:00:00Z', 1),
             ('f', 'click', '2025-11-14T12:00:00Z', 1);",
    )
    .await;
}

#[tokio::test]
async fn filters_count_only_matching_events_exactly() {
    let app = spawn_app().await;
    events_with_browsers(&app).await;
    let (status, body) = app
        .get_json("/v1/stats?site_id=f&date=2025-11-14&browser=Firefox")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["total_views"].as_i64(), body["unique_users"].as_i64()),
        (Some(3), Some(2))
    );
    assert_eq!(
        body["top_paths"],
        json!([{"path": "/a", "views": 2}, {"path": "/b", "views": 1}])
    );
    let (_, both) = app
        .get_json("/v1/stats?site_id=f&date=2025-11-14&browser=Firefox&country=DE")
        .await;
    assert_eq!(both["total_views"], 2);
    let (status, series) = app
        .get_json("/v1/sites/f/timeseries?metric=views&interval=hour&from=2025-11-14T10:00:00Z&to=2025-11-14T13:00:00Z&country=DE")
        .await;
    assert_eq!(status, 200, "{series}");
    assert_eq!(
        series.as_array().map(|a| a
            .iter()
            .map(|p| p["value"].as_i64().unwrap_or(-1))
            .collect::<Vec<_>>()),
        Some(vec![2, 0, 1])
    );
}

#[tokio::test]
async fn a_filtered_series_ending_inside_an_hour_is_no_expiry() {
    let app = spawn_app().await;
    events_with_browsers(&app).await;
    let (status, series) = app
        .get_json("/v1/sites/f/timeseries?metric=views&interval=minute&from=2025-11-14T10:00:00Z&to=2025-11-14T10:05:00Z&browser=Firefox")
        .await;
    assert_eq!(status, 200, "{series}");
    assert_eq!(series[0]["value"], 1);
}

#[tokio::test]
async fn filters_over_too_many_events_or_expired_ones_are_refused() {
    let app = spawn_app_with(|c| c.stats.filter_max_events = 3).await;
    events_with_browsers(&app).await;
    let (status, body) = app
        .get_json("/v1/stats?site_id=f&date=2025-11-14&browser=Firefox")
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("FILTER_MAX_EVENTS"),
        "{body}"
    );

    let app = spawn_app().await;
    events_with_browsers(&app).await;
    // Retention took one raw event the rollups still count.
    app.sql("DELETE FROM events WHERE ts = '2025-11-14T11:00:00Z'")
        .await;
    let (status, body) = app
        .get_json("/v1/stats?site_id=f&date=2025-11-14&browser=Firefox")
        .await;
    assert_eq!(status, 422, "{body}");
    // Unfiltered answers still come from the rollups.
    let (status, body) = app.get_json("/v1/stats?site_id=f&date=2025-11-14").await;
    assert_eq!((status, body["total_views"].as_i64()), (200, Some(4)));
}
