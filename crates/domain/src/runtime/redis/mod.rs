//! Redis connections, to one server (`redis://`, `rediss://`) or to a Redis Cluster
//! (`redis+cluster://host:port,host:port`, `rediss+cluster://...`), behind one type,
//! [`RedisConn`], so no service knows which it runs against.
//!
//! On one server a [`RedisConn`] is a multiplexed `ConnectionManager`, which pipelines
//! concurrent commands on one socket and reconnects by itself. On a cluster it is the
//! redis crate's cluster connection: one multiplexed socket per node, commands routed by
//! slot, `MOVED`/`ASK` followed, the slot map refreshed after a failover. Pipelines whose
//! commands span several slots are split there (see [`conn`]).
//!
//! ingest-api keeps one per HTTP worker thread (created on that thread, so its I/O driver
//! runs beside the handlers). A pool of plain connections (deadpool-redis) was measured
//! slower on the request path (one request per connection at a time) and is not used
//! there. It is the right tool for blocking commands (`BLMOVE`), which stall whatever
//! shares their socket: [`blocking_pool`] (feature `redis-pool`) hands each lane a
//! connection of its own for the length of one blocking call, and replaces a connection
//! that broke.

#[cfg(feature = "redis-pool")]
mod blocking;
pub mod conn;

#[cfg(feature = "redis-pool")]
pub use blocking::{BlockingConn, BlockingPool, blocking_pool};
pub use conn::RedisConn;

use crate::config::RedisConfig;
use anyhow::Context;
use redis::aio::ConnectionManagerConfig;
use redis::io::tcp::TcpSettings;
use redis::{ConnectionInfo, IntoConnectionInfo};
use std::time::Duration;

/// Where `REDIS_URL` points.
#[derive(Clone, Debug)]
pub enum Target {
    /// One server (or a proxy in front of several).
    Node(ConnectionInfo),
    /// A Redis Cluster, reached through any of these seed nodes.
    Cluster(Vec<ConnectionInfo>),
}

/// Whether `url` names a Redis Cluster.
pub fn is_cluster_url(url: &str) -> bool {
    url.starts_with("redis+cluster://") || url.starts_with("rediss+cluster://")
}

/// The seed node URLs of a `redis+cluster://[user:pass@]h1:p1,h2:p2[/...]` URL, each as a
/// plain `redis://` (or `rediss://`) URL with the same credentials.
fn cluster_node_urls(url: &str) -> Option<Vec<String>> {
    let (scheme, rest) = url.split_once("+cluster://")?;
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((user, hosts)) => (format!("{user}@"), hosts),
        None => (String::new(), authority),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}://{userinfo}{h}{tail}"))
        .collect();
    (!nodes.is_empty()).then_some(nodes)
}

/// TCP settings of every Redis socket: `TCP_NODELAY` (a command is a few bytes, and Nagle
/// would hold it back waiting for the previous answer's ACK), TCP keepalive, so a peer
/// that vanished without a FIN (a crashed host, a dropped NAT entry) is found within 30 s
/// on an idle connection, and `TCP_USER_TIMEOUT`, so a command whose bytes are never
/// acknowledged ends its socket within 20 s (the connection then reconnects; a response
/// timeout alone does not make it).
fn tcp_settings() -> TcpSettings {
    use redis::io::tcp::socket2::TcpKeepalive;
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(15))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive)
        .set_user_timeout(Duration::from_secs(20))
}

/// Parses `REDIS_URL`.
///
/// # Errors
/// When it does not parse, naming the variable (and never printing a password).
pub fn target(cfg: &RedisConfig) -> anyhow::Result<Target> {
    let invalid = || {
        format!(
            "REDIS_URL is not a valid Redis URL: {}",
            crate::config::redact_url(&cfg.redis_url)
        )
    };
    let parse = |url: &str| -> anyhow::Result<ConnectionInfo> {
        Ok(url
            .into_connection_info()
            .with_context(invalid)?
            .set_tcp_settings(tcp_settings()))
    };
    if is_cluster_url(&cfg.redis_url) {
        let nodes = cluster_node_urls(&cfg.redis_url)
            .with_context(invalid)?
            .iter()
            .map(|u| parse(u))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Target::Cluster(nodes))
    } else {
        Ok(Target::Node(parse(&cfg.redis_url)?))
    }
}

/// The keys of `cfg`'s prefix, with live updates on sharded channels on a Redis Cluster
/// (see [`crate::channel`]): every service builds its keys here, so publishers and the
/// gateway agree.
pub fn keys(cfg: &RedisConfig) -> crate::keys::Keys {
    crate::keys::Keys::new(cfg.redis_key_prefix.clone())
        .with_sharded_channels(is_cluster_url(&cfg.redis_url))
}

/// A client for every node named in `REDIS_URL` (one for a single server). A classic
/// pub/sub message published on any node of a cluster reaches subscribers on every node,
/// so a subscriber may use any of them, and moves to the next when one is down.
///
/// # Errors
/// When `REDIS_URL` does not parse.
pub fn node_clients(cfg: &RedisConfig) -> anyhow::Result<Vec<redis::Client>> {
    let infos = match target(cfg)? {
        Target::Node(info) => vec![info],
        Target::Cluster(nodes) => nodes,
    };
    infos
        .into_iter()
        .map(|i| redis::Client::open(i).context("opening a Redis client"))
        .collect()
}

