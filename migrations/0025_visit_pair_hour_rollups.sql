-- Pair hour cells: the pair cells of migration 0024 for each UTC hour of the last two days,
-- so that a breakdown filtered by another dimension reads from `visits` only the last
-- three or four hours of the days not sealed yet instead of the whole of them (today, and
-- yesterday until 13:00 UTC: up to 37 hours of visits, about 1.5 ms an hour on the bench
-- site, where the cells of every sealed day and week take 0.4 ms).
--
-- Migration 0024's design, an hour at a time, for recent hours only:
--
-- * An hour h (its UTC start) is marked two hours after h and sealed an hour later
--   (tally_visit_hour_marked, tally_visit_hour_sealed): most visits have ended by then, so
--   live traffic rarely marks an hour, and the hour between the rules covers a writer
--   transaction that began before the hour was marked (its now() is its start).
-- * Every write that changes the totals' hour cell of a marked hour bumps the hour's
--   generation in the statement upserting the cells. A change of a visit writes the
--   totals' hour cell of its start (every event stored adds to its visit's events; a visit
--   moved to another hour leaves one hour cell and enters another), so a change of a visit
--   of a marked hour marks the hour.
-- * Only hours less than three days old are marked, built only while less than two days
--   old, and read only while less than two days old: a change to an older hour marks
--   nothing, and no reader uses its cells any more (its day is read from day cells or from
--   visits). Rows older than three days are pruned.
-- * A build locks the hour's row (skipping an hour someone holds), then reads the hour's
--   visits in a later statement, which sees every change committed before.
--
-- An hour's cells are read only while its row says built from its current visits
-- (generation = built_generation), and only for an hour wholly inside one local date of
-- the site's zone (every hour of a zone whose offset is whole hours).
CREATE TABLE visit_rollup_hours (
    site_id          text        NOT NULL,
    -- The hour's UTC start (the totals' hour cell's bucket).
    hour             timestamptz NOT NULL,
    -- Changes to the hour's visits since it was marked.
    generation       bigint      NOT NULL,
    -- The generation the pair hour cells were built from; -1: never built.
    built_generation bigint      NOT NULL,
    PRIMARY KEY (site_id, hour)
);
CREATE INDEX visit_rollup_hours_out_of_date ON visit_rollup_hours (hour)
    WHERE generation <> built_generation;
CREATE INDEX visit_rollup_hours_by_hour ON visit_rollup_hours (hour);

-- The pair day cells' shape (one aggregation fills both), keyed by the hour's UTC start.
CREATE TABLE visit_pair_hour_rollups (LIKE visit_pair_day_rollups INCLUDING ALL);
ALTER TABLE visit_pair_hour_rollups RENAME COLUMN day TO hour;

