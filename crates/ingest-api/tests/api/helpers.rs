use domain::config::HttpConfig;
use domain::shutdown::CancellationToken;
use domain::testing::TestRedis;
use ingest_api::config::{Config, IngestSettings};
use ingest_api::startup::Application;

pub struct TestApp {
    pub address: String,
    pub redis: TestRedis,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn default_settings() -> IngestSettings {
    domain::config::from_iter(Vec::<(String, String)>::new()).expect("defaults")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts ingest-api on a free port with its own Redis key prefix; `tweak` adjusts the config.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let redis = TestRedis::new();
    let mut config = Config {
        http: HttpConfig::bound_to("127.0.0.1:0"),
        redis: redis.config.clone(),
        ingest: default_settings(),
    };
    config.http.http_workers = 2;
    config.ingest.admin_token = domain::config::Secret::new(ADMIN_TOKEN);
    tweak(&mut config);
    let shutdown = CancellationToken::new();
    let app = Application::build(config, shutdown.clone())
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        redis,
        client: reqwest::Client::new(),
        shutdown,
    }
}

impl TestApp {
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent")
    }

    /// The messages in the events queue, oldest first.
    pub async fn queued_events(&self) -> Vec<serde_json::Value> {
        let mut conn = self.redis.conn().await;
        let raw: Vec<String> = domain::redis_client::cmd("LRANGE")
            .arg(self.redis.keys().events_queue().queue)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .expect("LRANGE");
        raw.iter()
            .rev()
            .map(|s| serde_json::from_str(s).expect("queued messages are JSON"))
            .collect()
    }
}

pub const ADMIN_TOKEN: &str = "test-admin-token";

impl TestApp {
    /// What the worker does once Redis holds every shard's polls.
    pub async fn mark_restored(&self) {
        let mut conn = self.redis.conn().await;
        domain::poll::shard_marker::set_all_restored(&mut conn, &self.redis.keys())
            .await
            .expect("shard markers");
    }

    /// Creates a poll as the admin; returns its id and option ids.
    pub async fn create_poll(&self, options: &[&str]) -> (String, Vec<String>) {
        let res = self
            .client
            .post(format!("{}/v1/polls", self.address))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({"question": "Which?", "options": options}))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 201);
        let body: serde_json::Value = res.json().await.expect("json");
        let ids = body["options"]
            .as_array()
            .expect("options")
            .iter()
            .map(|o| o["id"].as_str().unwrap_or_default().to_string())
            .collect();
        (body["poll_id"].as_str().expect("poll_id").to_string(), ids)
    }

    pub async fn vote(&self, poll_id: &str, option: &str, user: &str) -> reqwest::Response {
        self.post_json(
            &format!("/v1/polls/{poll_id}/votes"),
            &serde_json::json!({"option_id": option, "user_id": user}),
        )
        .await
    }

    /// The poll's tally in Redis.
    pub async fn tally(&self, poll_id: &str) -> std::collections::HashMap<String, i64> {
        let mut conn = self.redis.conn().await;
        domain::redis_client::cmd("HGETALL")
            .arg(self.redis.keys().poll(poll_id).tally)
            .query_async(&mut conn)
            .await
            .expect("HGETALL")
    }
}

pub fn event(site: &str, path: &str, user: &str) -> serde_json::Value {
    serde_json::json!({
        "site_id": site,
        "event_type": "page_view",
        "path": path,
        "user_id": user,
        "timestamp": "2025-11-14T10:00:00Z"
    })
}
