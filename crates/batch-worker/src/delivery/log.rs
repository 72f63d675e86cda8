//! Attempt records stored in PostgreSQL: each channel's log queue (written in the step
//! that finished the attempt) drained in batches into `delivery_attempts` (one row per
//! attempt, kept once) and `deliveries` (the delivery's state after its newest attempt;
//! a delivered delivery stays delivered).

use crate::lane::{Outcome, StoreError, Work};
use chrono::{DateTime, Utc};
use domain::deadpool_postgres::Pool;
use domain::notify::delivery::AttemptRecord;
use futures_util::future::BoxFuture;
use std::collections::HashMap;

const UPSERT_DELIVERIES: &str = r"
INSERT INTO deliveries AS d (delivery_id, notification_id, channel, target, user_id, state,
    attempts, last_status, last_error, next_attempt_at, delivered_at, created_at, updated_at)
SELECT id, notification_id, channel, target, user_id, state, attempts, status, error, next_at,
       CASE WHEN state = 'delivered' THEN at END, at, at
FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::int[], $8::int[], $9::text[], $10::timestamptz[], $11::timestamptz[])
    AS t(id, notification_id, channel, target, user_id, state, attempts, status, error,
         next_at, at)
ON CONFLICT (delivery_id) DO UPDATE SET
    state = EXCLUDED.state, attempts = EXCLUDED.attempts, last_status = EXCLUDED.last_status,
    last_error = coalesce(EXCLUDED.last_error, d.last_error),
    next_attempt_at = EXCLUDED.next_attempt_at,
    delivered_at = coalesce(d.delivered_at, EXCLUDED.delivered_at),
    updated_at = EXCLUDED.updated_at
WHERE d.state <> 'delivered' AND d.attempts <= EXCLUDED.attempts
";

const INSERT_ATTEMPTS: &str = r"
INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code,
    outcome, error)
SELECT * FROM unnest($1::text[], $2::int[], $3::timestamptz[], $4::int[], $5::int[],
                     $6::text[], $7::text[])
ON CONFLICT (delivery_id, attempt) DO NOTHING
";

/// The log queues' work.
pub struct AttemptLogWork {
    pub pg: Pool,
}

/// What a stored batch of attempt records added.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AttemptsWritten {
    pub inserted: u64,
}

impl Outcome for AttemptsWritten {
    fn inserted(&self) -> u64 {
        self.inserted
    }

    fn merge(&mut self, other: Self) {
        self.inserted += other.inserted;
    }
}

impl Work for AttemptLogWork {
    type Item<'a> = AttemptRecord;
    type Outcome = AttemptsWritten;
    const NAME: &'static str = "delivery_attempts";

    fn parse(&self, raw: &[u8]) -> Result<AttemptRecord, String> {
        serde_json::from_slice(raw).map_err(|e| e.to_string())
    }

    fn write<'s, 'i: 's>(
        &'s self,
        items: &'s [AttemptRecord],
    ) -> BoxFuture<'s, Result<AttemptsWritten, StoreError>> {
        Box::pin(store(&self.pg, items))
    }
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn rank(r: &AttemptRecord) -> (u32, bool, i64) {
    (r.attempt, r.state.is_final(), r.started_at_ms)
}

async fn store(pg: &Pool, items: &[AttemptRecord]) -> Result<AttemptsWritten, StoreError> {
    // The newest record of each delivery (a row is touched once per statement).
    let mut newest: HashMap<&str, &AttemptRecord> = HashMap::new();
    for r in items {
        let e = newest.entry(&r.delivery_id).or_insert(r);
        if rank(r) > rank(e) {
            *e = r;
        }
    }
    let rows: Vec<&AttemptRecord> = newest.into_values().collect();
    let ids: Vec<&str> = rows.iter().map(|r| r.delivery_id.as_str()).collect();
    let notifications: Vec<uuid::Uuid> = rows.iter().map(|r| r.notification_id).collect();
    let channels: Vec<&str> = rows.iter().map(|r| r.channel.as_str()).collect();
    let targets: Vec<&str> = rows.iter().map(|r| r.target.as_str()).collect();
    let users: Vec<Option<&str>> = rows.iter().map(|r| r.user_id.as_deref()).collect();
    let states: Vec<&str> = rows.iter().map(|r| r.state.as_str()).collect();
    let attempts: Vec<i32> = rows
        .iter()
        .map(|r| i32::try_from(r.attempt).unwrap_or(i32::MAX))
        .collect();
    let statuses: Vec<Option<i32>> = rows.iter().map(|r| r.status_code.map(i32::from)).collect();
    let errors: Vec<Option<&str>> = rows.iter().map(|r| r.error.as_deref()).collect();
    let next: Vec<Option<DateTime<Utc>>> =
        rows.iter().map(|r| r.next_attempt_at_ms.map(at)).collect();
    let when: Vec<DateTime<Utc>> = rows
        .iter()
        .map(|r| at(r.started_at_ms + r.duration_ms))
        .collect();

    let tried: Vec<&AttemptRecord> = items.iter().filter(|r| r.attempt > 0).collect();
    let a_ids: Vec<&str> = tried.iter().map(|r| r.delivery_id.as_str()).collect();
    let a_numbers: Vec<i32> = tried
        .iter()
        .map(|r| i32::try_from(r.attempt).unwrap_or(i32::MAX))
        .collect();
    let a_started: Vec<DateTime<Utc>> = tried.iter().map(|r| at(r.started_at_ms)).collect();
    let a_took: Vec<i32> = tried
        .iter()
        .map(|r| i32::try_from(r.duration_ms).unwrap_or(i32::MAX))
        .collect();
    let a_status: Vec<Option<i32>> = tried.iter().map(|r| r.status_code.map(i32::from)).collect();
    let a_outcome: Vec<&str> = tried.iter().map(|r| r.outcome.as_str()).collect();
    let a_error: Vec<Option<&str>> = tried.iter().map(|r| r.error.as_deref()).collect();

    let mut client = pg.get().await.map_err(StoreError::no_connection)?;
    let tx = client.transaction().await.map_err(StoreError::from_pg)?;
    tx.execute(
        &tx.prepare_cached(UPSERT_DELIVERIES)
            .await
            .map_err(StoreError::from_pg)?,
        &[
            &ids,
            &notifications,
            &channels,
            &targets,
            &users,
            &states,
            &attempts,
            &statuses,
            &errors,
            &next,
            &when,
        ],
    )
    .await
    .map_err(StoreError::from_pg)?;
    let inserted = tx
        .execute(
            &tx.prepare_cached(INSERT_ATTEMPTS)
                .await
                .map_err(StoreError::from_pg)?,
            &[
                &a_ids, &a_numbers, &a_started, &a_took, &a_status, &a_outcome, &a_error,
            ],
        )
        .await
        .map_err(StoreError::from_pg)?;
    tx.commit().await.map_err(StoreError::from_pg)?;
    Ok(AttemptsWritten { inserted })
}
