//! Writes [`RollupChanges`] in the visits' transaction: the cells a visit left recorded for
//! [`super::sketch_repair`], then one upsert of every changed cell (in key order, so two
//! writers lock shared cells in the same order), queueing the new visitors of cells with a
//! large sketch for [`super::sketch_fold`].

use super::rollup::{Cell, RollupChanges};
use crate::lane::StoreError;
use chrono::{DateTime, Utc};
use domain::deadpool_postgres::Transaction;
use domain::visits::{DAY_SPAN, HOUR_SPAN, SKETCH_PARAMS, VisitDimension};
use std::sync::LazyLock;

/// The key of a cell `c`'s value (and goal), as migration 0013 computes it.
pub(super) const VALUE_KEY: &str = "tally_rollup_value_key(c.goal_id, c.value)";

/// A sketch stored in more bytes than this is not merged into in place: the batch's
/// members of its cell are queued in `visit_rollup_pending` and folded in later
/// (migration 0017, [`super::sketch_fold`]). Smaller ones (explicit or sparse, stored
/// inline) merge cheaply.
const MERGE_IN_PLACE_BELOW_BYTES: i32 = 1024;

/// Bumps the generation of every marked week (migration 0019) that a day cell of `cells`
/// (a relation with `site_id`, `span_hours` and `bucket`) is in, making the week's cells
/// out of date until they are built again. Its rows are locked in key order, after the
/// cells: a late event's writer, the repair and the week builder take them in that order.
pub(crate) fn mark_weeks(cells: &str) -> String {
    bump_generations(
        cells,
        ("visit_rollup_weeks", "week"),
        "tally_visit_week(bucket)",
        &format!("span_hours = {DAY_SPAN} AND tally_visit_week_marked(tally_visit_week(bucket))"),
    )
}

/// Bumps the generation of every marked day (migration 0024) that a day cell of `cells`
/// is of, making its pair day cells out of date until built again; in the statement that
/// locks the week rows, after them.
fn mark_days(cells: &str) -> String {
    bump_generations(
        cells,
        ("visit_rollup_days", "day"),
        "bucket",
        &format!("span_hours = {DAY_SPAN} AND tally_visit_day_marked(bucket)"),
    )
}

/// Bumps the generation of every marked hour (migration 0025) whose totals' hour cell is
/// in `cells`, making its pair hour cells out of date until built again; after the day
/// rows.
fn mark_hours(cells: &str) -> String {
    bump_generations(
        cells,
        ("visit_rollup_hours", "hour"),
        "bucket",
        &format!(
            "span_hours = {HOUR_SPAN} AND dimension = {} AND tally_visit_hour_marked(bucket)",
            VisitDimension::All.code()
        ),
    )
}

/// Bumps the generation of the rows of `table` (keyed by site and its `span` column) that
/// `span_of` (an expression of a cell's `bucket`) gives for the cells of `cells` passing
/// `marked`, making a row it did not have. Its rows are locked in key order, so every
/// writer locks them in one order.
fn bump_generations(
    cells: &str,
    (table, span): (&str, &str),
    span_of: &str,
    marked: &str,
) -> String {
    format!(
        "INSERT INTO {table} AS t (site_id, {span}, generation, built_generation) \
         SELECT DISTINCT site_id, {span_of}, 1, -1 FROM {cells} WHERE {marked} \
         ORDER BY 1, 2 \
         ON CONFLICT (site_id, {span}) DO UPDATE SET generation = t.generation + 1"
    )
}

static UPSERT_CELLS: LazyLock<String> = LazyLock::new(|| {
    format!(
        r"
WITH members AS (
    SELECT i, hll_add_agg(hll_hash_text(visitor), {SKETCH_PARAMS}) AS visitors
    FROM unnest($11::int8[], $12::text[]) AS m(i, visitor)
    GROUP BY i
),
cells AS (
    SELECT c.site_id, c.dimension, c.span_hours, c.bucket, {VALUE_KEY} AS value_key, c.value,
           c.visits, c.pageviews, c.events, c.bounces, c.duration_us, m.visitors, c.goal_id
    FROM unnest($1::text[], $2::int2[], $3::int2[], $4::timestamptz[], $5::text[],
                $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $13::text[]) WITH ORDINALITY
         AS c(site_id, dimension, span_hours, bucket, value, visits, pageviews, events, bounces, duration_us, goal_id, i)
    LEFT JOIN members m ON m.i = c.i
),
written AS (
    INSERT INTO visit_rollups AS r
    SELECT * FROM cells
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (site_id, dimension, span_hours, bucket, value_key) DO UPDATE SET
        visits = r.visits + EXCLUDED.visits,
        pageviews = r.pageviews + EXCLUDED.pageviews,
        events = r.events + EXCLUDED.events,
        bounces = r.bounces + EXCLUDED.bounces,
        duration_us = r.duration_us + EXCLUDED.duration_us,
        -- Untouched when nobody joins: every hll operation unpacks its operands (128 KB each).
        visitors = CASE WHEN EXCLUDED.visitors IS NULL THEN r.visitors
                        WHEN r.visitors IS NULL THEN EXCLUDED.visitors
                        WHEN pg_column_size(r.visitors) > {MERGE_IN_PLACE_BELOW_BYTES} THEN r.visitors
                        ELSE hll_union(r.visitors, EXCLUDED.visitors) END
    -- Large now: the members were not merged (or, a sketch that just grew, merged: queued
    -- again, which a union does not count twice).
    RETURNING site_id, dimension, span_hours, bucket, value_key,
              pg_column_size(visitors) > {MERGE_IN_PLACE_BELOW_BYTES} AS queued
),
-- Unreferenced, so run after the statement's other parts, the cell locks taken.
weeks AS ({weeks}),
days AS ({days}),
hours AS ({hours})
INSERT INTO visit_rollup_pending
SELECT c.site_id, c.dimension, c.span_hours, c.bucket, c.value_key, c.value, c.goal_id, c.visitors
FROM written w JOIN cells c USING (site_id, dimension, span_hours, bucket, value_key)
WHERE w.queued AND c.visitors IS NOT NULL
",
        weeks = mark_weeks("cells"),
        days = mark_days("cells"),
        hours = mark_hours("cells")
    )
});

