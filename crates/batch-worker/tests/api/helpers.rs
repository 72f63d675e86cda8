use batch_worker::config::{Config, WorkerSettings};
use batch_worker::events::EventWork;
use batch_worker::lane::Lane;
use domain::config::ServiceConfig;
use domain::keys::Keys;
use domain::queue::WorkerQueue;
use domain::shutdown::CancellationToken;
use domain::testing::{TestDb, TestRedis};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub struct Harness {
    pub redis: TestRedis,
    pub db: TestDb,
    pub settings: WorkerSettings,
}

impl Harness {
    pub async fn new() -> Self {
        let settings = Config::from_vars(vec![
            ("BATCH_MAX_WAIT_MS".to_string(), "20".to_string()),
            ("HEARTBEAT_TTL_MS".to_string(), "1000".to_string()),
            ("RETRY_MAX_MS".to_string(), "200".to_string()),
        ])
        .expect("settings")
        .worker;
        Self {
            redis: TestRedis::new(),
            db: TestDb::new().await,
            settings,
        }
    }

    pub fn keys(&self) -> Keys {
        self.redis.keys()
    }

    pub fn worker(&self, id: &str) -> Lane<EventWork> {
        self.worker_with_pg(id, &self.db.config)
    }

    pub fn worker_with_pg(&self, id: &str, pg: &domain::config::PostgresConfig) -> Lane<EventWork> {
        let keys = self.keys();
        let redis = domain::redis::connection(&self.redis.config).expect("redis");
        let blocking = domain::redis::blocking_pool(&self.redis.config, 1, Duration::from_secs(2))
            .expect("redis");
        let queue = WorkerQueue::new(keys.events_queue(), id);
        Lane::new(
            vec![queue],
            Arc::new(EventWork {
                pg: domain::postgres::pool(pg).expect("pool"),
                keys,
                partitions: Default::default(),
                triggers: None,
                write_parts: batch_worker::events::store::WriteParts::new(
                    self.settings.event_write_parts,
                ),
            }),
            redis,
            blocking,
            self.settings.clone(),
        )
    }

    pub async fn push(&self, messages: &[serde_json::Value]) {
        let items: Vec<Vec<u8>> = messages
            .iter()
            .map(|m| m.to_string().into_bytes())
            .collect();
        let mut conn = self.redis.conn().await;
        domain::queue::push(&mut conn, &self.keys().events_queue(), &items)
            .await
            .expect("push");
    }

    pub async fn push_raw(&self, items: &[&str]) {
        let items: Vec<Vec<u8>> = items.iter().map(|s| s.as_bytes().to_vec()).collect();
        let mut conn = self.redis.conn().await;
        domain::queue::push(&mut conn, &self.keys().events_queue(), &items)
            .await
            .expect("push");
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let client = self.db.pool().get().await.expect("pg");
        client.query_one(sql, &[]).await.expect(sql).get(0)
    }

    pub async fn llen(&self, key: &str) -> u64 {
        let mut conn = self.redis.conn().await;
        domain::redis_client::cmd("LLEN")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("LLEN")
    }

    /// Runs `worker` until its queue is empty; returns the items it stored.
    pub async fn drain<W: batch_worker::lane::Work>(&self, worker: &mut Lane<W>) -> u64 {
        let shutdown = CancellationToken::new();
        let mut stored = 0;
        loop {
            let outcome = worker.run_one_batch(&shutdown).await.expect("batch");
            if outcome.claimed == 0 {
                return stored;
            }
            stored += outcome.stored;
        }
    }
}

/// A queued event message as ingest-api writes it.
pub fn message(
    id: &str,
    site: &str,
    path: Option<&str>,
    user: Option<&str>,
    ts: &str,
) -> serde_json::Value {
    let mut m = json!({
        "v": 1,
        "event_id": id,
        "site_id": site,
        "event_type": "page_view",
        "ts": ts,
        "received_at_ms": 1_763_114_400_000_i64,
    });
    if let Some(p) = path {
        m["path"] = json!(p);
    }
    if let Some(u) = user {
        m["user_id"] = json!(u);
    }
    m
}

pub fn uuid(n: u32) -> String {
    format!("0192e4a0-0000-7000-8000-{n:012}")
}

impl Harness {
    /// A lane draining the site registry's queue.
    pub fn site_worker(&self, id: &str) -> Lane<batch_worker::sites::SiteWork> {
        self.site_worker_with_pg(id, &self.db.config)
    }

    /// The same, on its own pool of `pg`.
    pub fn site_worker_with_pg(
        &self,
        id: &str,
        pg: &domain::config::PostgresConfig,
    ) -> Lane<batch_worker::sites::SiteWork> {
        let keys = self.keys();
        let redis = domain::redis::connection(&self.redis.config).expect("redis");
        let blocking = domain::redis::blocking_pool(&self.redis.config, 1, Duration::from_secs(2))
            .expect("redis");
        Lane::new(
            vec![WorkerQueue::new(keys.sites_queue(), id)],
            Arc::new(batch_worker::sites::SiteWork {
                pg: domain::postgres::pool(pg).expect("pool"),
                keys,
                rebuild_timeout: Duration::from_millis(self.settings.site_rebuild_timeout_ms),
            }),
            redis,
            blocking,
            self.settings.clone(),
        )
    }

    /// One text value of a query.
    pub async fn text(&self, sql: &str) -> Option<String> {
        let client = self.db.pool().get().await.expect("pg");
        client.query_one(sql, &[]).await.expect(sql).get(0)
    }
}

/// A trigger's in-app notification to topic `goal.converted`, as the worker makes one:
/// its id and idempotency key are `subject`'s.
pub fn trigger(subject: &str) -> domain::notify::Notification {
    domain::notify::Notification {
        notification_id: domain::notify::accept::trigger_id(subject),
        event_type: "goal.converted".into(),
        title: subject.into(),
        body: String::new(),
        html: None,
        data: serde_json::Value::Null,
        channels: vec![domain::notify::ChannelKind::InApp],
        priority: domain::notify::Priority::Normal,
        recipients: Vec::new(),
        topic: Some("goal.converted".into()),
        created_at_ms: 0,
        queued_at_ms: 0,
        idempotency_key: Some(subject.into()),
        traceparent: None,
    }
}
