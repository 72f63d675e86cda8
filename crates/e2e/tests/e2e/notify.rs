//! What the notification tests share: a stack of the four services set up for
//! notifications, and the API calls they make.

use crate::helpers::{ADMIN_TOKEN, Service, Stack};
use serde_json::{Value, json};
use std::time::Duration;

pub const STREAM_SECRET: &str = "e2e-stream-secret";

/// The worker's settings for notification tests: quick retries, quick reaping,
/// deliveries to loopback allowed (the receivers are local).
pub const WORKER: &[(&str, &str)] = &[
    ("WEBHOOK_ALLOW_INTERNAL", "true"),
    ("DELIVERY_RETRY_SCHEDULE", "50ms,100ms,150ms"),
    ("HEARTBEAT_TTL_MS", "1000"),
    ("REAP_INTERVAL_MS", "250"),
    ("BATCH_MAX_WAIT_MS", "20"),
];

pub struct Notify {
    pub client: reqwest::Client,
    pub ingest: String,
    pub stats: String,
}

impl Notify {
    /// ingest-api and stats-api of `stack` (the caller starts the worker it wants).
    pub async fn start(stack: &Stack, ingest_extra: &[(&str, &str)]) -> (Self, Service, Service) {
        let mut env = vec![
            ("WEBHOOK_ALLOW_INTERNAL", "true"),
            ("STREAM_TOKEN_SECRET", STREAM_SECRET),
            ("RATE_LIMIT_PER_IP_PER_S", "0"),
        ];
        env.extend_from_slice(ingest_extra);
        let ingest = stack.start("ingest-api", &env).await;
        let stats = stack.start("stats-api", &[]).await;
        (
            Self {
                client: reqwest::Client::new(),
                ingest: ingest.url(),
                stats: stats.url(),
            },
            ingest,
            stats,
        )
    }

    /// Registers an endpoint (waiting for the worker to have marked the registry
    /// complete); returns its id and secret.
    pub async fn endpoint(&self, url: &str, event_types: &[&str]) -> (String, String) {
        let body = json!({"url": url, "event_types": event_types});
        let created: Value = domain::testing::eventually(
            Duration::from_secs(20),
            "the endpoint is registered",
            || {
                let body = body.clone();
                async move {
                    let res = self
                        .client
                        .post(format!("{}/v1/webhooks/endpoints", self.ingest))
                        .bearer_auth(ADMIN_TOKEN)
                        .json(&body)
                        .send()
                        .await
                        .ok()?;
                    match res.status().as_u16() {
                        201 => res.json().await.ok(),
                        503 => None,
                        other => {
                            panic!("endpoint creation answered {other}: {:?}", res.text().await)
                        }
                    }
                }
            },
        )
        .await;
        (
            created["endpoint_id"].as_str().expect("id").to_string(),
            created["secret"].as_str().expect("secret").to_string(),
        )
    }

    /// Sends a notification; returns its id.
    pub async fn send(&self, body: &Value) -> String {
        let res = self
            .client
            .post(format!("{}/v1/notifications", self.ingest))
            .bearer_auth(ADMIN_TOKEN)
            .json(body)
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 202, "{:?}", res.text().await);
        res.json::<Value>().await.expect("json")["notification_id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    /// A notification's status.
    pub async fn status(&self, id: &str) -> Value {
        self.client
            .get(format!("{}/v1/notifications/{id}", self.stats))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json")
    }

    /// Waits (up to `limit`, a failure bound) until the notification's state is `state`.
    pub async fn wait_state(&self, id: &str, state: &str, limit: Duration) -> Value {
        domain::testing::eventually(limit, &format!("notification {id} is {state}"), || async {
            let s = self.status(id).await;
            (s["state"] == state).then_some(s)
        })
        .await
    }

    /// An admin call to stats-api.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.stats))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("sent");
        assert_eq!(res.status(), 200, "{path}");
        res.json().await.expect("json")
    }
}

/// A webhook notification of `event_type`.
pub fn webhook_notification(event_type: &str) -> Value {
    json!({
        "topic": "nobody",
        "title": "Deployed",
        "body": "v2 is live",
        "event_type": event_type,
        "channels": ["webhook"],
    })
}

/// What is left of notifications in Redis: fan-outs queued, and deliveries queued,
/// scheduled or in some worker's hands.
pub async fn leftovers(stack: &Stack) -> u64 {
    let keys = stack.redis.keys();
    let mut conn = stack.redis.conn().await;
    let mut total = 0;
    for q in keys.notify_queues() {
        total += domain::queue::len(&mut conn, &q).await.expect("LLEN");
    }
    for channel in domain::notify::ChannelKind::DELIVERED {
        let k = keys.delivery(channel.as_str());
        let (queued, scheduled) = domain::notify::delivery_queue::depth(&mut conn, &k)
            .await
            .expect("depth");
        total += queued + scheduled;
        for (worker, _) in domain::notify::delivery_queue::workers(&mut conn, &k)
            .await
            .expect("workers")
        {
            total += domain::notify::delivery_queue::in_flight_of(&mut conn, &k, &worker)
                .await
                .expect("in flight")
                .len() as u64;
        }
    }
    total
}
