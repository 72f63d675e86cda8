//! Live site activity: what the batch-worker publishes per site after each committed batch
//! (never one message per event), and where recent visitors are counted.
//!
//! Visitors are counted per minute of processing in HyperLogLog keys
//! (`P:{site:S}:visitors:M`, kept 10 minutes); "visitors in the last 5 minutes" is one
//! `PFCOUNT` over the last five minutes' keys (about 1% error, constant memory per site).
//!
//! Distinct visitors over long ranges are estimated from one HyperLogLog per site, event
//! type and UTC day (see [`day_sketch`]), because an exact count over months of
//! `daily_visitors` rows takes seconds for a busy site.

use crate::channel::Channel;
use crate::keys::Keys;
use redis::RedisResult;
use redis::aio::ConnectionLike;
use serde::{Deserialize, Serialize};

/// How long a minute's visitor sketch is kept.
pub const VISITOR_SKETCH_TTL_SECONDS: i64 = 600;
/// The window of "current visitors".
pub const RECENT_VISITOR_MINUTES: i64 = 5;

/// Published on `P:chan:site:S` after a batch touching site `S` is committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteBatchSummary {
    pub site_id: String,
    /// When the batch was committed, epoch ms.
    pub at_ms: i64,
    /// Events of the site in the batch (newly stored ones).
    pub events: u64,
    pub page_views: u64,
    /// The site's most viewed paths in the batch, most first (at most 10).
    pub paths: Vec<(String, u64)>,
}

impl SiteBatchSummary {
    /// Adds the publication of this summary on its site's channel to `pipe`.
    pub fn publish_in(&self, pipe: &mut redis::Pipeline, keys: &Keys) {
        if let Ok(text) = serde_json::to_string(self) {
            pipe.cmd(crate::channel::publish_command(keys))
                .arg(Channel::Site(self.site_id.clone()).name(keys))
                .arg(text)
                .ignore();
        }
    }
}

/// The visitor sketch of `site_id` for the minute containing `at_ms`.
pub fn visitor_sketch_key(keys: &Keys, site_id: &str, at_ms: i64) -> String {
    keys.site_visitors(site_id, at_ms.div_euclid(60_000))
}

/// The sketches covering the last [`RECENT_VISITOR_MINUTES`] minutes up to `now_ms`.
pub fn recent_visitor_keys(keys: &Keys, site_id: &str, now_ms: i64) -> Vec<String> {
    let minute = now_ms.div_euclid(60_000);
    (0..RECENT_VISITOR_MINUTES)
        .map(|m| keys.site_visitors(site_id, minute - m))
        .collect()
}

/// Adds `users` seen on `site_id` at `now_ms` to the minute's live visitor sketch (the
/// worker, with a batch's acknowledgement).
pub fn add_live_visitors_in<U: redis::ToRedisArgs>(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    site_id: &str,
    users: &[U],
    now_ms: i64,
) {
    let sketch = visitor_sketch_key(keys, site_id, now_ms);
    pipe.cmd("PFADD").arg(&sketch).arg(users).ignore();
    pipe.cmd("EXPIRE")
        .arg(&sketch)
        .arg(VISITOR_SKETCH_TTL_SECONDS)
        .ignore();
}

/// Visitors of `site_id` over the last [`RECENT_VISITOR_MINUTES`] minutes (the gateway).
///
/// # Errors
/// When Redis is unreachable.
pub async fn count_live_visitors<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    site_id: &str,
    now_ms: i64,
) -> RedisResult<u64> {
    redis::cmd("PFCOUNT")
        .arg(recent_visitor_keys(keys, site_id, now_ms))
        .query_async(conn)
        .await
}

