//! Putting the site registry back into Redis after Redis lost it (restarted empty,
//! flushed), the way [`crate::votes::restore`] does for polls: while the registry's
//! "restored" marker is missing, a worker holding the restore lock loads every site from
//! PostgreSQL into the mirror (never over a newer version a change wrote meanwhile), raises
//! the version counter above every version PostgreSQL holds, then sets the marker.

use chrono::{DateTime, Utc};
use domain::deadpool_postgres::Pool;
use domain::keys::Keys;
use domain::redis::RedisConn;
use domain::site_registry::{self, Site, marker};

/// How long a restorer may hold the lock before another may take over.
const LOCK_TTL_MS: u64 = 120_000;

/// Restores the registry when its marker is missing. Returns the number of sites put back.
///
/// # Errors
/// When Redis or PostgreSQL fails (the marker stays unset; the next check retries).
pub async fn restore_if_missing(
    redis: &mut RedisConn,
    pg: &Pool,
    keys: &Keys,
    worker_id: &str,
) -> anyhow::Result<usize> {
    let (_, restored) = site_registry::version(redis, keys).await?;
    if restored || !marker::lock(redis, keys, worker_id, LOCK_TTL_MS).await? {
        return Ok(0);
    }
    let result = restore(redis, pg, keys).await;
    if result.is_ok() {
        marker::set_restored(redis, keys).await?;
    }
    marker::unlock(redis, keys, worker_id).await?;
    let n = result?;
    metrics::counter!("batch_worker_sites_restored_total").increment(n as u64);
    tracing::info!(sites = n, "site registry restored into Redis");
    Ok(n)
}

async fn restore(redis: &mut RedisConn, pg: &Pool, keys: &Keys) -> anyhow::Result<usize> {
    let client = pg.get().await?;
    let newest: Option<i64> = client
        .query_one("SELECT max(version) FROM sites", &[])
        .await?
        .get(0);
    let rows = client
        .query(
            "SELECT site_id, domains, timezone, public, version, created_at, updated_at,
                    goals::text, funnels::text
             FROM sites WHERE deleted_at IS NULL",
            &[],
        )
        .await?;
    let mut restored = 0;
    for row in rows {
        let site = Site {
            site_id: row.get(0),
            domains: row.get(1),
            timezone: row.get(2),
            public: row.get(3),
            goals: serde_json::from_str(row.get(7))?,
            funnels: serde_json::from_str(row.get(8))?,
            version: row.get(4),
            created_at: row.get::<_, DateTime<Utc>>(5),
            updated_at: row.get::<_, DateTime<Utc>>(6),
        };
        if site_registry::restore(redis, keys, &site).await? {
            restored += 1;
        }
    }
    site_registry::raise_version(redis, keys, newest.unwrap_or(0)).await?;
    Ok(restored)
}
