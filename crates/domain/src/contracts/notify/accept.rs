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
    let shard = shard_of(&notification.notification_id);
    let id = notification.notification_id.to_string();
    let record = keys.notification(shard, &id);
    let idem = notification.idempotency_key.as_deref();
    let idem_key = idem.map_or_else(|| record.clone(), |k| keys.notify_idempotency(shard, k));
    let message = serde_json::to_string(notification).unwrap_or_default();
    let public = serde_json::to_string(&notification.record()).unwrap_or_default();
    let (outcome, answered): (String, String) = ACCEPT
        .key(&keys.notify_queue(shard).queue)
        .key(&record)
        .key(idem_key)
        .arg(message)
        .arg(public)
        .arg(RECORD_TTL_SECONDS)
        .arg(if idem.is_some() {
            IDEMPOTENCY_TTL_SECONDS
        } else {
            0
        })
        .arg(&id)
        .arg(fingerprint)
        .invoke_async(conn)
        .await?;
    let answered = answered.parse().unwrap_or(notification.notification_id);
    Ok(match outcome.as_str() {
        "accepted" => AcceptOutcome::Accepted(answered),
        "replay" => AcceptOutcome::Replay(answered),
        _ => AcceptOutcome::KeyReused,
    })
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
