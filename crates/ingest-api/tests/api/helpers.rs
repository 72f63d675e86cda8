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

    /// The messages in every shard of the events queue, oldest first.
    pub async fn queued_events(&self) -> Vec<serde_json::Value> {
        self.redis.queued_events().await
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

/// A desktop browser's User-Agent.
pub const CHROME_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// A tracker-shaped event of `site` on page `url`.
pub fn browser_event(site: &str, url: &str) -> serde_json::Value {
    serde_json::json!({
        "site_id": site,
        "event_type": "page_view",
        "timestamp": "2025-11-14T10:00:00Z",
        "url": url,
        "referrer": "https://www.google.com/search?q=tally",
        "screen_width": 1280
    })
}

impl TestApp {
    /// Posts `body` as the tracker does (`text/plain`), from client `ip` (through the
    /// trusted proxy of [`spawn_app_behind_proxy`]) with User-Agent `ua`.
    pub async fn post_from(
        &self,
        body: &serde_json::Value,
        ip: &str,
        ua: &str,
    ) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/events", self.address))
            .header("content-type", "text/plain;charset=UTF-8")
            .header("x-forwarded-for", ip)
            .header("user-agent", ua)
            .body(body.to_string())
            .send()
            .await
            .expect("request sent")
    }

    /// What the worker does once the site registry is in Redis.
    pub async fn mark_sites_restored(&self) {
        let mut conn = self.redis.conn().await;
        domain::site_registry::marker::set_restored(&mut conn, &self.redis.keys())
            .await
            .expect("registry marker");
    }

    /// The site registry's changes queued for PostgreSQL, oldest first.
    pub async fn queued_site_changes(&self) -> Vec<domain::site_registry::SiteChange> {
        let mut conn = self.redis.conn().await;
        let queued: Vec<String> = domain::redis_client::cmd("LRANGE")
            .arg(self.redis.keys().sites_queue().queue)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .expect("LRANGE");
        queued
            .iter()
            .rev()
            .map(|m| domain::site_registry::parse_change(m.as_bytes()).expect("a change"))
            .collect()
    }

    /// Registers a site as the admin; returns the answer.
    pub async fn register_site(&self, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/sites", self.address))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("sent")
    }

    /// A metric's value in `/metrics` (the line starting with `series`), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.expect("metrics");
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

/// ingest-api behind a proxy on loopback (so `X-Forwarded-For` names the client), with
/// visitor salts re-read every 50 ms and the registry every 50 ms.
pub async fn spawn_app_behind_proxy(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with(|c| {
        c.http.trusted_proxies = "127.0.0.1/32,::1/128".into();
        c.ingest.salt_refresh_ms = 50;
        c.ingest.sites_refresh_ms = 50;
        tweak(c);
    })
    .await
}

pub const VOTER_SECRET: &str = "test-voter-secret";
pub const STREAM_SECRET: &str = "test-stream-secret";

impl TestApp {
    /// Creates a poll from a full body as the admin; returns its id.
    pub async fn create_poll_with(&self, body: serde_json::Value) -> String {
        let res = self
            .client
            .post(format!("{}/v1/polls", self.address))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 201, "{:?}", res.text().await);
        let body: serde_json::Value = res.json().await.expect("json");
        body["poll_id"].as_str().expect("poll_id").to_string()
    }

    /// Posts a vote body; returns the status and the JSON answer.
    pub async fn vote_with(
        &self,
        poll_id: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let res = self
            .post_json(&format!("/v1/polls/{poll_id}/votes"), &body)
            .await;
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or_default())
    }
}

/// ingest-api with voter and stream token secrets.
pub async fn spawn_app_with_secrets() -> TestApp {
    spawn_app_with(|c| {
        c.ingest.voter_token_secret = domain::config::Secret::new(VOTER_SECRET);
        c.ingest.stream_token_secret = domain::config::Secret::new(STREAM_SECRET);
        c.ingest.vote_rate_limit_per_ip_per_s = 0;
    })
    .await
}

impl TestApp {
    /// Closes a poll as the admin.
    pub async fn close(&self, poll_id: &str) {
        let res = self
            .client
            .post(format!("{}/v1/polls/{poll_id}/close", self.address))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 200);
    }
}
