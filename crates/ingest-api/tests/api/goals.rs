//! A site's goals and funnels: administration through the site's registry record.

use crate::helpers::{ADMIN_TOKEN, TestApp, spawn_app};
use serde_json::{Value, json};

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let res = req.bearer_auth(ADMIN_TOKEN).send().await.expect("sent");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn url(app: &TestApp, rest: &str) -> String {
    format!("{}/v1/sites/shop.example{rest}", app.address)
}

#[tokio::test]
async fn goals_and_funnels_are_added_listed_protected_and_removed() {
    let app = spawn_app().await;
    app.mark_sites_restored().await;
    assert_eq!(
        app.register_site(json!({"site_id": "shop.example"}))
            .await
            .status(),
        201
    );
    let post = |rest: &str, body: Value| app.client.post(url(&app, rest)).json(&body);
    let (status, pricing) = send(post("/goals", json!({"page_path": "/pricing/**"}))).await;
    assert_eq!(status, 201, "{pricing}");
    assert_eq!(
        (
            pricing["goal_type"].as_str(),
            pricing["display_name"].as_str()
        ),
        (Some("page"), Some("Visit /pricing/**"))
    );
    let (status, signup) = send(post("/goals", json!({"event_name": "Signup"}))).await;
    assert_eq!(status, 201);
    let (status, body) = send(post("/goals", json!({"event_name": "Signup"}))).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("goal_exists")));
    let (status, body) = send(post(
        "/goals",
        json!({"event_name": "x", "page_path": "/y"}),
    ))
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_body"))
    );

    // Steps by display name or id; one that is no goal of the site is named.
    let (status, body) = send(post(
        "/funnels",
        json!({"name": "Checkout", "steps": ["Visit /pricing/**", "Nope"]}),
    ))
    .await;
    assert_eq!(status, 400);
    assert!(body.to_string().contains("\\\"Nope\\\""), "{body}");
    let (status, funnel) = send(post(
        "/funnels",
        json!({"name": "Checkout", "steps": ["Visit /pricing/**", signup["goal_id"]]}),
    ))
    .await;
    assert_eq!(status, 201, "{funnel}");
    assert_eq!(funnel["steps"][1]["display_name"], "Signup");

    let (status, listed) = send(app.client.get(url(&app, "/goals"))).await;
    assert_eq!(status, 200);
    assert_eq!(listed["goals"].as_array().map(Vec::len), Some(2));
    assert_eq!(listed["funnels"][0]["funnel_id"], funnel["funnel_id"]);

    // A goal a funnel uses stays until the funnel goes.
    let signup_url = url(
        &app,
        &format!("/goals/{}", signup["goal_id"].as_str().unwrap_or("")),
    );
    let (status, body) = send(app.client.delete(&signup_url)).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("goal_in_use")));
    let funnel_url = url(
        &app,
        &format!("/funnels/{}", funnel["funnel_id"].as_str().unwrap_or("")),
    );
    assert_eq!(send(app.client.delete(&funnel_url)).await.0, 204);
    assert_eq!(send(app.client.delete(&funnel_url)).await.0, 404);
    assert_eq!(send(app.client.delete(&signup_url)).await.0, 204);

    // Unauthenticated and unknown sites.
    let anonymous = app
        .client
        .get(url(&app, "/goals"))
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status(), 401);
    let (status, body) = send(
        app.client
            .post(format!("{}/v1/sites/nowhere/goals", app.address))
            .json(&json!({"event_name": "a"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("site_not_found"))
    );

    // Every change went to PostgreSQL's queue as the whole site, versions rising; the last
    // holds the one goal left.
    let changes = app.queued_site_changes().await;
    assert_eq!(
        changes.len(),
        6,
        "create, 2 goals, funnel, funnel gone, goal gone"
    );
    assert!(
        changes
            .windows(2)
            .all(|w| w[0].site.version < w[1].site.version)
    );
    let last = &changes[5].site;
    assert_eq!(last.goals.len(), 1);
    assert_eq!(last.goals[0].page_path.as_deref(), Some("/pricing/**"));
    assert!(last.funnels.is_empty());
}

#[tokio::test]
async fn a_site_holds_at_most_a_hundred_goals_and_adds_race_free() {
    let app = spawn_app().await;
    app.mark_sites_restored().await;
    app.register_site(json!({"site_id": "shop.example"})).await;
    // 120 concurrent adds: exactly 100 land, none lost to another's write.
    let adds = (0..120).map(|i| {
        let req = app
            .client
            .post(url(&app, "/goals"))
            .json(&json!({"event_name": format!("e{i}")}));
        send(req)
    });
    let answers = futures_util::future::join_all(adds).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let full = answers
        .iter()
        .filter(|(s, b)| *s == 409 && b["error"] == "too_many")
        .count();
    assert_eq!((created, full), (100, 20));
    let (_, listed) = send(app.client.get(url(&app, "/goals"))).await;
    assert_eq!(listed["goals"].as_array().map(Vec::len), Some(100));
}