/// Opens the shared multiplexed connection. It connects lazily and reconnects by itself,
/// so a Redis that is down at start-up does not stop the service (readiness reports it).
///
/// # Errors
/// When `REDIS_URL` does not parse.
pub fn connection(cfg: &RedisConfig) -> anyhow::Result<RedisConn> {
    let timeout = Duration::from_millis(cfg.redis_timeout_ms);
    match target(cfg)? {
        Target::Node(info) => {
            let manager_cfg = ConnectionManagerConfig::new()
                .set_response_timeout(Some(timeout))
                .set_connection_timeout(Some(timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            let manager = redis::Client::open(info)
                .context("opening the Redis client")?
                .get_connection_manager_lazy(manager_cfg)
                .context("creating the Redis connection manager")?;
            Ok(RedisConn::Node(manager))
        }
        Target::Cluster(nodes) => {
            let client = cluster_client(nodes, timeout)?;
            let config = redis::cluster::ClusterConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            Ok(RedisConn::Cluster(
                client.get_pending_async_connection_with_config(config),
            ))
        }
    }
}

/// A cluster client over `nodes`: retries (a `MOVED`, a failover in progress) are bounded
/// so a write fails within about `REDIS_TIMEOUT_MS` and the client gets a quick 503 rather
/// than a request that hangs while the cluster elects a new master.
fn cluster_client(
    nodes: Vec<ConnectionInfo>,
    timeout: Duration,
) -> anyhow::Result<redis::cluster::ClusterClient> {
    cluster_client_builder(nodes, timeout)
        .build()
        .context("creating the Redis Cluster client")
}

fn cluster_client_builder(
    nodes: Vec<ConnectionInfo>,
    timeout: Duration,
) -> redis::cluster::ClusterClientBuilder {
    redis::cluster::ClusterClientBuilder::new(nodes)
        .tcp_settings(tcp_settings())
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(3)
        .min_retry_wait(50)
        .max_retry_wait(500)
}

/// A connection to the cluster `REDIS_URL` names for sharded subscriptions
/// (`SSUBSCRIBE`): RESP3, every push of every node (messages, subscription changes,
/// disconnections) sent to `pushes`. The connection re-subscribes a node's channels when it
/// reconnects to it; `None` when `REDIS_URL` names one server.
///
/// # Errors
/// When `REDIS_URL` does not parse, or no node answers within `REDIS_TIMEOUT_MS`.
pub async fn sharded_subscription(
    cfg: &RedisConfig,
    pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
) -> anyhow::Result<Option<redis::cluster_async::ClusterConnection>> {
    let Target::Cluster(nodes) = target(cfg)? else {
        return Ok(None);
    };
    let timeout = Duration::from_millis(cfg.redis_timeout_ms);
    let client = cluster_client_builder(nodes, timeout)
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(pushes)
        .build()
        .context("creating the Redis Cluster client for subscriptions")?;
    let conn = tokio::time::timeout(timeout, client.get_async_connection())
        .await
        .context("no Redis Cluster node answered within REDIS_TIMEOUT_MS")?
        .context("connecting to the Redis Cluster")?;
    Ok(Some(conn))
}

/// Checks that Redis answers within `timeout` (on a cluster: the node it is routed to).
///
/// # Errors
/// With the reason when it does not.
pub async fn ping(conn: &mut RedisConn, timeout: Duration) -> anyhow::Result<()> {
    let pong: String = tokio::time::timeout(timeout, redis::cmd("PING").query_async(conn))
        .await
        .context("Redis did not answer PING in time")?
        .context("Redis PING failed")?;
    anyhow::ensure!(pong == "PONG", "Redis answered PING with {pong:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_every_seed_node_with_its_credentials() {
        assert_eq!(
            cluster_node_urls("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001/0").expect("parses"),
            vec!["redis://u:p@10.0.0.1:7000/0", "redis://u:p@10.0.0.2:7001/0"]
        );
        assert_eq!(
            cluster_node_urls("rediss+cluster://a:1, b:2").expect("parses"),
            vec!["rediss://a:1", "rediss://b:2"]
        );
        assert!(cluster_node_urls("redis+cluster://").is_none());
        assert!(!is_cluster_url("redis://127.0.0.1:6379"));
    }

    #[test]
    fn a_bad_cluster_url_is_refused_naming_the_variable() {
        let cfg = RedisConfig {
            redis_url: "redis+cluster://".into(),
            ..RedisConfig::default()
        };
        let e = target(&cfg).expect_err("refused");
        assert!(format!("{e:#}").contains("REDIS_URL"), "{e:#}");
        let cfg = RedisConfig {
            redis_url: "redis+cluster://127.0.0.1:7000,127.0.0.1:7001".into(),
            ..RedisConfig::default()
        };
        assert!(matches!(target(&cfg).expect("parses"), Target::Cluster(n) if n.len() == 2));
    }
}