/// The contract of the per-day and per-hour visitor sketches between batch-worker and
/// stats-api. A range of whole UTC days is the union of its day sketches; a site in another
/// time zone has local days that begin inside a UTC day, and the partial UTC days at the
/// ends of its ranges are unions of hour sketches.
///
/// - The worker adds the visitors of every batch it stores to their day's sketch, with
///   its acknowledgement and before the batch leaves its processing list, replays
///   included (`PFADD` is idempotent), so a committed visitor is never missing for long.
///   A sketch it creates gets [`day_sketch::TTL_SECONDS`] (`EXPIRE .. NX`), so days nobody
///   asks about do not stay in Redis.
/// - A sketch alone proves nothing (it may have been created after its day began, or
///   Redis may have restarted). stats-api trusts a day's sketch only while its
///   "complete" marker exists; otherwise it adds every visitor PostgreSQL has for that day
///   (any visitor committed later is added by the worker), then sets the marker for
///   `TTL_SECONDS` and extends the sketch to outlive it by [`day_sketch::MARGIN_SECONDS`].
pub mod day_sketch {
    use crate::keys::Keys;
    use chrono::NaiveDate;
    use redis::RedisResult;
    use redis::aio::ConnectionLike;

    /// How long a built day sketch is trusted (then rebuilt from PostgreSQL when asked for).
    pub const TTL_SECONDS: i64 = 7 * 24 * 3600;
    /// How much longer than its marker a sketch lives.
    pub const MARGIN_SECONDS: i64 = 3600;

    /// The worker's side: adds a batch's `users` of one site, event type and UTC day to
    /// `pipe` (sent with the batch's acknowledgement).
    pub fn add_in<U: redis::ToRedisArgs>(
        pipe: &mut redis::Pipeline,
        keys: &Keys,
        site_id: &str,
        event_type: &str,
        day: NaiveDate,
        users: &[U],
    ) {
        let key = keys.site_day_visitors(site_id, event_type, &day.to_string());
        pipe.cmd("PFADD").arg(&key).arg(users).ignore();
        pipe.cmd("EXPIRE")
            .arg(&key)
            .arg(TTL_SECONDS)
            .arg("NX")
            .ignore();
    }

    /// The worker's side for one UTC hour (`hour` in epoch hours).
    pub fn add_hour_in<U: redis::ToRedisArgs>(
        pipe: &mut redis::Pipeline,
        keys: &Keys,
        site_id: &str,
        event_type: &str,
        hour: i64,
        users: &[U],
    ) {
        let key = keys.site_hour_visitors(site_id, event_type, hour);
        pipe.cmd("PFADD").arg(&key).arg(users).ignore();
        pipe.cmd("EXPIRE")
            .arg(&key)
            .arg(TTL_SECONDS)
            .arg("NX")
            .ignore();
    }

    /// The epoch hours of UTC day `day`.
    pub fn hours_of(day: NaiveDate) -> std::ops::Range<i64> {
        let first = day.and_time(chrono::NaiveTime::MIN).and_utc().timestamp() / 3600;
        first..first + 24
    }

    /// Which of `days` have a sketch known to hold every visitor PostgreSQL has (the day's
    /// hour sketches included).
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn complete<C: ConnectionLike + Send + Sync>(
        conn: &mut C,
        keys: &Keys,
        site_id: &str,
        event_type: &str,
        days: &[NaiveDate],
    ) -> RedisResult<Vec<bool>> {
        if days.is_empty() {
            return Ok(Vec::new());
        }
        let markers: Vec<String> = days
            .iter()
            .map(|d| keys.site_day_visitors_complete(site_id, event_type, &d.to_string()))
            .collect();
        let found: Vec<Option<String>> = redis::cmd("MGET").arg(&markers).query_async(conn).await?;
        Ok(found.iter().map(Option::is_some).collect())
    }

    /// The reader's rebuild: adds `users` (a chunk of what PostgreSQL has for the day) to
    /// the day's sketch; an empty chunk still creates the sketch.
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn add<C: ConnectionLike + Send + Sync>(
        conn: &mut C,
        keys: &Keys,
        site_id: &str,
        event_type: &str,
        day: NaiveDate,
        users: &[String],
    ) -> RedisResult<()> {
        redis::cmd("PFADD")
            .arg(keys.site_day_visitors(site_id, event_type, &day.to_string()))
            .arg(users)
            .query_async(conn)
            .await
    }

