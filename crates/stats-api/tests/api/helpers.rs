use domain::config::{HttpConfig, Secret};
use domain::shutdown::CancellationToken;
use domain::testing::{TestDb, TestRedis};
use stats_api::config::{Config, StatsSettings};
use stats_api::startup::Application;

pub struct TestApp {
    pub address: String,
    pub redis: TestRedis,
    pub db: TestDb,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let redis = TestRedis::new();
    let db = TestDb::new().await;
    let mut config = Config {
        http: HttpConfig::bound_to("127.0.0.1:0"),
        redis: redis.config.clone(),
        postgres: db.config.clone(),
        stats: StatsSettings {
            stats_token: Secret::default(),
            exact_distinct_max_rows: 20_000,
            filter_max_events: 200_000,
            ..StatsSettings::default()
        },
    };
    config.http.http_workers = 2;
    tweak(&mut config);
    let shutdown = CancellationToken::new();
    let app = Application::build(config, shutdown.clone())
        .await
        .expect("builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        redis,
        db,
        client: reqwest::Client::new(),
        shutdown,
    }
}

impl TestApp {
    pub async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path_and_query}", self.address))
            .send()
            .await
            .expect("sent")
    }

    pub async fn get_json(&self, path_and_query: &str) -> (u16, serde_json::Value) {
        let res = self.get(path_and_query).await;
        let status = res.status().as_u16();
        (status, res.json().await.expect("JSON body"))
    }

    pub async fn sql(&self, sql: &str) {
        let client = self.db.pool().get().await.expect("pg");
        client.batch_execute(sql).await.expect(sql);
    }

    /// What the worker does after a commit touching `site`.
    pub async fn bump(&self, site: &str) {
        let mut conn = self.redis.conn().await;
        let _: u64 = domain::redis_client::cmd("INCR")
            .arg(self.redis.keys().site_generation(site))
            .query_async(&mut conn)
            .await
            .expect("INCR");
    }

    /// Rollup rows for the seed design's three events on 2025-11-14 (users u-123, u-456).
    pub async fn seed_flow(&self, site: &str) {
        self.sql(&format!(
            "INSERT INTO rollup_hourly VALUES ('{site}', 'page_view', '2025-11-14T10:00:00Z', 3);
             INSERT INTO rollup_minutely VALUES ('{site}', 'page_view', '2025-11-14T10:00:00Z', 1),
                 ('{site}', 'page_view', '2025-11-14T10:05:00Z', 1), ('{site}', 'page_view', '2025-11-14T10:10:00Z', 1);
             INSERT INTO rollup_hourly_paths (site_id, event_type, bucket, path_key, path, views) VALUES
                 ('{site}', 'page_view', '2025-11-14T10:00:00Z', md5('/')::uuid, '/', 1),
                 ('{site}', 'page_view', '2025-11-14T10:00:00Z', md5('/pricing')::uuid, '/pricing', 2);
             INSERT INTO daily_visitors VALUES ('{site}', 'page_view', '2025-11-14', 'user-123', 1024),
                 ('{site}', 'page_view', '2025-11-14', 'user-456', 1024);"
        ))
        .await;
    }

    /// Visitors `users` of `site` on `day` (page views), with the hourly rollup row that
    /// says the day had events.
    pub async fn visitors_on(&self, site: &str, day: &str, users: std::ops::Range<u32>) {
        self.sql(&format!(
            "INSERT INTO rollup_hourly VALUES ('{site}', 'page_view', '{day}T10:00:00Z', {n});
             INSERT INTO daily_visitors SELECT '{site}', 'page_view', '{day}', 'user-' || u, 1024
                 FROM generate_series({a}, {b}) AS u;",
            n = users.len(),
            a = users.start,
            b = users.end - 1,
        ))
        .await;
    }
}
