//! Stats in a site's time zone, and what a public site lets anyone read.

use crate::helpers::{spawn_app, spawn_app_with};
use serde_json::json;

/// A New York site with three events around its local midnights (rollup rows, as the
/// worker writes them): `c` at 23:59 on the 13th, `a` at 23:30 on the 14th, `b` at 00:30
/// on the 15th, New York time.
async fn new_york_site(app: &crate::helpers::TestApp) {
    app.sql(
        "INSERT INTO sites (site_id, timezone, version, created_at, updated_at)
             VALUES ('ny', 'America/New_York', 1, now(), now());
         INSERT INTO rollup_hourly VALUES ('ny', 'page_view', '2025-11-14T04:00:00Z', 1),
             ('ny', 'page_view', '2025-11-15T04:00:00Z', 1), ('ny', 'page_view', '2025-11-15T05:00:00Z', 1);
         INSERT INTO rollup_hourly_paths (site_id, event_type, bucket, path_key, path, views) VALUES
             ('ny', 'page_view', '2025-11-14T04:00:00Z', md5('/c')::uuid, '/c', 1),
             ('ny', 'page_view', '2025-11-15T04:00:00Z', md5('/late')::uuid, '/late', 1),
             ('ny', 'page_view', '2025-11-15T05:00:00Z', md5('/early')::uuid, '/early', 1);
         INSERT INTO daily_visitors VALUES ('ny', 'page_view', '2025-11-14', 'c', 16),
             ('ny', 'page_view', '2025-11-15', 'a', 16), ('ny', 'page_view', '2025-11-15', 'b', 32);",
    )
    .await;
}

async fn day(app: &crate::helpers::TestApp, date: &str) -> (i64, i64, Vec<String>) {
    let (status, body) = app
        .get_json(&format!("/v1/stats?site_id=ny&date={date}"))
        .await;
    assert_eq!(status, 200, "{body}");
    let paths = body["top_paths"]
        .as_array()
        .expect("paths")
        .iter()
        .map(|p| p["path"].as_str().unwrap_or_default().to_string())
        .collect();
    (
        body["total_views"].as_i64().unwrap_or(-1),
        body["unique_users"].as_i64().unwrap_or(-1),
        paths,
    )
}

#[tokio::test]
async fn days_are_the_sites_local_days_and_a_new_zone_moves_the_past() {
    let app = spawn_app().await;
    new_york_site(&app).await;
    assert_eq!(day(&app, "2025-11-13").await, (1, 1, vec!["/c".into()]));
    assert_eq!(day(&app, "2025-11-14").await, (1, 1, vec!["/late".into()]));
    assert_eq!(day(&app, "2025-11-15").await, (1, 1, vec!["/early".into()]));
    let (_, body) = app.get_json("/v1/stats?site_id=ny&date=2025-11-14").await;
    assert_eq!(body["timezone"], "America/New_York");
    // Two local days: every visitor once.
    let (_, range) = app
        .get_json("/v1/stats?site_id=ny&from=2025-11-14&to=2025-11-15")
        .await;
    assert_eq!(
        (
            range["total_views"].as_i64(),
            range["unique_users"].as_i64()
        ),
        (Some(2), Some(2))
    );

    // The site moves to UTC: the same stored rows now fall on UTC days.
    app.sql("UPDATE sites SET timezone = 'UTC', version = 2 WHERE site_id = 'ny'")
        .await;
    app.bump("ny").await;
    assert_eq!(day(&app, "2025-11-14").await, (1, 1, vec!["/c".into()]));
    let (views, users, mut paths) = day(&app, "2025-11-15").await;
    paths.sort();
    assert_eq!(
        (views, users, paths),
        (2, 2, vec!["/early".into(), "/late".into()])
    );
}

