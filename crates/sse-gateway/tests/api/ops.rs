use crate::helpers::{spawn_gateway, spawn_gateway_no_wait};

#[tokio::test]
async fn operational_routes_and_the_demo_page_answer() {
    let gw = spawn_gateway(|_| {}).await;
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/",
        "/app.js",
        "/style.css",
        "/config.json",
        "/dashboard/example.com",
        "/dashboard.js",
        "/dashboard.css",
    ] {
        let res = reqwest::get(format!("{}{path}", gw.address))
            .await
            .expect("sent");
        assert_eq!(res.status(), 200, "{path}");
    }
    let page = reqwest::get(format!("{}/", gw.address))
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(page.contains("/app.js"));
}

#[tokio::test]
async fn readiness_names_redis_while_it_is_unreachable() {
    let gw = spawn_gateway_no_wait(|c| c.redis.redis_url = "redis://127.0.0.1:1".into()).await;
    let res = reqwest::get(format!("{}/readyz", gw.address))
        .await
        .expect("sent");
    assert_eq!(res.status(), 503);
    assert!(res.text().await.unwrap_or_default().contains("redis"));
    assert_eq!(
        reqwest::get(format!("{}/healthz", gw.address))
            .await
            .expect("sent")
            .status(),
        200
    );
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let gw = spawn_gateway(|_| {}).await;
    let doc: serde_json::Value = reqwest::get(format!("{}/openapi.json", gw.address))
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        domain::testing::openapi_operations(&doc),
        domain::testing::operations(&[
            ("GET", "/"),
            ("GET", "/app.js"),
            ("GET", "/style.css"),
            ("GET", "/config.json"),
            ("GET", "/dashboard/{site_id}"),
            ("GET", "/dashboard.js"),
            ("GET", "/dashboard.css"),
            ("GET", "/v1/polls/{poll_id}/stream"),
            ("GET", "/v1/polls/{poll_id}/updates"),
            ("GET", "/v1/sites/{site_id}/stream"),
            ("GET", "/tally.js"),
            ("GET", "/v1/stream"),
            ("GET", "/healthz"),
            ("GET", "/readyz"),
            ("GET", "/metrics"),
            ("GET", "/v1/users/{user_id}/feed/stream"),
        ])
    );
}

#[tokio::test]
async fn every_documented_answer_has_a_schema() {
    let gw = spawn_gateway(|_| {}).await;
    let doc: serde_json::Value = reqwest::get(format!("{}/openapi.json", gw.address))
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        domain::testing::responses_without_schema(&doc),
        Vec::<String>::new()
    );
}
