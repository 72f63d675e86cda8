use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn healthz_and_readyz_answer_ok_with_redis_up() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn readyz_names_redis_when_it_is_unreachable() {
    let app = spawn_app_with(|c| c.redis.redis_url = "redis://127.0.0.1:1".into()).await;
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.expect("json");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("redis"),
        "{body}"
    );
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "alive even when Redis is not"
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_request_counts() {
    let app = spawn_app().await;
    app.post_json("/v1/events", &crate::helpers::event("m", "/", "u"))
        .await;
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.expect("text");
    assert!(text.contains("ingest_api_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/v1/events\""), "{text}");
    assert!(text.contains("ingest_api_events_accepted_total"), "{text}");
}

#[tokio::test]
async fn unknown_routes_are_json_404s() {
    let app = spawn_app().await;
    let res = app.get("/nope").await;
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["success"], false);
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let app = spawn_app().await;
    let res = app.get("/openapi.json").await;
    assert_eq!(res.status(), 200);
    let doc: serde_json::Value = res.json().await.expect("json");
    assert!(
        doc["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.")
    );
    assert_eq!(
        domain::testing::openapi_operations(&doc),
        domain::testing::operations(&[
            ("POST", "/v1/events"),
            ("POST", "/api/event"),
            ("POST", "/v1/polls"),
            ("POST", "/v1/polls/{poll_id}/close"),
            ("POST", "/v1/polls/{poll_id}/votes"),
            ("POST", "/api/vote"),
            ("POST", "/v1/sites"),
            ("GET", "/v1/sites"),
            ("GET", "/v1/sites/{site_id}"),
            ("PATCH", "/v1/sites/{site_id}"),
            ("DELETE", "/v1/sites/{site_id}"),
            ("POST", "/v1/sites/{site_id}/goals"),
            ("GET", "/v1/sites/{site_id}/goals"),
            ("DELETE", "/v1/sites/{site_id}/goals/{goal_id}"),
            ("POST", "/v1/sites/{site_id}/funnels"),
            ("DELETE", "/v1/sites/{site_id}/funnels/{funnel_id}"),
            ("POST", "/v1/sites/{site_id}/exports"),
            ("GET", "/healthz"),
            ("GET", "/readyz"),
            ("GET", "/metrics"),
            ("POST", "/v1/notifications"),
            ("POST", "/v1/webhooks/endpoints"),
            ("GET", "/v1/webhooks/endpoints"),
            ("GET", "/v1/webhooks/endpoints/{endpoint_id}"),
            ("PATCH", "/v1/webhooks/endpoints/{endpoint_id}"),
            ("DELETE", "/v1/webhooks/endpoints/{endpoint_id}"),
            ("POST", "/v1/webhooks/endpoints/{endpoint_id}/rotate-secret"),
            ("POST", "/v1/topics/{topic}/subscribers"),
            ("DELETE", "/v1/topics/{topic}/subscribers/{user_id}"),
            ("GET", "/v1/topics/{topic}"),
            ("POST", "/v1/users/{user_id}/feed/read"),
        ])
    );
    assert!(doc["components"]["securitySchemes"]["admin_token"].is_object());
}

#[tokio::test]
async fn every_documented_answer_has_a_schema_and_writes_list_their_refusals() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.get("/openapi.json").await.json().await.expect("json");
    assert_eq!(
        domain::testing::responses_without_schema(&doc),
        Vec::<String>::new()
    );
    assert_eq!(
        domain::testing::bodies_missing_statuses(&doc, &["400", "408", "413", "415", "429"]),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_method_the_path_does_not_take_is_405_with_allow_and_an_unknown_path_404() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(format!("{}/v1/events", app.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 405);
    assert_eq!(
        res.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    let res = app
        .client
        .put(format!("{}/v1/polls/some-poll/votes", app.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 405, "a path parameter matches any segment");
    let res = app
        .client
        .delete(format!("{}/v1/sites/example.com", app.address))
        .send()
        .await
        .expect("sent");
    assert_ne!(res.status(), 405, "DELETE is documented there");
    assert_eq!(app.get("/v1/nothing-here").await.status(), 404);
    let res = app
        .client
        .post(format!("{}/v1/events/extra", app.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 404, "one segment too many is another path");
}
