-- Goal conversions kept with the visits (see crates/batch-worker/src/events/visits/goals.rs).
--
-- Until now stats-api found a site's conversions by matching every event of the range
-- against its goals and looking up each match's visit: 15-19 s for 90 days of a site with
-- ten million events. From here on:
--
-- - visits.goals: the conversions of each goal in the visit, `{"<goal_id>": n, ...}` (NULL
--   when none). The worker counts a new event's goals when it writes the event, and a
--   merge of visits adds their counts.
-- - Goal cells in visit_rollups: per goal, day (of the site's zone) and kept dimension, the
--   visits that started that day and converted the goal (visits), their conversions
--   (events) and their visitors' sketch. Dimension code 100 + the visit dimension's code,
--   goal_id set, the other sums zero. Day rows only: a goal's chart by hour reads events.
-- - visit_rollup_zones.goals: the goals (id, event name, page pattern) the site's cells are
--   for, kept like its zone: a change of a site's goals updates the row (waiting for the
--   writers holding it) and recounts the site's visits and goal cells from its events in
--   the same transaction, so a goal made today converts last month's visitors too, as
--   before.
ALTER TABLE visits ADD COLUMN goals jsonb;
ALTER TABLE visit_rollups ADD COLUMN goal_id text;
ALTER TABLE visit_rollup_stale ADD COLUMN goal_id text;
ALTER TABLE visit_rollup_zones ADD COLUMN goals jsonb NOT NULL DEFAULT '[]';

-- The key of a cell's value (a goal cell's includes its goal): what the worker, the repair
-- and the functions below all compute a cell's value_key with.
CREATE FUNCTION tally_rollup_value_key(p_goal text, p_value text) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE WHEN p_goal IS NULL
            THEN coalesce(md5(p_value)::uuid, '00000000-0000-0000-0000-000000000000')
            ELSE md5(p_goal || chr(31) || coalesce(chr(30) || p_value, ''))::uuid END
$$;

