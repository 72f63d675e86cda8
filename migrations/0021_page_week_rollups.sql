-- Page views per path and week: the dashboard's top pages over 91 days summed about 91
-- day rows per path (45,000 rows for a site of 500 pages: 18 ms at the median, 38 ms at
-- p99 over 10M events); a range's whole weeks from week rows make it about 20.
--
-- A page week row is the sum of its seven page day rows, built with the week's visit
-- cells by the same builder and under the same rule (migration 0019): its rows are read
-- only while the week's visit_rollup_weeks row says built from the week's current days
-- (generation = built_generation). So every writer of a page day row of a marked week
-- bumps that generation too (the event writer, before it upserts the page days and after
-- its visit cells: cells, then week rows, then page days, the one order every writer
-- takes), page views of visitors-less events included; and whatever deletes page week
-- rows puts the week's row out of date first.
CREATE TABLE page_week_rollups (
    site_id    text   NOT NULL,
    event_type text   NOT NULL,
    -- The Monday of the week (a date of the site's zone, like page_day_rollups.day).
    week       date   NOT NULL,
    path_key   uuid   NOT NULL,
    path       text   NOT NULL,
    views      bigint NOT NULL,
    PRIMARY KEY (site_id, event_type, week, path_key)
);

-- The visit_rollup_weeks key of a page day (the UTC midnight of its week's Monday).
CREATE FUNCTION tally_page_week(p_day date) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT tally_visit_week(p_day::timestamp AT TIME ZONE 'UTC')
$$;

CREATE OR REPLACE FUNCTION tally_build_visit_week(p_site text, p_week timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    current_generation bigint;
    cells bigint;
    pages bigint;
    monday date := (p_week AT TIME ZONE 'UTC')::date;
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
    DELETE FROM page_week_rollups WHERE site_id = p_site AND week = monday;
    INSERT INTO page_week_rollups (site_id, event_type, week, path_key, path, views)
    SELECT d.site_id, d.event_type, monday, d.path_key, min(d.path), sum(d.views)
    FROM page_day_rollups d
    WHERE d.site_id = p_site AND d.day >= monday AND d.day < monday + 7
    GROUP BY d.site_id, d.event_type, d.path_key;
    GET DIAGNOSTICS pages = ROW_COUNT;
    UPDATE visit_rollup_weeks SET built_generation = current_generation
    WHERE site_id = p_site AND week = p_week;
    RETURN cells + pages;
END;
$$;

-- A zone change rebuilds the page days (the caller, tally_rebuild_visit_day_rollups, has
-- deleted the site's week rows first, so no page week is read until built again).
CREATE OR REPLACE FUNCTION tally_rebuild_page_day_rollups(p_site text) RETURNS void
LANGUAGE sql AS $$
UPDATE visit_rollup_weeks SET built_generation = -1 WHERE p_site IS NULL OR site_id = p_site;
DELETE FROM page_week_rollups WHERE p_site IS NULL OR site_id = p_site;
DELETE FROM page_day_rollups WHERE p_site IS NULL OR site_id = p_site;
INSERT INTO page_day_rollups (site_id, event_type, day, path_key, path, views)
SELECT h.site_id, h.event_type,
       ((h.bucket + interval '30 minutes') AT TIME ZONE coalesce(z.timezone, 'UTC'))::date,
       h.path_key, min(h.path), sum(h.views)
FROM rollup_hourly_paths h
LEFT JOIN visit_rollup_zones z ON z.site_id = h.site_id
WHERE p_site IS NULL OR h.site_id = p_site
GROUP BY 1, 2, 3, 4;
$$;

-- Weeks built before this migration have no page rows: built again by the workers (a
-- week reads its day rows until then).
UPDATE visit_rollup_weeks SET built_generation = -1 WHERE built_generation >= 0;
