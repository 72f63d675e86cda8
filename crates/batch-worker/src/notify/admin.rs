//! The notification registries' changes and feed read marks, stored in PostgreSQL: one
//! lane drains the webhooks queue (endpoint changes), the topics queue (subscription
//! changes) and every feed shard's queue (read marks). Each change carries a version (or
//! is a mark that only moves forward), so changes stored out of order end on the newest.

use crate::lane::{Outcome, StoreError, Work};
use chrono::{DateTime, Utc};
use domain::deadpool_postgres::Pool;
use domain::notify::endpoints::{self, EndpointChange};
use domain::notify::feed::ReadMessage;
use domain::notify::topics::SubscriptionChange;
use futures_util::future::BoxFuture;
use std::collections::HashMap;

/// One message of the admin queues.
#[derive(Debug)]
pub enum AdminMessage {
    Endpoint(EndpointChange),
    Subscription(SubscriptionChange),
    Read {
        mark: ReadMessage,
        queued_at_ms: i64,
    },
}

/// How long a read mark naming items PostgreSQL does not hold yet is retried (their
/// fan-out is still being stored); after that it is kept as far as it goes.
const MARK_WAIT_MS: i64 = 30_000;

/// The admin queues' work.
pub struct AdminWork {
    pub pg: Pool,
}

/// What a stored batch changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AdminWritten {
    pub inserted: u64,
}

impl Outcome for AdminWritten {
    fn inserted(&self) -> u64 {
        self.inserted
    }

    fn merge(&mut self, other: Self) {
        self.inserted += other.inserted;
    }
}

impl Work for AdminWork {
    type Item<'a> = AdminMessage;
    type Outcome = AdminWritten;
    const NAME: &'static str = "notify_admin";

    fn parse(&self, raw: &[u8]) -> Result<AdminMessage, String> {
        let value: serde_json::Value =
            serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))?;
        if value.get("kind").and_then(|k| k.as_str()) == Some("read") {
            let queued_at_ms = value["queued_at_ms"].as_i64().unwrap_or(0);
            let mark = serde_json::from_value(value).map_err(|e| e.to_string())?;
            Ok(AdminMessage::Read { mark, queued_at_ms })
        } else if value.get("endpoint_id").is_some() {
            endpoints::parse_change(raw).map(AdminMessage::Endpoint)
        } else {
            serde_json::from_value(value)
                .map(AdminMessage::Subscription)
                .map_err(|e| e.to_string())
        }
    }

    fn write<'s, 'i: 's>(
        &'s self,
        items: &'s [AdminMessage],
    ) -> BoxFuture<'s, Result<AdminWritten, StoreError>> {
        Box::pin(store(&self.pg, items))
    }
}

const UPSERT_ENDPOINTS: &str = r"
INSERT INTO webhook_endpoints AS w (endpoint_id, url, event_types, rate_limit_per_s, secret,
    description, disabled, disabled_reason, version, created_at, updated_at, deleted_at,
    previous_secret, previous_secret_expires_at)
SELECT id, url, ARRAY(SELECT jsonb_array_elements_text(types::jsonb)), rate, secret, descr,
       disabled, reason, version, created_at, updated_at, CASE WHEN deleted THEN updated_at END,
       previous, previous_until
FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::bool[],
            $8::text[], $9::bigint[], $10::timestamptz[], $11::timestamptz[], $12::bool[],
            $13::text[], $14::timestamptz[])
    AS t(id, url, types, rate, secret, descr, disabled, reason, version, created_at,
         updated_at, deleted, previous, previous_until)
ON CONFLICT (endpoint_id) DO UPDATE SET
    url = EXCLUDED.url, event_types = EXCLUDED.event_types,
    rate_limit_per_s = EXCLUDED.rate_limit_per_s, secret = EXCLUDED.secret,
    previous_secret = EXCLUDED.previous_secret,
    previous_secret_expires_at = EXCLUDED.previous_secret_expires_at,
    description = EXCLUDED.description, disabled = EXCLUDED.disabled,
    disabled_reason = EXCLUDED.disabled_reason, version = EXCLUDED.version,
    updated_at = EXCLUDED.updated_at, deleted_at = EXCLUDED.deleted_at
