//! Analytics events: stored with their rollups in one transaction ([`store`], [`rollups`]),
//! then the Redis side effects of what was committed ([`written`]): day visitor sketches,
//! stats cache generations, live site activity. [`partitions`] makes each month's
//! partition of `events` before its first batch; [`retention`] expires old raw events;
//! [`visits`] keeps the visits of the events in their transaction.

pub mod enrich;
pub mod partitions;
pub mod referrers;
pub mod retention;
pub mod rollups;
pub mod store;
pub mod visits;
pub mod written;

use crate::lane::{Outcome, StoreError, Work};
use domain::deadpool_postgres::Pool;
use domain::event::QueuedEvent;
use domain::keys::Keys;
use futures_util::future::BoxFuture;
use tracing::Instrument;
use written::EventsWritten;

/// Distinct visitors one transaction may lock (one advisory lock each, see
/// [`visits::store`]). PostgreSQL's lock table holds `max_locks_per_transaction` ×
/// `max_connections` entries (6,400 by default) for every session together, so a batch of
/// 20,000 events from as many visitors cannot lock them all at once: it is stored in
/// transactions of at most this many visitors. Each is whole and idempotent on its own (a
/// replay inserts nothing a committed one stored), so a crash between them loses nothing.
pub const MAX_VISITORS_PER_TRANSACTION: usize = 500;

/// Consecutive runs of `events` holding at most `max` distinct visitors each.
pub fn visitor_chunks<'e, 'i>(
    events: &'e [QueuedEvent<'i>],
    max: usize,
) -> Vec<&'e [QueuedEvent<'i>]> {
    let mut chunks = Vec::new();
    let mut seen: std::collections::HashSet<(&str, &str)> = std::collections::HashSet::new();
    let mut start = 0;
    for (i, e) in events.iter().enumerate() {
        let Some(visitor) = e.user_id.as_deref() else {
            continue;
        };
        if !seen.contains(&(e.site_id.as_ref(), visitor)) {
            if seen.len() == max {
                chunks.push(&events[start..i]);
                start = i;
                seen.clear();
            }
            seen.insert((e.site_id.as_ref(), visitor));
        }
    }
    if start < events.len() || chunks.is_empty() {
        chunks.push(&events[start..]);
    }
    chunks
}

/// The events queue's work: analytics events into `events` and the rollups.
pub struct EventWork {
    pub pg: Pool,
    pub keys: Keys,
    /// The months known to have their partition of `events`.
    pub partitions: partitions::Partitions,
}

impl Work for EventWork {
    type Item<'a> = QueuedEvent<'a>;
    type Outcome = EventsWritten;
    const NAME: &'static str = "events";

    fn parse<'a>(&self, raw: &'a [u8]) -> Result<QueuedEvent<'a>, String> {
        domain::event::parse_queued_event(raw).map_err(|e| e.to_string())
    }

    fn traceparent<'a>(&self, item: &'a QueuedEvent<'_>) -> Option<&'a str> {
        item.traceparent.as_deref()
    }

    fn write<'s, 'i: 's>(
        &'s self,
        events: &'s [QueuedEvent<'i>],
    ) -> BoxFuture<'s, Result<EventsWritten, StoreError>> {
        let span = tracing::info_span!(
            "postgres.write",
            tables = "events, rollups",
            rows = events.len()
        );
        Box::pin(
            async move {
                self.partitions.ensure(&self.pg, events).await?;
                let mut written = EventsWritten::default();
                for chunk in visitor_chunks(events, MAX_VISITORS_PER_TRANSACTION) {
                    written.merge(store::store_events(&self.pg, chunk).await?);
                }
                Ok(written)
            }
            .instrument(span),
        )
    }

    fn on_commit(&self, pipe: &mut domain::redis_client::Pipeline, written: &EventsWritten) {
        written.effects_in(pipe, &self.keys, chrono::Utc::now().timestamp_millis());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn chunks_hold_at_most_max_visitors_and_every_event_once() {
        let body = br#"{"events":[
            {"site_id":"s","event_type":"e","timestamp":"2025-11-14T10:00:00Z","user_id":"a"},
            {"site_id":"s","event_type":"e","timestamp":"2025-11-14T10:00:00Z","user_id":"b"},
            {"site_id":"s","event_type":"e","timestamp":"2025-11-14T10:00:00Z","user_id":"a"},
            {"site_id":"s","event_type":"e","timestamp":"2025-11-14T10:00:00Z"},
            {"site_id":"s","event_type":"e","timestamp":"2025-11-14T10:00:00Z","user_id":"c"},
            {"site_id":"t","event_type":"e","timestamp":"2025-11-14T10:00:00Z","user_id":"a"}
        ]}"#;
        let events = domain::event::parse_event_body(body, Utc::now(), None).expect("valid");
        let sizes: Vec<usize> = visitor_chunks(&events, 2).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![4, 2]);
        let sizes: Vec<usize> = visitor_chunks(&events, 500)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes, vec![6]);
        assert_eq!(visitor_chunks(&events[..0], 2).len(), 1);
    }
}
