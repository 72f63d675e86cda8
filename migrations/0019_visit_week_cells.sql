-- Week cells: each past week of a site's day cells merged into one row per dimension and
-- value (span_hours 168, bucket the Monday's day bucket), so that a query over 91 days
-- merges about 13 rows per value instead of 91.
--
-- What a day-cell query cost was per row, not per byte: every sketch merged is unpacked
-- into 128 KB of registers (sources: 7 values x 91 days; countries: 20 x 91), and an entry
-- page breakdown sums 500 pages x 91 days of rows. A week cell holds exactly the sums and
-- the union of its seven days' cells (their queued members included), so an answer read
-- from week cells and the days around them is the answer read from the days alone, to
-- the last digit: sums add, and an hll union depends only on the set of members.
--
-- Correctness rests on one rule: a week's cells are used only while its row of
-- visit_rollup_weeks says they were built from the week's current days (generation =
-- built_generation).
--
-- * Weeks are built once sealed: ended 48 hours ago (tally_visit_week_sealed), past the
--   end of that week's days in any zone. Live traffic never writes a sealed week.
-- * Every write that changes a day cell of a week that ended 24 hours ago bumps the
--   week's generation in its own transaction: a late event's writer, in the statement
--   upserting its cells, and the sketch repair (tally_visit_week_marked). Each locks the
--   row to do so, after its cell locks.
-- * A build locks the week's row (skipping a week someone holds), so no bump commits
--   while it reads. It then reads the days in a later statement, which sees every change
--   committed before. The 24-hour gap between the two rules covers a writer transaction
--   that began before the week was sealed. A bump committed after the build leaves the
--   week invalid until the next build.
-- * The rebuilds (zone, goals, all) delete the site's week cells and rows: they hold the
--   site's settings lock exclusively, and a build takes it shared.
-- * The fold of queued members changes no union, so it bumps nothing.
CREATE TABLE visit_rollup_weeks (
    site_id          text        NOT NULL,
    -- The Monday's day bucket (domain::visits::day_bucket).
    week             timestamptz NOT NULL,
    -- Changes to the week's day cells since it was sealed.
    generation       bigint      NOT NULL,
    -- The generation the week cells were built from; -1: never built.
    built_generation bigint      NOT NULL,
    PRIMARY KEY (site_id, week)
);
-- The weeks to build again, found without reading every week of every site.
CREATE INDEX visit_rollup_weeks_out_of_date ON visit_rollup_weeks (week)
    WHERE generation <> built_generation;

