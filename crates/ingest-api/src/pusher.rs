//! Events of concurrent requests pushed to Redis together: one `LPUSH` carries every
//! request that arrived while the previous push was in flight (see [`crate::coalesce`]).
//! Each request's events stay in one `LPUSH`, so a request is still queued whole or not
//! at all, and it is answered only once Redis has acknowledged that push.
//!
//! The shard is chosen per push, not per request: the shards take pushes in turn, and so
//! fill evenly. Redis spends most of a push on the command around it, not on its items: a
//! batch split over three shards was three commands where one does.
//!
//! With `REDIS_WAIT_REPLICAS` set, a push is acknowledged only once that many replicas
//! hold it (`WAIT` after the `LPUSH`): a failover then loses no acknowledged event. One
//! `WAIT` covers every request of the push, so the replication round trip is paid per
//! push, not per request.

use crate::coalesce::{Coalescer, Limits};
use domain::keys::QueueKeys;
use domain::redis::RedisConn;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const LIMITS: Limits = Limits {
    max_requests: 256,
    // A push is one Redis command, held whole in memory.
    max_weight: 10_000,
    // One push in flight: requests arriving meanwhile make the next push larger rather
    // than another one. Against four, on two shared cores: a three-master cluster 0.98 of
    // one Redis instead of 0.70, one Redis 15-20% less CPU per event in ingest-api and in
    // Redis (docs/scaling.md has the A/B, and what it costs one Redis under `oha`).
    in_flight: 1,
    waiting: 4_096,
    metric: "ingest_api_requests_per_push",
};

/// Replicas that must hold a push before its requests are answered (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    pub replicas: u32,
    pub timeout: Duration,
}

/// Why a push was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PushError {
    /// Redis failed: none of the request's events was queued.
    #[error(transparent)]
    Redis(#[from] domain::redis_client::RedisError),
    /// Queued on the master, but fewer replicas than asked hold it after the timeout: a
    /// failover now could lose it; a retry with the same event ids is stored once.
    #[error("{acked} of {wanted} replicas acknowledged the push in time")]
    NotReplicated { acked: i64, wanted: u32 },
}

type Pushed = Result<u64, PushError>;

/// A request's events (none: a request to wait for the replicas only).
struct Push {
    items: Vec<Vec<u8>>,
}

/// One HTTP worker's pusher (its task runs on that worker's runtime, on its connection).
#[derive(Clone)]
pub struct EventPusher {
    pushes: Coalescer<Push, Pushed>,
    replicas: u32,
}

impl EventPusher {
    /// Starts the pushing task on the current runtime.
    pub fn start(conn: RedisConn, queues: Vec<QueueKeys>, replication: Replication) -> Self {
        let queues = Arc::new(queues);
        let next_shard = AtomicUsize::new(0);
        let pushes = Coalescer::start(
            LIMITS,
            |push: &Push| push.items.len(),
            move |batch| {
                let shard = next_shard.fetch_add(1, Ordering::Relaxed) % queues.len();
                push_batch(conn.clone(), queues.clone(), shard, batch, replication)
            },
        );
        Self {
            pushes,
            replicas: replication.replicas,
        }
    }

    /// Waits until the replicas asked for hold what this worker's connection wrote so
    /// far (a vote's script, say): one `WAIT` with the next push covers it. At once when
    /// no replicas are asked for.
    ///
    /// # Errors
    /// As [`EventPusher::push`].
    pub async fn replicated(&self) -> Result<(), PushError> {
        if self.replicas == 0 {
            return Ok(());
        }
        self.push(Vec::new()).await.map(|_| ())
    }

    /// Pushes `items` onto a shard in one `LPUSH` (with other requests' items); returns
    /// that shard's length after it.
    ///
    /// # Errors
    /// Redis's, when the push failed (none of `items` was queued), or too few replicas
    /// acknowledged it.
    pub async fn push(&self, items: Vec<Vec<u8>>) -> Pushed {
        self.pushes.call(Push { items }).await.unwrap_or_else(|| {
            Err(PushError::Redis(domain::redis_client::RedisError::from((
                domain::redis_client::ErrorKind::Io,
                "the event pusher stopped",
            ))))
        })
    }
}

/// One `LPUSH` of the batch's events onto shard `shard`, its answer every request's.
async fn push_batch(
    mut conn: RedisConn,
    queues: Arc<Vec<QueueKeys>>,
    shard: usize,
    batch: Vec<Push>,
    replication: Replication,
) -> Vec<Pushed> {
    let items: Vec<&[u8]> = batch
        .iter()
        .flat_map(|push| push.items.iter().map(Vec::as_slice))
        .collect();
    let pushed = push_and_wait(&mut conn, &queues[shard], &items, replication).await;
    vec![pushed; batch.len()]
}

/// One `LPUSH`, then (when replicas are asked for) a `WAIT` on the same connection, which
/// covers it.
async fn push_and_wait(
    conn: &mut RedisConn,
    keys: &QueueKeys,
    items: &[&[u8]],
    replication: Replication,
) -> Pushed {
    // A push of no events is a request to wait for the replicas only.
    let len = if items.is_empty() {
        0
    } else {
        domain::queue::push(conn, keys, items).await?
    };
    if replication.replicas == 0 {
        return Ok(len);
    }
    let timeout_ms = u64::try_from(replication.timeout.as_millis()).unwrap_or(u64::MAX);
    let acked: i64 = domain::redis_client::cmd("WAIT")
        .arg(replication.replicas)
        .arg(timeout_ms.max(1))
        .query_async(conn)
        .await?;
    if acked < i64::from(replication.replicas) {
        metrics::counter!("ingest_api_pushes_not_replicated_total").increment(1);
        return Err(PushError::NotReplicated {
            acked,
            wanted: replication.replicas,
        });
    }
    Ok(len)
}
