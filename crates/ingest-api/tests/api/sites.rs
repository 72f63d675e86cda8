//! The site registry: administration, and which events it lets in.

use crate::helpers::{ADMIN_TOKEN, CHROME_UA, browser_event, spawn_app, spawn_app_behind_proxy};
use ingest_api::config::SitesMode;
use serde_json::json;

#[tokio::test]
async fn sites_are_created_read_changed_and_deleted_by_the_admin_only() {
    let app = spawn_app().await;
    app.mark_sites_restored().await;
    let res = app
        .register_site(json!({"site_id": "example.com", "domains": ["Example.com"], "timezone": "America/New_York"}))
        .await;
    assert_eq!(res.status(), 201);
    let site: serde_json::Value = res.json().await.expect("json");
    assert_eq!(site["domains"], json!(["example.com"]));
    assert_eq!(
        (site["timezone"].as_str(), site["public"].as_bool()),
        (Some("America/New_York"), Some(false))
    );
    let again = app.register_site(json!({"site_id": "example.com"})).await;
    assert_eq!(again.status(), 409);

    let anonymous = app
        .client
        .get(format!("{}/v1/sites/example.com", app.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status(), 401);
    let admin = |req: reqwest::RequestBuilder| req.bearer_auth(ADMIN_TOKEN).send();
    let patched = admin(
        app.client
            .patch(format!("{}/v1/sites/example.com", app.address))
            .json(&json!({"timezone": "UTC", "public": true})),
    )
    .await
    .expect("sent");
    assert_eq!(patched.status(), 200);
    let patched: serde_json::Value = patched.json().await.expect("json");
    assert_eq!(
        (patched["timezone"].as_str(), patched["public"].as_bool()),
        (Some("UTC"), Some(true))
    );
    assert_eq!(
        patched["domains"],
        json!(["example.com"]),
        "a patch keeps what it does not name"
    );

    let list: serde_json::Value = admin(app.client.get(format!("{}/v1/sites", app.address)))
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(list["sites"].as_array().map(Vec::len), Some(1));

    let deleted = admin(
        app.client
            .delete(format!("{}/v1/sites/example.com", app.address)),
    )
    .await
    .expect("sent");
    assert_eq!(deleted.status(), 204);
    let gone = admin(
        app.client
            .get(format!("{}/v1/sites/example.com", app.address)),
    )
    .await
    .expect("sent");
    assert_eq!(gone.status(), 404);

    // Every change was queued for PostgreSQL with a rising version, the delete last.
    let changes = app.queued_site_changes().await;
    assert_eq!(changes.len(), 3);
    assert!(
        changes
            .windows(2)
            .all(|w| w[0].site.version < w[1].site.version)
    );
    assert!(changes[2].deleted && !changes[1].deleted);
}

#[tokio::test]
async fn bad_site_bodies_list_every_problem_and_change_nothing() {
    let app = spawn_app().await;
    app.mark_sites_restored().await;
    let res = app
        .register_site(json!({"site_id": "", "domains": ["http://x.com/a"], "timezone": "Mars/Base", "public": 1}))
        .await;
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"], "invalid_body");
    assert_eq!(body["details"].as_array().map(Vec::len), Some(4), "{body}");
    let unknown = app
        .register_site(json!({"site_id": "s", "colour": "red"}))
        .await;
    assert_eq!(unknown.status(), 400);
    let mut conn = app.redis.conn().await;
    let queued: u64 = domain::redis_client::cmd("LLEN")
        .arg(app.redis.keys().sites_queue().queue)
        .query_async(&mut conn)
        .await
        .expect("LLEN");
    assert_eq!(queued, 0);
}

#[tokio::test]
async fn while_the_registry_is_being_restored_writes_get_503() {
    let app = spawn_app().await;
    let res = app.register_site(json!({"site_id": "s"})).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn registered_mode_refuses_unknown_sites_and_foreign_hosts_and_counts_them() {
    let app = spawn_app_behind_proxy(|c| c.ingest.sites_mode = SitesMode::Registered).await;
    app.mark_sites_restored().await;
    assert_eq!(
        app.register_site(json!({"site_id": "shop", "domains": ["shop.example"]}))
            .await
            .status(),
        201
    );
    let unknown = app
        .post_from(
            &browser_event("nobody", "https://nobody.example/"),
            "203.0.113.1",
            CHROME_UA,
        )
        .await;
    assert_eq!(unknown.status(), 404);
    let body: serde_json::Value = unknown.json().await.expect("json");
    assert_eq!(body["error"], "unknown_site");

    let foreign = app
        .post_from(
            &browser_event("shop", "https://evil.example/"),
            "203.0.113.1",
            CHROME_UA,
        )
        .await;
    assert_eq!(foreign.status(), 403);
    let body: serde_json::Value = foreign.json().await.expect("json");
    assert_eq!(body["error"], "domain_not_allowed");

    // A subdomain of a listed domain is the site's.
    let own = app
        .post_from(
            &browser_event("shop", "https://www.shop.example/cart"),
            "203.0.113.1",
            CHROME_UA,
        )
        .await;
    assert_eq!(own.status(), 202);
    // A browser's Origin counts too when the event carries no url.
    let res = app
        .client
        .post(format!("{}/v1/events", app.address))
        .header("origin", "https://evil.example")
        .json(&json!({"site_id": "shop", "event_type": "e", "timestamp": "2025-11-14T10:00:00Z", "user_id": "u"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 403);
    assert_eq!(
        app.queued_events().await.len(),
        1,
        "only the subdomain's event was queued"
    );
    assert_eq!(
        app.metric("ingest_api_events_rejected_total{reason=\"unknown_site\"}")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("ingest_api_events_rejected_total{reason=\"domain_not_allowed\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn registered_mode_answers_503_not_404_while_the_registry_is_missing() {
    let app = spawn_app_behind_proxy(|c| c.ingest.sites_mode = SitesMode::Registered).await;
    let res = app
        .post_from(
            &browser_event("shop", "https://shop.example/"),
            "203.0.113.1",
            CHROME_UA,
        )
        .await;
    assert_eq!(res.status(), 503);
}

#[tokio::test]
async fn open_mode_accepts_unknown_sites_but_still_checks_a_registered_sites_domains() {
    let app = spawn_app_behind_proxy(|_| {}).await;
    app.mark_sites_restored().await;
    app.register_site(json!({"site_id": "shop", "domains": ["shop.example"]}))
        .await;
    let unknown = app
        .post_from(
            &browser_event("anything", "https://anything.example/"),
            "203.0.113.1",
            CHROME_UA,
        )
        .await;
    assert_eq!(unknown.status(), 202);
    let foreign = app
        .post_from(
            &browser_event("shop", "https://evil.example/"),
            "203.0.113.1",
            CHROME_UA,
        )
        .await;
    assert_eq!(foreign.status(), 403);
}
