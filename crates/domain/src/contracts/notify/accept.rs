//! Accepting a notification: one Lua step (`notify_accept.lua`) records it and queues its
//! fan-out on the notification's shard, honouring `Idempotency-Key`.
//!
//! The fan-out itself (feeds, deliveries) runs on the batch-worker: a topic of 100,000
//! subscribers cannot be expanded inside the request, and on a Redis Cluster the feeds of
//! different users live on different slots, which no single script may touch. What is
//! atomic is what makes the 202 true: the notification is in Redis, queued once.

use super::model::{Notification, shard_of};
use crate::keys::{Keys, NOTIFY_SHARDS, fnv1a};
use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};
use std::sync::LazyLock;
use uuid::Uuid;

static ACCEPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/notify_accept.lua")));

/// How long a notification's public record stays in Redis (longer than the retry
/// schedule; PostgreSQL keeps it for good).
pub const RECORD_TTL_SECONDS: u64 = 7 * 24 * 3600;
/// How long an idempotency key answers with its notification.
pub const IDEMPOTENCY_TTL_SECONDS: u64 = 24 * 3600;

/// What accepting did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// Recorded and queued.
    Accepted(Uuid),
    /// A retry of a request accepted before: its notification.
    Replay(Uuid),
    /// The idempotency key was used for another request: nothing done.
    KeyReused,
}

/// `id` moved to notification shard `shard` (its last byte chosen; the rest untouched).
fn in_shard(id: Uuid, shard: u16) -> Uuid {
    let mut bytes = *id.as_bytes();
    let modulus = u8::try_from(NOTIFY_SHARDS).unwrap_or(8);
    bytes[15] = bytes[15] - bytes[15] % modulus + u8::try_from(shard).unwrap_or(0);
    Uuid::from_bytes(bytes)
}

/// The shard an idempotency key pins its notification to.
fn shard_of_key(key: &str) -> u16 {
    u16::try_from(fnv1a(key) % u32::from(NOTIFY_SHARDS)).unwrap_or(0)
}

/// A new notification id (UUIDv7). With an idempotency key, the id is made to fall in the
/// key's shard, so the key and the notification are one slot for the accept script.
pub fn notification_id(idempotency_key: Option<&str>) -> Uuid {
    let id = Uuid::now_v7();
    match idempotency_key {
        Some(key) => in_shard(id, shard_of_key(key)),
        None => id,
    }
}

/// The id of the notification a trigger sends for `subject` (`poll.closed:P`): the same
/// subject always gives the same id, so a trigger emitted twice is one notification.
pub fn trigger_id(subject: &str) -> Uuid {
    in_shard(
        Uuid::new_v5(&Uuid::NAMESPACE_OID, subject.as_bytes()),
        shard_of_key(subject),
    )
}

/// Notifications accepted by one script call at most (a trigger's batch may convert
/// thousands of visitors; one call holds Redis for its whole length).
const ACCEPT_CHUNK: usize = 500;

/// Records and queues `notification` (its id must come from [`notification_id`] or
/// [`trigger_id`] with the same key). `fingerprint` identifies the request, so an
/// idempotency key reused for different content is told apart from a retry.
///
/// # Errors
/// When Redis is unreachable: then nothing was queued, or the answer was lost (a retry
/// with the same idempotency key gets it).
pub async fn accept<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    notification: &Notification,
    fingerprint: &str,
) -> RedisResult<AcceptOutcome> {
    let mut outcomes = accept_of_shard(conn, keys, &[(notification, fingerprint)]).await?;
    Ok(outcomes.pop().unwrap_or(AcceptOutcome::KeyReused))
}

