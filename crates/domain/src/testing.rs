//! Test support shared by every crate's integration tests (feature `testing`).
//!
//! Each test gets its own PostgreSQL database (created and migrated here, dropped when the
//! guard goes) and its own Redis key prefix (its keys deleted when the guard goes), so tests
//! run in parallel against the one real Redis and PostgreSQL of the machine. Where those
//! are is read from `REDIS_URL` and `DATABASE_URL` (the Makefile exports them).

#[cfg(feature = "postgres")]
use crate::config::PostgresConfig;
use crate::config::RedisConfig;

pub mod mmdb;
use std::future::Future;
use std::time::{Duration, Instant};

/// The Redis the tests use.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The PostgreSQL server the tests use (its database part is replaced per test).
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The events queue shards the tests run with (`EVENT_QUEUE_SHARDS`, 1 by default; the
/// cluster configuration of `make test` sets more).
pub fn event_queue_shards() -> u16 {
    std::env::var("EVENT_QUEUE_SHARDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// The Python that runs the tests' peers (an SMTP server, the Standard Webhooks reference
/// library): `TALLY_TEST_PYTHON`, which `make test` sets, else the venv it makes.
///
/// # Panics
/// When neither exists (run `make test`, which installs them).
pub fn test_python() -> std::path::PathBuf {
    let path = std::env::var("TALLY_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join(".tally/venv-test/bin/python"));
    assert!(
        path.exists(),
        "{} is missing: run `make test` (it installs aiosmtpd and standardwebhooks), or set TALLY_TEST_PYTHON",
        path.display()
    );
    path
}

/// The workspace's root folder.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| std::path::PathBuf::from("."))
}

/// A short random id.
pub fn random_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// A Redis config with a fresh key prefix; the keys under it are deleted on drop.
pub struct TestRedis {
    pub config: RedisConfig,
}

impl TestRedis {
    pub fn new() -> Self {
        Self {
            config: RedisConfig {
                redis_url: redis_url(),
                redis_key_prefix: format!("tally-test-{}", random_id()),
                redis_timeout_ms: 2_000,
                event_queue_shards: event_queue_shards(),
            },
        }
    }

    pub fn keys(&self) -> crate::keys::Keys {
        crate::redis::keys(&self.config)
    }

    /// A multiplexed connection for assertions (to the cluster when `REDIS_URL` names one).
    ///
    /// # Panics
    /// When Redis is unreachable (the test cannot run).
    pub async fn conn(&self) -> crate::redis::RedisConn {
        let mut conn = crate::redis::connection(&self.config).expect("REDIS_URL parses");
        crate::redis::ping(&mut conn, Duration::from_secs(5))
            .await
            .expect("Redis is reachable for tests (is it running? see make test)");
        conn
    }

    /// The payloads published on `channel` from now on, as the services publish them here
    /// (classic pub/sub on one server, sharded on a cluster).
    ///
    /// # Panics
    /// When Redis is unreachable.
    pub async fn watch(&self, channel: &str) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        let (sender, payloads) = tokio::sync::mpsc::unbounded_channel();
        if self.keys().sharded_channels() {
            let (pushes, mut received) = tokio::sync::mpsc::unbounded_channel();
            let mut conn = crate::redis::sharded_subscription(&self.config, pushes)
                .await
                .expect("a cluster subscription")
                .expect("a cluster URL");
            conn.ssubscribe(channel).await.expect("SSUBSCRIBE");
            tokio::spawn(async move {
                let _subscribed = conn;
                while let Some(push) = received.recv().await {
                    if push.kind == redis::PushKind::SMessage
                        && let Some(redis::Value::BulkString(payload)) = push.data.get(1)
                        && sender
                            .send(String::from_utf8_lossy(payload).into_owned())
                            .is_err()
                    {
                        return;
                    }
                }
            });
        } else {
            let client = crate::redis::node_clients(&self.config)
                .expect("REDIS_URL parses")
                .remove(0);
            let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
            pubsub.subscribe(channel).await.expect("SUBSCRIBE");
            tokio::spawn(async move {
                let mut messages = pubsub.into_on_message();
                while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
                    let payload = message.get_payload::<String>().unwrap_or_default();
                    if sender.send(payload).is_err() {
                        return;
                    }
                }
            });
        }
        payloads
    }

    /// Every shard of the events queue of this test's configuration.
    pub fn events_queues(&self) -> Vec<crate::keys::QueueKeys> {
        self.keys().events_queues(self.config.event_queue_shards)
    }

    /// The messages waiting in every shard of the events queue, oldest first (by when they
    /// were queued; a shard keeps its own order).
    ///
    /// # Panics
    /// When Redis is unreachable or a message is not JSON.
    pub async fn queued_events(&self) -> Vec<serde_json::Value> {
        let mut all: Vec<serde_json::Value> = Vec::new();
        for keys in self.events_queues() {
            all.extend(self.queued_in(&keys).await);
        }
        all.sort_by_key(|m| m["queued_at_ms"].as_i64().unwrap_or(0));
        all
    }

    /// The messages waiting in one queue (one shard), oldest first.
    ///
    /// # Panics
    /// When Redis is unreachable or a message is not JSON.
    pub async fn queued_in(&self, keys: &crate::keys::QueueKeys) -> Vec<serde_json::Value> {
        let mut conn = self.conn().await;
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(&keys.queue)
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

    /// Dead letters in every shard of the events queue.
    ///
    /// # Panics
    /// When Redis is unreachable.
    pub async fn dead_events(&self) -> u64 {
        let mut conn = self.conn().await;
        let mut total = 0;
        for keys in self.events_queues() {
            total += crate::queue::dead_len(&mut conn, &keys)
                .await
                .expect("LLEN");
        }
        total
    }
}

impl Default for TestRedis {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let url = self.config.redis_url.clone();
        let pattern = format!("{}:*", self.config.redis_key_prefix);
        let _ = std::thread::spawn(move || {
            let Ok(client) = redis::Client::open(url) else {
                return;
            };
            let Ok(mut conn) = client.get_connection() else {
                return;
            };
            let keys: Vec<String> = match redis::cmd("KEYS").arg(&pattern).query(&mut conn) {
                Ok(k) => k,
                Err(_) => return,
            };
            for chunk in keys.chunks(500) {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut conn);
            }
        })
        .join();
    }
}

