//! The PostgreSQL half of a fan-out: the notifications, their feed items and their
//! deliveries, one statement per table for the whole batch, each insert idempotent (a
//! fan-out replayed after a crash adds nothing).

use super::fanout::FannedOut;
use crate::lane::StoreError;
use chrono::{DateTime, Utc};
use domain::deadpool_postgres::Pool;
use domain::notify::Notification;
use std::collections::HashSet;
use uuid::Uuid;

const INSERT_NOTIFICATIONS: &str = r"
INSERT INTO notifications (notification_id, event_type, title, body, html, data, channels,
    priority, topic, recipients, skipped, idempotency_key, created_at)
SELECT id, event_type, title, body, html, data::jsonb,
       ARRAY(SELECT jsonb_array_elements_text(channels::jsonb)), priority, topic, recipients,
       skipped::jsonb, idem, created_at
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::int[], $11::text[], $12::text[],
            $13::timestamptz[])
    AS t(id, event_type, title, body, html, data, channels, priority, topic, recipients,
         skipped, idem, created_at)
ON CONFLICT (notification_id) DO NOTHING
";

const INSERT_FEED_ITEMS: &str = r"
INSERT INTO feed_items (user_id, notification_id, epoch, seq, created_at)
SELECT * FROM unnest($1::text[], $2::uuid[], $3::bigint[], $4::bigint[], $5::timestamptz[])
ON CONFLICT (user_id, notification_id) DO NOTHING
";

const INSERT_DELIVERIES: &str = r"
INSERT INTO deliveries (delivery_id, notification_id, channel, target, user_id, state,
    created_at, updated_at)
SELECT id, notification_id, channel, target, user_id, 'queued', created_at, created_at
FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
    AS t(id, notification_id, channel, target, user_id, created_at)
ON CONFLICT (delivery_id) DO NOTHING
";

/// What a stored fan-out batch added.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NotifyWritten {
    pub notifications: u64,
    pub feed_items: u64,
    pub deliveries: u64,
}

impl crate::lane::Outcome for NotifyWritten {
    fn inserted(&self) -> u64 {
        self.notifications
    }

    fn merge(&mut self, other: Self) {
        self.notifications += other.notifications;
        self.feed_items += other.feed_items;
        self.deliveries += other.deliveries;
    }
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Those of `ids` whose fan-out is stored already: a notification's row commits with all
/// its feed items, so its in-app copies are in every feed and a replay of its batch (a
/// lost acknowledgement, a reaped worker) must not append them again. Redis cannot tell
/// by itself: a feed keeps its newest items only, and one trimmed out since looks new.
///
/// # Errors
/// [`StoreError::Transient`] when PostgreSQL cannot answer.
pub async fn already_stored(pg: &Pool, ids: &[Uuid]) -> Result<HashSet<Uuid>, StoreError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let client = pg.get().await.map_err(StoreError::no_connection)?;
    let rows = client
        .query(
            &client
                .prepare_cached(
                    "SELECT notification_id FROM notifications WHERE notification_id = ANY($1)",
                )
                .await
                .map_err(StoreError::from_pg)?,
            &[&ids],
        )
        .await
        .map_err(StoreError::from_pg)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Stores a batch of fanned-out notifications in one transaction.
///
/// # Errors
/// [`StoreError::Data`] when a value is refused; [`StoreError::Transient`] otherwise.
pub async fn store(
    pg: &Pool,
    batch: &[(&Notification, &FannedOut)],
) -> Result<NotifyWritten, StoreError> {
    let mut n_ids: Vec<Uuid> = Vec::with_capacity(batch.len());
    let (mut types, mut titles, mut bodies, mut htmls, mut datas, mut channels) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut priorities, mut topics, mut recipients, mut skipped, mut idems, mut created) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut f_users, mut f_ids, mut f_epochs, mut f_seqs, mut f_at) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut d_ids, mut d_notifs, mut d_channels, mut d_targets, mut d_users, mut d_at) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (n, out) in batch {
        n_ids.push(n.notification_id);
        types.push(n.event_type.as_str());
        titles.push(n.title.as_str());
        bodies.push(n.body.as_str());
        htmls.push(n.html.as_deref());
        datas.push((!n.data.is_null()).then(|| n.data.to_string()));
        channels.push(
            serde_json::to_string(&n.channels.iter().map(|c| c.as_str()).collect::<Vec<_>>())
                .unwrap_or_else(|_| "[]".into()),
        );
        priorities.push(n.priority.as_str());
        topics.push(n.topic.as_deref());
        recipients.push(i32::try_from(out.audience).unwrap_or(i32::MAX));
        skipped.push(serde_json::to_string(&out.skipped).unwrap_or_else(|_| "{}".into()));
        idems.push(n.idempotency_key.as_deref());
        created.push(at(n.created_at_ms));
        for (user, p) in &out.feed {
            f_users.push(user.as_str());
            f_ids.push(n.notification_id);
            f_epochs.push(p.epoch);
            f_seqs.push(p.seq);
            f_at.push(at(n.created_at_ms));
        }
        for d in &out.deliveries {
            d_ids.push(d.delivery_id.as_str());
            d_notifs.push(d.notification_id);
            d_channels.push(d.channel.as_str());
            d_targets.push(d.target.as_str());
            d_users.push(d.user_id.as_deref());
            d_at.push(at(d.created_at_ms));
        }
    }
    let mut client = pg.get().await.map_err(StoreError::no_connection)?;
    let tx = client.transaction().await.map_err(StoreError::from_pg)?;
    let notifications = tx
        .execute(
            &tx.prepare_cached(INSERT_NOTIFICATIONS)
                .await
                .map_err(StoreError::from_pg)?,
            &[
                &n_ids,
                &types,
                &titles,
                &bodies,
                &htmls,
                &datas,
                &channels,
                &priorities,
                &topics,
                &recipients,
                &skipped,
                &idems,
                &created,
            ],
        )
        .await
        .map_err(StoreError::from_pg)?;
    let feed_items = if f_users.is_empty() {
        0
    } else {
        tx.execute(
            &tx.prepare_cached(INSERT_FEED_ITEMS)
                .await
                .map_err(StoreError::from_pg)?,
            &[&f_users, &f_ids, &f_epochs, &f_seqs, &f_at],
        )
        .await
        .map_err(StoreError::from_pg)?
    };
    let deliveries = if d_ids.is_empty() {
        0
    } else {
        tx.execute(
            &tx.prepare_cached(INSERT_DELIVERIES)
                .await
                .map_err(StoreError::from_pg)?,
            &[&d_ids, &d_notifs, &d_channels, &d_targets, &d_users, &d_at],
        )
        .await
        .map_err(StoreError::from_pg)?
    };
    tx.commit().await.map_err(StoreError::from_pg)?;
    Ok(NotifyWritten {
        notifications,
        feed_items,
        deliveries,
    })
}
