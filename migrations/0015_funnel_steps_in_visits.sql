-- Funnels kept with the visits (see crates/batch-worker/src/events/visits/funnels.rs).
--
-- A funnel report read every event of the range matching a step's goal and looked up each
-- one's visit (15-19 s for 90 days of ten million events). From here on:
--
-- - visits.steps: the visit's events converting a goal that is a step of one of the
--   site's funnels, `[[µs since the epoch, "event id", "goal id"], ...]` (NULL when none).
--   Merging visits joins their lists, so a visit's list is the same whatever order its
--   events came in.
-- - How far a visit got in a funnel is a function of that list (tally_funnel_reach, and
--   the worker's same rule): its cells in visit_rollups, dimension code 200, goal_id the
--   funnel's id, value the step (1 to 8), per day of the site's zone: a visit reaching
--   step k counts in the cells of steps 1 to k (so a visit going further only adds to
--   cells), visits and visitors' sketch.
-- - visit_rollup_zones.funnels: the funnels (id, steps) the site's cells are for. A change
--   of a site's goals or funnels recounts its visits' conversions and steps from its events
--   and rebuilds its goal and funnel cells, in the transaction storing the change.
ALTER TABLE visits ADD COLUMN steps jsonb;
ALTER TABLE visit_rollup_zones ADD COLUMN funnels jsonb NOT NULL DEFAULT '[]';

-- What of a site's funnels its cells depend on (not their names), in id order.
CREATE FUNCTION tally_funnel_matchers(p_funnels jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT coalesce(jsonb_agg(jsonb_build_object('funnel_id', f->>'funnel_id', 'steps', f->'steps')
                          ORDER BY f->>'funnel_id'), '[]')
FROM jsonb_array_elements(coalesce(p_funnels, '[]')) AS f
$$;

-- How many steps of `p_funnel` (goal ids in order) a visit with steps list `p_steps`
-- reached: step 1 with its first event converting step 1's goal, step k with its first
-- event after (by time, then event id) the one that reached step k-1 converting step k's
-- goal; one event reaches one step at most. Taking the earliest event at every step is
-- optimal (a later one leaves fewer events for the steps after it).
CREATE FUNCTION tally_funnel_reach(p_steps jsonb, p_funnel jsonb) RETURNS int
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    reached int := 0;
    wanted int := jsonb_array_length(p_funnel);
    last_at bigint;
    last_id text;
    e jsonb;
BEGIN
    IF p_steps IS NULL THEN
        RETURN 0;
    END IF;
    FOR e IN SELECT value FROM jsonb_array_elements(p_steps)
             ORDER BY (value->>0)::bigint, value->>1, value->>2 LOOP
        EXIT WHEN reached = wanted;
        IF e->>2 = p_funnel->>reached
           AND (last_id IS NULL OR ((e->>0)::bigint, e->>1) > (last_at, last_id)) THEN
            reached := reached + 1;
            last_at := (e->>0)::bigint;
            last_id := e->>1;
        END IF;
    END LOOP;
    RETURN reached;
END
$$;

-- The funnel day cells of one site (every site: NULL), from visits.steps and the funnels
-- of visit_rollup_zones, in its zone.
CREATE FUNCTION tally_visit_funnel_day_rollups(p_site text)
RETURNS SETOF visit_rollups
LANGUAGE sql STABLE AS $$
SELECT v.site_id, 200::smallint, 24::smallint,
       ((v.started_at AT TIME ZONE z.timezone)::date)::timestamp AT TIME ZONE 'UTC',
       tally_rollup_value_key(f.funnel_id, k::text), k::text,
       count(*), 0, 0, 0, 0,
       hll_add_agg(hll_hash_text(v.visitor), 14, 5, -1, 1),
       f.funnel_id
FROM visits v
JOIN visit_rollup_zones z ON z.site_id = v.site_id
CROSS JOIN LATERAL jsonb_to_recordset(z.funnels) AS f(funnel_id text, steps jsonb)
CROSS JOIN LATERAL generate_series(1, tally_funnel_reach(v.steps, f.steps)) AS k
WHERE v.steps IS NOT NULL AND (p_site IS NULL OR v.site_id = p_site)
GROUP BY v.site_id, 4, f.funnel_id, k;
$$;

-- As migration 0013's, and each visit's steps list: the conversions of the goals that are
-- steps of the site's funnels.
CREATE OR REPLACE FUNCTION tally_count_visit_goals(p_site text) RETURNS void
LANGUAGE sql AS $$
UPDATE visits SET goals = NULL, steps = NULL
WHERE (goals IS NOT NULL OR steps IS NOT NULL) AND (p_site IS NULL OR site_id = p_site);
WITH goal AS MATERIALIZED (
    SELECT z.site_id, g.goal_id, g.event_name, tally_goal_path_regex(g.page_path) AS path_regex,
           EXISTS (SELECT 1 FROM jsonb_array_elements(z.funnels) AS f
                   WHERE f->'steps' ? g.goal_id) AS is_step
    FROM visit_rollup_zones z
    CROSS JOIN LATERAL jsonb_to_recordset(z.goals) AS g(goal_id text, event_name text, page_path text)
    WHERE p_site IS NULL OR z.site_id = p_site
), matched AS MATERIALIZED (
    SELECT e.site_id, e.user_id, e.ts, e.event_id, g.goal_id, g.is_step
    FROM events e JOIN goal g ON g.site_id = e.site_id
        AND (e.event_type = g.event_name OR (e.event_type = 'page_view' AND e.path ~ g.path_regex))
    WHERE e.user_id IS NOT NULL AND (p_site IS NULL OR e.site_id = p_site)
), in_visit AS (
    SELECT v.site_id, v.visitor, v.started_at, m.goal_id, m.is_step, m.ts, m.event_id
    FROM matched m
    CROSS JOIN LATERAL (
        SELECT * FROM visits v
        WHERE v.site_id = m.site_id AND v.visitor = m.user_id AND v.started_at <= m.ts
        ORDER BY v.started_at DESC LIMIT 1
    ) v
    WHERE m.ts <= v.ended_at
), counted AS (
    SELECT site_id, visitor, started_at, goal_id, count(*) AS n,
           jsonb_agg(jsonb_build_array(
               (extract(epoch FROM ts) * 1000000)::bigint, event_id::text, goal_id))
               FILTER (WHERE is_step) AS steps
    FROM in_visit GROUP BY 1, 2, 3, 4
), per_visit AS (
    SELECT site_id, visitor, started_at, jsonb_object_agg(goal_id, n) AS goals,
           nullif(jsonb_path_query_array(jsonb_agg(coalesce(steps, '[]')), '$[*][*]'), '[]') AS steps
    FROM counted GROUP BY 1, 2, 3
)
UPDATE visits v SET goals = p.goals, steps = p.steps FROM per_visit p
WHERE (v.site_id, v.visitor, v.started_at) = (p.site_id, p.visitor, p.started_at);
$$;

-- Goal and funnel cells after a recount (the caller holds the site's visit_rollup_zones
-- row).
CREATE OR REPLACE FUNCTION tally_rebuild_visit_goals(p_site text) RETURNS void
LANGUAGE sql AS $$
SELECT tally_count_visit_goals(p_site);
DELETE FROM visit_rollups WHERE goal_id IS NOT NULL AND (p_site IS NULL OR site_id = p_site);
DELETE FROM visit_rollup_stale WHERE goal_id IS NOT NULL AND (p_site IS NULL OR site_id = p_site);
INSERT INTO visit_rollups SELECT * FROM tally_visit_goal_day_rollups(p_site);
INSERT INTO visit_rollups SELECT * FROM tally_visit_funnel_day_rollups(p_site);
$$;

-- Every day row of a site: plain, goal and funnel cells.
CREATE OR REPLACE FUNCTION tally_visit_day_rollups(p_site text)
RETURNS SETOF visit_rollups
LANGUAGE sql STABLE AS $$
SELECT v.site_id, d.code::smallint, 24::smallint,
       ((v.started_at AT TIME ZONE coalesce(z.timezone, 'UTC'))::date)::timestamp AT TIME ZONE 'UTC',
       tally_rollup_value_key(NULL, d.value), d.value,
       count(*),
       -- Entry and exit pages count visits only (VisitDimension::rollup_counts_visits_only).
       CASE WHEN d.code IN (1, 2) THEN 0 ELSE sum(v.pageviews) END,
       CASE WHEN d.code IN (1, 2) THEN 0 ELSE sum(v.events) END,
       CASE WHEN d.code IN (1, 2) THEN 0 ELSE count(*) FILTER (WHERE v.pageviews = 1) END,
       CASE WHEN d.code IN (1, 2) THEN 0
            ELSE sum((extract(epoch FROM v.ended_at - v.started_at) * 1000000)::bigint) END,
       CASE WHEN d.code NOT IN (1, 2) THEN hll_add_agg(hll_hash_text(v.visitor), 14, 5, -1, 1) END,
       NULL::text
FROM visits v
LEFT JOIN visit_rollup_zones z ON z.site_id = v.site_id
CROSS JOIN LATERAL (VALUES
    (0, NULL), (1, v.entry_page), (2, v.exit_page), (3, v.source),
    (10, v.device), (11, v.browser), (12, v.os), (13, v.country)
) AS d(code, value)
WHERE p_site IS NULL OR v.site_id = p_site
GROUP BY v.site_id, d.code, 4, d.value
UNION ALL
SELECT * FROM tally_visit_goal_day_rollups(p_site)
UNION ALL
SELECT * FROM tally_visit_funnel_day_rollups(p_site);
$$;

-- As migration 0013's, syncing the funnels too.
CREATE OR REPLACE FUNCTION tally_rebuild_visit_rollups(p_site text DEFAULT NULL) RETURNS void
LANGUAGE sql AS $$
INSERT INTO visit_rollup_zones AS z (site_id, timezone, goals, funnels)
SELECT site_id, timezone, tally_goal_matchers(goals), tally_funnel_matchers(funnels)
FROM sites WHERE p_site IS NULL OR site_id = p_site
ON CONFLICT (site_id) DO UPDATE
SET timezone = EXCLUDED.timezone, goals = EXCLUDED.goals, funnels = EXCLUDED.funnels;
SELECT tally_count_visit_goals(p_site);
DELETE FROM visit_rollups WHERE p_site IS NULL OR site_id = p_site;
DELETE FROM visit_rollup_stale WHERE p_site IS NULL OR site_id = p_site;
INSERT INTO visit_rollups
SELECT v.site_id, 0, 1, date_trunc('hour', v.started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       '00000000-0000-0000-0000-000000000000', NULL,
       count(*), sum(v.pageviews), sum(v.events), count(*) FILTER (WHERE v.pageviews = 1),
       sum((extract(epoch FROM v.ended_at - v.started_at) * 1000000)::bigint),
       hll_add_agg(hll_hash_text(v.visitor), 14, 5, -1, 1), NULL
FROM visits v
WHERE p_site IS NULL OR v.site_id = p_site
GROUP BY 1, 4;
INSERT INTO visit_rollups SELECT * FROM tally_visit_day_rollups(p_site);
$$;

-- The funnels of the sites stored before this migration, their visits' steps and cells.
UPDATE visit_rollup_zones z SET funnels = tally_funnel_matchers(s.funnels)
FROM sites s WHERE s.site_id = z.site_id;
SELECT tally_rebuild_visit_goals(NULL);
