-- Pair week cells: per sealed week and pair of visit dimensions, the visits of each pair of
-- their values, for the dashboard's low-cardinality dimensions (source, device, browser,
-- OS, country: VisitDimension::has_pair_rollup). They answer a breakdown filtered by
-- another dimension (the dashboard after a click: the countries of Google's visits),
-- which otherwise reads every visit of the range: 1.7-2.0 s over 91 days of 10 million
-- events. A pair is kept once, the lower dimension code first: the cells of (source,
-- device) answer the sources of mobile visits and the devices of Google's visits alike.
--
-- Built by the week builder with the week's other cells (migrations 0019 and 0021), in the
-- same transaction and under the same rule: read only while the week's visit_rollup_weeks
-- row says built from the week's current days (generation = built_generation). Built from
-- `visits`, not from day cells (there are no pair day cells: the drain pays nothing for
-- these). That is sound under the same rule: every writer of a visit also writes the
-- visit's cells (the totals' at least), so a change to a visit of a marked week bumps the
-- week's generation in its transaction, and the build reads the visits in a statement
-- after it locked the week's row.
--
-- The days of a range outside its built weeks (the leading days of a partial week, the
-- days not sealed yet) are read from `visits` by the query; the sketches of both are the
-- same hll of the same hashes (hll_hash_text of the visitor, as every visit cell), so their
-- union counts a visitor once.
--
-- No pair of a dimension with itself, and no pair with the totals: those are the
-- dimension's own cells, filtered by value (stats-api reads them so).
CREATE TABLE visit_pair_week_rollups (
    site_id          text        NOT NULL,
    -- VisitDimension::code of the pair's dimensions, first < second.
    first_dimension  smallint    NOT NULL,
    second_dimension smallint    NOT NULL,
    -- The Monday's day bucket (tally_visit_week).
    week             timestamptz NOT NULL,
    -- tally_rollup_value_key(NULL, value) of each value (the nil uuid for none).
    first_key        uuid        NOT NULL,
    second_key       uuid        NOT NULL,
    first_value      text,
    second_value     text,
    visits           bigint      NOT NULL,
    pageviews        bigint      NOT NULL,
    events           bigint      NOT NULL,
    bounces          bigint      NOT NULL,
    duration_us      bigint      NOT NULL,
    visitors         hll(14, 5, -1, 1) NOT NULL,
    PRIMARY KEY (site_id, first_dimension, second_dimension, week, first_key, second_key)
);

-- The pair cells of one week of a site, from its visits (days of the zone of
-- visit_rollup_zones, as the day cells). One aggregation: each visit counted under every
-- pair of two different kept dimensions (ten of them).
CREATE FUNCTION tally_visit_pair_week_rollups(p_site text, p_week timestamptz)
RETURNS SETOF visit_pair_week_rollups
LANGUAGE sql STABLE AS $$
WITH zone AS (
    SELECT coalesce((SELECT timezone FROM visit_rollup_zones WHERE site_id = p_site), 'UTC') AS tz
), week_visits AS (
    -- A day either side of the week's UTC span covers every zone's days of it; the local
    -- date decides.
    SELECT v.* FROM visits v, zone
    WHERE v.site_id = p_site
      AND v.started_at >= p_week - interval '1 day'
      AND v.started_at < p_week + interval '8 days'
      AND (v.started_at AT TIME ZONE zone.tz)::date >= (p_week AT TIME ZONE 'UTC')::date
      AND (v.started_at AT TIME ZONE zone.tz)::date < (p_week AT TIME ZONE 'UTC')::date + 7
)
SELECT p_site, one.code::smallint, two.code::smallint, p_week,
       tally_rollup_value_key(NULL, one.value), tally_rollup_value_key(NULL, two.value),
       one.value, two.value,
       count(*), sum(v.pageviews), sum(v.events), count(*) FILTER (WHERE v.pageviews = 1),
       sum((extract(epoch FROM v.ended_at - v.started_at) * 1000000)::bigint),
       hll_add_agg(hll_hash_text(v.visitor), 14, 5, -1, 1)
FROM week_visits v
CROSS JOIN LATERAL (VALUES
    (3, v.source), (10, v.device), (11, v.browser), (12, v.os), (13, v.country)
) AS one(code, value)
CROSS JOIN LATERAL (VALUES
    (3, v.source), (10, v.device), (11, v.browser), (12, v.os), (13, v.country)
) AS two(code, value)
WHERE one.code < two.code
GROUP BY one.code, one.value, two.code, two.value
$$;

-- The builder (called as before) builds the week's visit cells and page rows, then, in
-- the same transaction and still holding the week's row, its pair cells. Returns the rows
-- written, or -1 when the week's row is locked (nothing built).
ALTER FUNCTION tally_build_visit_week(text, timestamptz)
    RENAME TO tally_build_visit_week_cells_and_pages;
CREATE FUNCTION tally_build_visit_week(p_site text, p_week timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    cells bigint := tally_build_visit_week_cells_and_pages(p_site, p_week);
    pairs bigint;
BEGIN
    IF cells < 0 THEN
        RETURN cells;
    END IF;
    DELETE FROM visit_pair_week_rollups
    WHERE site_id = p_site AND first_dimension IN (3, 10, 11, 12, 13)
      AND second_dimension IN (3, 10, 11, 12, 13) AND week = p_week;
    INSERT INTO visit_pair_week_rollups SELECT * FROM tally_visit_pair_week_rollups(p_site, p_week);
    GET DIAGNOSTICS pairs = ROW_COUNT;
    RETURN cells + pairs;
END;
$$;

-- Whatever rebuilds a site's visit cells deletes its weeks' rows (migration 0019), so its
-- pair cells are no longer read; they go too, to be built again with the weeks.
CREATE OR REPLACE FUNCTION tally_rebuild_visit_rollups(p_site text DEFAULT NULL) RETURNS void
LANGUAGE sql AS $$
DELETE FROM visit_rollup_weeks WHERE p_site IS NULL OR site_id = p_site;
DELETE FROM visit_pair_week_rollups WHERE p_site IS NULL OR site_id = p_site;
DELETE FROM visit_rollup_pending WHERE p_site IS NULL OR site_id = p_site;
SELECT tally_rebuild_visit_rollup_cells(p_site);
$$;

CREATE OR REPLACE FUNCTION tally_rebuild_visit_day_rollups(p_site text) RETURNS void
LANGUAGE sql AS $$
DELETE FROM visit_rollup_weeks WHERE site_id = p_site;
DELETE FROM visit_pair_week_rollups WHERE site_id = p_site;
DELETE FROM visit_rollups WHERE site_id = p_site AND span_hours = 168;
DELETE FROM visit_rollup_pending WHERE site_id = p_site AND span_hours = 24;
SELECT tally_rebuild_visit_day_cells(p_site);
$$;

-- Weeks built before this migration have no pair cells: built again by the workers (a
-- filtered breakdown reads `visits` until then).
UPDATE visit_rollup_weeks SET built_generation = -1 WHERE built_generation >= 0;