-- The week of a day bucket: its Monday's bucket. Buckets are UTC midnights, so no zone.
CREATE FUNCTION tally_visit_week(p_bucket timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT date_trunc('week', p_bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
$$;

-- Whether a change to a day cell of week p_week bumps its generation (writers' rule).
CREATE FUNCTION tally_visit_week_marked(p_week timestamptz) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
SELECT p_week + interval '168 hours' <= now() - interval '24 hours'
$$;

-- Whether week p_week may be built (builders' rule: a day later than the writers').
CREATE FUNCTION tally_visit_week_sealed(p_week timestamptz) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
SELECT p_week + interval '168 hours' <= now() - interval '48 hours'
$$;

-- Weeks to build, oldest first: sealed weeks whose cells are out of date, and sealed
-- weeks with day cells after the latest week of the site ever built. A week before that
-- one has a row: the builder builds a site's weeks in ascending order and stops at the
-- first it could not build, and a writer adding a day cell to a marked week without a
-- row makes its row.
CREATE FUNCTION tally_visit_weeks_to_build(p_limit integer)
RETURNS TABLE (site_id text, week timestamptz)
LANGUAGE sql STABLE AS $$
SELECT site_id, week FROM (
    SELECT w.site_id, w.week FROM visit_rollup_weeks w
    WHERE w.generation <> w.built_generation AND tally_visit_week_sealed(w.week)
    UNION
    SELECT z.site_id, d.week
    FROM visit_rollup_zones z
    CROSS JOIN LATERAL (
        SELECT max(w.week) + interval '168 hours' AS after FROM visit_rollup_weeks w
        WHERE w.site_id = z.site_id AND w.built_generation >= 0
    ) l
    CROSS JOIN LATERAL (
        SELECT DISTINCT tally_visit_week(r.bucket) AS week FROM visit_rollups r
        WHERE r.site_id = z.site_id AND r.dimension = 0 AND r.span_hours = 24
          AND r.bucket >= coalesce(l.after, '-infinity')
          AND r.bucket < now() - interval '48 hours'
    ) d
    WHERE tally_visit_week_sealed(d.week)
) t
ORDER BY week, site_id
LIMIT p_limit
$$;

-- Builds the cells of one sealed week of a site from its day cells. Returns the cells
-- written, or -1 when the week's row is locked (another build, or a writer about to
-- change it: the week is tried again later). Call it in a READ COMMITTED transaction of
-- its own: each statement must see what committed before it.
CREATE FUNCTION tally_build_visit_week(p_site text, p_week timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    current_generation bigint;
    cells bigint;
BEGIN
    IF NOT tally_visit_week_sealed(p_week) THEN
        RAISE EXCEPTION 'week % of site % is not sealed yet', p_week, p_site;
    END IF;
    PERFORM tally_lock_site_settings(ARRAY[p_site], false);
    INSERT INTO visit_rollup_weeks (site_id, week, generation, built_generation)
    VALUES (p_site, p_week, 0, -1)
    ON CONFLICT DO NOTHING;
    SELECT w.generation INTO current_generation FROM visit_rollup_weeks w
    WHERE w.site_id = p_site AND w.week = p_week
    FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN -1;
    END IF;
    DELETE FROM visit_rollups
    WHERE site_id = p_site AND span_hours = 168 AND bucket = p_week;
    INSERT INTO visit_rollups (site_id, dimension, span_hours, bucket, value_key, value, visits,
                               pageviews, events, bounces, duration_us, visitors, goal_id)
    SELECT c.site_id, c.dimension, 168, p_week, c.value_key, min(c.value), sum(c.visits),
           sum(c.pageviews), sum(c.events), sum(c.bounces), sum(c.duration_us),
           hll_union_agg(c.visitors), min(c.goal_id)
    FROM visit_rollup_cells c
    WHERE c.site_id = p_site AND c.span_hours = 24
      AND c.bucket >= p_week AND c.bucket < p_week + interval '168 hours'
    GROUP BY c.site_id, c.dimension, c.value_key;
    GET DIAGNOSTICS cells = ROW_COUNT;
    UPDATE visit_rollup_weeks SET built_generation = current_generation
    WHERE site_id = p_site AND week = p_week;
    RETURN cells;
END;
$$;

-- The rebuilds recompute a site's cells from `visits`, under its settings lock held
-- exclusively: its weeks go with them, to be built again from the new days.
CREATE OR REPLACE FUNCTION tally_rebuild_visit_rollups(p_site text DEFAULT NULL) RETURNS void
LANGUAGE sql AS $$
DELETE FROM visit_rollup_weeks WHERE p_site IS NULL OR site_id = p_site;
DELETE FROM visit_rollup_pending WHERE p_site IS NULL OR site_id = p_site;
SELECT tally_rebuild_visit_rollup_cells(p_site);
$$;

CREATE OR REPLACE FUNCTION tally_rebuild_visit_day_rollups(p_site text) RETURNS void
LANGUAGE sql AS $$
DELETE FROM visit_rollup_weeks WHERE site_id = p_site;
DELETE FROM visit_rollups WHERE site_id = p_site AND span_hours = 168;
DELETE FROM visit_rollup_pending WHERE site_id = p_site AND span_hours = 24;
SELECT tally_rebuild_visit_day_cells(p_site);
$$;

CREATE OR REPLACE FUNCTION tally_rebuild_visit_goals(p_site text) RETURNS void
LANGUAGE sql AS $$
DELETE FROM visit_rollup_weeks WHERE p_site IS NULL OR site_id = p_site;
DELETE FROM visit_rollups WHERE span_hours = 168 AND (p_site IS NULL OR site_id = p_site);
DELETE FROM visit_rollup_pending WHERE goal_id IS NOT NULL AND (p_site IS NULL OR site_id = p_site);
SELECT tally_rebuild_visit_goal_cells(p_site);
$$;
