//! The reliable queue of one delivery channel, as one worker sees it.
//!
//! Unlike the batch queues (see [`crate::queue`]), deliveries finish one by one, whenever
//! their attempt ends: a slow endpoint must not hold back the acknowledgement of a fast
//! one. So a claimed delivery moves into the worker's *in-flight hash* under a claim id of
//! its own (`delivery_claim.lua`), and leaves it in the step that records its attempt and
//! schedules what follows (`delivery_finish.lua`). A worker whose heartbeat expires has
//! its in-flight deliveries taken back (`delivery_reap.lua`), each recorded as an
//! interrupted attempt. Retries wait in the scheduled set and move back onto the queue
//! when due (`delivery_due.lua`), atomically. Deliveries are queued once per notification
//! and group (`delivery_push.lua`).

use super::delivery::Delivery;
use crate::keys::DeliveryKeys;
use crate::queue::MAX_DEAD_LETTERS;
use redis::aio::ConnectionLike;
use redis::{AsyncCommands, RedisResult, Script};
use std::sync::LazyLock;
use std::time::Duration;

static CLAIM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/delivery_claim.lua")));
static FINISH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/delivery_finish.lua")));
static REAP: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/delivery_reap.lua")));
static DUE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/delivery_due.lua")));
static PUSH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/delivery_push.lua")));

/// How long the marker of a queued group of deliveries is kept (longer than any fan-out
/// could be replayed).
pub const PUSH_MARKER_TTL_SECONDS: u64 = 7 * 24 * 3600;

/// What happens to a finished delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishAction {
    /// Delivered, or given up without a dead letter.
    Done,
    /// Failed; attempt `delivery` again at `due_ms`.
    Retry { delivery: String, due_ms: i64 },
    /// Not attempted (its endpoint is busy or over its rate); try again at `due_ms`.
    Park { delivery: String, due_ms: i64 },
    /// Out of attempts: this dead letter.
    Dead { letter: String },
}

/// One delivery to finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    pub claim: String,
    pub action: FinishAction,
    /// The attempt record for PostgreSQL, if any.
    pub record: Option<String>,
    /// The backlog field it counts under ("" for none).
    pub backlog_field: String,
}

/// One delivery taken back from a dead worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    pub claim: String,
    /// Requeue this delivery, or (when `dead`) write this dead letter.
    pub payload: String,
    pub dead: bool,
    pub record: Option<String>,
    pub backlog_field: String,
}

/// One worker's handle on a channel's delivery queue.
#[derive(Debug)]
pub struct DeliveryQueue {
    keys: DeliveryKeys,
    worker_id: String,
    inflight: String,
    heartbeat: String,
    next_claim: u64,
}

impl DeliveryQueue {
    pub fn new(keys: DeliveryKeys, worker_id: impl Into<String>) -> Self {
        let worker_id = worker_id.into();
        Self {
            inflight: keys.inflight(&worker_id),
            heartbeat: keys.queue.heartbeat(&worker_id),
            keys,
            worker_id,
            // Claim ids only have to be unique within this worker id's hash, which starts
            // empty or holds a previous run's claims: start above any of those.
            next_claim: u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(0),
        }
    }

    pub fn keys(&self) -> &DeliveryKeys {
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
            .arg(&self.keys.queue.workers)
            .arg(&self.worker_id)
            .ignore()
            .query_async(conn)
            .await
    }

