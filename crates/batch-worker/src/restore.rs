//! Puts back into Redis what Redis lost (restarted empty, flushed): the site registry
//! ([`crate::sites::restore`]), the webhook endpoints and topic subscriptions
//! ([`crate::notify::restore`]) and the polls of every vote shard
//! ([`crate::votes::restore`]). Every worker checks periodically; the first to notice
//! restores, under a lock.

use domain::deadpool_postgres::Pool;
use domain::keys::Keys;
use domain::redis::RedisConn;
use domain::shutdown::{CancellationToken, every};
use std::time::Duration;

/// Every `interval`: restores whatever Redis lost.
pub async fn run(
    redis: RedisConn,
    pg: Pool,
    keys: Keys,
    worker_id: String,
    interval: Duration,
    stop: CancellationToken,
) {
    every(interval, stop, || {
        let (mut redis, pg, keys, worker_id) =
            (redis.clone(), pg.clone(), keys.clone(), worker_id.clone());
        async move {
            if let Err(e) =
                crate::sites::restore::restore_if_missing(&mut redis, &pg, &keys, &worker_id).await
            {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "restoring the site registry into Redis failed; will retry"
                );
            }
            if let Err(e) =
                crate::notify::restore::restore_if_missing(&mut redis, &pg, &keys, &worker_id).await
            {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "restoring webhook endpoints or topic subscriptions into Redis failed; will retry"
                );
            }
            match crate::votes::restore::restore_missing_shards(&mut redis, &pg, &keys, &worker_id)
                .await
            {
                Ok(0) => {}
                Ok(n) => metrics::counter!("batch_worker_polls_restored_total").increment(n as u64),
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "restoring polls into Redis failed; will retry"
                ),
            }
        }
    })
    .await;
}
