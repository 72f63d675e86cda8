//! Retention of raw events: with `EVENTS_RETENTION_DAYS` set, raw events received longer
//! ago than that are expired every `EVENTS_RETENTION_INTERVAL_MS`.
//!
//! Only the raw `events` table shrinks. Stats, time series and Grafana are served from
//! the rollups, which keep every count, so no answer changes.
//!
//! `events` is partitioned by month of the event's own time (migration 6). A month whose
//! whole range is older than the cutoff, and that holds nothing received since, is dropped
//! whole: no row is deleted one by one, and no vacuum follows. What remains (late events
//! in an old month, the month the cutoff falls in, `events_default`) is deleted in chunks,
//! partition by partition. Chunks are small transactions so the drain never waits long
//! behind a delete, and `SKIP LOCKED` lets several workers share the work instead of
//! queueing on each other's rows.
//!
//! There is no index on `received_at`: a btree would cost the drain an index write per
//! row, and a BRIN index (measured: +10% on a bare COPY) stops narrowing anything once
//! vacuum lets new rows reuse the pages of expired ones. Instead each run walks each
//! partition's heap once in physical order, every chunk resuming after the last row the
//! previous one took (a TID range).

use anyhow::Context;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use domain::deadpool_postgres::{Object, Pool};
use domain::shutdown::{CancellationToken, every};
use std::time::Duration;

/// Rows deleted per statement.
pub const CHUNK: i64 = 5_000;

/// The partitions of `events`, by name.
const PARTITIONS: &str = r"
SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'events'::regclass ORDER BY c.relname
";

/// `$3` is where the previous chunk stopped; the scan (physical order, never parallel with
/// `FOR UPDATE`) resumes after it, and the answer says where this one stopped.
fn delete_chunk(partition: &str) -> String {
    format!(
        r#"
WITH doomed AS (
    SELECT ctid FROM "{partition}"
    WHERE ctid > $3::text::tid AND received_at < $1
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM "{partition}" WHERE ctid IN (SELECT ctid FROM doomed) RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT max(ctid)::text FROM doomed)
"#
    )
}

/// The first day after the month of partition `events_YYYYMM`; `None` for
/// `events_default` and anything else.
fn month_end(partition: &str) -> Option<NaiveDate> {
    let digits = partition.strip_prefix("events_")?;
    if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let first = NaiveDate::parse_from_str(&format!("{digits}01"), "%Y%m%d").ok()?;
    first.checked_add_months(chrono::Months::new(1))
}

/// Expires every raw event received before `cutoff`: whole partitions where it can, then
/// `chunk` rows per transaction, until none is left or `stop` is cancelled. Returns how
/// many were expired.
///
/// # Errors
/// When PostgreSQL fails; what was expired before stays expired.
pub async fn expire_events(
    pg: &Pool,
    cutoff: DateTime<Utc>,
    chunk: i64,
    stop: &CancellationToken,
) -> anyhow::Result<u64> {
    let client = pg.get().await.context("no PostgreSQL connection")?;
    let partitions: Vec<String> = client
        .query(PARTITIONS, &[])
        .await
        .context("listing the partitions of events")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut total = 0;
    for partition in partitions {
        if stop.is_cancelled() {
            break;
        }
        let whole = month_end(&partition).is_some_and(|end| end <= cutoff.date_naive());
        if whole && let Some(rows) = drop_if_all_expired(&client, &partition, cutoff).await? {
            total += rows;
            continue;
        }
        total += delete_in_chunks(&client, &partition, cutoff, chunk, stop).await?;
    }
    Ok(total)
}

/// Drops `partition` (a month wholly before `cutoff`) unless it holds an event received
/// since; returns the rows it held when dropped.
async fn drop_if_all_expired(
    client: &Object,
    partition: &str,
    cutoff: DateTime<Utc>,
) -> anyhow::Result<Option<u64>> {
    let row = client
        .query_one(
            &format!(r#"SELECT count(*), bool_or(received_at >= $1) IS TRUE FROM "{partition}""#),
            &[&cutoff],
        )
        .await
        .with_context(|| format!("reading {partition}"))?;
    let (rows, late): (i64, bool) = (row.get(0), row.get(1));
    if late {
        return Ok(None);
    }
    client
        .batch_execute(&format!(r#"DROP TABLE "{partition}""#))
        .await
        .with_context(|| format!("dropping {partition}"))?;
    let rows = u64::try_from(rows).unwrap_or(0);
    metrics::counter!("batch_worker_events_expired_total").increment(rows);
    metrics::counter!("batch_worker_event_partitions_dropped_total").increment(1);
    tracing::info!(partition, rows, "dropped an expired partition of events");
    Ok(Some(rows))
}

async fn delete_in_chunks(
    client: &Object,
    partition: &str,
    cutoff: DateTime<Utc>,
    chunk: i64,
    stop: &CancellationToken,
) -> anyhow::Result<u64> {
    let delete = client
        .prepare_cached(&delete_chunk(partition))
        .await
        .context("preparing the retention delete")?;
    let mut total = 0;
    let mut after = "(0,0)".to_string();
    while !stop.is_cancelled() {
        let row = client
            .query_one(&delete, &[&cutoff, &chunk, &after])
            .await
            .with_context(|| format!("deleting expired events of {partition}"))?;
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
