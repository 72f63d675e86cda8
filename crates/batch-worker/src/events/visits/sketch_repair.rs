//! Repairs the visitor sketches of the cells a visit left (recorded in
//! `visit_rollup_stale` by the worker that moved it, see [`super::rollup_store`]): every
//! `VISIT_SKETCH_REPAIR_INTERVAL_MS`, each worker claims recorded cells (`SKIP LOCKED`, so
//! workers share them), locks them, and recomputes them from `visits`: one scan per site
//! and bucket (a UTC hour, or a day of the site's zone) however many of its cells are
//! stale. Until then a moved visitor counts in both cells (visitors over-counted by the
//! visits moved in the last interval or so).
//!
//! Recomputing inside the moving transaction instead cost a scan of the bucket's visits
//! per cell and batch, and made the drain 2.6 times slower on late-heavy data (measured).
//!
//! The cells are locked before their visits are read, in key order (as writers lock
//! them): a writer that committed before is in the read; one that has not will add its
//! visitors to the repaired sketch after this transaction. A day's zone is read without
//! a lock: a zone change rebuilds the site's day cells after this transaction (it waits
//! for the cell locks), or before it, having deleted its records.

use super::rollup_store::{VALUE_KEY, mark_weeks};
use anyhow::Context;
use chrono::{DateTime, Utc};
use domain::deadpool_postgres::Pool;
use domain::keys::Keys;
use domain::redis::RedisConn;
use domain::shutdown::CancellationToken;
use domain::visits::{FUNNEL_CELL_CODE, HOUR_SPAN, SKETCH_PARAMS, VisitDimension};
use std::sync::LazyLock;
use std::time::Duration;
use uuid::Uuid;

/// Cells claimed per transaction (its writers wait for the cells it holds).
const CLAIM: i64 = 500;

/// Claims recorded cells, as `(span, site, dimension, bucket, value key)`.
const CLAIM_STALE: &str = r"
WITH claimed AS (
    SELECT site_id, dimension, span_hours, bucket, value_key FROM visit_rollup_stale
    ORDER BY site_id, dimension, span_hours, bucket, value_key LIMIT $1 FOR UPDATE SKIP LOCKED
)
DELETE FROM visit_rollup_stale s USING claimed c
WHERE (s.site_id, s.dimension, s.span_hours, s.bucket, s.value_key)
    = (c.site_id, c.dimension, c.span_hours, c.bucket, c.value_key)
RETURNING s.span_hours, s.site_id, s.dimension, s.bucket, s.value_key
";

/// The cells of the statement's parameters: spans, sites, dimensions, buckets, value keys.
pub(super) const CELLS: &str = "unnest($1::int2[], $2::text[], $3::int2[], $4::timestamptz[], $5::uuid[]) \
                     AS c(span_hours, site_id, dimension, bucket, value_key)";

/// Locks [`CELLS`] in key order, as writers lock them.
pub(super) static LOCK_CELLS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT 1 FROM visit_rollups r JOIN {CELLS} USING (site_id, dimension, span_hours, bucket, value_key) \
         ORDER BY r.site_id, r.dimension, r.span_hours, r.bucket, r.value_key FOR UPDATE OF r"
    )
});

