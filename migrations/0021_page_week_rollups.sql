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

-- The builder (called as before) builds the week's visit cells, then, in the same
-- transaction and still holding the week's row, its page rows. Returns the rows written,
-- or -1 when the week's row is locked (nothing built).
ALTER FUNCTION tally_build_visit_week(text, timestamptz) RENAME TO tally_build_visit_week_cells;
CREATE FUNCTION tally_build_visit_week(p_site text, p_week timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    cells bigint := tally_build_visit_week_cells(p_site, p_week);
    pages bigint;
    monday date := (p_week AT TIME ZONE 'UTC')::date;
BEGIN
    IF cells < 0 THEN
        RETURN cells;
    END IF;
    DELETE FROM page_week_rollups WHERE site_id = p_site AND week = monday;
    INSERT INTO page_week_rollups (site_id, event_type, week, path_key, path, views)
    SELECT d.site_id, d.event_type, monday, d.path_key, min(d.path), sum(d.views)
    FROM page_day_rollups d
    WHERE d.site_id = p_site AND d.day >= monday AND d.day < monday + 7
    GROUP BY d.site_id, d.event_type, d.path_key;
    GET DIAGNOSTICS pages = ROW_COUNT;
    RETURN cells + pages;
END;
$$;

-- A zone change rebuilds the page days (its caller, tally_rebuild_visit_day_rollups,
-- deletes the site's week rows first; marked out of date here too, so no page week is
-- ever read after its days were rebuilt). The rebuild of the days is migration 0014's,
-- called by its old name from the day cells' rebuild: the name now wraps it.
ALTER FUNCTION tally_rebuild_page_day_rollups(text) RENAME TO tally_rebuild_page_day_rows;
CREATE FUNCTION tally_rebuild_page_day_rollups(p_site text) RETURNS void
LANGUAGE sql AS $$
UPDATE visit_rollup_weeks SET built_generation = -1 WHERE p_site IS NULL OR site_id = p_site;
DELETE FROM page_week_rollups WHERE p_site IS NULL OR site_id = p_site;
SELECT tally_rebuild_page_day_rows(p_site);
$$;

-- Weeks built before this migration have no page rows: built again by the workers (a
-- week reads its day rows until then).
UPDATE visit_rollup_weeks SET built_generation = -1 WHERE built_generation >= 0;