    /// The reader's rebuild of hour sketches: adds `users` to the sketch of `hour`.
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn add_hour<C: ConnectionLike + Send + Sync>(
        conn: &mut C,
        keys: &Keys,
        site_id: &str,
        event_type: &str,
        hour: i64,
        users: &[&str],
    ) -> RedisResult<()> {
        redis::cmd("PFADD")
            .arg(keys.site_hour_visitors(site_id, event_type, hour))
            .arg(users)
            .query_async(conn)
            .await
    }

    /// Ends a rebuild: the day's sketches hold every visitor of the day, so they are
    /// trusted for [`TTL_SECONDS`] and outlive their marker by [`MARGIN_SECONDS`] (a
    /// marker never vouches for a sketch that is gone).
    ///
    /// # Errors
    /// When Redis is unreachable (the day is rebuilt again next time).
    pub async fn mark_complete<C: ConnectionLike + Send + Sync>(
        conn: &mut C,
        keys: &Keys,
        site_id: &str,
        event_type: &str,
        day: NaiveDate,
    ) -> RedisResult<()> {
        let hours = hours_of(day);
        let day = day.to_string();
        let mut pipe = redis::pipe();
        for hour in hours {
            pipe.cmd("EXPIRE")
                .arg(keys.site_hour_visitors(site_id, event_type, hour))
                .arg(TTL_SECONDS + MARGIN_SECONDS)
                .ignore();
        }
        pipe.cmd("EXPIRE")
            .arg(keys.site_day_visitors(site_id, event_type, &day))
            .arg(TTL_SECONDS + MARGIN_SECONDS)
            .ignore()
            .cmd("SET")
            .arg(keys.site_day_visitors_complete(site_id, event_type, &day))
            .arg("1")
            .arg("EX")
            .arg(TTL_SECONDS)
            .ignore()
            .query_async(conn)
            .await
    }

    /// Distinct visitors over whole UTC `days` and single UTC `hours` (epoch hours): a
    /// HyperLogLog union, about 1% standard error.
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn count<C: ConnectionLike + Send + Sync>(
        conn: &mut C,
        keys: &Keys,
        site_id: &str,
        event_type: &str,
        days: &[NaiveDate],
        hours: &[i64],
    ) -> RedisResult<i64> {
        if days.is_empty() && hours.is_empty() {
            return Ok(0);
        }
        let sketches: Vec<String> = days
            .iter()
            .map(|d| keys.site_day_visitors(site_id, event_type, &d.to_string()))
            .chain(
                hours
                    .iter()
                    .map(|h| keys.site_hour_visitors(site_id, event_type, *h)),
            )
            .collect();
        redis::cmd("PFCOUNT").arg(&sketches).query_async(conn).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_keys_cover_five_minutes_in_one_hash_slot() {
        let keys = Keys::new("t");
        let recent = recent_visitor_keys(&keys, "s", 600_000);
        assert_eq!(recent.len(), 5);
        assert_eq!(recent[0], visitor_sketch_key(&keys, "s", 600_000));
        assert!(recent.iter().all(|k| crate::keys::hash_tag(k) == "site:s"));
    }

    #[test]
    fn a_sites_day_sketches_and_markers_share_its_hash_slot() {
        let keys = Keys::new("t");
        let days = [
            keys.site_day_visitors("s", "page_view", "2025-11-14"),
            keys.site_day_visitors("s", "click", "2025-11-15"),
            keys.site_day_visitors_complete("s", "page_view", "2025-11-14"),
            keys.site_hour_visitors("s", "page_view", 490_000),
        ];
        assert!(days.iter().all(|k| crate::keys::hash_tag(k) == "site:s"));
        assert_ne!(days[0], days[2]);
    }
}
