//! Puts back into Redis what Redis lost (restarted empty, flushed): the site registry
//! ([`crate::sites::restore`]), the webhook endpoints and topic subscriptions
//! ([`crate::notify::restore`]) and the polls of every vote shard
//! ([`crate::votes::restore`]). Every worker checks periodically; the first to notice
//! restores, under a lock. A worker is not ready until a check has finished without a
//! failure and found every registry in Redis (restored by it or by another worker): until
//! then a write may find Redis without what it needs and answer 503 "restoring" (`make
//! up`, which waits for every service to be ready, had handed out a stack whose first
//! write got that answer).

use domain::deadpool_postgres::Pool;
use domain::keys::Keys;
use domain::redis::RedisConn;
use domain::shutdown::{CancellationToken, every};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Every `interval`: restores whatever Redis lost. Sets `checked` once a check has
/// finished without a failure and found every registry in place.
pub async fn run(
    redis: RedisConn,
    pg: Pool,
    keys: Keys,
    worker_id: String,
    interval: Duration,
    checked: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    every(interval, stop, || {
        let (mut redis, pg, keys, worker_id, checked) = (
            redis.clone(),
            pg.clone(),
            keys.clone(),
            worker_id.clone(),
            checked.clone(),
        );
        async move {
            let mut failed = false;
            if let Err(e) =
                crate::sites::restore::restore_if_missing(&mut redis, &pg, &keys, &worker_id).await
            {
                failed = true;
                tracing::warn!(
                    error = format!("{e:#}"),
                    "restoring the site registry into Redis failed; will retry"
                );
            }
            if let Err(e) =
                crate::notify::restore::restore_if_missing(&mut redis, &pg, &keys, &worker_id).await
            {
                failed = true;
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
                Err(e) => {
                    failed = true;
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "restoring polls into Redis failed; will retry"
                    );
                }
            }
            // Another worker may hold a lock and still be restoring: ready once every
            // registry is in place, whoever put it there.
            if !failed
                && !checked.load(Ordering::Acquire)
                && domain::registry::marker::all_set(&mut redis, &keys)
                    .await
                    .unwrap_or(false)
            {
                checked.store(true, Ordering::Release);
            }
        }
    })
    .await;
}
