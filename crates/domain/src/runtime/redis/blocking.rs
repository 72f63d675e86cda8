//! Dedicated connections for blocking commands (`BLMOVE`), on one server or a cluster.

use super::{Target, cluster_client};
use crate::config::RedisConfig;
use anyhow::Context;
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

/// Makes cluster connections whose response timeout outlasts the longest block (the
/// cluster manager of deadpool-redis cannot set one).
pub struct ClusterManager {
    client: redis::cluster::ClusterClient,
    config: redis::cluster::ClusterConfig,
}

impl deadpool::managed::Manager for ClusterManager {
    type Type = ClusterConnection;
    type Error = redis::RedisError;

    async fn create(&self) -> Result<ClusterConnection, redis::RedisError> {
        self.client
            .get_async_connection_with_config(self.config.clone())
            .await
    }

    async fn recycle(
        &self,
        conn: &mut ClusterConnection,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<redis::RedisError> {
        let _: String = redis::cmd("PING").query_async(conn).await?;
        Ok(())
    }
}

/// A pool of dedicated connections for blocking commands.
#[derive(Clone)]
pub enum BlockingPool {
    Node(deadpool_redis::Pool),
    Cluster(deadpool::managed::Pool<ClusterManager>),
}

/// A connection taken from a [`BlockingPool`]; it goes back when dropped.
pub enum BlockingConn {
    Node(deadpool_redis::Connection),
    Cluster(deadpool::managed::Object<ClusterManager>),
}

impl BlockingPool {
    /// A connection of its own for the caller.
    ///
    /// # Errors
    /// When none can be had within the pool's timeouts.
    pub async fn get(&self) -> anyhow::Result<BlockingConn> {
        match self {
            Self::Node(pool) => {
                Ok(BlockingConn::Node(pool.get().await.map_err(|e| {
                    anyhow::anyhow!("no Redis connection for BLMOVE: {e}")
                })?))
            }
            Self::Cluster(pool) => {
                Ok(BlockingConn::Cluster(pool.get().await.map_err(|e| {
                    anyhow::anyhow!("no Redis Cluster connection for BLMOVE: {e:?}")
                })?))
            }
        }
    }
}

impl ConnectionLike for BlockingConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Node(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A pool of dedicated connections for blocking commands: `size` connections at most,
/// each command bounded by `REDIS_TIMEOUT_MS` plus `blocking_for` (the longest block).
///
/// # Errors
/// When `REDIS_URL` does not parse.
pub fn blocking_pool(
    cfg: &RedisConfig,
    size: usize,
    blocking_for: Duration,
) -> anyhow::Result<BlockingPool> {
    let timeout = Duration::from_millis(cfg.redis_timeout_ms);
    let wait = Some(timeout + blocking_for);
    match super::target(cfg)? {
        Target::Node(info) => {
            let connection = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout + blocking_for));
            let manager = deadpool_redis::Manager::new_with_config(info, connection)
                .context("creating the Redis pool's connection manager")?;
            let pool = deadpool_redis::Pool::builder(manager)
                .max_size(size.max(1))
                .runtime(deadpool_redis::Runtime::Tokio1)
                .wait_timeout(wait)
                .create_timeout(Some(timeout))
                .recycle_timeout(Some(timeout))
                .build()
                .context("building the Redis pool of blocking connections")?;
            Ok(BlockingPool::Node(pool))
        }
        Target::Cluster(nodes) => {
            let manager = ClusterManager {
                client: cluster_client(nodes, timeout)?,
                config: redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout + blocking_for),
            };
            let pool = deadpool::managed::Pool::builder(manager)
                .max_size(size.max(1))
                .runtime(deadpool::Runtime::Tokio1)
                .wait_timeout(wait)
                .create_timeout(Some(timeout))
                .recycle_timeout(Some(timeout))
                .build()
                .context("building the Redis Cluster pool of blocking connections")?;
            Ok(BlockingPool::Cluster(pool))
        }
    }
}
