-- The recount of conversions and funnel steps (a change of a site's goals or funnels)
-- writes each visit whose goals or steps change, once, in the order the visits started.
--
-- Migration 0018's version cleared every counted visit, then wrote the new counts through
-- a join the planner ran in key order (site, visitor, start). Each write is a new row
-- version, and what does not fit its page goes to the end of the table in the order it is
-- written: after one goal change of the bench site (2 million visits with a conversion),
-- every 128-page block range held visits of every week, so the block-range index on
-- `started_at` skipped nothing, and reading any few days of the site's visits (a
-- filtered breakdown's last days, an export of a day) read the whole table: 1 s instead
-- of 70 ms. It stayed so: vacuum frees the old versions, it does not move the new ones.
--
-- Now the new counts are computed first, compared with the stored ones (a visit whose
-- conversions did not change is not written at all: adding a goal rewrites the visits
-- converting it, not every visit), and written through a nested loop over them in start
-- order, each visit found by its key, so the row versions that leave their page are
-- appended in start order and the table stays ordered by time. Same result as before.
CREATE OR REPLACE FUNCTION tally_count_visit_goals(p_site text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    hashjoin text := current_setting('enable_hashjoin');
    mergejoin text := current_setting('enable_mergejoin');
BEGIN
    CREATE TEMP TABLE tally_recounted_visits ON COMMIT DROP AS
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
    ), in_visit AS MATERIALIZED (
        SELECT v.site_id, v.visitor, v.started_at, m.goal_id, m.is_step, m.ts, m.event_id
        FROM matched m
        CROSS JOIN LATERAL (
            SELECT * FROM visits v
            WHERE v.site_id = m.site_id AND v.visitor = m.user_id AND v.started_at <= m.ts
            ORDER BY v.started_at DESC LIMIT 1
        ) v
        WHERE m.ts <= v.ended_at
    ), counted AS (
        -- Steps in time order, so that recounting unchanged goals compares equal to the
        -- last recount's lists (readers sort them anyway).
        SELECT site_id, visitor, started_at, goal_id, count(*) AS n,
               jsonb_agg(jsonb_build_array(
                   (extract(epoch FROM ts) * 1000000)::bigint, event_id::text, goal_id)
                   ORDER BY ts, event_id)
                   FILTER (WHERE is_step) AS steps
        FROM in_visit GROUP BY 1, 2, 3, 4
    ), per_visit AS MATERIALIZED (
        SELECT site_id, visitor, started_at, jsonb_object_agg(goal_id, n) AS goals,
               nullif(jsonb_path_query_array(
                   jsonb_agg(coalesce(steps, '[]') ORDER BY goal_id), '$[*][*]'), '[]') AS steps
        FROM counted GROUP BY 1, 2, 3
    )
    -- Every visit whose counts change: those counted now, and those counted before that
    -- count nothing now.
    SELECT v.site_id, v.visitor, v.started_at, p.goals, p.steps
    FROM visits v LEFT JOIN per_visit p
        ON (p.site_id, p.visitor, p.started_at) = (v.site_id, v.visitor, v.started_at)
    WHERE (p_site IS NULL OR v.site_id = p_site)
      AND (v.goals IS DISTINCT FROM p.goals OR v.steps IS DISTINCT FROM p.steps)
    ORDER BY v.started_at;

    -- A nested loop reads the changes in the order they were stored (start order; a temp
    -- table's scan is never synchronised with another's) and looks each visit up by its
    -- key. A hash or merge join would write them in another order.
    PERFORM set_config('enable_hashjoin', 'off', true);
    PERFORM set_config('enable_mergejoin', 'off', true);
    UPDATE visits v SET goals = r.goals, steps = r.steps
    FROM tally_recounted_visits r
    WHERE (v.site_id, v.visitor, v.started_at) = (r.site_id, r.visitor, r.started_at);
    PERFORM set_config('enable_hashjoin', hashjoin, true);
    PERFORM set_config('enable_mergejoin', mergejoin, true);
    DROP TABLE pg_temp.tally_recounted_visits;
END;
$$;
