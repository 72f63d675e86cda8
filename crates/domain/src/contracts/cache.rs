//! The stats cache contract between batch-worker (writer of data) and stats-api (reader).
//!
//! Each site has a generation counter that the worker increments after every commit that
//! touched the site. stats-api stores each answer in the site's cache hash prefixed by the
//! generation it read *before* querying PostgreSQL, and serves a cached answer only while
//! that generation is current. An answer computed concurrently with a commit is therefore
//! at worst labelled older than it is (and recomputed), never served stale: a reader waits
//! at most one batch for fresh numbers. No key is ever scanned or deleted by pattern.

use crate::keys::Keys;
use redis::RedisResult;
use redis::aio::ConnectionLike;

/// How long a cached answer lives without being written again.
pub const CACHE_TTL_SECONDS: i64 = 300;

/// The answers one site's cache hash holds at most. Each distinct question (range, limit,
/// filters) is an entry, and a client can ask a million of them within the TTL: at the
/// bound the hash is emptied and starts over (a few recomputed answers, no unbounded key).
pub const MAX_CACHED_ANSWERS_PER_SITE: i64 = 1_000;

static STORE: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("lua/cache_store.lua")));

/// Adds "bump the generation of these sites" to a pipeline (the worker sends it with its
/// acknowledgement).
pub fn bump_sites<'a>(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    sites: impl IntoIterator<Item = &'a str>,
) {
    for site in sites {
        pipe.cmd("INCR").arg(keys.site_generation(site)).ignore();
    }
}

/// A cache lookup: the current generation, and the answer if it is for that generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub generation: u64,
    pub hit: Option<String>,
}

/// Reads the generation and the cached answer for `signature` in one round trip.
///
/// # Errors
/// When Redis is unreachable (callers fall back to PostgreSQL).
pub async fn lookup<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    site_id: &str,
    signature: &str,
) -> RedisResult<Lookup> {
    let (generation, cached): (Option<u64>, Option<String>) = redis::pipe()
        .cmd("GET")
        .arg(keys.site_generation(site_id))
        .cmd("HGET")
        .arg(keys.site_cache(site_id))
        .arg(signature)
        .query_async(conn)
        .await?;
    let generation = generation.unwrap_or(0);
    let hit = cached.and_then(|v| {
        let (g, body) = v.split_once('|')?;
        (g.parse::<u64>().ok()? == generation).then(|| body.to_string())
    });
    Ok(Lookup { generation, hit })
}

/// Stores an answer computed after reading `generation`.
///
/// # Errors
/// When Redis is unreachable (the answer is just not cached).
pub async fn store<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    site_id: &str,
    signature: &str,
    generation: u64,
    body: &str,
) -> RedisResult<()> {
    STORE
        .key(keys.site_cache(site_id))
        .arg(signature)
        .arg(format!("{generation}|{body}"))
        .arg(CACHE_TTL_SECONDS)
        .arg(MAX_CACHED_ANSWERS_PER_SITE)
        .invoke_async(conn)
        .await
}
