//! Redis connections: multiplexed [`ConnectionManager`]s, which pipeline concurrent
//! commands on one socket and reconnect by themselves.
//!
//! ingest-api keeps one per HTTP worker thread (created on that thread, so its I/O driver
//! runs beside the handlers). A pool of plain connections (deadpool-redis) was measured
//! slower on the request path (one request per connection at a time) and is not used
//! there. It is the right tool for blocking commands (`BLMOVE`), which stall whatever
//! shares their socket: [`blocking_pool`] (feature `redis-pool`) hands each lane a
//! connection of its own for the length of one blocking call, and replaces a connection
//! that broke.

use crate::config::RedisConfig;
use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// A client for `REDIS_URL` whose sockets have `TCP_NODELAY` (a command is a few bytes,
/// and Nagle would hold it back waiting for the previous answer's ACK), TCP keepalive, so
/// a peer that vanished without a FIN (a crashed host, a dropped NAT entry) is found within
/// 30 s on an idle connection, and `TCP_USER_TIMEOUT`, so a command whose bytes are never
/// acknowledged ends its socket within 20 s (the connection manager then reconnects; a
/// response timeout alone does not make it).
///
/// # Errors
/// When `REDIS_URL` does not parse.
pub fn client(cfg: &RedisConfig) -> anyhow::Result<redis::Client> {
    use redis::IntoConnectionInfo;
    use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};
    let invalid = || {
        format!(
            "REDIS_URL is not a valid Redis URL: {}",
            crate::config::redact_url(&cfg.redis_url)
        )
    };
    let info = cfg
        .redis_url
        .as_str()
        .into_connection_info()
        .with_context(invalid)?;
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(15))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    let tcp = TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive)
        .set_user_timeout(Duration::from_secs(20));
    redis::Client::open(info.set_tcp_settings(tcp)).with_context(invalid)
}

/// Opens the shared multiplexed connection. It connects lazily and reconnects by itself,
/// so a Redis that is down at start-up does not stop the service (readiness reports it).
///
/// # Errors
/// When `REDIS_URL` does not parse.
pub fn connection_manager(cfg: &RedisConfig) -> anyhow::Result<ConnectionManager> {
    let client = client(cfg)?;
    let timeout = Duration::from_millis(cfg.redis_timeout_ms);
    let manager_cfg = ConnectionManagerConfig::new()
        .set_response_timeout(Some(timeout))
        .set_connection_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    client
        .get_connection_manager_lazy(manager_cfg)
        .context("creating the Redis connection manager")
}

/// Checks that Redis answers within `timeout`.
///
/// # Errors
/// With the reason when it does not.
pub async fn ping(conn: &mut ConnectionManager, timeout: Duration) -> anyhow::Result<()> {
    let pong: String = tokio::time::timeout(timeout, redis::cmd("PING").query_async(conn))
        .await
        .context("Redis did not answer PING in time")?
        .context("Redis PING failed")?;
    anyhow::ensure!(pong == "PONG", "Redis answered PING with {pong:?}");
    Ok(())
}

/// A pool of dedicated connections for blocking commands: `size` connections at most,
/// each command bounded by `REDIS_TIMEOUT_MS` plus `blocking_for` (the longest block).
///
/// # Errors
/// When `REDIS_URL` does not parse.
#[cfg(feature = "redis-pool")]
pub fn blocking_pool(
    cfg: &RedisConfig,
    size: usize,
    blocking_for: Duration,
) -> anyhow::Result<deadpool_redis::Pool> {
    let timeout = Duration::from_millis(cfg.redis_timeout_ms);
    let connection = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout + blocking_for));
    let info = client(cfg)?.get_connection_info().clone();
    let manager = deadpool_redis::Manager::new_with_config(info, connection)
        .context("creating the Redis pool's connection manager")?;
    deadpool_redis::Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(deadpool_redis::Runtime::Tokio1)
        .wait_timeout(Some(timeout + blocking_for))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .context("building the Redis pool of blocking connections")
}
