//! Folds the visitors queued for large sketches (`visit_rollup_pending`, migration 0017,
//! written by [`super::rollup_store`]) into their cells: every
//! `VISIT_SKETCH_FOLD_INTERVAL_MS`, each worker takes the queued cells in key order, locks
//! them (as writers and the repair lock them) and, in one statement after the locks,
//! deletes their queued rows and merges them into the cells. A busy cell's sketch is then
//! written once per interval instead of once per batch; readers union the queue in
//! (`visit_rollup_cells`), so a fold changes no answer.
//!
//! Two workers folding the same cells wait for each other on the cell locks; the second
//! finds the rows gone. Rows committed after the locks were taken are of writers that
//! held no lock on these cells, so none exist: a writer queues members only for a cell it
//! has locked.

use super::sketch_repair::{CELLS, LOCK_CELLS, record_backlog};
use anyhow::Context;
use chrono::{DateTime, Utc};
use domain::deadpool_postgres::Pool;
use domain::shutdown::{CancellationToken, every};
use std::sync::LazyLock;
use std::time::Duration;
use uuid::Uuid;

/// Cells folded per transaction (writers of these cells wait meanwhile).
const CLAIM: usize = 2_000;

/// Queued cells, as `(span, site, dimension, bucket, value key)` in key order.
const QUEUED: &str = r"
SELECT DISTINCT span_hours, site_id, dimension, bucket, value_key FROM visit_rollup_pending
ORDER BY site_id, dimension, span_hours, bucket, value_key LIMIT $1
";

static FOLD: LazyLock<String> = LazyLock::new(|| {
    format!(
        r"
WITH c AS MATERIALIZED (SELECT * FROM {CELLS}),
taken AS (
    DELETE FROM visit_rollup_pending p USING c
    WHERE (p.site_id, p.dimension, p.span_hours, p.bucket, p.value_key)
        = (c.site_id, c.dimension, c.span_hours, c.bucket, c.value_key)
    RETURNING p.site_id, p.dimension, p.span_hours, p.bucket, p.value_key, p.visitors
),
merged AS (
    SELECT site_id, dimension, span_hours, bucket, value_key, hll_union_agg(visitors) AS visitors
    FROM taken GROUP BY 1, 2, 3, 4, 5
)
UPDATE visit_rollups r
SET visitors = CASE WHEN r.visitors IS NULL THEN m.visitors ELSE hll_union(r.visitors, m.visitors) END
FROM merged m
WHERE (r.site_id, r.dimension, r.span_hours, r.bucket, r.value_key)
    = (m.site_id, m.dimension, m.span_hours, m.bucket, m.value_key)
"
    )
});

/// Folds one claim of queued cells; returns how many cells.
///
/// # Errors
/// When PostgreSQL fails (the rows then stay queued for the next run).
pub async fn fold_once(pg: &Pool) -> anyhow::Result<usize> {
    let mut client = pg.get().await.context("no PostgreSQL connection")?;
    let tx = client.transaction().await.context("beginning")?;
    let queued = tx
        .query(QUEUED, &[&i64::try_from(CLAIM).unwrap_or(i64::MAX)])
        .await
        .context("reading queued sketch members")?;
    if queued.is_empty() {
        return Ok(0);
    }
    let spans: Vec<i16> = queued.iter().map(|r| r.get(0)).collect();
    let sites: Vec<String> = queued.iter().map(|r| r.get(1)).collect();
    let dimensions: Vec<i16> = queued.iter().map(|r| r.get(2)).collect();
    let buckets: Vec<DateTime<Utc>> = queued.iter().map(|r| r.get(3)).collect();
    let keys: Vec<Uuid> = queued.iter().map(|r| r.get(4)).collect();
    let cells: [&(dyn domain::tokio_postgres::types::ToSql + Sync); 5] =
        [&spans, &sites, &dimensions, &buckets, &keys];
    tx.execute(LOCK_CELLS.as_str(), &cells)
        .await
        .context("locking queued cells")?;
    // A statement of its own after the locks: every row queued for these cells is in it.
    let folded = tx
        .execute(FOLD.as_str(), &cells)
        .await
        .context("folding queued sketch members")?;
    tx.commit().await.context("committing folded sketches")?;
    metrics::counter!("batch_worker_visit_sketch_cells_folded_total").increment(folded);
    Ok(queued.len())
}

/// Folds the queue every `interval` until `stop`.
pub async fn run(pg: Pool, interval: Duration, stop: CancellationToken) {
    every(interval, stop.clone(), || {
        let pg = pg.clone();
        async move {
            record_backlog(
                &pg,
                "SELECT count(*) FROM visit_rollup_pending",
                "batch_worker_visit_sketch_queued_rows",
            )
            .await;
            loop {
                match fold_once(&pg).await {
                    // A full claim: more may be queued.
                    Ok(n) if n == CLAIM => {}
                    Ok(_) => break,
                    Err(e) => {
                        metrics::counter!("batch_worker_visit_sketch_fold_failures_total")
                            .increment(1);
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "folding queued visitor sketch members failed"
                        );
                        break;
                    }
                }
            }
        }
    })
    .await;
}
