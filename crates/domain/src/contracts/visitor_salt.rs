//! The daily salt of visitor ids: a random secret per UTC day, kept only in Redis.
//!
//! A visitor without a `user_id` is counted by `keyed hash(salt of the day, site, client
//! address, User-Agent)` (see ingest-api). The salt rotates at 00:00 UTC (a new day's key)
//! and expires 48 hours after it was made, so nobody, the operator included, can link a
//! visitor across days or recompute an id from a database dump: the inputs are never
//! stored and the salt is gone.
//!
//! Whoever first needs a day's salt creates it (`SET .. NX`); every ingest-api process
//! then reads the same value.

use crate::keys::Keys;
use chrono::NaiveDate;
use redis::RedisResult;
use redis::aio::ConnectionLike;

/// How long a salt lives after it was made.
pub const SALT_TTL_SECONDS: i64 = 48 * 3600;

/// The salt of `day`, created if it does not exist yet.
///
/// # Errors
/// When Redis is unreachable.
pub async fn get_or_create<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    day: NaiveDate,
) -> RedisResult<Vec<u8>> {
    let key = keys.visitor_salt(&day.to_string());
    let fresh: [u8; 32] = rand_bytes();
    let (salt,): (Vec<u8>,) = redis::pipe()
        .cmd("SET")
        .arg(&key)
        .arg(&fresh[..])
        .arg("NX")
        .arg("EX")
        .arg(SALT_TTL_SECONDS)
        .ignore()
        .cmd("GET")
        .arg(&key)
        .query_async(conn)
        .await?;
    Ok(salt)
}

/// 244 random bits from two v4 UUIDs (uuid's generator is a CSPRNG seeded by the OS).
fn rand_bytes() -> [u8; 32] {
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(a.as_bytes());
    out[16..].copy_from_slice(b.as_bytes());
    out
}