-- Whether a change to the visits of hour p_hour bumps its generation (writers' rule).
CREATE FUNCTION tally_visit_hour_marked(p_hour timestamptz) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
SELECT p_hour + interval '2 hours' <= now() AND p_hour > now() - interval '3 days'
$$;

-- Whether hour p_hour may be built (builders' rule: an hour later than the writers').
CREATE FUNCTION tally_visit_hour_sealed(p_hour timestamptz) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
SELECT p_hour + interval '3 hours' <= now()
$$;

-- Whether a reader may use hour p_hour's cells when its row says they are built: younger
-- than any hour a writer stops marking (tally_visit_hour_marked).
CREATE FUNCTION tally_visit_hour_readable(p_hour timestamptz) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
SELECT p_hour > now() - interval '2 days'
$$;

-- The pair cells of the visits of a site that started in [p_from, p_to) and, unless
-- p_first_date is NULL, on local dates p_first_date to p_first_date + p_days - 1 of the
-- zone of visit_rollup_zones (as the day cells), as one row per pair of values (bucket
-- p_bucket). Migration 0022's aggregation, for any span.
CREATE FUNCTION tally_visit_pair_cells(
    p_site text, p_from timestamptz, p_to timestamptz, p_first_date date, p_days integer,
    p_bucket timestamptz)
RETURNS SETOF visit_pair_day_rollups
LANGUAGE sql STABLE AS $$
WITH zone AS (
    SELECT coalesce((SELECT timezone FROM visit_rollup_zones WHERE site_id = p_site), 'UTC') AS tz
), span_visits AS (
    SELECT v.* FROM visits v, zone
    WHERE v.site_id = p_site AND v.started_at >= p_from AND v.started_at < p_to
      AND (p_first_date IS NULL
           OR ((v.started_at AT TIME ZONE zone.tz)::date >= p_first_date
               AND (v.started_at AT TIME ZONE zone.tz)::date < p_first_date + p_days))
)
SELECT p_site, one.code::smallint, two.code::smallint, p_bucket,
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

-- Migration 0024's days and weeks, through the one aggregation: a day either side of the
-- span's UTC days covers every zone's days of it; the local date decides.
CREATE OR REPLACE FUNCTION tally_visit_pair_rollups(p_site text, p_first timestamptz, p_days integer)
RETURNS SETOF visit_pair_day_rollups
LANGUAGE sql STABLE AS $$
SELECT * FROM tally_visit_pair_cells(
    p_site, p_first - interval '1 day', p_first + (p_days + 1) * interval '1 day',
    (p_first AT TIME ZONE 'UTC')::date, p_days, p_first)
$$;

-- Hours to build, oldest first: sealed readable hours whose cells are out of date, and
-- sealed readable hours with a totals' hour cell after the latest hour of the site built
-- (built in ascending order, stopping at the first that could not be, as days).
CREATE FUNCTION tally_visit_hours_to_build(p_limit integer)
RETURNS TABLE (site_id text, hour timestamptz)
LANGUAGE sql STABLE AS $$
SELECT site_id, hour FROM (
    SELECT h.site_id, h.hour FROM visit_rollup_hours h
    WHERE h.generation <> h.built_generation AND tally_visit_hour_sealed(h.hour)
      AND tally_visit_hour_readable(h.hour)
    UNION
    SELECT z.site_id, c.bucket
    FROM visit_rollup_zones z
    CROSS JOIN LATERAL (
        SELECT max(h.hour) + interval '1 hour' AS after FROM visit_rollup_hours h
        WHERE h.site_id = z.site_id AND h.built_generation >= 0
    ) l
    CROSS JOIN LATERAL (
        SELECT DISTINCT r.bucket FROM visit_rollups r
        WHERE r.site_id = z.site_id AND r.dimension = 0 AND r.span_hours = 1
          AND r.bucket >= coalesce(l.after, '-infinity')
          AND tally_visit_hour_readable(r.bucket)
          AND r.bucket <= now() - interval '3 hours'  -- sealed (tally_visit_hour_sealed)
    ) c
) t
ORDER BY hour, site_id
LIMIT p_limit
$$;

-- Builds the pair cells of one sealed hour of a site from its visits. Returns the cells
-- written, or -1 when the hour's row is locked (another build, or a writer about to change
-- it: the hour is tried again later). Call it in a READ COMMITTED transaction of its own.
CREATE FUNCTION tally_build_visit_pair_hour(p_site text, p_hour timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    current_generation bigint;
    cells bigint;
BEGIN
    IF NOT tally_visit_hour_sealed(p_hour) THEN
        RAISE EXCEPTION 'hour % of site % is not sealed yet', p_hour, p_site;
    END IF;
    PERFORM tally_lock_site_settings(ARRAY[p_site], false);
    INSERT INTO visit_rollup_hours (site_id, hour, generation, built_generation)
    VALUES (p_site, p_hour, 0, -1)
    ON CONFLICT DO NOTHING;
    SELECT h.generation INTO current_generation FROM visit_rollup_hours h
    WHERE h.site_id = p_site AND h.hour = p_hour
    FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN -1;
    END IF;
    DELETE FROM visit_pair_hour_rollups WHERE site_id = p_site AND hour = p_hour;
    INSERT INTO visit_pair_hour_rollups
    SELECT * FROM tally_visit_pair_cells(p_site, p_hour, p_hour + interval '1 hour', NULL, 0, p_hour);
    GET DIAGNOSTICS cells = ROW_COUNT;
    UPDATE visit_rollup_hours SET built_generation = current_generation
    WHERE site_id = p_site AND hour = p_hour;
    RETURN cells;
END;
$$;

-- Drops hours no writer marks any more (an hour past the writers' three days, so a writer
-- that began before the rule stopped covering it is done). Returns the rows dropped.
CREATE FUNCTION tally_prune_visit_pair_hours() RETURNS bigint
LANGUAGE sql AS $$
WITH gone AS (
    DELETE FROM visit_rollup_hours WHERE hour <= now() - interval '3 days 1 hour'
    RETURNING site_id, hour
), cells AS (
    DELETE FROM visit_pair_hour_rollups p USING gone g
    WHERE p.site_id = g.site_id AND p.hour = g.hour
)
SELECT count(*) FROM gone
$$;

-- Rebuilding all of a site's visit cells rebuilds its hours too. (A new zone does not
-- change UTC hours: tally_rebuild_visit_day_rollups keeps them.)
CREATE OR REPLACE FUNCTION tally_rebuild_visit_rollups(p_site text DEFAULT NULL) RETURNS void
LANGUAGE sql AS $$
DELETE FROM visit_rollup_weeks WHERE p_site IS NULL OR site_id = p_site;
DELETE FROM visit_pair_week_rollups WHERE p_site IS NULL OR site_id = p_site;
DELETE FROM visit_rollup_days WHERE p_site IS NULL OR site_id = p_site;
DELETE FROM visit_pair_day_rollups WHERE p_site IS NULL OR site_id = p_site;
DELETE FROM visit_rollup_hours WHERE p_site IS NULL OR site_id = p_site;
DELETE FROM visit_pair_hour_rollups WHERE p_site IS NULL OR site_id = p_site;
DELETE FROM visit_rollup_pending WHERE p_site IS NULL OR site_id = p_site;
SELECT tally_rebuild_visit_rollup_cells(p_site);
$$;
