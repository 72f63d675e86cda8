//! A reliable Redis queue: nothing acknowledged to a client is lost when a worker dies.
//!
//! Producers `LPUSH` items. A worker never pops an item into its own memory only: it
//! *moves* items (atomically, with `claim.lua` or `BLMOVE`) into its own processing list,
//! stores them, and only then deletes that list (`ack`). A heartbeat key with a TTL says the
//! worker is alive; any worker that finds a registered worker's heartbeat expired moves that
//! worker's processing list back onto the queue (`requeue.lua`). Items are therefore
//! delivered at least once, and the consumer must be idempotent (the batch-worker stores
//! with `ON CONFLICT` on the item id).
//!
//! Items that can never be processed go to the dead-letter list with the reason.

use crate::keys::QueueKeys;
use redis::aio::ConnectionLike;
use redis::{AsyncCommands, RedisResult, Script};
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;
use std::time::Duration;

/// Name (and hash tag) of the analytics events queue.
pub const EVENTS_QUEUE: &str = "events";

/// The newest dead letters a queue keeps; older ones are dropped (they stay counted in
/// `batch_worker_dead_lettered_total`, and each was logged when it arrived). A poison
/// stream of items must not grow Redis until it runs out of memory.
pub const MAX_DEAD_LETTERS: i64 = 10_000;

static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/claim.lua")));
static REQUEUE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/requeue.lua")));

/// Appends items to a queue in one command (all or none).
///
/// # Errors
/// When Redis is unreachable; then nothing was queued.
pub async fn push<C: ConnectionLike + Send + Sync, T: redis::ToRedisArgs + Send + Sync>(
    conn: &mut C,
    keys: &QueueKeys,
    items: &[T],
) -> RedisResult<u64> {
    redis::cmd("LPUSH")
        .arg(&keys.queue)
        .arg(items)
        .query_async(conn)
        .await
}

/// Number of items waiting.
///
/// # Errors
/// When Redis is unreachable.
pub async fn len<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &QueueKeys,
) -> RedisResult<u64> {
    redis::cmd("LLEN").arg(&keys.queue).query_async(conn).await
}

/// Number of items waiting in all of `shards` (one round trip per shard: on a cluster they
/// are on different slots).
///
/// # Errors
/// When Redis is unreachable.
pub async fn total_len<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    shards: &[QueueKeys],
) -> RedisResult<u64> {
    let mut total = 0;
    for keys in shards {
        total += len(conn, keys).await?;
    }
    Ok(total)
}

/// The oldest waiting item, if any (to measure how long items wait).
///
/// # Errors
/// When Redis is unreachable.
pub async fn oldest<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &QueueKeys,
) -> RedisResult<Option<Vec<u8>>> {
    redis::cmd("LINDEX")
        .arg(&keys.queue)
        .arg(-1)
        .query_async(conn)
        .await
}

/// The field every queue message carries: when it was queued, epoch milliseconds. Queue
/// age gauges read it from the oldest item, whatever kind of message that is.
pub const QUEUED_AT_FIELD: &str = "queued_at_ms";

#[derive(Deserialize)]
struct Stamp {
    queued_at_ms: i64,
}

/// When a queue message was queued (its [`QUEUED_AT_FIELD`]), if it says.
pub fn queued_at_ms(item: &[u8]) -> Option<i64> {
    serde_json::from_slice::<Stamp>(item)
        .ok()
        .map(|s| s.queued_at_ms)
}

/// How long the oldest waiting item has waited at `now_ms` (zero for an empty queue or an
/// item without a stamp).
///
/// # Errors
/// When Redis is unreachable.
pub async fn oldest_age<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &QueueKeys,
    now_ms: i64,
) -> RedisResult<Duration> {
    let age_ms = oldest(conn, keys)
        .await?
        .and_then(|item| queued_at_ms(&item))
        .map_or(0, |at| (now_ms - at).max(0));
    Ok(Duration::from_millis(u64::try_from(age_ms).unwrap_or(0)))
}

/// Number of dead letters.
///
/// # Errors
/// When Redis is unreachable.
pub async fn dead_len<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &QueueKeys,
) -> RedisResult<u64> {
    redis::cmd("LLEN").arg(&keys.dead).query_async(conn).await
}

/// A dead letter: an item that can never be stored, and why. Written only through
/// [`WorkerQueue::dead_letter_in`].
#[derive(Debug, Serialize)]
pub struct DeadLetter<'a> {
    pub reason: &'a str,
    /// The item as it was queued (lossy UTF-8 if it was not text).
    pub item: &'a str,
    /// UTC milliseconds when it was dead-lettered.
    pub at_ms: i64,
    pub worker_id: &'a str,
}

/// One worker's handle on a queue.
#[derive(Clone, Debug)]
pub struct WorkerQueue {
    keys: QueueKeys,
    worker_id: String,
    processing: String,
    heartbeat: String,
}

impl WorkerQueue {
    pub fn new(keys: QueueKeys, worker_id: impl Into<String>) -> Self {
        let worker_id = worker_id.into();
        Self {
            processing: keys.processing(&worker_id),
            heartbeat: keys.heartbeat(&worker_id),
            keys,
            worker_id,
        }
    }

