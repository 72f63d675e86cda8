-- Visitors joining a large sketch are queued, and folded into it once per interval.
--
-- Adding a batch's visitors to a cell's sketch unpacks it, merges and writes it back:
-- for a dense sketch (10 KB, TOASTed) that is a new 10 KB value, in the heap and the
-- WAL, per cell and batch. A busy site's day cells (its totals, sources, devices,
-- browsers, systems, countries, goals) are touched by every batch, and writing them was
-- the rollups' largest cost in the drain. A writer now merges in place only into a cell
-- whose sketch is small (under 1 KB: explicit or sparse, stored inline); for a larger one
-- it appends the batch's members of the cell as a row of visit_rollup_pending (a small
-- sketch of its own), and the batch-worker's fold (crates/batch-worker/src/events/visits/
-- sketch_fold.rs) merges every queued row of a cell into it in one write, every
-- VISIT_SKETCH_FOLD_INTERVAL_MS.
--
-- Readers read visit_rollup_cells: the cells and their queued members, a union every
-- query aggregates anyway (sums, and a union of sketches), so an answer is the same
-- before and after a fold. A fold deletes the rows it merges in the transaction that
-- merges them; a repair or a rebuild that recomputes a cell from `visits` deletes its
-- queued rows with it (they hold no visitor the visits do not).
CREATE TABLE visit_rollup_pending (
    site_id     text        NOT NULL,
    dimension   smallint    NOT NULL,
    span_hours  smallint    NOT NULL,
    bucket      timestamptz NOT NULL,
    value_key   uuid        NOT NULL,
    value       text,
    goal_id     text,
    visitors    hll(14, 5, -1, 1) NOT NULL
);
CREATE INDEX visit_rollup_pending_cell
    ON visit_rollup_pending (site_id, dimension, span_hours, bucket, value_key);

CREATE VIEW visit_rollup_cells AS
SELECT site_id, dimension, span_hours, bucket, value_key, value, visits, pageviews, events,
       bounces, duration_us, visitors, goal_id
FROM visit_rollups
UNION ALL
SELECT site_id, dimension, span_hours, bucket, value_key, value, 0::bigint, 0::bigint,
       0::bigint, 0::bigint, 0::bigint, visitors, goal_id
FROM visit_rollup_pending;

-- The rebuilds recompute cells from `visits`: each now deletes the cells' queued members
-- first (its caller holds what keeps writers away, as before).
ALTER FUNCTION tally_rebuild_visit_rollups(text) RENAME TO tally_rebuild_visit_rollup_cells;
CREATE FUNCTION tally_rebuild_visit_rollups(p_site text DEFAULT NULL) RETURNS void
LANGUAGE sql AS $$
DELETE FROM visit_rollup_pending WHERE p_site IS NULL OR site_id = p_site;
SELECT tally_rebuild_visit_rollup_cells(p_site);
$$;

ALTER FUNCTION tally_rebuild_visit_day_rollups(text) RENAME TO tally_rebuild_visit_day_cells;
CREATE FUNCTION tally_rebuild_visit_day_rollups(p_site text) RETURNS void
LANGUAGE sql AS $$
DELETE FROM visit_rollup_pending WHERE site_id = p_site AND span_hours = 24;
SELECT tally_rebuild_visit_day_cells(p_site);
$$;

ALTER FUNCTION tally_rebuild_visit_goals(text) RENAME TO tally_rebuild_visit_goal_cells;
CREATE FUNCTION tally_rebuild_visit_goals(p_site text) RETURNS void
LANGUAGE sql AS $$
DELETE FROM visit_rollup_pending WHERE goal_id IS NOT NULL AND (p_site IS NULL OR site_id = p_site);
SELECT tally_rebuild_visit_goal_cells(p_site);
$$;
