//! Repairs the visitor sketches of the cells a visit left (recorded in
//! `visit_rollup_stale` by the worker that moved it, see [`super::rollup_store`]): every
//! `VISIT_SKETCH_REPAIR_INTERVAL_MS`, each worker claims recorded cells (`SKIP LOCKED`, so
//! workers share them), locks them, and recomputes them: an hour's cells from `visits`,
//! one scan per site and hour however many of its cells are stale; a day's from its
//! hours, once no hour of that day waits for repair. Until then a moved visitor counts in
//! both cells (visitors over-counted by the visits moved in the last interval or so).
//!
//! Recomputing inside the moving transaction instead cost a scan of the bucket's visits
//! per cell and batch, and made the drain 2.6 times slower on late-heavy data (measured).
//!
//! The cells are locked before their visits are read, in key order (as writers lock
//! them): a writer that committed before is in the read; one that has not will add its
//! visitors to the repaired sketch after this transaction.

use super::rollup_store::VALUE_KEY;
use anyhow::Context;
use chrono::{DateTime, Utc};
use domain::deadpool_postgres::Pool;
use domain::shutdown::{CancellationToken, every};
use domain::visits::{SKETCH_PARAMS, VisitDimension};
use std::sync::LazyLock;
use std::time::Duration;
use uuid::Uuid;

/// Cells claimed per transaction.
const CLAIM: i64 = 5_000;

/// Claims hour cells, and day cells none of whose hours waits (here or in another
/// worker's claim), as `(span, site, dimension, bucket, value key)`.
const CLAIM_STALE: &str = r"
WITH hours AS (
    SELECT site_id, dimension, span_hours, bucket, value_key FROM visit_rollup_stale
    WHERE span_hours = 1
    ORDER BY site_id, dimension, span_hours, bucket, value_key LIMIT $1 FOR UPDATE SKIP LOCKED
), days AS (
    SELECT site_id, dimension, span_hours, bucket, value_key FROM visit_rollup_stale d
    WHERE span_hours = 24 AND NOT EXISTS (
        SELECT 1 FROM visit_rollup_stale h
        WHERE h.site_id = d.site_id AND h.span_hours = 1
          AND h.bucket >= d.bucket AND h.bucket < d.bucket + interval '1 day')
    ORDER BY site_id, dimension, span_hours, bucket, value_key LIMIT $1 FOR UPDATE SKIP LOCKED
), claimed AS (SELECT * FROM hours UNION ALL SELECT * FROM days)
DELETE FROM visit_rollup_stale s USING claimed c
WHERE (s.site_id, s.dimension, s.span_hours, s.bucket, s.value_key)
    = (c.site_id, c.dimension, c.span_hours, c.bucket, c.value_key)
RETURNING s.span_hours, s.site_id, s.dimension, s.bucket, s.value_key
";

const CELLS: &str = "unnest($1::int2[], $2::text[], $3::int2[], $4::timestamptz[], $5::uuid[]) \
                     AS c(span_hours, site_id, dimension, bucket, value_key)";

static LOCK_CELLS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT 1 FROM visit_rollups r JOIN {CELLS} USING (site_id, dimension, span_hours, bucket, value_key) \
         ORDER BY r.site_id, r.dimension, r.span_hours, r.bucket, r.value_key FOR UPDATE OF r"
    )
});

