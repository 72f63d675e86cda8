//! Background duties of every lane: the heartbeat that keeps a lane's batch its own, the
//! reaper that requeues the batches of dead workers, and the queue gauges operators alert
//! on (length, oldest item's age, dead letters).

use domain::queue::WorkerQueue;
use domain::redis::RedisConn;
use domain::shutdown::{CancellationToken, every};
use std::time::Duration;

/// Refreshes the heartbeats of this process's lanes every third of their TTL until `stop`
/// is cancelled.
pub async fn heartbeat(
    lanes: Vec<WorkerQueue>,
    redis: RedisConn,
    ttl: Duration,
    stop: CancellationToken,
) {
    let lanes = std::sync::Arc::new(lanes);
    every(ttl / 3, stop, || {
        let (lanes, mut redis) = (lanes.clone(), redis.clone());
        async move {
            for queue in lanes.iter() {
                match queue.heartbeat(&mut redis, ttl).await {
                    Ok(()) => metrics::counter!("batch_worker_heartbeats_total").increment(1),
                    Err(e) => {
                        metrics::counter!("batch_worker_heartbeat_failures_total").increment(1);
                        tracing::warn!(error = %e, worker = queue.worker_id(), "heartbeat failed");
                    }
                }
            }
        }
    })
    .await;
}

/// Every `interval`: requeues dead workers' batches of every queue and refreshes the
/// queue gauges. `queues` holds one handle per queue (any lane's).
pub async fn reap_and_measure(
    queues: Vec<WorkerQueue>,
    redis: RedisConn,
    interval: Duration,
    stop: CancellationToken,
) {
    let queues = std::sync::Arc::new(queues);
    every(interval, stop, || {
        let (queues, mut redis) = (queues.clone(), redis.clone());
        async move {
        for queue in queues.iter() {
            let name = queue.keys().name.clone();
            match queue.reap_dead_workers(&mut redis).await {
                Ok(outcome) => {
                    metrics::counter!("batch_worker_reaped_workers_total", "queue" => name.clone())
                        .increment(outcome.workers);
                    metrics::counter!("batch_worker_reaped_items_total", "queue" => name.clone())
                        .increment(outcome.items);
                }
                Err(e) => tracing::warn!(error = %e, queue = name, "reaping dead workers failed"),
            }
            if let Err(e) = measure(queue, &mut redis, name).await {
                tracing::debug!(error = %e, "could not refresh queue gauges");
            }
        }
        }
    })
    .await;
}

async fn measure(queue: &WorkerQueue, redis: &mut RedisConn, name: String) -> anyhow::Result<()> {
    let keys = queue.keys();
    let len = domain::queue::len(redis, keys).await?;
    let dead = domain::queue::dead_len(redis, keys).await?;
    let age = domain::queue::oldest_age(redis, keys, chrono::Utc::now().timestamp_millis()).await?;
    metrics::gauge!("batch_worker_queue_length", "queue" => name.clone()).set(len as f64);
    metrics::gauge!("batch_worker_dead_letters", "queue" => name.clone()).set(dead as f64);
    metrics::gauge!("batch_worker_queue_oldest_age_seconds", "queue" => name)
        .set(age.as_secs_f64());
    Ok(())
}
