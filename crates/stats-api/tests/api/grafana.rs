use crate::helpers::{spawn_app, spawn_app_with};
use domain::config::Secret;
use serde_json::json;

async fn post(
    app: &crate::helpers::TestApp,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let res = app
        .client
        .post(format!("{}{path}", app.address))
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = res.status().as_u16();
    (status, res.json().await.expect("JSON"))
}

#[tokio::test]
async fn a_grafana_time_series_query_returns_the_posted_numbers() {
    let app = spawn_app().await;
    app.seed_flow("g").await;
    // What Grafana sends for a panel over 09:00-12:00 with a 1 h interval.
    let payload = json!({
        "app": "dashboard",
        "range": {"from": "2025-11-14T09:00:00.000Z", "to": "2025-11-14T12:00:00.000Z", "raw": {"from": "now-3h", "to": "now"}},
        "intervalMs": 3_600_000,
        "maxDataPoints": 1000,
        "targets": [{"refId": "A", "target": "views", "payload": {"site_id": "g"}, "datasource": {"type": "simpod-json-datasource"}}],
        "scopedVars": {},
        "adhocFilters": []
    });
    let (status, body) = post(&app, "/grafana/query", payload).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["refId"], "A");
    assert_eq!(
        body[0]["datapoints"],
        json!([
            [0, 1_763_110_800_000_i64],
            [3, 1_763_114_400_000_i64],
            [0, 1_763_118_000_000_i64]
        ])
    );
}

#[tokio::test]
async fn grafana_table_queries_return_top_paths_and_poll_results() {
    let app = spawn_app().await;
    app.seed_flow("g").await;
    app.sql(
        "INSERT INTO polls (poll_id, question, created_at, shard) VALUES ('p1', 'Best?', now(), 0);
         INSERT INTO poll_options (poll_id, option_id, label, position, votes) VALUES ('p1', 'o1', 'Red', 0, 5), ('p1', 'o2', 'Blue', 1, 2);",
    )
    .await;
    let payload = json!({
        "range": {"from": "2025-11-14T00:00:00Z", "to": "2025-11-15T00:00:00Z"},
        "intervalMs": 60_000,
        "targets": [
            {"refId": "A", "target": "top_paths", "payload": {"site_id": "g"}},
            {"refId": "B", "target": "poll_results", "payload": {"poll_id": "p1"}},
            {"refId": "C", "target": "views", "payload": {"site_id": "g"}, "hide": true}
        ]
    });
    let (status, body) = post(&app, "/grafana/query", payload).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body.as_array().map(Vec::len),
        Some(2),
        "hidden targets are skipped"
    );
    assert_eq!(body[0]["type"], "table");
    assert_eq!(body[0]["rows"], json!([["/pricing", 2], ["/", 1]]));
    assert_eq!(body[1]["rows"], json!([["Red", 5], ["Blue", 2]]));
}

