//! Analytics events: stored with their rollups in one transaction ([`store`], [`rollups`]),
//! then the Redis side effects of what was committed ([`written`]): day visitor sketches,
//! stats cache generations, live site activity. [`partitions`] makes each month's
//! partition of `events` before its first batch; [`retention`] expires old raw events;
//! [`visits`] keeps the visits of the events in their transaction; [`waiting`] holds the
//! events of sites whose settings are being changed.

pub mod enrich;
pub mod partitions;
pub mod referrers;
pub mod retention;
pub mod rollups;
pub mod store;
pub mod visits;
pub mod waiting;
pub mod written;

use crate::lane::{StoreError, Work};
use domain::deadpool_postgres::Pool;
use domain::event::QueuedEvent;
use domain::keys::Keys;
use futures_util::future::BoxFuture;
use tracing::Instrument;
use written::EventsWritten;

/// The events queue's work: analytics events into `events` and the rollups.
pub struct EventWork {
    pub pg: Pool,
    pub keys: Keys,
    /// The months known to have their partition of `events`.
    pub partitions: partitions::Partitions,
    /// `goal.converted` for the goals the batch's events convert.
    pub triggers: Option<std::sync::Arc<crate::triggers::Triggers>>,
    /// The transactions a batch is written in (`EVENT_WRITE_PARTS`).
    pub write_parts: store::WriteParts,
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
                let written =
                    store::store_events_in_parts(&self.pg, events, &self.write_parts).await?;
                if let Some(triggers) = &self.triggers {
                    triggers
                        .after_event_batch(events)
                        .await
                        .map_err(|e| StoreError::Transient(e.context("sending goal triggers")))?;
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