WHERE w.version < EXCLUDED.version
";

const UPSERT_SUBSCRIPTIONS: &str = r"
INSERT INTO topic_subscriptions AS s (topic, user_id, email, phone, deleted, version)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::bigint[])
ON CONFLICT (topic, user_id) DO UPDATE SET
    email = EXCLUDED.email, phone = EXCLUDED.phone, deleted = EXCLUDED.deleted,
    version = EXCLUDED.version
WHERE s.version < EXCLUDED.version
";

const READ_ITEMS: &str = r"
UPDATE feed_items f SET read_at = coalesce(f.read_at, t.at)
FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::timestamptz[]) AS t(user_id, epoch, seq, at)
WHERE f.user_id = t.user_id AND f.epoch = t.epoch AND f.seq = t.seq
";

const UPSERT_MARKS: &str = r"
INSERT INTO feed_read_marks AS m (user_id, epoch, up_to, at)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::timestamptz[])
ON CONFLICT (user_id) DO UPDATE SET epoch = EXCLUDED.epoch, up_to = EXCLUDED.up_to, at = EXCLUDED.at
WHERE (m.epoch, m.up_to) < (EXCLUDED.epoch, EXCLUDED.up_to)
";

const READ_UP_TO: &str = r"
UPDATE feed_items f SET read_at = t.at
FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::timestamptz[]) AS t(user_id, epoch, up_to, at)
WHERE f.user_id = t.user_id AND f.read_at IS NULL
  AND (f.epoch < t.epoch OR (f.epoch = t.epoch AND f.seq <= t.up_to))
";

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

