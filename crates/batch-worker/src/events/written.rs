//! What a stored batch of events changed, and what that tells Redis with the batch's
//! acknowledgement: visitors into their day and hour sketches (replays included: a crash after the
//! commit must not leave a committed visitor out), stats cache generations bumped, and each
//! site's live activity (visitor sketch of the minute, one summary message per site).

use crate::lane::Outcome;
use domain::keys::Keys;
use domain::site::SiteBatchSummary;
use std::collections::HashMap;

/// What a stored batch of events changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EventsWritten {
    /// Events newly written (replays are not counted).
    pub inserted: u64,
    /// Events set aside until their sites' settings changes are done (see
    /// [`super::waiting`]).
    pub waiting: u64,
    /// Sites whose stats changed: their cache generation is bumped and their activity
    /// published.
    pub sites: HashMap<String, SiteBatch>,
    /// Visitors of the batch per site, event type and day, replays included.
    pub visitor_days: Vec<VisitorDay>,
    /// The same per site, event type and UTC hour.
    pub visitor_hours: Vec<VisitorHour>,
}

/// The visitors one batch had on one site, event type and UTC hour.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VisitorHour {
    pub site_id: String,
    pub event_type: String,
    /// Epoch hours.
    pub hour: i64,
    pub users: Vec<String>,
}

/// The visitors one batch had on one site, event type and UTC day.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VisitorDay {
    pub site_id: String,
    pub event_type: String,
    pub day: chrono::NaiveDate,
    pub users: Vec<String>,
}

/// One site's share of a stored batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SiteBatch {
    pub events: u64,
    pub page_views: u64,
    /// Most viewed paths, most first (at most 10).
    pub paths: Vec<(String, u64)>,
}

/// Paths a site's summary carries: the most viewed first, then by path.
pub const TOP_PATHS: usize = 10;

/// Cuts `paths` to the [`TOP_PATHS`] most viewed, most first.
pub fn keep_top_paths(paths: &mut Vec<(String, u64)>) {
    paths.sort_unstable_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    paths.truncate(TOP_PATHS);
}

impl Outcome for EventsWritten {
    /// Events taken in: written, or set aside to be written (the queue is done with both).
    fn inserted(&self) -> u64 {
        self.inserted + self.waiting
    }

    fn merge(&mut self, other: Self) {
        self.inserted += other.inserted;
        self.waiting += other.waiting;
        self.visitor_days.extend(other.visitor_days);
        self.visitor_hours.extend(other.visitor_hours);
        for (site, batch) in other.sites {
            let into = self.sites.entry(site).or_default();
            into.events += batch.events;
            into.page_views += batch.page_views;
            for (path, n) in batch.paths {
                match into.paths.iter_mut().find(|(p, _)| *p == path) {
                    Some((_, m)) => *m += n,
                    None => into.paths.push((path, n)),
                }
            }
            keep_top_paths(&mut into.paths);
        }
    }
}

impl EventsWritten {
    /// Adds every Redis side effect of this batch to `pipe` (its acknowledgement).
    pub fn effects_in(&self, pipe: &mut domain::redis_client::Pipeline, keys: &Keys, now_ms: i64) {
        for v in &self.visitor_days {
            domain::site::day_sketch::add_in(
                pipe,
                keys,
                &v.site_id,
                &v.event_type,
                v.day,
                &v.users,
            );
            domain::site::add_live_visitors_in(pipe, keys, &v.site_id, &v.users, now_ms);
        }
        for v in &self.visitor_hours {
            domain::site::day_sketch::add_hour_in(
                pipe,
                keys,
                &v.site_id,
                &v.event_type,
                v.hour,
                &v.users,
            );
        }
        domain::cache::bump_sites(pipe, keys, self.sites.keys().map(String::as_str));
        for (site, batch) in &self.sites {
            SiteBatchSummary {
                site_id: site.clone(),
                at_ms: now_ms,
                events: batch.events,
                page_views: batch.page_views,
                paths: batch.paths.clone(),
            }
            .publish_in(pipe, keys);
        }
    }
}
