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

use crate::keys::Keys;
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

/// The contract of the per-day visitor sketches between batch-worker and stats-api.
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
    /// How long a built day sketch is trusted (then rebuilt from PostgreSQL when asked for).
    pub const TTL_SECONDS: i64 = 7 * 24 * 3600;
    /// How much longer than its marker a sketch lives.
    pub const MARGIN_SECONDS: i64 = 3600;
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
        ];
        assert!(days.iter().all(|k| crate::keys::hash_tag(k) == "site:s"));
        assert_ne!(days[0], days[2]);
    }
}