/// Records cells a visit left, for [`super::sketch_repair`]. A row already recorded is
/// locked (not left alone) until this transaction commits: a repair that claimed it now
/// would read the visits without this transaction's change and then delete the record of
/// it (the repair skips locked rows, so it takes the row once this change is visible).
/// Before the upsert: the repair claims these rows and then locks cells, so a writer
/// waiting on a claimed row must not hold a cell lock yet.
static MARK_STALE: LazyLock<String> = LazyLock::new(|| {
    format!(
        r"
INSERT INTO visit_rollup_stale AS s
SELECT c.site_id, c.dimension, c.span_hours, c.bucket, {VALUE_KEY}, c.value, c.goal_id
FROM unnest($1::text[], $2::int2[], $3::int2[], $4::timestamptz[], $5::text[], $6::text[])
     AS c(site_id, dimension, span_hours, bucket, value, goal_id)
ORDER BY 1, 2, 3, 4, 5
ON CONFLICT (site_id, dimension, span_hours, bucket, value_key) DO UPDATE SET value = EXCLUDED.value
"
    )
});

struct CellColumns<'a> {
    sites: Vec<&'a str>,
    dimensions: Vec<i16>,
    spans: Vec<i16>,
    buckets: Vec<DateTime<Utc>>,
    values: Vec<Option<&'a str>>,
    goals: Vec<Option<&'a str>>,
}

impl<'a> CellColumns<'a> {
    fn of<'c>(cells: impl ExactSizeIterator<Item = &'c Cell<'a>>) -> Self
    where
        'a: 'c,
    {
        let n = cells.len();
        let mut c = Self {
            sites: Vec::with_capacity(n),
            dimensions: Vec::with_capacity(n),
            spans: Vec::with_capacity(n),
            buckets: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
            goals: Vec::with_capacity(n),
        };
        for cell in cells {
            c.sites.push(cell.site_id);
            c.dimensions.push(cell.code());
            c.spans.push(cell.span_hours);
            c.buckets.push(cell.bucket);
            c.values.push(cell.value);
            c.goals.push(cell.goal_id());
        }
        c
    }
}

/// Applies `changes`.
///
/// # Errors
/// [`StoreError`] when PostgreSQL fails.
pub async fn write_rollups(
    tx: &Transaction<'_>,
    changes: &RollupChanges<'_>,
) -> Result<(), StoreError> {
    tracing::debug!(
        cells = changes.cells.len(),
        members = changes.members.len(),
        stale = changes.stale.len(),
        "visit rollup changes"
    );
    if !changes.stale.is_empty() {
        let keys = CellColumns::of(changes.stale.iter());
        let mark = tx
            .prepare_cached(&MARK_STALE)
            .await
            .map_err(StoreError::from_pg)?;
        tx.execute(
            &mark,
            &[
                &keys.sites,
                &keys.dimensions,
                &keys.spans,
                &keys.buckets,
                &keys.values,
                &keys.goals,
            ],
        )
        .await
        .map_err(StoreError::from_pg)?;
    }
    if !changes.cells.is_empty() {
        let keys = CellColumns::of(changes.cells.iter().map(|(cell, _)| cell));
        let sum = |f: fn(&super::rollup::Sums) -> i64| -> Vec<i64> {
            changes.cells.iter().map(|(_, s)| f(s)).collect()
        };
        let (visits, pageviews, events, bounces, duration) = (
            sum(|s| s.visits),
            sum(|s| s.pageviews),
            sum(|s| s.events),
            sum(|s| s.bounces),
            sum(|s| s.duration_us),
        );
        let (member_cells, members): (Vec<i64>, Vec<&str>) =
            changes.members.iter().copied().unzip();
        let upsert = tx
            .prepare_cached(&UPSERT_CELLS)
            .await
            .map_err(StoreError::from_pg)?;
        tx.execute(
            &upsert,
            &[
                &keys.sites,
                &keys.dimensions,
                &keys.spans,
                &keys.buckets,
                &keys.values,
                &visits,
                &pageviews,
                &events,
                &bounces,
                &duration,
                &member_cells,
                &members,
                &keys.goals,
            ],
        )
        .await
        .map_err(StoreError::from_pg)?;
    }
    Ok(())
}
