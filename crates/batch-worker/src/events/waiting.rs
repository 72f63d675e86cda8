//! Events that wait while their site's settings change (`events_waiting`, migration 0020).
//!
//! A change of a site's goals, funnels or zone recounts the site's stored visits and
//! events under its settings lock, held exclusive (see [`super::visits::settings`]):
//! minutes for a large site. A writer therefore tries its sites' locks without waiting
//! ([`lock_settings_or_wait`]); the events of a site whose lock a change holds or waits
//! for are set aside ([`set_aside`]) in the transaction that stores the rest of the batch,
//! which is acknowledged as usual. Every `EVENTS_WAITING_INTERVAL_MS` each worker stores
//! the waiting events of the sites no change holds any more ([`store_waiting`]), with their
//! Redis side effects, and only then deletes them: a crash in between stores them again,
//! which changes nothing (events are stored once by their key).
//!
//! So one site's recount delays that site's new events (and those of the sites sharing its
//! lock bucket), not the drain.

use super::EventWork;
use crate::lane::{StoreError, Work, write_isolating_bad_rows};
use anyhow::Context;
use domain::deadpool_postgres::Transaction;
use domain::event::QueuedEvent;
use domain::queue::{DeadLetter, WorkerQueue};
use domain::redis::RedisConn;
use domain::shutdown::{CancellationToken, every};
use std::sync::Arc;
use std::time::Duration;

/// Waiting events stored per transaction.
const CLAIM: i64 = 5_000;

const TRY_LOCK: &str = "SELECT tally_try_lock_site_settings($1::text[])";

const SET_ASIDE: &str = r"
INSERT INTO events_waiting (site_id, message)
SELECT * FROM unnest($1::text[], $2::text[])
";

/// The sites with waiting events that no change holds.
const READY_SITES: &str = r"
SELECT site_id FROM (SELECT DISTINCT site_id FROM events_waiting) w
WHERE NOT tally_site_settings_changing(site_id)
";

const CLAIM_WAITING: &str = r"
SELECT id, message FROM events_waiting WHERE site_id = $1
ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
";

const DELETE_STORED: &str = "DELETE FROM events_waiting WHERE site_id = $1 AND id = ANY($2)";

/// Takes the settings locks of `sites` shared (held until `tx` ends) where no change
/// holds or waits for them; returns the sites whose events must wait.
///
/// # Errors
/// [`StoreError`] when PostgreSQL fails.
pub async fn lock_settings_or_wait(
    tx: &Transaction<'_>,
    sites: &[&str],
) -> Result<Vec<String>, StoreError> {
    let stmt = tx
        .prepare_cached(TRY_LOCK)
        .await
        .map_err(StoreError::from_pg)?;
    let row = tx
        .query_one(&stmt, &[&sites])
        .await
        .map_err(StoreError::from_pg)?;
    Ok(row.get(0))
}

/// Sets `events` aside in `tx` until their sites' settings changes are done.
///
/// # Errors
/// [`StoreError`] when PostgreSQL fails.
pub async fn set_aside(tx: &Transaction<'_>, events: &[QueuedEvent<'_>]) -> Result<(), StoreError> {
    let sites: Vec<&str> = events.iter().map(|e| e.site_id.as_ref()).collect();
    let messages = events
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<String>, _>>()
        .map_err(|e| StoreError::Transient(anyhow::anyhow!("serialising a waiting event: {e}")))?;
    tx.execute(SET_ASIDE, &[&sites, &messages])
        .await
        .map_err(StoreError::from_pg)?;
    metrics::counter!("batch_worker_events_set_aside_total").increment(events.len() as u64);
    tracing::info!(
        events = events.len(),
        sites = ?sites.iter().collect::<std::collections::BTreeSet<_>>(),
        "events set aside while their sites' settings change"
    );
    Ok(())
}