    /// Claims up to `max` of the oldest deliveries: (claim id, delivery).
    ///
    /// # Errors
    /// When Redis is unreachable; nothing was claimed then, or the claimed deliveries are
    /// in the in-flight hash ([`DeliveryQueue::in_flight`] finds them).
    pub async fn claim<C: ConnectionLike + Send + Sync>(
        &mut self,
        conn: &mut C,
        max: usize,
    ) -> RedisResult<Vec<(String, Vec<u8>)>> {
        let base = self.next_claim;
        let items: Vec<Vec<u8>> = CLAIM
            .key(&self.keys.queue.queue)
            .key(&self.inflight)
            .key(&self.keys.queue.workers)
            .arg(max.max(1))
            .arg(&self.worker_id)
            .arg(base)
            .invoke_async(conn)
            .await?;
        self.next_claim += items.len() as u64;
        Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, item)| (format!("c{}", base + i as u64), item))
            .collect())
    }

    /// What this worker id holds in flight (after a restart with the same id).
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn in_flight<C: ConnectionLike + Send + Sync>(
        &self,
        conn: &mut C,
    ) -> RedisResult<Vec<(String, Vec<u8>)>> {
        in_flight_of(conn, &self.keys, &self.worker_id).await
    }

    /// Finishes deliveries in one step. Returns how many were still this worker's.
    ///
    /// # Errors
    /// When Redis is unreachable; nothing was finished then (retrying is safe).
    pub async fn finish<C: ConnectionLike + Send + Sync>(
        &self,
        conn: &mut C,
        done: &[Finish],
    ) -> RedisResult<u64> {
        if done.is_empty() {
            return Ok(0);
        }
        let mut invocation = FINISH.prepare_invoke();
        invocation
            .key(&self.inflight)
            .key(&self.keys.scheduled)
            .key(&self.keys.queue.dead)
            .key(&self.keys.log.queue)
            .key(&self.keys.backlog)
            .arg(MAX_DEAD_LETTERS);
        for f in done {
            let (action, payload, due) = match &f.action {
                FinishAction::Done => ("done", "", 0),
                FinishAction::Retry { delivery, due_ms } => ("retry", delivery.as_str(), *due_ms),
                FinishAction::Park { delivery, due_ms } => ("park", delivery.as_str(), *due_ms),
                FinishAction::Dead { letter } => ("dead", letter.as_str(), 0),
            };
            invocation
                .arg(&f.claim)
                .arg(action)
                .arg(payload)
                .arg(due)
                .arg(f.record.as_deref().unwrap_or(""))
                .arg(&f.backlog_field);
        }
        invocation.invoke_async(conn).await
    }

    /// Hands back deliveries this worker claimed and never attempted (shutdown).
    ///
    /// # Errors
    /// When Redis is unreachable (they are reaped once the heartbeat expires instead).
    pub async fn hand_back<C: ConnectionLike + Send + Sync>(
        &self,
        conn: &mut C,
        claims: &[(String, String)],
    ) -> RedisResult<i64> {
        let items: Vec<Reaped> = claims
            .iter()
            .map(|(claim, delivery)| Reaped {
                claim: claim.clone(),
                payload: delivery.clone(),
                dead: false,
                record: None,
                backlog_field: String::new(),
            })
            .collect();
        reap(conn, &self.keys, &self.worker_id, &items, true).await
    }

    /// Moves up to `max` due deliveries from the scheduled set back onto the queue.
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn move_due<C: ConnectionLike + Send + Sync>(
        &self,
        conn: &mut C,
        now_ms: i64,
        max: usize,
    ) -> RedisResult<u64> {
        DUE.key(&self.keys.scheduled)
            .key(&self.keys.queue.queue)
            .arg(now_ms)
            .arg(max.max(1))
            .invoke_async(conn)
            .await
    }
}

/// What worker `worker_id` holds in flight: (claim id, delivery).
///
/// # Errors
/// When Redis is unreachable.
pub async fn in_flight_of<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &DeliveryKeys,
    worker_id: &str,
) -> RedisResult<Vec<(String, Vec<u8>)>> {
    conn.hgetall(keys.inflight(worker_id)).await
}

/// The workers registered on a channel and whether each is alive (its heartbeat exists).
///
/// # Errors
/// When Redis is unreachable.
pub async fn workers<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &DeliveryKeys,
) -> RedisResult<Vec<(String, bool)>> {
    let ids: Vec<String> = conn.smembers(&keys.queue.workers).await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let alive: bool = conn.exists(keys.queue.heartbeat(&id)).await?;
        out.push((id, alive));
    }
    Ok(out)
}

