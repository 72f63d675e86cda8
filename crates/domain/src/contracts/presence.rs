//! Presence: how many browsers watch a topic, summed over every gateway process.
//!
//! Each gateway reports, every few seconds, how many of its streams read each topic it
//! serves: a field of the topic's presence hash, `gateway id → "count|expires_ms"`. A
//! reader (gateways announcing the total, stats-api) sums the fields that have not
//! expired, so a gateway that died stops counting within one expiry, without anyone
//! cleaning up after it.
//!
//! | key | type | meaning |
//! | --- | --- | --- |
//! | `P:presence:poll:ID`, `P:presence:site:S` | hash | gateway id → `count|expires_ms` |

use crate::channel::Channel;
use crate::keys::Keys;
use redis::RedisResult;
use redis::aio::ConnectionLike;
use std::collections::HashMap;

/// The presence hash of `channel`.
pub fn key(keys: &Keys, channel: &Channel) -> String {
    format!("{}:presence:{}", keys.prefix(), channel.topic())
}

/// Adds "gateway `gateway_id` has `count` watchers of `channel`, valid until
/// `expires_ms`" to `pipe` (a count of 0 removes the gateway's field).
pub fn report_in(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    channel: &Channel,
    gateway_id: &str,
    count: u64,
    expires_ms: i64,
) {
    let key = key(keys, channel);
    if count == 0 {
        pipe.cmd("HDEL").arg(&key).arg(gateway_id).ignore();
        return;
    }
    pipe.cmd("HSET")
        .arg(&key)
        .arg(gateway_id)
        .arg(format!("{count}|{expires_ms}"))
        .ignore();
    // The hash outlives every field written now, and disappears when no gateway reports.
    pipe.cmd("PEXPIREAT").arg(&key).arg(expires_ms).ignore();
}

fn sum(fields: &HashMap<String, String>, now_ms: i64) -> u64 {
    fields
        .values()
        .filter_map(|v| v.split_once('|'))
        .filter(|(_, exp)| exp.parse::<i64>().is_ok_and(|e| e > now_ms))
        .filter_map(|(count, _)| count.parse::<u64>().ok())
        .sum()
}

/// Watchers of each of `channels` at `now_ms`, over every gateway.
///
/// # Errors
/// When Redis is unreachable.
pub async fn counts<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    channels: &[Channel],
    now_ms: i64,
) -> RedisResult<Vec<u64>> {
    if channels.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for c in channels {
        pipe.cmd("HGETALL").arg(key(keys, c));
    }
    let all: Vec<HashMap<String, String>> = pipe.query_async(conn).await?;
    Ok(all.iter().map(|f| sum(f, now_ms)).collect())
}

/// Watchers of `channel` at `now_ms`, over every gateway.
///
/// # Errors
/// When Redis is unreachable.
pub async fn count<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    channel: &Channel,
    now_ms: i64,
) -> RedisResult<u64> {
    Ok(counts(conn, keys, std::slice::from_ref(channel), now_ms)
        .await?
        .first()
        .copied()
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_reports_do_not_count() {
        let fields: HashMap<String, String> = [
            ("g1".to_string(), "10|2000".to_string()),
            ("g2".to_string(), "5|1000".to_string()),
            ("g3".to_string(), "garbage".to_string()),
        ]
        .into_iter()
        .collect();
        assert_eq!(sum(&fields, 1500), 10);
        assert_eq!(sum(&fields, 500), 15);
    }
}