/// A redis-server of the test's own (for FLUSHALL, exact subscription counts, stopping
/// Redis), killed on drop.
pub struct PrivateRedis {
    pub url: String,
    pub port: u16,
    _child: tokio::process::Child,
}

impl PrivateRedis {
    /// Starts `redis-server` on a free port, without persistence.
    ///
    /// # Panics
    /// When redis-server is not installed or does not come up.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        Self::start_on(port).await
    }

    /// Starts `redis-server` on `port` (again, after [`PrivateRedis::stop`]).
    ///
    /// # Panics
    /// As [`PrivateRedis::start`].
    pub async fn start_on(port: u16) -> Self {
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (make test installs it)");
        let url = format!("redis://127.0.0.1:{port}");
        eventually(
            Duration::from_secs(10),
            "private redis-server answers",
            || {
                let url = url.clone();
                async move {
                    let mut conn = redis::Client::open(url)
                        .ok()?
                        .get_multiplexed_async_connection()
                        .await
                        .ok()?;
                    redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .ok()
                        .map(|_| ())
                }
            },
        )
        .await;
        Self {
            url,
            port,
            _child: child,
        }
    }

    /// A Redis config pointing at this server.
    pub fn config(&self) -> RedisConfig {
        let mut config = TestRedis::new().config.clone();
        config.redis_url = self.url.clone();
        config
    }

    /// Kills the server (`kill -9`); start it again with [`PrivateRedis::start_on`].
    pub async fn stop(mut self) {
        let _ = self._child.kill().await;
    }
}

/// A freshly created and migrated database, dropped on drop.
#[cfg(feature = "postgres")]
pub struct TestDb {
    pub config: PostgresConfig,
    pub name: String,
    admin_url: String,
}