async fn store(pg: &Pool, items: &[AdminMessage]) -> Result<AdminWritten, StoreError> {
    // One row per key in each statement (ON CONFLICT touches a row once): the newest.
    let mut endpoints: HashMap<&str, &EndpointChange> = HashMap::new();
    let mut subscriptions: HashMap<(&str, &str), &SubscriptionChange> = HashMap::new();
    let mut marks: HashMap<&str, (i64, i64, i64)> = HashMap::new();
    let (mut r_users, mut r_epochs, mut r_seqs, mut r_at) = (vec![], vec![], vec![], vec![]);
    let mut oldest_unmatched_wait = i64::MAX;
    for item in items {
        match item {
            AdminMessage::Endpoint(c) => {
                let e = endpoints.entry(&c.endpoint.endpoint_id).or_insert(c);
                if c.endpoint.version > e.endpoint.version {
                    *e = c;
                }
            }
            AdminMessage::Subscription(c) => {
                let e = subscriptions.entry((&c.topic, &c.user_id)).or_insert(c);
                if c.version > e.version {
                    *e = c;
                }
            }
            AdminMessage::Read { mark, queued_at_ms } => {
                if let Some(up_to) = mark.up_to {
                    let e = marks
                        .entry(&mark.user_id)
                        .or_insert((mark.epoch, up_to, mark.at_ms));
                    if (mark.epoch, up_to) > (e.0, e.1) {
                        *e = (mark.epoch, up_to, mark.at_ms);
                    }
                }
                for seq in &mark.seqs {
                    r_users.push(mark.user_id.as_str());
                    r_epochs.push(mark.epoch);
                    r_seqs.push(*seq);
                    r_at.push(at(mark.at_ms));
                }
                if !mark.seqs.is_empty() {
                    oldest_unmatched_wait = oldest_unmatched_wait.min(*queued_at_ms);
                }
            }
        }
    }
    let mut client = pg.get().await.map_err(StoreError::no_connection)?;
    let tx = client.transaction().await.map_err(StoreError::from_pg)?;
    let mut inserted = 0;
    if !endpoints.is_empty() {
        let rows: Vec<&EndpointChange> = endpoints.into_values().collect();
        let e = |f: fn(&EndpointChange) -> String| rows.iter().map(|c| f(c)).collect::<Vec<_>>();
        let ids = e(|c| c.endpoint.endpoint_id.clone());
        let urls = e(|c| c.endpoint.url.clone());
        let types =
            e(|c| serde_json::to_string(&c.endpoint.event_types).unwrap_or_else(|_| "[]".into()));
        let rates: Vec<Option<i32>> = rows
            .iter()
            .map(|c| {
                c.endpoint
                    .rate_limit_per_s
                    .and_then(|r| i32::try_from(r).ok())
            })
            .collect();
        let secrets = e(|c| c.endpoint.secret.clone());
        let descriptions = e(|c| c.endpoint.description.clone());
        let disabled: Vec<bool> = rows.iter().map(|c| c.endpoint.disabled).collect();
        let reasons: Vec<Option<&str>> = rows
            .iter()
            .map(|c| c.endpoint.disabled_reason.as_deref())
            .collect();
        let versions: Vec<i64> = rows.iter().map(|c| c.endpoint.version).collect();
        let created: Vec<DateTime<Utc>> = rows.iter().map(|c| c.endpoint.created_at).collect();
        let updated: Vec<DateTime<Utc>> = rows.iter().map(|c| c.endpoint.updated_at).collect();
        let deleted: Vec<bool> = rows.iter().map(|c| c.deleted).collect();
        inserted += tx
            .execute(
                UPSERT_ENDPOINTS,
                &[
                    &ids,
                    &urls,
                    &types,
                    &rates,
                    &secrets,
                    &descriptions,
                    &disabled,
                    &reasons,
                    &versions,
                    &created,
                    &updated,
                    &deleted,
                ],
            )
            .await
            .map_err(StoreError::from_pg)?;
    }
    if !subscriptions.is_empty() {
        let rows: Vec<&SubscriptionChange> = subscriptions.into_values().collect();
        let topics: Vec<&str> = rows.iter().map(|c| c.topic.as_str()).collect();
        let users: Vec<&str> = rows.iter().map(|c| c.user_id.as_str()).collect();
        let emails: Vec<Option<&str>> = rows.iter().map(|c| c.contact.email.as_deref()).collect();
        let phones: Vec<Option<&str>> = rows.iter().map(|c| c.contact.phone.as_deref()).collect();
        let deleted: Vec<bool> = rows.iter().map(|c| c.deleted).collect();
        let versions: Vec<i64> = rows.iter().map(|c| c.version).collect();
        inserted += tx
            .execute(
                UPSERT_SUBSCRIPTIONS,
                &[&topics, &users, &emails, &phones, &deleted, &versions],
            )
            .await
            .map_err(StoreError::from_pg)?;
    }
    if !marks.is_empty() {
        let users: Vec<&str> = marks.keys().copied().collect();
        let epochs: Vec<i64> = users.iter().map(|u| marks[u].0).collect();
        let up_tos: Vec<i64> = users.iter().map(|u| marks[u].1).collect();
        let ats: Vec<DateTime<Utc>> = users.iter().map(|u| at(marks[u].2)).collect();
        tx.execute(UPSERT_MARKS, &[&users, &epochs, &up_tos, &ats])
            .await
            .map_err(StoreError::from_pg)?;
        inserted += tx
            .execute(READ_UP_TO, &[&users, &epochs, &up_tos, &ats])
            .await
            .map_err(StoreError::from_pg)?;
    }
    if !r_users.is_empty() {
        let matched = tx
            .execute(READ_ITEMS, &[&r_users, &r_epochs, &r_seqs, &r_at])
            .await
            .map_err(StoreError::from_pg)?;
        inserted += matched;
        let waited = chrono::Utc::now().timestamp_millis() - oldest_unmatched_wait;
        if (matched as usize) < r_users.len() && waited < MARK_WAIT_MS {
            // Some items are in feeds but not yet in PostgreSQL: their fan-out is still
            // being stored. Retry (the whole batch is idempotent) rather than lose the mark.
            return Err(StoreError::Transient(anyhow::anyhow!(
                "{} read items are not stored yet; retrying",
                r_users.len() - matched as usize
            )));
        }
    }
    tx.commit().await.map_err(StoreError::from_pg)?;
    Ok(AdminWritten { inserted })
}