/// Takes back `items` of worker `worker_id` unless it is alive (or `force`). Returns how
/// many were taken, or -1 when the worker is alive.
///
/// # Errors
/// When Redis is unreachable.
pub async fn reap<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &DeliveryKeys,
    worker_id: &str,
    items: &[Reaped],
    force: bool,
) -> RedisResult<i64> {
    let mut invocation = REAP.prepare_invoke();
    invocation
        .key(keys.queue.heartbeat(worker_id))
        .key(keys.inflight(worker_id))
        .key(&keys.queue.queue)
        .key(&keys.queue.workers)
        .key(&keys.log.queue)
        .key(&keys.queue.dead)
        .key(&keys.backlog)
        .arg(worker_id)
        .arg(if force { "1" } else { "0" })
        .arg(MAX_DEAD_LETTERS);
    for r in items {
        invocation
            .arg(&r.claim)
            .arg(if r.dead { "dead" } else { "requeue" })
            .arg(&r.payload)
            .arg(r.record.as_deref().unwrap_or(""))
            .arg(&r.backlog_field);
    }
    invocation.invoke_async(conn).await
}

/// Groups a notification's deliveries of one channel are queued in: each group is queued
/// once (a marker per group), so a replayed fan-out queues nothing twice, and no single
/// script call carries a hundred thousand deliveries.
pub const PUSH_GROUPS: u32 = 16;

/// The group of a delivery (by its id, so replays agree whatever the order).
pub fn push_group(delivery_id: &str) -> u32 {
    crate::keys::fnv1a(delivery_id) % PUSH_GROUPS
}

/// Queues `deliveries` (all of notification `notification_id`, one channel, one group
/// `group`) unless that group was queued before. Returns how many were queued.
///
/// # Errors
/// When Redis is unreachable (then nothing, or the whole group, was queued).
pub async fn push<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &DeliveryKeys,
    notification_id: &str,
    group: u32,
    deliveries: &[Delivery],
) -> RedisResult<u64> {
    if deliveries.is_empty() {
        return Ok(0);
    }
    let mut invocation = PUSH.prepare_invoke();
    invocation
        .key(&keys.queue.queue)
        .key(keys.fanned(&format!("{notification_id}:{group}")))
        .key(&keys.backlog)
        .arg(PUSH_MARKER_TTL_SECONDS);
    for d in deliveries {
        invocation.arg(d.to_json()).arg(d.backlog_field());
    }
    invocation.invoke_async(conn).await
}

/// Deliveries waiting in a channel: (queued now, scheduled for later).
///
/// # Errors
/// When Redis is unreachable.
pub async fn depth<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &DeliveryKeys,
) -> RedisResult<(u64, u64)> {
    let (queued, scheduled): (u64, u64) = redis::pipe()
        .cmd("LLEN")
        .arg(&keys.queue.queue)
        .cmd("ZCARD")
        .arg(&keys.scheduled)
        .query_async(conn)
        .await?;
    Ok((queued, scheduled))
}

/// Scheduled deliveries already due at `now_ms` (a gauge: due retries not yet moved).
///
/// # Errors
/// When Redis is unreachable.
pub async fn due_count<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &DeliveryKeys,
    now_ms: i64,
) -> RedisResult<u64> {
    redis::cmd("ZCOUNT")
        .arg(&keys.scheduled)
        .arg("-inf")
        .arg(now_ms)
        .query_async(conn)
        .await
}

/// Each endpoint's unfinished deliveries.
///
/// # Errors
/// When Redis is unreachable.
pub async fn backlog<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &DeliveryKeys,
) -> RedisResult<Vec<(String, i64)>> {
    conn.hgetall(&keys.backlog).await
}
