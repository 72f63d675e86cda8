//! Putting the webhook endpoints and topic subscriptions back into Redis after Redis lost
//! them (restarted empty, flushed), as [`crate::sites::restore`] does for sites: while a
//! registry's "restored" marker is missing, writes to it answer 503, and a worker holding
//! its restore lock loads it from PostgreSQL (never over a newer copy a write made
//! meanwhile), then sets the marker.

use chrono::{DateTime, Utc};
use domain::deadpool_postgres::Pool;
use domain::keys::Keys;
use domain::notify::endpoints::{self, Endpoint};
use domain::notify::{Recipient, topics};
use domain::redis::RedisConn;
use domain::registry::marker;
use std::collections::BTreeMap;

/// How long a restorer may hold the lock before another may take over.
const LOCK_TTL_MS: u64 = 120_000;

/// Restores whichever of the two registries lost its marker. Returns the records put
/// back.
///
/// # Errors
/// When Redis or PostgreSQL fails (the marker stays unset; the next check retries).
pub async fn restore_if_missing(
    redis: &mut RedisConn,
    pg: &Pool,
    keys: &Keys,
    worker_id: &str,
) -> anyhow::Result<usize> {
    let mut restored = 0;
    if !marker::is_set(redis, &keys.endpoints_restored()).await?
        && marker::lock(redis, &keys.endpoints_restoring(), worker_id, LOCK_TTL_MS).await?
    {
        let result = restore_endpoints(redis, pg, keys).await;
        if result.is_ok() {
            marker::set(redis, &keys.endpoints_restored()).await?;
        }
        marker::unlock(redis, &keys.endpoints_restoring(), worker_id).await?;
        let n = result?;
        tracing::info!(endpoints = n, "webhook endpoints restored into Redis");
        restored += n;
    }
    if !marker::is_set(redis, &keys.topics_restored()).await?
        && marker::lock(redis, &keys.topics_restoring(), worker_id, LOCK_TTL_MS).await?
    {
        let result = restore_topics(redis, pg, keys).await;
        if result.is_ok() {
            marker::set(redis, &keys.topics_restored()).await?;
        }
        marker::unlock(redis, &keys.topics_restoring(), worker_id).await?;
        let n = result?;
        tracing::info!(subscriptions = n, "topic subscriptions restored into Redis");
        restored += n;
    }
    Ok(restored)
}

async fn restore_endpoints(redis: &mut RedisConn, pg: &Pool, keys: &Keys) -> anyhow::Result<usize> {
    let client = pg.get().await?;
    let rows = client
        .query(
            "SELECT endpoint_id, url, event_types, rate_limit_per_s, secret, description,
                    disabled, disabled_reason, version, created_at, updated_at,
                    previous_secret, previous_secret_expires_at
             FROM webhook_endpoints WHERE deleted_at IS NULL",
            &[],
        )
        .await?;
    let mut n = 0;
    for row in rows {
        let e = Endpoint {
            endpoint_id: row.get(0),
            url: row.get(1),
            event_types: row.get(2),
            rate_limit_per_s: row
                .get::<_, Option<i32>>(3)
                .and_then(|r| u32::try_from(r).ok()),
            secret: row.get(4),
            description: row.get(5),
            disabled: row.get(6),
            disabled_reason: row.get(7),
            version: row.get(8),
            created_at: row.get::<_, DateTime<Utc>>(9),
            updated_at: row.get::<_, DateTime<Utc>>(10),
            previous_secret: row.get(11),
            previous_secret_expires_at: row.get(12),
        };
        if endpoints::restore(redis, keys, &e).await? {
            n += 1;
        }
    }
    Ok(n)
}

async fn restore_topics(redis: &mut RedisConn, pg: &Pool, keys: &Keys) -> anyhow::Result<usize> {
    let client = pg.get().await?;
    let rows = client
        .query(
            "SELECT topic, user_id, email, phone FROM topic_subscriptions WHERE NOT deleted",
            &[],
        )
        .await?;
    let mut by_topic: BTreeMap<String, Vec<Recipient>> = BTreeMap::new();
    for row in &rows {
        by_topic.entry(row.get(0)).or_default().push(Recipient {
            user_id: row.get(1),
            email: row.get(2),
            phone: row.get(3),
        });
    }
    for (topic, users) in &by_topic {
        for chunk in users.chunks(1_000) {
            topics::restore(redis, keys, topic, chunk).await?;
        }
    }
    Ok(rows.len())
}
