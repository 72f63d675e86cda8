//! Notifications, webhook endpoints, topics and read marks at ingest-api: what is accepted
//! is in Redis, queued once; what is refused queues nothing.

use crate::helpers::{ADMIN_TOKEN, STREAM_SECRET, TestApp, spawn_app_with};
use serde_json::{Value, json};

async fn app() -> TestApp {
    let app = spawn_app_with(|c| {
        c.ingest.stream_token_secret = domain::config::Secret::new(STREAM_SECRET);
        c.ingest.app_keys = domain::config::Secret::new("app-key-1, app-key-2");
    })
    .await;
    let mut conn = app.redis.conn().await;
    let keys = app.redis.keys();
    for marker in [keys.endpoints_restored(), keys.topics_restored()] {
        domain::registry::marker::set(&mut conn, &marker)
            .await
            .expect("marker");
    }
    app
}

impl TestApp {
    async fn send(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("sent")
    }

    /// Every message waiting in the notification shard queues.
    async fn queued_notifications(&self) -> Vec<Value> {
        let mut conn = self.redis.conn().await;
        let mut all = Vec::new();
        for q in self.redis.keys().notify_queues() {
            let items: Vec<String> = domain::redis_client::cmd("LRANGE")
                .arg(&q.queue)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .expect("LRANGE");
            all.extend(
                items
                    .iter()
                    .map(|i| serde_json::from_str::<Value>(i).expect("json")),
            );
        }
        all
    }
}

fn notification(recipients: Value) -> Value {
    json!({"recipients": recipients, "title": "Deployed", "body": "v2 is live", "channels": ["in_app", "webhook"]})
}

#[tokio::test]
async fn a_notification_is_recorded_and_queued_once_for_the_fan_out() {
    let app = app().await;
    let res = app
        .send(
            "/v1/notifications",
            "app-key-2",
            &notification(json!(["u1", {"user_id": "u2", "email": "u2@example.com"}])),
        )
        .await;
    assert_eq!(res.status(), 202);
    let id = res.json::<Value>().await.expect("json")["notification_id"]
        .as_str()
        .expect("id")
        .to_string();
    let queued = app.queued_notifications().await;
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0]["notification_id"], id.as_str());
    assert_eq!(queued[0]["recipients"][1]["email"], "u2@example.com");
    let uuid: uuid::Uuid = id.parse().expect("uuid");
    let record =
        domain::notify::accept::record(&mut app.redis.conn().await, &app.redis.keys(), &uuid)
            .await
            .expect("redis")
            .expect("the record is in Redis");
    assert_eq!(
        (record.title.as_str(), record.recipients),
        ("Deployed", Some(2))
    );
}

