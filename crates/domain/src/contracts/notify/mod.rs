//! Notifications: accepted in one Redis step, fanned out by the batch-worker to in-app
//! feeds, webhooks, email and SMS, retried on a schedule, dead-lettered when every
//! attempt failed, and recorded in PostgreSQL.
//!
//! - [`model`], [`request`]: what a notification is, and the request that makes one.
//! - [`accept`]: the atomic step that records and queues it (`notify_accept.lua`).
//! - [`feed`]: users' feeds in Redis, read marks, what live streams read and publish.
//! - [`delivery`], [`delivery_queue`]: deliveries on the webhook, email and SMS
//!   channels, their reliable queues, retry schedule and attempt records.
//! - [`webhook`], [`endpoints`]: Standard Webhooks signatures, and the endpoints
//!   registry.
//! - [`topics`]: topic subscriptions.
//! - [`marker`]: the "restored" markers and restore locks of the endpoints and topics
//!   registries.

pub mod accept;
pub mod delivery;
pub mod delivery_queue;
pub mod endpoints;
pub mod feed;
pub mod model;
pub mod rate;
pub mod request;
pub mod topics;
pub mod webhook;

pub use model::{
    ChannelKind, DeliveryState, Notification, NotificationRecord, Priority, Recipient,
};

/// The "restored" markers of the endpoints and topics registries, and the locks of
/// restoring them (the pattern of [`crate::site_registry::marker`], over any key pair).
pub mod marker {
    use redis::RedisResult;
    use redis::aio::ConnectionLike;

    /// Says a registry holds everything PostgreSQL has.
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn set<C: ConnectionLike + Send + Sync>(conn: &mut C, key: &str) -> RedisResult<()> {
        redis::cmd("SET").arg(key).arg("1").query_async(conn).await
    }

    /// Whether the marker is there.
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn is_set<C: ConnectionLike + Send + Sync>(
        conn: &mut C,
        key: &str,
    ) -> RedisResult<bool> {
        redis::cmd("EXISTS").arg(key).query_async(conn).await
    }

    /// Takes a restore lock for `owner`; false when someone else holds it.
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn lock<C: ConnectionLike + Send + Sync>(
        conn: &mut C,
        key: &str,
        owner: &str,
        ttl_ms: u64,
    ) -> RedisResult<bool> {
        let taken: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(conn)
            .await?;
        Ok(taken.is_some())
    }

    /// Releases a restore lock if `owner` still holds it.
    ///
    /// # Errors
    /// When Redis is unreachable (the lock then expires by itself).
    pub async fn unlock<C: ConnectionLike + Send + Sync>(
        conn: &mut C,
        key: &str,
        owner: &str,
    ) -> RedisResult<()> {
        redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 1",
        )
        .key(key)
        .arg(owner)
        .invoke_async::<i64>(conn)
        .await
        .map(|_| ())
    }
}