/// Every kept dimension's value of visit `v`, as `(code, value)` rows; with `goal` (the
/// SQL of a goal id), as the goal's cells `(code, value, goal)`.
fn dimension_values(goal: Option<&str>) -> String {
    VisitDimension::EVERY
        .iter()
        .filter(|d| d.has_rollup())
        .map(|d| {
            let column = d.column().map_or("NULL::text".into(), |c| format!("v.{c}"));
            match goal {
                None => format!("({}, {column}, NULL::text)", d.code()),
                Some(goal) => format!("({}, {column}, {goal})", d.goal_code()),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Recomputes the claimed cells' sketches. Every step is materialised, because the
/// planner, left to merge them, read a bucket's visits once per stale cell in it, or
/// matched every visit of the bucket against every stale cell (38 s for 1,000 cells of
/// 59 buckets, 3.6 s like this): each bucket's visits are read once through the index
/// (`OFFSET 0` keeps the lookup per bucket; a day's from an hour before its local midnight
/// to an hour after the next, a margin for midnights a clock change skips, then by their
/// date in the site's zone, as the worker and migration 0012 bucket them), paired with
/// the stale dimensions of their bucket, then with the cells. The primary key has no
/// order by time within a site, so the lookup reads the index entries of the site's
/// whole history: an index by (site, start) would read only the day's, but it cost every
/// visit written an index entry more and a goal recount (every visit of the site
/// rewritten) a third more time, measured; the pacing of [`run`] bounds what the repair
/// costs instead.
static REPAIR: LazyLock<String> = LazyLock::new(|| {
    let key = VALUE_KEY.replace("c.", "e.");
    format!(
        r"
WITH c AS MATERIALIZED (SELECT * FROM {CELLS}),
buckets AS MATERIALIZED (
    SELECT DISTINCT c.site_id, c.span_hours, c.bucket, coalesce(z.timezone, 'UTC') AS zone
    FROM c LEFT JOIN visit_rollup_zones z ON z.site_id = c.site_id
),
dims AS MATERIALIZED (SELECT DISTINCT site_id, span_hours, bucket, dimension FROM c),
scanned AS MATERIALIZED (
    SELECT b.span_hours, b.bucket, v.*
    FROM buckets b
    CROSS JOIN LATERAL (
        SELECT * FROM visits v
        WHERE v.site_id = b.site_id
          AND v.started_at >= CASE b.span_hours WHEN {HOUR_SPAN} THEN b.bucket
              ELSE ((b.bucket AT TIME ZONE 'UTC')::date::timestamp AT TIME ZONE b.zone) - interval '1 hour' END
          AND v.started_at < CASE b.span_hours WHEN {HOUR_SPAN} THEN b.bucket + interval '1 hour'
              ELSE (((b.bucket AT TIME ZONE 'UTC')::date + 1)::timestamp AT TIME ZONE b.zone) + interval '1 hour' END
        OFFSET 0
    ) v
    WHERE b.span_hours = {HOUR_SPAN}
       OR (v.started_at AT TIME ZONE b.zone)::date = (b.bucket AT TIME ZONE 'UTC')::date
),
expanded AS MATERIALIZED (
    SELECT v.site_id, v.span_hours, v.bucket, d.code, d.value, d.goal_id, v.visitor
    FROM scanned v
    CROSS JOIN LATERAL (
        VALUES {values}
        UNION ALL
        SELECT x.* FROM jsonb_object_keys(v.goals) AS g(goal_id)
        CROSS JOIN LATERAL (VALUES {goal_values}) AS x
        UNION ALL
        SELECT {FUNNEL_CELL_CODE}, k::text, f.funnel_id
        FROM visit_rollup_zones z
        CROSS JOIN LATERAL jsonb_to_recordset(z.funnels) AS f(funnel_id text, steps jsonb)
        CROSS JOIN LATERAL generate_series(1, tally_funnel_reach(v.steps, f.steps)) AS k
        WHERE z.site_id = v.site_id AND v.steps IS NOT NULL
    ) AS d(code, value, goal_id)
    JOIN dims k ON (k.site_id, k.span_hours, k.bucket, k.dimension)
                 = (v.site_id, v.span_hours, v.bucket, d.code)
),
-- Their queued members (migration 0017) are of visits read here: gone with the recount.
queued AS (
    DELETE FROM visit_rollup_pending p USING c
    WHERE (p.site_id, p.dimension, p.span_hours, p.bucket, p.value_key)
        = (c.site_id, c.dimension, c.span_hours, c.bucket, c.value_key)
),
-- The weeks of repaired days are out of date (migration 0019); run after the update.
weeks AS ({weeks}),
computed AS (
    SELECT c.site_id, c.span_hours, c.bucket, c.dimension, c.value_key,
           hll_add_agg(hll_hash_text(e.visitor), {SKETCH_PARAMS}) AS sketch
    FROM expanded e
    JOIN c ON (c.site_id, c.span_hours, c.bucket, c.dimension, c.value_key)
            = (e.site_id, e.span_hours, e.bucket, e.code, {key})
    GROUP BY 1, 2, 3, 4, 5
)
UPDATE visit_rollups r SET visitors = x.sketch
FROM c LEFT JOIN computed x
     ON (x.site_id, x.span_hours, x.bucket, x.dimension, x.value_key)
      = (c.site_id, c.span_hours, c.bucket, c.dimension, c.value_key)
WHERE r.site_id = c.site_id AND r.dimension = c.dimension AND r.span_hours = c.span_hours
  AND r.bucket = c.bucket AND r.value_key = c.value_key
",
        values = dimension_values(None),
        goal_values = dimension_values(Some("g.goal_id")),
        weeks = mark_weeks("c"),
    )
});

/// Repairs one claim of stale cells; returns how many, and their sites.
///
/// # Errors
/// When PostgreSQL fails (the claim then stays for the next run).
pub async fn repair_once(pg: &Pool) -> anyhow::Result<(usize, Vec<String>)> {
    let mut client = pg.get().await.context("no PostgreSQL connection")?;
    let tx = client.transaction().await.context("beginning")?;
    let claimed = tx
        .query(CLAIM_STALE, &[&CLAIM])
        .await
        .context("claiming stale cells")?;
    if claimed.is_empty() {
        return Ok((0, Vec::new()));
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
    tx.execute(REPAIR.as_str(), &cells)
        .await
        .context("repairing visitor sketches")?;
    tx.commit().await.context("committing repaired sketches")?;
    metrics::counter!("batch_worker_visit_sketches_repaired_total").increment(claimed.len() as u64);
    let mut repaired_sites = sites;
    repaired_sites.sort_unstable();
    repaired_sites.dedup();
    Ok((claimed.len(), repaired_sites))
}

/// Bumps the cache generations of `sites`: an answer cached before the repair counted
/// the moved visitors twice (a failure leaves it until the site's next batch bumps them).
async fn forget_cached_answers(redis: &mut RedisConn, keys: &Keys, sites: &[String]) {
    let mut pipe = domain::redis_client::pipe();
    domain::cache::bump_sites(&mut pipe, keys, sites.iter().map(String::as_str));
    if let Err(e) = pipe.query_async::<()>(redis).await {
        tracing::warn!(error = %e, "could not invalidate the answers cached before a sketch repair");
    }
}

/// Sets `gauge` to the count `count_sql` reads: a backlog, measured before this worker
/// takes its share (an operator alerts on it). A failure leaves the last value.
pub(crate) async fn record_backlog(pg: &Pool, count_sql: &str, gauge: &'static str) {
    if let Ok(client) = pg.get().await
        && let Ok(row) = client.query_one(count_sql, &[]).await
    {
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!(gauge).set(row.get::<_, i64>(0) as f64);
    }
}

/// A repair round recounts whole days of visits (a busy site's current day on live
/// traffic, where late events keep moving visits): the next round waits this many times as
/// long as the last one took, so the repair works at most a fifth of the time however big
/// the days grow. A moved visitor counts in both cells until then.
const PAUSE_PER_ROUND_TIME: u32 = 4;

/// How long after a round that took `took` ended the next one begins: no sooner than
/// `interval` after the last began, nor than [`PAUSE_PER_ROUND_TIME`] times `took` after
/// it ended.
fn next_round_in(interval: Duration, took: Duration) -> Duration {
    interval
        .saturating_sub(took)
        .max(took.saturating_mul(PAUSE_PER_ROUND_TIME))
}

/// Repairs stale sketches every `interval` (or less often, see [`PAUSE_PER_ROUND_TIME`])
/// until `stop`.
pub async fn run(
    pg: Pool,
    mut redis: RedisConn,
    keys: Keys,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let began = std::time::Instant::now();
        repair_round(&pg, &mut redis, &keys).await;
        let took = began.elapsed();
        metrics::histogram!("batch_worker_visit_sketch_repair_round_seconds")
            .record(took.as_secs_f64());
        wait = next_round_in(interval, took);
    }
}

/// Repairs every claimable stale cell, a claim at a time.
async fn repair_round(pg: &Pool, redis: &mut RedisConn, keys: &Keys) {
    record_backlog(
        pg,
        "SELECT count(*) FROM visit_rollup_stale",
        "batch_worker_visit_rollup_stale_cells",
    )
    .await;
    loop {
        match repair_once(pg).await {
            Ok((n, sites)) if n > 0 => forget_cached_answers(redis, keys, &sites).await,
            Ok(_) => break,
            Err(e) => {
                metrics::counter!("batch_worker_visit_sketch_repair_failures_total").increment(1);
                tracing::warn!(
                    error = format!("{e:#}"),
                    "repairing visitor sketches failed"
                );
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_keep_the_interval_while_short_and_pause_four_times_their_length_when_long() {
        let ms = Duration::from_millis;
        assert_eq!(next_round_in(ms(1_000), ms(10)), ms(990));
        assert_eq!(next_round_in(ms(1_000), ms(200)), ms(800));
        assert_eq!(next_round_in(ms(1_000), ms(500)), ms(2_000));
        assert_eq!(next_round_in(ms(1_000), ms(3_000)), ms(12_000));
    }
}