/// Every dimension's value of visit `v`, as `(code, value)` rows.
fn dimension_values() -> String {
    VisitDimension::EVERY
        .iter()
        .filter(|d| d.has_rollup())
        .map(|d| {
            let column = d.column().map_or("NULL::text".into(), |c| format!("v.{c}"));
            format!("({}, {column})", d.code())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

static REPAIR_HOURS: LazyLock<String> = LazyLock::new(|| {
    let key = VALUE_KEY.replace("c.value", "d.value");
    format!(
        r"
WITH c AS (SELECT * FROM {CELLS} WHERE span_hours = 1),
hours AS (SELECT DISTINCT site_id, bucket FROM c),
computed AS (
    SELECT v.site_id, h.bucket, d.code, {key} AS value_key,
           hll_add_agg(hll_hash_text(v.visitor), {SKETCH_PARAMS}) AS sketch
    FROM hours h
    JOIN visits v ON v.site_id = h.site_id AND v.started_at >= h.bucket
                 AND v.started_at < h.bucket + interval '1 hour'
    CROSS JOIN LATERAL (VALUES {values}) AS d(code, value)
    WHERE (v.site_id, h.bucket, d.code, {key}) IN (SELECT site_id, bucket, dimension, value_key FROM c)
    GROUP BY 1, 2, 3, 4
)
UPDATE visit_rollups r SET visitors = x.sketch
FROM c LEFT JOIN computed x
     ON (x.site_id, x.bucket, x.code, x.value_key) = (c.site_id, c.bucket, c.dimension, c.value_key)
WHERE r.site_id = c.site_id AND r.dimension = c.dimension AND r.span_hours = 1
  AND r.bucket = c.bucket AND r.value_key = c.value_key
",
        values = dimension_values()
    )
});

static REPAIR_DAYS: LazyLock<String> = LazyLock::new(|| {
    format!(
        r"
UPDATE visit_rollups r SET visitors = (
    SELECT hll_union_agg(h.visitors) FROM visit_rollups h
    WHERE h.site_id = r.site_id AND h.dimension = r.dimension AND h.span_hours = 1
      AND h.bucket >= r.bucket AND h.bucket < r.bucket + interval '1 day'
      AND h.value_key = r.value_key
)
FROM {CELLS}
WHERE c.span_hours = 24 AND r.site_id = c.site_id AND r.dimension = c.dimension
  AND r.span_hours = 24 AND r.bucket = c.bucket AND r.value_key = c.value_key
"
    )
});

/// Repairs one claim of stale cells; returns how many.
///
/// # Errors
/// When PostgreSQL fails (the claim then stays for the next run).
pub async fn repair_once(pg: &Pool) -> anyhow::Result<usize> {
    let mut client = pg.get().await.context("no PostgreSQL connection")?;
    let tx = client.transaction().await.context("beginning")?;
    let claimed = tx
        .query(CLAIM_STALE, &[&CLAIM])
        .await
        .context("claiming stale cells")?;
    if claimed.is_empty() {
        return Ok(0);
    }
    let spans: Vec<i16> = claimed.iter().map(|r| r.get(0)).collect();
    let sites: Vec<String> = claimed.iter().map(|r| r.get(1)).collect();
    let dimensions: Vec<i16> = claimed.iter().map(|r| r.get(2)).collect();
    let buckets: Vec<DateTime<Utc>> = claimed.iter().map(|r| r.get(3)).collect();
    let keys: Vec<Uuid> = claimed.iter().map(|r| r.get(4)).collect();
    let cells: [&(dyn domain::tokio_postgres::types::ToSql + Sync); 5] =
        [&spans, &sites, &dimensions, &buckets, &keys];
    tx.execute(LOCK_CELLS.as_str(), &cells)
        .await
        .context("locking stale cells")?;
    // A statement of its own after the locks: it reads the visits committed until then.
    tx.execute(REPAIR_HOURS.as_str(), &cells)
        .await
        .context("repairing hour sketches")?;
    tx.execute(REPAIR_DAYS.as_str(), &cells)
        .await
        .context("repairing day sketches")?;
    tx.commit().await.context("committing repaired sketches")?;
    metrics::counter!("batch_worker_visit_sketches_repaired_total").increment(claimed.len() as u64);
    Ok(claimed.len())
}

/// Repairs stale sketches every `interval` until `stop`.
pub async fn run(pg: Pool, interval: Duration, stop: CancellationToken) {
    every(interval, stop.clone(), || {
        let pg = pg.clone();
        async move {
            loop {
                match repair_once(&pg).await {
                    Ok(n) if n > 0 => continue,
                    Ok(_) => break,
                    Err(e) => {
                        metrics::counter!("batch_worker_visit_sketch_repair_failures_total")
                            .increment(1);
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "repairing visitor sketches failed"
                        );
                        break;
                    }
                }
            }
        }
    })
    .await;
}
