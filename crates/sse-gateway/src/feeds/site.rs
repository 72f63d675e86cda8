//! A site's live activity: the batch-worker publishes one summary per committed batch
//! touching the site; this feed keeps the last five minutes of them in ten-second buckets
//! and renders events per interval, top paths and (from the worker's per-minute sketches)
//! visitors over the last five minutes.

use crate::hub::{Feed, Offer, Position, Update};
use domain::keys::Keys;
use domain::redis::RedisConn;
use domain::site::SiteBatchSummary;
use futures_util::future::BoxFuture;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// The feed of one site's topic.
pub struct SiteFeed {
    site_id: String,
    window: Mutex<SiteWindow>,
    keys: Keys,
    /// Counts recent visitors; without it (unit tests) they read 0.
    redis: Option<RedisConn>,
}

impl SiteFeed {
    pub fn new(site_id: String, keys: Keys, redis: Option<RedisConn>) -> Self {
        Self {
            site_id,
            window: Mutex::new(SiteWindow::default()),
            keys,
            redis,
        }
    }

    fn window(&self) -> std::sync::MutexGuard<'_, SiteWindow> {
        self.window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn visitors(&self, now_ms: i64) -> u64 {
        let Some(redis) = &self.redis else {
            return 0;
        };
        domain::site::count_live_visitors(&mut redis.clone(), &self.keys, &self.site_id, now_ms)
            .await
            .unwrap_or_else(|e| {
                tracing::debug!(error = %e, "could not count recent visitors");
                0
            })
    }
}

impl Feed for SiteFeed {
    fn on_message(&self, payload: &str) -> Option<Offer> {
        let summary: SiteBatchSummary = serde_json::from_str(payload).ok()?;
        self.window().add(&summary);
        Some(Offer::Changed)
    }

    fn render(&self, position: Position) -> BoxFuture<'_, Option<Update>> {
        Box::pin(async move {
            let now = chrono::Utc::now();
            let now_ms = now.timestamp_millis();
            let aggregate = self.window().aggregate(now_ms);
            let visitors = self.visitors(now_ms).await;
            let data = serde_json::json!({
                "site_id": self.site_id,
                "at": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "visitors_last_5m": visitors,
                "events_last_10s": aggregate.events_last_10s,
                "events_per_second": aggregate.events_per_second,
                "events_last_5m": aggregate.events_last_5m,
                "page_views_last_5m": aggregate.page_views_last_5m,
                "top_paths": aggregate.top_paths,
            });
            Some(Update::new("activity", position, data.to_string()))
        })
    }
}

/// Width of one bucket of a site's activity window.
const BUCKET_MS: i64 = 10_000;
/// Buckets kept: five minutes.
const BUCKETS: usize = 30;
/// Paths remembered per bucket (the summaries carry each batch's top 10).
const MAX_PATHS_PER_BUCKET: usize = 500;

#[derive(Default)]
struct Bucket {
    start_ms: i64,
    events: u64,
    page_views: u64,
    paths: HashMap<String, u64>,
}

/// A site's last five minutes of batch summaries, in ten-second buckets.
#[derive(Default)]
pub struct SiteWindow {
    buckets: VecDeque<Bucket>,
}

/// A site's live activity, without the visitor count (filled from Redis).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SiteAggregate {
    pub events_last_10s: u64,
    pub events_per_second: f64,
    pub events_last_5m: u64,
    pub page_views_last_5m: u64,
    pub top_paths: Vec<PathViews>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PathViews {
    pub path: String,
    pub views: u64,
}

impl SiteWindow {
    pub fn add(&mut self, s: &SiteBatchSummary) {
        let start = s.at_ms - s.at_ms.rem_euclid(BUCKET_MS);
        if self.buckets.back().is_none_or(|b| b.start_ms != start) {
            self.buckets.push_back(Bucket {
                start_ms: start,
                ..Default::default()
            });
        }
        while self.buckets.len() > BUCKETS {
            self.buckets.pop_front();
        }
        if let Some(b) = self.buckets.back_mut() {
            b.events += s.events;
            b.page_views += s.page_views;
            for (path, n) in &s.paths {
                if b.paths.len() < MAX_PATHS_PER_BUCKET || b.paths.contains_key(path) {
                    *b.paths.entry(path.clone()).or_default() += n;
                }
            }
        }
    }

    pub fn aggregate(&self, now_ms: i64) -> SiteAggregate {
        let recent: Vec<&Bucket> = self
            .buckets
            .iter()
            .filter(|b| b.start_ms > now_ms - (BUCKETS as i64) * BUCKET_MS)
            .collect();
        let last_10s: u64 = recent
            .iter()
            .filter(|b| b.start_ms > now_ms - 2 * BUCKET_MS)
            .map(|b| b.events)
            .sum();
        let mut paths: HashMap<&str, u64> = HashMap::new();
        for b in &recent {
            for (p, n) in &b.paths {
                *paths.entry(p).or_default() += n;
            }
        }
        let mut top: Vec<PathViews> = paths
            .into_iter()
            .map(|(p, n)| PathViews {
                path: p.to_string(),
                views: n,
            })
            .collect();
        top.sort_unstable_by(|a, b| b.views.cmp(&a.views).then_with(|| a.path.cmp(&b.path)));
        top.truncate(10);
        SiteAggregate {
            events_last_10s: last_10s,
            events_per_second: last_10s as f64 / 20.0,
            events_last_5m: recent.iter().map(|b| b.events).sum(),
            page_views_last_5m: recent.iter().map(|b| b.page_views).sum(),
            top_paths: top,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_site_window_ranks_paths_over_five_minutes() {
        let mut w = SiteWindow::default();
        let s = |at_ms, events, paths: &[(&str, u64)]| SiteBatchSummary {
            site_id: "s".into(),
            at_ms,
            events,
            page_views: events,
            paths: paths.iter().map(|(p, n)| (p.to_string(), *n)).collect(),
        };
        w.add(&s(1_000_000, 5, &[("/a", 3), ("/b", 2)]));
        w.add(&s(1_005_000, 4, &[("/b", 4)]));
        w.add(&s(1_200_000, 1, &[("/c", 1)]));
        let agg = w.aggregate(1_205_000);
        assert_eq!(agg.events_last_5m, 10);
        assert_eq!(agg.events_last_10s, 1);
        assert_eq!(
            agg.top_paths[0],
            PathViews {
                path: "/b".into(),
                views: 6
            }
        );
        let later = w.aggregate(1_000_000 + 400_000);
        assert_eq!(later.events_last_5m, 1, "old buckets age out");
    }
}