#[cfg(feature = "postgres")]
impl TestDb {
    /// Creates `tally_t_<run>_<random>` on the server of `DATABASE_URL` and migrates it.
    /// `<run>` is `TALLY_TEST_RUN` (set by `make test`), so a run's clean-up drops only its
    /// own databases and never those of a run beside it on the same server.
    ///
    /// # Panics
    /// When PostgreSQL is unreachable (the test cannot run).
    pub async fn new() -> Self {
        let admin_url = with_database(&database_url(), "postgres");
        let run = std::env::var("TALLY_TEST_RUN")
            .ok()
            .filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()))
            .unwrap_or_else(|| "adhoc".into());
        let name = format!("tally_t_{}_{}", run.to_ascii_lowercase(), random_id());
        let (client, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL is reachable for tests (is it running? see make test)");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("creating the test database");
        let config = PostgresConfig {
            database_url: with_database(&admin_url, &name),
            database_pool_size: 8,
            database_connect_timeout_ms: 3_000,
            ..PostgresConfig::default()
        };
        let pool = crate::postgres::pool(&config).expect("test pool");
        crate::postgres::migrate(&pool)
            .await
            .expect("migrating the test database");
        Self {
            config,
            name,
            admin_url,
        }
    }

    /// A pool on the test database.
    ///
    /// # Panics
    /// Never for a URL built here.
    pub fn pool(&self) -> deadpool_postgres::Pool {
        crate::postgres::pool(&self.config).expect("test pool")
    }
}

#[cfg(feature = "postgres")]
impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// `url` with its database name replaced by `db`.
///
/// # Panics
/// When `url` is not a PostgreSQL URL (a test set-up error).
#[cfg(feature = "postgres")]
pub fn with_database(url: &str, db: &str) -> String {
    <tokio_postgres::Config as std::str::FromStr>::from_str(url).expect("DATABASE_URL parses");
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// The `(METHOD, path)` operations of an OpenAPI document.
pub fn openapi_operations(
    document: &serde_json::Value,
) -> std::collections::BTreeSet<(String, String)> {
    let mut ops = std::collections::BTreeSet::new();
    if let Some(paths) = document["paths"].as_object() {
        for (path, item) in paths {
            for method in ["get", "post", "put", "patch", "delete", "head", "options"] {
                if item.get(method).is_some() {
                    ops.insert((method.to_ascii_uppercase(), path.clone()));
                }
            }
        }
    }
    ops
}

/// A slow client: connects to `address` (`http://host:port`), sends `head` (a request head
/// promising a body), then one space of the body every `every` until the server answers
/// or closes, for at most `bytes` bytes. Returns the answer's head (empty when none came).
///
/// # Panics
/// When the server cannot be reached or the head cannot be sent.
pub async fn trickle_body(address: &str, head: &str, bytes: usize, every: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = address.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    socket.write_all(head.as_bytes()).await.expect("head sent");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..bytes {
        tokio::select! {
            read = socket.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") { break; }
                }
            },
            () = tokio::time::sleep(every) => {
                if socket.write_all(b" ").await.is_err() { break; }
            }
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Every documented answer without a body schema (`METHOD path status`), 204 and 304
/// aside: a client (or a fuzzer's conformance check) cannot rely on a body left undescribed.
pub fn responses_without_schema(document: &serde_json::Value) -> Vec<String> {
    let mut missing = Vec::new();
    let Some(paths) = document["paths"].as_object() else {
        return vec!["no paths".into()];
    };
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(responses) = item[method]["responses"].as_object() else {
                continue;
            };
            for (status, response) in responses {
                if status == "204" || status == "304" {
                    continue;
                }
                let described = response["content"].as_object().is_some_and(|c| {
                    !c.is_empty() && c.values().all(|m| m.get("schema").is_some())
                });
                if !described {
                    missing.push(format!("{} {path} {status}", method.to_ascii_uppercase()));
                }
            }
        }
    }
    missing
}

/// Operations taking a body that do not document each of `statuses`.
pub fn bodies_missing_statuses(document: &serde_json::Value, statuses: &[&str]) -> Vec<String> {
    let mut missing = Vec::new();
    if let Some(paths) = document["paths"].as_object() {
        for (path, item) in paths {
            for method in ["post", "put", "patch"] {
                let op = &item[method];
                if op.get("requestBody").is_none() {
                    continue;
                }
                for status in statuses {
                    if op["responses"].get(*status).is_none() {
                        missing.push(format!("{} {path} {status}", method.to_ascii_uppercase()));
                    }
                }
            }
        }
    }
    missing
}

/// `(METHOD, path)` pairs from a compact list.
pub fn operations(list: &[(&str, &str)]) -> std::collections::BTreeSet<(String, String)> {
    list.iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect()
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
///
/// # Panics
/// When the condition does not hold in time.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced_keeping_options() {
        assert_eq!(
            with_database("postgres://u@h:5432/a?sslmode=disable", "b"),
            "postgres://u@h:5432/b?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "b"),
            "postgres://u@h:5432/b"
        );
    }
}
