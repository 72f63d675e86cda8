use crate::helpers::spawn_app;

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.get("/openapi.json").await.json().await.expect("json");
    assert_eq!(
        domain::testing::openapi_operations(&doc),
        domain::testing::operations(&[
            ("GET", "/v1/stats"),
            ("GET", "/v1/polls/{poll_id}"),
            ("GET", "/v1/sites/{site_id}/timeseries"),
            ("GET", "/api/stats"),
            ("GET", "/grafana"),
            ("POST", "/grafana/metrics"),
            ("POST", "/grafana/metric-payload-options"),
            ("POST", "/grafana/query"),
            ("POST", "/grafana/variable"),
            ("POST", "/grafana/tag-keys"),
            ("POST", "/grafana/tag-values"),
            ("GET", "/healthz"),
            ("GET", "/readyz"),
            ("GET", "/metrics"),
            ("GET", "/v1/notifications/{notification_id}"),
            ("GET", "/v1/notifications/{notification_id}/deliveries"),
            ("GET", "/v1/users/{user_id}/feed"),
            ("GET", "/v1/dead-letters"),
            ("POST", "/v1/dead-letters/retry"),
            ("DELETE", "/v1/dead-letters"),
            ("POST", "/v2/query"),
            ("GET", "/v1/sites/{site_id}/funnels"),
            ("GET", "/v1/sites/{site_id}/funnels/{funnel_id}"),
            ("GET", "/v1/jobs/{job_id}"),
            ("GET", "/v1/jobs/{job_id}/stream"),
            ("GET", "/v1/jobs/{job_id}/download"),
        ])
    );
    let stats = &doc["paths"]["/v1/stats"]["get"];
    let params: Vec<&str> = stats["parameters"]
        .as_array()
        .expect("params")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        params.contains(&"site_id") && params.contains(&"date"),
        "{params:?}"
    );
}

#[tokio::test]
async fn every_documented_answer_has_a_schema_and_bodies_list_their_refusals() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.get("/openapi.json").await.json().await.expect("json");
    assert_eq!(
        domain::testing::responses_without_schema(&doc),
        Vec::<String>::new()
    );
    assert_eq!(
        domain::testing::bodies_missing_statuses(&doc, &["400", "401", "408", "413", "415"]),
        Vec::<String>::new()
    );
}
