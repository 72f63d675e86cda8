-- Pair day cells: the pair cells of migration 0022 for each sealed day, so that a breakdown
-- filtered by another dimension reads from `visits` only the days not sealed yet (today,
-- and yesterday until 13:00 UTC) instead of the leading days before its first whole week
-- and the two to nine days after its last sealed week: 14 days of visits on a 91-day
-- dashboard, about 1 s on the bench site.
--
-- The week cells' design (migration 0019), a day at a time:
--
-- * A day (its bucket b: the UTC midnight of the site's local date, as every day cell) is
--   marked 36 hours after b, when the date has ended in every zone (UTC-12 ends it then),
--   and sealed an hour later (tally_visit_day_marked, tally_visit_day_sealed).
-- * Every write that changes a day cell of a marked day bumps the day's generation in the
--   statement upserting the cells (its rows in key order). A change of a
--   visit writes the cells of its day (the totals' at least: every event stored adds to
--   its visit's events), so a change of a visit of a marked day marks the day.
-- * A build locks the day's row (skipping a day someone holds), then reads the day's
--   visits in a later statement, which sees every change committed before. The hour
--   between the rules covers a writer transaction that began before the day was marked
--   (its now() is its start); a bump committed after the build leaves the day invalid
--   until the next build.
-- * The rebuilds of a site's cells (zone, all) delete its days with its weeks. A goal
--   recount changes no pair cell (they count no goal).
--
-- A day's cells are read only while its row says built from its current visits
-- (generation = built_generation).
CREATE TABLE visit_rollup_days (
    site_id          text        NOT NULL,
    -- The day bucket (domain::visits::day_bucket).
    day              timestamptz NOT NULL,
    -- Changes to the day's cells since it was marked.
    generation       bigint      NOT NULL,
    -- The generation the pair day cells were built from; -1: never built.
    built_generation bigint      NOT NULL,
    PRIMARY KEY (site_id, day)
);
CREATE INDEX visit_rollup_days_out_of_date ON visit_rollup_days (day)
    WHERE generation <> built_generation;

CREATE TABLE visit_pair_day_rollups (
    site_id          text        NOT NULL,
    -- VisitDimension::code of the pair's dimensions, first < second.
    first_dimension  smallint    NOT NULL,
    second_dimension smallint    NOT NULL,
    -- The day bucket.
    day              timestamptz NOT NULL,
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
    PRIMARY KEY (site_id, first_dimension, second_dimension, day, first_key, second_key)
);

-- Whether a change to a day cell of day p_bucket bumps its generation (writers' rule).
CREATE FUNCTION tally_visit_day_marked(p_bucket timestamptz) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
SELECT p_bucket + interval '36 hours' <= now()
$$;

-- Whether day p_bucket may be built (builders' rule: an hour later than the writers').
CREATE FUNCTION tally_visit_day_sealed(p_bucket timestamptz) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
SELECT p_bucket + interval '37 hours' <= now()
$$;

-- The pair cells of `p_days` days of a site from day bucket `p_first`, from its visits
-- (days of the zone of visit_rollup_zones, as the day cells), as one row per pair of
-- values (the bucket `p_first`). Migration 0022's aggregation, for any span.
CREATE FUNCTION tally_visit_pair_rollups(p_site text, p_first timestamptz, p_days integer)
RETURNS SETOF visit_pair_day_rollups
LANGUAGE sql STABLE AS $$
WITH zone AS (
    SELECT coalesce((SELECT timezone FROM visit_rollup_zones WHERE site_id = p_site), 'UTC') AS tz
), span_visits AS (
    -- A day either side of the span's UTC days covers every zone's days of it; the local
    -- date decides.
    SELECT v.* FROM visits v, zone
    WHERE v.site_id = p_site
      AND v.started_at >= p_first - interval '1 day'
      AND v.started_at < p_first + (p_days + 1) * interval '1 day'
      AND (v.started_at AT TIME ZONE zone.tz)::date >= (p_first AT TIME ZONE 'UTC')::date
      AND (v.started_at AT TIME ZONE zone.tz)::date < (p_first AT TIME ZONE 'UTC')::date + p_days
)
SELECT p_site, one.code::smallint, two.code::smallint, p_first,
       tally_rollup_value_key(NULL, one.value), tally_rollup_value_key(NULL, two.value),
       one.value, two.value,
       count(*), sum(v.pageviews), sum(v.events), count(*) FILTER (WHERE v.pageviews = 1),
       sum((extract(epoch FROM v.ended_at - v.started_at) * 1000000)::bigint),
       hll_add_agg(hll_hash_text(v.visitor), 14, 5, -1, 1)
FROM span_visits v
CROSS JOIN LATERAL (VALUES
    (3, v.source), (10, v.device), (11, v.browser), (12, v.os), (13, v.country)
) AS one(code, value)
CROSS JOIN LATERAL (VALUES
    (3, v.source), (10, v.device), (11, v.browser), (12, v.os), (13, v.country)
) AS two(code, value)
WHERE one.code < two.code
GROUP BY one.code, one.value, two.code, two.value
$$;

-- The week's pair cells (the builder of migration 0022 calls it): the same aggregation.
CREATE OR REPLACE FUNCTION tally_visit_pair_week_rollups(p_site text, p_week timestamptz)
RETURNS SETOF visit_pair_week_rollups
LANGUAGE sql STABLE AS $$
SELECT * FROM tally_visit_pair_rollups(p_site, p_week, 7)
$$;

-- Days to build, oldest first: sealed days whose cells are out of date, and sealed days
-- with day cells after the latest day of the site ever built (as weeks: built in
-- ascending order, stopping at the first that could not be; a writer marking a day
-- without a row makes its row).
CREATE FUNCTION tally_visit_days_to_build(p_limit integer)
RETURNS TABLE (site_id text, day timestamptz)
LANGUAGE sql STABLE AS $$
SELECT site_id, day FROM (
    SELECT d.site_id, d.day FROM visit_rollup_days d
    WHERE d.generation <> d.built_generation AND tally_visit_day_sealed(d.day)
    UNION
    SELECT z.site_id, c.bucket
    FROM visit_rollup_zones z
    CROSS JOIN LATERAL (
        SELECT max(d.day) + interval '1 day' AS after FROM visit_rollup_days d
        WHERE d.site_id = z.site_id AND d.built_generation >= 0
    ) l
    CROSS JOIN LATERAL (
        SELECT DISTINCT r.bucket FROM visit_rollups r
        WHERE r.site_id = z.site_id AND r.dimension = 0 AND r.span_hours = 24
          AND r.bucket >= coalesce(l.after, '-infinity')
          AND r.bucket <= now() - interval '37 hours'  -- sealed (tally_visit_day_sealed)
    ) c
) t
ORDER BY day, site_id
LIMIT p_limit
$$;

-- Builds the pair cells of one sealed day of a site from its visits. Returns the cells
-- written, or -1 when the day's row is locked (another build, or a writer about to change
-- it: the day is tried again later). Call it in a READ COMMITTED transaction of its own.
CREATE FUNCTION tally_build_visit_pair_day(p_site text, p_day timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    current_generation bigint;
    cells bigint;
BEGIN
    IF NOT tally_visit_day_sealed(p_day) THEN
        RAISE EXCEPTION 'day % of site % is not sealed yet', p_day, p_site;
    END IF;
    PERFORM tally_lock_site_settings(ARRAY[p_site], false);
    INSERT INTO visit_rollup_days (site_id, day, generation, built_generation)
    VALUES (p_site, p_day, 0, -1)
    ON CONFLICT DO NOTHING;
    SELECT d.generation INTO current_generation FROM visit_rollup_days d
    WHERE d.site_id = p_site AND d.day = p_day
    FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN -1;
    END IF;
    DELETE FROM visit_pair_day_rollups WHERE site_id = p_site AND day = p_day;
    INSERT INTO visit_pair_day_rollups SELECT * FROM tally_visit_pair_rollups(p_site, p_day, 1);
    GET DIAGNOSTICS cells = ROW_COUNT;
    UPDATE visit_rollup_days SET built_generation = current_generation
    WHERE site_id = p_site AND day = p_day;
    RETURN cells;
END;
$$;

-- Whatever rebuilds a site's visit cells (all of them, or its days in a new zone) rebuilds
-- its days: their rows and pair cells go with the weeks'.
CREATE OR REPLACE FUNCTION tally_rebuild_visit_rollups(p_site text DEFAULT NULL) RETURNS void
LANGUAGE sql AS $$
DELETE FROM visit_rollup_weeks WHERE p_site IS NULL OR site_id = p_site;
DELETE FROM visit_pair_week_rollups WHERE p_site IS NULL OR site_id = p_site;
DELETE FROM visit_rollup_days WHERE p_site IS NULL OR site_id = p_site;
DELETE FROM visit_pair_day_rollups WHERE p_site IS NULL OR site_id = p_site;
DELETE FROM visit_rollup_pending WHERE p_site IS NULL OR site_id = p_site;
SELECT tally_rebuild_visit_rollup_cells(p_site);
$$;

CREATE OR REPLACE FUNCTION tally_rebuild_visit_day_rollups(p_site text) RETURNS void
LANGUAGE sql AS $$
DELETE FROM visit_rollup_weeks WHERE site_id = p_site;
DELETE FROM visit_pair_week_rollups WHERE site_id = p_site;
DELETE FROM visit_rollup_days WHERE site_id = p_site;
DELETE FROM visit_pair_day_rollups WHERE site_id = p_site;
DELETE FROM visit_rollups WHERE site_id = p_site AND span_hours = 168;
DELETE FROM visit_rollup_pending WHERE site_id = p_site AND span_hours = 24;
SELECT tally_rebuild_visit_day_cells(p_site);
$$;
