//! Live site activity: what the batch-worker publishes per site after each committed batch
//! (never one message per event), and where recent visitors are counted.
//!
//! Visitors are counted per minute of processing in HyperLogLog keys
//! (`P:{site:S}:visitors:M`, kept 10 minutes); "visitors in the last 5 minutes" is one
//! `PFCOUNT` over the last five minutes' keys (about 1% error, constant memory per site).

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
}
