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
use anyhow::Context;
use directory::EndpointDirectory;
use domain::deadpool_postgres::Pool;
use domain::keys::Keys;
use domain::notify::{ChannelKind, Notification, NotificationRecord, Recipient};
use domain::redis::RedisConn;
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use store::NotifyWritten;
use tracing::Instrument;
use uuid::Uuid;

/// The notification shard queues' work: fan each notification out.
pub struct NotifyWork {
    pub pg: Pool,
    pub redis: RedisConn,
    pub keys: Keys,
    pub directory: Arc<EndpointDirectory>,
}

impl NotifyWork {
    /// The Redis half of a batch's fan-out (safe to repeat), a [`fanout::FannedOut`] per
    /// notification. A topic's audience is read once per batch (a batch of triggers
    /// shares one topic), and a run of in-app notifications to one audience is appended
    /// to its feeds together ([`fanout::append_to_feeds`]); runs go one after the other,
    /// so every user's items land in the batch's order. Notifications whose fan-out an
    /// earlier run of the batch stored ([`store::already_stored`], asked while the
    /// audiences are read) are in their feeds already and are not appended again.
    async fn fan_out(
        &self,
        items: &[Notification],
        now_ms: i64,
    ) -> anyhow::Result<Vec<fanout::FannedOut>> {
        let started = std::time::Instant::now();
        let in_app: Vec<Uuid> = items
            .iter()
            .filter(|n| n.has(ChannelKind::InApp))
            .map(|n| n.notification_id)
            .collect();
        let (audience_of, stored) = tokio::try_join!(self.audiences(items), async {
            store::already_stored(&self.pg, &in_app)
                .await
                .context("looking for notifications stored already")
        })?;
        if !stored.is_empty() {
            metrics::counter!("batch_worker_notifications_replayed_total")
                .increment(stored.len() as u64);
        }
        let mut redis = self.redis.clone();
        let resolved = started.elapsed();
        let records: Vec<NotificationRecord> = items.iter().map(Notification::record).collect();
        let mut feeds: Vec<fanout::Placed> = vec![Vec::new(); items.len()];
        let mut first = 0;
        let to_append =
            |n: &Notification| n.has(ChannelKind::InApp) && !stored.contains(&n.notification_id);
        while first < items.len() {
            if !to_append(&items[first]) {
                first += 1;
                continue;
            }
            let users = &audience_of[first];
            let end = first
                + items[first..]
                    .iter()
                    .zip(&audience_of[first..])
                    .take_while(|(n, u)| to_append(n) && Arc::ptr_eq(u, users))
                    .count();
            let run: Vec<&NotificationRecord> = records[first..end].iter().collect();
            let placed =
                fanout::append_to_feeds(&self.redis, &self.keys, &run, users, now_ms).await?;
            for (feed, placed) in feeds[first..end].iter_mut().zip(placed) {
                *feed = placed;
            }
            first = end;
        }
        let appended = started.elapsed();
        let mut out = Vec::with_capacity(items.len());
        let mut recipients = 0;
        for ((n, record), (users, feed)) in
            items.iter().zip(records).zip(audience_of.iter().zip(feeds))
        {
            let (deliveries, skipped) =
                fanout::deliveries(&mut redis, &self.directory, n, users, now_ms).await?;
            recipients += users.len();
            out.push(fanout::FannedOut {
                record: Some(record),
                feed,
                deliveries,
                skipped,
                audience: users.len(),
            });
        }
        tracing::debug!(
            notifications = items.len(),
            recipients,
            resolve_ms = resolved.as_millis() as u64,
            feeds_ms = (appended - resolved).as_millis() as u64,
            "fanned out in Redis"
        );
        Ok(out)
    }
}

impl NotifyWork {
    /// Each notification's audience, a topic's read once per batch.
    async fn audiences(&self, items: &[Notification]) -> anyhow::Result<Vec<Arc<Vec<Recipient>>>> {
        let mut redis = self.redis.clone();
        let mut audiences: HashMap<&str, Arc<Vec<Recipient>>> = HashMap::new();
        let mut audience_of = Vec::with_capacity(items.len());
        for n in items {
            let users = match &n.topic {
                Some(topic) => match audiences.get(topic.as_str()) {
                    Some(users) => users.clone(),
                    None => {
                        let users = Arc::new(fanout::audience(&mut redis, &self.keys, n).await?);
                        audiences.insert(topic, users.clone());
                        users
                    }
                },
                None => Arc::new(n.recipients.clone()),
            };
            audience_of.push(users);
        }
        Ok(audience_of)
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
            let fanned = self
                .fan_out(items, now)
                .instrument(tracing::info_span!("fan_out", notifications = items.len()))
                .await
                .map_err(|e| StoreError::Transient(e.context("fanning out in Redis")))?;
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