#[tokio::test]
async fn an_idempotency_key_answers_a_retry_with_the_same_notification_and_queues_it_once() {
    let app = app().await;
    let body = notification(json!(["u1"]));
    let mut ids = Vec::new();
    for _ in 0..3 {
        let res = app
            .client
            .post(format!("{}/v1/notifications", app.address))
            .bearer_auth(ADMIN_TOKEN)
            .header("idempotency-key", "deploy-42")
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 202);
        ids.push(res.json::<Value>().await.expect("json")["notification_id"].clone());
    }
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    assert_eq!(app.queued_notifications().await.len(), 1);
    let other = app
        .client
        .post(format!("{}/v1/notifications", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .header("idempotency-key", "deploy-42")
        .json(&notification(json!(["someone-else"])))
        .send()
        .await
        .expect("sent");
    assert_eq!(other.status(), 422, "the key answered another request");
    assert_eq!(app.queued_notifications().await.len(), 1);
}

#[tokio::test]
async fn bad_notifications_get_a_clear_4xx_and_queue_nothing() {
    let app = app().await;
    let too_many: Vec<String> = (0..10_001).map(|i| format!("u{i}")).collect();
    let cases = [
        (
            json!({"recipients": ["u"], "title": "t", "body": "b", "channels": ["pigeon"]}),
            "unknown channel",
        ),
        (
            json!({"recipients": [], "title": "t", "body": "b", "channels": ["in_app"]}),
            "at least one user",
        ),
        (
            json!({"recipients": too_many, "title": "t", "body": "b", "channels": ["in_app"]}),
            "at most 10000",
        ),
        (
            json!({"title": "t", "body": "b", "channels": ["in_app"]}),
            "recipients",
        ),
        (
            json!({"recipients": ["u"], "title": "t", "channels": ["in_app"]}),
            "body is required",
        ),
        (
            json!({"recipients": [{"user_id": "u", "phone": "0800"}], "title": "t", "body": "b", "channels": ["sms"]}),
            "E.164",
        ),
    ];
    for (body, needle) in cases {
        let res = app.send("/v1/notifications", ADMIN_TOKEN, &body).await;
        assert_eq!(res.status(), 400, "{needle}");
        let answer = res.text().await.expect("text");
        assert!(answer.contains(needle), "{needle} not in {answer}");
    }
    let oversized = "x".repeat(3 * 1024 * 1024);
    let res = app
        .client
        .post(format!("{}/v1/notifications", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(oversized)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 413);
    let res = app
        .send("/v1/notifications", "wrong", &notification(json!(["u"])))
        .await;
    assert_eq!(res.status(), 401);
    assert!(
        app.queued_notifications().await.is_empty(),
        "nothing queued"
    );
}

#[tokio::test]
async fn endpoints_are_created_with_a_secret_shown_once_and_internal_urls_are_refused() {
    let app = app().await;
    for (url, needle) in [
        ("ftp://hooks.example.com/x", "scheme"),
        ("http://127.0.0.1:9000/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://localhost:8080/", "loopback"),
    ] {
        let res = app
            .send("/v1/webhooks/endpoints", ADMIN_TOKEN, &json!({"url": url}))
            .await;
        assert_eq!(res.status(), 400, "{url}");
        assert!(res.text().await.expect("text").contains(needle), "{url}");
    }
    let res = app
        .send(
            "/v1/webhooks/endpoints",
            ADMIN_TOKEN,
            &json!({"url": "https://hooks.example.com/tally", "event_types": ["poll.*"], "rate_limit_per_s": 50}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.expect("json");
    let secret = created["secret"].as_str().expect("secret");
    assert!(domain::notify::webhook::secret_key(secret).is_some_and(|k| k.len() == 32));
    let id = created["endpoint_id"].as_str().expect("id");
    let shown: Value = app
        .client
        .get(format!("{}/v1/webhooks/endpoints/{id}", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(shown["rate_limit_per_s"], 50);
    assert!(shown.get("secret").is_none(), "the secret is shown once");
    let patched = app
        .client
        .patch(format!("{}/v1/webhooks/endpoints/{id}", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"disabled": true, "rate_limit_per_s": null}))
        .send()
        .await
        .expect("sent");
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.expect("json");
    assert_eq!(
        (
            patched["disabled"].clone(),
            patched["rate_limit_per_s"].clone()
        ),
        (json!(true), Value::Null)
    );
    // The change is queued for PostgreSQL: the create and the patch.
    let mut conn = app.redis.conn().await;
    let changes = domain::queue::len(&mut conn, &app.redis.keys().webhooks_queue())
        .await
        .expect("LLEN");
    assert_eq!(changes, 2);
    let gone = app
        .client
        .delete(format!("{}/v1/webhooks/endpoints/{id}", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(gone.status(), 204);
    let missing = app
        .client
        .get(format!("{}/v1/webhooks/endpoints/{id}", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.status(), 404);
    let app_key = app
        .send(
            "/v1/webhooks/endpoints",
            "app-key-1",
            &json!({"url": "https://a.example.com/"}),
        )
        .await;
    assert_eq!(
        app_key.status(),
        401,
        "app keys send notifications, they do not administer"
    );
}

#[tokio::test]
async fn endpoint_and_topic_writes_wait_while_their_registry_is_being_restored() {
    let app = spawn_app_with(|_| {}).await;
    let res = app
        .send(
            "/v1/webhooks/endpoints",
            ADMIN_TOKEN,
            &json!({"url": "https://a.example.com/"}),
        )
        .await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let res = app
        .send(
            "/v1/topics/deploys/subscribers",
            ADMIN_TOKEN,
            &json!({"subscribers": ["u1"]}),
        )
        .await;
    assert_eq!(res.status(), 503);
}

#[tokio::test]
async fn topic_subscriptions_are_kept_with_addresses_and_counted() {
    let app = app().await;
    let res = app
        .send(
            "/v1/topics/deploys/subscribers",
            ADMIN_TOKEN,
            &json!({"subscribers": ["u1", {"user_id": "u2", "email": "u2@example.com"}, "u1"]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        (body["changed"].clone(), body["subscribers"].clone()),
        (json!(2), json!(2))
    );
    let subs = domain::notify::topics::subscribers(
        &mut app.redis.conn().await,
        &app.redis.keys(),
        "deploys",
    )
    .await
    .expect("redis");
    let u2 = subs.iter().find(|s| s.user_id == "u2").expect("u2");
    assert_eq!(u2.email.as_deref(), Some("u2@example.com"));
    let res = app
        .client
        .delete(format!("{}/v1/topics/deploys/subscribers/u1", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 204);
    let count: Value = app
        .client
        .get(format!("{}/v1/topics/deploys", app.address))
        .bearer_auth("app-key-1")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(count["subscribers"], 1);
    let bad = app
        .send(
            "/v1/topics/no%20spaces/subscribers",
            ADMIN_TOKEN,
            &json!({"subscribers": ["u"]}),
        )
        .await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn read_marks_take_the_users_feed_token_and_keep_the_unread_count_exact() {
    let app = app().await;
    let keys = app.redis.keys();
    let mut conn = app.redis.conn().await;
    // Three items in u1's feed, as the fan-out appends them.
    let mut ids = Vec::new();
    for i in 0..3 {
        let n = domain::notify::Notification {
            notification_id: uuid::Uuid::now_v7(),
            event_type: "notification".into(),
            title: format!("n{i}"),
            body: "b".into(),
            html: None,
            data: Value::Null,
            channels: vec![domain::notify::ChannelKind::InApp],
            priority: Default::default(),
            recipients: vec![],
            topic: None,
            created_at_ms: 0,
            queued_at_ms: 0,
            idempotency_key: None,
            traceparent: None,
        };
        domain::notify::feed::append(&mut conn, &keys, &n.record(), &["u1"], 1)
            .await
            .expect("append");
        ids.push(n.notification_id);
    }
    let exp = chrono::Utc::now().timestamp() + 600;
    let token = domain::stream_token::mint(STREAM_SECRET.as_bytes(), "feed:u1", exp);
    let other = domain::stream_token::mint(STREAM_SECRET.as_bytes(), "feed:u2", exp);
    let mark = |token: String, body: Value| {
        let app = &app;
        async move {
            app.client
                .post(format!(
                    "{}/v1/users/u1/feed/read?token={token}",
                    app.address
                ))
                .json(&body)
                .send()
                .await
                .expect("sent")
        }
    };
    assert_eq!(
        mark(other, json!({"all": true})).await.status(),
        403,
        "another user's token"
    );
    let res = app
        .post_json("/v1/users/u1/feed/read", &json!({"all": true}))
        .await;
    assert_eq!(res.status(), 401, "no token");
    let res = mark(token.clone(), json!({"ids": [ids[1], ids[1]]})).await;
    assert_eq!(
        res.json::<Value>().await.expect("json"),
        json!({"marked": 1, "unread": 2})
    );
    let res = mark(token.clone(), json!({"up_to": ids[1]})).await;
    assert_eq!(
        res.json::<Value>().await.expect("json"),
        json!({"marked": 1, "unread": 1}),
        "only the first was still unread"
    );
    let res = mark(token.clone(), json!({"all": true})).await;
    assert_eq!(
        res.json::<Value>().await.expect("json"),
        json!({"marked": 1, "unread": 0})
    );
    let res = mark(token, json!({"ids": [], "all": true})).await;
    assert_eq!(res.status(), 400);
    let state = domain::notify::feed::state(&mut conn, &keys, "u1")
        .await
        .expect("state");
    assert_eq!((state.seq, state.unread), (3, 0));
    let queued = domain::queue::len(&mut conn, &keys.feed_queue(keys.feed("u1").shard))
        .await
        .expect("LLEN");
    assert_eq!(
        queued, 3,
        "each mark that changed something is queued for PostgreSQL"
    );
}
