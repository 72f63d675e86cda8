//! Retention of raw events: with `EVENTS_RETENTION_DAYS` set, raw events received longer
//! ago than that are deleted, in chunks, every `EVENTS_RETENTION_INTERVAL_MS`.
//!
//! Only the raw `events` table shrinks. Stats, time series and Grafana are served from
//! the rollups, which keep every count, so no answer changes. Chunks are small
//! transactions so the drain never waits long behind a delete, and `SKIP LOCKED` lets
//! several workers share the work instead of queueing on each other's rows.
//!
//! There is no index on `received_at`: a btree would cost the drain an index write per
//! row, and a BRIN index (measured: +10% on a bare COPY) stops narrowing anything once
//! vacuum lets new rows reuse the pages of expired ones. Instead each run walks the heap
//! once in physical order, every chunk resuming after the last row the previous one
//! took (a TID range), so a run costs one pass over the table however many chunks it
//! needs. At a scale where that pass hurts, partitions dropped whole are the better tool;
//! see the README.

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use domain::deadpool_postgres::Pool;
use domain::shutdown::{CancellationToken, every};
use std::time::Duration;

/// Rows deleted per statement.
pub const CHUNK: i64 = 5_000;

/// `$3` is where the previous chunk stopped; the scan (physical order, never parallel with
/// `FOR UPDATE`) resumes after it, and the answer says where this one stopped.
const DELETE_CHUNK: &str = r"
WITH doomed AS (
    SELECT ctid FROM events
    WHERE ctid > $3::text::tid AND received_at < $1
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM events WHERE ctid IN (SELECT ctid FROM doomed) RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT max(ctid)::text FROM doomed)
";

/// Deletes every raw event received before `cutoff`, `chunk` rows per transaction, until
/// none is left or `stop` is cancelled. Returns how many were deleted.
///
/// # Errors
/// When PostgreSQL fails; what was deleted before stays deleted.
pub async fn expire_events(
    pg: &Pool,
    cutoff: DateTime<Utc>,
    chunk: i64,
    stop: &CancellationToken,
) -> anyhow::Result<u64> {
    let client = pg.get().await.context("no PostgreSQL connection")?;
    let delete = client
        .prepare_cached(DELETE_CHUNK)
        .await
        .context("preparing the retention delete")?;
    let mut total = 0;
    let mut after = "(0,0)".to_string();
    while !stop.is_cancelled() {
        let row = client
            .query_one(&delete, &[&cutoff, &chunk, &after])
            .await
            .context("deleting expired events")?;
        let deleted = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
        total += deleted;
        metrics::counter!("batch_worker_events_expired_total").increment(deleted);
        match row.get::<_, Option<String>>(1) {
            Some(last) if deleted == chunk.unsigned_abs() => after = last,
            _ => break,
        }
    }
    Ok(total)
}

/// Runs [`expire_events`] every `interval` for events older than `keep`, until `stop`.
pub async fn run(pg: Pool, keep: TimeDelta, interval: Duration, stop: CancellationToken) {
    every(interval, stop.clone(), || {
        let (pg, stop) = (pg.clone(), stop.clone());
        async move {
            let cutoff = Utc::now() - keep;
            match expire_events(&pg, cutoff, CHUNK, &stop).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, %cutoff, "expired raw events"),
                Err(e) => {
                    metrics::counter!("batch_worker_retention_failures_total").increment(1);
                    tracing::warn!(error = format!("{e:#}"), "expiring raw events failed");
                }
            }
        }
    })
    .await;
}