    pub fn keys(&self) -> &QueueKeys {
        &self.keys
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Says this worker is alive for `ttl`, and registers it so reapers know to look.
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn heartbeat<C: ConnectionLike + Send + Sync>(
        &self,
        conn: &mut C,
        ttl: Duration,
    ) -> RedisResult<()> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        redis::pipe()
            .cmd("SET")
            .arg(&self.heartbeat)
            .arg(&self.worker_id)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .cmd("SADD")
            .arg(&self.keys.workers)
            .arg(&self.worker_id)
            .ignore()
            .query_async(conn)
            .await
    }

    /// Items this worker claimed earlier and has not acknowledged (after a restart with the
    /// same worker id).
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn unacknowledged<C: ConnectionLike + Send + Sync>(
        &self,
        conn: &mut C,
    ) -> RedisResult<Vec<Vec<u8>>> {
        conn.lrange(&self.processing, 0, -1).await
    }

    /// Moves up to `max` of the oldest items into this worker's processing list, without
    /// waiting. Returns them (possibly none).
    ///
    /// # Errors
    /// When Redis is unreachable; nothing was claimed then.
    pub async fn claim<C: ConnectionLike + Send + Sync>(
        &self,
        conn: &mut C,
        max: usize,
    ) -> RedisResult<Vec<Vec<u8>>> {
        CLAIM
            .key(&self.keys.queue)
            .key(&self.processing)
            .key(&self.keys.workers)
            .arg(max.max(1))
            .arg(&self.worker_id)
            .invoke_async(conn)
            .await
    }

    /// Waits up to `timeout` for one item and moves it into the processing list.
    ///
    /// Blocks the connection: use a dedicated one, never the shared multiplexed one.
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn claim_one_blocking<C: ConnectionLike + Send + Sync>(
        &self,
        conn: &mut C,
        timeout: Duration,
    ) -> RedisResult<Option<Vec<u8>>> {
        // 0 would block forever; Redis takes fractional seconds.
        let secs = timeout.as_secs_f64().max(0.01);
        redis::cmd("BLMOVE")
            .arg(&self.keys.queue)
            .arg(&self.processing)
            .arg("RIGHT")
            .arg("LEFT")
            .arg(secs)
            .query_async(conn)
            .await
    }

    /// Forgets the claimed batch: call only after it is stored (or dead-lettered).
    ///
    /// # Errors
    /// When Redis is unreachable; the batch stays claimed and is stored again later, which
    /// the consumer must tolerate.
    pub async fn ack<C: ConnectionLike + Send + Sync>(&self, conn: &mut C) -> RedisResult<()> {
        conn.del(&self.processing).await
    }

    /// Hands the claimed batch back to the queue and unregisters (clean shutdown with work
    /// that could not be stored).
    ///
    /// # Errors
    /// When Redis is unreachable; the batch is reaped after the heartbeat expires instead.
    pub async fn release<C: ConnectionLike + Send + Sync>(&self, conn: &mut C) -> RedisResult<i64> {
        self.requeue(conn, &self.worker_id, true).await
    }

    /// Requeues the batches of registered workers whose heartbeat expired. Returns the
    /// number of items put back.
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn reap_dead_workers<C: ConnectionLike + Send + Sync>(
        &self,
        conn: &mut C,
    ) -> RedisResult<ReapOutcome> {
        let members: Vec<String> = conn.smembers(&self.keys.workers).await?;
        let mut outcome = ReapOutcome::default();
        for member in members.iter().filter(|m| **m != self.worker_id) {
            let n = self.requeue(conn, member, false).await?;
            if n >= 0 {
                outcome.workers += 1;
                outcome.items += u64::try_from(n).unwrap_or(0);
                tracing::warn!(dead_worker = %member, items = n, "reaped the batch of a dead worker");
            }
        }
        Ok(outcome)
    }

    async fn requeue<C: ConnectionLike + Send + Sync>(
        &self,
        conn: &mut C,
        worker_id: &str,
        force: bool,
    ) -> RedisResult<i64> {
        REQUEUE
            .key(self.keys.heartbeat(worker_id))
            .key(self.keys.processing(worker_id))
            .key(&self.keys.queue)
            .key(&self.keys.workers)
            .arg(worker_id)
            .arg(if force { "1" } else { "0" })
            .invoke_async(conn)
            .await
    }

    /// Adds "dead-letter this item" to `pipe` (sent with the batch's acknowledgement).
    pub fn dead_letter_in(&self, pipe: &mut redis::Pipeline, letter: &DeadLetter<'_>) {
        let encoded = serde_json::to_string(letter).unwrap_or_else(|_| letter.item.to_string());
        pipe.cmd("LPUSH").arg(&self.keys.dead).arg(encoded).ignore();
        pipe.cmd("LTRIM")
            .arg(&self.keys.dead)
            .arg(0)
            .arg(MAX_DEAD_LETTERS - 1)
            .ignore();
    }

    /// Adds the acknowledgement of the claimed batch to `pipe` (see [`WorkerQueue::ack`]).
    pub fn ack_in(&self, pipe: &mut redis::Pipeline) {
        pipe.cmd("DEL").arg(&self.processing).ignore();
    }

    /// Adds "how many items has this worker claimed" to `pipe` (one integer reply).
    pub fn claimed_len_in(&self, pipe: &mut redis::Pipeline) {
        pipe.cmd("LLEN").arg(&self.processing);
    }
}

/// What a reaping pass found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReapOutcome {
    /// Dead workers whose batches were requeued.
    pub workers: u64,
    /// Items put back on the queue.
    pub items: u64,
}