-- What of a site's goals its cells depend on (not their display names), in id order.
CREATE FUNCTION tally_goal_matchers(p_goals jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT coalesce(jsonb_agg(jsonb_build_object('goal_id', g->>'goal_id',
                                             'event_name', g->>'event_name',
                                             'page_path', g->>'page_path')
                          ORDER BY g->>'goal_id'), '[]')
FROM jsonb_array_elements(coalesce(p_goals, '[]')) AS g
$$;

-- A page goal's pattern as an anchored regular expression: `**` any characters, `*` any
-- but `/`, everything else literal (domain::goals::path_pattern_regex, which the e2e
-- tests hold this to).
CREATE FUNCTION tally_goal_path_regex(p_pattern text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT '^' || replace(replace(replace(
           regexp_replace(p_pattern, '([\\.^$|?+()\[\]{}])', '\\\1', 'g'),
           '**', chr(1)), '*', '[^/]*'), chr(1), '.*') || '$'
$$;

-- The goal day cells of one site (every site: NULL), from visits.goals, in the zone of
-- visit_rollup_zones (UTC without a row).
CREATE FUNCTION tally_visit_goal_day_rollups(p_site text)
RETURNS SETOF visit_rollups
LANGUAGE sql STABLE AS $$
SELECT v.site_id, (100 + d.code)::smallint, 24::smallint,
       ((v.started_at AT TIME ZONE coalesce(z.timezone, 'UTC'))::date)::timestamp AT TIME ZONE 'UTC',
       tally_rollup_value_key(g.goal_id, d.value), d.value,
       count(*), 0, sum(g.conversions::bigint), 0, 0,
       CASE WHEN d.code NOT IN (1, 2) THEN hll_add_agg(hll_hash_text(v.visitor), 14, 5, -1, 1) END,
       g.goal_id
FROM visits v
LEFT JOIN visit_rollup_zones z ON z.site_id = v.site_id
CROSS JOIN LATERAL jsonb_each_text(v.goals) AS g(goal_id, conversions)
CROSS JOIN LATERAL (VALUES
    (0, NULL), (1, v.entry_page), (2, v.exit_page), (3, v.source),
    (10, v.device), (11, v.browser), (12, v.os), (13, v.country)
) AS d(code, value)
WHERE v.goals IS NOT NULL AND (p_site IS NULL OR v.site_id = p_site)
GROUP BY v.site_id, d.code, 4, g.goal_id, d.value;
$$;

-- Every day row of a site, plain (as migration 0012) and goal cells.
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
SELECT * FROM tally_visit_goal_day_rollups(p_site);
$$;

-- Recounts visits.goals of one site (every site: NULL) from its stored events and the
-- goals of its visit_rollup_zones row.
CREATE FUNCTION tally_count_visit_goals(p_site text) RETURNS void
LANGUAGE sql AS $$
UPDATE visits SET goals = NULL
WHERE goals IS NOT NULL AND (p_site IS NULL OR site_id = p_site);
WITH goal AS MATERIALIZED (
    SELECT z.site_id, g.goal_id, g.event_name, tally_goal_path_regex(g.page_path) AS path_regex
    FROM visit_rollup_zones z
    CROSS JOIN LATERAL jsonb_to_recordset(z.goals) AS g(goal_id text, event_name text, page_path text)
    WHERE p_site IS NULL OR z.site_id = p_site
), matched AS MATERIALIZED (
    SELECT e.site_id, e.user_id, e.ts, g.goal_id
    FROM events e JOIN goal g ON g.site_id = e.site_id
        AND (e.event_type = g.event_name OR (e.event_type = 'page_view' AND e.path ~ g.path_regex))
    WHERE e.user_id IS NOT NULL AND (p_site IS NULL OR e.site_id = p_site)
), counted AS (
    SELECT v.site_id, v.visitor, v.started_at, m.goal_id, count(*) AS n
    FROM matched m
    CROSS JOIN LATERAL (
        SELECT * FROM visits v
        WHERE v.site_id = m.site_id AND v.visitor = m.user_id AND v.started_at <= m.ts
        ORDER BY v.started_at DESC LIMIT 1
    ) v
    WHERE m.ts <= v.ended_at
    GROUP BY 1, 2, 3, 4
), per_visit AS (
    SELECT site_id, visitor, started_at, jsonb_object_agg(goal_id, n) AS goals
    FROM counted GROUP BY 1, 2, 3
)
UPDATE visits v SET goals = p.goals FROM per_visit p
WHERE (v.site_id, v.visitor, v.started_at) = (p.site_id, p.visitor, p.started_at);
$$;

-- Recounts a site's conversions and rebuilds its goal cells. The batch-worker runs it
-- holding the site's visit_rollup_zones row (a change of its goals), so no worker writes
-- them meanwhile.
CREATE FUNCTION tally_rebuild_visit_goals(p_site text) RETURNS void
LANGUAGE sql AS $$
SELECT tally_count_visit_goals(p_site);
DELETE FROM visit_rollups WHERE goal_id IS NOT NULL AND (p_site IS NULL OR site_id = p_site);
DELETE FROM visit_rollup_stale WHERE goal_id IS NOT NULL AND (p_site IS NULL OR site_id = p_site);
INSERT INTO visit_rollups SELECT * FROM tally_visit_goal_day_rollups(p_site);
$$;

-- As migration 0012's, and the site's goals too: for an operator or a test (or the bench)
-- that wrote `visits`, `events` or `sites` by hand. Run it while no worker writes the
-- site's events.
CREATE OR REPLACE FUNCTION tally_rebuild_visit_rollups(p_site text DEFAULT NULL) RETURNS void
LANGUAGE sql AS $$
INSERT INTO visit_rollup_zones AS z (site_id, timezone, goals)
SELECT site_id, timezone, tally_goal_matchers(goals) FROM sites WHERE p_site IS NULL OR site_id = p_site
ON CONFLICT (site_id) DO UPDATE SET timezone = EXCLUDED.timezone, goals = EXCLUDED.goals;
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

-- The conversions of the visits stored before this migration, and their cells (as with
-- migration 0008, stop the previous version's workers first).
SELECT tally_rebuild_visit_rollups();