/// Stores up to [`CLAIM`] waiting events of `site` as the events lanes store a batch
/// (those of a change begun since wait again; one PostgreSQL refuses goes to the events'
/// dead letters), applies their Redis side effects, and deletes the rows they were;
/// returns whether more of the site's events may be ready.
///
/// # Errors
/// When PostgreSQL or Redis fails: the events stay waiting.
pub async fn store_waiting(
    work: &EventWork,
    redis: &mut RedisConn,
    dead: &WorkerQueue,
    site: &str,
) -> anyhow::Result<bool> {
    let mut client = work.pg.get().await.context("no PostgreSQL connection")?;
    // Holds the claimed rows, so another worker skips them, until they are deleted.
    let tx = client.transaction().await.context("beginning")?;
    let rows = tx
        .query(CLAIM_WAITING, &[&site, &CLAIM])
        .await
        .context("claiming waiting events")?;
    if rows.is_empty() {
        return Ok(false);
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    let messages: Vec<&str> = rows.iter().map(|r| r.get(1)).collect();
    let mut events = Vec::with_capacity(rows.len());
    let mut unparsed = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        match work.parse(message.as_bytes()) {
            Ok(e) => events.push((i, e)),
            Err(why) => unparsed.push((i, format!("unparseable waiting event: {why}"))),
        }
    }
    let (indexes, events): (Vec<usize>, Vec<QueuedEvent<'_>>) = events.into_iter().unzip();
    // The lanes' write: partitions made, goal triggers sent (again: they are sent once
    // per subject), rows PostgreSQL refuses isolated.
    let (written, refused) = write_isolating_bad_rows(work, &events)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("storing waiting events")?;
    let mut pipe = domain::redis_client::pipe();
    work.on_commit(&mut pipe, &written);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let dead_letters: Vec<(usize, String)> = unparsed
        .into_iter()
        .chain(refused.into_iter().map(|(i, why)| (indexes[i], why)))
        .collect();
    for (i, reason) in &dead_letters {
        dead.dead_letter_in(
            &mut pipe,
            &DeadLetter {
                reason,
                item: messages[*i],
                at_ms: now_ms,
                worker_id: dead.worker_id(),
            },
        );
    }
    if !pipe.is_empty() {
        pipe.query_async::<()>(redis)
            .await
            .context("applying the side effects of waiting events")?;
    }
    tx.execute(DELETE_STORED, &[&site, &ids])
        .await
        .context("deleting stored waiting events")?;
    tx.commit().await.context("committing")?;
    metrics::counter!("batch_worker_events_waited_stored_total").increment(written.inserted);
    if !dead_letters.is_empty() {
        metrics::counter!("batch_worker_dead_lettered_total", "queue" => EventWork::NAME)
            .increment(dead_letters.len() as u64);
        tracing::error!(site_id = %site, items = dead_letters.len(), "waiting events dead-lettered");
    }
    Ok(rows.len() as i64 == CLAIM && written.waiting == 0)
}

/// Stores the waiting events of every site no change holds.
///
/// # Errors
/// When PostgreSQL or Redis fails.
pub async fn store_all_waiting(
    work: &EventWork,
    redis: &mut RedisConn,
    dead: &WorkerQueue,
) -> anyhow::Result<()> {
    let sites: Vec<String> = work
        .pg
        .get()
        .await
        .context("no PostgreSQL connection")?
        .query(READY_SITES, &[])
        .await
        .context("listing sites with waiting events")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for site in &sites {
        while store_waiting(work, redis, dead, site).await? {}
    }
    Ok(())
}

/// Stores waiting events every `interval` until `stop`; `dead` is where the events
/// PostgreSQL refuses go (the events queue's dead letters).
pub async fn run(
    work: Arc<EventWork>,
    redis: RedisConn,
    dead: WorkerQueue,
    interval: Duration,
    stop: CancellationToken,
) {
    every(interval, stop.clone(), || {
        let (work, mut redis, dead) = (work.clone(), redis.clone(), dead.clone());
        async move {
            super::visits::sketch_repair::record_backlog(
                &work.pg,
                "SELECT count(*) FROM events_waiting",
                "batch_worker_events_waiting",
            )
            .await;
            if let Err(e) = store_all_waiting(&work, &mut redis, &dead).await {
                metrics::counter!("batch_worker_events_waiting_failures_total").increment(1);
                tracing::warn!(error = format!("{e:#}"), "storing waiting events failed");
            }
        }
    })
    .await;
}
