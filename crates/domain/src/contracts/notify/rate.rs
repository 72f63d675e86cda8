//! Per-endpoint rate limits shared by every worker (`endpoint_rate.lua`, GCRA).

use crate::keys::Keys;
use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};
use std::sync::LazyLock;
use std::time::Duration;

static RATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/endpoint_rate.lua")));

/// Takes one delivery from endpoint `endpoint_id`'s allowance of `per_second`: `None` when
/// it may go now, else how long to wait.
///
/// # Errors
/// When Redis is unreachable.
pub async fn take<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    endpoint_id: &str,
    per_second: u32,
    now_ms: i64,
) -> RedisResult<Option<Duration>> {
    let interval = 1000.0 / f64::from(per_second.max(1));
    let tolerance = (1000.0 - interval).max(0.0);
    let wait: i64 = RATE
        .key(keys.endpoint_rate(endpoint_id))
        .arg(now_ms)
        .arg(interval)
        .arg(tolerance)
        .invoke_async(conn)
        .await?;
    Ok((wait > 0).then(|| Duration::from_millis(u64::try_from(wait).unwrap_or(0))))
}