/// [`accept`] for many notifications, one script call per shard and [`ACCEPT_CHUNK`],
/// the calls under way at once. Outcomes in the order of `notifications`.
///
/// # Errors
/// When Redis fails: then some may be accepted (accepting them again is a replay, when
/// they have idempotency keys).
pub async fn accept_many<C: ConnectionLike + Send + Sync + Clone>(
    conn: &C,
    keys: &Keys,
    notifications: &[(&Notification, &str)],
) -> RedisResult<Vec<AcceptOutcome>> {
    let mut by_shard: std::collections::BTreeMap<u16, Vec<usize>> = Default::default();
    for (i, (n, _)) in notifications.iter().enumerate() {
        by_shard
            .entry(shard_of(&n.notification_id))
            .or_default()
            .push(i);
    }
    let calls = by_shard
        .values()
        .flat_map(|at| at.chunks(ACCEPT_CHUNK))
        .map(|at| {
            let mut conn = conn.clone();
            let chunk: Vec<(&Notification, &str)> = at.iter().map(|&i| notifications[i]).collect();
            async move {
                accept_of_shard(&mut conn, keys, &chunk)
                    .await
                    .map(|o| (at, o))
            }
        });
    let mut outcomes = vec![AcceptOutcome::KeyReused; notifications.len()];
    for answer in futures_util::future::join_all(calls).await {
        let (at, answered) = answer?;
        for (&i, outcome) in at.iter().zip(answered) {
            outcomes[i] = outcome;
        }
    }
    Ok(outcomes)
}

/// One script call accepting `notifications`, all of one shard.
async fn accept_of_shard<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    notifications: &[(&Notification, &str)],
) -> RedisResult<Vec<AcceptOutcome>> {
    let Some((first, _)) = notifications.first() else {
        return Ok(Vec::new());
    };
    let shard = shard_of(&first.notification_id);
    let mut invocation = ACCEPT.prepare_invoke();
    invocation
        .key(&keys.notify_queue(shard).queue)
        .arg(RECORD_TTL_SECONDS);
    for (notification, fingerprint) in notifications {
        debug_assert_eq!(
            shard_of(&notification.notification_id),
            shard,
            "one shard per call"
        );
        let id = notification.notification_id.to_string();
        let record = keys.notification(shard, &id);
        let idem = notification.idempotency_key.as_deref();
        let idem_key = idem.map_or_else(|| record.clone(), |k| keys.notify_idempotency(shard, k));
        invocation
            .key(record)
            .key(idem_key)
            .arg(serde_json::to_string(notification).unwrap_or_default())
            .arg(serde_json::to_string(&notification.record()).unwrap_or_default())
            .arg(if idem.is_some() {
                IDEMPOTENCY_TTL_SECONDS
            } else {
                0
            })
            .arg(id)
            .arg(*fingerprint);
    }
    let flat: Vec<String> = invocation.invoke_async(conn).await?;
    Ok(notifications
        .iter()
        .zip(flat.chunks_exact(2))
        .map(|((n, _), pair)| {
            let answered = pair[1].parse().unwrap_or(n.notification_id);
            match pair[0].as_str() {
                "accepted" => AcceptOutcome::Accepted(answered),
                "replay" => AcceptOutcome::Replay(answered),
                _ => AcceptOutcome::KeyReused,
            }
        })
        .collect())
}

/// A notification's public record from Redis (while it is kept there).
///
/// # Errors
/// When Redis is unreachable.
pub async fn record<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    id: &Uuid,
) -> RedisResult<Option<super::model::NotificationRecord>> {
    let raw: Option<String> = redis::cmd("GET")
        .arg(keys.notification(shard_of(id), &id.to_string()))
        .query_async(conn)
        .await?;
    Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idempotency_key_pins_its_notification_to_its_shard() {
        for key in ["a", "order-17", "retry-me"] {
            for _ in 0..20 {
                let id = notification_id(Some(key));
                assert_eq!(shard_of(&id), shard_of_key(key));
                assert_eq!(id.get_version_num(), 7);
            }
        }
        let shards: std::collections::HashSet<u16> =
            (0..200).map(|_| shard_of(&notification_id(None))).collect();
        assert_eq!(shards.len(), usize::from(NOTIFY_SHARDS));
    }

    #[test]
    fn a_trigger_subject_always_names_the_same_notification() {
        assert_eq!(trigger_id("poll.closed:p1"), trigger_id("poll.closed:p1"));
        assert_ne!(trigger_id("poll.closed:p1"), trigger_id("poll.closed:p2"));
    }
}
