//! Notifications on the worker side: the fan-out of accepted notifications ([`NotifyWork`],
//! a lane over the notification shard queues: [`fanout`] in Redis, [`store`] in
//! PostgreSQL), the registries' changes and feed read marks stored in PostgreSQL
//! ([`admin`]), and the registries put back after Redis lost them ([`restore`]).

pub mod admin;
pub mod directory;
pub mod fanout;
pub mod restore;
pub mod store;

use crate::lane::{StoreError, Work};
use directory::EndpointDirectory;
use domain::deadpool_postgres::Pool;
use domain::keys::Keys;
use domain::notify::{ChannelKind, Notification, Recipient};
use domain::redis::RedisConn;
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use store::NotifyWritten;
use tracing::Instrument;

/// The notification shard queues' work: fan each notification out.
pub struct NotifyWork {
    pub pg: Pool,
    pub redis: RedisConn,
    pub keys: Keys,
    pub directory: Arc<EndpointDirectory>,
}

impl NotifyWork {
    /// The Redis half of one notification's fan-out (safe to repeat). A topic's audience
    /// is read once per batch (`audiences`): a batch of triggers shares one topic.
    async fn fan_out(
        &self,
        n: &Notification,
        audiences: &mut HashMap<String, Arc<Vec<Recipient>>>,
        now_ms: i64,
    ) -> anyhow::Result<fanout::FannedOut> {
        let mut redis = self.redis.clone();
        let started = std::time::Instant::now();
        let users = match &n.topic {
            Some(topic) => match audiences.get(topic) {
                Some(users) => users.clone(),
                None => {
                    let users = Arc::new(fanout::audience(&mut redis, &self.keys, n).await?);
                    audiences.insert(topic.clone(), users.clone());
                    users
                }
            },
            None => Arc::new(n.recipients.clone()),
        };
        let users = users.as_slice();
        let resolved = started.elapsed();
        let record = n.record();
        let feed = if n.has(ChannelKind::InApp) {
            fanout::append_to_feeds(&self.redis, &self.keys, &record, users, now_ms).await?
        } else {
            Vec::new()
        };
        let appended = started.elapsed();
        let (deliveries, skipped) =
            fanout::deliveries(&mut redis, &self.directory, n, users, now_ms).await?;
        tracing::debug!(
            recipients = users.len(),
            resolve_ms = resolved.as_millis() as u64,
            feeds_ms = (appended - resolved).as_millis() as u64,
            deliveries = deliveries.len(),
            "fanned out in Redis"
        );
        Ok(fanout::FannedOut {
            record: Some(record),
            feed,
            deliveries,
            skipped,
            audience: users.len(),
        })
    }
}

impl Work for NotifyWork {
    type Item<'a> = Notification;
    type Outcome = NotifyWritten;
    const NAME: &'static str = "notifications";

    fn parse(&self, raw: &[u8]) -> Result<Notification, String> {
        serde_json::from_slice(raw).map_err(|e| e.to_string())
    }

    fn traceparent<'a>(&self, item: &'a Notification) -> Option<&'a str> {
        item.traceparent.as_deref()
    }

    fn write<'s, 'i: 's>(
        &'s self,
        items: &'s [Notification],
    ) -> BoxFuture<'s, Result<NotifyWritten, StoreError>> {
        Box::pin(async move {
            let now = chrono::Utc::now().timestamp_millis();
            let mut fanned = Vec::with_capacity(items.len());
            let mut audiences = HashMap::new();
            for n in items {
                let out = self
                    .fan_out(n, &mut audiences, now)
                    .instrument(
                        tracing::info_span!("fan_out", notification_id = %n.notification_id),
                    )
                    .await
                    .map_err(|e| StoreError::Transient(e.context("fanning out in Redis")))?;
                fanned.push(out);
            }
            let pairs: Vec<(&Notification, &fanout::FannedOut)> =
                items.iter().zip(fanned.iter()).collect();
            let span = tracing::info_span!(
                "postgres.write",
                tables = "notifications, feed_items, deliveries",
                rows = items.len()
            );
            let stored_at = std::time::Instant::now();
            let written = store::store(&self.pg, &pairs).instrument(span).await?;
            tracing::debug!(
                feed_items = written.feed_items,
                deliveries = written.deliveries,
                ms = stored_at.elapsed().as_millis() as u64,
                "fan-out stored in PostgreSQL"
            );
            let mut queued = 0;
            for (n, out) in &pairs {
                queued += fanout::queue_deliveries(
                    &self.redis,
                    &self.keys,
                    &n.notification_id.to_string(),
                    &out.deliveries,
                )
                .await
                .map_err(|e| StoreError::Transient(e.context("queueing deliveries")))?;
            }
            let lag_ms = items
                .iter()
                .map(|n| (now - n.created_at_ms).max(0))
                .max()
                .unwrap_or(0);
            metrics::histogram!("batch_worker_notification_fanout_lag_seconds")
                .record(lag_ms as f64 / 1000.0);
            metrics::counter!("batch_worker_feed_items_total").increment(written.feed_items);
            metrics::counter!("batch_worker_deliveries_queued_total").increment(queued);
            Ok(written)
        })
    }
}