#[tokio::test]
async fn series_by_day_follow_the_local_days_too() {
    let app = spawn_app().await;
    new_york_site(&app).await;
    for metric in ["views", "visitors"] {
        let (status, body) = app
            .get_json(&format!(
                "/v1/sites/ny/timeseries?metric={metric}&interval=day&from=2025-11-13&to=2025-11-15"
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            json!([
                {"t": "2025-11-13T05:00:00Z", "value": 1},
                {"t": "2025-11-14T05:00:00Z", "value": 1},
                {"t": "2025-11-15T05:00:00Z", "value": 1},
            ]),
            "{metric}"
        );
    }
}

#[tokio::test]
async fn the_current_local_day_counts_its_visitors_like_its_views() {
    let app = spawn_app().await;
    new_york_site(&app).await;
    // A range ending inside the 15th (New York), as Grafana's "now" does.
    for metric in ["views", "visitors"] {
        let (status, body) = app
            .get_json(&format!(
                "/v1/sites/ny/timeseries?metric={metric}&interval=day&from=2025-11-14&to=2025-11-15T16:00:00Z"
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        let values: Vec<i64> = body
            .as_array()
            .expect("points")
            .iter()
            .map(|p| p["value"].as_i64().unwrap_or(-1))
            .collect();
        assert_eq!(values, vec![1, 1], "{metric}");
    }
}

#[tokio::test]
async fn bounds_past_the_years_events_have_are_a_400_not_a_crash() {
    let app = spawn_app().await;
    new_york_site(&app).await;
    for query in [
        "/v1/stats?site_id=ny&to=-8334601228800000",
        "/v1/stats?site_id=ny&from=8210266876799999",
        "/v1/sites/ny/timeseries?to=-8334601228800000",
        "/v1/sites/ny/timeseries?interval=day&from=8210266876799999",
    ] {
        let (status, body) = app.get_json(query).await;
        assert_eq!(status, 400, "{query}: {body}");
    }
    let (status, _) = app
        .get_json("/v1/sites/ny/timeseries?interval=day&from=9999-12-01&to=9999-12-31")
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_public_sites_stats_are_readable_without_the_token_and_a_private_ones_are_not() {
    let app = spawn_app_with(|c| c.stats.stats_token = domain::config::Secret::new("st")).await;
    app.sql(
        "INSERT INTO sites (site_id, public, version, created_at, updated_at) VALUES
             ('pub', true, 1, now(), now()), ('priv', false, 2, now(), now());",
    )
    .await;
    app.seed_flow("pub").await;
    for path in [
        "/v1/stats?site_id=pub&date=2025-11-14",
        "/api/stats?site_id=pub&date=2025-11-14",
        "/v1/sites/pub/timeseries?from=2025-11-14&to=2025-11-14",
    ] {
        let (status, body) = app.get_json(path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (_, body) = app.get_json("/api/stats?site_id=pub&date=2025-11-14").await;
    assert_eq!(body["total_views"], 3);
    for path in [
        "/v1/stats?site_id=priv",
        "/api/stats?site_id=priv",
        "/v1/sites/priv/timeseries",
        "/v1/stats?site_id=unregistered",
        "/grafana",
    ] {
        assert_eq!(app.get(path).await.status(), 401, "{path}");
    }
    let with_token = app
        .client
        .get(format!("{}/v1/stats?site_id=priv", app.address))
        .bearer_auth("st")
        .send()
        .await
        .expect("sent");
    assert_eq!(with_token.status(), 200);

    // The query API: the URL names the public site, and the body must ask about it.
    let query = |url_site: &str, body_site: &str| {
        app.client
            .post(format!("{}/v2/query?site_id={url_site}", app.address))
            .json(&serde_json::json!({"site_id": body_site, "metrics": ["visits"], "date_range": "7d"}))
            .send()
    };
    assert_eq!(query("pub", "pub").await.expect("sent").status(), 200);
    assert_eq!(query("priv", "priv").await.expect("sent").status(), 401);
    let smuggled = query("pub", "priv").await.expect("sent");
    assert_eq!(
        smuggled.status(),
        400,
        "a public site in the URL cannot read a private one"
    );
}
