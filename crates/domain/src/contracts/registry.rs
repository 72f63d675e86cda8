//! What the registries share (sites, webhook endpoints; topic subscriptions use the
//! markers): records kept as Redis hashes of strings, a set of their ids, a version counter
//! raised by every change, a "restored" marker and a restore lock. Each registry maps the
//! records to its own type.

use redis::RedisResult;
use redis::aio::ConnectionLike;
use std::collections::HashMap;

/// A registry record, as its hash holds it.
pub type Record = HashMap<String, String>;

/// The record at `key`, if any.
///
/// # Errors
/// When Redis is unreachable.
pub async fn record<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    key: &str,
) -> RedisResult<Option<Record>> {
    let record: Record = redis::cmd("HGETALL").arg(key).query_async(conn).await?;
    Ok((!record.is_empty()).then_some(record))
}

/// A registry's version and whether it is complete in Redis, in one round trip (a reader
/// reloads when the version moved).
///
/// # Errors
/// When Redis is unreachable.
pub async fn version<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    version_key: &str,
    restored_key: &str,
) -> RedisResult<(i64, bool)> {
    let (version, restored): (Option<i64>, bool) = redis::pipe()
        .cmd("GET")
        .arg(version_key)
        .cmd("EXISTS")
        .arg(restored_key)
        .query_async(conn)
        .await?;
    Ok((version.unwrap_or(0), restored))
}

/// Every record of a registry (its ids in `ids_key`, each record at `record_key(id)`),
/// read 500 at a time.
///
/// # Errors
/// When Redis is unreachable.
pub async fn records<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    ids_key: &str,
    record_key: impl Fn(&str) -> String,
) -> RedisResult<Vec<Record>> {
    let ids: Vec<String> = redis::cmd("SMEMBERS")
        .arg(ids_key)
        .query_async(conn)
        .await?;
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("HGETALL").arg(record_key(id));
        }
        let records: Vec<Record> = pipe.query_async(conn).await?;
        out.extend(records.into_iter().filter(|r| !r.is_empty()));
    }
    Ok(out)
}

/// "Restored" markers and restore locks: a registry Redis lost answers "restoring" until
/// a worker holding its lock has put it back from PostgreSQL and set its marker.
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

    /// Whether every registry a write may need is in Redis: the site registry, the webhook
    /// endpoints, the topic subscriptions and every vote shard's polls (a write finding
    /// one missing answers 503 "restoring").
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn all_set<C: ConnectionLike + Send + Sync>(
        conn: &mut C,
        keys: &crate::keys::Keys,
    ) -> RedisResult<bool> {
        let markers = [
            keys.sites_restored(),
            keys.endpoints_restored(),
            keys.topics_restored(),
        ]
        .into_iter()
        .chain((0..crate::keys::VOTE_SHARDS).map(|s| keys.vote_shard_restored(s)));
        // One by one: in a cluster the markers live in different slots.
        for marker in markers {
            if !is_set(conn, &marker).await? {
                return Ok(false);
            }
        }
        Ok(true)
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