#[tokio::test]
async fn a_breakdown_table_gives_visit_metrics_by_a_dimension() {
    let app = spawn_app().await;
    // Three visits: two from Google (one a bounce of one page, one of 3 pages over 120 s),
    // one direct.
    app.sql(
        "INSERT INTO visits (site_id, visitor, started_at, ended_at, first_event_id, events, pageviews, source)
         VALUES ('g', 'a', '2025-11-14T10:00:00Z', '2025-11-14T10:00:00Z', gen_random_uuid(), 1, 1, 'Google'),
                ('g', 'b', '2025-11-14T11:00:00Z', '2025-11-14T11:02:00Z', gen_random_uuid(), 3, 3, 'Google'),
                ('g', 'c', '2025-11-14T12:00:00Z', '2025-11-14T12:00:00Z', gen_random_uuid(), 1, 1, NULL),
                ('g', 'd', '2025-11-16T12:00:00Z', '2025-11-16T12:00:00Z', gen_random_uuid(), 1, 1, NULL);
         SELECT tally_rebuild_visit_rollups('g');",
    )
    .await;
    let (status, body) = post(
        &app,
        "/grafana/query",
        json!({
            "range": {"from": "2025-11-14T00:00:00Z", "to": "2025-11-15T00:00:00Z"},
            "targets": [{"refId": "A", "target": "breakdown", "payload": {"site_id": "g", "dimension": "visit:source"}}]
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["columns"][0]["text"], "visit:source");
    assert_eq!(
        body[0]["rows"],
        json!([["Google", 2, 2, 50, 60], ["Direct / None", 1, 1, 100, 0]])
    );
    let (status, body) = post(
        &app,
        "/grafana/query",
        json!({
            "range": {"from": "2025-11-14T00:00:00Z", "to": "2025-11-15T00:00:00Z"},
            "targets": [{"refId": "A", "target": "breakdown", "payload": {"site_id": "g", "dimension": "visit:galaxy"}}]
        }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // Goals: b signed up (twice) in its visit; conversions over the three visitors.
    app.sql(
        "INSERT INTO sites (site_id, timezone, version, created_at, updated_at, goals)
         VALUES ('g', 'UTC', 1, now(), now(), '[{\"goal_id\": \"g_1\", \"display_name\": \"Signup\", \"event_name\": \"signup\"}]');
         INSERT INTO events (event_id, site_id, event_type, ts, user_id, received_at)
         VALUES (gen_random_uuid(), 'g', 'signup', '2025-11-14T11:01:00Z', 'b', now()),
                (gen_random_uuid(), 'g', 'signup', '2025-11-14T11:02:00Z', 'b', now());
         -- Written by hand: the conversions counted as the worker would have.
         SELECT tally_rebuild_visit_rollups('g');",
    )
    .await;
    let (status, body) = post(
        &app,
        "/grafana/query",
        json!({
            "range": {"from": "2025-11-14T00:00:00Z", "to": "2025-11-15T00:00:00Z"},
            "targets": [{"refId": "A", "target": "breakdown", "payload": {"site_id": "g", "dimension": "event:goal"}}]
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["rows"], json!([["Signup", 1, 2, 33.33]]));
    assert_eq!(body[0]["columns"][3]["text"], "conversion_rate");
}

#[tokio::test]
async fn the_rest_of_the_protocol_answers() {
    let app = spawn_app().await;
    app.seed_flow("site-a").await;
    assert_eq!(app.get("/grafana").await.status(), 200);
    let (_, metrics) = post(&app, "/grafana/metrics", json!({})).await;
    let names: Vec<&str> = metrics
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["value"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "views",
            "visitors",
            "events",
            "top_paths",
            "breakdown",
            "poll_results"
        ]
    );
    let (_, options) = post(
        &app,
        "/grafana/metric-payload-options",
        json!({"metric": "views", "payload": {}, "name": "site_id"}),
    )
    .await;
    assert_eq!(options, json!([{"label": "site-a", "value": "site-a"}]));
    let (_, variable) = post(
        &app,
        "/grafana/variable",
        json!({"payload": {"target": "sites"}, "range": {}}),
    )
    .await;
    assert_eq!(variable, json!([{"__text": "site-a", "__value": "site-a"}]));
    let (_, keys) = post(&app, "/grafana/tag-keys", json!({})).await;
    assert_eq!(keys[0]["text"], "site_id");
    let (_, values) = post(&app, "/grafana/tag-values", json!({"key": "site_id"})).await;
    assert_eq!(values, json!([{"text": "site-a"}]));
    let (status, err) = post(&app, "/grafana/query", json!({"range": {"from": "2025-11-14T00:00:00Z", "to": "2025-11-15T00:00:00Z"}, "targets": [{"target": "nope"}]})).await;
    assert_eq!((status, err["success"].clone()), (400, json!(false)));
    let bad = app
        .client
        .post(format!("{}/grafana/query", app.address))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("sent");
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn the_grafana_endpoints_need_the_stats_token_when_set() {
    let app = spawn_app_with(|c| c.stats.stats_token = Secret::new("graf")).await;
    assert_eq!(app.get("/grafana").await.status(), 401);
    let ok = app
        .client
        .get(format!("{}/grafana", app.address))
        .bearer_auth("graf")
        .send()
        .await
        .expect("sent");
    assert_eq!(ok.status(), 200);
}
