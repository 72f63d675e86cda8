//! The notifications deliveries are about, kept in memory: a fan-out of ten thousand
//! deliveries reads its notification once. Read from Redis (kept there a week), else from
//! PostgreSQL.

use bytes::Bytes;
use domain::deadpool_postgres::Pool;
use domain::keys::Keys;
use domain::notify::{ChannelKind, NotificationRecord, Priority};
use domain::redis::RedisConn;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Notifications kept; past it the cache starts over (deliveries come in notification
/// order, so what is dropped is mostly done with).
const KEPT: usize = 10_000;

/// A notification as deliveries use it.
pub struct Loaded {
    pub record: NotificationRecord,
    /// The webhook body (the same bytes on every attempt and every endpoint).
    pub webhook_body: Bytes,
}

/// The cache.
pub struct Records {
    keys: Keys,
    redis: RedisConn,
    pg: Pool,
    kept: Mutex<HashMap<Uuid, Arc<Loaded>>>,
}

impl Records {
    pub fn new(keys: Keys, redis: RedisConn, pg: Pool) -> Self {
        Self {
            keys,
            redis,
            pg,
            kept: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Loaded>>> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notification `id`; `None` when neither Redis nor PostgreSQL has it.
    ///
    /// # Errors
    /// When Redis and PostgreSQL cannot be asked.
    pub async fn get(&self, id: &Uuid) -> anyhow::Result<Option<Arc<Loaded>>> {
        if let Some(found) = self.lock().get(id) {
            return Ok(Some(found.clone()));
        }
        let record =
            match domain::notify::accept::record(&mut self.redis.clone(), &self.keys, id).await? {
                Some(r) => Some(r),
                None => from_postgres(&self.pg, id).await?,
            };
        let Some(record) = record else {
            return Ok(None);
        };
        let loaded = Arc::new(Loaded {
            webhook_body: Bytes::from(record.webhook_body()),
            record,
        });
        let mut kept = self.lock();
        if kept.len() >= KEPT {
            kept.clear();
        }
        kept.insert(*id, loaded.clone());
        Ok(Some(loaded))
    }
}

async fn from_postgres(pg: &Pool, id: &Uuid) -> anyhow::Result<Option<NotificationRecord>> {
    let client = pg.get().await?;
    let row = client
        .query_opt(
            "SELECT event_type, title, body, html, data, channels, priority, topic, recipients,
                    created_at
             FROM notifications WHERE notification_id = $1",
            &[id],
        )
        .await?;
    Ok(row.map(|row| {
        let topic: Option<String> = row.get(7);
        let channels: Vec<String> = row.get(5);
        let priority: String = row.get(6);
        NotificationRecord {
            id: *id,
            event_type: row.get(0),
            title: row.get(1),
            body: row.get(2),
            html: row.get(3),
            data: row
                .get::<_, Option<serde_json::Value>>(4)
                .unwrap_or_default(),
            channels: channels
                .iter()
                .filter_map(|c| ChannelKind::parse(c))
                .collect(),
            priority: serde_json::from_value(priority.into()).unwrap_or(Priority::Normal),
            // As the accepted record had it: a count for named recipients only.
            recipients: topic
                .is_none()
                .then(|| u64::try_from(row.get::<_, i32>(8)).unwrap_or(0)),
            topic,
            created_at_ms: row
                .get::<_, chrono::DateTime<chrono::Utc>>(9)
                .timestamp_millis(),
        }
    }))
}
