//! Inputs a hostile client sends: each gets a clear 400, never a 500.

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_nul_character_in_any_parameter_is_a_400_not_a_500() {
    let app = spawn_app().await;
    app.seed_flow("shop").await;
    for path in [
        "/api/stats?site_id=%00",
        "/v1/stats?site_id=shop&event_type=%00",
        "/v1/stats?site_id=sh%00op",
        "/v1/sites/%00/timeseries?metric=views",
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
